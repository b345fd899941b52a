"""The interface every FedSuite algorithm implements for the program logic.

The program logic (`tff_programs/program_logic.py`) only knows this interface: it
samples clients, builds their datasets, calls `next`, evaluates, checkpoints.
What happens inside a round (a `tff.learning` process, a process with private
client states, a two-model process) is the algorithm's business.

* Stateless-client algorithms (FedAvg, FedSGD, RPN) ignore `client_states`.
* Algorithms whose clients keep private state (FedPer) set
  `uses_client_states = True`, return the updated states of the sampled clients in
  `RoundOutput.client_states`, and provide `initial_client_state`.
* Everything an algorithm returns as state is a nest of numpy arrays (TFF
  structures, attrs classes, OrderedDicts), so checkpointing is generic.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Optional

import numpy as np
import tensorflow as tf

ServerState = Any
ClientState = Any


def decayed_learning_rate(rate: float, decay: float, decay_from: int, round_num: int) -> float:
  """The learning rate of round `round_num` (1-based) under exponential decay.

  Rounds up to `decay_from` use `rate`; round r after it uses
  `rate * decay**(r - decay_from)`. `decay_from=1` is the paper's per-round decay
  (`rate * decay**(r - 1)`); a larger value keeps the rate constant first, e.g. to
  anneal a run that has plateaued (see `run_outputs.schedules_agree`).
  """
  return float(rate * decay ** max(0, round_num - decay_from))


@dataclasses.dataclass(frozen=True)
class Task:
  """What is trained: a Keras model builder and the shape of its batches.

  Attributes:
    model_builder: no-arg callable returning a fresh, uncompiled Keras model
      whose output is logits.
    element_spec: the `tf.data` element spec of one client batch:
      `OrderedDict(x=TensorSpec, y=TensorSpec)` with a `None` batch dimension.
    num_classes: number of output classes.
    ignore_label: a label value excluded from loss and accuracy (padding in
      sequence tasks), or None.
  """

  model_builder: Callable[[], tf.keras.Model]
  element_spec: Any
  num_classes: int
  ignore_label: Optional[int] = None


@dataclasses.dataclass(frozen=True)
class RoundOutput:
  """What one round returns to the program logic.

  Attributes:
    state: the new server state.
    client_states: updated private states of this round's clients (by id);
      empty for algorithms without client state.
    metrics: flat scalars for `metrics.csv` (train_loss, train_accuracy,
      clients, examples, upload/download params and bytes, ...).
  """

  state: ServerState
  client_states: Mapping[str, ClientState]
  metrics: Mapping[str, float]


class FederatedAlgorithm(abc.ABC):
  """A federated training algorithm, as the program logic drives it."""

  name: str = 'algorithm'
  uses_client_states: bool = False
  # Per-client cost of the full model a client must download before its first
  # round, when the per-round broadcast is not the full model (RPN); counted by
  # the program loop (`program_logic.FirstDownloads`). None: nothing extra.
  initial_download_cost: Optional[Any] = None

  def bind_data(self, data: Any) -> None:
    """Receives the run's `FederatedData` before training (default: unused).

    Algorithms that build their clients' inputs themselves (FedGKT pairs each
    example with its pending server logits) keep a reference here.
    """
    del data

  def bind_client_files(self, files: Any) -> None:
    """Receives the run's `datasets.client_files.ClientArrayFiles` (default:
    unused; algorithms that build their clients' inputs themselves read the
    client arrays from these files inside the TFF worker)."""
    del files

  @abc.abstractmethod
  def initialize(self, seed: int) -> ServerState:
    """The round-0 server state; deterministic for a seed."""

  @abc.abstractmethod
  def next(
      self,
      state: ServerState,
      round_num: int,
      client_ids: Sequence[str],
      client_datasets: Sequence[tf.data.Dataset],
      client_states: Mapping[str, ClientState],
  ) -> RoundOutput:
    """Runs round `round_num` (1-based) on the given clients."""

  @abc.abstractmethod
  def model_weights(self, state: ServerState) -> list[np.ndarray]:
    """The global model's weights, in `keras_model.get_weights()` order."""

  def initial_client_state(self, client_id: str, seed: int) -> ClientState:
    """A new client's private state (only if `uses_client_states`)."""
    raise NotImplementedError(f'{self.name} keeps no client state')

  def client_model_weights(
      self, state: ServerState, client_state: ClientState
  ) -> list[np.ndarray]:
    """A client's personalized model weights (defaults to the global model)."""
    del client_state
    return self.model_weights(state)

  def build_model(
      self,
      task: Task,
      state: ServerState,
      client_state: Optional[ClientState] = None,
  ) -> tf.keras.Model:
    """The Keras model to export: the global model, or a client's own model.

    The default builds `task.model_builder()` and assigns `model_weights` /
    `client_model_weights`; algorithms whose deployed model has another
    architecture (FedGKT: the client's extractor stacked with the server
    model) override it.
    """
    model = task.model_builder()
    weights = (self.model_weights(state) if client_state is None
               else self.client_model_weights(state, client_state))
    model.set_weights(weights)
    return model

  def evaluate(
      self, state: ServerState, client_states: Mapping[str, ClientState], data: Any
  ) -> Optional[Mapping[str, float]]:
    """Algorithm-specific evaluation, or None for the program's standard one
    (central test set for a global model; per-client test splits otherwise)."""
    del state, client_states, data
    return None
