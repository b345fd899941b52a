"""FedAvg for models with batch-norm statistics (ResNets): the statistics are averaged too.

TFF's `build_weighted_fed_avg` aggregates the deltas of the *trainable*
variables only; non-trainable ones such as batch-norm moving means/variances
keep their initial values (0 and 1) for the whole run, so a ResNet trained with
it is evaluated with wrong statistics (measured: ResNet-56 on MNIST, train
accuracy rising while the test loss is in the thousands). FedML, PFLlib and the
FedGKT paper's FedAvg baseline average every entry of the model state.

This algorithm is FedAvg with that fix: the "federate the base, keep the
rest" core (`partial_fedavg`) with nothing personal. Each client trains (plain
SGD, E epochs, batch B) from the global model and uploads its trainable delta,
which goes through the aggregator stack, and its new batch-norm statistics,
averaged with the same weights (n_k, or uniform). Its equality with TFF's
FedAvg on models without statistics is tested. `fedavg.build_fedavg` (and
FedSGD, RPN) select it for models with non-trainable weights. It supports what
the core does: plain client SGD (no momentum) and server learning rate 1;
other settings are refused in one line rather than silently changed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Optional

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_programs.algorithms import base
from tff_programs.algorithms import partial_fedavg


class StatisticsError(ValueError):
  """A one-line error: a FedAvg setting this algorithm cannot honour."""


def check_supported(*, client_momentum: float, server_learning_rate: float) -> None:
  """Raises StatisticsError (flag, value, why) for settings it does not implement."""
  why = 'models with batch-norm statistics use FedAvg with statistics averaging, which supports'
  if client_momentum != 0.0:
    raise StatisticsError(f'--client_momentum={client_momentum}: {why} plain client SGD only (0)')
  if server_learning_rate != 1.0:
    raise StatisticsError(f'--server_learning_rate={server_learning_rate}: {why} only 1.0')


def has_statistics(model: tf.keras.Model) -> bool:
  """Whether `model` has non-trainable weights that TFF's FedAvg would freeze."""
  return bool(model.non_trainable_weights)


class FedAvgWithStatistics(base.FederatedAlgorithm):
  """FedAvg that also averages batch-norm statistics, with the clients' weights."""

  name = 'fedavg'
  uses_client_states = False

  def __init__(self, task: base.Task, *, client_learning_rate: float,
               learning_rate_decay: float, local_epochs: int,
               learning_rate_decay_from: int = 1,
               client_weighting: str = 'num_examples', name: str = 'fedavg',
               aggregator: Optional[tff.aggregators.WeightedAggregationFactory] = None):
    self.task = task
    self.name = name
    self._template = task.model_builder()
    split = partial_fedavg.WeightSplit.from_model(self._template, frozenset())
    config = partial_fedavg.PartialConfig(
        client_learning_rate=client_learning_rate, learning_rate_decay=learning_rate_decay,
        learning_rate_decay_from=learning_rate_decay_from, local_epochs=local_epochs,
        client_weighting=client_weighting)
    self.core = partial_fedavg.PartialFedAvg(task, config, split, aggregator=aggregator)
    self.process = self.core.process
    self.split = split
    self.upload_cost, self.download_cost = self.core.upload_cost, self.core.download_cost
    self.initial_download_cost = self.core.initial_download_cost
    _, self._nothing = self.core.weights_of(self._template)

  @property
  def keras_template(self) -> tf.keras.Model:
    return self._template

  def initialize(self, seed: int) -> Any:
    return self.core.initialize(seed)

  def learning_rate(self, round_num: int) -> float:
    return self.core.learning_rate(round_num)

  def next(self, state: Any, round_num: int, client_ids: Sequence[str],
           client_datasets: Sequence[tf.data.Dataset],
           client_states: Mapping[str, Any]) -> base.RoundOutput:
    del client_states  # nothing personal: every client's part is empty
    new_state, _, row = self.core.next(state, round_num, client_ids, client_datasets,
                                       [self._nothing] * len(client_ids))
    return base.RoundOutput(new_state, {}, row)

  def model_weights(self, state: Any) -> list[np.ndarray]:
    return self.core.keras_weights(state, self._nothing)
