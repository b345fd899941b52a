"""CIFAR-10 / CIFAR-100 from the local python-version pickle batches.

Accepted layouts, tried in this order for a `data_dir`:

1. the extracted folder: `data_dir/cifar-10-batches-py/data_batch_1..5` and
   `test_batch` (optional, see below; CIFAR-100:
   `data_dir/cifar-100-python/train` and `test`);
2. the batch files directly in `data_dir`;
3. the tarball in `data_dir`: `cifar-10-python.tar.gz` as distributed or
   `cifar-10-batches-py.tar.gz` (Keras' cache name); `cifar-100-python.tar.gz`.
   It is read with `tarfile` in memory, never extracted to disk.

`data_dir` may also be the path of such a tarball itself.

Test set: CIFAR-10's official `test_batch` when it is there. A CIFAR-10 folder
or tarball without it (e.g. a copy of the training set only) still loads:
`data_batch_5` is then held out as the test set (40,000 train / 10,000 test
images for the real files), and the dataset's `notes` say so, since such
accuracies are not comparable with results on the official test set.
CIFAR-100 needs its `test` file.

Every batch is checked (pixels: whole numbers 0..255 in an (N, 3072) array,
no NaN; labels: one integer in [0, classes) per image) with a one-line error
naming the file.

The batches are Python pickles. They are read with a restricted unpickler that
only rebuilds numpy arrays and plain containers, so a tampered file cannot run
code.
"""

from __future__ import annotations

import dataclasses
import io
import os
import pickle
import tarfile
from typing import Any, Callable, Optional

import numpy as np

from datasets import base


@dataclasses.dataclass(frozen=True)
class _Layout:
  """Where the batches of one CIFAR variant live."""

  label: str  # Display name, e.g. 'CIFAR-10'.
  folder: str  # Folder inside the tarball / data_dir.
  train_files: tuple[str, ...]
  test_file: str
  tarballs: tuple[str, ...]
  source: str  # Where to get the files, for the error message.
  # The train file held out as the test set when `test_file` is absent (None:
  # `test_file` is required).
  holdout: Optional[str] = None


_CIFAR10 = _Layout(
    label='CIFAR-10',
    folder='cifar-10-batches-py',
    train_files=tuple(f'data_batch_{i}' for i in range(1, 6)),
    test_file='test_batch',
    tarballs=('cifar-10-python.tar.gz', 'cifar-10-batches-py.tar.gz'),
    source=(
        'get cifar-10-python.tar.gz (python version) from'
        ' https://www.cs.toronto.edu/~kriz/cifar.html or keras'
        ' ~/.keras/datasets/cifar-10-batches-py.tar.gz'
    ),
    holdout='data_batch_5',
)
_CIFAR100 = _Layout(
    label='CIFAR-100',
    folder='cifar-100-python',
    train_files=('train',),
    test_file='test',
    tarballs=('cifar-100-python.tar.gz',),
    source=(
        'get cifar-100-python.tar.gz (python version) from'
        ' https://www.cs.toronto.edu/~kriz/cifar.html or keras'
        ' ~/.keras/datasets/cifar-100-python.tar.gz'
    ),
)

# Globals a CIFAR pickle may reference: numpy array reconstruction only.
_SAFE_GLOBALS = frozenset({
    ('numpy.core.multiarray', '_reconstruct'),
    ('numpy.core.multiarray', 'scalar'),
    ('numpy.core.numeric', '_frombuffer'),
    ('numpy', 'ndarray'),
    ('numpy', 'dtype'),
    ('_codecs', 'encode'),
})


class _RestrictedUnpickler(pickle.Unpickler):
  """Unpickles only numpy arrays and builtin containers/scalars."""

  def find_class(self, module: str, name: str) -> Any:
    if (module, name) in _SAFE_GLOBALS:
      return super().find_class(module, name)
    raise pickle.UnpicklingError(f'global {module}.{name} is not allowed')


def _unpickle(raw: bytes, where: str, label: str) -> dict[bytes, Any]:
  """Decodes one batch file's bytes (Python 2 pickles need encoding='bytes')."""
  try:
    batch = _RestrictedUnpickler(io.BytesIO(raw), encoding='bytes').load()
  except Exception as e:  # pylint: disable=broad-except  # Any unpickle error.
    raise base.DatasetError(
        f'{label}: {where} is not a CIFAR python batch ({type(e).__name__}:'
        f' {e})'.replace('\n', ' ')
    ) from None
  if not isinstance(batch, dict):
    raise base.DatasetError(
        f'{label}: {where} is not a CIFAR python batch (a dict was expected,'
        f' got {type(batch).__name__})'
    )
  return batch


@dataclasses.dataclass(frozen=True)
class _Source:
  """The batch files found for a layout, in a folder or a tarball.

  Attributes:
    location: The folder or tarball, for messages.
    names: The batch files present (the train files, maybe the test file).
    read: name -> the file's bytes.
    describe: name -> its path (or tarball:member) for messages.
  """

  location: str
  names: frozenset[str]
  read: Callable[[str], bytes]
  describe: Callable[[str], str]


def _find_source(data_dir: str, layout: _Layout) -> Optional[_Source]:
  """The first folder or tarball holding `layout`'s batches, or None.

  The train files are required; the test file too unless the layout can
  hold out a train file instead (CIFAR-10 without `test_batch`).
  """
  required = layout.train_files + (
      () if layout.holdout else (layout.test_file,)
  )
  wanted = layout.train_files + (layout.test_file,)

  def folder_source(folder: str) -> Optional[_Source]:
    if not all(os.path.isfile(os.path.join(folder, n)) for n in required):
      return None

    def read(name: str) -> bytes:
      with open(os.path.join(folder, name), 'rb') as f:
        return f.read()

    return _Source(
        location=folder,
        names=frozenset(
            n for n in wanted if os.path.isfile(os.path.join(folder, n))
        ),
        read=read,
        describe=lambda name: os.path.join(folder, name),
    )

  def tar_source(path: str) -> _Source:
    # Reads the needed members into memory and closes the tarball.
    try:
      with tarfile.open(path, 'r:*') as tar:
        members = {
            os.path.basename(m.name): m for m in tar.getmembers() if m.isfile()
        }
        missing = [n for n in required if n not in members]
        if missing:
          raise base.DatasetError(
              f'{layout.label}: tarball {path} lacks {", ".join(missing)}'
          )
        blobs = {
            n: tar.extractfile(members[n]).read()
            for n in wanted
            if n in members
        }
    except (tarfile.TarError, OSError, EOFError) as e:
      raise base.DatasetError(
          f'{layout.label}: cannot read tarball {path} ({e})'
      ) from None
    return _Source(
        location=path,
        names=frozenset(blobs),
        read=blobs.pop,
        describe=lambda name: f'{path}:{members[name].name}',
    )

  if os.path.isfile(data_dir):
    return tar_source(data_dir)
  for folder in (os.path.join(data_dir, layout.folder), data_dir):
    source = folder_source(folder)
    if source:
      return source
  for tarball in layout.tarballs:
    path = os.path.join(data_dir, tarball)
    if os.path.isfile(path):
      return tar_source(path)
  return None


def _read_batch(
    source: _Source, name: str, layout: _Layout, label_key: bytes,
    num_classes: int,
) -> tuple[np.ndarray, np.ndarray]:
  """One batch file's images (N, 32, 32, 3) uint8 and int64 labels, checked.

  Raises:
    DatasetError: not a CIFAR batch, a key missing, or arrays of the wrong
      dtype/shape, NaN, pixels outside 0..255, labels outside
      [0, num_classes) -- one line naming the file and what is wrong.
  """
  where = source.describe(name)
  batch = _unpickle(source.read(name), where, layout.label)
  for key in (b'data', label_key):
    if key not in batch:
      raise base.DatasetError(f'{layout.label}: {where} has no {key!r} entry')
  data = base.check_pixels(
      batch[b'data'], shape=(3 * 32 * 32,),
      where=f'{layout.label}: {where}: data',
  )
  labels = base.check_labels(
      batch[label_key], num_classes=num_classes, num_examples=len(data),
      where=f'{layout.label}: {where}: {label_key.decode()}',
  )
  # Rows are 1024 red, 1024 green, 1024 blue values, each plane row-major.
  return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def _load(
    data_dir: Optional[str],
    layout: _Layout,
    label_key: bytes,
    num_classes: int,
    name: str,
) -> base.ArrayDataset:
  """Reads train and test batches of `layout` into an ArrayDataset."""
  data_dir = base.require_data_dir(data_dir, name)
  source = _find_source(data_dir, layout)
  if source is None:
    where = data_dir if os.path.isdir(data_dir) else f'{data_dir} (missing)'
    raise base.DatasetFileNotFoundError(
        f'{layout.label}: expected {layout.folder}/{layout.train_files[0]}'
        f' (+{len(layout.train_files)} more batch file(s)), the batches'
        f' directly, or {" / ".join(layout.tarballs)} in {where};'
        f' {layout.source}'
    )
  if layout.test_file in source.names:
    train_files, test_file = layout.train_files, layout.test_file
  else:
    train_files = tuple(f for f in layout.train_files if f != layout.holdout)
    test_file = layout.holdout

  def split(files: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = zip(*(
        _read_batch(source, f, layout, label_key, num_classes) for f in files
    ))
    return np.concatenate(xs).astype(np.uint8), np.concatenate(ys)

  x_train, y_train = split(train_files)
  x_test, y_test = split((test_file,))
  if test_file == layout.test_file:
    note = (
        f'{name}: test set = the official {test_file} ({len(y_test):,}'
        f' images); train = {len(y_train):,} images'
    )
  else:
    note = (
        f'{name}: no {layout.test_file} in {source.location}, so'
        f' {test_file} ({len(y_test):,} images) is held out as the test set'
        f' and training uses the other {len(train_files)} batches'
        f' ({len(y_train):,} images); accuracies are not comparable with'
        f' results on the official test set'
    )
  return base.ArrayDataset(
      name=name,
      x_train=x_train,
      y_train=y_train,
      x_test=x_test,
      y_test=y_test,
      num_classes=num_classes,
      notes=(note,),
  )


def load_cifar10(data_dir: Optional[str]) -> base.ArrayDataset:
  """Loads CIFAR-10 (python version) from a local directory or tarball.

  Args:
    data_dir: Directory with `cifar-10-batches-py/`, the batches, or the
      tarball (see the module docstring); or the tarball's path.

  Returns:
    ArrayDataset 'cifar10': x uint8 (N, 32, 32, 3) pixels 0..255 (the pipeline
    scales them), y int64 in
    [0, 10); 50,000 train / 10,000 test for the real files with `test_batch`;
    without it, data_batch_1-4 train (40,000) and data_batch_5 tests
    (10,000). Its one note says which test set it is.

  Raises:
    DatasetError: data_dir is None, or a file is corrupt.
    DatasetFileNotFoundError: no accepted layout found.
  """
  return _load(data_dir, _CIFAR10, b'labels', 10, 'cifar10')


_LABEL_MODES = {'fine': (b'fine_labels', 100), 'coarse': (b'coarse_labels', 20)}


def load_cifar100(
    data_dir: Optional[str], *, label_mode: str = 'fine'
) -> base.ArrayDataset:
  """Loads CIFAR-100 (python version) from a local directory or tarball.

  Args:
    data_dir: Directory with `cifar-100-python/`, the `train`/`test` files, or
      `cifar-100-python.tar.gz`; or the tarball's path.
    label_mode: 'fine' (100 classes) or 'coarse' (20 superclasses).

  Returns:
    ArrayDataset 'cifar100' (or 'cifar100_coarse'): x uint8 (N, 32, 32, 3)
    pixels 0..255, y int64; 50,000 train / 10,000 test for the real files.

  Raises:
    DatasetError: bad label_mode, data_dir is None, or a file is corrupt.
    DatasetFileNotFoundError: no accepted layout found.
  """
  if label_mode not in _LABEL_MODES:
    raise base.DatasetError(
        f"cifar100: label_mode must be 'fine' or 'coarse', got {label_mode!r}"
    )
  label_key, num_classes = _LABEL_MODES[label_mode]
  name = 'cifar100' if label_mode == 'fine' else 'cifar100_coarse'
  return _load(data_dir, _CIFAR100, label_key, num_classes, name)
