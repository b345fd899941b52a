"""The comparison with the paper: learning-rate choice, table, JSON and plots.

Everything here is a pure function of per-round metric rows (dicts as read
from a run's metrics.csv: 'round', 'train_loss', 'eval_accuracy', ...), so a
report can be tested, and rebuilt, without training:

    settings = [SettingRuns('FedSGD E=1 B=inf', {0.1: rows_a, 0.2: rows_b}, paper_rounds=626),
                SettingRuns('FedAvg E=5 B=10', {0.1: rows_c}, paper_rounds=20,
                            baseline_label='FedSGD E=1 B=inf')]
    table = build_table(settings, target=0.99)
    write_report(table, out_dir, title=..., target=0.99)  # report.md, results.json, PNGs

Rounds-to-target follow the paper (`tff_programs.metrics.rounds_to_target`):
the best-so-far test accuracy at the evaluated rounds, linearly interpolated.
Per setting the learning rate with the fewest rounds-to-target is chosen, as
the paper does ("the best performing rate selected individually"); when no
rate (or several, equally) reaches the target, the best final accuracy wins.
Speedups are the paper's "(2.3x)": baseline rounds / rounds.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any, Optional

from tff_programs import metrics as metrics_lib

Rows = Sequence[Mapping[str, Any]]

ACCURACY_PLOT = 'accuracy.png'
LOSS_PLOT = 'train_loss.png'
REPORT_MD = 'report.md'
RESULTS_JSON = 'results.json'


def series(rows: Rows, key: str) -> tuple[list[int], list[float]]:
  """(rounds, values) of the rows where `key` holds a finite number."""
  points = [(int(r['round']), metrics_lib.cell_value(r, key)) for r in rows]
  points = [(k, v) for k, v in points if v is not None]
  return [k for k, _ in points], [v for _, v in points]


@dataclasses.dataclass(frozen=True)
class RunSummary:
  """One run (one learning rate) of a setting, measured against the targets."""

  learning_rate: float
  rounds_completed: int
  rounds_to_target: Optional[float]
  final_accuracy: Optional[float]
  best_accuracy: Optional[float]
  final_train_loss: Optional[float]
  rounds_to_targets: Mapping[float, Optional[float]] = dataclasses.field(default_factory=dict)


def summarize_run(rows: Rows, *, learning_rate: float, target: float,
                  extra_targets: Sequence[float] = ()) -> RunSummary:
  """Measures one run's metric rows against `target` (and `extra_targets`)."""
  rounds, accuracies = series(rows, 'eval_accuracy')
  _, losses = series(rows, 'train_loss')

  def to(t: float) -> Optional[float]:
    return metrics_lib.rounds_to_target(rounds, accuracies, t) if rounds else None

  return RunSummary(
      learning_rate=float(learning_rate),
      rounds_completed=int(rows[-1]['round']) if rows else 0,
      rounds_to_target=to(target),
      final_accuracy=accuracies[-1] if accuracies else None,
      best_accuracy=max(accuracies) if accuracies else None,
      final_train_loss=losses[-1] if losses else None,
      rounds_to_targets={t: to(t) for t in extra_targets},
  )


def _selection_key(run: RunSummary) -> tuple[Any, ...]:
  minus_inf = -math.inf
  return (
      run.rounds_to_target is None,  # Reaching the target beats not reaching it.
      run.rounds_to_target if run.rounds_to_target is not None else 0.0,
      -(run.final_accuracy if run.final_accuracy is not None else minus_inf),
      -(run.best_accuracy if run.best_accuracy is not None else minus_inf),
      run.learning_rate,  # Deterministic last resort: the smaller rate.
  )


def select_learning_rate(runs: Sequence[RunSummary]) -> Optional[RunSummary]:
  """The paper's choice among one setting's runs (None if there are none).

  Fewest rounds-to-target; among runs tied on it, or when none reaches the
  target, the best final accuracy (then the best accuracy, then the smaller
  learning rate).
  """
  return min(runs, key=_selection_key) if runs else None


@dataclasses.dataclass(frozen=True)
class SettingRuns:
  """A setting's runs (learning rate -> metric rows) and the paper's numbers.

  Attributes:
    label: the setting's label.
    runs: learning rate -> that run's metric rows (may be empty: not run).
    paper_rounds: the paper's rounds-to-target, None where it has none.
    paper_note: a remark for the notes under the table.
    baseline_label: the label of the row speedups are relative to (None or
      the setting's own label: it is a baseline).
    paper_rounds_at: the paper's rounds for the extra targets.
    rounds_budget: the rounds the setting was meant to run (shown).
  """

  label: str
  runs: Mapping[float, Rows]
  paper_rounds: Optional[float] = None
  paper_note: str = ''
  baseline_label: Optional[str] = None
  paper_rounds_at: Mapping[float, Optional[float]] = dataclasses.field(default_factory=dict)
  rounds_budget: Optional[int] = None


@dataclasses.dataclass
class TableRow:
  """One row of the report: the chosen run of a setting next to the paper."""

  label: str
  baseline_label: Optional[str]
  paper_rounds: Optional[float]
  paper_note: str
  paper_rounds_at: Mapping[float, Optional[float]]
  rounds_budget: Optional[int]
  runs: list[RunSummary]
  best: Optional[RunSummary]
  curve: Rows  # The metric rows of the chosen run.
  speedup: Optional[float] = None
  paper_speedup: Optional[float] = None
  # When the baseline never reached the target in its N rounds but this row did
  # in r: its speedup is more than N / r (the FedSGD rows of short runs).
  speedup_lower_bound: Optional[float] = None

  @property
  def is_baseline(self) -> bool:
    return self.baseline_label in (None, self.label)

  @property
  def rounds_to_target(self) -> Optional[float]:
    return self.best.rounds_to_target if self.best else None

  @property
  def chosen_at_grid_edge(self) -> bool:
    """Whether the chosen rate is the smallest or largest of 3+ rates tried
    (the paper checked that its best rates were inside its grids)."""
    rates = sorted(r.learning_rate for r in self.runs)
    return bool(self.best) and len(rates) >= 3 and self.best.learning_rate in (rates[0], rates[-1])

  def to_json(self) -> dict[str, Any]:
    best = self.best
    return {
        'label': self.label,
        'baseline_label': self.baseline_label,
        'rounds_to_target': self.rounds_to_target,
        'paper_rounds': self.paper_rounds,
        'speedup': self.speedup,
        'speedup_lower_bound': self.speedup_lower_bound,
        'paper_speedup': self.paper_speedup,
        'learning_rate': best.learning_rate if best else None,
        'final_accuracy': best.final_accuracy if best else None,
        'best_accuracy': best.best_accuracy if best else None,
        'rounds_completed': best.rounds_completed if best else 0,
        'rounds_budget': self.rounds_budget,
        'rounds_to_targets': {str(t): r for t, r in best.rounds_to_targets.items()} if best else {},
        'paper_rounds_at': {str(t): r for t, r in self.paper_rounds_at.items()},
        'paper_note': self.paper_note,
        'chosen_at_grid_edge': self.chosen_at_grid_edge,
        'runs': [dataclasses.asdict(r) | {'rounds_to_targets': {
            str(t): v for t, v in r.rounds_to_targets.items()}} for r in self.runs],
    }


def _ratio(numerator: Optional[float], denominator: Optional[float]) -> Optional[float]:
  if numerator is None or denominator is None or denominator <= 0:
    return None
  return numerator / denominator


def build_table(settings: Sequence[SettingRuns], *, target: float,
                extra_targets: Sequence[float] = ()) -> list[TableRow]:
  """Chooses each setting's learning rate and computes the speedup columns.

  Raises:
    ValueError: a baseline_label names no setting.
  """
  rows = []
  for s in settings:
    runs = [summarize_run(r, learning_rate=lr, target=target, extra_targets=extra_targets)
            for lr, r in sorted(s.runs.items()) if r]
    best = select_learning_rate(runs)
    rows.append(TableRow(
        label=s.label, baseline_label=s.baseline_label, paper_rounds=s.paper_rounds,
        paper_note=s.paper_note, paper_rounds_at=dict(s.paper_rounds_at),
        rounds_budget=s.rounds_budget, runs=runs, best=best,
        curve=list(s.runs[best.learning_rate]) if best else [],
    ))
  by_label = {r.label: r for r in rows}
  for row in rows:
    if row.is_baseline:
      continue
    if row.baseline_label not in by_label:
      raise ValueError(f'baseline {row.baseline_label!r} of {row.label!r} is not a setting')
    base = by_label[row.baseline_label]
    row.speedup = _ratio(base.rounds_to_target, row.rounds_to_target)
    if base.best is not None and base.rounds_to_target is None:
      row.speedup_lower_bound = _ratio(base.best.rounds_completed, row.rounds_to_target)
    row.paper_speedup = _ratio(base.paper_rounds, row.paper_rounds)
  return rows


# ---------------------------------------------------------------------------
# Markdown.


def _rounds(value: Optional[float], *, ran: Optional[int] = None) -> str:
  if value is not None:
    return f'{value:.1f}'
  return 'not reached' if ran is None else f'not reached ({ran} rounds)'


def _paper_rounds(value: Optional[float]) -> str:
  return '—' if value is None else f'{value:g}'


def _speedup(row: TableRow, value: Optional[float], lower_bound: Optional[float] = None) -> str:
  if row.is_baseline:
    return 'baseline'
  if value is None and lower_bound is not None:
    return f'> {lower_bound:.1f}x'
  return '—' if value is None else f'{value:.1f}x'


def _accuracy(value: Optional[float]) -> str:
  return '—' if value is None else f'{value:.4f}'


def _pct(target: float) -> str:
  return f'{100 * target:g}%'


def markdown_report(table: Sequence[TableRow], *, title: str, description: str = '',
                    source: str = '', target: float,
                    extra_targets: Sequence[float] = (), notes: Sequence[str] = ()) -> str:
  """report.md: the comparison table, other targets, every rate tried, notes.

  `notes`: more lines for the notes (the dataset's notes, choices made).
  """
  t = _pct(target)
  lines = [f'# {title}', '']
  if description:
    lines += [description, '']
  if source:
    lines += [f'Paper numbers: {source}.', '']
  lines += [
      f'Rounds to {t} test accuracy: the best-so-far accuracy at the evaluated rounds, '
      'linearly interpolated (the paper\'s rule). Learning rate: per setting, the rate '
      'with the fewest rounds to target (none or tied: the best final accuracy). '
      'Speedup: baseline rounds / rounds; "> Nx" when the baseline had not reached '
      'the target when its run ended (its rounds run / our rounds).',
      '',
      f'| setting | rounds to {t} (ours) | paper rounds | speedup | paper speedup '
      '| learning rate | final / best accuracy |',
      '|---|---:|---:|---:|---:|---:|---|',
  ]
  for row in table:
    best = row.best
    if best is None:
      lines.append(f'| {row.label} | not run | {_paper_rounds(row.paper_rounds)} | — | '
                   f'{_speedup(row, row.paper_speedup)} | — | — |')
      continue
    edge = ' (grid edge)' if row.chosen_at_grid_edge else ''
    lines.append(
        f'| {row.label} | {_rounds(best.rounds_to_target, ran=best.rounds_completed)} '
        f'| {_paper_rounds(row.paper_rounds)} '
        f'| {_speedup(row, row.speedup, row.speedup_lower_bound)} '
        f'| {_speedup(row, row.paper_speedup)} | {best.learning_rate:g}{edge} '
        f'| {_accuracy(best.final_accuracy)} / {_accuracy(best.best_accuracy)} |')
  if extra_targets:
    head = ' | '.join(f'{_pct(x)} (ours) | {_pct(x)} (paper)' for x in extra_targets)
    lines += ['', '## Other targets (same chosen learning rate)', '',
              f'| setting | {head} |', '|---|' + '---:|' * (2 * len(extra_targets))]
    for row in table:
      cells = []
      for x in extra_targets:
        ours = row.best.rounds_to_targets.get(x) if row.best else None
        paper = row.paper_rounds_at.get(x)
        cells += [_rounds(ours) if row.best else 'not run',
                  'N/A' if paper is None else f'{paper:g}']
      lines.append(f'| {row.label} | {" | ".join(cells)} |')
  lines += ['', '## Every learning rate', '',
            f'| setting | learning rate | rounds run | rounds to {t} | final accuracy '
            '| best accuracy | final train loss |',
            '|---|---:|---:|---:|---:|---:|---:|']
  for row in table:
    budget = f' of {row.rounds_budget}' if row.rounds_budget else ''
    for run in row.runs:
      mark = ' (chosen)' if run is row.best else ''
      loss = '—' if run.final_train_loss is None else f'{run.final_train_loss:.4g}'
      lines.append(
          f'| {row.label} | {run.learning_rate:g}{mark} | {run.rounds_completed}{budget} '
          f'| {_rounds(run.rounds_to_target)} | {_accuracy(run.final_accuracy)} '
          f'| {_accuracy(run.best_accuracy)} | {loss} |')
  notes = [f'- {note}' for note in notes] + [
      f'- {row.label}: {row.paper_note}' for row in table if row.paper_note]
  if any(row.chosen_at_grid_edge for row in table):
    notes.append('- (grid edge): the chosen rate is the smallest or largest tried; the best '
                 'rate may lie outside the grid (widen it with --lr_points or --lr_grid).')
  if notes:
    lines += ['', '## Notes', '', *notes]
  lines += ['', f'Plots: [{ACCURACY_PLOT}]({ACCURACY_PLOT}) (test accuracy, chosen rates), '
            f'[{LOSS_PLOT}]({LOSS_PLOT}) (training loss, log scale).', '']
  return '\n'.join(lines)


def results_json(table: Sequence[TableRow], **header: Any) -> dict[str, Any]:
  """results.json: the header fields plus one entry per setting."""
  return {**header, 'settings': [row.to_json() for row in table]}


# ---------------------------------------------------------------------------
# Plots (matplotlib's object API on an Agg canvas: no pyplot, no global backend).


def _figure():
  """A figure with one axes: integer rounds on x, plain numbers on y."""
  from matplotlib import figure  # pylint: disable=g-import-not-at-top
  from matplotlib import ticker  # pylint: disable=g-import-not-at-top
  from matplotlib.backends import backend_agg  # pylint: disable=g-import-not-at-top

  fig = figure.Figure(figsize=(7.0, 4.5), dpi=110)
  backend_agg.FigureCanvasAgg(fig)
  ax = fig.add_subplot(1, 1, 1)
  ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
  return fig, ax


def _plain_log_ticks(ax) -> None:
  """'0.3' instead of '3x10^-1' on a log axis (losses span little range)."""
  from matplotlib import ticker  # pylint: disable=g-import-not-at-top

  plain = ticker.FuncFormatter(lambda value, _: f'{value:g}')
  ax.yaxis.set_major_formatter(plain)
  ax.yaxis.set_minor_formatter(plain)


def accuracy_limits(target: float, curves: Mapping[str, Rows]) -> tuple[float, float]:
  """A y-range zoomed near the target, as the paper's Figure 2.

  From the target minus max(0.05, 5 x the gap to 1) (0.94 for 99%, 0.82 for
  97%), up to just above the best accuracy plotted (and the target).
  """
  best = max((max(series(rows, 'eval_accuracy')[1], default=0.0) for rows in curves.values()),
             default=0.0)
  low = max(0.0, target - max(0.05, 5.0 * (1.0 - target)))
  high = min(1.0, max(best, target) + 0.1 * (1.0 - low))
  return low, max(high, low + 0.01)


def plot_accuracy(curves: Mapping[str, Rows], path: str, *, target: float, title: str = '') -> str:
  """Test accuracy vs communication rounds, one line per setting, the target in gray."""
  fig, ax = _figure()
  plotted = 0
  for label, rows in curves.items():
    rounds, accuracies = series(rows, 'eval_accuracy')
    if rounds:
      ax.plot(rounds, accuracies, label=label, linewidth=1.4)
      plotted += 1
  ax.axhline(target, color='gray', linewidth=1.0, zorder=0)
  ax.set_ylim(*accuracy_limits(target, curves))
  ax.set_xlabel('communication rounds')
  ax.set_ylabel('test accuracy')
  ax.set_title(title or f'test accuracy (target {_pct(target)} in gray)')
  ax.grid(alpha=0.3)
  if plotted:
    ax.legend(fontsize='small', loc='lower right')
  fig.tight_layout()
  fig.savefig(path, format='png')
  return path


def plot_loss(curves: Mapping[str, Rows], path: str, *, title: str = '') -> str:
  """Training loss (clients' local loss, averaged per round) vs rounds, log y-scale."""
  fig, ax = _figure()
  plotted = 0
  for label, rows in curves.items():
    rounds, losses = series(rows, 'train_loss')
    points = [(k, v) for k, v in zip(rounds, losses) if v > 0]
    if points:
      ax.plot([k for k, _ in points], [v for _, v in points], label=label, linewidth=1.4)
      plotted += 1
  if plotted:
    ax.set_yscale('log')
    _plain_log_ticks(ax)
  ax.set_xlabel('communication rounds')
  ax.set_ylabel('training loss (log scale)')
  ax.set_title(title or 'training loss')
  ax.grid(alpha=0.3, which='both')
  if plotted:
    ax.legend(fontsize='small', loc='upper right')
  fig.tight_layout()
  fig.savefig(path, format='png')
  return path


def write_report(table: Sequence[TableRow], out_dir: str, *, title: str, target: float,
                 description: str = '', source: str = '', extra_targets: Sequence[float] = (),
                 header: Optional[Mapping[str, Any]] = None,
                 notes: Sequence[str] = ()) -> dict[str, str]:
  """Writes report.md, results.json, accuracy.png and train_loss.png into `out_dir`.

  `notes` go to the report's notes and to results.json.

  Returns:
    File kind ('report', 'results', 'accuracy_plot', 'loss_plot') -> path.
  """
  os.makedirs(out_dir, exist_ok=True)
  paths = {
      'report': os.path.join(out_dir, REPORT_MD),
      'results': os.path.join(out_dir, RESULTS_JSON),
      'accuracy_plot': os.path.join(out_dir, ACCURACY_PLOT),
      'loss_plot': os.path.join(out_dir, LOSS_PLOT),
  }
  text = markdown_report(table, title=title, description=description, source=source,
                         target=target, extra_targets=extra_targets, notes=notes)
  data = results_json(table, title=title, description=description, source=source,
                      target_accuracy=target, extra_targets=list(extra_targets),
                      notes=list(notes), **(header or {}))
  for kind, content in (('report', text), ('results', json.dumps(data, indent=2) + '\n')):
    tmp = paths[kind] + '.tmp'
    with open(tmp, 'w') as f:
      f.write(content)
    os.replace(tmp, paths[kind])
  curves = {row.label: row.curve for row in table if row.curve}
  plot_accuracy(curves, paths['accuracy_plot'], target=target, title=title)
  plot_loss(curves, paths['loss_plot'], title=f'{title}: training loss')
  return paths
