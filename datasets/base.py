"""The common in-memory dataset container and the errors every loader raises.

Every loader in this package returns an `ArrayDataset`: plain numpy arrays for a
central train/test split, plus an optional natural partition (e.g. EMNIST
writers). Partitioning into clients and wrapping into TFF types happens later
(`datasets.partition`, `datasets.federated`), so loaders stay small and
testable.

Errors a user can trigger (a bad name, a missing or corrupt file) are raised as
`DatasetError` / `DatasetFileNotFoundError` with a one-line message, so an entry
point can print `str(err)` instead of a traceback. `check_pixels` and
`check_labels` are the checks every file loader applies to the arrays it reads
(dtype, shape, NaN, value range), so a bad file fails with its name and what is
wrong instead of training on garbage.
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
    x_train: uint8 images NHWC as stored (MNIST, CIFAR: `datasets.preprocessing`
      scales them to [0, 1] in the pipeline), float32 features, or int32 token ids.
    y_train: int64 class labels (int32 target sequences allowed for sequence
      data).
    x_test: Test features, same layout as `x_train`.
    y_test: Test labels, same layout as `y_train`.
    num_classes: Number of classes (or vocabulary size for sequence targets).
    train_groups: Optional natural partition: an int group id per train example.
    test_groups: Optional natural partition: an int group id per test example.
    group_names: Optional names of the groups, indexed by group id.
    notes: One-line facts about how the data was read that a run should
      report next to its results (an entry point prints them and writes them
      to summary.json): e.g. that CIFAR-10's test set was held out from the
      training batches, or Shakespeare's counts next to the paper's. Empty
      when there is nothing to say.
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
  notes: tuple[str, ...] = ()

  def __post_init__(self):
    """Checks that features, labels and groups line up (else a loader bug)."""
    if not isinstance(self.notes, tuple) or not all(
        isinstance(n, str) and n and '\n' not in n for n in self.notes
    ):
      raise DatasetError(
          f'{self.name}: notes must be a tuple of non-empty one-line strings,'
          f' got {self.notes!r}'
      )
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


def _span(values: np.ndarray) -> str:
  """'lo..hi' of a non-empty numeric array, printed without noise."""
  lo, hi = values.min(), values.max()
  return f'{lo:g}..{hi:g}' if values.dtype.kind == 'f' else f'{lo}..{hi}'


def _check_numbers(
    values: np.ndarray, where: str, expected: str, hint: str = ''
) -> None:
  """Integer dtype, or floats that are finite whole numbers; else one line.

  `hint` ends the message about fractions when all values are in [0, 1].
  """
  if values.dtype.kind not in 'uif':
    raise DatasetError(f'{where} has dtype {values.dtype}; expected {expected}')
  if values.dtype.kind != 'f' or not values.size:
    return
  bad = ~np.isfinite(values)
  if bad.any():
    what = 'NaN' if np.isnan(values).any() else 'infinite values'
    raise DatasetError(
        f'{where} contains {what} ({int(bad.sum())} of {values.size} values);'
        f' expected {expected}'
    )
  fractional = values != np.round(values)
  if fractional.any():
    raise DatasetError(
        f'{where} holds non-integer values (e.g. {values[fractional][0]:g});'
        f' expected {expected}'
        + (hint if values.min() >= 0 and values.max() <= 1 else '')
    )


def check_pixels(
    images: np.ndarray, *, shape: tuple[int, ...], where: str
) -> np.ndarray:
  """Checks raw 8-bit images read from a file; returns them as uint8.

  The pipeline scales pixels by 1/255 (`datasets.preprocessing`), so a file
  must hold the raw values 0..255: an integer array, or a float array of whole
  numbers (a float array already scaled to [0, 1] would otherwise be divided
  by 255 twice, and a NaN would silently reach training).

  Args:
    images: The array as stored in the file.
    shape: The shape of one image, e.g. (28, 28) for MNIST.
    where: Dataset, file (and key) for the message, e.g.
      'MNIST: /data/mnist.npz: x_train'.

  Returns:
    `images` as uint8.

  Raises:
    DatasetError: wrong dtype or shape, NaN/inf, fractions, values outside
      0..255 -- one line naming `where` and what is wrong.
  """
  images = np.asarray(images)
  expected = 'uint8 pixel values 0..255'
  _check_numbers(images, where, expected, ' (already scaled to [0, 1]?)')
  if images.ndim != len(shape) + 1 or images.shape[1:] != tuple(shape):
    raise DatasetError(
        f'{where} has shape {images.shape}; expected (N, '
        f'{", ".join(map(str, shape))})'
    )
  if images.size and (images.min() < 0 or images.max() > 255):
    raise DatasetError(
        f'{where} has values {_span(images)}; expected {expected}'
    )
  return images.astype(np.uint8)


def check_labels(
    labels: np.ndarray, *, num_classes: int, num_examples: int, where: str
) -> np.ndarray:
  """Checks class labels read from a file; returns them as int64.

  Args:
    labels: The array as stored in the file (a list is accepted too).
    num_classes: Labels must be in [0, num_classes).
    num_examples: How many examples they label (one label each).
    where: Dataset, file (and key) for the message.

  Returns:
    `labels` as an int64 vector.

  Raises:
    DatasetError: wrong dtype, count or shape, NaN, fractions, or a label
      outside [0, num_classes) -- one line naming `where` and what is wrong.
  """
  labels = np.asarray(labels)
  expected = f'integer class labels 0..{num_classes - 1}'
  _check_numbers(labels, where, expected)
  if labels.ndim != 1:
    raise DatasetError(
        f'{where} has shape {labels.shape}; expected ({num_examples},), one'
        ' label per image'
    )
  if len(labels) != num_examples:
    raise DatasetError(
        f'{where} holds {len(labels)} labels for {num_examples} images;'
        ' expected one per image'
    )
  if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
    raise DatasetError(
        f'{where} has labels {_span(labels)}; expected {expected}'
    )
  return labels.astype(np.int64)



def subsample(
    data: ArrayDataset,
    *,
    max_train: int = 0,
    max_test: int = 0,
    seed: int = 0,
) -> ArrayDataset:
  """A seeded uniform random subset of the train and/or test examples.

  For quick experiments on a laptop-sized machine (e.g. FedGKT's ResNets on a
  few thousand MNIST images): the same (data, sizes, seed) always gives the
  same subset, examples keep their original relative order, and natural groups
  are subset along with them. The two splits use independent draws, so
  changing `max_test` never changes the training subset. A note says what was
  kept, since the loader's own notes (e.g. Shakespeare's counts) describe the
  full data.

  Args:
    data: The full dataset.
    max_train: Keep at most this many training examples (0 = all).
    max_test: Keep at most this many test examples (0 = all).
    seed: Seed of the draw.

  Returns:
    `data` itself when nothing is cut, else a new `ArrayDataset` with one more
    note ('mnist: a seeded random subset (seed 0) of the examples: 2,500 of
    60,000 train and 10,000 of 10,000 test examples').

  Raises:
    DatasetError: a negative size.
  """
  for name, value in (('max_train', max_train), ('max_test', max_test)):
    if value < 0:
      raise DatasetError(f'{name}={value}: must be >= 0 (0 = all examples)')

  def keep(n: int, limit: int, stream: int) -> Optional[np.ndarray]:
    if limit == 0 or limit >= n:
      return None
    rng = np.random.default_rng([seed, stream])
    return np.sort(rng.choice(n, size=limit, replace=False))

  train_idx = keep(len(data.y_train), max_train, 0)
  test_idx = keep(len(data.y_test), max_test, 1)
  if train_idx is None and test_idx is None:
    return data

  def take(arr: Optional[np.ndarray], idx: Optional[np.ndarray]) -> Optional[np.ndarray]:
    return arr if arr is None or idx is None else arr[idx]

  kept = []
  for split, n, idx in (
      ('train', len(data.y_train), train_idx),
      ('test', len(data.y_test), test_idx),
  ):
    size = n if idx is None else len(idx)
    kept.append(f'{size:,} of {n:,} {split}')
  note = (
      f'{data.name}: a seeded random subset (seed {seed}) of the examples:'
      f' {" and ".join(kept)} examples'
  )
  return dataclasses.replace(
      data,
      notes=data.notes + (note,),
      x_train=take(data.x_train, train_idx),
      y_train=take(data.y_train, train_idx),
      train_groups=take(data.train_groups, train_idx),
      x_test=take(data.x_test, test_idx),
      y_test=take(data.y_test, test_idx),
      test_groups=take(data.test_groups, test_idx),
  )
