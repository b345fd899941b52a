"""Rounds-to-target and run summaries, computed the FedAvg paper's way.

McMahan et al. (2017) report "the number of communication rounds to reach a
target accuracy": they take the best-so-far test accuracy (monotone, so a noisy
dip does not un-reach a target) at the evaluated rounds and linearly interpolate
between evaluated rounds to find where that curve crosses the target.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Optional

import numpy as np


def best_so_far(values: Sequence[float]) -> list[float]:
  """Running maximum of `values`."""
  return [float(v) for v in np.maximum.accumulate(np.asarray(values, dtype=float))] if len(values) else []


def rounds_to_target(
    rounds: Sequence[float], accuracies: Sequence[float], target: float
) -> Optional[float]:
  """Interpolated round at which the best-so-far accuracy first reaches `target`.

  Args:
    rounds: evaluated rounds, increasing (round 0 = the initial model, optional).
    accuracies: test accuracy at those rounds.
    target: the target accuracy.

  Returns:
    The (fractional) round, or None if the target is never reached. If the first
    evaluated round already reaches it, that round is returned.
  """
  if len(rounds) != len(accuracies):
    raise ValueError('rounds and accuracies differ in length')
  best = best_so_far(accuracies)
  for i, (r, b) in enumerate(zip(rounds, best)):
    if b >= target:
      if i == 0:
        return float(r)
      r0, b0 = rounds[i - 1], best[i - 1]
      return float(r0 + (target - b0) / (b - b0) * (r - r0))
  return None


def cell_value(row: Mapping[str, Any], key: str) -> Optional[float]:
  """A finite float from a metrics.csv cell, else None (missing, empty, NaN, inf)."""
  value = row.get(key)
  if value is None or value == '':
    return None
  value = float(value)
  return value if math.isfinite(value) else None


def summarize(
    rows: Iterable[Mapping[str, Any]], *, target_accuracy: Optional[float],
    accuracy_key: str = 'eval_accuracy',
) -> dict[str, Any]:
  """`summary.json` content from the metrics rows (one per round).

  Keys: rounds_completed, final_eval_accuracy, best_eval_accuracy,
  final_eval_loss, target_accuracy, target_metric, rounds_to_target (of the
  `accuracy_key` column), total seconds and communication totals, the last
  round's upload_params_per_client / download_params and their means over
  the rounds (`..._mean`: they differ when rounds send different amounts, as
  with RPN's full rounds), and personalized accuracy mean/std when present.
  """
  rows = list(rows)
  evals = [(int(r['round']), cell_value(r, 'eval_accuracy')) for r in rows]
  evals = [(k, a) for k, a in evals if a is not None]
  last_eval = next((r for r in reversed(rows) if cell_value(r, 'eval_accuracy') is not None), None)
  summary: dict[str, Any] = {
      'rounds_completed': int(rows[-1]['round']) if rows else 0,
      'final_eval_accuracy': cell_value(last_eval, 'eval_accuracy') if last_eval else None,
      'final_eval_loss': cell_value(last_eval, 'eval_loss') if last_eval else None,
      'best_eval_accuracy': max((a for _, a in evals), default=None),
      'target_accuracy': target_accuracy,
      'rounds_to_target': None,
      'train_seconds': sum(cell_value(r, 'seconds') or 0.0 for r in rows),
  }
  summary['target_metric'] = accuracy_key
  targets = [(int(r['round']), cell_value(r, accuracy_key)) for r in rows]
  targets = [(k, a) for k, a in targets if a is not None]
  if target_accuracy is not None and targets:
    summary['rounds_to_target'] = rounds_to_target(
        [k for k, _ in targets], [a for _, a in targets], target_accuracy
    )
  for key in ('upload_bytes', 'download_bytes'):
    summary[f'{key}_total'] = int(sum(cell_value(r, key) or 0 for r in rows))
  if rows:
    for key in ('upload_params_per_client', 'download_params'):
      if cell_value(rows[-1], key) is not None:
        summary[key] = int(cell_value(rows[-1], key))
        values = [cell_value(r, key) for r in rows if cell_value(r, key) is not None]
        summary[f'{key}_mean'] = sum(values) / len(values)
  if last_eval is not None:
    for key in ('personalized_accuracy_mean', 'personalized_accuracy_std'):
      if cell_value(last_eval, key) is not None:
        summary[key] = cell_value(last_eval, key)
  return summary
