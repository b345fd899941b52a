"""scikit-learn's 8x8 handwritten digits: real data that needs no download.

`sklearn.datasets.load_digits()` ships 1,797 8x8 images (pixel values 0..16)
inside the scikit-learn package, so this is the dataset a default run and an
end-to-end smoke test can use on a machine without network or data files.
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np

from datasets import base


def stratified_split(
    labels: np.ndarray, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
  """Seeded stratified train/test split of example indices (pure numpy).

  The test set has ceil(n * test_fraction) examples (as scikit-learn's
  `train_test_split` does); each class gets a share proportional to its size
  (largest-remainder rounding, ties to the smaller class id), drawn by a seeded
  shuffle within the class. Deterministic for a seed and independent of the
  scikit-learn version.

  Args:
    labels: 1-D int labels.
    test_fraction: Fraction of examples in the test set, in (0, 1).
    seed: Seed of the within-class shuffles.

  Returns:
    (train_indices, test_indices), each sorted ascending.
  """
  n = len(labels)
  n_test = math.ceil(n * test_fraction)
  classes, counts = np.unique(labels, return_counts=True)
  exact = n_test * counts / n
  take = np.floor(exact).astype(np.int64)
  order = np.argsort(-(exact - take), kind='stable')
  take[order[: n_test - take.sum()]] += 1
  rng = np.random.default_rng(seed)
  test = [
      rng.permutation(np.flatnonzero(labels == c))[:k]
      for c, k in zip(classes, take)
  ]
  test_idx = np.sort(np.concatenate(test)).astype(np.int64)
  train_idx = np.setdiff1d(np.arange(n), test_idx).astype(np.int64)
  return train_idx, test_idx


def load_digits(
    data_dir: Optional[str] = None, *, test_fraction: float = 0.2, seed: int = 0
) -> base.ArrayDataset:
  """Loads scikit-learn's digits as an `ArrayDataset`.

  Args:
    data_dir: Ignored (the data ships with scikit-learn); accepted so every
      loader has the same call shape.
    test_fraction: Fraction of the 1,797 images held out for test, in (0, 1).
      At 0.2: 1,437 train / 360 test.
    seed: Seed of the stratified split.

  Returns:
    ArrayDataset 'digits': x float32 (N, 8, 8, 1) in [0, 1] (pixels / 16),
    y int64 in [0, 10).

  Raises:
    DatasetError: test_fraction outside (0, 1) or seed < 0.
  """
  del data_dir  # The data is inside scikit-learn.
  if not 0.0 < test_fraction < 1.0:
    raise base.DatasetError(
        f'digits: test_fraction must be in (0, 1), got {test_fraction}'
    )
  if seed < 0:
    raise base.DatasetError(f'digits: seed must be >= 0, got {seed}')
  import sklearn.datasets  # pylint: disable=g-import-not-at-top  # Slow import.

  bunch = sklearn.datasets.load_digits()
  x = (bunch.images.astype(np.float32) / 16.0)[..., np.newaxis]
  y = bunch.target.astype(np.int64)
  train_idx, test_idx = stratified_split(y, test_fraction, seed)
  return base.ArrayDataset(
      name='digits',
      x_train=x[train_idx],
      y_train=y[train_idx],
      x_test=x[test_idx],
      y_test=y[test_idx],
      num_classes=10,
  )
