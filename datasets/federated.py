"""Federated views of an `ArrayDataset`: client splits and their tf.data pipelines.

`build_federated_data` partitions a dataset's train set into clients (a named
partitioner from `datasets.partition`, or the dataset's natural groups), gives
each client a test set drawn like its train set (for personalization metrics),
and keeps the whole test set for central evaluation. The result holds numpy
arrays (no TFF view: nothing in FedSuite used one).

`client_dataset` turns one client's arrays into the `tf.data.Dataset` a round
of local training consumes: a seeded shuffle per epoch, batches, E epochs.
`round_seed` derives that shuffle seed from (run seed, round, client), so a run
is reproducible and a resumed run sees the same data order.
"""

from __future__ import annotations

import collections
import dataclasses
import types
from typing import Any, Callable, Mapping, Optional

import numpy as np
import tensorflow as tf

from datasets import base
from datasets import client_files
from datasets import partition as partition_lib

NATURAL = 'natural'

ClientArrays = Mapping[str, tuple[np.ndarray, np.ndarray]]


@dataclasses.dataclass(frozen=True, eq=False)
class FederatedData:
  """A dataset split into clients, as numpy arrays with lazy TFF views.

  Attributes:
    name: Dataset name.
    client_ids: 'client_000', ... in partition order (zero-padded to at least
      three digits, wider when there are more than 1,000 clients).
    train_arrays: client id -> (x, y) train examples.
    test_arrays: client id -> (x, y) per-client test examples (possibly empty
      for a client), or None when per-client test sets were not requested.
    central_test: (x, y) of the whole test set.
    label_histogram: (clients, classes) int64 train label counts.
    num_classes: Number of classes.
    input_shape: Shape of one example.
    notes: The dataset's one-line facts a run reports (e.g. which test set
      is used, Shakespeare's counts next to the paper's).
    test_indices: client id -> positions of its test examples in
      `central_test` (what `test_arrays` holds), or None; lets one pass over
      the central test set also score every client's split.
  """

  name: str
  client_ids: tuple[str, ...]
  train_arrays: ClientArrays
  test_arrays: Optional[ClientArrays]
  central_test: tuple[np.ndarray, np.ndarray]
  label_histogram: np.ndarray
  num_classes: int
  input_shape: tuple[int, ...]
  notes: tuple[str, ...] = ()
  test_indices: Optional[Mapping[str, np.ndarray]] = None


def _client_ids(num_clients: int) -> tuple[str, ...]:
  width = max(3, len(str(num_clients - 1)))
  return tuple(f'client_{i:0{width}d}' for i in range(num_clients))


def _histogram(
    labels: np.ndarray, parts: list[np.ndarray], num_classes: int
) -> np.ndarray:
  """Label histogram; for sequence targets, counts of target tokens."""
  if labels.ndim == 1:
    return partition_lib.label_histogram(labels, parts, num_classes)
  hist = np.zeros((len(parts), num_classes), dtype=np.int64)
  for i, part in enumerate(parts):
    hist[i] = np.bincount(labels[part].reshape(-1), minlength=num_classes)
  return hist


def _natural_parts(
    data: base.ArrayDataset, num_clients: Optional[int]
) -> tuple[list[np.ndarray], Optional[list[np.ndarray]]]:
  """Train parts (one per group with train data) and matching test parts."""
  if data.train_groups is None:
    raise base.DatasetError(
        f'partition {NATURAL!r} needs a dataset with natural groups;'
        f' {data.name!r} has none (use iid, shards, k_class or dirichlet)'
    )
  train_groups = np.asarray(data.train_groups)
  parts = partition_lib.natural(train_groups)
  if num_clients not in (None, 0) and num_clients != len(parts):
    raise base.DatasetError(
        f'partition {NATURAL!r} on {data.name!r} has {len(parts)} clients'
        f' (one per group); got num_clients={num_clients} (pass 0 or'
        f' {len(parts)})'
    )
  if data.test_groups is None:
    return parts, None
  group_ids = train_groups[[p[0] for p in parts]]  # Sorted, one per client.
  test_groups = np.asarray(data.test_groups)
  pos = np.searchsorted(group_ids, test_groups)
  pos_clipped = np.minimum(pos, len(group_ids) - 1)
  client = np.where(group_ids[pos_clipped] == test_groups, pos_clipped, -1)
  order = np.argsort(client, kind='stable')
  bounds = np.searchsorted(client[order], np.arange(len(parts) + 1))
  test_parts = [
      np.sort(order[bounds[i] : bounds[i + 1]]).astype(np.int64)
      for i in range(len(parts))
  ]
  return parts, test_parts


def build_federated_data(
    data: base.ArrayDataset,
    *,
    partition: str,
    num_clients: Optional[int],
    seed: int,
    per_client_test: bool = True,
    **partition_options: Any,
) -> FederatedData:
  """Splits `data` into clients.

  Args:
    data: The dataset.
    partition: 'natural' (one client per group of `data.train_groups` with at
      least one train example; per-client test sets from `data.test_groups`)
      or a name in `partition.PARTITIONERS` applied to `data.y_train`
      (per-client test sets from `split_test_like_train`).
    num_clients: Number of clients. For 'natural' it must be None, 0 or the
      number of groups.
    seed: Seed of the partition and of the per-client test split.
    per_client_test: Whether to build per-client test sets.
    **partition_options: Options of the partitioner (shards_per_client,
      classes_per_client, alpha, min_size, max_tries); options of other
      partitioners and None values are ignored.

  Returns:
    The `FederatedData`.

  Raises:
    DatasetError: unknown partition, or 'natural' impossible for `data`.
    PartitionError: the partitioner rejected its arguments.
  """
  allowed = sorted(partition_lib.PARTITIONERS) + [NATURAL]
  if partition not in allowed:
    raise base.DatasetError(
        f'unknown partition {partition!r}; allowed: {", ".join(allowed)}'
    )
  test_parts = None
  if partition == NATURAL:
    parts, test_parts = _natural_parts(data, num_clients)
    if per_client_test and test_parts is None:
      raise base.DatasetError(
          f'{data.name!r} has train groups but no test_groups: pass'
          ' per_client_test=False for its natural partition'
      )
  else:
    if num_clients is None:
      raise base.DatasetError(
          f'partition {partition!r} needs num_clients (e.g. --num_clients=100)'
      )
    parts = partition_lib.PARTITIONERS[partition](
        data.y_train, num_clients, seed=seed, **partition_options
    )
  hist = _histogram(data.y_train, parts, data.num_classes)
  if per_client_test and test_parts is None:
    if data.y_test.ndim != 1:
      raise base.DatasetError(
          f'{data.name!r}: per-client test sets need 1-D class labels; pass'
          ' per_client_test=False'
      )
    test_parts = partition_lib.split_test_like_train(
        data.y_test, hist, seed=seed
    )
  ids = _client_ids(len(parts))
  train_arrays = types.MappingProxyType({
      cid: (data.x_train[p], data.y_train[p]) for cid, p in zip(ids, parts)
  })
  test_arrays = None
  test_indices = None
  if per_client_test:
    test_indices = types.MappingProxyType(
        {cid: np.asarray(p, np.int64) for cid, p in zip(ids, test_parts)})
    test_arrays = types.MappingProxyType({
        cid: (data.x_test[p], data.y_test[p])
        for cid, p in zip(ids, test_parts)
    })
  return FederatedData(
      name=data.name,
      client_ids=ids,
      train_arrays=train_arrays,
      test_arrays=test_arrays,
      central_test=(data.x_test, data.y_test),
      label_histogram=hist,
      num_classes=data.num_classes,
      input_shape=data.input_shape,
      notes=tuple(data.notes),
      test_indices=test_indices,
  )


def client_dataset(
    x: 'np.ndarray | client_files.ArrayFile',
    y: 'np.ndarray | client_files.ArrayFile',
    *,
    batch_size: Optional[int],
    epochs: int,
    shuffle_seed: int,
    map_fn: Optional[Callable[[Any], Any]] = None,
    batch_map: Optional[Callable[[tf.Tensor], tf.Tensor]] = None,
    extras: Optional[Mapping[str, np.ndarray]] = None,
) -> tf.data.Dataset:
  """One client's local-training data: shuffle -> (map) -> batch, E epochs.

  Each epoch is one full pass over the client's n examples in a fresh order,
  so there are E * ceil(n / B) batches (FedAvg's u = E n / B local steps). The
  per-epoch orders are numpy permutations from `shuffle_seed`, independent of
  TF's global seed: the same seed gives identical batches in any process.

  Args:
    x: The client's features: an array (embedded in the dataset's graph) or
      a `client_files.ArrayFile` (read by the graph when it runs: what a TFF
      round should ship, see `datasets.client_files`).
    y: The client's labels (array or `ArrayFile`).
    batch_size: B; None means B = infinity (one batch holding all n examples
      per epoch, i.e. full-batch gradient descent).
    epochs: E, >= 1.
    shuffle_seed: Seed of the per-epoch orders (e.g. from `round_seed`).
    map_fn: Optional per-example transform `map_fn(element, seed)` of
      OrderedDict(x=, y=) and an int64[2] seed for stateless random ops
      (deterministic for a shuffle_seed), applied
      before batching (e.g. data augmentation).
    batch_map: Optional deterministic transform of a batch's x (e.g. uint8
      pixels -> float32 / 255), used when there is no `map_fn`.
    extras: Optional more per-example arrays (n rows each), gathered in the
      same order into the elements under their keys (FedGKT's pending server
      logits); `map_fn` does not see them.

  Returns:
    A dataset of OrderedDict(x=, y=) batches with known cardinality
    E * ceil(n / B).

  Raises:
    DatasetError: mismatched x/y or bad batch_size/epochs.
  """
  x_dtype, x_shape = client_files.describe(x)
  _, y_shape = client_files.describe(y)
  n = x_shape[0]
  if y_shape[0] != n:
    raise base.DatasetError(
        f'client_dataset: x has {n} examples but y has {y_shape[0]}'
    )
  if batch_size is not None and (
      isinstance(batch_size, bool) or batch_size < 1
  ):
    raise base.DatasetError(
        f'batch_size must be >= 1 or None (B=inf), got {batch_size}'
    )
  if isinstance(epochs, bool) or epochs < 1:
    raise base.DatasetError(f'epochs must be >= 1, got {epochs}')
  if shuffle_seed < 0:
    raise base.DatasetError(f'shuffle_seed must be >= 0, got {shuffle_seed}')
  del x_dtype
  rng = np.random.default_rng(shuffle_seed)
  # int32 indices: half the bytes of the request's only per-example content.
  orders = np.stack([rng.permutation(n) for _ in range(epochs)]).astype(np.int32)
  # One stateless-op seed per example and epoch, for reproducible augmentation
  # (drawn always, so the orders stay the same; shipped only with a map_fn).
  example_seeds = rng.integers(0, 2**31 - 1, size=(epochs, n, 2), dtype=np.int64)
  batch = max(n, 1) if batch_size is None else int(batch_size)
  num_batches = epochs * (-(-n // batch))

  return ordered_dataset(x, y, orders, batch_size=batch, map_fn=map_fn, batch_map=batch_map,
                         seeds=example_seeds if map_fn is not None else None, extras=extras)


def ordered_dataset(
    x: 'np.ndarray | client_files.ArrayFile',
    y: 'np.ndarray | client_files.ArrayFile',
    orders: np.ndarray,
    *,
    batch_size: int,
    map_fn: Optional[Callable[[Any], Any]] = None,
    batch_map: Optional[Callable[[tf.Tensor], tf.Tensor]] = None,
    seeds: Optional[np.ndarray] = None,
    extras: Optional[Mapping[str, np.ndarray]] = None,
) -> tf.data.Dataset:
  """Batches of (x, y) visiting the examples in `orders` (one row per pass).

  The pipeline of `client_dataset` (and of FedGKT's feature extraction):
  each row of `orders` is one pass, cut into batches of `batch_size`; with
  `map_fn`, each example is transformed with its stateless seed from `seeds`
  (shape (passes, n, 2)) before batching, else `batch_map` transforms each
  batch's x; `extras` are gathered alongside. Built by a `tf.function`
  traced once per pipeline shape (`_pipeline_builder`).
  """
  n = client_files.describe(x)[1][0]
  orders = np.asarray(orders, np.int32)
  if map_fn is not None and (seeds is None or np.shape(seeds)[:2] != orders.shape):
    raise base.DatasetError('ordered_dataset: a map_fn needs one seed pair per ordered example')
  extras = collections.OrderedDict(sorted((extras or {}).items()))
  for key, values in extras.items():
    if len(values) != n:
      raise base.DatasetError(f'client_dataset: extra {key!r} has {len(values)} rows, not {n}')
  num_batches = orders.shape[0] * (-(-orders.shape[1] // batch_size))
  x_in, x_spec = _source(x)
  y_in, y_spec = _source(y)
  extra_in = collections.OrderedDict((k, np.asarray(v)) for k, v in extras.items())
  builder = _pipeline_builder(
      x_spec, y_spec, tuple((k, v.dtype.name, v.shape[1:]) for k, v in extra_in.items()),
      map_fn, batch_map)
  args = [x_in, y_in, orders, np.int64(batch_size), np.int64(num_batches), extra_in]
  if map_fn is not None:
    args.append(np.asarray(seeds, np.int64))
  return builder(*args)


def _source(a: 'np.ndarray | client_files.ArrayFile') -> tuple[Any, tuple]:
  """(the pipeline's input for `a`, a hashable description of its spec):
  a file path read in the graph, or the array itself (embedded when serialized)."""
  if isinstance(a, client_files.ArrayFile):
    return a.path, ('file', a.dtype, tuple(a.shape[1:]))
  a = np.asarray(a)
  return a, ('array', a.dtype.name, tuple(a.shape[1:]))


_BUILDERS: dict[tuple, Callable[..., tf.data.Dataset]] = {}


def client_pipeline_options() -> tf.data.Options:
  """tf.data options of every client pipeline: no graph rewrites, no autotuning.

  A TFF round starts a fresh iterator of each client's dataset in the worker,
  and with tf.data's defaults each start runs the grappler rewrite of the
  dataset graph and starts the autotuning model and an injected prefetch
  thread (measured with perf in the worker; 20 clients of one MNIST batch a
  round, interleaved runs: 1.1-1.9 s -> 0.78-1.02 s a round, 0.55 s together
  with `model_adapter.placeholder_initial_values`). A client pipeline is a
  gather of whole batches from arrays in memory (or a per-example
  augmentation map): the rewrites and the autotuner win nothing there (the
  MNIST round: 5.3-5.4 s -> 4.2 s, the CIFAR-10 round with augmentation:
  68 s -> 56 s; benchmarks/results/pipeline_lever_ab.json). The batches, and
  so the results, are the same either way.
  """
  options = tf.data.Options()
  options.experimental_optimization.apply_default_optimizations = False
  options.autotune.enabled = False
  return options


def _pipeline_builder(x_spec: tuple, y_spec: tuple, extra_specs: tuple,
                      map_fn: Optional[Callable], batch_map: Optional[Callable]):
  """One `tf.function` per pipeline shape that returns a client's dataset.

  A client's data, orders and batch size are its *arguments*, so the
  pipeline's functions are traced once per process instead of once per
  client and round: building a dataset costs under a millisecond instead of
  ~17 ms, and nothing accumulates (tf.data functions traced per dataset stay
  registered in the eager context: ~0.3 MB a client dataset, measured, so a
  long run grew without bound).
  """
  key = (x_spec, y_spec, extra_specs, map_fn, batch_map)
  if key in _BUILDERS:
    return _BUILDERS[key]

  def spec(source_spec):
    kind, dtype, item = source_spec
    if kind == 'file':
      return tf.TensorSpec([], tf.string)
    return tf.TensorSpec([None, *item], tf.as_dtype(dtype))

  def load(source, source_spec):
    kind, dtype, item = source_spec
    if kind == 'array':
      return source
    values = tf.io.decode_raw(tf.io.read_file(source), tf.as_dtype(dtype), little_endian=True)
    return tf.reshape(values, [-1, *item])

  signature = [spec(x_spec), spec(y_spec), tf.TensorSpec([None, None], tf.int32),
               tf.TensorSpec([], tf.int64), tf.TensorSpec([], tf.int64),
               collections.OrderedDict((k, tf.TensorSpec([None, *item], tf.as_dtype(dtype)))
                                       for k, dtype, item in extra_specs)]
  if map_fn is not None:
    signature.append(tf.TensorSpec([None, None, 2], tf.int64))

  @tf.function(input_signature=signature)
  def build(x_source, y_source, orders, batch, num_batches, extras, seeds=None):
    def epochs_of(x_source, y_source):
      x_t, y_t = load(x_source, x_spec), load(y_source, y_spec)

      def gather(indices):
        element = collections.OrderedDict(
            x=tf.gather(x_t, indices), y=tf.gather(y_t, indices))
        element.update((k, tf.gather(v, indices)) for k, v in extras.items())
        return element

      def mapped_batch(indices):
        element = gather(indices)
        element['x'] = batch_map(element['x'])
        return element

      def mapped_example(element, seed):
        out = map_fn(collections.OrderedDict(x=element['x'], y=element['y']), seed)
        out.update((k, element[k]) for k in extras)
        return out

      def one_epoch(order, epoch_seeds=None):
        indices = tf.data.Dataset.from_tensor_slices(order)
        if map_fn is None:  # Gather whole batches: fewer, larger ops.
          return indices.batch(batch).map(gather if batch_map is None else mapped_batch)
        examples = tf.data.Dataset.zip((indices.map(gather),
                                        tf.data.Dataset.from_tensor_slices(epoch_seeds)))
        return examples.map(mapped_example if extras else map_fn).batch(batch)

      if map_fn is None:
        return tf.data.Dataset.from_tensor_slices(orders).flat_map(one_epoch)
      return tf.data.Dataset.from_tensor_slices((orders, seeds)).flat_map(one_epoch)

    # Files are read when the dataset runs (in the TFF worker): the graph holds
    # paths and orders, not the data.
    dataset = tf.data.Dataset.from_tensors((x_source, y_source)).flat_map(epochs_of)
    dataset = dataset.apply(tf.data.experimental.assert_cardinality(num_batches))
    return dataset.with_options(client_pipeline_options())

  _BUILDERS[key] = build
  return build


def round_seed(seed: int, round_num: int, client_index: int) -> int:
  """A per-(run, round, client) seed: well mixed, reproducible, in [0, 2**32).

  Args:
    seed: The run's seed.
    round_num: The round number.
    client_index: The client's index (e.g. its position in `client_ids`).

  Returns:
    `np.random.SeedSequence([seed, round_num, client_index])`'s first 32-bit
    state word, as a Python int.
  """
  return int(
      np.random.SeedSequence([seed, round_num, client_index]).generate_state(1)[
          0
      ]
  )
