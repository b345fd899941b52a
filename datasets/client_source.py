"""Where an algorithm gets its clients' training data: one object per run.

`ClientDataSource` holds the run's `FederatedData`, its preprocessing, the
clients' B and E and the run's seed, and serves each client's data for a
round:

* `train_dataset(client_id, round_num)`: the client's shuffled, transformed,
  batched E-epoch `tf.data.Dataset` for that round (seeded by run seed,
  round and client: reproducible, and identical after a resume), reading the
  client's arrays from its files inside the TFF worker (`client_files`);
* `arrays(client_id)`: the client's (x, y), as those files (or as arrays when
  the source keeps no files), for algorithms that build other pipelines
  (FedGKT pairs each example with its pending server logits through `extras`).

An algorithm receives it in its `Task` and builds exactly the datasets it uses.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Optional

import numpy as np
import tensorflow as tf

from datasets import client_files
from datasets import federated
from datasets import preprocessing as preprocessing_lib


class ClientDataSource:
  """The run's clients' training data (see the module docstring)."""

  def __init__(self, data: federated.FederatedData, *, preprocessing: preprocessing_lib.Preprocessing,
               seed: int, batch_size: Optional[int], epochs: int,
               files_dir: Optional[str] = None):
    """Args:
      data: the partitioned dataset.
      preprocessing: the dataset's transforms (augmentation, pixel scaling).
      seed: the run's seed (with round and client, it seeds every shuffle).
      batch_size: B (None: the whole client set as one batch).
      epochs: E.
      files_dir: where the clients' array files go (created at first use);
        None keeps the arrays in the datasets' graphs (tests, tiny data).
    """
    self.data = data
    self.preprocessing = preprocessing
    self.seed = int(seed)
    self.batch_size = batch_size
    self.epochs = int(epochs)
    self._index = {cid: i for i, cid in enumerate(data.client_ids)}
    self._files = (client_files.ClientArrayFiles(files_dir, data.train_arrays)
                   if files_dir is not None else None)

  @property
  def client_ids(self) -> tuple[str, ...]:
    return self.data.client_ids

  def num_examples(self, client_id: str) -> int:
    return int(len(self.data.train_arrays[client_id][1]))

  def index(self, client_id: str) -> int:
    """The client's position in `client_ids` (part of its shuffle seeds)."""
    return self._index[client_id]

  def arrays(self, client_id: str) -> tuple[Any, Any]:
    """(x, y) as `client_files.ArrayFile`s read in the worker, or arrays."""
    if self._files is not None:
      return self._files.get(client_id)
    return self.data.train_arrays[client_id]

  def train_dataset(self, client_id: str, round_num: int, *,
                    extras: Optional[Mapping[str, np.ndarray]] = None) -> tf.data.Dataset:
    """The client's local-training batches of round `round_num` (E epochs of B)."""
    x, y = self.arrays(client_id)
    return federated.client_dataset(
        x, y, batch_size=self.batch_size, epochs=self.epochs,
        shuffle_seed=federated.round_seed(self.seed, round_num, self._index[client_id]),
        map_fn=self.preprocessing.train_map, batch_map=self.preprocessing.batch_map,
        extras=extras)

  def close(self) -> None:
    """Removes the clients' files (idempotent)."""
    if self._files is not None:
      self._files.close()

  def __enter__(self) -> 'ClientDataSource':
    return self

  def __exit__(self, *exc) -> None:
    self.close()
