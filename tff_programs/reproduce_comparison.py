"""Reproduce a comparison experiment: plan its runs, train or reuse them, report.

    python -m tff_programs.reproduce --experiment=cifar10_rpn_resnet8 \
        --data_dir=/path/to/cifar10

(`tff_programs/reproduce.py` is the command line; the experiments are in
`tff_programs/paper_comparisons.py`.) Every (run, learning rate, seed) of the
comparison trains in order in its own folder
`<output_dir>/<experiment>/runs/<run>-lr<rate>-seed<seed>/`: a finished run is
reused, a started one resumed (`--resume`: its config must match), so the same
command continues where it stopped, across sessions. A run that needs a flag
this FedSuite does not have yet (`Run.pending_flags`) is skipped with one line
and listed in the report. Then `<output_dir>/<experiment>/` gets report.md,
results.json and the plots (`comparison_output`).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from typing import Any, Optional

from tff_programs import comparison_output
from tff_programs import comparison_report
from tff_programs import comparisons
from tff_programs import experiment as experiment_lib
from tff_programs import run_folders


@dataclasses.dataclass(frozen=True)
class PlannedRun:
  """One (run, learning rate, seed) and what to do with it."""

  run: comparisons.Run
  learning_rate: float
  seed: int
  config: Optional[experiment_lib.ExperimentConfig]
  status: str  # 'reuse' | 'resume' | 'new' | 'unavailable'
  reason: str = ''

  @property
  def head(self) -> str:
    return f'{self.run.label} lr={self.learning_rate:g} seed={self.seed}'


def runs_dir(output_dir: str, name: str) -> str:
  return os.path.join(output_dir, name, 'runs')


def _config(comp: comparisons.Comparison, name: str, run: comparisons.Run, lr: float, seed: int,
            *, output_dir: str, max_rounds: Optional[int], **fields: Any):
  return comp.config(run, lr, seed, rounds=max_rounds, output_dir=runs_dir(output_dir, name),
                     run_name=comparisons.run_name(run, lr, seed), **fields)


def plan(name: str, comp: comparisons.Comparison, *, output_dir: str,
         runs: Sequence[comparisons.Run], seeds: Sequence[int], max_rounds: Optional[int] = None,
         data_dir: Optional[str] = None, export: Optional[bool] = None,
         executor: Optional[dict] = None) -> list[PlannedRun]:
  """The runs, validated (one-line ConfigErrors), with their status.

  `export` None: the comparison's; `executor`: --workers and friends (they
  change no result).
  """
  fields = {'data_dir': data_dir, **({} if export is None else {'export': export}),
            **(executor or {})}
  planned = []
  for run, lr, seed in comp.instances(runs, seeds):
    try:
      cfg = _config(comp, name, run, lr, seed, output_dir=output_dir, max_rounds=max_rounds,
                    **fields)
    except comparisons.UnavailableRunError as e:
      planned.append(PlannedRun(run, lr, seed, None, 'unavailable', str(e)))
      continue
    experiment_lib.validate(cfg)
    status = run_folders.run_status(cfg)
    planned.append(PlannedRun(run, lr, seed, dataclasses.replace(cfg, resume=status == 'resume'),
                              status))
  return planned


def execute(planned: Sequence[PlannedRun], *, show_progress: Optional[bool] = None,
            log: Callable[[str], None] = print) -> None:
  """Trains the runs that are not finished, in order (one TFF runtime each)."""
  todo = sum(p.status in ('new', 'resume') for p in planned)
  skipped = sum(p.status == 'unavailable' for p in planned)
  log(f'{len(planned)} runs: {sum(p.status == "reuse" for p in planned)} finished (reused), '
      f'{todo} to train' + (f', {skipped} not available' if skipped else ''))
  for i, p in enumerate(planned, 1):
    head = f'[{i}/{len(planned)}] {p.head}'
    if p.status == 'unavailable':
      log(f'{head}: skipped: {p.reason}')
    if p.status not in ('new', 'resume'):
      continue
    verb = 'resuming' if p.status == 'resume' else 'training'
    log(f'{head}: {verb} to {p.config.rounds} rounds in {p.config.run_dir}')
    result = experiment_lib.run_experiment(p.config, show_progress=show_progress,
                                           log=lambda *_: None)
    accuracy = result.summary.get('final_eval_accuracy')
    log(f'{head}: final test accuracy '
        f'{"—" if accuracy is None else f"{accuracy:.4f}"} after '
        f'{result.summary["rounds_completed"]} rounds')


def collect(name: str, comp: comparisons.Comparison, *, output_dir: str, seeds: Sequence[int],
            max_rounds: Optional[int] = None, log: Callable[[str], None] = print
            ) -> tuple[list[comparison_report.RunData], list[str]]:
  """Every run's rows on disk (cut at its rounds), and the run folders read."""
  found, folders = [], []
  flops_cache: dict[tuple, tuple[int, int]] = {}
  for run, lr, seed in comp.instances(seeds=seeds):
    try:
      cfg = _config(comp, name, run, lr, seed, output_dir=output_dir, max_rounds=max_rounds)
    except comparisons.UnavailableRunError as e:
      found.append(comparison_report.RunData(run.label, lr, seed, [], unavailable=str(e)))
      continue
    if not run_folders.has_reportable_rows(cfg, log):
      continue
    flops = None
    if comp.flops_input is not None:
      key = (cfg.algorithm, cfg.model, cfg.gkt_block)
      if key not in flops_cache:
        flops_cache[key] = comparisons.edge_flops_per_example(cfg, *comp.flops_input)
      flops = flops_cache[key]
    found.append(comparison_report.RunData(
        run.label, lr, seed, run_folders.rows_until(cfg.run_dir, cfg.rounds),
        flops_per_example=flops, local_epochs=cfg.local_epochs))
    folders.append(cfg.run_dir)
  return found, folders


def _notes(comp: comparisons.Comparison, runs: Sequence[comparison_report.RunData],
           folders: Sequence[str]) -> tuple[str, ...]:
  notes = []
  saved = sum(run_folders.exported(f) for f in folders)
  if comp.export:
    notes.append(f'Final models: saved in {saved} of {len(folders)} run folders (model.keras, '
                 'model/, model.tflite; per-client models of FedPer/FedGKT in clients/), next to '
                 'the checkpoints (checkpoints/: server and client states).')
  per_example = {r.label: r.flops_per_example for r in runs if r.flops_per_example}
  for label, (train, extract) in per_example.items():
    flops = comparison_report.format_flops
    notes.append(f'{label}: one edge device spends {flops(train)} per training example'
                 + (f' and {flops(extract)} per example extracted' if extract else '')
                 + ' (models/flops.py: 2 FLOPs per multiply-accumulate, training = 3x forward).')
  return tuple(notes)


def reproduce_comparison(
    name: str, comp: comparisons.Comparison, *, data_dir: Optional[str] = None,
    output_dir: str = 'runs/reproduce', max_rounds: Optional[int] = None,
    only: Optional[Sequence[str]] = None, seed: Optional[int] = None,
    export: Optional[bool] = None, report_only: bool = False,
    show_progress: Optional[bool] = None, log: Callable[[str], None] = print,
    executor: Optional[dict] = None,
) -> dict[str, str]:
  """Runs (or reuses/resumes) a comparison's runs and writes its report.

  Arguments are reproduce's flags: `only` run labels or slugs, `seed` one
  seed instead of the comparison's seeds (the report still covers every run
  of the comparison's seeds found on disk).

  Returns:
    The report's files: kind ('report', 'results', '*_plot') -> path.
  """
  runs = [comp.run(s) for s in only] if only else list(comp.runs)
  seeds = list(comp.seeds) if seed is None else [seed]
  if not report_only:
    planned = plan(name, comp, output_dir=output_dir, runs=runs, seeds=seeds,
                   max_rounds=max_rounds, data_dir=data_dir, export=export, executor=executor)
    log(f'{name}: {len(runs)} runs x {len(seeds)} seed(s): '
        f'{", ".join(r.label for r in runs)}')
    execute(planned, show_progress=show_progress, log=log)
  # The report covers every seed of the comparison on disk, as the tables' every setting.
  found, folders = collect(name, comp, output_dir=output_dir, seeds=sorted({*comp.seeds, *seeds}),
                           max_rounds=max_rounds, log=log)
  spec = comparison_report.ReportSpec(
      title=name, description=comp.description, source=comp.source,
      baseline_label=comp.baseline_label, target=comp.target_accuracy, claims=comp.claims,
      paper={r.label: dict(r.paper) for r in comp.runs if r.paper},
      paper_notes={r.label: r.paper_note for r in comp.runs if r.paper_note},
      reduced=comp.reduced, notes=_notes(comp, found, folders),
      data_notes=run_folders.data_notes(folders), personalized=comp.personalized)
  analysis = comparison_report.analyze(found, spec)
  return comparison_output.write_comparison_report(
      analysis, spec, os.path.join(output_dir, name),
      header={'experiment': name, 'kind': 'comparison', 'run_seeds': seeds,
              'runs_planned': [{'label': r.label, 'learning_rates': list(r.learning_rates),
                                'rounds': max_rounds or r.rounds} for r in comp.runs]})
