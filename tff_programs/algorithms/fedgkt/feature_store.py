"""Where a round's uploaded features wait for the server: RAM or TFRecord files.

Feature maps are large (an MNIST image gives 28x28x16 float32 = 49 KiB), so
clients run one at a time through the client phase. If the round's feature
bytes (sync: all sampled clients; async: one client) fit in
`memory_budget_mb` and TFF's limit on a dataset serialized into a call
(`IN_CALL_LIMIT_BYTES`, 100 MiB less headroom), they stay in RAM and reach the
server as `tf.data.Dataset.from_tensor_slices` (serialized into the call and
copied by the TFF worker: transiently up to ~3x their size); otherwise each
client's (H, Z_c, Y) is written, batched, to a TFRecord file under
`<spill_dir>/round_*` as soon as it arrives (at most one client's features are
in Python memory at a time) and the server reads a `tf.data.TFRecordDataset`
over the files; the folder is deleted after the round (`round_directory`), and
folders a killed process left behind when the next run starts
(`remove_stale_rounds`).

Both paths feed the server identical batches in an identical order: each
client's batches in order, clients interleaved in a seeded random order per
server epoch. Limits: one client's features travel in one gRPC message to the
TFF worker (< 2 GB: ~40k MNIST images per client, `MAX_CLIENT_FEATURE_BYTES`).
"""

from __future__ import annotations

import collections
import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from typing import Any, Optional

import numpy as np
import tensorflow as tf

FLOAT_BYTES = 4
# TFF refuses a dataset argument whose serialized graph exceeds 100 MiB
# (value_serialization's default); in-RAM features are graph constants, so
# rounds holding more than this (less headroom for the graph) spill to disk
# whatever the memory budget.
IN_CALL_LIMIT_BYTES = 96 * 2**20
# One client's features come back from the TFF worker in one gRPC message
# (FedSuite's channels allow 2 GB); checked before a run starts.
MAX_CLIENT_FEATURE_BYTES = 1900 * 10**6


def feature_element_spec(feature_shape: Sequence[int], num_classes: int,
                         label_dtype: tf.dtypes.DType) -> collections.OrderedDict:
  """Spec of a server batch: OrderedDict(h=features, z=client logits, y=labels)."""
  return collections.OrderedDict(
      h=tf.TensorSpec([None, *feature_shape], tf.float32),
      z=tf.TensorSpec([None, num_classes], tf.float32),
      y=tf.TensorSpec([None], label_dtype))


def feature_bytes(num_examples: int, feature_values: int, num_classes: int,
                  label_bytes: int) -> int:
  """Bytes of (H, Z_c, Y) for `num_examples` examples (float32 H and Z_c)."""
  return num_examples * ((feature_values + num_classes) * FLOAT_BYTES + label_bytes)


def exceeds_memory(held_bytes: int, memory_budget_mb: float) -> bool:
  """Whether features of `held_bytes` must spill: above the budget, or above
  what TFF accepts as a dataset serialized into a call."""
  return held_bytes > min(memory_budget_mb * 2**20, IN_CALL_LIMIT_BYTES)


class FeatureStore:
  """The (H, Z_c, Y) clients uploaded this round: in RAM, or spilled to TFRecords.

  Every client's examples are cut into server batches of `batch_size` (never
  mixing clients). In RAM they are numpy arrays served by
  `Dataset.from_tensor_slices(...).batch`; spilled, each client is one TFRecord
  file with one `tf.train.Example` per batch (h, z, y as serialized
  TensorProtos) read by `TFRecordDataset`. The batches are identical.
  """

  def __init__(self, feature_shape: Sequence[int], num_classes: int,
               label_dtype: tf.dtypes.DType, batch_size: int,
               directory: Optional[str] = None):
    self._spec = feature_element_spec(feature_shape, num_classes, label_dtype)
    self._batch_size = int(batch_size)
    self._directory = directory
    self._sources: list[Any] = []
    self.sizes: list[int] = []

  @property
  def spilled(self) -> bool:
    return self._directory is not None

  def add(self, features: np.ndarray, logits: np.ndarray, labels: np.ndarray) -> int:
    """Stores one client's upload; returns its position."""
    n = len(labels)
    if self._directory is None:
      self._sources.append(collections.OrderedDict(h=features, z=logits, y=labels))
    else:
      path = os.path.join(self._directory, f'client_{len(self._sources):05d}.tfrecord')
      with tf.io.TFRecordWriter(path) as writer:
        for start in range(0, n, self._batch_size):
          part = slice(start, start + self._batch_size)
          writer.write(_example(h=features[part], z=logits[part], y=labels[part]))
      self._sources.append(path)
    self.sizes.append(n)
    return len(self._sources) - 1

  def num_batches(self, position: int) -> int:
    return -(-self.sizes[position] // self._batch_size)

  def client_dataset(self, position: int) -> tf.data.Dataset:
    """Client `position`'s server batches, in upload order."""
    source = self._sources[position]
    if self._directory is None:
      return tf.data.Dataset.from_tensor_slices(source).batch(self._batch_size)
    spec = self._spec

    def parse(record):
      fields = tf.io.parse_single_example(
          record, {k: tf.io.FixedLenFeature([], tf.string) for k in spec})
      return collections.OrderedDict(
          (k, tf.ensure_shape(tf.io.parse_tensor(fields[k], s.dtype), s.shape))
          for k, s in spec.items())

    return tf.data.TFRecordDataset([source]).map(parse)

  def training_dataset(self, epochs: int, seed_words: Sequence[int]) -> tf.data.Dataset:
    """`epochs` passes over every client's batches: each client's batches in
    order, clients interleaved in a random order (seeded) drawn per epoch."""
    if len(self._sources) == 1:
      return self.client_dataset(0).repeat(epochs)
    rng = np.random.default_rng(np.random.SeedSequence(list(seed_words)))
    slots = np.repeat(np.arange(len(self._sources), dtype=np.int64),
                      [self.num_batches(i) for i in range(len(self._sources))])
    choices = np.concatenate([rng.permutation(slots) for _ in range(epochs)])
    sources = [self.client_dataset(i).repeat(epochs) for i in range(len(self._sources))]
    return tf.data.Dataset.choose_from_datasets(
        sources, tf.data.Dataset.from_tensor_slices(choices))


@contextlib.contextmanager
def round_directory(spill_dir: Optional[str], round_num: int,
                    spill: bool) -> Iterator[Optional[str]]:
  """A new `round_<round_num>_*` folder for the round's feature files, or None
  when the round keeps its features in RAM (`spill` False).

  The folder is created under `spill_dir` (None: the system's temp folder)
  and deleted when the round ends, whatever happens; `spill_dir` too if this
  created it and nothing else is in it (another run may share it).
  """
  if not spill:
    yield None
    return
  root = spill_dir or tempfile.gettempdir()
  created_root = not os.path.exists(root)
  os.makedirs(root, exist_ok=True)
  workdir = tempfile.mkdtemp(prefix=f'round_{round_num:05d}_', dir=root)
  try:
    yield workdir
  finally:
    shutil.rmtree(workdir, ignore_errors=True)
    if created_root:
      try:
        os.rmdir(root)  # Only if empty (another run may share it).
      except OSError:
        pass


def remove_stale_rounds(spill_dir: Optional[str]) -> None:
  """Deletes `round_*` feature folders a killed process left in `spill_dir`
  (a live round deletes its own folder when it ends, whatever happens)."""
  if not spill_dir or not os.path.isdir(spill_dir):
    return
  for name in os.listdir(spill_dir):
    if name.startswith('round_'):
      shutil.rmtree(os.path.join(spill_dir, name), ignore_errors=True)
  try:
    os.rmdir(spill_dir)  # Only if empty.
  except OSError:
    pass


def _example(**arrays: np.ndarray) -> bytes:
  feature = {k: tf.train.Feature(bytes_list=tf.train.BytesList(
      value=[tf.make_tensor_proto(np.ascontiguousarray(v)).SerializeToString()]))
             for k, v in arrays.items()}
  return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()
