"""The run folders of reproduce experiments: reuse, resume or start; read back.

Every run of a reproduce experiment (a FedAvg table's setting at a rate, or a
comparison's run at a rate and seed) has its own folder. `run_status` decides
what to do with it: 'reuse' a finished run (rounds_completed >= its rounds, or
stopped at its target), 'resume' a started one, or start a 'new' one. A folder
holding a run with other settings is an error (one line naming the
differences), never silently overwritten or reused.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from typing import Any, Callable, Optional

from tff_programs import experiment as experiment_lib
from tff_programs import run_outputs

# Config keys that do not make two runs different results (besides the rate).
IGNORED_KEYS = run_outputs.RESUMABLE_KEYS | {'data_dir', 'run_name', 'client_learning_rate'}


def read_json(path: str) -> Optional[dict]:
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def check_same_run(run_dir: str, cfg: Any) -> None:
  """Raises RunDirError if the folder's run used settings other than `cfg`'s."""
  saved = read_json(os.path.join(run_dir, 'config.json'))
  if saved is None:
    return
  now = cfg.to_json()
  # A field added to ExperimentConfig after the run was made is no difference
  # while it keeps its default (the run behaved as the default).
  defaults = experiment_lib.ExperimentConfig().to_json()
  differing = sorted(
      k for k in set(saved) | set(now)
      if k not in IGNORED_KEYS and saved.get(k, defaults.get(k)) != now.get(k))
  if differing:
    details = ', '.join(f'{k} (saved {saved.get(k)!r}, now {now.get(k)!r})' for k in differing)
    raise run_outputs.RunDirError(
        f'{run_dir} holds a run with other settings: {details}; delete it or choose '
        'another --output_dir')


def has_reportable_rows(cfg: Any, log: Callable[[str], None]) -> bool:
  """True if cfg.run_dir holds rows of the run `cfg` describes; a folder of a
  run with other settings is skipped with one line (the report must not mix)."""
  if not os.path.exists(os.path.join(cfg.run_dir, 'metrics.csv')):
    return False
  try:
    check_same_run(cfg.run_dir, cfg)
  except ValueError as e:
    log(f'skipped in the report: {e}')
    return False
  return True


def run_status(cfg: Any) -> str:
  """'reuse' if the run folder holds a finished run of at least cfg.rounds
  rounds (or one stopped at its target), 'resume' if it holds a started one,
  else 'new'."""
  if not os.path.exists(os.path.join(cfg.run_dir, 'config.json')):
    return 'new'
  check_same_run(cfg.run_dir, cfg)
  summary = read_json(os.path.join(cfg.run_dir, 'summary.json')) or {}
  if summary.get('stopped_at_target') or summary.get('rounds_completed', 0) >= cfg.rounds:
    return 'reuse'
  return 'resume'


def rows_until(run_dir: str, rounds: int) -> list[dict[str, str]]:
  """The run's metric rows of rounds 1..`rounds`."""
  rows = run_outputs.RunOutputs(run_dir).read_metrics()
  return [r for r in rows if int(r['round']) <= rounds]


def data_notes(run_dirs: Iterable[str]) -> tuple[str, ...]:
  """The dataset notes the runs recorded in summary.json (each once, in order):
  which test set they used (e.g. CIFAR-10's held-out data_batch_5), subsets."""
  notes: dict[str, None] = {}
  for run_dir in run_dirs:
    summary = read_json(os.path.join(run_dir, 'summary.json')) or {}
    notes.update((n, None) for n in summary.get('data_notes') or () if isinstance(n, str))
  return tuple(notes)


def exported(run_dir: str) -> bool:
  """Whether the run saved its final model(s) (summary.json's export report)."""
  return bool((read_json(os.path.join(run_dir, 'summary.json')) or {}).get('export'))
