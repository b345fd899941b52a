"""Options declared once: each field's default, flag help, allowed values and check.

Every section of a run's configuration (data, model, client training, the run
itself) and every algorithm and aggregator owns one frozen `Options` dataclass.
Each field is declared with `option(...)`: its default, the help of its flag
(the flag is the field's name: `--gkt_kd`, `--rpn_threshold`), the values it
allows and a check of its value. From these declarations alone:

* `tff_programs.train` defines its flags (`define_flags`), grouped by section
  in `--help`;
* a flat configuration (flags, `config.json`, a flagfile preset) becomes typed
  options (`Options.from_flat`), validated on construction with one-line
  `ConfigError`s naming the flag, the value and what is allowed;
* options an algorithm does not use are refused when set (`config.validate`).

Cross-field rules of one section live in its `check()` method.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Optional, Union

Check = Callable[[Any], Optional[str]]  # value -> None if fine, else what is allowed


class ConfigError(ValueError):
  """A one-line error about a flag/config value and what is allowed."""


def option(default: Any, help: str, *, allowed: Optional[Sequence[Any]] = None,  # pylint: disable=redefined-builtin
           names: Optional[Iterable[str]] = None, check: Optional[Check] = None) -> Any:
  """A field of an `Options` dataclass.

  Args:
    default: the default value (also the flag's default).
    help: the flag's help text.
    allowed: the values it may take, in the order the error lists them.
    names: the keys of a registry it names (the error says 'unknown' and
      lists them sorted), instead of `allowed`.
    check: value -> None when valid, else a short description of what is
      allowed ('must be an integer >= 1'); the error names the flag and value.
  """
  metadata = {'help': help, 'check': check, 'registry': names is not None,
              'allowed': tuple(sorted(names)) if names is not None else (
                  tuple(allowed) if allowed is not None else None)}
  return dataclasses.field(default=default, metadata=metadata)


def same_as(cls: type, name: str) -> Any:
  """A field declared like `cls`'s field `name` (same default, help, checks):
  for an option several algorithms use, declared once where it belongs."""
  source = cls.__dataclass_fields__[name]
  return dataclasses.field(default=source.default, metadata=source.metadata)


@dataclasses.dataclass(frozen=True)
class Options:
  """Base of option sections: fields checked on construction, then `check()`."""

  # Shown as the section's title in --help (set by subclasses).
  SECTION = ''

  def __init_subclass__(cls, **kwargs):
    """Every section is a frozen dataclass of its `option` fields."""
    super().__init_subclass__(**kwargs)
    dataclasses.dataclass(frozen=True)(cls)

  def __post_init__(self):
    for field in dataclasses.fields(self):
      check_value(field, getattr(self, field.name))
    self.check()

  def check(self) -> None:
    """Cross-field rules of the section (override); raise ConfigError."""

  @classmethod
  def from_flat(cls, flat: Mapping[str, Any]) -> 'Options':
    """The section's options from a flat mapping (missing keys keep defaults)."""
    return cls(**{f.name: flat[f.name] for f in dataclasses.fields(cls) if f.name in flat})

  def flat(self) -> dict[str, Any]:
    return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


def check_value(field: dataclasses.Field, value: Any) -> None:
  """Raises ConfigError (one line: flag, value, what is allowed) for a bad value."""
  allowed = field.metadata.get('allowed')
  if allowed is not None and value not in allowed:
    unknown = 'unknown; ' if field.metadata.get('registry') else ''
    raise ConfigError(f'--{field.name}={value!r}: {unknown}allowed: '
                      f'{", ".join(str(a) for a in allowed)}')
  check = field.metadata.get('check')
  if check is not None:
    problem = check(value)
    if problem:
      raise ConfigError(f'--{field.name}={value}: {problem}')


# ---- checks ---------------------------------------------------------------------


def _is_int(value: Any) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


def int_at_least(low: int, note: str = '') -> Check:
  return lambda v: None if _is_int(v) and v >= low else f'must be an integer >= {low}{note}'


def number_in(low: float, high: float, *, low_open: bool = False, high_open: bool = False,
              note: str = '') -> Check:
  """A finite number in [low, high] (open ends as asked)."""
  def check(v):
    ok = (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
          and (v > low if low_open else v >= low) and (v < high if high_open else v <= high))
    if ok:
      return None
    return f'must be in {"(" if low_open else "["}{low:g}, {high:g}{")" if high_open else "]"}{note}'
  return check


def positive_number(v: Any) -> Optional[str]:
  ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0
  return None if ok else 'must be a positive number'


def optional(check: Check) -> Check:
  return lambda v: None if v is None else check(v)


# ---- flags ---------------------------------------------------------------------


def fields_of(classes: Iterable[type]) -> dict[str, tuple[dataclasses.Field, type]]:
  """Flag name -> (field, first declaring class) over `classes`.

  A flag may be declared by several classes (e.g. `--client_weighting` by the
  algorithms that weight clients) only with the same default.
  """
  found: dict[str, tuple[dataclasses.Field, type]] = {}
  for cls in classes:
    for field in dataclasses.fields(cls):
      if field.name in found:
        first, owner = found[field.name]
        if first.default != field.default:
          raise TypeError(f'option {field.name!r} has default {first.default!r} in '
                          f'{owner.__name__} but {field.default!r} in {cls.__name__}')
        continue
      found[field.name] = (field, cls)
  return found


def _flag_kind(cls: type, name: str) -> str:
  """'bool' | 'integer' | 'float' | 'string' from the field's annotation."""
  hint = typing.get_type_hints(cls)[name]
  args = [a for a in typing.get_args(hint) if a is not type(None)]
  if typing.get_origin(hint) is Union and len(args) == 1:
    hint = args[0]
  return {bool: 'bool', int: 'integer', float: 'float'}.get(hint, 'string')


def define_flags(sections: Sequence[tuple[str, Sequence[type]]], flag_values=None,
                 overrides: Optional[Mapping[str, str]] = None) -> dict[str, str]:
  """Defines one absl flag per option, grouped: [(group title, classes), ...].

  Each group's flags are registered under the group's title (absl's module
  name), which `group_help` prints. A flag declared in an earlier group is not
  defined again. Returns flag name -> group title.

  Args:
    sections: groups in --help order.
    flag_values: absl FlagValues (default: the global FLAGS).
    overrides: flag name -> absl type ('string'), e.g. for batch sizes that
      take 'inf'.
  """
  from absl import flags  # pylint: disable=g-import-not-at-top

  flag_values = flag_values if flag_values is not None else flags.FLAGS
  defined: dict[str, str] = {}
  for title, classes in sections:
    for name, (field, cls) in fields_of(classes).items():
      if name in defined:
        continue
      kind = (overrides or {}).get(name) or _flag_kind(cls, name)
      default = field.default
      if kind == 'string' and default is not None and not isinstance(default, str):
        default = str(default)
      help_text = field.metadata['help']
      allowed = field.metadata.get('allowed')
      if allowed is not None and kind == 'string':
        help_text += f' [{" | ".join(str(a) for a in allowed)}]'
      define = {'bool': flags.DEFINE_bool, 'integer': flags.DEFINE_integer,
                'float': flags.DEFINE_float, 'string': flags.DEFINE_string}[kind]
      define(name, default, help_text, flag_values=flag_values, module_name=title)
      defined[name] = title
  return defined


def group_help(flag_values, titles: Sequence[str]) -> str:
  """--help text: each group's flags under its title (absl's formatting)."""
  parts = []
  for title in titles:
    text = flag_values.module_help(title)
    if text.strip():
      parts.append(text)
  return '\n\n'.join(parts)
