"""CIFAR-10 / CIFAR-100 from the local python-version pickle batches.

Accepted layouts, tried in this order for a `data_dir`:

1. the extracted folder: `data_dir/cifar-10-batches-py/data_batch_1..5` and
   `test_batch` (CIFAR-100: `data_dir/cifar-100-python/train` and `test`);
2. the batch files directly in `data_dir`;
3. the tarball in `data_dir`: `cifar-10-python.tar.gz` as distributed or
   `cifar-10-batches-py.tar.gz` (Keras' cache name); `cifar-100-python.tar.gz`.
   It is read with `tarfile` in memory, never extracted to disk.

`data_dir` may also be the path of such a tarball itself.

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


def _find_reader(
    data_dir: str, layout: _Layout
) -> Optional[tuple[Callable[[str], bytes], Callable[[str], str]]]:
  """Returns (read(name) -> bytes, describe(name) -> str) or None if absent."""
  names = layout.train_files + (layout.test_file,)

  def file_reader(folder: str):
    if all(os.path.isfile(os.path.join(folder, n)) for n in names):

      def read(name: str) -> bytes:
        with open(os.path.join(folder, name), 'rb') as f:
          return f.read()

      return read, lambda name: os.path.join(folder, name)
    return None

  def tar_reader(path: str):
    # Reads the needed members into memory and closes the tarball.
    try:
      with tarfile.open(path, 'r:*') as tar:
        members = {
            os.path.basename(m.name): m for m in tar.getmembers() if m.isfile()
        }
        missing = [n for n in names if n not in members]
        if missing:
          raise base.DatasetError(
              f'{layout.label}: tarball {path} lacks {", ".join(missing)}'
          )
        blobs = {n: tar.extractfile(members[n]).read() for n in names}
    except (tarfile.TarError, OSError, EOFError) as e:
      raise base.DatasetError(
          f'{layout.label}: cannot read tarball {path} ({e})'
      ) from None
    return blobs.pop, lambda name: f'{path}:{members[name].name}'

  if os.path.isfile(data_dir):
    return tar_reader(data_dir)
  for folder in (os.path.join(data_dir, layout.folder), data_dir):
    reader = file_reader(folder)
    if reader:
      return reader
  for tarball in layout.tarballs:
    path = os.path.join(data_dir, tarball)
    if os.path.isfile(path):
      return tar_reader(path)
  return None


def _images(batch: dict[bytes, Any], where: str, label: str) -> np.ndarray:
  data = np.asarray(batch[b'data'])
  if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
    raise base.DatasetError(
        f'{label}: {where} data must be (N, 3072) uint8, got shape {data.shape}'
    )
  # Rows are 1024 red, 1024 green, 1024 blue values, each plane row-major.
  return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)


def _load(
    data_dir: Optional[str],
    layout: _Layout,
    label_key: bytes,
    num_classes: int,
    name: str,
) -> base.ArrayDataset:
  """Reads train and test batches of `layout` into an ArrayDataset."""
  data_dir = base.require_data_dir(data_dir, name)
  reader = _find_reader(data_dir, layout)
  if reader is None:
    where = data_dir if os.path.isdir(data_dir) else f'{data_dir} (missing)'
    raise base.DatasetFileNotFoundError(
        f'{layout.label}: expected {layout.folder}/{layout.train_files[0]}'
        f' (+{len(layout.train_files)} more batch file(s)), the batches'
        f' directly, or {" / ".join(layout.tarballs)} in {where};'
        f' {layout.source}'
    )
  read, describe = reader

  def split(files: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for f in files:
      where = describe(f)
      batch = _unpickle(read(f), where, layout.label)
      for key in (b'data', label_key):
        if key not in batch:
          raise base.DatasetError(
              f'{layout.label}: {where} has no {key!r} entry'
          )
      x = _images(batch, where, layout.label)
      y = np.asarray(batch[label_key], dtype=np.int64)
      if y.shape != (len(x),):
        raise base.DatasetError(
            f'{layout.label}: {where} has {len(x)} images but'
            f' {y.size} {label_key.decode()}'
        )
      if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise base.DatasetError(
            f'{layout.label}: {where} {label_key.decode()} must be in'
            f' [0, {num_classes}), found {y.min()}..{y.max()}'
        )
      xs.append(x)
      ys.append(y)
    x = np.concatenate(xs).astype(np.float32) / 255.0
    return x, np.concatenate(ys)

  x_train, y_train = split(layout.train_files)
  x_test, y_test = split((layout.test_file,))
  return base.ArrayDataset(
      name=name,
      x_train=x_train,
      y_train=y_train,
      x_test=x_test,
      y_test=y_test,
      num_classes=num_classes,
  )


def load_cifar10(data_dir: Optional[str]) -> base.ArrayDataset:
  """Loads CIFAR-10 (python version) from a local directory or tarball.

  Args:
    data_dir: Directory with `cifar-10-batches-py/`, the batches, or the
      tarball (see the module docstring); or the tarball's path.

  Returns:
    ArrayDataset 'cifar10': x float32 (N, 32, 32, 3) in [0, 1], y int64 in
    [0, 10); 50,000 train / 10,000 test for the real files.

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
    ArrayDataset 'cifar100' (or 'cifar100_coarse'): x float32 (N, 32, 32, 3)
    in [0, 1], y int64; 50,000 train / 10,000 test for the real files.

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
