"""What every partition function shares: its error, seeded generator and output format.

Every partitioner (`datasets.partition`) returns `list[np.ndarray]`: one int64
array of example indices per client, sorted ascending (`finish`); so does
`partition_stats.split_test_like_train` for test indices. All randomness comes
from `seeded_rng(seed)` (`np.random.default_rng`), never global state. Bad
arguments are one-line `PartitionError`s. Pure numpy.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np


class PartitionError(ValueError):
  """One-line error: the requested partition is impossible or malformed."""


def seeded_rng(seed: int) -> np.random.Generator:
  """A generator for `seed`, rejecting seeds numpy would reject less clearly."""
  if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
    raise PartitionError(f'seed must be an int, got {seed!r}')
  if seed < 0:
    raise PartitionError(f'seed must be >= 0, got {seed}')
  return np.random.default_rng(int(seed))


def check_int(name: str, value: Any, minimum: Optional[int]) -> int:
  """Returns `value` as an int, or raises if it is not an int >= `minimum`."""
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
    raise PartitionError(f'{name} must be an int, got {value!r}')
  if minimum is not None and value < minimum:
    raise PartitionError(f'{name} must be >= {minimum}, got {value}')
  return int(value)


def as_labels(labels: Any) -> np.ndarray:
  """Returns labels as a 1-D int64 array of non-negative class ids."""
  labels = np.asarray(labels)
  if labels.ndim != 1:
    raise PartitionError(
        f'labels must be a 1-D array of class ids, got shape {labels.shape}'
    )
  if labels.size and not np.issubdtype(labels.dtype, np.integer):
    raise PartitionError(f'labels must be integers, got dtype {labels.dtype}')
  labels = labels.astype(np.int64, copy=False)
  if labels.size and labels.min() < 0:
    raise PartitionError(f'labels must be >= 0, got {labels.min()}')
  return labels


def finish(parts: Sequence[Any]) -> list[np.ndarray]:
  """Sorted int64 index arrays, the common output format."""
  return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]
