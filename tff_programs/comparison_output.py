"""report.md, results.json and plots of a comparison experiment (`comparison_report`'s analysis).

    analysis = comparison_report.analyze(runs, spec)
    write_comparison_report(analysis, spec, out_dir, header={...})

report.md has, in order: the description and the paper's source; the data
notes the runs recorded (which test set: for a CIFAR-10 folder without
test_batch, data_batch_5 held out); the settings reduced from the paper's;
the final table (per run: learning rate, seeds, rounds, test accuracy,
personalized accuracy, rounds to target, bytes, the difference with the
baseline run, edge FLOPs, the paper's numbers); the paper's claims checked;
rounds to target over seeds and rates; test accuracy, personalized accuracy
and traffic per round; runs that could not be trained; notes. results.json
holds the same numbers and every run's per-round series. Plots:
accuracy.png (test accuracy per round), traffic.png (cumulative MB up and
down), personalized.png (mean with the min-max band, FedPer).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any, Optional

from tff_programs import metrics as metrics_lib
from tff_programs import report as report_lib
from tff_programs.comparison_report import (  # pylint: disable=g-multiple-import
    ACCURACY_PLOT, METRICS, PERSONALIZED, PERSONALIZED_PLOT, REPORT_MD, RESULTS_JSON, TRAFFIC_PLOT,
    Analysis, ReportSpec, RunData, format_flops)


def format_value(key: str, value: Optional[float]) -> str:
  """A metric in the report's units: accuracies 4 decimals, bytes, GFLOPs, rounds."""
  if value is None:
    return '—'
  if 'bytes' in key:
    for unit, size in (('GB', 1e9), ('MB', 1e6), ('kB', 1e3)):
      if abs(value) >= size:
        return f'{value / size:.2f} {unit}'
    return f'{value:.0f} B'
  if 'flops' in key:
    return format_flops(value)
  if key == 'rounds_to_target':
    return f'{value:.1f}'
  return f'{value:.4f}'


def _personalized_cell(values: Mapping[str, Optional[float]], prefix: str) -> str:
  mean, std, low, high = (values.get(f'{prefix}{s}') for s in PERSONALIZED)
  if mean is None:
    return '—'
  return f'{mean:.4f} ± {std or 0.0:.4f} [{low:.4f}, {high:.4f}]'


def _signed(value: float, digits: int) -> float:
  """`value` rounded to what is shown, without a negative zero ('-0.0000')."""
  return round(value, digits) + 0.0


def _versus(label: str, spec: ReportSpec, analysis: Analysis) -> str:
  base = analysis.by_label.get(spec.baseline_label or '')
  if label == spec.baseline_label:
    return 'baseline'
  ours = analysis.by_label.get(label)
  if not base or not ours:
    return '—'
  parts = []
  if ours.get('bytes_total') is not None and base.get('bytes_total'):
    parts.append(f'bytes {_signed(ours["bytes_total"] / base["bytes_total"] - 1, 3):+.1%}')
  if ours.get('final_eval_accuracy') is not None and base.get('final_eval_accuracy') is not None:
    parts.append(f'accuracy {_signed(ours["final_eval_accuracy"] - base["final_eval_accuracy"], 4):+.4f}')
  return ', '.join(parts) or '—'


def _pct(target: float) -> str:
  return f'{100 * target:g}%'


def _final_table(spec: ReportSpec, analysis: Analysis) -> list[str]:
  flops = any(r.flops_per_example for r in analysis.runs)
  head = ['run', 'learning rate', 'seeds', 'rounds', 'test accuracy final / best']
  head += ['personalized accuracy mean ± std [min, max]'] if spec.personalized else []
  head += [f'rounds to {_pct(spec.target)}'] if spec.target is not None else []
  head += ['bytes per round up / down', 'bytes total', f'vs {spec.baseline_label}']
  head += ['edge FLOPs per round (all clients)'] if flops else []
  head += ['paper']
  lines = ['| ' + ' | '.join(head) + ' |', '|---|' + '---:|' * (len(head) - 2) + '---|']
  labels = list(dict.fromkeys(r.label for r in analysis.runs))
  for label in labels:
    m = analysis.by_label.get(label)
    paper = ', '.join(f'{METRICS[k]} {format_value(k, v)}' for k, v in spec.paper.get(label, {}).items())
    if m is None:
      why = next((r.unavailable for r in analysis.runs if r.label == label and r.unavailable), '')
      cells = [label, '—', '—', why or 'not run'] + ['—'] * (len(head) - 5) + [paper or '—']
      lines.append('| ' + ' | '.join(cells) + ' |')
      continue
    seeds = sorted({r.seed for r, _ in analysis.summaries
                    if r.label == label and r.learning_rate == analysis.rates[label]})
    cells = [label, f'{analysis.rates[label]:g}',
             ', '.join(map(str, seeds)) + (' (medians)' if len(seeds) > 1 else ''),
             f'{m["rounds_completed"]:.0f}',
             f'{format_value("a", m["final_eval_accuracy"])} / {format_value("a", m["best_eval_accuracy"])}']
    if spec.personalized:
      cells.append(_personalized_cell(m, 'final_personalized_accuracy_'))
    if spec.target is not None:
      cells.append('not reached' if m['rounds_to_target'] is None
                   else format_value('rounds_to_target', m['rounds_to_target']))
    cells += [f'{format_value("bytes", m["upload_bytes_per_round"])} / '
              f'{format_value("bytes", m["download_bytes_per_round"])}',
              format_value('bytes', m['bytes_total']), _versus(label, spec, analysis)]
    if flops:
      cells.append(format_value('flops', m['edge_flops_per_round']))
    cells.append(paper or '—')
    lines.append('| ' + ' | '.join(cells) + ' |')
  return lines


def _claims_table(analysis: Analysis) -> list[str]:
  lines = ['| claim (the paper) | measured | ours | met |', '|---|---|---:|---|']
  for claim, value, met in analysis.claims:
    what = (f'{METRICS[claim.metric]}: {claim.run} - {claim.versus}' if claim.kind == 'difference'
            else f'{METRICS[claim.metric]}: 1 - {claim.run} / {claim.versus}')
    shown = '—' if value is None else (
        f'{_signed(value, 3):.1%}' if claim.kind == 'saving' else f'{_signed(value, 4):+.4f}')
    verdict = {True: 'yes', False: 'no', None: 'not checked' if value is None else 'measured only'}[met]
    lines.append(f'| {claim.text} | {what} | {shown} | {verdict} |')
  return lines


def _seeds_lines(spec: ReportSpec, analysis: Analysis) -> list[str]:
  seeds = sorted({s for row in analysis.seeds for s in row.by_seed})
  head = ['run', 'learning rate', *[f'seed {s}' for s in seeds], 'median', 'range', 'reached', 'paper']
  lines = ['| ' + ' | '.join(head) + ' |', '|---|---:|' + '---:|' * (len(seeds) + 3) + '---:|']
  for row in analysis.seeds:
    rate = ("each seed's best (the paper's rule per seed)" if row.learning_rate is None
            else f'{row.learning_rate:g}' + (" (chosen: fewest median rounds)" if row.chosen else ''))
    cells = []
    for s in seeds:
      value = row.by_seed.get(s)
      cell = '—' if s not in row.by_seed else ('not reached' if value is None else f'{value:.1f}')
      if row.learning_rate is None and s in row.rates_by_seed:
        cell += f' (lr {row.rates_by_seed[s]:g})'
      cells.append(cell)
    low, high = row.range
    span = '—' if low is None else f'{low:.1f} - {"not reached" if high is None else f"{high:.1f}"}'
    paper = spec.paper.get(row.label, {}).get('rounds_to_target')
    lines.append(f'| {row.label} | {rate} | {" | ".join(cells)} | '
                 f'{"not reached" if row.median is None else f"{row.median:.1f}"} | {span} | '
                 f'{row.reached} of {len(row.by_seed)} | {"—" if paper is None else f"{paper:g}"} |')
  return lines


def _instance_name(run: RunData, analysis: Analysis) -> str:
  several_seeds = len({r.seed for r in analysis.shown() if r.label == run.label}) > 1
  return f'{run.label} seed {run.seed}' if several_seeds else run.label


def _per_round_lines(analysis: Analysis, cell, title: str) -> list[str]:
  shown = analysis.shown()
  rounds = sorted({int(row['round']) for run in shown for row in run.rows})
  by_round = [{int(row['round']): row for row in run.rows} for run in shown]
  lines = [title, '', '| round | ' + ' | '.join(_instance_name(r, analysis) for r in shown) + ' |',
           '|---:|' + '---:|' * len(shown)]
  for k in rounds:
    cells = [cell(rows[k]) if k in rows else '' for rows in by_round]
    if any(cells):
      lines.append(f'| {k} | ' + ' | '.join(cells) + ' |')
  return lines + ['']


def _accuracy_cell(row: Mapping[str, Any]) -> str:
  value = metrics_lib.cell_value(row, 'eval_accuracy')
  return '' if value is None else f'{value:.4f}'


def _personalized_row_cell(row: Mapping[str, Any]) -> str:
  values = {s: metrics_lib.cell_value(row, f'personalized_accuracy_{s}') for s in PERSONALIZED}
  return '' if values['mean'] is None else _personalized_cell(values, '')


def _traffic_cell(row: Mapping[str, Any]) -> str:
  up, down = (metrics_lib.cell_value(row, k) for k in ('upload_bytes', 'download_bytes'))
  return f'{(up or 0) / 1e6:.3f} / {(down or 0) / 1e6:.3f}'


def markdown_report(analysis: Analysis, spec: ReportSpec) -> str:
  """report.md (see the module docstring)."""
  lines = [f'# {spec.title}', '']
  if spec.description:
    lines += [spec.description, '']
  if spec.source:
    lines += [f'Paper numbers: {spec.source}.', '']
  lines += ['## Data', '']
  lines += ([f'- {note}' for note in spec.data_notes] if spec.data_notes else
            ['- The runs recorded no data notes (this dataset has none, or no run has ended yet: '
             'a run writes them to summary.json when it ends).'])
  lines += ['']
  if spec.reduced:
    lines += ['## Reduced settings (ours vs the paper)', '', *[f'- {r}' for r in spec.reduced], '']
  lines += ['## Final results', '',
            'Per run at its learning rate (medians over seeds when there are several); '
            'accuracies are on the global test set at the last evaluated round; bytes are '
            'what all clients sent (up) and received (down), as counted in metrics.csv.', '',
            *_final_table(spec, analysis), '']
  if analysis.claims:
    lines += ["## The paper's claims on our numbers", '', *_claims_table(analysis), '']
  if analysis.seeds and analysis.several:
    lines += [f'## Rounds to {_pct(spec.target)} over seeds', '',
              'Rounds to target as the FedAvg paper counts them (best-so-far accuracy, '
              'linearly interpolated between evaluations), per seed; median and range over '
              'seeds ("not reached" counts as never).', '', *_seeds_lines(spec, analysis), '']
  if analysis.summaries:
    lines += _per_round_lines(analysis, _accuracy_cell, '## Test accuracy per round')
    if spec.personalized:
      lines += _per_round_lines(
          analysis, _personalized_row_cell,
          '## Personalized accuracy per round (mean ± std [min, max] over clients)')
    lines += _per_round_lines(analysis, _traffic_cell, '## Traffic per round (MB up / down, all clients)')
  unavailable = list(dict.fromkeys(f'- {r.label}: {r.unavailable}' for r in analysis.runs if r.unavailable))
  if unavailable:
    lines += ['## Runs not trained', '', *unavailable, '']
  notes = [f'- {label}: {note}' for label, note in spec.paper_notes.items() if note]
  notes += [f'- {note}' for note in spec.notes]
  if notes:
    lines += ['## Notes', '', *notes, '']
  plots = [f'[{ACCURACY_PLOT}]({ACCURACY_PLOT}) (test accuracy)',
           f'[{TRAFFIC_PLOT}]({TRAFFIC_PLOT}) (cumulative traffic)']
  if spec.personalized:
    plots.append(f'[{PERSONALIZED_PLOT}]({PERSONALIZED_PLOT}) (personalized accuracy)')
  lines += [f'Plots: {", ".join(plots)}.', '']
  return '\n'.join(lines)


def _series(rows: Sequence[Mapping[str, Any]], key: str) -> dict[str, list]:
  rounds, values = report_lib.series(rows, key)
  return {'round': rounds, 'value': values}


def results_json(analysis: Analysis, spec: ReportSpec, **header: Any) -> dict[str, Any]:
  """results.json: the header, the experiment, every run with its series, claims, seeds."""
  keys = ('eval_accuracy', 'train_loss', 'upload_bytes', 'download_bytes',
          *[f'personalized_accuracy_{s}' for s in PERSONALIZED])
  summaries = {(r.label, r.learning_rate, r.seed): s for r, s in analysis.summaries}
  runs = []
  for r in analysis.runs:
    entry = {'label': r.label, 'learning_rate': r.learning_rate, 'seed': r.seed,
             'unavailable': r.unavailable or None,
             'flops_per_example': list(r.flops_per_example) if r.flops_per_example else None,
             'metrics': summaries.get((r.label, r.learning_rate, r.seed)),
             'series': {k: _series(r.rows, k) for k in keys if report_lib.series(r.rows, k)[0]}}
    runs.append(entry)
  return {
      **header,
      'title': spec.title, 'description': spec.description, 'source': spec.source,
      'baseline_label': spec.baseline_label, 'target_accuracy': spec.target,
      'reduced': list(spec.reduced), 'notes': list(spec.notes), 'data_notes': list(spec.data_notes),
      'paper': {k: dict(v) for k, v in spec.paper.items()},
      'by_label': {label: {'learning_rate': analysis.rates.get(label), 'metrics': m}
                   for label, m in analysis.by_label.items()},
      'claims': [{'text': c.text, 'run': c.run, 'versus': c.versus, 'metric': c.metric,
                  'kind': c.kind, 'at_least': c.at_least, 'at_most': c.at_most,
                  'value': value, 'met': met} for c, value, met in analysis.claims],
      'seeds': [{'label': row.label, 'learning_rate': row.learning_rate,
                 'by_seed': {str(s): v for s, v in row.by_seed.items()},
                 'rates_by_seed': {str(s): v for s, v in row.rates_by_seed.items()},
                 'median': row.median, 'min': row.range[0], 'max': row.range[1],
                 'reached': row.reached, 'chosen': row.chosen} for row in analysis.seeds],
      'runs': runs,
  }


# ---------------------------------------------------------------------------
# Plots (matplotlib's object API on an Agg canvas, as `tff_programs.report`).


def _save(fig, ax, path: str, *, xlabel: str, ylabel: str, title: str, legend: str) -> str:
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  ax.set_title(title)
  ax.grid(alpha=0.3)
  if ax.get_legend_handles_labels()[0]:
    ax.legend(fontsize='small', loc=legend)
  fig.tight_layout()
  fig.savefig(path, format='png')
  return path


def plot_accuracy(analysis: Analysis, path: str, *, title: str, target: Optional[float] = None) -> str:
  """Test accuracy per round of each shown run (the target in gray)."""
  fig, ax = report_lib._figure()  # pylint: disable=protected-access
  for run in analysis.shown():
    rounds, values = report_lib.series(run.rows, 'eval_accuracy')
    if rounds:
      ax.plot(rounds, values, label=_instance_name(run, analysis), linewidth=1.4, marker='.')
  if target is not None:
    ax.axhline(target, color='gray', linewidth=1.0, zorder=0)
  return _save(fig, ax, path, xlabel='communication rounds', ylabel='test accuracy',
               title=title, legend='lower right')


def plot_personalized(analysis: Analysis, path: str, *, title: str) -> str:
  """Mean personalized accuracy per round, with the band between the worst and best client."""
  fig, ax = report_lib._figure()  # pylint: disable=protected-access
  for run in analysis.shown():
    points = [(int(r['round']), *(metrics_lib.cell_value(r, f'personalized_accuracy_{s}')
                                  for s in ('mean', 'min', 'max'))) for r in run.rows]
    points = [p for p in points if None not in p]
    if points:
      rounds, mean, low, high = zip(*points)
      line, = ax.plot(rounds, mean, label=_instance_name(run, analysis), linewidth=1.4, marker='.')
      ax.fill_between(rounds, low, high, color=line.get_color(), alpha=0.15)
  return _save(fig, ax, path, xlabel='communication rounds',
               ylabel='personalized accuracy (mean; band: min-max)', title=title,
               legend='lower right')


def plot_traffic(analysis: Analysis, path: str, *, title: str) -> str:
  """Cumulative MB uploaded (solid) and downloaded (dashed) by all clients, per run."""
  fig, ax = report_lib._figure()  # pylint: disable=protected-access
  finals = []
  for run in analysis.shown():
    rounds = [int(r['round']) for r in run.rows]
    if not rounds:
      continue
    up, down = [], []
    for key, out in (('upload_bytes', up), ('download_bytes', down)):
      total = 0.0
      for row in run.rows:
        total += metrics_lib.cell_value(row, key) or 0.0
        out.append(total / 1e6)
    line, = ax.plot(rounds, up, label=f'{_instance_name(run, analysis)} up', linewidth=1.4)
    ax.plot(rounds, down, label=f'{_instance_name(run, analysis)} down', linewidth=1.2,
            linestyle='--', color=line.get_color())
    finals += [v for v in (up[-1], down[-1]) if v > 0]
  if finals and max(finals) > 10 * min(finals):  # RPN, FedGKT: orders of magnitude apart.
    ax.set_yscale('log')
    report_lib._plain_log_ticks(ax)  # pylint: disable=protected-access
  return _save(fig, ax, path, xlabel='communication rounds', ylabel='cumulative MB (all clients)',
               title=title, legend='upper left')


def _write_atomic(path: str, text: str) -> None:
  tmp = path + '.tmp'
  with open(tmp, 'w') as f:
    f.write(text)
  os.replace(tmp, path)


def write_comparison_report(analysis: Analysis, spec: ReportSpec, out_dir: str, *,
                            header: Optional[Mapping[str, Any]] = None) -> dict[str, str]:
  """Writes report.md, results.json and the plots into `out_dir`.

  Returns:
    File kind ('report', 'results', 'accuracy_plot', 'traffic_plot', and
    'personalized_plot' for personalized experiments) -> path.
  """
  os.makedirs(out_dir, exist_ok=True)
  paths = {'report': os.path.join(out_dir, REPORT_MD),
           'results': os.path.join(out_dir, RESULTS_JSON),
           'accuracy_plot': os.path.join(out_dir, ACCURACY_PLOT),
           'traffic_plot': os.path.join(out_dir, TRAFFIC_PLOT)}
  _write_atomic(paths['report'], markdown_report(analysis, spec))
  _write_atomic(paths['results'],
                json.dumps(results_json(analysis, spec, **(header or {})), indent=2) + '\n')
  plot_accuracy(analysis, paths['accuracy_plot'], title=f'{spec.title}: test accuracy',
                target=spec.target)
  plot_traffic(analysis, paths['traffic_plot'], title=f'{spec.title}: traffic')
  if spec.personalized:
    paths['personalized_plot'] = os.path.join(out_dir, PERSONALIZED_PLOT)
    plot_personalized(analysis, paths['personalized_plot'],
                      title=f'{spec.title}: personalized accuracy')
  return paths
