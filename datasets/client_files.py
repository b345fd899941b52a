"""Client arrays on disk, read by the TFF worker instead of shipped in every request.

A `tf.data.Dataset` built from numpy arrays embeds them as graph constants, and
TFF serializes a client's dataset into the request of every round: the request
grows with the data (an MNIST client of 600 images is 1.9 MB of float32 per
round, a CIFAR client of 25,000 images 300 MB, past TFF's 100 MiB limit for a
serialized dataset). Here each client's x and y are written once, raw, as
files; a client's dataset reads them inside its graph (`tf.io.read_file` +
`tf.io.decode_raw`), so a request holds the file paths and the round's example
order only, whatever the client's size. Images stay uint8 on disk and in the
request; the pipeline converts them (`datasets.preprocessing`).

The executor must see the same file system as the driver: true for FedSuite's
local worker, and for remote workers on shared storage.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import threading
from collections.abc import Mapping
from typing import Optional

import numpy as np
import tensorflow as tf


@dataclasses.dataclass(frozen=True)
class ArrayFile:
  """A raw (headerless, C-order, little-endian) array file and how to read it back."""

  path: str
  dtype: str
  shape: tuple[int, ...]

  def read(self) -> tf.Tensor:
    """The array as a tensor, read when the dataset runs (inside its graph)."""
    raw = tf.io.read_file(self.path)
    if int(np.prod(self.shape)) == 0:
      return tf.zeros(self.shape, tf.as_dtype(self.dtype))
    values = tf.io.decode_raw(raw, tf.as_dtype(self.dtype), little_endian=True)
    return tf.reshape(values, self.shape)

  def load(self) -> np.ndarray:
    """The array as numpy (driver side)."""
    return np.fromfile(self.path, dtype=np.dtype(self.dtype).newbyteorder('<')).reshape(self.shape)


def write_array(path: str, array: np.ndarray) -> ArrayFile:
  """Writes `array` raw to `path` (atomically) and describes it."""
  array = np.ascontiguousarray(array)
  if array.dtype.byteorder == '>':
    array = array.astype(array.dtype.newbyteorder('<'))
  if array.dtype == np.bool_:
    raise ValueError('bool arrays are not supported (decode_raw has no bool); use uint8')
  tmp = f'{path}.tmp'
  array.tofile(tmp)
  os.replace(tmp, path)
  return ArrayFile(path, np.dtype(array.dtype).name, tuple(int(d) for d in array.shape))


class ClientArrayFiles:
  """Each client's (x, y) as two raw files under `directory`, written on first use.

  `get(client_id)` returns the two `ArrayFile`s; the files of a client are
  written the first time it is asked for (only sampled clients cost disk), and
  reused afterwards. The folder itself is created at the first `get` (files an
  interrupted run left there are removed then), so building this object
  touches no disk; `close()` removes the folder.
  """

  def __init__(self, directory: str, arrays: Mapping[str, tuple[np.ndarray, np.ndarray]]):
    self.directory = directory
    self._arrays = arrays
    self._files: dict[str, tuple[ArrayFile, ArrayFile]] = {}
    self._lock = threading.Lock()  # Next round's inputs are built in another thread.
    self._created = False  # The folder is made (and stale files removed) at first use.

  def __contains__(self, client_id: object) -> bool:
    return client_id in self._arrays

  def num_examples(self, client_id: str) -> int:
    return int(len(self._arrays[client_id][1]))

  def get(self, client_id: str) -> tuple[ArrayFile, ArrayFile]:
    """The client's (x file, y file), writing them on first use (thread-safe)."""
    with self._lock:
      if not self._created:
        if os.path.isdir(self.directory):  # Files of an earlier (interrupted) run.
          shutil.rmtree(self.directory)
        os.makedirs(self.directory)
        self._created = True
      if client_id not in self._files:
        x, y = self._arrays[client_id]
        stem = os.path.join(self.directory, _file_stem(client_id))
        self._files[client_id] = (write_array(f'{stem}.x', x), write_array(f'{stem}.y', y))
      return self._files[client_id]

  def close(self) -> None:
    """Removes the files (idempotent)."""
    with self._lock:
      self._files.clear()
      if self._created:
        shutil.rmtree(self.directory, ignore_errors=True)
        self._created = False

  def __enter__(self) -> 'ClientArrayFiles':
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def _file_stem(client_id: str) -> str:
  """A file-system-safe, unique name for a client id (ids may hold any character)."""
  safe = ''.join(c if c.isalnum() or c in '-_' else '_' for c in client_id)[:80]
  return f'{safe}-{hashlib.sha1(client_id.encode()).hexdigest()[:10]}'


def as_tensor_source(x: 'np.ndarray | ArrayFile') -> tf.Tensor:
  """A tensor for `x`: read from its file inside the graph, or a constant."""
  return x.read() if isinstance(x, ArrayFile) else tf.convert_to_tensor(x)


def describe(x: 'np.ndarray | ArrayFile') -> tuple[Optional[str], tuple[int, ...]]:
  """(dtype name, shape) of an array or an array file."""
  if isinstance(x, ArrayFile):
    return x.dtype, x.shape
  return np.asarray(x).dtype.name, tuple(np.shape(x))
