"""A run's whole configuration: one flat `ExperimentConfig`, generated from the sections.

Every option is declared once, in its section: the common ones in
`tff_programs.sections`, each algorithm's next to it (`FedAvgOptions` in
`algorithms/fedavg.py`, ...), each aggregator's in `tff_programs.aggregators`.
`ExperimentConfig` is the flat frozen dataclass of all of them (plus
`--algorithm` and `--aggregator`): what flags, flagfile presets, `config.json`,
`reproduce` and `--resume` read and write, unchanged in shape. Typed sections
come back out of it with `cfg.section(SectionClass)`.

`validate(cfg)` checks every section the chosen algorithm and aggregators use
(one-line `ConfigError`s naming the flag) and refuses a non-default value of
any option they do not use, so a flag never silently does nothing.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from collections.abc import Mapping, Sequence
from typing import Any, Optional

from tff_programs import aggregators as aggregator_registry
from tff_programs import options
from tff_programs import sections
from tff_programs.algorithms import ALGORITHMS
from tff_programs.options import ConfigError, option

parse_batch_size = sections.parse_batch_size


class SetupOptions(options.Options):
  """Which algorithm, with which aggregator."""

  SECTION = 'Algorithm and aggregator'

  algorithm: str = option('fedavg', 'Federated algorithm: ' + '; '.join(
      f'{name} ({spec.description})' for name, spec in ALGORITHMS.items()) + '.', names=ALGORITHMS)
  aggregator: str = option('mean', 'Model-update aggregator, stacked outermost first with +: ' + '; '.join(
      f'{name} ({spec.description})' for name, spec in aggregator_registry.AGGREGATORS.items())
      + '. rpn+quantized = RPN + 8-bit. With --algorithm=rpn: what aggregates the pooled residuals.',
      check=lambda v: aggregator_registry.parse(v) and None)


# Sections every run uses, in --help order; then the per-algorithm and per-aggregator ones.
RUN_SECTIONS = (SetupOptions, sections.DataOptions, sections.ModelOptions,
                sections.ClientTrainingOptions, sections.RunOptions, sections.ExecutorOptions)


def all_sections() -> list[type]:
  """Every options class, in --help order (a flag declared twice appears once)."""
  found = list(RUN_SECTIONS)
  for spec in ALGORITHMS.values():
    if spec.options not in found:
      found.append(spec.options)
  for spec in aggregator_registry.AGGREGATORS.values():
    if spec.options is not aggregator_registry.NoOptions and spec.options not in found:
      found.append(spec.options)
  return found


def _config_fields() -> list[tuple[str, Any, dataclasses.Field]]:
  fields = []
  for name, (field, cls) in options.fields_of(all_sections()).items():
    fields.append((name, typing.get_type_hints(cls)[name],
                   dataclasses.field(default=field.default, metadata=field.metadata)))
  return fields


class _ConfigMethods:
  """The flat configuration's conveniences (mixed into `ExperimentConfig`)."""

  @property
  def batch(self) -> Optional[int]:
    """B as an int, or None for B=inf (the whole client dataset as one batch)."""
    return parse_batch_size(self.batch_size)

  @property
  def resolved_run_name(self) -> str:
    if self.run_name:
      return self.run_name
    b = 'inf' if self.batch is None else self.batch
    return (
        f'{self.algorithm}-{self.dataset}-{self.model}-{self.partition}'
        f'-K{self.num_clients}-C{self.client_fraction:g}-E{self.local_epochs}-B{b}'
        f'-lr{self.client_learning_rate:g}-seed{self.seed}'
    )

  @property
  def run_dir(self) -> str:
    return os.path.join(self.output_dir, self.resolved_run_name)

  def to_json(self) -> dict[str, Any]:
    d = dataclasses.asdict(self)
    d['batch_size'] = 'inf' if self.batch is None else self.batch
    return d

  def section(self, cls: type) -> Any:
    """The typed options of section `cls` (validated on construction)."""
    return cls.from_flat(dataclasses.asdict(self))


ExperimentConfig = dataclasses.make_dataclass(
    'ExperimentConfig', _config_fields(), bases=(_ConfigMethods,), frozen=True,
    namespace={'__doc__': 'Every setting of a run (each is a `--flag` of `tff_programs.train`); '
                          'see `tff_programs.config`.',
               '__module__': __name__})


def sections_used(cfg: Any) -> list[type]:
  """The options sections `cfg`'s algorithm and aggregators read."""
  spec = ALGORITHMS[cfg.algorithm]
  used = [SetupOptions, sections.DataOptions, sections.ClientTrainingOptions, sections.RunOptions,
          sections.ExecutorOptions, spec.options]
  if spec.uses_model:
    used.append(sections.ModelOptions)
  if spec.uses_aggregator:
    used += aggregator_registry.option_classes(cfg.aggregator)
  return used


def _users(name: str) -> str:
  """Which algorithms / aggregators use option `name` (for the refusal's message)."""
  users = [f'--algorithm={n}' for n, spec in ALGORITHMS.items()
           if name in spec.options.__dataclass_fields__]
  users += [f'--aggregator={n}' for n, spec in aggregator_registry.AGGREGATORS.items()
            if name in spec.options.__dataclass_fields__]
  if name == 'model':
    users = ['every algorithm but those with their own models']
  return ', '.join(users)


def validate(cfg: Any) -> None:
  """Raises ConfigError (one line: flag, value, what is allowed) on bad settings."""
  SetupOptions.from_flat(dataclasses.asdict(cfg))
  spec = ALGORITHMS[cfg.algorithm]
  if not spec.uses_aggregator and cfg.aggregator != 'mean':
    raise ConfigError(f'--aggregator={cfg.aggregator!r}: {cfg.algorithm} exchanges features and '
                      'logits, not model updates; allowed: mean')
  for cls in all_sections():  # Every value is checked, used or not...
    cfg.section(cls)
  used = sections_used(cfg)  # ...and set values must be used.
  read = set(options.fields_of(used))
  defaults = ExperimentConfig()
  for name in ExperimentConfig.__dataclass_fields__:
    value = getattr(cfg, name)
    if name not in read and value != getattr(defaults, name):
      raise ConfigError(f'--{name}={value}: --algorithm={cfg.algorithm}'
                        f'{"" if not spec.uses_aggregator else f" --aggregator={cfg.aggregator}"} '
                        f'does not use it (used by {_users(name)}); leave it at {getattr(defaults, name)}')
  if spec.check is not None:
    spec.check(cfg.section(sections.ClientTrainingOptions), cfg.section(spec.options))


def flag_groups() -> list[tuple[str, Sequence[type]]]:
  """(--help title, [section]) in order, for `options.define_flags`."""
  return [(cls.SECTION, [cls]) for cls in all_sections()]


def from_flat(flat: Mapping[str, Any]) -> Any:
  """An ExperimentConfig from a flat mapping (unknown keys ignored)."""
  return ExperimentConfig(**{k: v for k, v in flat.items() if k in ExperimentConfig.__dataclass_fields__})
