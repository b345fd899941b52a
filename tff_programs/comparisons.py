"""The second kind of reproduce experiment: named runs compared round by round.

A FedAvg-paper table (`paper_experiments.Experiment`) asks one question of
each setting: rounds to a target accuracy, with the learning rate chosen on a
grid. The other papers compare algorithms: FedPer vs FedAvg on personalized
accuracy, FedGKT vs FedAvg on accuracy, edge FLOPs and traffic, RPN vs FedAvg
on accuracy and bytes. A `Comparison` is such an experiment: named runs, each
an `ExperimentConfig` (the comparison's `base` plus the run's overrides) with
its own fixed learning rate (or a small grid) and rounds, compared per round
and at the end, with the paper's numbers (`Run.paper`) and claims (`Claim`)
as data next to ours. With several `seeds` and rates it measures
rounds-to-target as median and range over seeds (`comparison_report`).

    python -m tff_programs.reproduce --experiment=cifar10_fedper_fig2_k4 \
        --data_dir=/path/to/cifar10

runs every (run, learning rate, seed) in order, each in its own folder
`<output_dir>/<experiment>/runs/<run>-lr<rate>-seed<seed>/`, and writes
report.md, results.json and plots (`tff_programs/reproduce_comparison.py`).
The experiments themselves are in `tff_programs/paper_comparisons.py`.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from typing import Any, Optional

from tff_programs import comparison_report
from tff_programs import experiment as experiment_lib
from tff_programs.paper_experiments import ExperimentError

Claim = comparison_report.Claim
METRICS = comparison_report.METRICS


def slug_of(label: str) -> str:
  """A label as a folder name and `--only` value: 'FedPer K_P=2' -> 'fedper-k-p2'."""
  return re.sub(r'[^a-z0-9.]+', '-', label.lower().replace('=', '')).strip('-')


@dataclasses.dataclass(frozen=True)
class Run:
  """One named run of a comparison.

  Attributes:
    label: its name in the report ('FedPer K_P=2', 'RPN + 8-bit').
    overrides: ExperimentConfig fields on top of the comparison's `base`
      (algorithm, aggregator, model, batch size, ...).
    learning_rates: its client learning rate, or a grid (the seeds-and-rates
      experiments); each rate is one run folder per seed.
    rounds: its rounds budget.
    paper: the paper's numbers for this run, by `METRICS` key
      ({'final_eval_accuracy': 0.9297}).
    paper_note: where those numbers come from, or what differs.
    pending_flags: override keys allowed to be missing from this FedSuite's
      flags (an option another change is adding): without them the run is
      reported as unavailable instead of failing the experiment.
  """

  label: str
  overrides: Mapping[str, Any]
  learning_rates: tuple[float, ...]
  rounds: int
  paper: Mapping[str, float] = dataclasses.field(default_factory=dict)
  paper_note: str = ''
  pending_flags: tuple[str, ...] = ()

  @property
  def slug(self) -> str:
    return slug_of(self.label)

  def missing_flags(self) -> list[str]:
    """Override keys that are not flags of this FedSuite (sorted)."""
    fields = experiment_lib.ExperimentConfig.__dataclass_fields__
    return sorted(k for k in self.overrides if k not in fields)


class UnavailableRunError(ExperimentError):
  """A run needs a flag this FedSuite does not have (yet)."""


@dataclasses.dataclass(frozen=True)
class Comparison:
  """Named runs compared per round and at the end, with the paper's numbers.

  Attributes:
    description: what is compared, in one paragraph (and why these settings).
    source: where the paper's numbers are.
    base: ExperimentConfig fields every run shares.
    runs: the runs, in the order they are trained and reported.
    baseline_label: the run savings and gaps are relative to (FedAvg).
    reduced: the settings reduced from the paper's, each named with the
      paper's value (E=1 instead of 4, ...).
    seeds: every run is trained with each seed.
    target_accuracy: rounds-to-target of `target_metric`, if any.
    claims: the paper's statements checked on our final numbers.
    personalized: report the personalized accuracy columns (FedPer).
    flops_input: (input shape, classes) of the models whose training FLOPs
      per edge device are reported (FedGKT), or None.
    export: save the final models (Keras, SavedModel, TFLite).
  """

  description: str
  source: str
  base: Mapping[str, Any]
  runs: tuple[Run, ...]
  baseline_label: str
  reduced: tuple[str, ...] = ()
  seeds: tuple[int, ...] = (0,)
  target_accuracy: Optional[float] = None
  claims: tuple[Claim, ...] = ()
  personalized: bool = False
  flops_input: Optional[tuple[tuple[int, ...], int]] = None
  export: bool = True

  def run(self, label_or_slug: str) -> Run:
    """The run with this label or slug (case-insensitive)."""
    key = label_or_slug.strip().lower()
    for r in self.runs:
      if key in (r.label.lower(), r.slug):
        return r
    raise ExperimentError(f'--only={label_or_slug!r}: no such run; allowed: '
                          f'{", ".join(r.slug for r in self.runs)}')

  def config(self, run: Run, learning_rate: float, seed: int, *, rounds: Optional[int] = None,
             **fields: Any) -> experiment_lib.ExperimentConfig:
    """The ExperimentConfig of `run` at `learning_rate` and `seed`.

    Args:
      run: one of `self.runs`.
      learning_rate: the client learning rate eta.
      seed: the run's seed.
      rounds: the rounds budget (default: `run.rounds`).
      **fields: more ExperimentConfig fields (data_dir, output_dir, run_name,
        export, ...); they win over the experiment's.

    Raises:
      UnavailableRunError: the run needs a flag this FedSuite lacks.
    """
    missing = run.missing_flags()
    if missing:
      raise UnavailableRunError(
          f'{run.label}: needs {", ".join(f"--{m}" for m in missing)}, which this FedSuite '
          'does not have')
    values = {
        'export': self.export,
        **({'target_accuracy': self.target_accuracy} if self.target_accuracy else {}),
        **self.base,
        **run.overrides,
        'client_learning_rate': learning_rate,
        'rounds': run.rounds if rounds is None else rounds,
        'seed': seed,
        **fields,
    }
    return experiment_lib.ExperimentConfig(**values)

  def instances(self, runs: Optional[Sequence[Run]] = None,
                seeds: Optional[Sequence[int]] = None) -> list[tuple[Run, float, int]]:
    """(run, learning rate, seed) in training order: run by run, rate, seed."""
    return [(r, lr, s) for r in (self.runs if runs is None else runs)
            for lr in r.learning_rates for s in (self.seeds if seeds is None else seeds)]


def run_name(run: Run, learning_rate: float, seed: int) -> str:
  """The run's folder name (as the FedAvg tables name theirs)."""
  return f'{run.slug}-lr{learning_rate:g}-seed{seed}'


def check(comparison: Comparison) -> None:
  """Raises ExperimentError if the comparison is inconsistent (used by tests)."""
  labels = [r.label for r in comparison.runs]
  slugs = [r.slug for r in comparison.runs]
  if len(set(labels)) != len(labels) or len(set(slugs)) != len(slugs):
    raise ExperimentError(f'run labels or slugs repeat: {labels}')
  if comparison.baseline_label not in labels:
    raise ExperimentError(f'baseline {comparison.baseline_label!r} is not a run')
  for r in comparison.runs:
    if not r.learning_rates or r.rounds < 1:
      raise ExperimentError(f'{r.label}: needs a learning rate and rounds >= 1')
    unknown = set(r.paper) - set(METRICS)
    extra = set(r.missing_flags()) - set(r.pending_flags)
    if unknown or extra:
      raise ExperimentError(f'{r.label}: unknown paper metrics {sorted(unknown)} or flags {sorted(extra)}')
  for c in comparison.claims:
    if {c.run, c.versus} - set(labels) or c.metric not in METRICS or c.kind not in comparison_report.CLAIM_KINDS:
      raise ExperimentError(f'claim {c.text!r}: unknown run, metric or kind')


def edge_flops_per_example(cfg: Any, input_shape: Sequence[int], num_classes: int
                           ) -> tuple[int, int]:
  """FLOPs one edge device spends per example: (training step, extraction pass).

  FedGKT's client trains its ResNet-8 (`models.gkt`, `--gkt_block`) and then
  runs it forward once more over its data to upload the features and logits;
  every other algorithm trains the whole `--model`. Counted with
  `models.flops` (2 FLOPs per multiply-accumulate; training = 3 x forward).
  """
  from models import flops  # pylint: disable=g-import-not-at-top
  from models import gkt  # pylint: disable=g-import-not-at-top
  from models import registry as model_registry  # pylint: disable=g-import-not-at-top

  if cfg.algorithm == 'fedgkt':
    _, _, edge = gkt.build_gkt_edge(input_shape, num_classes, block=cfg.gkt_block)
    return flops.train_flops(edge, input_shape), flops.forward_flops(edge, input_shape)
  model = model_registry.build_model(cfg.model, input_shape, num_classes)
  return flops.train_flops(model, input_shape), 0
