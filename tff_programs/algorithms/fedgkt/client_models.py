"""Client k's FedGKT model f_s(f_e^(k)(x)): its scores (evaluation) and as Keras (export).

Evaluation, like the paper's global test: eval_accuracy / eval_loss are the
average over the clients sampled at least once (their number: eval_clients)
of client k's f_s(f_e^(k)(x)) on the central test set (the same set FedAvg's
global model is evaluated on); never-sampled clients, whose edge models are
untrained, are left out. edge_accuracy / edge_loss: the same clients' edge
models f_c(f_e^(k)(x)) alone, same test set. personalized_accuracy_*: each of
those clients' f_s(f_e^(k)) on its own test split (mean/std/min/max over
clients).
"""

from __future__ import annotations

import collections
from collections.abc import Mapping, Sequence
from typing import Any, Optional

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_programs import evaluation
from tff_programs import model_adapter
from tff_programs.algorithms.fedgkt import client_data
from tff_programs.algorithms.fedgkt import computations

_EVAL_BATCH = 1000


class ClientModels:
  """Keras models of edge + server for any client's weights.

  The evaluation models (one edge, one server, a compiled prediction
  function) are built on first use and reused: each client's weights are
  assigned in turn.
  """

  def __init__(self, edge_builder: computations.EdgeBuilder,
               server_builder: computations.ServerBuilder, feature_shape: Sequence[int],
               input_spec: tf.TensorSpec, eval_map: Optional[client_data.EvalMap] = None):
    """Args: the builders, the edge's feature shape, the spec of a batch of
    inputs (None, *input_shape) and the test-time transform of a batch."""
    self._edge_builder = edge_builder
    self._server_builder = server_builder
    self._feature_shape = tuple(feature_shape)
    self._input_shape = tuple(input_spec.shape[1:])
    self._input_dtype = input_spec.dtype
    self._eval_map = eval_map
    self._eval: Optional[dict[str, Any]] = None

  def _models(self) -> dict[str, Any]:
    if self._eval is None:
      extractor, classifier, full = self._edge_builder()
      server = self._server_builder(self._feature_shape)
      spec = tf.TensorSpec([None, *self._input_shape], self._input_dtype)

      @tf.function(input_signature=[spec])
      def predict(x):
        h = extractor(x, training=False)
        return server(h, training=False), classifier(h, training=False)

      self._eval = dict(full=full, server=server, predict=predict)
    return self._eval

  def server_keras_order(self, server_weights: Mapping[str, Sequence[Any]]) -> list[np.ndarray]:
    """The server weights OrderedDict(trainable, non_trainable) in the Keras
    order of f_s's `get_weights()`."""
    return model_adapter.keras_weights_order(
        self._models()['server'], tff.learning.models.ModelWeights(
            trainable=server_weights['trainable'],
            non_trainable=server_weights['non_trainable']))

  def keras_model(self, edge_weights: Mapping[str, Sequence[Any]],
                  server_weights: Mapping[str, Sequence[Any]]) -> tf.keras.Model:
    """A new Keras model x -> f_s(f_e(x)) with these weights (for export)."""
    extractor, _, full = self._edge_builder()
    server = self._server_builder(self._feature_shape)
    model_adapter.assign_weights(full, edge_weights)
    model_adapter.assign_weights(server, server_weights)
    inputs = tf.keras.Input(self._input_shape, dtype=self._input_dtype, name='input')
    return tf.keras.Model(inputs, server(extractor(inputs)), name='fedgkt_client')

  def _scores(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """[loss, accuracy] of f_s(f_e(x)) and of the edge f_c(f_e(x)) on (x, y),
    means over the examples, with the evaluation models' current weights."""
    sums = np.zeros(4)  # loss, correct (stacked), loss, correct (edge)
    for start in range(0, len(y), _EVAL_BATCH):
      xb, yb = x[start:start + _EVAL_BATCH], np.asarray(y[start:start + _EVAL_BATCH])
      if self._eval_map is not None:
        xb = self._eval_map(tf.constant(xb))
      stacked, edge = (np.asarray(t, np.float64) for t in self._eval['predict'](xb))
      rows = np.arange(len(yb))
      sums += (-_log_softmax(stacked)[rows, yb].sum(), np.sum(np.argmax(stacked, -1) == yb),
               -_log_softmax(edge)[rows, yb].sum(), np.sum(np.argmax(edge, -1) == yb))
    return sums / len(y)

  def evaluate(self, server_weights: Mapping[str, Sequence[Any]],
               client_states: Mapping[str, Any], data: Any) -> collections.OrderedDict:
    """The metrics of `FedGKTAlgorithm.evaluate` (see there): the clients of
    `data` with a state in `client_states`, with the server `server_weights`."""
    ids = [cid for cid in data.client_ids if cid in client_states]
    result = collections.OrderedDict(eval_clients=len(ids))
    if not ids:
      return result
    models = self._models()
    model_adapter.assign_weights(models['server'], server_weights)
    x_test, y_test = data.central_test
    central, personal = [], []
    for cid in ids:
      model_adapter.assign_weights(models['full'], client_states[cid]['edge'])
      if len(y_test):
        central.append(self._scores(x_test, y_test))
      if data.test_arrays and len(data.test_arrays[cid][1]):
        personal.append(self._scores(*data.test_arrays[cid])[1])
    if central:
      mean = np.mean(central, axis=0)
      result.update(eval_loss=float(mean[0]), eval_accuracy=float(mean[1]),
                    edge_loss=float(mean[2]), edge_accuracy=float(mean[3]))
    if personal:
      result.update(evaluation.accuracy_spread(personal))
    return result


def _log_softmax(logits: np.ndarray) -> np.ndarray:
  shifted = logits - logits.max(axis=-1, keepdims=True)
  return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
