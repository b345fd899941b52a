"""The federated training loop, independent of algorithm, data and flags.

    for round r = start+1 .. R:
      clients  = sample_clients(ids, m, seed, r)          (stateless, seeded)
      datasets = algorithm.client_datasets(clients, r)      (seeded per round, client)
      output   = algorithm.next(state, r, clients, datasets, their private states)
      divergence check: training loss, weights, client states finite
      metrics row (+ eval every `eval_every` rounds) -> metrics.csv + TensorBoard
      commit: the round's state and client states become the run's
      checkpoint every `checkpoint_every` rounds and at the last round

A round counts as finished only once its row is written and its states are
committed. Any exit (normal, error, divergence, Ctrl-C/SIGTERM turned into
KeyboardInterrupt) first checkpoints the last finished round, so a finished
round is never lost, and no round is checkpointed without its row: an interrupt
during evaluation or row writing loses that round's work, which `--resume`
redoes. The resumed run produces the same rows and state as an uninterrupted
one, because sampling, client shuffling and the initial model are pure
functions of the seed and the round number (rows after the resumed checkpoint
are dropped first).

Divergence policy (every algorithm): the first round whose training loss, global
weights or updated client states are not finite stops the run with a
`DivergenceError` naming the round and learning rate; the folder keeps the rows
and checkpoint of the last good round, nothing after it. Clients that an
algorithm dropped as non-finite (TFF's FedAvg drops them) are counted in the
`non_finite_clients` column; a round that dropped every client learned nothing
and counts as diverged.

The loop depends only on a `FederatedAlgorithm`, a dataset function, an
evaluation function and the run's output/checkpoint managers, so tests drive it
with fakes.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import dataclasses
import math
import signal
import threading
import time
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from typing import Any, Optional

import numpy as np
import tensorflow as tf
from absl import logging

from tff_programs import checkpointing
from tff_programs import metrics as metrics_lib
from tff_programs import progress as progress_lib
from tff_programs import run_outputs
from tff_programs import sampling
from tff_programs.algorithms import base


class DivergenceError(ValueError):
  """A round's training loss or weights are not finite (one line: round, rate)."""


@dataclasses.dataclass(frozen=True)
class LoopConfig:
  """How the loop runs.

  Attributes:
    rounds: total rounds R (a resumed run may raise it).
    clients_per_round: m.
    eval_every: evaluate every this many rounds (and at the last round).
    checkpoint_every: checkpoint every this many rounds (and at the last).
    seed: seeds initialization, sampling and client shuffling.
    target_accuracy: for rounds-to-target in the summary, or None.
    stop_at_target: end the run at the first evaluation reaching the target
      (rounds-to-target is then known; the rest of the budget is not spent).
    target_metric: the metrics column rounds-to-target and stop-at-target
      read: 'eval_accuracy' (global test set) or e.g.
      'personalized_accuracy_mean' (FedPer's measure).
  """

  rounds: int
  clients_per_round: int
  eval_every: int = 1
  checkpoint_every: int = 10
  seed: int = 0
  target_accuracy: Optional[float] = None
  stop_at_target: bool = False
  target_metric: str = 'eval_accuracy'


@dataclasses.dataclass
class TrainingResult:
  state: Any
  client_states: MutableMapping[str, Any]
  last_round: int
  summary: dict[str, Any]


EvalFn = Callable[[Any, Mapping[str, Any]], Mapping[str, float]]


def run_training(
    *,
    algorithm: base.FederatedAlgorithm,
    client_ids: Sequence[str],
    evaluate: Optional[EvalFn],
    config: LoopConfig,
    outputs: run_outputs.RunOutputs,
    checkpoints: checkpointing.CheckpointManager,
    resume: bool = False,
    show_progress: Optional[bool] = None,
    client_state_store: Optional[MutableMapping[str, Any]] = None,
) -> TrainingResult:
  """Trains `algorithm` for `config.rounds` rounds, resuming if asked.

  Args:
    algorithm: the federated algorithm.
    client_ids: all K client ids.
    evaluate: (server_state, client_states) -> eval metrics, or None.
    config: loop settings.
    outputs: the run folder's writers.
    checkpoints: the run's checkpoint manager.
    resume: continue from the newest readable checkpoint if there is one.
    show_progress: force the progress bar on/off (None: on for a terminal).
    client_state_store: where private client states live (default: a dict;
      `client_states.ClientStateStore` spills them to disk past a budget).

  Returns:
    The final state, client states, last round and the summary written.

  Raises:
    DivergenceError: a round's loss or weights were not finite (the last good
      round is saved first).
  """
  client_template = (
      (lambda cid: algorithm.initial_client_state(cid, config.seed))
      if algorithm.uses_client_states
      else None
  )
  start_round = 0
  client_states = client_state_store if client_state_store is not None else {}
  state = algorithm.initialize(config.seed)
  restored = (checkpoints.load_latest(state, client_template, into=client_states)
              if resume else None)
  if restored is not None:
    if restored.seed != config.seed:
      raise run_outputs.RunDirError(
          f'--resume: checkpoint has seed {restored.seed}, flags say {config.seed}'
      )
    start_round = restored.round_num
    state, client_states = restored.server_state, restored.client_states
    logging.warning('Resuming from round %d', start_round)
  outputs.truncate_metrics(start_round)
  first_download = FirstDownloads(
      algorithm.initial_download_cost, client_ids, config, start_round)
  inputs = RoundInputs(client_ids, algorithm.client_datasets, config)

  last_done, last_saved = start_round, start_round
  committing = False  # True while the store holds part of a round: never checkpointed.

  def checkpoint(round_num: int) -> None:
    nonlocal last_saved
    checkpoints.save(
        round_num,
        state,
        seed=config.seed,
        client_states=client_states if algorithm.uses_client_states else None,
    )
    last_saved = round_num

  stopped_at_target = False
  finished = False
  bar = progress_lib.Progress(config.rounds, start_round, enabled=show_progress)

  def write_summary(interrupted: bool) -> dict[str, Any]:
    summary = metrics_lib.summarize(
        outputs.read_metrics(), target_accuracy=config.target_accuracy,
        accuracy_key=config.target_metric,
    )
    summary['stopped_at_target'] = stopped_at_target
    summary['interrupted'] = interrupted
    outputs.write_summary(summary)
    return summary

  try:
    for round_num in range(start_round + 1, config.rounds + 1):
      started = time.perf_counter()
      ids, datasets = inputs.take(round_num)
      if round_num < config.rounds:
        inputs.prepare(round_num + 1)  # Built while this round runs in the worker.
      private = (
          {cid: client_states[cid] if cid in client_states else client_template(cid) for cid in ids}
          if client_template is not None
          else {}
      )
      output = algorithm.next(state, round_num, ids, datasets, private)
      check_finite(round_num, output, algorithm)
      row = collections.OrderedDict(round=round_num)
      row.update(output.metrics)
      row.update(first_download.row(ids, row))
      row['train_seconds'] = time.perf_counter() - started
      if evaluate is not None and (
          round_num % config.eval_every == 0 or round_num == config.rounds
      ):
        # The round's client states are seen through an overlay: the store
        # changes only when the round is committed below.
        row.update(evaluate(output.state, collections.ChainMap(
            dict(output.client_states), client_states)))
      row['seconds'] = time.perf_counter() - started
      with interrupts_deferred():  # A written row always has its round committed.
        outputs.release_metrics(round_num, row)
        committing = True
        client_states.update(output.client_states)
        state = output.state
        first_download.commit(ids)
        last_done = round_num
        committing = False
      bar.update(round_num, row)
      reached = (config.stop_at_target and config.target_accuracy is not None
                 and (row.get(config.target_metric) or -1.0) >= config.target_accuracy)
      if round_num % config.checkpoint_every == 0 or round_num == config.rounds or reached:
        checkpoint(round_num)
      if reached:
        stopped_at_target = True
        break
    finished = True
  finally:
    inputs.close()
    bar.close()
    if last_done > last_saved and not committing:
      try:
        checkpoint(last_done)
        logging.info('Saved round %d before exiting', last_done)
      except Exception as e:  # pylint: disable=broad-except
        logging.error('Could not checkpoint round %d: %s', last_done, e)
    if not finished:
      # summary.json describes the rows on disk, also after Ctrl-C/SIGTERM/errors.
      try:
        write_summary(interrupted=True)
      except Exception as e:  # pylint: disable=broad-except
        logging.error('Could not write summary.json: %s', e)

  return TrainingResult(state, client_states, last_done, write_summary(interrupted=False))


@contextlib.contextmanager
def interrupts_deferred():
  """Holds back SIGINT/SIGTERM until the block ends, then delivers the first one.

  Writing a round's row and committing its states is one step: an interrupt
  in between would leave a row whose round is not in the checkpoint written on
  exit. Signal handlers belong to the main thread; elsewhere the block runs
  as is (and only the row-before-commit order protects it).
  """
  if threading.current_thread() is not threading.main_thread():
    yield
    return
  received: list[int] = []
  previous = {sig: signal.signal(sig, lambda signum, frame: received.append(signum))
              for sig in (signal.SIGINT, signal.SIGTERM)}
  try:
    yield
  finally:
    for sig, handler in previous.items():
      signal.signal(sig, handler)
    if received:
      signal.raise_signal(received[0])  # Now handled as the program wants (Ctrl-C, SIGTERM).


def _all_finite(nest: Any) -> bool:
  """Whether every floating-point leaf of `nest` is finite."""
  for leaf in tf.nest.flatten(nest):
    array = np.asarray(leaf)
    if np.issubdtype(array.dtype, np.floating) and not np.all(np.isfinite(array)):
      return False
  return True


def check_finite(round_num: int, output: base.RoundOutput,
                 algorithm: base.FederatedAlgorithm) -> None:
  """Raises DivergenceError if round `round_num`'s result is not finite.

  Checked: the training loss, the global model weights, the updated client
  states, and whether the algorithm dropped every client as non-finite.
  """
  metrics = output.metrics
  problems = []
  loss = metrics.get('train_loss')
  if loss is not None and not math.isfinite(float(loss)):
    problems.append(f'training loss {float(loss)}')
  dropped = int(metrics.get('non_finite_clients') or 0)
  if dropped and dropped >= int(metrics.get('clients') or 0):
    problems.append(f'all {dropped} clients dropped as non-finite')
  if not _all_finite(algorithm.model_weights(output.state)):
    problems.append('non-finite model weights')
  bad_clients = [cid for cid, s in output.client_states.items() if not _all_finite(s)]
  if bad_clients:
    problems.append(f'non-finite state of {len(bad_clients)} client(s) (e.g. {bad_clients[0]})')
  if problems:
    rate = metrics.get('learning_rate')
    at_rate = f' at learning rate {float(rate):g}' if rate is not None else ''
    raise DivergenceError(
        f'round {round_num} diverged ({"; ".join(problems)}){at_rate}: the run stopped; '
        f'rounds up to {round_num - 1} are saved. Try a smaller learning rate in a new run')


class RoundInputs:
  """The sampled clients of a round and their datasets, built one round ahead.

  Building a client's `tf.data` pipeline costs the driver ~10-20 ms (tracing
  its functions); while round r runs in the TFF worker, the driver is idle,
  so round r+1's datasets (`algorithm.client_datasets`) are built then, in one
  background thread. Both are pure functions of (seed, round, client), so
  prefetching changes no result.
  """

  def __init__(self, client_ids: Sequence[str],
               client_datasets: Callable[[Sequence[str], int], Sequence[Any]],
               config: LoopConfig):
    self._client_ids = client_ids
    self._make = client_datasets
    self._config = config
    self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix='round-inputs')
    self._pending: dict[int, concurrent.futures.Future] = {}

  def _build(self, round_num: int) -> tuple[list[str], list[tf.data.Dataset]]:
    ids = sampling.sample_clients(self._client_ids, self._config.clients_per_round,
                                  seed=self._config.seed, round_num=round_num)
    return ids, list(self._make(ids, round_num))

  def prepare(self, round_num: int) -> None:
    """Starts building round `round_num`'s inputs in the background."""
    if round_num not in self._pending:
      self._pending[round_num] = self._executor.submit(self._build, round_num)

  def take(self, round_num: int) -> tuple[list[str], list[tf.data.Dataset]]:
    """Round `round_num`'s (client ids, datasets): prefetched, or built now."""
    future = self._pending.pop(round_num, None)
    return future.result() if future is not None else self._build(round_num)

  def close(self) -> None:
    for future in self._pending.values():
      future.cancel()
    self._pending.clear()
    self._executor.shutdown(wait=True)


class FirstDownloads:
  """Counts the full model each client downloads once, before its first round.

  Algorithms whose broadcast is compressed relative to the previous global
  model (RPN sends the pooled average) need every client to hold the initial
  model first; `initial_download_cost` is that per-client cost (None when the
  broadcast is the full model anyway). The clients seen so far are a pure
  function of the seed and the rounds done, so a resumed run recomputes them.
  """

  def __init__(self, cost: Optional[Any], client_ids: Sequence[str], config: LoopConfig,
               rounds_done: int):
    self._cost = cost
    self._seen: set[str] = set()
    if cost is not None:
      for r in range(1, rounds_done + 1):
        self._seen.update(sampling.sample_clients(
            client_ids, config.clients_per_round, seed=config.seed, round_num=r))

  def row(self, ids: Sequence[str], metrics: Mapping[str, Any]) -> dict[str, Any]:
    """`initial_download_bytes` of this round, also added to `download_bytes`."""
    if self._cost is None:
      return {}
    new = sum(1 for cid in ids if cid not in self._seen)
    extra = int(self._cost.bytes) * new
    return collections.OrderedDict(
        first_round_clients=new, initial_download_bytes=extra,
        download_bytes=(metrics.get('download_bytes') or 0) + extra)

  def commit(self, ids: Sequence[str]) -> None:
    if self._cost is not None:
      self._seen.update(ids)
