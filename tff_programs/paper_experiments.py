"""The FedAvg paper's experiments as data: settings, budgets and its numbers.

McMahan et al., "Communication-Efficient Learning of Deep Networks from
Decentralized Data" (AISTATS 2017, arXiv:1602.05629v4). Each entry of
`EXPERIMENTS` is one table of the paper: the settings it compares (each a set
of `ExperimentConfig` overrides), the target accuracy, the paper's
rounds-to-target next to each setting, and the baseline row its speedups are
relative to. `tff_programs/reproduce.py` runs an entry over a learning-rate
grid and writes the comparison:

    python -m tff_programs.reproduce --experiment=mnist_cnn_table2_iid \
        --data_dir=/path/to/mnist

The paper's numbers were checked against the arXiv v4 text (Tables 1-3, the
Figure 3 and Figure 4 captions and Section 3). Learning-rate centers are our
choice where the paper gives none (it reports only that it searched 11-13
values on a multiplicative grid of resolution 10^(1/3) or 10^(1/6) and took the
best per setting); the only rate it prints for these tables is eta = 1.47 for
the Shakespeare LSTM (Figure 3).
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any, Optional

from datasets import shakespeare
from tff_programs import experiment as experiment_lib

PAPER = 'McMahan et al. 2017 (arXiv:1602.05629v4)'

# Multiplicative learning-rate grids of the paper (Section 3): name -> ratio
# between neighbouring rates.
GRID_RESOLUTIONS: dict[str, float] = {
    'paper3': 10.0 ** (1.0 / 3.0),
    'paper6': 10.0 ** (1.0 / 6.0),
}


class ExperimentError(ValueError):
  """A one-line error about an experiment name, a setting or a grid."""


@dataclasses.dataclass(frozen=True)
class Setting:
  """One row of a paper table.

  Attributes:
    label: the row's name, as in the paper ('FedAvg E=5 B=10', 'C=0.1 B=inf').
    overrides: ExperimentConfig fields of this row (on top of the
      experiment's `base`).
    paper_rounds: the paper's rounds-to-target for the experiment's target,
      or None where the paper has no number ('—': not reached in its budget).
    paper_note: a remark shown under the report table.
    baseline_label: the row this row's speedup is relative to, when it is not
      the experiment's `baseline_label` (Table 1 has one baseline per B column).
    rounds: an explicit rounds budget (default: see `Experiment.budget`).
    paper_rounds_at: the paper's rounds-to-target for the experiment's
      `extra_targets` (CIFAR-10's Table 3 has three targets); None = 'N/A'.
  """

  label: str
  overrides: Mapping[str, Any]
  paper_rounds: Optional[float] = None
  paper_note: str = ''
  baseline_label: Optional[str] = None
  rounds: Optional[int] = None
  paper_rounds_at: Mapping[float, Optional[float]] = dataclasses.field(default_factory=dict)

  @property
  def slug(self) -> str:
    """The label as a folder name and `--only` value: 'FedAvg E=5 B=10' -> 'fedavg-e5-b10'."""
    return re.sub(r'[^a-z0-9.]+', '-', self.label.lower().replace('=', '')).strip('-')


@dataclasses.dataclass(frozen=True)
class Experiment:
  """One paper table: settings to compare, their target and the paper's numbers.

  Attributes:
    description: one line: what the table shows.
    source: where the paper numbers are (table/figure of the paper).
    base: ExperimentConfig fields shared by every setting.
    settings: the table's rows, in the paper's order.
    target_accuracy: the test accuracy whose rounds-to-target is compared.
    baseline_label: the row speedups are relative to (FedSGD, or C=0).
    lr_grid: default grid: 'paper3', 'paper6' or comma-separated rates.
    lr_center: the middle of a 'paper3'/'paper6' grid.
    lr_points: how many rates a 'paper3'/'paper6' grid has.
    max_rounds: the largest rounds budget of any setting.
    budget_factor: a setting's default budget is this times its paper rounds.
    eval_points: about this many evaluations per run (unless `base` or the
      setting fixes eval_every): rounds-to-target is interpolated between them.
    extra_targets: more targets reported in a second table (CIFAR-10).
    export: save each run's final model (Keras, SavedModel, TFLite) unless
      `reproduce --export` says otherwise.
    notes: lines for the report's notes (choices and why).
  """

  description: str
  source: str
  base: Mapping[str, Any]
  settings: tuple[Setting, ...]
  target_accuracy: float
  baseline_label: str
  lr_grid: str = 'paper3'
  lr_center: float = 0.1
  lr_points: int = 3
  max_rounds: int = 1000
  budget_factor: float = 1.5
  eval_points: int = 300
  extra_targets: tuple[float, ...] = ()
  export: bool = False
  notes: tuple[str, ...] = ()

  def setting(self, label_or_slug: str) -> Setting:
    """The setting with this label or slug (case-insensitive)."""
    key = label_or_slug.strip().lower()
    for s in self.settings:
      if key in (s.label.lower(), s.slug):
        return s
    raise ExperimentError(
        f'--only={label_or_slug!r}: no such setting; allowed: '
        f'{", ".join(s.slug for s in self.settings)}'
    )

  def baseline_of(self, setting: Setting) -> str:
    return setting.baseline_label or self.baseline_label

  def rates(self) -> tuple[float, ...]:
    """The experiment's own learning-rate grid (what --lr_grid etc. default to)."""
    return learning_rate_grid(self.lr_grid, center=self.lr_center, points=self.lr_points)

  def budget(self, setting: Setting) -> int:
    """Rounds to run `setting`: explicit, else budget_factor x the paper's
    largest rounds-to-target, at most max_rounds; max_rounds if the paper has
    no number (it did not reach the target either)."""
    if setting.rounds is not None:
      return setting.rounds
    known = [r for r in (setting.paper_rounds, *setting.paper_rounds_at.values()) if r is not None]
    if not known:
      return self.max_rounds
    return min(self.max_rounds, math.ceil(self.budget_factor * max(known)))

  def config(
      self, setting: Setting, learning_rate: float, *, rounds: Optional[int] = None,
      **fields: Any
  ) -> experiment_lib.ExperimentConfig:
    """The ExperimentConfig of one run of `setting` at `learning_rate`.

    Args:
      setting: one of `self.settings`.
      learning_rate: the client learning rate eta.
      rounds: the rounds budget (default: `self.budget(setting)`).
      **fields: more ExperimentConfig fields (data_dir, output_dir, run_name,
        seed, resume, export, ...); they win over the preset.
    """
    rounds = self.budget(setting) if rounds is None else rounds
    values = {
        'target_accuracy': self.target_accuracy,
        'eval_every': max(1, math.ceil(rounds / self.eval_points)),
        **self.base,
        **setting.overrides,
        'client_learning_rate': learning_rate,
        'rounds': rounds,
        **fields,
    }
    return experiment_lib.ExperimentConfig(**values)


def learning_rate_grid(spec: str, *, center: float, points: int) -> tuple[float, ...]:
  """The learning rates of `--lr_grid`.

  Args:
    spec: 'paper3' / 'paper6' (a multiplicative grid with ratio 10^(1/3) or
      10^(1/6) between neighbours, as the paper's), or comma-separated rates.
    center: the middle rate of a paper grid.
    points: the number of rates of a paper grid (even counts get one more
      rate above the center than below).

  Returns:
    Increasing, distinct rates, rounded to 3 significant digits (they name
    run folders, so the same grid always finds the same runs).

  Raises:
    ExperimentError: a malformed spec, a non-positive rate, center or points.
  """
  spec = spec.strip()
  if spec in GRID_RESOLUTIONS:
    if not (math.isfinite(center) and center > 0):
      raise ExperimentError(f'--lr_center={center}: must be a positive number')
    if points < 1:
      raise ExperimentError(f'--lr_points={points}: must be an integer >= 1')
    first = -((points - 1) // 2)
    rates = [center * GRID_RESOLUTIONS[spec] ** k for k in range(first, first + points)]
  else:
    try:
      rates = [float(v) for v in spec.split(',') if v.strip()]
    except ValueError:
      rates = []
    if not rates or not all(math.isfinite(r) and r > 0 for r in rates):
      raise ExperimentError(
          f'--lr_grid={spec!r}: must be {" or ".join(GRID_RESOLUTIONS)} or '
          'comma-separated positive learning rates (e.g. 0.02,0.05,0.1)'
      )
  return tuple(sorted({float(f'{r:.3g}') for r in rates}))


def grid_note(reported: Sequence[float], experiment_rates: Sequence[float]) -> Optional[str]:
  """A report note when the learning rates with runs in the report (this
  command's grid and any other rates on disk) are not the experiment's own
  grid: each setting's rate is then chosen among the reported ones only.
  None when they are the experiment's grid."""
  reported, grid = sorted(set(reported)), sorted(set(experiment_rates))
  if reported == grid:
    return None
  text = lambda rs: ', '.join(f'{r:g}' for r in rs)
  missing = [r for r in grid if r not in reported]
  return (f'Learning rates in this report: {text(reported)}; the experiment\'s grid is '
          f'{text(grid)}' + (f' (no runs at {text(missing)})' if missing else '')
          + ': each setting\'s rate is chosen among the rates in this report only.')


def get_experiment(name: Optional[str]) -> Experiment:
  """The registered experiment `name`; a one-line error lists the names."""
  if name not in EXPERIMENTS:
    given = f'--experiment={name!r}: unknown' if name else '--experiment is required'
    raise ExperimentError(f'{given}; allowed: {", ".join(EXPERIMENTS)}')
  return EXPERIMENTS[name]


# ---------------------------------------------------------------------------
# The registry.


def _fedavg(e: int, b: Any, **more: Any) -> dict[str, Any]:
  return {'algorithm': 'fedavg', 'local_epochs': e, 'batch_size': b, **more}


def _fedsgd(**more: Any) -> dict[str, Any]:
  return {'algorithm': 'fedsgd', 'local_epochs': 1, 'batch_size': 'inf', **more}


# Table 2 rows in the paper's order (by u = nE/(KB)): None = FedSGD, else (E, B).
_TABLE2_MNIST = (None, (5, 'inf'), (1, 50), (20, 'inf'), (1, 10), (5, 50), (20, 50),
                 (5, 10), (20, 10))
_TABLE2_MNIST_IID = (626, 179, 65, 234, 34, 29, 32, 20, 18)
_TABLE2_MNIST_NONIID = (483, 1000, 600, 672, 350, 334, 426, 229, 173)


def _table2_settings(rows: Sequence[Any], paper: Sequence[float]) -> tuple[Setting, ...]:
  settings = []
  for row, rounds in zip(rows, paper):
    if row is None:
      settings.append(Setting('FedSGD E=1 B=inf', _fedsgd(), rounds))
    else:
      e, b = row
      settings.append(Setting(f'FedAvg E={e} B={b}', _fedavg(e, b), rounds))
  return tuple(settings)


_MNIST_CNN = {
    'dataset': 'mnist', 'model': 'mnist_cnn', 'num_clients': 100,
    'client_fraction': 0.1, 'personalized_eval': False,
}
_IID = {'partition': 'iid'}
_NONIID = {'partition': 'shards', 'shards_per_client': 2}  # 200 shards of 300, 2 per client.


def _mnist_cnn_table2(partition: Mapping[str, Any], paper: Sequence[float], name: str,
                      max_rounds: int) -> Experiment:
  return Experiment(
      description=(f'MNIST CNN, {name}, C=0.1: rounds to 99% test accuracy, FedSGD vs '
                   'FedAvg as local computation u = nE/(KB) grows'),
      source=f'{PAPER}, Table 2 (top), {name} column',
      base={**_MNIST_CNN, **partition},
      settings=_table2_settings(_TABLE2_MNIST, paper),
      target_accuracy=0.99,
      baseline_label='FedSGD E=1 B=inf',
      lr_center=0.1,
      max_rounds=max_rounds,
  )


# Table 1, MNIST 2NN with E=1: C -> paper rounds to 97% for (B=inf, B=10).
# C=0.0 is one client per round (m = max(C*K, 1)); with K=100, C=0.01 gives it.
_TABLE1_C = (0.0, 0.1, 0.2, 0.5, 1.0)
_TABLE1_2NN_IID = {'inf': (1455, 1474, 1658, None, None), 10: (316, 87, 77, 75, 70)}
_TABLE1_2NN_NONIID = {'inf': (4278, 1796, 1528, None, None), 10: (3275, 664, 619, 443, 380)}
_NOT_REACHED = 'paper: "—", did not reach the target in its allowed time'


def _table1_settings(paper: Mapping[Any, Sequence[Optional[float]]]) -> tuple[Setting, ...]:
  settings = []
  for b, column in paper.items():
    baseline = f'C=0.0 B={b}'
    for c, rounds in zip(_TABLE1_C, column):
      settings.append(Setting(
          f'C={c:.1f} B={b}',
          _fedavg(1, b, client_fraction=c or 0.01),
          rounds,
          paper_note='' if rounds is not None else _NOT_REACHED,
          baseline_label=baseline,
      ))
  return tuple(settings)


def _mnist_2nn_table1(partition: Mapping[str, Any],
                      paper: Mapping[Any, Sequence[Optional[float]]], name: str,
                      max_rounds: int) -> Experiment:
  return Experiment(
      description=(f'MNIST 2NN, {name}, E=1: rounds to 97% test accuracy as the client '
                   'fraction C grows (C=0.0: one client per round), for B=inf and B=10'),
      source=f'{PAPER}, Table 1 (2NN), {name} columns; speedups vs C=0.0 of the same B',
      base={'dataset': 'mnist', 'model': 'mnist_2nn', 'num_clients': 100,
            'personalized_eval': False, **partition},
      settings=_table1_settings(paper),
      target_accuracy=0.97,
      baseline_label='C=0.0 B=inf',
      lr_center=0.1,
      max_rounds=max_rounds,
  )


# Table 2 (bottom), Shakespeare LSTM, C=0.1, target 54%: row -> rounds (IID, by role).
_TABLE2_LSTM = (
    (None, 2488, 3906),
    ((1, 50), 1635, 549),
    ((5, 'inf'), 613, 597),
    ((1, 10), 460, 164),
    ((5, 50), 401, 152),
    ((5, 10), 192, 41),
)


# The natural partition has one client per role with >= 2 lines (the paper's
# words) of the 1994 100.txt: 1,215 with datasets/shakespeare.py's parser; the
# paper reports 1,146 (the reference preprocessing's rule, >= 3 lines, gives
# 1,149). num_clients must be the data's count, so it is ours.
_SHAKESPEARE_CLIENTS = shakespeare.GUTENBERG_1994_CLIENTS[shakespeare.MIN_ROLE_LINES]


def _shakespeare(dataset: str, name: str, column: int) -> Experiment:
  return Experiment(
      description=(f'Shakespeare character LSTM, {name}, C=0.1: rounds to 54% test '
                   f'accuracy, FedSGD vs FedAvg; {_SHAKESPEARE_CLIENTS:,} clients (roles '
                   f'with >= {shakespeare.MIN_ROLE_LINES} lines in the 1994 100.txt; the '
                   f'paper: {shakespeare.PAPER_NUM_CLIENTS:,})'),
      source=f'{PAPER}, Table 2 (bottom), {name} column; eta=1.47 from Figure 3',
      base={'dataset': dataset, 'model': 'char_lstm', 'partition': 'natural',
            'num_clients': _SHAKESPEARE_CLIENTS, 'client_fraction': 0.1,
            'personalized_eval': False},
      settings=_table2_settings([row for row, *_ in _TABLE2_LSTM],
                                [paper[column] for _, *paper in _TABLE2_LSTM]),
      target_accuracy=0.54,
      baseline_label='FedSGD E=1 B=inf',
      lr_center=1.47,
      max_rounds=6000,
  )


_CIFAR_NOTE = ('paper speedups in Table 3 are vs centralized SGD (18000/31000/99000 '
               'minibatch steps), ours vs FedSGD; our pipeline is the paper\'s: random '
               '24x24 crops, flips, contrast and brightness jitter and whitening at '
               'training time, central 24x24 crops at test time')

EXPERIMENTS: dict[str, Experiment] = {
    'mnist_cnn_table2_iid': _mnist_cnn_table2(_IID, _TABLE2_MNIST_IID, 'IID', 1000),
    'mnist_cnn_table2_noniid': _mnist_cnn_table2(
        _NONIID, _TABLE2_MNIST_NONIID, 'pathological non-IID (2 shards per client)', 1500),
    'mnist_2nn_table1_iid': _mnist_2nn_table1(_IID, _TABLE1_2NN_IID, 'IID', 2500),
    'mnist_2nn_table1_noniid': _mnist_2nn_table1(
        _NONIID, _TABLE1_2NN_NONIID, 'pathological non-IID (2 shards per client)', 6500),
    'shakespeare_lstm': _shakespeare('shakespeare', 'non-IID by role (play & role)', 1),
    'shakespeare_lstm_iid': _shakespeare('shakespeare_iid', 'IID', 0),
    'cifar10_table3': Experiment(
        description=('CIFAR-10 cifar_cnn, 100 IID clients x 500 examples, C=0.1: rounds to '
                     '80% (and 82%, 85%) test accuracy, FedSGD vs FedAvg E=5 B=50, each '
                     'with per-round learning-rate decay'),
        source=f'{PAPER}, Table 3 and the Figure 4 caption (decay 0.9934 / 0.99 per round)',
        base={'dataset': 'cifar10', 'model': 'cifar_cnn', 'partition': 'iid',
              'num_clients': 100, 'client_fraction': 0.1, 'personalized_eval': False},
        settings=(
            Setting('FedSGD E=1 B=inf', _fedsgd(learning_rate_decay=0.9934), 3750,
                    paper_note=_CIFAR_NOTE, paper_rounds_at={0.82: 6600, 0.85: None}),
            Setting('FedAvg E=5 B=50', _fedavg(5, 50, learning_rate_decay=0.99), 280,
                    paper_rounds_at={0.82: 630, 0.85: 2000}),
        ),
        target_accuracy=0.80,
        extra_targets=(0.82, 0.85),
        baseline_label='FedSGD E=1 B=inf',
        lr_center=0.1,
        max_rounds=7000,
    ),
    # Issue #15: FedAvg's row of Table 3 alone, within 1.5x of its rounds, a 3-rate grid.
    'cifar10_fedavg_table3': Experiment(
        description=('CIFAR-10 cifar_cnn (the paper\'s 24x24 pipeline: random crops, flips, '
                     'contrast and brightness jitter, whitening), 100 IID clients, C=0.1, FedAvg '
                     'E=5 B=50, learning-rate decay 0.99 per round: rounds to 80% test accuracy '
                     '(paper: 280) within 1.5x (420 rounds), evaluated every 2 rounds'),
        source=f'{PAPER}, Table 3 and the Figure 4 caption (decay 0.99 per round)',
        base={'dataset': 'cifar10', 'model': 'cifar_cnn', 'partition': 'iid',
              'num_clients': 100, 'client_fraction': 0.1, 'personalized_eval': False,
              'eval_every': 2},
        settings=(Setting('FedAvg E=5 B=50', _fedavg(5, 50, learning_rate_decay=0.99), 280,
                          paper_rounds_at={0.82: 630, 0.85: 2000}),),
        target_accuracy=0.80,
        extra_targets=(0.82, 0.85),
        baseline_label='FedAvg E=5 B=50',
        lr_center=0.1,
        max_rounds=420,
        export=True,
        notes=(
            'Learning rates: the paper\'s multiplicative grid (ratio 10^(1/3)) with 3 points '
            'around 0.1, the initial rate of the TensorFlow CIFAR-10 tutorial that the paper\'s '
            'model and pipeline come from: 0.0464, 0.1, 0.215. The paper searched a wider grid '
            'per setting and prints no rate for this table; with the 0.99 decay the rate falls to '
            '6% of its start by round 280, so the grid reaches above the tutorial\'s rate too.',
            'Client size: with the official test_batch each of the 100 clients holds 500 '
            'training images, as in the paper; without it (data_batch_5 held out as the test '
            'set) 400.',
        ),
    ),
    # Not from the paper: a seconds-long run of the whole pipeline (tests, demos).
    'smoke': Experiment(
        description=('Tiny synthetic smoke test of the reproduce pipeline (not from the '
                     'paper; its "paper rounds" are made up)'),
        source='none (synthetic data)',
        base={'dataset': 'synthetic', 'model': 'tiny_mlp', 'partition': 'iid',
              'num_clients': 4, 'client_fraction': 0.5, 'personalized_eval': False,
              'eval_every': 1},
        settings=(
            Setting('FedSGD E=1 B=inf', _fedsgd(), 4),
            Setting('FedAvg E=2 B=16', _fedavg(2, 16), 2),
        ),
        target_accuracy=0.3,
        baseline_label='FedSGD E=1 B=inf',
        lr_grid='0.1,0.3',
        max_rounds=2,
    ),
}
