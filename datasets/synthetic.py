"""A learnable synthetic dataset for fast tests and smoke runs.

Each class has a fixed random prototype (uniform in [0, 1], the range of real
images); an example is its class prototype plus Gaussian noise. With the
defaults the classes are well separated, so a small model learns them in a few
steps, which lets end-to-end tests assert that loss goes down.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from datasets import base


def make_synthetic(
    *,
    num_train: int = 200,
    num_test: int = 50,
    num_classes: int = 10,
    input_shape: Sequence[int] = (8, 8, 1),
    seed: int = 0,
    noise: float = 0.5,
) -> base.ArrayDataset:
  """Makes prototype-plus-noise classification data.

  Labels are balanced: example i of a split has label i % num_classes before a
  seeded shuffle, so class counts differ by at most one.

  Args:
    num_train: Number of train examples (>= 1).
    num_test: Number of test examples (>= 1).
    num_classes: Number of classes (>= 2).
    input_shape: Shape of one example.
    seed: Seed of prototypes, noise and label order.
    noise: Standard deviation of the Gaussian noise (>= 0).

  Returns:
    ArrayDataset 'synthetic': x float32 (N, *input_shape), y int64.

  Raises:
    DatasetError: an argument is out of range.
  """
  input_shape = tuple(int(d) for d in input_shape)
  if num_train < 1 or num_test < 1:
    raise base.DatasetError(
        f'synthetic: num_train and num_test must be >= 1, got {num_train},'
        f' {num_test}'
    )
  if num_classes < 2:
    raise base.DatasetError(
        f'synthetic: num_classes must be >= 2, got {num_classes}'
    )
  if not input_shape or min(input_shape) < 1:
    raise base.DatasetError(
        f'synthetic: input_shape must be non-empty and positive, got'
        f' {input_shape}'
    )
  if noise < 0:
    raise base.DatasetError(f'synthetic: noise must be >= 0, got {noise}')
  if seed < 0:
    raise base.DatasetError(f'synthetic: seed must be >= 0, got {seed}')
  rng = np.random.default_rng(seed)
  prototypes = rng.uniform(0.0, 1.0, size=(num_classes,) + input_shape)

  def split(n: int) -> tuple[np.ndarray, np.ndarray]:
    y = rng.permutation(np.arange(n) % num_classes).astype(np.int64)
    x = prototypes[y] + noise * rng.standard_normal((n,) + input_shape)
    return x.astype(np.float32), y

  x_train, y_train = split(num_train)
  x_test, y_test = split(num_test)
  return base.ArrayDataset(
      name='synthetic',
      x_train=x_train,
      y_train=y_train,
      x_test=x_test,
      y_test=y_test,
      num_classes=num_classes,
  )
