"""Counting what a round actually transmits.

Every algorithm reports, per round, how many values and bytes each client uploads
and how many the server broadcasts. A `TransmissionCost` is a plain record; an
aggregator that compresses (RPN, quantization) knows its own cost and implements
`CostedFactory`, and the default (no compression) is `dense_cost`: every value
sent as-is.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np


@dataclasses.dataclass(frozen=True)
class TransmissionCost:
  """Values and bytes sent in one direction by one party in one round."""

  params: int
  bytes: int

  def __add__(self, other: 'TransmissionCost') -> 'TransmissionCost':
    return TransmissionCost(self.params + other.params, self.bytes + other.bytes)

  def times(self, k: int) -> 'TransmissionCost':
    return TransmissionCost(self.params * k, self.bytes * k)


ZERO_COST = TransmissionCost(0, 0)


def traffic_row(upload: TransmissionCost, download: TransmissionCost, clients: int,
                *, prefix: str = '') -> collections.OrderedDict:
  """The traffic columns of a round's metrics row.

  Args:
    upload: what one client uploads in the round.
    download: what one client receives in the round.
    clients: how many clients took part.
    prefix: prepended to every column name (e.g. 'fedavg_' for the cost another
      algorithm would have had).

  Returns:
    OrderedDict(upload_params_per_client=upload.params,
    upload_bytes=upload.bytes * clients, download_params=download.params,
    download_bytes=download.bytes * clients): values per client, bytes of
    the whole round (the run's totals in `summary.json` add the bytes up).
  """
  return collections.OrderedDict([
      (f'{prefix}upload_params_per_client', upload.params),
      (f'{prefix}upload_bytes', upload.bytes * clients),
      (f'{prefix}download_params', download.params),
      (f'{prefix}download_bytes', download.bytes * clients),
  ])


def dense_cost(
    shapes: Iterable[Sequence[int]], bytes_per_value: int = 4
) -> TransmissionCost:
  """Cost of sending tensors of these shapes uncompressed (float32 by default)."""
  params = int(sum(int(np.prod(s, dtype=np.int64)) for s in shapes))
  return TransmissionCost(params=params, bytes=params * bytes_per_value)


@dataclasses.dataclass(frozen=True)
class ValueEncoding:
  """How one tensor's values go on the wire: bits each, plus fixed bytes."""

  bits_per_value: int
  overhead_bytes: int = 0


FLOAT32 = ValueEncoding(bits_per_value=32)


def encoded_bytes(num_values: int, encoding: ValueEncoding) -> int:
  """Bytes for `num_values` values (bit-packed) of a tensor, with its overhead.

  Nothing sent costs nothing: no overhead (e.g. a quantizer's min and max)
  for a tensor none of whose values are sent.
  """
  if num_values == 0:
    return 0
  return -(-num_values * encoding.bits_per_value // 8) + encoding.overhead_bytes


def encoded_cost(num_values: int, encoding: ValueEncoding) -> TransmissionCost:
  return TransmissionCost(num_values, encoded_bytes(num_values, encoding))


def value_encoding(factory: object, shape: Sequence[int]) -> ValueEncoding:
  """The factory's encoding of a tensor (float32 unless it says otherwise)."""
  if factory is not None and hasattr(factory, 'value_encoding'):
    return factory.value_encoding(shape)
  return FLOAT32


# Aggregators whose costs depend on the data or the round (RPN with a filter
# threshold, RPN's full rounds) report each round's under these names, as
# measurements of `next` (summed over the clients for uploads, the broadcast to
# one client for downloads); an algorithm that finds all four uses them for the
# round's row instead of the static costs.
MEASURED_KEYS = ('upload_values', 'upload_bytes', 'download_values', 'download_bytes')


def full_round_column(aggregator_metrics: Any) -> dict[str, int]:
  """`{'rpn_full_round': 0 or 1}` when the aggregator says whether the round
  sent full kernels (RPN with full rounds), else `{}`: a row then shows why
  its traffic differs from its neighbours'."""
  if isinstance(aggregator_metrics, Mapping) and 'full_round' in aggregator_metrics:
    return {'rpn_full_round': int(aggregator_metrics['full_round'])}
  return {}


@runtime_checkable
class CostedFactory(Protocol):
  """An aggregation factory that knows what its clients upload and the server sends.

  These static costs are what the algorithms know before a round runs; when
  the factory's process also reports `MEASURED_KEYS`, the measured values
  override them in every round's row (so a factory whose rounds differ, like
  RPN with full rounds, states the usual round's cost here).
  """

  def upload_cost(self, shapes: Sequence[Sequence[int]]) -> TransmissionCost:
    """Per-client upload for model tensors (trainable weights) of these shapes."""

  def download_cost(self, shapes: Sequence[Sequence[int]]) -> TransmissionCost:
    """Per-client download of the aggregate for tensors of these shapes."""


def initial_download_cost(factory: object, shapes: Sequence[Sequence[int]]) -> TransmissionCost:
  """What a client downloads once, before its first round, besides the per-round costs.

  `shapes`: every weight of the model (trainable and non-trainable). Zero when
  each round's broadcast is the full model (FedAvg, quantized uploads); an
  aggregator whose broadcast is not (RPN broadcasts the pooled average, from
  which a client updates the model it holds) says what it needs
  (`factory.initial_download_cost`).
  """
  if factory is not None and hasattr(factory, 'initial_download_cost'):
    return factory.initial_download_cost(shapes)
  return ZERO_COST
