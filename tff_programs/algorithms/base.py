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

from datasets import preprocessing as preprocessing_lib
from tff_programs import schedule

ServerState = Any
ClientState = Any


decayed_learning_rate = schedule.decayed_learning_rate  # The algorithms' schedule.


@dataclasses.dataclass(frozen=True)
class Task:
  """What is trained, on what: the model, the batch spec, the clients' data.

  Attributes:
    model_builder: no-arg callable returning a fresh, uncompiled Keras model
      whose output is logits.
    element_spec: the `tf.data` element spec of one client batch:
      `OrderedDict(x=TensorSpec, y=TensorSpec)` with a `None` batch dimension
      (x as the model sees it, after preprocessing).
    num_classes: number of output classes.
    ignore_label: a label value excluded from loss and accuracy (padding in
      sequence tasks), or None.
    preprocessing: the dataset's transforms (`datasets.preprocessing`): the
      one place algorithms, evaluation and export look them up.
    data: the clients' training data (`datasets.client_source`), or None for
      algorithms driven with ready-made datasets (unit tests).
    scratch_dir: a folder of the run for temporary files (FedGKT's spilled
      features), or None for the system's temp folder.
  """

  model_builder: Callable[[], tf.keras.Model]
  element_spec: Any
  num_classes: int
  ignore_label: Optional[int] = None
  preprocessing: preprocessing_lib.Preprocessing = preprocessing_lib.Preprocessing()
  data: Optional[Any] = None
  scratch_dir: Optional[str] = None


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
  task: Optional[Task] = None
  # Per-client cost of the full model a client must download before its first
  # round, when the per-round broadcast is not the full model (RPN); counted by
  # the program loop (`program_logic.FirstDownloads`). None: nothing extra.
  initial_download_cost: Optional[Any] = None

  def client_datasets(self, client_ids: Sequence[str], round_num: int) -> list[Any]:
    """The inputs of round `round_num`'s clients that do not depend on the
    round's state, so the loop can build them one round ahead: by default each
    client's training batches from `task.data`. Algorithms that build their
    clients' inputs from state (FedGKT) return one None per client."""
    return [self.task.data.train_dataset(cid, round_num) for cid in client_ids]

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


@dataclasses.dataclass(frozen=True)
class AlgorithmSpec:
  """One `--algorithm`: its options and its builder (one registry line each).

  `build(task, training, options, aggregator)` receives the task, the client
  training options (`sections.ClientTrainingOptions`), the algorithm's own
  options (an instance of `options`) and the aggregator factory stack (None:
  TFF's weighted mean), and returns the `FederatedAlgorithm`.

  Attributes:
    name: the `--algorithm` value.
    build: the builder.
    options: the algorithm's `tff_programs.options.Options` class (its flags).
    description: one line for --help.
    uses_model: whether `--model` applies (FedGKT has its own models).
    uses_aggregator: whether `--aggregator` applies (FedGKT sends features).
    check: (training options, own options) -> None, raising a one-line
      `ConfigError` for combinations the algorithm cannot run (FedSGD: E=1);
      called while flags are validated, before anything is built.
  """

  name: str
  build: Callable[..., 'FederatedAlgorithm']
  options: type
  description: str
  uses_model: bool = True
  uses_aggregator: bool = True
  check: Optional[Callable[[Any, Any], None]] = None
