"""FedAvg for models with batch-norm statistics (ResNets): the statistics are averaged too.

TFF's `build_weighted_fed_avg` aggregates the deltas of the *trainable*
variables only; non-trainable ones such as batch-norm moving means/variances
keep their initial values (0 and 1) for the whole run, so a ResNet trained with
it is evaluated with wrong statistics (measured: ResNet-56 on MNIST, train
accuracy rising while the test loss is in the thousands). FedML, PFLlib and the
FedGKT paper's FedAvg baseline average every entry of the model state.

This algorithm is FedAvg with that fix: each client trains (plain SGD, E
epochs, batch B) from the global model and uploads its trainable delta, which
goes through the model aggregator (weighted mean by default; RPN for
`--algorithm=rpn`), and its new batch-norm statistics, which are averaged with
the same weights (n_k, or uniform). It is the FedPer process with no
personalization layers (K_P = 0), whose equality with TFF's FedAvg on models
without statistics is tested:

  next: (<server_state@SERVER, {<x, y>*}@CLIENTS, <>@CLIENTS>
         -> <server_state@SERVER, <>@CLIENTS, metrics@SERVER>)

Its metrics rows are FedPer's, `non_finite_clients` included (the round's
clients whose delta, statistics or training loss has a NaN or inf).

`--algorithm=fedavg` and `--algorithm=rpn` select it automatically for models
with non-trainable weights. It supports what that process does: plain client
SGD (no momentum) and server learning rate 1; other settings are refused in
one line rather than silently changed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Optional

import tensorflow as tf
import tensorflow_federated as tff

from tff_programs.algorithms import base
from tff_programs.algorithms import fedper


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


class FedAvgWithStatistics(fedper.FedPerAlgorithm):
  """FedAvg that also averages batch-norm statistics, with the clients' weights."""

  name = 'fedavg'
  uses_client_states = False

  def __init__(self, task: base.Task, *, client_learning_rate: float,
               learning_rate_decay: float, local_epochs: int,
               learning_rate_decay_from: int = 1,
               client_weighting: str = 'num_examples', name: str = 'fedavg',
               aggregator: Optional[tff.aggregators.WeightedAggregationFactory] = None):
    config = fedper.FedPerConfig(personal_blocks=0, client_learning_rate=client_learning_rate,
                                 learning_rate_decay=learning_rate_decay,
                                 learning_rate_decay_from=learning_rate_decay_from,
                                 local_epochs=local_epochs, client_weighting=client_weighting)
    super().__init__(task, config, aggregator=aggregator)
    self.name = name
    _, self._no_personal = self._weights_of(self._template)

  def next(self, state: Any, round_num: int, client_ids: Sequence[str],
           client_datasets: Sequence[tf.data.Dataset],
           client_states: Mapping[str, Any]) -> base.RoundOutput:
    del client_states  # no personal layers: every client state is empty
    empty = {c: self._no_personal for c in client_ids}
    output = super().next(state, round_num, client_ids, client_datasets, empty)
    return base.RoundOutput(output.state, {}, output.metrics)
