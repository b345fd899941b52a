"""The report of a comparison experiment: runs side by side, per round and at the end.

Pure functions of per-round metric rows (dicts as read from metrics.csv), like
`tff_programs.report` for the FedAvg tables, so a report is tested and rebuilt
without training:

    runs = [RunData('FedPer K_P=2', 0.01, 0, rows_a), RunData('FedAvg', 0.01, 0, rows_b)]
    write_comparison_report(runs, out_dir, title=..., baseline_label='FedAvg',
                            claims=[Claim(...)], paper={'FedAvg': {...}})

What is measured per run (`summarize`): test accuracy (final, best, rounds to
target the FedAvg paper's way), personalized accuracy mean/std/min/max at the
last evaluation, bytes up/down (totals and per round) and, given the FLOPs per
example, the edge devices' training FLOPs per round. With several seeds (and
learning rates) per run, `seeds_table` gives rounds-to-target per rate as the
median and range over seeds, and the rate the paper's rule picks (fewest
rounds, here the fewest median rounds; unreached counts as never).
Plots: accuracy.png, traffic.png (cumulative bytes), personalized.png.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import statistics
from collections.abc import Mapping, Sequence
from typing import Any, Optional

from tff_programs import metrics as metrics_lib
from tff_programs import report as report_lib

Rows = Sequence[Mapping[str, Any]]
REPORT_MD = report_lib.REPORT_MD
RESULTS_JSON = report_lib.RESULTS_JSON
ACCURACY_PLOT = 'accuracy.png'
TRAFFIC_PLOT = 'traffic.png'
PERSONALIZED_PLOT = 'personalized.png'

# Summary keys a paper number or a claim may name, with their report labels.
METRICS: dict[str, str] = {
    'final_eval_accuracy': 'test accuracy (final)',
    'best_eval_accuracy': 'test accuracy (best)',
    'rounds_to_target': 'rounds to target',
    'final_personalized_accuracy_mean': 'personalized accuracy mean (final)',
    'final_personalized_accuracy_std': 'personalized accuracy std (final)',
    'final_personalized_accuracy_min': 'personalized accuracy min (final)',
    'final_personalized_accuracy_max': 'personalized accuracy max (final)',
    'upload_bytes_total': 'bytes uploaded (total)',
    'download_bytes_total': 'bytes downloaded (total)',
    'bytes_total': 'bytes up + down (total)',
    'upload_bytes_per_round': 'bytes uploaded per round',
    'download_bytes_per_round': 'bytes downloaded per round',
    'edge_flops_per_round': 'edge FLOPs per round (all clients)',
}
CLAIM_KINDS = ('difference', 'saving')
PERSONALIZED = ('mean', 'std', 'min', 'max')


@dataclasses.dataclass(frozen=True)
class Claim:
  """A statement of the paper, checked on our final numbers.

  value = the run's metric - the `versus` run's ('difference'), or
  1 - run / versus ('saving': the fraction of bytes or FLOPs saved); met when
  at_least <= value <= at_most (each bound optional; none: only measured).
  """

  text: str
  run: str
  versus: str
  metric: str
  kind: str = 'difference'
  at_least: Optional[float] = None
  at_most: Optional[float] = None


@dataclasses.dataclass(frozen=True)
class RunData:
  """One trained run (a label at one learning rate and seed) and its rows.

  Attributes:
    flops_per_example: (one training step, one extraction pass) of an edge
      device per example (`comparisons.edge_flops_per_example`), or None.
    local_epochs: E (examples trained per round = E x examples extracted).
    unavailable: why the run could not be trained ('' if it could).
  """

  label: str
  learning_rate: float
  seed: int
  rows: Rows
  flops_per_example: Optional[tuple[int, int]] = None
  local_epochs: int = 1
  unavailable: str = ''


def _last(rows: Rows, key: str) -> Optional[float]:
  values = report_lib.series(rows, key)[1]
  return values[-1] if values else None


def _mean(values: Sequence[float]) -> Optional[float]:
  return sum(values) / len(values) if values else None


def round_flops(row: Mapping[str, Any], flops_per_example: tuple[int, int],
                local_epochs: int) -> Optional[float]:
  """Edge FLOPs of one round: examples trained x step + examples / E x extraction."""
  examples = metrics_lib.cell_value(row, 'examples')
  if examples is None:
    return None
  train, extract = flops_per_example
  return examples * train + examples / local_epochs * extract


def summarize(run: RunData, *, target: Optional[float] = None) -> dict[str, Optional[float]]:
  """The `METRICS` of one run (None where its rows hold no value)."""
  rows = list(run.rows)
  rounds, accuracies = report_lib.series(rows, 'eval_accuracy')
  up = [metrics_lib.cell_value(r, 'upload_bytes') or 0.0 for r in rows]
  down = [metrics_lib.cell_value(r, 'download_bytes') or 0.0 for r in rows]
  result: dict[str, Optional[float]] = {
      'rounds_completed': float(rows[-1]['round']) if rows else 0.0,
      'final_eval_accuracy': accuracies[-1] if accuracies else None,
      'best_eval_accuracy': max(accuracies) if accuracies else None,
      'rounds_to_target': (metrics_lib.rounds_to_target(rounds, accuracies, target)
                           if target is not None and rounds else None),
      'upload_bytes_total': sum(up) if rows else None,
      'download_bytes_total': sum(down) if rows else None,
      'bytes_total': sum(up) + sum(down) if rows else None,
      'upload_bytes_per_round': _mean(up),
      'download_bytes_per_round': _mean(down),
      'final_train_loss': _last(rows, 'train_loss'),
      'edge_flops_per_round': None,
  }
  for stat in PERSONALIZED:
    result[f'final_personalized_accuracy_{stat}'] = _last(rows, f'personalized_accuracy_{stat}')
  if run.flops_per_example is not None:
    per_round = [round_flops(r, run.flops_per_example, run.local_epochs) for r in rows]
    result['edge_flops_per_round'] = _mean([f for f in per_round if f is not None])
  return result


def format_flops(value: float) -> str:
  """FLOPs with a readable unit: '12.3 GFLOPs', '45.6 MFLOPs', '7.8 kFLOPs'."""
  for unit, size in (('G', 1e9), ('M', 1e6), ('k', 1e3)):
    if abs(value) >= size:
      return f'{value / size:,.1f} {unit}FLOPs'
  return f'{value:.0f} FLOPs'


def median_and_range(values: Sequence[Optional[float]]
                     ) -> tuple[Optional[float], Optional[float], Optional[float]]:
  """(median, min, max) with None (not reached) counted as +infinity, returned as None."""
  if not values:
    return None, None, None
  finite = [math.inf if v is None else v for v in values]
  back = lambda v: None if math.isinf(v) else v
  return back(statistics.median(finite)), back(min(finite)), back(max(finite))


@dataclasses.dataclass
class RateRow:
  """Rounds to target of one label at one rate over seeds."""

  label: str
  learning_rate: Optional[float]  # None: the best rate of each seed (the paper's rule per seed).
  by_seed: dict[int, Optional[float]]
  rates_by_seed: dict[int, float] = dataclasses.field(default_factory=dict)
  median_final_accuracy: Optional[float] = None
  chosen: bool = False

  @property
  def median(self) -> Optional[float]:
    return median_and_range(list(self.by_seed.values()))[0]

  @property
  def range(self) -> tuple[Optional[float], Optional[float]]:
    return median_and_range(list(self.by_seed.values()))[1:]

  @property
  def reached(self) -> int:
    return sum(v is not None for v in self.by_seed.values())


def _rate_key(row: RateRow) -> tuple[Any, ...]:
  median = row.median
  final = row.median_final_accuracy
  return (median is None, median or 0.0, -(final if final is not None else -math.inf),
          row.learning_rate)


def seeds_table(summaries: Sequence[tuple[RunData, Mapping[str, Optional[float]]]]
                ) -> list[RateRow]:
  """Per label: one row per learning rate (rounds to target by seed, median,
  range), the rate the paper's rule picks marked `chosen` (fewest median
  rounds; none reached or tied: best median final accuracy, then the smaller
  rate), then a row of each seed's own best rate (the paper's rule per seed)."""
  table: list[RateRow] = []
  labels = list(dict.fromkeys(run.label for run, _ in summaries))
  for label in labels:
    mine = [(run, s) for run, s in summaries if run.label == label and not run.unavailable]
    rows = []
    for lr in sorted({run.learning_rate for run, _ in mine}):
      at = [(run, s) for run, s in mine if run.learning_rate == lr]
      rows.append(RateRow(
          label, lr, {run.seed: s['rounds_to_target'] for run, s in at},
          median_final_accuracy=median_and_range(
              [s['final_eval_accuracy'] for _, s in at])[0]))
    if rows:
      min(rows, key=_rate_key).chosen = True
    per_seed = RateRow(label, None, {})
    for seed in sorted({run.seed for run, _ in mine}):
      candidates = [RateRow(label, run.learning_rate, {seed: s['rounds_to_target']},
                            median_final_accuracy=s['final_eval_accuracy'])
                    for run, s in mine if run.seed == seed]
      best = min(candidates, key=_rate_key)
      per_seed.by_seed[seed] = best.by_seed[seed]
      per_seed.rates_by_seed[seed] = best.learning_rate
    table += rows + ([per_seed] if len(rows) > 1 else [])
  return table


def chosen_rates(runs: Sequence[RunData], table: Sequence[RateRow]) -> dict[str, float]:
  """Label -> its learning rate (the chosen one when it has several)."""
  chosen = {row.label: row.learning_rate for row in table if row.chosen}
  for run in runs:
    chosen.setdefault(run.label, run.learning_rate)
  return chosen


def label_metrics(summaries: Sequence[tuple[RunData, Mapping[str, Optional[float]]]],
                  rates: Mapping[str, float]) -> dict[str, dict[str, Optional[float]]]:
  """Label -> each metric's median over seeds at the label's chosen rate."""
  result = {}
  for label, lr in rates.items():
    at = [s for run, s in summaries if run.label == label and run.learning_rate == lr
          and not run.unavailable]
    if at:
      result[label] = {k: _median(k, [s[k] for s in at]) for k in at[0]}
  return result


def _median(key: str, values: Sequence[Optional[float]]) -> Optional[float]:
  """Rounds to target: None counts as never; other metrics: the present values."""
  if key == 'rounds_to_target':
    return median_and_range(values)[0]
  present = [v for v in values if v is not None]
  return statistics.median(present) if present else None


def claim_value(claim: Claim, by_label: Mapping[str, Mapping[str, Optional[float]]]
                ) -> Optional[float]:
  ours, other = (by_label.get(claim.run, {}).get(claim.metric),
                 by_label.get(claim.versus, {}).get(claim.metric))
  if ours is None or other is None:
    return None
  if claim.kind == 'saving':
    return 1.0 - ours / other if other else None
  return ours - other


def claim_met(claim: Claim, value: Optional[float]) -> Optional[bool]:
  """True/False against the bounds; None when there are none or no value."""
  if value is None or (claim.at_least is None and claim.at_most is None):
    return None
  return ((claim.at_least is None or value >= claim.at_least)
          and (claim.at_most is None or value <= claim.at_most))


# ---------------------------------------------------------------------------
# The whole analysis, then report.md, results.json and the plots.


@dataclasses.dataclass(frozen=True)
class ReportSpec:
  """What the report says besides the runs: the experiment and the paper.

  Attributes:
    paper: label -> the paper's numbers by `METRICS` key.
    paper_notes: label -> where they come from.
    reduced: settings reduced from the paper's, one line each.
    notes: more lines for the Notes section (choices and why).
    data_notes: the dataset's notes from the runs (e.g. the held-out test batch).
    personalized: report the personalized accuracy columns.
  """

  title: str
  description: str = ''
  source: str = ''
  baseline_label: Optional[str] = None
  target: Optional[float] = None
  claims: tuple[Claim, ...] = ()
  paper: Mapping[str, Mapping[str, float]] = dataclasses.field(default_factory=dict)
  paper_notes: Mapping[str, str] = dataclasses.field(default_factory=dict)
  reduced: tuple[str, ...] = ()
  notes: tuple[str, ...] = ()
  data_notes: tuple[str, ...] = ()
  personalized: bool = False


@dataclasses.dataclass
class Analysis:
  """Everything the report shows, computed once from the runs."""

  runs: list[RunData]
  summaries: list[tuple[RunData, dict[str, Optional[float]]]]
  seeds: list[RateRow]
  rates: dict[str, float]
  by_label: dict[str, dict[str, Optional[float]]]
  claims: list[tuple[Claim, Optional[float], Optional[bool]]]

  @property
  def several(self) -> bool:
    """Several seeds or learning rates for some label (the seeds table is shown)."""
    keys = {(r.label, r.learning_rate, r.seed) for r, _ in self.summaries}
    return len(keys) > len({r.label for r, _ in self.summaries})

  def shown(self) -> list[RunData]:
    """The runs shown per round and plotted: each label at its chosen rate, every seed."""
    return [r for r, _ in self.summaries if r.learning_rate == self.rates.get(r.label)]


def analyze(runs: Sequence[RunData], spec: ReportSpec) -> Analysis:
  available = [r for r in runs if not r.unavailable]
  summaries = [(r, summarize(r, target=spec.target)) for r in available if r.rows]
  seeds = seeds_table(summaries) if spec.target is not None else []
  rates = chosen_rates([r for r, _ in summaries], seeds)
  by_label = label_metrics(summaries, rates)
  claims = []
  for claim in spec.claims:
    value = claim_value(claim, by_label)
    claims.append((claim, value, claim_met(claim, value)))
  return Analysis(list(runs), summaries, seeds, rates, by_label, claims)
