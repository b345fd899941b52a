"""Tests for datasets.federated: client splits, ClientData, client datasets."""

from __future__ import annotations

import collections

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import dataset_options_pb2

from datasets import base
from datasets import federated
from datasets import partition
from datasets import synthetic


def small_data() -> base.ArrayDataset:
  # x encodes the example index so a test can tell examples apart.
  return synthetic.make_synthetic(
      num_train=120, num_test=40, num_classes=4, input_shape=(3,), seed=0
  )


def grouped_data() -> base.ArrayDataset:
  """8 train examples in groups 10, 20, 30; test groups 10, 30, 40."""
  x_train = np.arange(8, dtype=np.float32)[:, None]
  x_test = 100 + np.arange(5, dtype=np.float32)[:, None]
  return base.ArrayDataset(
      name='grouped',
      x_train=x_train,
      y_train=np.array([0, 1, 0, 1, 2, 2, 0, 1], np.int64),
      x_test=x_test,
      y_test=np.array([0, 1, 2, 0, 1], np.int64),
      num_classes=3,
      train_groups=np.array([20, 10, 20, 30, 10, 10, 30, 20]),
      test_groups=np.array([30, 10, 40, 10, 30]),
      group_names=None,
  )


def one_line(err: pytest.ExceptionInfo) -> str:
  assert '\n' not in str(err.value)
  return str(err.value)


# ---------------------------------------------------------- build


def test_build_iid_covers_train_and_matches_histogram():
  data = small_data()
  fd = federated.build_federated_data(
      data, partition='iid', num_clients=5, seed=0
  )
  assert fd.client_ids == tuple(f'client_00{i}' for i in range(5))
  assert fd.num_classes == 4 and fd.input_shape == (3,)
  xs = np.concatenate([fd.train_arrays[c][0] for c in fd.client_ids])
  assert len(xs) == 120
  # Every train example exactly once (rows are distinct floats).
  np.testing.assert_array_equal(
      np.sort(xs[:, 0]), np.sort(data.x_train[:, 0])
  )
  assert [len(fd.train_arrays[c][1]) for c in fd.client_ids] == [24] * 5
  hist = np.stack(
      [np.bincount(fd.train_arrays[c][1], minlength=4) for c in fd.client_ids]
  )
  np.testing.assert_array_equal(fd.label_histogram, hist)
  np.testing.assert_array_equal(fd.central_test[1], data.y_test)


def test_build_matches_partitioner_and_test_follows_train_classes():
  data = small_data()
  fd = federated.build_federated_data(
      data, partition='k_class', num_clients=4, seed=3, classes_per_client=1
  )
  parts = partition.k_class(data.y_train, 4, classes_per_client=1, seed=3)
  for cid, part in zip(fd.client_ids, parts):
    np.testing.assert_array_equal(fd.train_arrays[cid][0], data.x_train[part])
  # One class per client: each client's test set is exactly its class.
  for i, cid in enumerate(fd.client_ids):
    y_test = fd.test_arrays[cid][1]
    assert set(y_test.tolist()) == {i}
    assert len(y_test) == 10
  all_test = np.concatenate([fd.test_arrays[c][0] for c in fd.client_ids])
  assert len(np.unique(all_test[:, 0])) == len(all_test) == 40


def test_build_without_per_client_test():
  fd = federated.build_federated_data(
      small_data(), partition='shards', num_clients=4, seed=0,
      per_client_test=False,
  )
  assert fd.test_arrays is None and fd.test_indices is None


def test_build_natural_groups_and_test_groups():
  fd = federated.build_federated_data(
      grouped_data(), partition='natural', num_clients=None, seed=0
  )
  assert fd.client_ids == ('client_000', 'client_001', 'client_002')
  # Groups 10, 20, 30 in sorted order.
  got = [fd.train_arrays[c][0][:, 0].tolist() for c in fd.client_ids]
  assert got == [[1, 4, 5], [0, 2, 7], [3, 6]]
  # Test group 40 has no train client: it is only in the central test set.
  got = [fd.test_arrays[c][0][:, 0].tolist() for c in fd.client_ids]
  assert got == [[101, 103], [], [100, 104]]
  np.testing.assert_array_equal(
      fd.label_histogram, [[0, 1, 2], [2, 1, 0], [1, 1, 0]]
  )
  # Each client's test split is its positions in the central test set.
  for cid in fd.client_ids:
    np.testing.assert_array_equal(fd.central_test[0][fd.test_indices[cid]], fd.test_arrays[cid][0])


def test_natural_num_clients_must_match():
  with pytest.raises(base.DatasetError) as err:
    federated.build_federated_data(
        grouped_data(), partition='natural', num_clients=5, seed=0
    )
  assert 'has 3 clients' in one_line(err)
  fd = federated.build_federated_data(
      grouped_data(), partition='natural', num_clients=3, seed=0
  )
  assert len(fd.client_ids) == 3


def test_natural_needs_groups_and_unknown_partition():
  with pytest.raises(base.DatasetError) as err:
    federated.build_federated_data(
        small_data(), partition='natural', num_clients=None, seed=0
    )
  assert 'natural groups' in one_line(err)
  with pytest.raises(base.DatasetError) as err:
    federated.build_federated_data(
        small_data(), partition='pathological', num_clients=3, seed=0
    )
  text = one_line(err)
  assert "'pathological'" in text and 'dirichlet' in text and 'natural' in text


def test_partition_errors_pass_through_as_one_line():
  with pytest.raises(partition.PartitionError) as err:
    federated.build_federated_data(
        small_data(), partition='dirichlet', num_clients=3, seed=0, alpha=-1.0
    )
  assert 'alpha' in one_line(err)


def test_emnist_synthetic_natural_end_to_end():
  import tensorflow_federated as tff  # pylint: disable=g-import-not-at-top
  from datasets import emnist  # pylint: disable=g-import-not-at-top

  cd = tff.simulation.datasets.emnist.get_synthetic()
  data = emnist.arrays_from_client_data(cd, cd, 'emnist')
  fd = federated.build_federated_data(
      data, partition='natural', num_clients=2, seed=0
  )
  assert [len(fd.train_arrays[c][1]) for c in fd.client_ids] == [10, 10]
  assert fd.input_shape == (28, 28, 1)
  np.testing.assert_array_equal(fd.label_histogram, np.ones((2, 10)))


# ---------------------------------------------------------- client_dataset


def xy(n: int):
  return np.arange(n, dtype=np.float32)[:, None], np.arange(n, dtype=np.int64)


def batches(ds):
  return [b['y'].numpy() for b in ds]


def test_client_dataset_batch_counts_int_batch_size():
  x, y = xy(25)
  got = batches(
      federated.client_dataset(x, y, batch_size=10, epochs=3, shuffle_seed=0)
  )
  # u = E * ceil(n / B) = 3 * 3 batches, each epoch one full pass.
  assert [len(b) for b in got] == [10, 10, 5] * 3
  ds = federated.client_dataset(x, y, batch_size=10, epochs=3, shuffle_seed=0)
  assert ds.cardinality().numpy() == 9
  epochs = [np.concatenate(got[i : i + 3]) for i in (0, 3, 6)]
  for epoch in epochs:
    np.testing.assert_array_equal(np.sort(epoch), np.arange(25))
  assert not np.array_equal(epochs[0], epochs[1])  # Reshuffled per epoch.


def test_client_dataset_infinite_batch_is_one_batch_per_epoch():
  x, y = xy(25)
  ds = federated.client_dataset(x, y, batch_size=None, epochs=2, shuffle_seed=0)
  got = batches(ds)
  assert [len(b) for b in got] == [25, 25]
  assert ds.element_spec['x'].shape.as_list() == [None, 1]


def test_client_dataset_same_seed_same_batches_other_seed_differs():
  x, y = xy(30)

  def make(seed):
    return batches(
        federated.client_dataset(
            x, y, batch_size=7, epochs=2, shuffle_seed=seed
        )
    )

  a, b, c = make(11), make(11), make(12)
  assert all(np.array_equal(p, q) for p, q in zip(a, b))
  assert not all(np.array_equal(p, q) for p, q in zip(a, c))
  # Independent of TF's global seed.
  tf.random.set_seed(1234)
  d = make(11)
  assert all(np.array_equal(p, q) for p, q in zip(a, d))


def test_client_dataset_x_and_y_stay_paired_and_map_fn_applies():
  x, y = xy(12)

  def plus_one(element, seed):
    assert seed.shape == (2,) and seed.dtype == tf.int64
    return collections.OrderedDict(x=element['x'] + 1.0, y=element['y'])

  ds = federated.client_dataset(
      x, y, batch_size=5, epochs=1, shuffle_seed=3, map_fn=plus_one
  )
  for b in ds:
    np.testing.assert_array_equal(b['x'].numpy()[:, 0], b['y'].numpy() + 1.0)


def test_client_dataset_per_example_seeds_make_augmentation_reproducible():
  x, y = xy(10)

  def jitter(element, seed):
    noise = tf.random.stateless_uniform(tf.shape(element['x']), seed)
    return collections.OrderedDict(x=element['x'] + noise, y=element['y'])

  make = lambda s: [b['x'].numpy() for b in federated.client_dataset(
      x, y, batch_size=4, epochs=2, shuffle_seed=s, map_fn=jitter)]
  a, b, c = make(1), make(1), make(2)
  assert all(np.array_equal(p, q) for p, q in zip(a, b))
  assert not all(np.array_equal(p, q) for p, q in zip(a, c))
  # The two epochs draw different noise for the same examples.
  assert not np.allclose(np.sort(np.concatenate(a[:3]).ravel()), np.sort(np.concatenate(a[3:]).ravel()))


def test_client_dataset_survives_graph_serialization():
  # TFF ships client datasets to its runtime as serialized graphs.
  x, y = xy(9)
  ds = federated.client_dataset(x, y, batch_size=4, epochs=2, shuffle_seed=5)
  graph = tf.raw_ops.DatasetToGraphV2(
      input_dataset=tf.data.experimental.to_variant(ds)
  )
  restored = tf.data.experimental.from_variant(
      tf.raw_ops.DatasetFromGraph(graph_def=graph), structure=ds.element_spec
  )
  a, b = batches(ds), batches(restored)
  assert len(a) == len(b) == 6
  assert all(np.array_equal(p, q) for p, q in zip(a, b))


def test_client_dataset_tells_its_runtime_to_skip_rewrites_and_autotuning():
  # The options travel in the serialized graph (what the TFF worker runs): each
  # client's iterator then starts without tf.data's graph rewrite and autotuner.
  x, y = xy(9)
  ds = federated.client_dataset(x, y, batch_size=4, epochs=2, shuffle_seed=5)
  graph = tf.compat.v1.GraphDef.FromString(tf.raw_ops.DatasetToGraphV2(
      input_dataset=tf.data.experimental.to_variant(ds)).numpy())
  nodes = [n for n in graph.node if n.op == 'OptionsDataset']
  assert len(nodes) == 1
  options = dataset_options_pb2.Options.FromString(nodes[0].attr['serialized_options'].s)
  assert options.optimization_options.apply_default_optimizations is False
  assert options.autotune_options.enabled is False


@pytest.mark.parametrize(
    'kwargs, message',
    [
        (dict(batch_size=0, epochs=1), 'batch_size'),
        (dict(batch_size=2, epochs=0), 'epochs'),
    ],
)
def test_client_dataset_rejects_bad_arguments(kwargs, message):
  x, y = xy(4)
  with pytest.raises(base.DatasetError) as err:
    federated.client_dataset(x, y, shuffle_seed=0, **kwargs)
  assert message in one_line(err)


def test_round_seed():
  expected = int(np.random.SeedSequence([7, 3, 2]).generate_state(1)[0])
  assert federated.round_seed(7, 3, 2) == expected
  seeds = {
      federated.round_seed(7, r, c) for r in range(10) for c in range(10)
  }
  assert len(seeds) == 100
  assert all(isinstance(s, int) and 0 <= s < 2**32 for s in seeds)
