"""Evaluation of global and personalized models with plain Keras.

The central test set is evaluated outside TFF (one Keras model, weights assigned,
large batches): it is the same number a TFF evaluation computation would give,
at a fraction of the cost. Per-client evaluation (a model per client on the
client's own test split) gives the personalized accuracy of FedPer and, with the
global model for every client, the point-for-point FedAvg comparison.

`score` makes one pass over the central test set: it accumulates the loss and
accuracy with the same Keras loss and metric objects, in the same order, as
`model.evaluate` (so the numbers are Keras' own, bit for bit, tested), and keeps
each example's correctness, from which the clients' test splits (subsets of
the central set, `FederatedData.test_indices`) are scored without a second pass.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Optional

import numpy as np
import tensorflow as tf

from tff_programs import model_adapter

Weights = Sequence[np.ndarray]


class KerasEvaluator:
  """Evaluates weight lists with one compiled Keras model."""

  def __init__(
      self,
      model_builder: Callable[[], tf.keras.Model],
      *,
      ignore_label: Optional[int] = None,
      batch_size: int = 1000,
      preprocess: Optional[Callable[[tf.Tensor], tf.Tensor]] = None,
  ):
    self.model = model_builder()
    self.model.compile(
        loss=model_adapter.loss_fn(ignore_label),
        metrics=model_adapter.metrics_fn(ignore_label),
    )
    self._batch_size = batch_size
    self._preprocess = preprocess
    self._ignore_label = ignore_label
    self._loss = model_adapter.loss_fn(ignore_label)
    self._loss_mean = tf.keras.metrics.Mean()
    self._accuracy = model_adapter.metrics_fn(ignore_label)[0]
    self._step = tf.function(self._score_batch)
    self._datasets: dict[tuple[int, int], tuple[np.ndarray, np.ndarray, tf.data.Dataset]] = {}

  def _dataset(self, x: np.ndarray, y: np.ndarray) -> tf.data.Dataset:
    ds = tf.data.Dataset.from_tensor_slices((x, y))
    if self._preprocess is not None:
      ds = ds.map(lambda a, b: (self._preprocess(a), b))
    return ds.batch(self._batch_size)

  def _batches(self, x: np.ndarray, y: np.ndarray) -> tf.data.Dataset:
    """Batches, transformed per batch (the eval transforms work on batches).

    Built once per (x, y) and reused: the central test set is scored every
    evaluation (once per client model for FedPer), and every new tf.data
    pipeline with a Python map function stays registered in TF's eager
    context (memory that grew each round).
    """
    key = (id(x), id(y))
    cached = self._datasets.get(key)
    if cached is not None and cached[0] is x and cached[1] is y:
      return cached[2]
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(self._batch_size)
    if self._preprocess is not None:
      ds = ds.map(lambda a, b: (self._preprocess(a), b))
    ds = ds.prefetch(1)
    if len(self._datasets) > 64:  # Per-client splits (a bounded number).
      self._datasets.clear()
    self._datasets[key] = (x, y, ds)
    return ds

  def _score_batch(self, x: tf.Tensor, y: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """`Model.test_step`'s updates for one batch, plus per-example correct/valid."""
    logits = self.model(x, training=False)
    self._loss_mean.update_state(self._loss(y, logits), sample_weight=tf.shape(y)[0])
    self._accuracy.update_state(y, logits)
    hits = tf.cast(tf.equal(tf.argmax(logits, axis=-1, output_type=y.dtype), y), tf.float32)
    valid = (tf.ones_like(hits) if self._ignore_label is None
             else tf.cast(tf.not_equal(y, self._ignore_label), tf.float32))
    per_example = lambda t: tf.reduce_sum(tf.reshape(t, [tf.shape(y)[0], -1]), axis=1)
    return per_example(hits * valid), per_example(valid)

  def score(self, weights: Weights, x: np.ndarray, y: np.ndarray
            ) -> tuple[float, float, np.ndarray, np.ndarray]:
    """(loss, accuracy, correct, valid) of the model with `weights` on (x, y) in
    one pass: loss and accuracy as `model.evaluate` reports them; per example,
    its correct and scored positions (padding excluded)."""
    self.model.set_weights(list(weights))
    self._loss_mean.reset_state()
    self._accuracy.reset_state()
    correct, valid = [], []
    for xb, yb in self._batches(x, y):
      c, v = self._step(xb, yb)
      correct.append(c.numpy())
      valid.append(v.numpy())
    return (float(self._loss_mean.result()), float(self._accuracy.result()),
            np.concatenate(correct).astype(np.float64), np.concatenate(valid).astype(np.float64))

  def central_and_clients(
      self, weights: Weights, x: np.ndarray, y: np.ndarray,
      client_indices: Optional[Mapping[str, np.ndarray]] = None,
  ) -> dict[str, float]:
    """eval_loss/eval_accuracy on (x, y) and, with `client_indices` (client id ->
    positions of its test split in x), the clients' accuracy mean/std/min/max,
    all from one pass."""
    loss, accuracy, correct, valid = self.score(weights, x, y)
    result = collections.OrderedDict(eval_loss=loss, eval_accuracy=accuracy)
    if client_indices:
      result.update(accuracy_spread([correct[i].sum() / max(valid[i].sum(), 1)
                             for i in client_indices.values() if len(i)]))
    return result

  def evaluate(self, weights: Weights, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(loss, accuracy) of the model with `weights` on (x, y)."""
    self.model.set_weights(list(weights))
    loss, accuracy = self.model.evaluate(self._dataset(x, y), verbose=0)
    return float(loss), float(accuracy)

  def central(self, weights: Weights, x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    loss, accuracy = self.evaluate(weights, x, y)
    return collections.OrderedDict(eval_loss=loss, eval_accuracy=accuracy)

  def mean_over_models(
      self,
      weights_for_client: Callable[[str], Weights],
      client_ids: Sequence[str],
      x: np.ndarray,
      y: np.ndarray,
      client_indices: Optional[Mapping[str, np.ndarray]] = None,
  ) -> dict[str, float]:
    """Each client's model on the same (x, y); loss and accuracy averaged over clients.

    The global-test-set measure of algorithms whose clients keep their own
    models: `eval_loss`, `eval_accuracy` (client averages) and
    `eval_clients` (how many models were evaluated). With `client_indices`
    (client id -> positions of its own test split in x), the same pass also
    gives each client's accuracy on its own split: the
    `personalized_accuracy_*` columns.
    """
    losses, accuracies, own = [], [], []
    for cid in client_ids:
      loss, accuracy, correct, valid = self.score(weights_for_client(cid), x, y)
      losses.append(loss)
      accuracies.append(accuracy)
      positions = client_indices.get(cid) if client_indices else None
      if positions is not None and len(positions):
        own.append(correct[positions].sum() / max(valid[positions].sum(), 1))
    result = collections.OrderedDict(
        eval_loss=float(np.mean(losses)), eval_accuracy=float(np.mean(accuracies)),
        eval_clients=len(client_ids))
    if own:
      result.update(accuracy_spread(own))
    return result

  def per_client(
      self,
      weights_for_client: Callable[[str], Weights],
      test_arrays: Mapping[str, tuple[np.ndarray, np.ndarray]],
      *,
      shared_weights: Optional[Weights] = None,
  ) -> dict[str, float]:
    """Each client's model on its own test split; mean/std/min/max over clients.

    With `shared_weights` (every client evaluates the same global model, as for
    FedAvg) all test splits go through one forward pass and are scored per
    client; otherwise each client's weights are assigned in turn.
    """
    ids = [cid for cid, (_, y) in test_arrays.items() if len(y)]
    if shared_weights is not None:
      self.model.set_weights(list(shared_weights))
      x = np.concatenate([test_arrays[c][0] for c in ids])
      y = np.concatenate([test_arrays[c][1] for c in ids])
      correct, valid = self._correct(x, y)
      bounds = np.cumsum([0] + [len(test_arrays[c][1]) for c in ids])
      accuracies = [correct[a:b].sum() / max(valid[a:b].sum(), 1)
                    for a, b in zip(bounds[:-1], bounds[1:])]
    else:
      accuracies = []
      for cid in ids:
        self.model.set_weights(list(weights_for_client(cid)))
        correct, valid = self._correct(*test_arrays[cid])
        accuracies.append(correct.sum() / max(valid.sum(), 1))
    return accuracy_spread(accuracies)

  def _correct(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per example: correct predictions and scored positions (padding excluded)."""
    logits = self.model.predict(self._dataset(x, y).map(lambda a, b: a), verbose=0)
    correct = np.argmax(logits, axis=-1) == y
    valid = np.ones_like(y, dtype=bool) if self._ignore_label is None else y != self._ignore_label
    per_example = lambda m: m.reshape(len(y), -1).sum(axis=1).astype(np.float64)
    return per_example(correct & valid), per_example(valid)


def accuracy_spread(accuracies: Sequence[float]) -> dict[str, float]:
  """personalized_accuracy_mean/std/min/max of per-client accuracies."""
  a = np.asarray(accuracies, dtype=np.float64)
  return collections.OrderedDict(
      personalized_accuracy_mean=float(a.mean()),
      personalized_accuracy_std=float(a.std()),
      personalized_accuracy_min=float(a.min()),
      personalized_accuracy_max=float(a.max()),
  )


def make_evaluate_fn(algorithm: Any, task: Any, data: Any, *, personalized: bool = True):
  """(state, client_states) -> eval metrics with the same meaning for every algorithm.

  `eval_loss`/`eval_accuracy` are always on the global (central) test set: the
  global model's for FedAvg-like algorithms; for algorithms whose clients keep
  their own model (FedPer) the average over clients of each client's model on
  it, over the clients trained at least once (`eval_clients` of them; a
  never-sampled client's personal layers are untrained). The per-client
  `personalized_accuracy_*` columns score each model on its client's own test
  split (FedPer's measure; for FedAvg the global model on every split).
  Algorithms with their own evaluation (FedGKT) follow the same contract.
  `personalized=False` skips the per-client columns of global-model algorithms.
  Returns (evaluate, the `KerasEvaluator`).
  """
  evaluator = KerasEvaluator(task.model_builder, ignore_label=task.ignore_label,
                             preprocess=task.preprocessing.eval_map)
  x_test, y_test = data.central_test

  def evaluate(state: Any, client_states: Mapping[str, Any]) -> Mapping[str, float]:
    own = algorithm.evaluate(state, client_states, data)
    if own is not None:
      return own
    if algorithm.uses_client_states:
      trained = [cid for cid in data.client_ids if cid in client_states]
      if not trained:
        return {}
      weights_of = lambda cid: algorithm.client_model_weights(state, client_states[cid])
      if data.test_indices is not None:  # Own splits scored in the same pass.
        return evaluator.mean_over_models(weights_of, trained, x_test, y_test, data.test_indices)
      result = evaluator.mean_over_models(weights_of, trained, x_test, y_test)
      if data.test_arrays:
        result.update(evaluator.per_client(weights_of, {c: data.test_arrays[c] for c in trained}))
      return result
    weights = algorithm.model_weights(state)
    if personalized and data.test_indices is not None:
      return evaluator.central_and_clients(weights, x_test, y_test, data.test_indices)
    result = evaluator.central(weights, x_test, y_test)
    if personalized and data.test_arrays:
      result.update(evaluator.per_client(None, data.test_arrays, shared_weights=weights))
    return result

  return evaluate, evaluator
