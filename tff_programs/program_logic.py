"""The federated training loop, independent of algorithm, data and flags.

    for round r = start+1 .. R:
      clients  = sample_clients(ids, m, seed, r)          (stateless, seeded)
      datasets = make_client_dataset(id, r) for each       (seeded per round, client)
      output   = algorithm.next(state, r, clients, datasets, their private states)
      metrics row -> metrics.csv + TensorBoard (+ eval every `eval_every` rounds)
      checkpoint every `checkpoint_every` rounds and at the last round

Any exit (normal, error, Ctrl-C/SIGTERM turned into KeyboardInterrupt) first
checkpoints the last finished round, so a finished round is never lost and
`--resume` continues exactly where the run stopped: the resumed run produces the
same metrics as an uninterrupted one, because sampling, client shuffling and the
initial model are pure functions of the seed and the round number.

The loop depends only on a `FederatedAlgorithm`, a dataset function, an
evaluation function and the run's output/checkpoint managers, so tests drive it
with fakes.
"""

from __future__ import annotations

import collections
import dataclasses
import time
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from typing import Any, Optional

import tensorflow as tf
from absl import logging

from tff_programs import checkpointing
from tff_programs import metrics as metrics_lib
from tff_programs import progress as progress_lib
from tff_programs import run_outputs
from tff_programs import sampling
from tff_programs.algorithms import base


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
  """

  rounds: int
  clients_per_round: int
  eval_every: int = 1
  checkpoint_every: int = 10
  seed: int = 0
  target_accuracy: Optional[float] = None
  stop_at_target: bool = False


@dataclasses.dataclass
class TrainingResult:
  state: Any
  client_states: MutableMapping[str, Any]
  last_round: int
  summary: dict[str, Any]


DatasetFn = Callable[[str, int], tf.data.Dataset]
EvalFn = Callable[[Any, Mapping[str, Any]], Mapping[str, float]]


def run_training(
    *,
    algorithm: base.FederatedAlgorithm,
    client_ids: Sequence[str],
    make_client_dataset: DatasetFn,
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
    make_client_dataset: (client_id, round) -> the client's batched dataset.
    evaluate: (server_state, client_states) -> eval metrics, or None.
    config: loop settings.
    outputs: the run folder's writers.
    checkpoints: the run's checkpoint manager.
    resume: continue from the latest checkpoint if there is one.
    show_progress: force the progress bar on/off (None: on for a terminal).
    client_state_store: where private client states live (default: a dict;
      `client_states.ClientStateStore` spills them to disk past a budget).

  Returns:
    The final state, client states, last round and the summary written.
  """
  client_template = (
      (lambda cid: algorithm.initial_client_state(cid, config.seed))
      if algorithm.uses_client_states
      else None
  )
  start_round = 0
  client_states = client_state_store if client_state_store is not None else {}
  state = algorithm.initialize(config.seed)
  latest = checkpoints.latest_round() if resume else None
  if latest is not None:
    state, client_states, saved_seed = checkpoints.load(
        latest, state, client_template, into=client_states)
    if saved_seed != config.seed:
      raise run_outputs.RunDirError(
          f'--resume: checkpoint has seed {saved_seed}, flags say {config.seed}'
      )
    start_round = latest
    logging.warning('Resuming from round %d', latest)
  outputs.truncate_metrics(start_round)

  last_done, last_saved = start_round, start_round

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
        outputs.read_metrics(), target_accuracy=config.target_accuracy
    )
    summary['stopped_at_target'] = stopped_at_target
    summary['interrupted'] = interrupted
    outputs.write_summary(summary)
    return summary

  try:
    for round_num in range(start_round + 1, config.rounds + 1):
      started = time.perf_counter()
      ids = sampling.sample_clients(
          client_ids, config.clients_per_round, seed=config.seed, round_num=round_num
      )
      datasets = [make_client_dataset(cid, round_num) for cid in ids]
      private = (
          {cid: client_states[cid] if cid in client_states else client_template(cid) for cid in ids}
          if client_template is not None
          else {}
      )
      output = algorithm.next(state, round_num, ids, datasets, private)
      state = output.state
      client_states.update(output.client_states)
      last_done = round_num
      row = collections.OrderedDict(round=round_num)
      row.update(output.metrics)
      row['train_seconds'] = time.perf_counter() - started
      if evaluate is not None and (
          round_num % config.eval_every == 0 or round_num == config.rounds
      ):
        row.update(evaluate(state, client_states))
      row['seconds'] = time.perf_counter() - started
      outputs.release_metrics(round_num, row)
      bar.update(round_num, row)
      reached = (config.stop_at_target and config.target_accuracy is not None
                 and row.get('eval_accuracy', -1.0) >= config.target_accuracy)
      if round_num % config.checkpoint_every == 0 or round_num == config.rounds or reached:
        checkpoint(round_num)
      if reached:
        stopped_at_target = True
        break
    finished = True
  finally:
    bar.close()
    if last_done > last_saved:
      try:
        checkpoint(last_done)
        logging.warning('Saved round %d before exiting', last_done)
      except Exception as e:  # pylint: disable=broad-except
        logging.error('Could not checkpoint round %d: %s', last_done, e)
    if not finished:
      # summary.json describes the rows on disk, also after Ctrl-C/SIGTERM/errors.
      try:
        write_summary(interrupted=True)
      except Exception as e:  # pylint: disable=broad-except
        logging.error('Could not write summary.json: %s', e)

  return TrainingResult(state, client_states, last_done, write_summary(interrupted=False))
