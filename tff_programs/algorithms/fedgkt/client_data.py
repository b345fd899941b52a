"""A FedGKT client's inputs for a round: training batches with Z_s, extraction batches.

The client's training input must pair each example with its pending Z_s (the
server's logits, kept in the client's state in training-data order), so FedGKT
builds its clients' datasets itself: the same seeded per-epoch shuffles and
batches as `datasets.federated.client_dataset` (the FedAvg clients' order)
with z_s gathered alongside. Extraction visits the client's examples in a
seeded per-round permutation (so server batches mix labels even when a
client's data is sorted); Z_s comes back in that order and the algorithm
stores it back in training-data order.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Optional

import numpy as np
import tensorflow as tf

from datasets import federated as federated_lib

INFERENCE_BATCH = 256

TrainMap = Callable[[Any, tf.Tensor], Any]  # (OrderedDict(x, y), int64[2] seed) -> same
EvalMap = Callable[[tf.Tensor], tf.Tensor]


def client_inputs(
    x: Any,
    y: Any,
    server_logits: np.ndarray,
    *,
    num_examples: int,
    seed: int,
    round_num: int,
    index: int,
    batch_size: Optional[int],
    epochs: int,
    train_map: Optional[TrainMap] = None,
    batch_map: Optional[EvalMap] = None,
) -> tuple[tf.data.Dataset, tf.data.Dataset, np.ndarray]:
  """(training dataset with pending Z_s, extraction dataset, permutation).

  The training batches are FedAvg's for this client and round (the same
  seeded shuffles, augmentation seeds and pixel transform) with the pending
  Z_s gathered alongside; the extraction batches visit the client's examples
  in a seeded permutation.

  Args:
    x, y: the client's training arrays, or `client_files.ArrayFile`s that the
      datasets read when they run (then the request holds only the orders,
      seeds and Z_s).
    server_logits: float32 (n, C), the pending Z_s in training-data order.
    num_examples: n, the client's number of training examples.
    seed: the run's seed.
    round_num: the round (1-based).
    index: the client's position among all clients (seeds its shuffles).
    batch_size: client minibatch size (None: the whole client set).
    epochs: E_c.
    train_map: per-example training transform (augmentation), seeded; also
      applied to the extracted examples (seeded per round, as FedGKT's code
      extracts from its augmented training loader).
    batch_map: per-batch training transform used when there is no train_map.

  Returns:
    The training batches OrderedDict(x, y, z), the extraction batches
    OrderedDict(x, y) of `INFERENCE_BATCH` examples, and the extraction order
    (a permutation of range(n)).
  """
  train = federated_lib.client_dataset(
      x, y, batch_size=batch_size, epochs=epochs,
      shuffle_seed=federated_lib.round_seed(seed, round_num, index),
      map_fn=train_map, batch_map=batch_map,
      extras={'z': np.asarray(server_logits, np.float32)})
  rng = np.random.default_rng(np.random.SeedSequence([seed, round_num, index, 1]))
  order = rng.permutation(num_examples)
  seeds = (rng.integers(0, 2**31 - 1, size=(num_examples, 2), dtype=np.int64)
           if train_map is not None else None)

  # One pass in `order`, batches of INFERENCE_BATCH: FedAvg's pipeline shape.
  extract = federated_lib.ordered_dataset(
      x, y, order[None], batch_size=INFERENCE_BATCH, map_fn=train_map, batch_map=batch_map,
      seeds=None if seeds is None else seeds[None])
  return train, extract, order
