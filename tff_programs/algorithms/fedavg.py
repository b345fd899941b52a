"""FedAvg and FedSGD (McMahan et al. 2017) on `tff.learning`.

FedAvg: each selected client runs E epochs of minibatch SGD (batch B, rate eta)
from the global model; the server averages the model deltas weighted by n_k/n
(or uniformly) and applies them with a server learning rate (1.0 = the paper).

FedSGD: each selected client computes the gradient of its loss over its whole
dataset at the global model; the server takes one step of
  w <- w - eta * sum_k (n_k / n) g_k.
This is FedAvg with E=1, B=inf; `--client_learning_rate` is the paper's eta in
both algorithms, so the server optimizer of FedSGD uses eta * server_lr.

Both are `tff.learning.templates.LearningProcess`es built by TFF; the model
aggregator is injectable (`aggregator=`), which is where RPN plugs in:
  next: (<state@SERVER, {<x, y>*}@CLIENTS> -> <state@SERVER, metrics@SERVER>)
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
from tff_programs.algorithms import base

WEIGHTINGS = {
    'num_examples': tff.learning.ClientWeighting.NUM_EXAMPLES,
    'uniform': tff.learning.ClientWeighting.UNIFORM,
}


class DroppedClientCounter(tff.aggregators.WeightedAggregationFactory):
  """Wraps a weighted aggregator; also counts the clients whose weight is 0.

  TFF's FedAvg and FedSGD client work zeroes the update and the weight of a
  client whose update is not finite (and resets its metrics), so the client
  silently drops out of the round. Every FedSuite client holds at least one
  example, so a zero weight means exactly that; this factory reports how many:
    next: (<state@SERVER, value@CLIENTS, float32@CLIENTS>
           -> <state@SERVER, value@SERVER,
               <inner=measurements, non_finite_clients=int32>@SERVER>)
  """

  def __init__(self, inner: Optional[tff.aggregators.WeightedAggregationFactory] = None):
    self.inner = inner
    self._inner = inner if inner is not None else tff.aggregators.MeanFactory()

  def create(self, value_type, weight_type) -> tff.templates.AggregationProcess:
    process = self._inner.create(value_type, weight_type)

    @tff.tensorflow.computation(weight_type)
    def dropped(weight):
      return tf.cast(tf.equal(weight, 0), tf.int32)

    @tff.federated_computation(
        process.initialize.type_signature.result,
        tff.FederatedType(value_type, tff.CLIENTS),
        tff.FederatedType(weight_type, tff.CLIENTS))
    def next_fn(state, value, weight):
      output = process.next(state, value, weight)
      measurements = tff.federated_zip(collections.OrderedDict(
          inner=output.measurements,
          non_finite_clients=tff.federated_sum(tff.federated_map(dropped, weight))))
      return tff.templates.MeasuredProcessOutput(output.state, output.result, measurements)

    return tff.templates.AggregationProcess(process.initialize, next_fn)


@dataclasses.dataclass(frozen=True)
class FedAvgConfig:
  """Hyper-parameters of FedAvg/FedSGD.

  Attributes:
    client_learning_rate: eta, the paper's learning rate (client SGD for FedAvg,
      the gradient step for FedSGD).
    server_learning_rate: scales the averaged update (1.0 = the paper).
    learning_rate_decay: eta at round r is eta * decay**(r - 1) (the paper decays
      the rate for CIFAR-10; 1.0 = constant).
    learning_rate_decay_from: the decay counts rounds after this one (1 = from the
      start; see `base.decayed_learning_rate`).
    client_weighting: 'num_examples' (n_k / n, the paper) or 'uniform' (1 / m).
    client_momentum: momentum of the client optimizer (0 = plain SGD).
  """

  client_learning_rate: float = 0.1
  server_learning_rate: float = 1.0
  learning_rate_decay: float = 1.0
  learning_rate_decay_from: int = 1
  client_weighting: str = 'num_examples'
  client_momentum: float = 0.0


class LearningProcessAlgorithm(base.FederatedAlgorithm):
  """Runs a `tff.learning` LearningProcess round by round.

  Initial weights come from the Keras builder under the run's seed (not from the
  TFF `initialize` computation, whose in-graph initializers are not seeded), so
  identical seeds give identical runs. The per-round learning rate is set through
  the process's hyper-parameters when it decays.
  """

  def __init__(
      self,
      *,
      name: str,
      process: tff.learning.templates.LearningProcess,
      task: base.Task,
      learning_rate_path: tuple[str, str],
      learning_rate: float,
      learning_rate_decay: float,
      learning_rate_decay_from: int = 1,
      upload_factory: Optional[Any] = None,
  ):
    self.name = name
    self.process = process
    self._task = task
    self._lr_path = learning_rate_path
    self._lr = learning_rate
    self._decay = learning_rate_decay
    self._decay_from = learning_rate_decay_from
    self._template = task.model_builder()
    shapes = [tuple(v.shape) for v in self._template.trainable_weights]
    all_shapes = [tuple(v.shape) for v in self._template.weights]
    # Non-trainable values (e.g. batch-norm statistics) are broadcast as they are.
    self._download_extra = accounting.dense_cost(
        [tuple(v.shape) for v in self._template.non_trainable_weights])
    if isinstance(upload_factory, accounting.CostedFactory):
      self.upload_cost = upload_factory.upload_cost(shapes)
      self.download_cost = upload_factory.download_cost(shapes) + self._download_extra
    else:
      self.upload_cost = accounting.dense_cost(shapes)
      self.download_cost = accounting.dense_cost(all_shapes)
    initial = accounting.initial_download_cost(upload_factory, all_shapes)
    self.initial_download_cost = initial if initial.params else None

  @property
  def keras_template(self) -> tf.keras.Model:
    return self._template

  def initialize(self, seed: int) -> Any:
    tf.keras.utils.set_random_seed(seed)
    model = self._task.model_builder()
    state = self.process.initialize()
    return self.process.set_model_weights(
        state, model_adapter.model_weights_from_keras(model)
    )

  def learning_rate(self, round_num: int) -> float:
    return base.decayed_learning_rate(self._lr, self._decay, self._decay_from, round_num)

  def _with_learning_rate(self, state: Any, round_num: int) -> Any:
    if self._decay == 1.0:
      return state
    hparams = self.process.get_hparams(state)
    group, key = self._lr_path
    with np.errstate(over='ignore'):  # A rate beyond float32 is inf: the round diverges.
      hparams[group][key] = np.float32(self.learning_rate(round_num))
    return self.process.set_hparams(state, hparams)

  def next(
      self,
      state: Any,
      round_num: int,
      client_ids: Sequence[str],
      client_datasets: Sequence[tf.data.Dataset],
      client_states: Mapping[str, Any],
  ) -> base.RoundOutput:
    del client_states
    state = self._with_learning_rate(state, round_num)
    output = self.process.next(state, list(client_datasets))
    train = output.metrics['client_work']['train']
    m = len(client_ids)
    aggregator = output.metrics.get('aggregator', {})
    dropped = int(aggregator['non_finite_clients'])
    examples = int(train['num_examples'])
    metrics = collections.OrderedDict(
        # No client kept: nothing was learned, and the loss is undefined.
        train_loss=float(train['loss']) if examples else float('nan'),
        train_accuracy=float(train['sparse_categorical_accuracy']),
        clients=m,
        examples=examples,
        non_finite_clients=dropped,
        learning_rate=self.learning_rate(round_num),
    )
    metrics.update(self._communication(aggregator['inner'], m))
    return base.RoundOutput(state=output.state, client_states={}, metrics=metrics)

  def _communication(self, aggregator_metrics: Mapping[str, Any], m: int) -> dict[str, float]:
    """Per-round transmission: measured by the aggregator if it reports it
    (RPN with a threshold), else the static per-client costs."""
    up, down = self.upload_cost, self.download_cost
    result = collections.OrderedDict(
        upload_params_per_client=up.params,
        upload_bytes=up.bytes * m,
        download_params=down.params,
        download_bytes=down.bytes * m,
    )
    if all(k in aggregator_metrics for k in accounting.MEASURED_KEYS):
      measured = {k: int(aggregator_metrics[k]) for k in accounting.MEASURED_KEYS}
      result['upload_params_per_client'] = measured['upload_values'] / m
      result['upload_bytes'] = measured['upload_bytes']
      result['download_params'] = measured['download_values'] + self._download_extra.params
      result['download_bytes'] = (measured['download_bytes'] + self._download_extra.bytes) * m
    return result

  def model_weights(self, state: Any) -> list[np.ndarray]:
    """The global model in Keras order, read from the state the round returned
    (a Python structure: no TFF computation call, as `process.get_model_weights`
    would make: ~90 ms a round for the MNIST CNN, measured)."""
    return model_adapter.keras_weights_order(self._template, state.global_model_weights)


def _sgd(learning_rate: float, momentum: float = 0.0):
  return tff.learning.optimizers.build_sgdm(
      learning_rate=learning_rate, momentum=momentum or None
  )


def build_fedavg(
    task: base.Task,
    config: FedAvgConfig,
    *,
    aggregator: Optional[tff.aggregators.WeightedAggregationFactory] = None,
) -> LearningProcessAlgorithm:
  """FedAvg: `tff.learning.algorithms.build_weighted_fed_avg` + seeded init.

  Args:
    task: model builder and batch spec.
    config: hyper-parameters.
    aggregator: model-delta aggregator (None = TFF's weighted mean); RPN and
      quantization plug in here.
  """
  if config.client_weighting not in WEIGHTINGS:
    raise ValueError(
        f'client_weighting={config.client_weighting!r}; allowed: {sorted(WEIGHTINGS)}'
    )
  process = tff.learning.algorithms.build_weighted_fed_avg(
      model_adapter.tff_model_fn(
          task.model_builder, task.element_spec, ignore_label=task.ignore_label
      ),
      client_optimizer_fn=_sgd(config.client_learning_rate, config.client_momentum),
      server_optimizer_fn=_sgd(config.server_learning_rate),
      client_weighting=WEIGHTINGS[config.client_weighting],
      model_aggregator=DroppedClientCounter(aggregator),
  )
  return LearningProcessAlgorithm(
      name='fedavg',
      process=process,
      task=task,
      learning_rate_path=('client_work', 'learning_rate'),
      learning_rate=config.client_learning_rate,
      learning_rate_decay=config.learning_rate_decay,
      learning_rate_decay_from=config.learning_rate_decay_from,
      upload_factory=aggregator,
  )


def build_fedsgd(
    task: base.Task,
    config: FedAvgConfig,
    *,
    aggregator: Optional[tff.aggregators.WeightedAggregationFactory] = None,
) -> LearningProcessAlgorithm:
  """FedSGD: `tff.learning.algorithms.build_fed_sgd` with step eta * server_lr.

  Clients send the gradient of their mean loss over their whole dataset (TFF
  accumulates it over the batches, so B only bounds memory); the server averages
  gradients weighted by n_k and takes one SGD step.
  """
  if config.client_weighting != 'num_examples':
    raise ValueError('fedsgd weights clients by num_examples only')
  step = config.client_learning_rate * config.server_learning_rate
  process = tff.learning.algorithms.build_fed_sgd(
      model_adapter.tff_model_fn(
          task.model_builder, task.element_spec, ignore_label=task.ignore_label
      ),
      server_optimizer_fn=_sgd(step),
      model_aggregator=DroppedClientCounter(aggregator),
  )
  return LearningProcessAlgorithm(
      name='fedsgd',
      process=process,
      task=task,
      learning_rate_path=('finalizer', 'learning_rate'),
      learning_rate=step,
      learning_rate_decay=config.learning_rate_decay,
      learning_rate_decay_from=config.learning_rate_decay_from,
      upload_factory=aggregator,
  )
