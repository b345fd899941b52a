r"""Reproduce a table of the FedAvg paper and compare with its numbers.

    python -m tff_programs.reproduce --list     # experiments, settings, budgets
    python -m tff_programs.reproduce --experiment=mnist_cnn_table2_iid \
        --data_dir=/path/to/mnist
    python -m tff_programs.reproduce --experiment=mnist_cnn_table2_iid \
        --data_dir=/path/to/mnist --lr_grid=paper3 --lr_center=0.1 --lr_points=5 \
        --only=fedsgd-e1-binf,fedavg-e5-b10 --max_rounds=200
    python -m tff_programs.reproduce --experiment=mnist_cnn_table2_iid --report_only

Every setting of the experiment (`tff_programs/paper_experiments.py`) is run at
every learning rate of the grid through `experiment.run_experiment`, each run in
its own folder `<output_dir>/<experiment>/runs/<setting>-lr<rate>-seed<seed>/`
(the usual run outputs: config.json, metrics.csv, summary.json, checkpoints/).
A finished run (summary.json with rounds_completed >= its rounds) is reused and
an unfinished one resumed, so an interrupted command continues where it
stopped when run again, and a larger --max_rounds extends finished runs.

Per setting the learning rate with the fewest rounds to the target is chosen
(none reached, or tied: the best final accuracy), as the paper does. Runs of
the setting at other rates already on disk (an earlier, different grid) take
part in the choice too, so a grid can be widened step by step. Then
`<output_dir>/<experiment>/` gets:
  report.md          setting | our rounds to target | paper rounds | speedup vs
                     the baseline row | paper speedup | learning rate | final /
                     best accuracy; every rate tried; notes
  results.json       the same data
  accuracy.png       test accuracy vs rounds (chosen rates), target in gray
  train_loss.png     training loss vs rounds, log scale

Comparisons (`tff_programs/paper_comparisons.py`: FedPer, FedGKT and RPN on
CIFAR-10, the MNIST Table 2 row over seeds) are the second kind: named runs,
each with its own rate(s), rounds and seeds, compared per round and at the end
with the paper's numbers (`tff_programs/reproduce_comparison.py`; report.md,
results.json, accuracy.png, traffic.png, personalized.png). --only takes run
names, --seed one seed; the grid flags are for the FedAvg tables only.

Learning-rate grids (--lr_grid): 'paper3' / 'paper6' are the paper's
multiplicative grids (neighbouring rates differ by 10^(1/3) / 10^(1/6)) with
--lr_points rates around --lr_center; or an explicit list like 0.02,0.05,0.1.
The paper searched 11-13 rates per setting; the presets use 3 to keep the cost
down: a rate chosen at the grid's edge is flagged in the report.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import re
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Optional

from tff_programs import quiet_tf  # pylint: disable=g-bad-import-order  (before TensorFlow)

quiet_tf.silence_cpp_logs(sys.argv)

from absl import flags  # pylint: disable=g-import-not-at-top

from tff_programs import comparisons
from tff_programs import experiment as experiment_lib
from tff_programs import paper_comparisons
from tff_programs import paper_experiments
from tff_programs import report as report_lib
from tff_programs import reproduce_comparison
from tff_programs import run_folders

# Flags live in their own FlagValues (not absl's global FLAGS): this program
# shares flag names with train.py (--data_dir, --seed, ...) and both may be
# imported into one process (tests, notebooks).
FLAGS = flags.FlagValues()
flags.DEFINE_string('experiment', None, 'The paper table or comparison to reproduce; see --list. '
                    'Names: ' + ', '.join([*paper_experiments.EXPERIMENTS,
                                         *paper_comparisons.COMPARISONS]) + '.', flag_values=FLAGS)
flags.DEFINE_bool('list', False, 'Print every experiment with its settings, paper numbers and '
                  'rounds budgets, and exit.', flag_values=FLAGS)
flags.DEFINE_string('data_dir', None, 'Folder with the dataset files (as train.py --data_dir; '
                    'not needed for synthetic data).', flag_values=FLAGS)
flags.DEFINE_string('output_dir', 'runs/reproduce', 'Parent folder: runs and the report go to '
                    '<output_dir>/<experiment>/.', flag_values=FLAGS)
flags.DEFINE_string('lr_grid', None, "Learning rates: 'paper3' | 'paper6' (multiplicative grid, "
                    'ratio 10^(1/3) | 10^(1/6), --lr_points rates around --lr_center) or a '
                    'comma-separated list (0.02,0.05,0.1). Default: the experiment\'s.',
                    flag_values=FLAGS)
flags.DEFINE_float('lr_center', None, 'Middle rate of a paper3/paper6 grid (default: the '
                   "experiment's).", flag_values=FLAGS)
flags.DEFINE_integer('lr_points', None, 'Number of rates of a paper3/paper6 grid (default: the '
                     "experiment's, 3; the paper used 11-13).", flag_values=FLAGS)
flags.DEFINE_integer('max_rounds', None, 'Rounds of every run, replacing the per-setting '
                     'budgets (about 1.5x the paper\'s rounds to target; see --list). Finished '
                     'shorter runs are extended, longer ones reused and cut here.',
                     flag_values=FLAGS)
flags.DEFINE_list('only', None, 'Run only these settings or runs (slugs from --list, or labels); '
                  'the report still includes every one with runs on disk.', flag_values=FLAGS)
flags.DEFINE_integer('seed', None, 'Seed of every run (initialization, partition, sampling); '
                     "default: 0 for the FedAvg tables, a comparison's own seeds.",
                     flag_values=FLAGS)
flags.DEFINE_bool('export', None, 'Export each run\'s final model (.keras, SavedModel, .tflite); '
                  "default: the experiment's (on for the issue #15 experiments, off for the "
                  'FedAvg tables, whose comparison does not need it).', flag_values=FLAGS)
flags.DEFINE_bool('report_only', False, 'Train nothing: rebuild the report from the runs on '
                  'disk.', flag_values=FLAGS)
flags.DEFINE_bool('progress', None, 'Force the per-run progress bar on/off (default: on when '
                  'stderr is a terminal).', flag_values=FLAGS)
flags.DEFINE_string('workers', '', "Spread every run's rounds over these TFF workers (as train.py --workers).",
                    flag_values=FLAGS)
flags.DEFINE_string('worker_tls_dir', None, 'Driver certificates for --workers on other machines (as train.py).',
                    flag_values=FLAGS)
flags.DEFINE_string('worker_binary', None, 'A user-built TFF executor service (as train.py --worker_binary).',
                    flag_values=FLAGS)
flags.DEFINE_integer('worker_concurrency', None, "Client computations this process's own TFF worker runs "
                     "at once (as train.py --worker_concurrency; default 0: one per CPU core). With --workers, each "
                     "worker's own --concurrency applies there. Changes no result.",
                     flag_values=FLAGS)
flags.DEFINE_bool('help', False, 'Show this help and exit.', short_name='h', flag_values=FLAGS)

USER_ERRORS = (ValueError, FileNotFoundError)
run_status = run_folders.run_status


@dataclasses.dataclass(frozen=True)
class PlannedRun:
  """One (setting, learning rate) run and what to do with it."""

  setting: paper_experiments.Setting
  learning_rate: float
  config: experiment_lib.ExperimentConfig
  status: str  # 'reuse' (finished), 'resume' (started) or 'new'.


def run_name(setting: paper_experiments.Setting, learning_rate: float, seed: int) -> str:
  return f'{setting.slug}-lr{learning_rate:g}-seed{seed}'


def _runs_dir(output_dir: str, name: str) -> str:
  return os.path.join(output_dir, name, 'runs')


def plan(
    name: str, *, output_dir: str, learning_rates: Sequence[float],
    settings: Sequence[paper_experiments.Setting], max_rounds: Optional[int] = None,
    seed: int = 0, data_dir: Optional[str] = None, export: Optional[bool] = None,
    executor: Optional[dict] = None,
) -> list[PlannedRun]:
  """The runs of `settings` x `learning_rates`, validated, with their status.

  `executor`: where and how the runs compute (ExperimentConfig's workers,
  worker_tls_dir, worker_binary, worker_concurrency); it changes no result.
  """
  exp = paper_experiments.get_experiment(name)
  export = exp.export if export is None else export
  planned = []
  for setting in settings:
    for lr in learning_rates:
      cfg = exp.config(
          setting, lr, rounds=max_rounds, data_dir=data_dir, seed=seed, export=export,
          output_dir=_runs_dir(output_dir, name), run_name=run_name(setting, lr, seed),
          **(executor or {}))
      experiment_lib.validate(cfg)
      status = run_status(cfg)
      planned.append(PlannedRun(setting, lr, dataclasses.replace(cfg, resume=status == 'resume'),
                                status))
  return planned


def _rounds_text(value: Optional[float]) -> str:
  return 'not reached' if value is None else f'{value:.1f}'


def execute(planned: Sequence[PlannedRun], *, show_progress: Optional[bool] = None,
            log: Callable[[str], None] = print) -> None:
  """Trains the runs that are not finished, in order (one TFF runtime each)."""
  todo = sum(p.status != 'reuse' for p in planned)
  log(f'{len(planned)} runs: {len(planned) - todo} finished (reused), {todo} to train')
  for i, p in enumerate(planned, 1):
    if p.status == 'reuse':
      continue
    head = f'[{i}/{len(planned)}] {p.setting.label} lr={p.learning_rate:g}'
    verb = 'resuming' if p.status == 'resume' else 'training'
    log(f'{head}: {verb} to {p.config.rounds} rounds in {p.config.run_dir}')
    result = experiment_lib.run_experiment(p.config, show_progress=show_progress,
                                           log=lambda *_: None)
    s = result.summary
    log(f'{head}: final test accuracy {s["final_eval_accuracy"]:.4f}, rounds to '
        f'{p.config.target_accuracy:g}: {_rounds_text(s["rounds_to_target"])}')


def collect(
    name: str, *, output_dir: str, learning_rates: Sequence[float],
    max_rounds: Optional[int] = None, seed: int = 0, log: Callable[[str], None] = print,
    folders: Optional[list[str]] = None,
) -> list[report_lib.SettingRuns]:
  """Every setting's runs on disk (the grid's and earlier grids'), cut at its budget.

  `folders`, if given, receives the run folders read (for their data notes).
  """
  exp = paper_experiments.get_experiment(name)
  runs_dir = _runs_dir(output_dir, name)
  result = []
  for setting in exp.settings:
    rounds = max_rounds or exp.budget(setting)
    pattern = re.compile(rf'{re.escape(setting.slug)}-lr([0-9.e+-]+)-seed{seed}')
    rates = set(learning_rates)
    for path in glob.glob(os.path.join(glob.escape(runs_dir), f'{setting.slug}-lr*-seed{seed}')):
      match = pattern.fullmatch(os.path.basename(path))
      if match:
        try:
          rates.add(float(match.group(1)))
        except ValueError:
          continue
    runs = {}
    for lr in sorted(rates):
      cfg = exp.config(setting, lr, rounds=rounds, seed=seed, output_dir=runs_dir,
                       run_name=run_name(setting, lr, seed))
      if not run_folders.has_reportable_rows(cfg, log):
        continue
      runs[lr] = run_folders.rows_until(cfg.run_dir, rounds)
      if folders is not None:
        folders.append(cfg.run_dir)
    result.append(report_lib.SettingRuns(
        label=setting.label, runs=runs, paper_rounds=setting.paper_rounds,
        paper_note=setting.paper_note, baseline_label=exp.baseline_of(setting),
        paper_rounds_at=setting.paper_rounds_at, rounds_budget=rounds))
  return result


def get_experiment(name: Optional[str]) -> 'paper_experiments.Experiment | comparisons.Comparison':
  """A FedAvg table or a comparison by name; a one-line error lists every name."""
  if name in paper_comparisons.COMPARISONS:
    return paper_comparisons.COMPARISONS[name]
  if name not in paper_experiments.EXPERIMENTS:
    names = [*paper_experiments.EXPERIMENTS, *paper_comparisons.COMPARISONS]
    given = f'--experiment={name!r}: unknown' if name else '--experiment is required'
    raise paper_experiments.ExperimentError(f'{given}; allowed: {", ".join(names)}')
  return paper_experiments.EXPERIMENTS[name]


def reproduce(
    name: str, *, data_dir: Optional[str] = None, output_dir: str = 'runs/reproduce',
    lr_grid: Optional[str] = None, lr_center: Optional[float] = None,
    lr_points: Optional[int] = None, max_rounds: Optional[int] = None,
    only: Optional[Sequence[str]] = None, seed: Optional[int] = None,
    export: Optional[bool] = None, report_only: bool = False,
    show_progress: Optional[bool] = None, log: Callable[[str], None] = print,
    executor: Optional[dict] = None,
) -> dict[str, str]:
  """Runs (or reuses/resumes) an experiment's runs and writes its report.

  Arguments are the flags of the same names (None: the experiment's default);
  `executor` holds --workers, --worker_tls_dir, --worker_binary, --worker_concurrency.

  Returns:
    The report's files: kind ('report', 'results', '<name>_plot') -> path.

  Raises:
    ValueError: an unknown experiment or setting, a bad grid, config or run
      folder (one-line messages); errors of the runs themselves.
  """
  exp = get_experiment(name)
  if max_rounds is not None and max_rounds < 1:
    raise experiment_lib.ConfigError(f'--max_rounds={max_rounds}: must be an integer >= 1')
  if data_dir:
    data_dir = os.path.abspath(os.path.expanduser(data_dir))  # Same config from any cwd.
  if isinstance(exp, comparisons.Comparison):
    grid = [f for f, v in (('lr_grid', lr_grid), ('lr_center', lr_center),
                           ('lr_points', lr_points)) if v is not None]
    if grid:
      raise paper_experiments.ExperimentError(
          f'--{grid[0]}: only for the FedAvg tables; {name} is a comparison whose runs have '
          'their own learning rates (see --list)')
    return reproduce_comparison.reproduce_comparison(
        name, exp, data_dir=data_dir, output_dir=output_dir, max_rounds=max_rounds, only=only,
        seed=seed, export=export, report_only=report_only, show_progress=show_progress, log=log,
        executor=executor)
  seed = 0 if seed is None else seed
  rates = paper_experiments.learning_rate_grid(
      lr_grid or exp.lr_grid,
      center=exp.lr_center if lr_center is None else lr_center,
      points=exp.lr_points if lr_points is None else lr_points)
  settings = [exp.setting(s) for s in only] if only else list(exp.settings)
  if not report_only:
    planned = plan(name, output_dir=output_dir, learning_rates=rates, settings=settings,
                   max_rounds=max_rounds, seed=seed, data_dir=data_dir, export=export,
                   executor=executor)
    log(f'{name}: {len(settings)} settings x {len(rates)} learning rates '
        f'({", ".join(f"{r:g}" for r in rates)})')
    execute(planned, show_progress=show_progress, log=log)
  folders: list[str] = []
  collected = collect(name, output_dir=output_dir, learning_rates=rates, max_rounds=max_rounds,
                      seed=seed, log=log, folders=folders)
  reported = {lr for setting_runs in collected for lr in setting_runs.runs}
  table = report_lib.build_table(collected, target=exp.target_accuracy,
                                 extra_targets=exp.extra_targets)
  return report_lib.write_report(
      table, os.path.join(output_dir, name), title=name, target=exp.target_accuracy,
      description=exp.description, source=exp.source, extra_targets=exp.extra_targets,
      header={'experiment': name, 'baseline_label': exp.baseline_label, 'seed': seed,
              'learning_rates': list(rates)},
      notes=(*(f'Data: {n}' for n in run_folders.data_notes(folders)),
             *filter(None, [paper_experiments.grid_note(reported, exp.rates())]),
             *exp.notes))


def describe_experiments() -> str:
  """The text of --list."""
  lines = []
  for name, exp in paper_experiments.EXPERIMENTS.items():
    rates = exp.rates()
    targets = ', '.join(f'{t:g}' for t in (exp.target_accuracy, *exp.extra_targets))
    lines += [f'{name}: {exp.description}',
              f'  source: {exp.source}',
              f'  target {targets}; baseline {exp.baseline_label!r}; learning rates '
              f'{", ".join(f"{r:g}" for r in rates)}',
              f'  {"--only value":<18} {"setting":<20} {"paper rounds":>12} {"budget":>7}']
    for s in exp.settings:
      paper = '—' if s.paper_rounds is None else f'{s.paper_rounds:g}'
      lines.append(f'  {s.slug:<18} {s.label:<20} {paper:>12} {exp.budget(s):>7}')
    lines.append('')
  for name, comp in paper_comparisons.COMPARISONS.items():
    seeds = ', '.join(map(str, comp.seeds))
    lines += [f'{name} (comparison): {comp.description}', f'  source: {comp.source}',
              f'  baseline {comp.baseline_label!r}; seeds {seeds}'
              + (f'; target {comp.target_accuracy:g}' if comp.target_accuracy else ''),
              f'  {"--only value":<36} {"learning rates":<22} {"rounds":>6}']
    for r in comp.runs:
      rates = ', '.join(f'{lr:g}' for lr in r.learning_rates)
      lines.append(f'  {r.slug:<36} {rates:<22} {r.rounds:>6}')
    lines.append('')
  return '\n'.join(lines)


def _error(message: str) -> int:
  print(f'reproduce: error: {message}', file=sys.stderr)
  return 2


def _executor_flags() -> dict:
  """ExperimentConfig fields from the executor flags (unset ones keep the config default)."""
  executor = {'workers': FLAGS.workers, 'worker_tls_dir': FLAGS.worker_tls_dir,
              'worker_binary': FLAGS.worker_binary}
  if FLAGS.worker_concurrency is not None:
    executor['worker_concurrency'] = FLAGS.worker_concurrency
  return executor


def _sigterm_to_interrupt(signum, frame):
  del signum, frame
  raise KeyboardInterrupt('SIGTERM')


def main(argv: Sequence[str]) -> int:
  """The command line: parses `argv` (argv[0] is the program) and runs; exit code."""
  FLAGS.unparse_flags()
  try:
    rest = FLAGS(list(argv))
  except flags.Error as e:
    return _error(str(e).splitlines()[0])
  if FLAGS.help:
    print(f'{__doc__}\nFlags:\n{FLAGS.get_help()}')
    return 0
  if len(rest) > 1:
    return _error(f'unexpected arguments {rest[1:]}; flags look like --name=value')
  if FLAGS.list:
    print(describe_experiments())
    return 0
  from tff_programs import progress  # pylint: disable=g-import-not-at-top

  progress.quiet_tf_logs()
  previous = signal.signal(signal.SIGTERM, _sigterm_to_interrupt)
  try:
    paths = reproduce(
        FLAGS.experiment, data_dir=FLAGS.data_dir, output_dir=FLAGS.output_dir,
        lr_grid=FLAGS.lr_grid, lr_center=FLAGS.lr_center, lr_points=FLAGS.lr_points,
        max_rounds=FLAGS.max_rounds, only=FLAGS.only, seed=FLAGS.seed, export=FLAGS.export,
        report_only=FLAGS.report_only, show_progress=FLAGS.progress,
        executor=_executor_flags())
  except KeyboardInterrupt:
    print('reproduce: interrupted; finished rounds are saved. Run the same command again to '
          'continue (finished runs are reused).', file=sys.stderr)
    return 130
  except USER_ERRORS as e:
    return _error(str(e).splitlines()[0] if str(e) else type(e).__name__)
  finally:
    signal.signal(signal.SIGTERM, previous)
  others = ', '.join(os.path.basename(p) for kind, p in paths.items() if kind != 'report')
  print(f'report: {paths["report"]} (also {others})')
  return 0


def run() -> None:
  sys.exit(main(sys.argv))


if __name__ == '__main__':
  run()
