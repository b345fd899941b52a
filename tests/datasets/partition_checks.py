"""Checks shared by the partition tests: exact cover, equality, one-line errors."""

from __future__ import annotations

import numpy as np
import pytest

# MNIST-like labels sorted by class: 10 classes x 6,000 examples.
MNIST_LIKE = np.repeat(np.arange(10), 6000)


def assert_exact_cover(parts: list[np.ndarray], num_examples: int) -> None:
  """Every index exactly once; each part sorted int64."""
  for p in parts:
    assert p.dtype == np.int64
    assert np.all(np.diff(p) > 0), 'part not sorted ascending / has repeats'
  all_idx = np.concatenate(parts)
  assert len(all_idx) == num_examples
  np.testing.assert_array_equal(np.sort(all_idx), np.arange(num_examples))


def same_parts(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
  """Whether two partitions have the same parts, in the same order."""
  return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))


def assert_one_line(err: pytest.ExceptionInfo) -> None:
  assert '\n' not in str(err.value)
