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
from collections.abc import Mapping, Sequence
from typing import Any, Optional

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from compression import accounting
from tff_programs import model_adapter
from tff_programs import options
from tff_programs import sections
from tff_programs.algorithms import base
from tff_programs.algorithms import client_loop
from tff_programs.algorithms import fedavg_stats
from tff_programs.options import option

WEIGHTINGS = collections.OrderedDict([
    ('num_examples', tff.learning.ClientWeighting.NUM_EXAMPLES),
    ('uniform', tff.learning.ClientWeighting.UNIFORM),
])


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


class FedAvgOptions(options.Options):
  """FedAvg's options (C, E, B and eta are the client training section's)."""

  SECTION = 'Algorithm: fedavg (McMahan et al. 2017)'

  client_weighting: str = option('num_examples', 'num_examples (n_k/n, the paper) | uniform (1/m).',
                                 allowed=tuple(WEIGHTINGS))
  client_momentum: float = option(0.0, 'Momentum of the client optimizer (0 = plain SGD).',
                                  check=options.number_in(0, 1, high_open=True))
  server_learning_rate: float = option(1.0, 'Server learning rate applied to the averaged update (1.0 = the paper).',
                                       check=options.positive_number)


class FedSGDOptions(options.Options):
  """FedSGD's options: one gradient per client (E=1), the server takes the step."""

  SECTION = 'Algorithm: fedsgd (McMahan et al. 2017)'

  server_learning_rate: float = options.same_as(FedAvgOptions, 'server_learning_rate')


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
    self.task = task
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
    (RPN always does: its threshold and full rounds change what is sent), else
    the static per-client costs; with RPN full rounds, `rpn_full_round`."""
    result = accounting.traffic_row(self.upload_cost, self.download_cost, m)
    if all(k in aggregator_metrics for k in accounting.MEASURED_KEYS):
      measured = {k: int(aggregator_metrics[k]) for k in accounting.MEASURED_KEYS}
      result['upload_params_per_client'] = measured['upload_values'] / m
      result['upload_bytes'] = measured['upload_bytes']
      result['download_params'] = measured['download_values'] + self._download_extra.params
      result['download_bytes'] = (measured['download_bytes'] + self._download_extra.bytes) * m
    result.update(accounting.full_round_column(aggregator_metrics))
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
    training: sections.ClientTrainingOptions,
    opts: FedAvgOptions = FedAvgOptions(),
    *,
    aggregator: Optional[tff.aggregators.WeightedAggregationFactory] = None,
    name: str = 'fedavg',
) -> base.FederatedAlgorithm:
  """FedAvg: `tff.learning.algorithms.build_weighted_fed_avg` + seeded init.

  For models with non-trainable weights (batch-norm statistics) it is
  FedAvg with statistics averaging instead (`fedavg_stats`): TFF's would leave
  them at their initial values.

  Args:
    task: model builder, batch spec and data.
    training: eta and its schedule (C, E, B shape the clients' data).
    opts: weighting, client momentum, server learning rate.
    aggregator: model-delta aggregator stack (None = TFF's weighted mean);
      RPN and quantization plug in here.
    name: the algorithm's name in outputs (RPN's preset reuses this builder).
  """
  if fedavg_stats.has_statistics(task.model_builder()):
    fedavg_stats.check_supported(client_momentum=opts.client_momentum,
                                 server_learning_rate=opts.server_learning_rate)
    return fedavg_stats.FedAvgWithStatistics(
        task, name=name, client_learning_rate=training.client_learning_rate,
        learning_rate_decay=training.learning_rate_decay,
        learning_rate_decay_from=training.learning_rate_decay_from,
        local_epochs=training.local_epochs, client_weighting=opts.client_weighting,
        aggregator=aggregator)
  return build_tff_fedavg(task, training, opts, aggregator=aggregator, name=name)


def build_tff_fedavg(task: base.Task, training: sections.ClientTrainingOptions,
                     opts: FedAvgOptions = FedAvgOptions(), *,
                     aggregator: Optional[tff.aggregators.WeightedAggregationFactory] = None,
                     name: str = 'fedavg') -> 'LearningProcessAlgorithm':
  """TFF's `build_weighted_fed_avg` as it is (batch-norm statistics frozen):
  `build_fedavg` uses it for models without statistics."""
  process = tff.learning.algorithms.build_weighted_fed_avg(
      model_adapter.tff_model_fn(
          task.model_builder, task.element_spec, ignore_label=task.ignore_label
      ),
      client_optimizer_fn=_sgd(training.client_learning_rate, opts.client_momentum),
      server_optimizer_fn=_sgd(opts.server_learning_rate),
      client_weighting=WEIGHTINGS[opts.client_weighting],
      model_aggregator=DroppedClientCounter(aggregator),
      loop_implementation=client_loop.TFF_LOOP,
  )
  return LearningProcessAlgorithm(
      name=name,
      process=process,
      task=task,
      learning_rate_path=('client_work', 'learning_rate'),
      learning_rate=training.client_learning_rate,
      learning_rate_decay=training.learning_rate_decay,
      learning_rate_decay_from=training.learning_rate_decay_from,
      upload_factory=aggregator,
  )


def build_fedsgd(
    task: base.Task,
    training: sections.ClientTrainingOptions,
    opts: FedSGDOptions = FedSGDOptions(),
    *,
    aggregator: Optional[tff.aggregators.WeightedAggregationFactory] = None,
) -> base.FederatedAlgorithm:
  """FedSGD: `tff.learning.algorithms.build_fed_sgd` with step eta * server_lr.

  Clients send the gradient of their mean loss over their whole dataset (TFF
  accumulates it over the batches, so B only bounds memory); the server averages
  gradients weighted by n_k and takes one SGD step. For models with batch-norm
  statistics it is the equivalent FedAvg round that averages them too (one
  full-batch step per client with step eta*server_lr and the n_k-weighted
  average is exactly w - eta * sum_k (n_k / n) g_k): it needs B = inf.
  """
  step = training.client_learning_rate * opts.server_learning_rate
  if fedavg_stats.has_statistics(task.model_builder()):
    if training.batch is not None:
      raise fedavg_stats.StatisticsError(
          f'--batch_size={training.batch_size}: fedsgd on a model with batch-norm statistics takes its '
          "one gradient on the whole client set as one batch (the statistics' batch); use --batch_size=inf")
    return fedavg_stats.FedAvgWithStatistics(
        task, name='fedsgd', client_learning_rate=step,
        learning_rate_decay=training.learning_rate_decay,
        learning_rate_decay_from=training.learning_rate_decay_from, local_epochs=1,
        client_weighting='num_examples', aggregator=aggregator)
  return build_tff_fedsgd(task, training, opts, aggregator=aggregator)


def build_tff_fedsgd(task: base.Task, training: sections.ClientTrainingOptions,
                     opts: FedSGDOptions = FedSGDOptions(), *,
                     aggregator: Optional[tff.aggregators.WeightedAggregationFactory] = None
                     ) -> 'LearningProcessAlgorithm':
  """TFF's `build_fed_sgd` as it is (step eta * server_lr; statistics frozen)."""
  step = training.client_learning_rate * opts.server_learning_rate
  process = tff.learning.algorithms.build_fed_sgd(
      model_adapter.tff_model_fn(
          task.model_builder, task.element_spec, ignore_label=task.ignore_label
      ),
      server_optimizer_fn=_sgd(step),
      model_aggregator=DroppedClientCounter(aggregator),
      loop_implementation=client_loop.TFF_LOOP,
  )
  return LearningProcessAlgorithm(
      name='fedsgd',
      process=process,
      task=task,
      learning_rate_path=('finalizer', 'learning_rate'),
      learning_rate=step,
      learning_rate_decay=training.learning_rate_decay,
      learning_rate_decay_from=training.learning_rate_decay_from,
      upload_factory=aggregator,
  )


def _build_fedavg(task, training, opts, aggregator):
  return build_fedavg(task, training, opts, aggregator=aggregator)


def _check_fedsgd(training: sections.ClientTrainingOptions, opts: FedSGDOptions) -> None:
  del opts
  if training.local_epochs != 1:
    raise options.ConfigError(
        f'--local_epochs={training.local_epochs}: fedsgd takes one gradient per round (E=1)')


def _build_fedsgd(task, training, opts, aggregator):
  _check_fedsgd(training, opts)
  return build_fedsgd(task, training, opts, aggregator=aggregator)


FEDAVG = base.AlgorithmSpec(
    name='fedavg', build=_build_fedavg, options=FedAvgOptions,
    description='FedAvg: C, E, B, n_k/n weighting (McMahan et al. 2017); averages batch-norm statistics too')
FEDSGD = base.AlgorithmSpec(
    name='fedsgd', build=_build_fedsgd, options=FedSGDOptions, check=_check_fedsgd,
    description='FedSGD: one gradient per client on its whole data (E=1, B=inf), one server step')
