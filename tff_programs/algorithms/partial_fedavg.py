"""The core of algorithms that federate part of a model: "federate the base, keep the rest".

A model's weights are split (`WeightSplit`) into base weights W_B, averaged
over the round's clients, and personal weights W_P, which each client keeps
(its private state, across rounds). Each round every selected client receives
W_B, trains (W_B, W_Pj) for E epochs of plain SGD with batch B, sends back its
base update (through an injectable aggregator: weighted mean by default, RPN,
quantization) and its base non-trainable values (batch-norm statistics,
averaged with the same weights: TFF's FedAvg would freeze them), and keeps
W_Pj. The server sets W_B <- W_B - sum_j gamma_j (W_B - W_B,j), gamma_j =
n_j / n (or 1/m). An optional warm-up trains the personal weights alone for one
epoch first (FedPer's appendix A.3 variant).

FedPer is this core with the last K_P blocks personal; FedAvg for models with
batch-norm statistics is it with nothing personal. Algorithms whose clients keep
other state (SCAFFOLD's control variates) extend it the same way.

The TFF process (an `IterativeProcess`, since clients carry state):
  initialize: ( -> server_state@SERVER)
  next: (<server_state@SERVER, {<x, y>*}@CLIENTS, personal@CLIENTS>
         -> <server_state@SERVER, personal@CLIENTS, metrics@SERVER>)
metrics = <train=<loss_sum, correct, examples, non_finite>, aggregator=...>:
`non_finite` sums each client's 0/1 flag "its base delta, base statistics,
personal weights or training loss has a NaN or inf" (`non_finite_flag`),
reported per round as `non_finite_clients` (divergence detection).
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, Optional

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from compression import accounting
from tff_programs import model_adapter
from tff_programs import schedule
from tff_programs.algorithms import base
from tff_programs.algorithms import client_loop

WEIGHTINGS = ('num_examples', 'uniform')


@dataclasses.dataclass(frozen=True)
class PartialConfig:
  """How clients train in the core.

  Attributes:
    client_learning_rate: eta (plain SGD).
    learning_rate_decay: eta at round r is eta * decay**(r - decay_from) after `decay_from`.
    learning_rate_decay_from: see `schedule.decayed_learning_rate`.
    local_epochs: E (the dataset holds E epochs; the warm-up takes the first).
    personal_warmup: first one epoch on the personal weights alone, the base frozen.
    client_weighting: 'num_examples' (gamma_j = n_j / n) or 'uniform' (1 / m),
      for the base update and the base statistics.
  """

  client_learning_rate: float
  learning_rate_decay: float = 1.0
  learning_rate_decay_from: int = 1
  local_epochs: int = 1
  personal_warmup: bool = False
  client_weighting: str = 'num_examples'

  def __post_init__(self):
    if self.client_weighting not in WEIGHTINGS:
      raise ValueError(f'client_weighting={self.client_weighting!r}: allowed: num_examples, uniform')

  def learning_rate(self, round_num: int) -> float:
    return schedule.decayed_learning_rate(self.client_learning_rate, self.learning_rate_decay,
                                          self.learning_rate_decay_from, round_num)


@dataclasses.dataclass(frozen=True)
class WeightSplit:
  """Positions of base and personal weights in the Keras/TFF weight lists."""

  personal_trainable: tuple[int, ...]
  personal_non_trainable: tuple[int, ...]
  num_trainable: int
  num_non_trainable: int

  @classmethod
  def from_model(cls, model: tf.keras.Model, personal_names: frozenset[str]) -> 'WeightSplit':
    return cls(
        personal_trainable=tuple(i for i, v in enumerate(model.trainable_weights) if v.name in personal_names),
        personal_non_trainable=tuple(i for i, v in enumerate(model.non_trainable_weights) if v.name in personal_names),
        num_trainable=len(model.trainable_weights),
        num_non_trainable=len(model.non_trainable_weights),
    )

  @property
  def base_trainable(self) -> tuple[int, ...]:
    return tuple(i for i in range(self.num_trainable) if i not in self.personal_trainable)

  @property
  def base_non_trainable(self) -> tuple[int, ...]:
    return tuple(i for i in range(self.num_non_trainable) if i not in self.personal_non_trainable)

  def split(self, trainable: Sequence[Any], non_trainable: Sequence[Any]):
    """(base, personal), each OrderedDict(trainable=[...], non_trainable=[...])."""
    pick = lambda values, idx: [values[i] for i in idx]
    base_part = collections.OrderedDict(
        trainable=pick(trainable, self.base_trainable),
        non_trainable=pick(non_trainable, self.base_non_trainable))
    personal = collections.OrderedDict(
        trainable=pick(trainable, self.personal_trainable),
        non_trainable=pick(non_trainable, self.personal_non_trainable))
    return base_part, personal

  def merge(self, base_part: Mapping[str, Sequence[Any]], personal: Mapping[str, Sequence[Any]]):
    """Inverse of `split`: (trainable list, non_trainable list) in model order."""
    def combine(base_values, personal_values, base_idx, personal_idx, n):
      out = [None] * n
      for i, v in zip(base_idx, base_values):
        out[i] = v
      for i, v in zip(personal_idx, personal_values):
        out[i] = v
      return out
    trainable = combine(base_part['trainable'], personal['trainable'],
                        self.base_trainable, self.personal_trainable, self.num_trainable)
    non_trainable = combine(base_part['non_trainable'], personal['non_trainable'],
                            self.base_non_trainable, self.personal_non_trainable,
                            self.num_non_trainable)
    return trainable, non_trainable


def non_finite_flag(*values: Any) -> tf.Tensor:
  """int32 1 if any floating-point tensor in the nests `values` has a NaN or
  inf entry, else 0 (integer tensors are ignored; no values: 0).

  A client's contribution to the `non_finite_clients` count: summed over the
  round's clients (`tff.federated_sum`) it is the number of diverged clients.
  """
  checks = [tf.reduce_all(tf.math.is_finite(t)) for t in tf.nest.flatten(values)
            if tf.as_dtype(t.dtype).is_floating]
  if not checks:
    return tf.constant(0, tf.int32)
  return tf.cast(tf.logical_not(tf.reduce_all(tf.stack(checks))), tf.int32)


def sgd_epochs(model, trainable_vars, dataset, learning_rate, num_batches=None):
  """Plain SGD on `trainable_vars` over `dataset` (or its first `num_batches`).

  Returns (loss_sum, correct, examples) accumulated over the batches.
  """
  if num_batches is not None:
    dataset = dataset.take(num_batches)
  zero = (tf.constant(0.0), tf.constant(0.0), tf.constant(0, tf.int64))

  def step(totals, batch):
    with tf.GradientTape() as tape:
      output = model.forward_pass(batch, training=True)
    grads = tape.gradient(output.loss, trainable_vars)
    for v, g in zip(trainable_vars, grads):
      if g is not None:
        v.assign_sub(learning_rate * g)
    n = tf.shape(batch['y'], out_type=tf.int64)[0]
    correct = tf.reduce_sum(tf.cast(
        tf.equal(tf.argmax(output.predictions, axis=-1, output_type=tf.int64),
                 tf.cast(batch['y'], tf.int64)), tf.float32))
    return (totals[0] + output.loss * tf.cast(n, tf.float32), totals[1] + correct, totals[2] + n)

  return client_loop.fold(dataset, zero, step)


def build_process(
    task: base.Task,
    config: PartialConfig,
    split: WeightSplit,
    *,
    aggregator: Optional[tff.aggregators.WeightedAggregationFactory] = None,
) -> tff.templates.IterativeProcess:
  """The `IterativeProcess` federating `split`'s base (type signature in the module docstring)."""
  model_fn = model_adapter.tff_model_fn(task.model_builder, task.element_spec,
                                        ignore_label=task.ignore_label,
                                        averages_statistics=True)
  template = task.model_builder()
  trainable_specs = [tf.TensorSpec(v.shape, v.dtype) for v in template.trainable_weights]
  non_trainable_specs = [tf.TensorSpec(v.shape, v.dtype) for v in template.non_trainable_weights]
  base_specs, personal_specs = split.split(trainable_specs, non_trainable_specs)
  base_type = tff.types.tensorflow_to_type(base_specs)
  personal_type = tff.types.tensorflow_to_type(personal_specs)
  delta_type = tff.types.tensorflow_to_type(list(base_specs['trainable']))
  weight_type = tff.TensorType(np.float32)
  aggregation = (aggregator or tff.aggregators.MeanFactory()).create(delta_type, weight_type)
  data_type = tff.SequenceType(tff.types.tensorflow_to_type(
      collections.OrderedDict((k, task.element_spec[k]) for k in ('x', 'y'))))
  epochs = config.local_epochs
  finetune = config.personal_warmup
  uniform = config.client_weighting == 'uniform'

  @tf.function
  def client_train(model, base_weights, personal_weights, dataset, learning_rate):
    # A tf.function: automatic control dependencies order the assignments
    # before training (a bare TFF graph computation would not).
    weights = tff.learning.models.ModelWeights.from_model(model)
    trainable, non_trainable = split.merge(base_weights, personal_weights)
    for v, value in zip(weights.trainable, trainable):
      v.assign(value)
    for v, value in zip(weights.non_trainable, non_trainable):
      v.assign(value)
    if finetune:
      head = [weights.trainable[i] for i in split.personal_trainable]
      batches_per_epoch = tf.data.experimental.cardinality(dataset) // epochs
      sgd_epochs(model, head, dataset, learning_rate, batches_per_epoch)
    loss_sum, correct, examples = sgd_epochs(model, list(weights.trainable), dataset, learning_rate)
    new_base, new_personal = split.split(
        [tf.identity(v) for v in weights.trainable], [tf.identity(v) for v in weights.non_trainable])
    # Update in TFF's convention: initial - trained (the server subtracts it).
    delta = [a - b for a, b in zip(base_weights['trainable'], new_base['trainable'])]
    n = tf.constant(1.0) if uniform else tf.cast(examples, tf.float32)
    non_finite = non_finite_flag(loss_sum, delta, new_base['non_trainable'], new_personal)
    return (delta, new_base['non_trainable'], new_personal, n,
            collections.OrderedDict(loss_sum=loss_sum, correct=correct, examples=examples,
                                    non_finite=non_finite))

  @tff.tensorflow.computation(base_type, personal_type, data_type, np.float32)
  def client_update(base_weights, personal_weights, dataset, learning_rate):
    return client_train(model_fn(), base_weights, personal_weights, dataset, learning_rate)

  server_state_type = collections.OrderedDict(
      base=base_specs, learning_rate=tf.TensorSpec([], tf.float32))

  @tff.tensorflow.computation
  def server_init():
    return collections.OrderedDict(
        base=tf.nest.map_structure(lambda s: tf.zeros(s.shape, s.dtype), base_specs),
        learning_rate=tf.constant(config.client_learning_rate, tf.float32))

  @tff.tensorflow.computation(tff.types.tensorflow_to_type(server_state_type), delta_type,
                              tff.types.tensorflow_to_type(list(base_specs['non_trainable'])))
  def server_update(state, mean_delta, mean_non_trainable):
    trainable = [w - d for w, d in zip(state['base']['trainable'], mean_delta)]
    return collections.OrderedDict(
        base=collections.OrderedDict(trainable=trainable, non_trainable=list(mean_non_trainable)),
        learning_rate=state['learning_rate'])

  @tff.federated_computation
  def initialize():
    return tff.federated_zip(collections.OrderedDict(
        model=tff.federated_eval(server_init, tff.SERVER),
        aggregator=aggregation.initialize()))

  state_type = initialize.type_signature.result

  @tff.federated_computation(state_type, tff.FederatedType(data_type, tff.CLIENTS),
                             tff.FederatedType(personal_type, tff.CLIENTS))
  def next_fn(state, data, personal):
    base_at_clients = tff.federated_broadcast(state.model.base)
    lr_at_clients = tff.federated_broadcast(state.model.learning_rate)
    out = tff.federated_map(client_update, (base_at_clients, personal, data, lr_at_clients))
    aggregated = aggregation.next(state.aggregator, out[0], out[3])
    non_trainable = tff.federated_mean(out[1], weight=out[3]) if base_specs['non_trainable'] else (
        tff.federated_value([], tff.SERVER))
    new_model = tff.federated_map(server_update, (state.model, aggregated.result, non_trainable))
    new_state = tff.federated_zip(collections.OrderedDict(model=new_model, aggregator=aggregated.state))
    metrics = tff.federated_zip(collections.OrderedDict(
        train=tff.federated_sum(out[4]), aggregator=aggregated.measurements))
    return new_state, out[2], metrics

  return tff.templates.IterativeProcess(initialize, next_fn)


class PartialFedAvg:
  """The core as a round runner: state, personal states, costs, metrics rows.

  Algorithms compose it (`FedPerAlgorithm`, `FedAvgWithStatistics`): it knows
  nothing of which weights are personal or whether clients keep them.
  """

  def __init__(self, task: base.Task, config: PartialConfig, split: WeightSplit, *,
               aggregator: Optional[tff.aggregators.WeightedAggregationFactory] = None):
    self.task = task
    self.config = config
    self.split = split
    self.template = task.model_builder()
    self.process = build_process(task, config, split, aggregator=aggregator)
    base_shapes = [tuple(self.template.trainable_weights[i].shape) for i in split.base_trainable]
    base_nt = [tuple(self.template.non_trainable_weights[i].shape) for i in split.base_non_trainable]
    if isinstance(aggregator, accounting.CostedFactory):
      self.upload_cost = aggregator.upload_cost(base_shapes) + accounting.dense_cost(base_nt)
      self.download_cost = aggregator.download_cost(base_shapes) + accounting.dense_cost(base_nt)
    else:
      self.upload_cost = self.download_cost = accounting.dense_cost(base_shapes + base_nt)
    self._nt_cost = accounting.dense_cost(base_nt)
    # Clients apply compressed broadcasts (RPN) to the base they hold: the full base once first.
    initial = accounting.initial_download_cost(aggregator, base_shapes + base_nt)
    self.initial_download_cost = initial if initial.params else None

  def weights_of(self, model: tf.keras.Model):
    """(base, personal) of a Keras model's current weights, as numpy."""
    return self.split.split([v.numpy() for v in model.trainable_weights],
                            [v.numpy() for v in model.non_trainable_weights])

  def initialize(self, seed: int) -> Any:
    tf.keras.utils.set_random_seed(seed)
    base_part, _ = self.weights_of(self.task.model_builder())
    state = self.process.initialize()
    state['model']['base'] = base_part
    return state

  def learning_rate(self, round_num: int) -> float:
    return self.config.learning_rate(round_num)

  def next(self, state: Any, round_num: int, client_ids: Sequence[str],
           client_datasets: Sequence[tf.data.Dataset], personal: Sequence[Any]
           ) -> tuple[Any, list[Any], collections.OrderedDict]:
    """One round: (new state, the clients' new personal weights, metrics row)."""
    state['model']['learning_rate'] = np.float32(self.learning_rate(round_num))
    new_state, new_personal, metrics = self.process.next(state, list(client_datasets), list(personal))
    train = metrics['train']
    m = len(client_ids)
    examples = int(train['examples'])
    row = collections.OrderedDict(
        train_loss=float(train['loss_sum']) / max(examples, 1),
        train_accuracy=float(train['correct']) / max(examples, 1),
        clients=m, examples=examples,
        non_finite_clients=int(train['non_finite']),
        learning_rate=self.learning_rate(round_num),
    )
    row.update(accounting.traffic_row(self.upload_cost, self.download_cost, m))
    measured = metrics['aggregator']
    if isinstance(measured, Mapping) and all(k in measured for k in accounting.MEASURED_KEYS):
      row['upload_params_per_client'] = int(measured['upload_values']) / m + self._nt_cost.params
      row['upload_bytes'] = int(measured['upload_bytes']) + self._nt_cost.bytes * m
      row['download_params'] = int(measured['download_values']) + self._nt_cost.params
      row['download_bytes'] = (int(measured['download_bytes']) + self._nt_cost.bytes) * m
    row.update(accounting.full_round_column(measured))
    return new_state, list(new_personal), row

  def keras_weights(self, state: Any, personal: Any) -> list[np.ndarray]:
    """The model of base (from `state`) + `personal`, in `get_weights()` order."""
    trainable, non_trainable = self.split.merge(state['model']['base'], personal)
    return model_adapter.keras_weights_order(
        self.template, tff.learning.models.ModelWeights(trainable, non_trainable))
