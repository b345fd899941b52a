"""The run folder: config, metrics, TensorBoard, summary, per-client statistics.

`<output_dir>/<run_name>/` holds one run:
  config.json          every flag of the run (checked again on --resume)
  metrics.csv          one row per round (tff.program.CSVFileReleaseManager,
                       key 'round': rows after a resumed checkpoint are replaced)
  tensorboard/         the same scalars (tff.program.TensorBoardReleaseManager)
  label_histogram.csv  examples per class per client (the partition's statistics)
  checkpoints/         resume points (tff_programs/checkpointing.py)
  summary.json         final metrics and rounds-to-target
"""

from __future__ import annotations

import asyncio
import csv
import json
import os
from collections.abc import Iterable, Mapping
from typing import Any, Optional

import numpy as np
import tensorflow_federated as tff

from tff_programs import schedule

# Flags that may change when a run is resumed (they do not change its results
# up to the checkpoint): everything else must match the saved config.
RESUMABLE_KEYS = frozenset({
    'rounds', 'resume', 'checkpoint_every', 'progress', 'export', 'eval_every',
    'target_accuracy', 'output_dir', 'quantize', 'data_dir', 'stop_at_target',
    'export_clients', 'run_name', 'client_state_memory_mb', 'require_private_executor',
    'target_metric', 'workers', 'worker_tls_dir', 'worker_binary', 'worker_concurrency',
})


# Flags of the learning-rate schedule: a resume may change them when the new
# schedule gives the finished rounds the same rates (see `schedules_agree`).
SCHEDULE_KEYS = ('learning_rate_decay', 'learning_rate_decay_from')


def schedules_agree(saved: Mapping[str, Any], config: Mapping[str, Any],
                    finished_rounds: int) -> bool:
  """Whether two configs' learning-rate schedules agree on rounds 1..finished_rounds.

  Then the new schedule reproduces the finished rounds exactly, so resuming under
  it gives the run a fresh start under the new flags would give, and the
  rewritten config.json describes the whole run. The usual case: a run at a
  constant rate that has plateaued continues with `--learning_rate_decay=0.9
  --learning_rate_decay_from=<its last round>`.
  """
  def rates(cfg):
    return [schedule.decayed_learning_rate(1.0, cfg['learning_rate_decay'],
                                       cfg['learning_rate_decay_from'], r)
            for r in range(1, finished_rounds + 1)]
  return rates(saved) == rates(config)


class RunDirError(ValueError):
  """A one-line error about the run folder (exists, missing, config mismatch)."""


class RunOutputs:
  """Writes everything a run produces into its folder."""

  def __init__(self, run_dir: str):
    self.run_dir = run_dir
    self.config_path = os.path.join(run_dir, 'config.json')
    self.metrics_path = os.path.join(run_dir, 'metrics.csv')
    self.summary_path = os.path.join(run_dir, 'summary.json')
    self.checkpoint_dir = os.path.join(run_dir, 'checkpoints')
    self.tensorboard_dir = os.path.join(run_dir, 'tensorboard')
    self._csv = None
    self._tensorboard = None

  def prepare(self, config: Mapping[str, Any], *, resume: bool,
              defaults: Optional[Mapping[str, Any]] = None,
              finished_rounds: int = 0) -> None:
    """Creates the folder for a new run, or checks it for `--resume`.

    A flag missing from a saved config (added to FedSuite after that run was
    started) matches when the current value is its default (`defaults`). The
    learning-rate schedule may change if it keeps the rates of the
    `finished_rounds` rounds held in the checkpoint (`schedules_agree`).

    Raises:
      RunDirError: a new run would overwrite another run, `--resume` finds no
        run, or the saved config differs in a flag that changes results.
    """
    exists = os.path.exists(self.config_path)
    if exists and not resume:
      raise RunDirError(
          f'{self.run_dir} already holds a run: pass --resume to continue it, or '
          'choose another --run_name/--output_dir'
      )
    if resume and not exists:
      raise RunDirError(f'--resume: no run to resume in {self.run_dir} (no config.json)')
    if exists:
      with open(self.config_path) as f:
        saved = json.load(f)
      defaults = defaults or {}
      saved_or_default = {k: saved.get(k, defaults.get(k)) for k in set(saved) | set(config)}
      differing = sorted(
          k for k in saved_or_default
          if k not in RESUMABLE_KEYS and saved_or_default[k] != config.get(k)
      )
      if (set(differing) & set(SCHEDULE_KEYS)
          and all(m.get(k) is not None for m in (saved_or_default, config) for k in SCHEDULE_KEYS)
          and schedules_agree(saved_or_default, config, finished_rounds)):
        differing = [k for k in differing if k not in SCHEDULE_KEYS]
      if differing:
        details = ', '.join(f'--{k} (saved {saved.get(k)!r}, now {config.get(k)!r})' for k in differing)
        raise RunDirError(f'--resume: flags differ from the saved run: {details}')
    os.makedirs(self.run_dir, exist_ok=True)
    tmp = self.config_path + '.tmp'
    with open(tmp, 'w') as f:
      json.dump(dict(config), f, indent=2, sort_keys=True)
    os.replace(tmp, self.config_path)

  def release_metrics(self, round_num: int, row: Mapping[str, Any]) -> None:
    """Appends round `round_num` to metrics.csv and TensorBoard."""
    if self._csv is None:
      self._csv = tff.program.CSVFileReleaseManager(
          self.metrics_path, key_fieldname='round'
      )
      self._tensorboard = tff.program.TensorBoardReleaseManager(self.tensorboard_dir)
    values = {k: v for k, v in row.items() if k != 'round'}

    async def release():
      await self._csv.release(values, key=round_num)
      await self._tensorboard.release(
          {k: v for k, v in values.items() if v is not None}, key=round_num
      )

    asyncio.run(release())

  def truncate_metrics(self, last_round: int) -> None:
    """Drops rows after `last_round` (a resumed run recomputes them)."""
    rows = self.read_metrics()
    if not rows or int(rows[-1]['round']) <= last_round:
      return
    fieldnames = list(rows[0].keys())
    kept = [r for r in rows if int(r['round']) <= last_round]
    tmp = self.metrics_path + '.tmp'
    with open(tmp, 'w', newline='') as f:
      writer = csv.DictWriter(f, fieldnames=fieldnames)
      writer.writeheader()
      writer.writerows(kept)
    os.replace(tmp, self.metrics_path)

  def read_metrics(self) -> list[dict[str, str]]:
    if not os.path.exists(self.metrics_path):
      return []
    with open(self.metrics_path, newline='') as f:
      return list(csv.DictReader(f))

  def write_summary(self, summary: Mapping[str, Any]) -> None:
    tmp = self.summary_path + '.tmp'
    with open(tmp, 'w') as f:
      json.dump(dict(summary), f, indent=2, sort_keys=True)
    os.replace(tmp, self.summary_path)

  def write_label_histogram(self, client_ids: Iterable[str], histogram: np.ndarray) -> str:
    path = os.path.join(self.run_dir, 'label_histogram.csv')
    with open(path, 'w', newline='') as f:
      writer = csv.writer(f)
      writer.writerow(['client', 'examples'] + [f'class_{c}' for c in range(histogram.shape[1])])
      for client_id, counts in zip(client_ids, histogram):
        writer.writerow([client_id, int(counts.sum())] + [int(c) for c in counts])
    return path
