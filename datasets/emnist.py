"""TFF's federated EMNIST (LEAF), naturally partitioned by writer.

`tff.simulation.datasets.emnist.load_data(only_digits, cache_dir)` looks for
`emnist_all.sqlite` in `cache_dir` and, if it is missing, downloads
`emnist_all.sqlite.lzma` from Google Cloud Storage. This module checks for the
cache file first, so a missing file is a clear error instead of a network call,
and then converts TFF's `ClientData` into numpy arrays with one group per
writer.

Pixels are kept as TFF stores them: float32 in [0, 1] with 1.0 the background
and 0.0 the ink (the inverse of MNIST).
"""

from __future__ import annotations

import collections.abc
import os
from typing import Any, Optional

import numpy as np

from datasets import base

EMNIST_CACHE_FILE = 'emnist_all.sqlite'
EMNIST_ORIGIN = (
    'https://storage.googleapis.com/tff-datasets-public/emnist_all.sqlite.lzma'
)
_CONVERT_BATCH = 4096


def _client_arrays(
    client_data: Any, client_id: str
) -> tuple[np.ndarray, np.ndarray]:
  """All examples of one client as (pixels (n, 28, 28, 1) f32, labels i64)."""
  xs, ys = [], []
  dataset = client_data.create_tf_dataset_for_client(client_id)
  for batch in dataset.batch(_CONVERT_BATCH).as_numpy_iterator():
    if not isinstance(batch, collections.abc.Mapping) or not {
        'label',
        'pixels',
    } <= set(batch):
      raise base.DatasetError(
          'emnist: client data elements must be mappings with keys label and'
          f' pixels, got {type(batch).__name__}'
      )
    pixels = np.asarray(batch['pixels'], dtype=np.float32)
    xs.append(pixels.reshape(pixels.shape[0], 28, 28, 1))
    ys.append(np.asarray(batch['label']).reshape(-1).astype(np.int64))
  if not xs:
    return np.zeros((0, 28, 28, 1), np.float32), np.zeros(0, np.int64)
  return np.concatenate(xs), np.concatenate(ys)


def arrays_from_client_data(
    train_cd: Any,
    test_cd: Any,
    name: str,
    *,
    num_classes: Optional[int] = None,
) -> base.ArrayDataset:
  """Converts EMNIST-like train/test `ClientData` into an `ArrayDataset`.

  One group per client id: group ids index the sorted union of the train and
  test client ids, and `group_names` holds those ids. Elements must be
  mappings with 'pixels' (28x28 float32) and 'label' (int), as in
  `tff.simulation.datasets.emnist`.

  Args:
    train_cd: `tff.simulation.datasets.ClientData` with the train examples.
    test_cd: `ClientData` with the test examples.
    name: Name of the returned dataset.
    num_classes: Number of classes; None means max label + 1.

  Returns:
    ArrayDataset with x float32 (N, 28, 28, 1), y int64, and
    train_groups/test_groups/group_names set.
  """
  names = tuple(sorted(set(train_cd.client_ids) | set(test_cd.client_ids)))
  group_of = {cid: i for i, cid in enumerate(names)}

  def convert(client_data):
    xs, ys, gs = [], [], []
    for cid in sorted(client_data.client_ids):
      x, y = _client_arrays(client_data, cid)
      xs.append(x)
      ys.append(y)
      gs.append(np.full(len(y), group_of[cid], dtype=np.int64))
    if not xs:
      return (
          np.zeros((0, 28, 28, 1), np.float32),
          np.zeros(0, np.int64),
          np.zeros(0, np.int64),
      )
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(gs)

  x_train, y_train, g_train = convert(train_cd)
  x_test, y_test, g_test = convert(test_cd)
  if num_classes is None:
    num_classes = int(max(y_train.max(initial=0), y_test.max(initial=0))) + 1
  return base.ArrayDataset(
      name=name,
      x_train=x_train,
      y_train=y_train,
      x_test=x_test,
      y_test=y_test,
      num_classes=num_classes,
      train_groups=g_train,
      test_groups=g_test,
      group_names=names,
  )


def load_emnist(
    data_dir: Optional[str], *, only_digits: bool = True
) -> base.ArrayDataset:
  """Loads federated EMNIST from TFF's cache file in `data_dir`.

  Args:
    data_dir: Directory holding `emnist_all.sqlite` (TFF's decompressed cache
      file; TFF's own default cache directory is ~/.tff).
    only_digits: True for the 10-digit version (3,383 writers, 341,873 train
      examples), False for all 62 classes (3,400 writers, 671,585 train).

  Returns:
    ArrayDataset 'emnist' (or 'emnist62'), one group per writer. Converting
    the full dataset runs one tf.data pipeline per writer, so it is slow
    compared with the other loaders.

  Raises:
    DatasetError: data_dir is None.
    DatasetFileNotFoundError: `emnist_all.sqlite` is not in data_dir.
  """
  data_dir = base.require_data_dir(data_dir, 'emnist')
  path = os.path.join(data_dir, EMNIST_CACHE_FILE)
  if not os.path.isfile(path):
    raise base.DatasetFileNotFoundError(
        f'EMNIST: expected {EMNIST_CACHE_FILE} in {data_dir}; it is TFF\'s'
        f' cache file: get {EMNIST_ORIGIN} and decompress it (xz -d) there, or'
        ' copy it from a ~/.tff cache'
    )
  import tensorflow_federated as tff  # pylint: disable=g-import-not-at-top

  train_cd, test_cd = tff.simulation.datasets.emnist.load_data(
      only_digits=only_digits, cache_dir=data_dir
  )
  return arrays_from_client_data(
      train_cd,
      test_cd,
      'emnist' if only_digits else 'emnist62',
      num_classes=10 if only_digits else 62,
  )
