"""The common in-memory dataset container and the errors every loader raises.

Every loader in this package returns an `ArrayDataset`: plain numpy arrays for a
central train/test split, plus an optional natural partition (e.g. EMNIST
writers). Partitioning into clients and wrapping into TFF types happens later
(`datasets.partition`, `datasets.federated`), so loaders stay small and
testable.

Errors a user can trigger (a bad name, a missing or corrupt file) are raised as
`DatasetError` / `DatasetFileNotFoundError` with a one-line message, so an entry
point can print `str(err)` instead of a traceback.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Optional

import numpy as np


class DatasetError(ValueError):
  """One-line user error about a dataset: bad name, argument or file content."""


class DatasetFileNotFoundError(FileNotFoundError):
  """One-line error naming the expected file(s), where we looked, the source.

  A `FileNotFoundError` subclass so callers can treat it like any missing file;
  the message is given whole (no errno/filename tuple) so `str(err)` is exactly
  that one line.
  """


@dataclasses.dataclass(frozen=True, eq=False)
class ArrayDataset:
  """A dataset held in memory as numpy arrays.

  Attributes:
    name: Short dataset name, e.g. 'mnist'.
    x_train: float32 features (images NHWC scaled to [0, 1]) or int32 token ids.
    y_train: int64 class labels (int32 target sequences allowed for sequence
      data).
    x_test: Test features, same layout as `x_train`.
    y_test: Test labels, same layout as `y_train`.
    num_classes: Number of classes (or vocabulary size for sequence targets).
    train_groups: Optional natural partition: an int group id per train example.
    test_groups: Optional natural partition: an int group id per test example.
    group_names: Optional names of the groups, indexed by group id.
  """

  name: str
  x_train: np.ndarray
  y_train: np.ndarray
  x_test: np.ndarray
  y_test: np.ndarray
  num_classes: int
  train_groups: Optional[np.ndarray] = None
  test_groups: Optional[np.ndarray] = None
  group_names: Optional[tuple[str, ...]] = None

  def __post_init__(self):
    """Checks that features, labels and groups line up (else a loader bug)."""
    for split, x, y, groups in (
        ('train', self.x_train, self.y_train, self.train_groups),
        ('test', self.x_test, self.y_test, self.test_groups),
    ):
      if len(x) != len(y):
        raise DatasetError(
            f'{self.name}: x_{split} has {len(x)} examples but y_{split} has'
            f' {len(y)}'
        )
      if groups is not None and len(groups) != len(y):
        raise DatasetError(
            f'{self.name}: {split}_groups has {len(groups)} entries but there'
            f' are {len(y)} {split} examples'
        )
    if self.x_train.shape[1:] != self.x_test.shape[1:]:
      raise DatasetError(
          f'{self.name}: train examples have shape {self.x_train.shape[1:]} but'
          f' test examples have shape {self.x_test.shape[1:]}'
      )

  @property
  def input_shape(self) -> tuple[int, ...]:
    """The shape of one example (without the batch dimension)."""
    return tuple(int(d) for d in self.x_train.shape[1:])

  @property
  def has_groups(self) -> bool:
    """Whether the dataset carries a natural partition of its train examples."""
    return self.train_groups is not None


def require_data_dir(data_dir: Optional[str], dataset: str) -> str:
  """Returns `data_dir` if given, else raises why the dataset needs it.

  Args:
    data_dir: The directory passed by the user (may be None).
    dataset: The dataset name, used in the message.

  Returns:
    `data_dir`, with `~` expanded.

  Raises:
    DatasetError: `data_dir` is None or empty.
  """
  if not data_dir:
    raise DatasetError(
        f'dataset {dataset!r} reads local files: --data_dir is required for it'
        ' (no downloads are made)'
    )
  return os.path.expanduser(data_dir)

