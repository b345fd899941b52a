"""Model-update aggregators by name, with their options: `--aggregator=mean | quantized | rpn | rpn+quantized`.

An aggregator spec is a name, its options section and a builder
`(options, kinds, inner) -> factory` (a `tff.aggregators` weighted factory,
None for TFF's weighted mean). `--aggregator` stacks them outermost first:
`rpn+quantized` is RPN pooling whose pooled residuals are quantized (RPN +
8-bit); the stack applies to whatever the algorithm federates (FedAvg's whole
model, FedPer's base layers). `--algorithm=rpn` is the RPN paper's preset: it
puts RPN around the chosen aggregator itself.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Optional

import tensorflow as tf

from compression import quantization
from compression import rpn
from compression import rpn_aggregator
from tff_programs import options
from tff_programs.options import ConfigError, option


class QuantizationOptions(options.Options):
  """Uniform b-bit quantization of the clients' uploads (the 8-bit baseline)."""

  SECTION = 'Aggregator: quantized'

  quantization_bits: int = option(8, 'quantized aggregator: bits per uploaded value.',
                                  check=lambda v: None if isinstance(v, int) and 1 <= v <= 16 else 'must be in [1, 16]')
  quantization_threshold: int = option(20000, 'quantized aggregator: only tensors with more values than this are quantized.',
                                       check=options.int_at_least(0))
  quantization_stochastic: bool = option(False, "quantized aggregator: TFF's unbiased stochastic rounding (its random numbers are unseeded: runs are then not reproducible) instead of rounding to the nearest level.")


class RPNOptions(options.Options):
  """Residual pooling of conv kernels (Huang et al. 2020) as an aggregator."""

  SECTION = 'Aggregator: rpn'

  rpn_threshold: float = option(0.0, 'rpn: send only conv filters whose |sum of residual kernel elements| exceeds this (0 = all filters).',
                                check=lambda v: None if v >= 0 else 'must be >= 0 (0 = send every filter)')
  rpn_full_every: int = option(0, 'rpn: every K-th round clients send, and the server broadcasts, full unpooled '
                               "kernels (their spatial pattern); the other rounds are pooled (0 = never, the paper's RPN).",
                               check=options.int_at_least(0, ' (0 = never)'))


class NoOptions(options.Options):
  SECTION = ''


Kinds = Optional[Sequence[str]]
Factory = Any  # tff.aggregators.WeightedAggregationFactory or None (weighted mean)


@dataclasses.dataclass(frozen=True)
class AggregatorSpec:
  """A `--aggregator` name: its options and how to build it around an inner one."""

  name: str
  options: type
  build: Callable[[Any, Kinds, Factory], Factory]
  description: str


def _quantized(opts: QuantizationOptions, kinds: Kinds, inner: Factory) -> Factory:
  del kinds
  if inner is not None:
    raise ConfigError('--aggregator: quantized must be the innermost aggregator (e.g. rpn+quantized)')
  return quantization.QuantizedMeanFactory(bits=opts.quantization_bits, threshold=opts.quantization_threshold,
                                           stochastic=opts.quantization_stochastic)


def _rpn(opts: RPNOptions, kinds: Kinds, inner: Factory) -> Factory:
  return rpn_aggregator.RPNFactory(inner, threshold=opts.rpn_threshold, kinds=kinds,
                                   full_every=opts.rpn_full_every)


AGGREGATORS: dict[str, AggregatorSpec] = {spec.name: spec for spec in (
    AggregatorSpec('mean', NoOptions, lambda opts, kinds, inner: inner, "TFF's weighted mean (no compression)"),
    AggregatorSpec('quantized', QuantizationOptions, _quantized, 'uniform b-bit quantization of uploads'),
    AggregatorSpec('rpn', RPNOptions, _rpn, 'residual pooling of conv kernels (Huang et al. 2020)'),
)}


def parse(value: str) -> list[str]:
  """'rpn+quantized' -> ['rpn', 'quantized'] (outermost first); one-line ConfigError."""
  names = [n.strip() for n in value.split('+')]
  for name in names:
    if name not in AGGREGATORS:
      raise ConfigError(f'--aggregator={value!r}: unknown {name!r}; allowed: '
                        f'{", ".join(sorted(AGGREGATORS))}, stacked with + (e.g. rpn+quantized)')
  if len(set(names)) != len(names) or ('mean' in names and len(names) > 1):
    raise ConfigError(f'--aggregator={value!r}: each aggregator at most once; mean alone')
  return names


def option_classes(value: str) -> list[type]:
  """The options sections the aggregators of `value` use."""
  return [AGGREGATORS[name].options for name in parse(value) if AGGREGATORS[name].options is not NoOptions]


def build(value: str, flat: Mapping[str, Any], template: Optional[tf.keras.Model] = None) -> Factory:
  """The factory stack of `--aggregator=value` (None: TFF's weighted mean).

  `template` (the Keras model) gives RPN each trainable tensor's kind (conv,
  depthwise, dense); an algorithm federating a subset of the tensors narrows
  the factory with `for_tensors`.
  """
  kinds = rpn.kinds_from_keras(template) if template is not None else None
  factory = None
  for name in reversed(parse(value)):
    spec = AGGREGATORS[name]
    factory = spec.build(spec.options.from_flat(flat), kinds, factory)
  return factory
