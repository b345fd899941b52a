"""MNIST from local files: the original IDX files or Keras' `mnist.npz`.

Never downloads: Keras' `mnist.load_data()` checks a hash and then tries the
network, so the `.npz` container is read directly with numpy instead.
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from typing import Optional

import numpy as np

from datasets import base

IDX_IMAGES_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions.
IDX_LABELS_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension.
IMAGE_SHAPE = (28, 28)

IDX_FILES = (
    'train-images-idx3-ubyte.gz',
    'train-labels-idx1-ubyte.gz',
    't10k-images-idx3-ubyte.gz',
    't10k-labels-idx1-ubyte.gz',
)
NPZ_FILE = 'mnist.npz'
_NPZ_KEYS = ('x_train', 'y_train', 'x_test', 'y_test')
_SOURCE = (
    'get them from the MNIST distribution (the four *-ubyte.gz files) or'
    " keras' mnist.npz cache (~/.keras/datasets/mnist.npz)"
)


def read_idx(path: str, expected_magic: int) -> np.ndarray:
  """Reads an IDX file (gzip-compressed if its name ends in .gz) as uint8.

  The IDX format: a big-endian int32 magic number (0x08 = unsigned byte in the
  third byte, the number of dimensions in the fourth), one big-endian int32 per
  dimension, then the data in C order.

  Args:
    path: The file.
    expected_magic: 2051 for images, 2049 for labels.

  Returns:
    The uint8 array with the header's shape.

  Raises:
    DatasetError: the file is not a valid IDX file of the expected kind.
  """
  try:
    if path.endswith('.gz'):
      with gzip.open(path, 'rb') as f:
        raw = f.read()
    else:
      with open(path, 'rb') as f:
        raw = f.read()
  except (OSError, EOFError, zlib.error) as e:
    raise base.DatasetError(
        f'MNIST: cannot read {path}: corrupt or not gzip ({e})'
    ) from None
  if len(raw) < 4:
    raise base.DatasetError(
        f'MNIST: {path} is too short ({len(raw)} bytes) to be an IDX file'
    )
  (magic,) = struct.unpack('>i', raw[:4])
  if magic != expected_magic:
    kind = 'image' if expected_magic == IDX_IMAGES_MAGIC else 'label'
    raise base.DatasetError(
        f'MNIST: {path} is not an IDX {kind} file: magic number {magic},'
        f' expected {expected_magic}'
    )
  ndim = magic & 0xFF
  header = 4 + 4 * ndim
  if len(raw) < header:
    raise base.DatasetError(f'MNIST: {path} has a truncated IDX header')
  shape = struct.unpack(f'>{ndim}i', raw[4:header])
  expected = int(np.prod(shape))
  if len(raw) - header != expected:
    raise base.DatasetError(
        f'MNIST: {path} holds {len(raw) - header} data bytes but its header'
        f' shape {shape} needs {expected}'
    )
  return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def _find_idx_files(data_dir: str) -> list[Optional[str]]:
  """The path of each IDX file, compressed or not, or None where missing."""
  found = []
  for name in IDX_FILES:
    for candidate in (name, name[: -len('.gz')]):
      path = os.path.join(data_dir, candidate)
      if os.path.isfile(path):
        found.append(path)
        break
    else:
      found.append(None)
  return found


def _to_dataset(
    arrays: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    sources: tuple[str, str, str, str],
) -> base.ArrayDataset:
  """Checks the four arrays and scales the images.

  Args:
    arrays: x_train, y_train, x_test, y_test as read from the files.
    sources: For each array, the file (and npz key) it came from, named in a
      one-line error: dtype, shape, NaN, pixel range and label range are
      checked (`base.check_pixels`, `base.check_labels`).
  """
  where = tuple(f'MNIST: {source}' for source in sources)
  x_train = base.check_pixels(arrays[0], shape=IMAGE_SHAPE, where=where[0])
  y_train = base.check_labels(
      arrays[1], num_classes=10, num_examples=len(x_train), where=where[1]
  )
  x_test = base.check_pixels(arrays[2], shape=IMAGE_SHAPE, where=where[2])
  y_test = base.check_labels(
      arrays[3], num_classes=10, num_examples=len(x_test), where=where[3]
  )

  def images(x):
    return x.astype(np.uint8)[..., np.newaxis]

  return base.ArrayDataset(
      name='mnist',
      x_train=images(x_train),
      y_train=y_train,
      x_test=images(x_test),
      y_test=y_test,
      num_classes=10,
  )


def _load_npz(path: str) -> base.ArrayDataset:
  try:
    with np.load(path, allow_pickle=False) as npz:
      missing = [k for k in _NPZ_KEYS if k not in npz.files]
      if missing:
        raise base.DatasetError(
            f'MNIST: {path} lacks key(s) {", ".join(missing)}; expected'
            f' {", ".join(_NPZ_KEYS)}'
        )
      arrays = tuple(np.asarray(npz[k]) for k in _NPZ_KEYS)
  except base.DatasetError:
    raise
  except Exception as e:  # pylint: disable=broad-except  # zip/pickle errors.
    raise base.DatasetError(
        f'MNIST: cannot read {path} as an .npz file ({type(e).__name__}:'
        f' {e})'.replace('\n', ' ')
    ) from None
  return _to_dataset(arrays, tuple(f'{path}: {k}' for k in _NPZ_KEYS))


def load_mnist(data_dir: Optional[str]) -> base.ArrayDataset:
  """Loads MNIST from a local directory.

  Reads the four IDX files (`train-images-idx3-ubyte.gz`,
  `train-labels-idx1-ubyte.gz`, `t10k-images-idx3-ubyte.gz`,
  `t10k-labels-idx1-ubyte.gz`, each also accepted uncompressed) if all are
  present, else Keras' `mnist.npz` (keys x_train, y_train, x_test, y_test).

  Args:
    data_dir: Directory holding the files.

  Returns:
    ArrayDataset 'mnist': x uint8 (N, 28, 28, 1) pixels 0..255 (the pipeline
    scales them to [0, 1]: `datasets.preprocessing`),
    y int64 in [0, 10); 60,000 train / 10,000 test for the real files.

  Raises:
    DatasetError: data_dir is None, or a file is corrupt or holds the wrong
      arrays: images not (N, 28, 28) whole numbers 0..255 (an .npz may store
      them as any integer or float dtype, but not NaN or already scaled),
      labels not one integer 0..9 per image. The message names the file (and
      npz key) and what is wrong.
    DatasetFileNotFoundError: neither the IDX files nor mnist.npz are there.
  """
  data_dir = base.require_data_dir(data_dir, 'mnist')
  idx_paths = _find_idx_files(data_dir)
  if all(idx_paths):
    arrays = tuple(
        read_idx(path, magic)
        for path, magic in zip(
            idx_paths, (IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC) * 2
        )
    )
    return _to_dataset(arrays, tuple(idx_paths))
  npz_path = os.path.join(data_dir, NPZ_FILE)
  if os.path.isfile(npz_path):
    return _load_npz(npz_path)
  missing = [name for name, path in zip(IDX_FILES, idx_paths) if path is None]
  if len(missing) == len(IDX_FILES):
    wanted = f'{IDX_FILES[0]} (+{len(IDX_FILES) - 1} more IDX files)'
  else:
    wanted = f'the missing IDX file(s) {", ".join(missing)}'
  where = data_dir if os.path.isdir(data_dir) else f'{data_dir} (missing)'
  raise base.DatasetFileNotFoundError(
      f'MNIST: expected {wanted} or {NPZ_FILE} in {where}; {_SOURCE}'
  )
