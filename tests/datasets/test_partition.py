"""Tests for datasets.partition: coverage, sizes, determinism, exact counts."""

from __future__ import annotations

import numpy as np
import pytest

from datasets import partition

from tests.datasets.partition_checks import MNIST_LIKE, assert_exact_cover, assert_one_line, same_parts


# ---------------------------------------------------------------- iid


def test_iid_mnist_sizes_100_by_600():
  parts = partition.iid(60000, 100, seed=0)
  assert len(parts) == 100
  assert {len(p) for p in parts} == {600}
  assert_exact_cover(parts, 60000)


def test_iid_not_divisible_sizes_differ_by_at_most_one():
  parts = partition.iid(10, 3, seed=1)
  assert [len(p) for p in parts] == [4, 3, 3]
  assert_exact_cover(parts, 10)


def test_iid_deterministic_for_seed_and_differs_across_seeds():
  a = partition.iid(1000, 7, seed=3)
  b = partition.iid(1000, 7, seed=3)
  c = partition.iid(1000, 7, seed=4)
  assert same_parts(a, b)
  assert not same_parts(a, c)


@pytest.mark.parametrize('num_clients', [0, -1, 11])
def test_iid_rejects_bad_num_clients(num_clients):
  with pytest.raises(partition.PartitionError) as err:
    partition.iid(10, num_clients, seed=0)
  assert_one_line(err)
  assert 'num_clients' in str(err.value) or 'fewer examples' in str(err.value)


def test_negative_seed_is_a_partition_error():
  with pytest.raises(partition.PartitionError, match='seed must be >= 0'):
    partition.iid(10, 2, seed=-1)


# ---------------------------------------------------------------- shards


def test_shards_fedavg_mnist_two_shards_of_300_each():
  parts = partition.shards(MNIST_LIKE, 100, shards_per_client=2, seed=0)
  assert len(parts) == 100
  assert_exact_cover(parts, 60000)
  hist = partition.label_histogram(MNIST_LIKE, parts, 10)
  # 6,000 / 300 = 20 single-label shards per class, so a client's counts per
  # label are whole shards: exactly two shards of 300 -> counts in {0,300,600}.
  assert set(np.unique(hist)) <= {0, 300, 600}
  assert np.all(hist.sum(axis=1) == 600)
  assert np.all((hist > 0).sum(axis=1) <= 2)
  # Each class's 20 shards are all dealt out.
  np.testing.assert_array_equal(hist.sum(axis=0) // 300, [20] * 10)


def test_shards_tiny_exact_shard_contents():
  # Sorted by label: class 0 = {1, 3}, class 1 = {0, 2}, class 2 = {4, 5};
  # three shards of two, one per client, whatever the seed.
  labels = np.array([1, 0, 1, 0, 2, 2])
  for seed in range(5):
    parts = partition.shards(labels, 3, shards_per_client=1, seed=seed)
    got = sorted(tuple(p.tolist()) for p in parts)
    assert got == [(0, 2), (1, 3), (4, 5)]


def test_shards_not_divisible_covers_everything():
  labels = np.arange(10) % 3
  parts = partition.shards(labels, 3, shards_per_client=2, seed=0)
  assert_exact_cover(parts, 10)
  # 6 shards of sizes 2,2,2,2,1,1 -> client sizes between 2 and 4.
  assert all(2 <= len(p) <= 4 for p in parts)


def test_shards_deterministic_and_seed_dependent():
  a = partition.shards(MNIST_LIKE[::10], 20, seed=5)
  b = partition.shards(MNIST_LIKE[::10], 20, seed=5)
  c = partition.shards(MNIST_LIKE[::10], 20, seed=6)
  assert same_parts(a, b)
  assert not same_parts(a, c)


def test_shards_impossible_is_one_line_error():
  with pytest.raises(partition.PartitionError) as err:
    partition.shards(np.zeros(5, int), 3, shards_per_client=2, seed=0)
  assert_one_line(err)
  assert 'shards not possible' in str(err.value)
  assert '6 shards' in str(err.value)


# ---------------------------------------------------------------- k_class


def test_k_class_assignment_is_cyclic_blocks():
  got = partition.k_class_assignment(10, 10, 2)
  assert [a.tolist() for a in got[:6]] == [
      [0, 1], [2, 3], [4, 5], [6, 7], [8, 9], [0, 1]
  ]
  got = partition.k_class_assignment(10, 10, 4)
  assert got[2].tolist() == [0, 1, 8, 9]  # (8, 9, 10, 11) mod 10.


def test_k_class_tiny_hand_computed_k2():
  labels = np.repeat(np.arange(4), 4)  # 4 classes x 4 examples.
  parts = partition.k_class(labels, 4, classes_per_client=2, seed=0)
  assert_exact_cover(parts, 16)
  hist = partition.label_histogram(labels, parts, 4)
  np.testing.assert_array_equal(
      hist,
      [[2, 2, 0, 0], [0, 0, 2, 2], [2, 2, 0, 0], [0, 0, 2, 2]],
  )


def test_k_class_tiny_hand_computed_k3_uneven_split():
  # Client i may hold {(3i + j) % 4}: c0 {0,1,2}, c1 {0,1,3}, c2 {0,2,3},
  # c3 {1,2,3}. Each class (4 examples) is split 2/1/1 over its 3 holders in
  # client order.
  labels = np.repeat(np.arange(4), 4)
  parts = partition.k_class(labels, 4, classes_per_client=3, seed=7)
  assert_exact_cover(parts, 16)
  hist = partition.label_histogram(labels, parts, 4)
  np.testing.assert_array_equal(
      hist,
      [[2, 2, 2, 0], [1, 1, 0, 2], [1, 0, 1, 1], [0, 1, 1, 1]],
  )


@pytest.mark.parametrize('k', [2, 4, 8, 10])
def test_k_class_fedper_mnist_like(k):
  parts = partition.k_class(MNIST_LIKE, 10, classes_per_client=k, seed=0)
  assert_exact_cover(parts, 60000)
  hist = partition.label_histogram(MNIST_LIKE, parts, 10)
  assert np.all((hist > 0).sum(axis=1) == k)
  # Every class is held by k of the 10 clients and split equally.
  assert set(np.unique(hist)) == ({0, 6000 // k} if k < 10 else {600})
  np.testing.assert_array_equal(hist.sum(axis=0), [6000] * 10)


def test_k_class_deterministic_and_seed_dependent():
  a = partition.k_class(MNIST_LIKE[::20], 10, classes_per_client=2, seed=1)
  b = partition.k_class(MNIST_LIKE[::20], 10, classes_per_client=2, seed=1)
  c = partition.k_class(MNIST_LIKE[::20], 10, classes_per_client=2, seed=2)
  assert same_parts(a, b)
  assert not same_parts(a, c)


@pytest.mark.parametrize('k', [0, 11])
def test_k_class_rejects_k_outside_range(k):
  with pytest.raises(partition.PartitionError) as err:
    partition.k_class(MNIST_LIKE[::100], 10, classes_per_client=k, seed=0)
  assert_one_line(err)
  assert 'classes_per_client must be in [1, 10]' in str(err.value)


def test_k_class_rejects_uncoverable_classes():
  with pytest.raises(partition.PartitionError) as err:
    partition.k_class(MNIST_LIKE[::100], 4, classes_per_client=2, seed=0)
  assert_one_line(err)
  assert 'no client' in str(err.value)


# ---------------------------------------------------------------- dirichlet


def test_dirichlet_min_size_and_cover():
  labels = MNIST_LIKE[::10]  # 6,000 examples.
  parts = partition.dirichlet(labels, 20, alpha=0.5, seed=0, min_size=50)
  assert_exact_cover(parts, 6000)
  assert min(len(p) for p in parts) >= 50


def test_dirichlet_small_alpha_is_skewed_large_alpha_near_iid():
  labels = MNIST_LIKE[::10]
  skewed = partition.label_histogram(
      labels, partition.dirichlet(labels, 10, alpha=0.05, seed=0), 10
  )
  flat = partition.label_histogram(
      labels, partition.dirichlet(labels, 10, alpha=1000.0, seed=0), 10
  )
  assert (skewed > 0).sum(axis=1).mean() < 5
  assert np.all(flat > 30)  # ~60 of each class per client.


def test_dirichlet_deterministic_and_seed_dependent():
  labels = MNIST_LIKE[::30]
  a = partition.dirichlet(labels, 5, alpha=0.3, seed=9, min_size=5)
  b = partition.dirichlet(labels, 5, alpha=0.3, seed=9, min_size=5)
  c = partition.dirichlet(labels, 5, alpha=0.3, seed=10, min_size=5)
  assert same_parts(a, b)
  assert not same_parts(a, c)


@pytest.mark.parametrize('alpha', [0.0, -1.0, float('nan')])
def test_dirichlet_rejects_bad_alpha(alpha):
  with pytest.raises(partition.PartitionError) as err:
    partition.dirichlet(MNIST_LIKE[::100], 3, alpha=alpha, seed=0)
  assert_one_line(err)
  assert 'alpha must be' in str(err.value)


def test_dirichlet_impossible_min_size():
  with pytest.raises(partition.PartitionError) as err:
    partition.dirichlet(np.zeros(50, int), 10, alpha=1.0, seed=0, min_size=6)
  assert_one_line(err)
  assert '10 clients x min_size 6 > 50 examples' in str(err.value)


def test_dirichlet_gives_up_after_max_tries():
  labels = np.repeat(np.arange(10), 20)
  with pytest.raises(partition.PartitionError) as err:
    partition.dirichlet(
        labels, 10, alpha=0.05, seed=0, min_size=20, max_tries=3
    )
  assert_one_line(err)
  assert 'in 3 tries' in str(err.value)


# ---------------------------------------------------------------- natural


def test_natural_one_client_per_group_in_sorted_id_order():
  parts = partition.natural(np.array([5, 3, 5, 7, 3]))
  assert [p.tolist() for p in parts] == [[1, 4], [0, 2], [3]]
  assert all(p.dtype == np.int64 for p in parts)


# ---------------------------------------------------------------- registry


def test_registry_matches_direct_calls():
  labels = MNIST_LIKE[::50]
  reg = partition.PARTITIONERS
  assert sorted(reg) == ['dirichlet', 'iid', 'k_class', 'shards']
  assert same_parts(
      reg['iid'](labels, 4, seed=1), partition.iid(len(labels), 4, seed=1)
  )
  assert same_parts(
      reg['shards'](labels, 4, seed=1, shards_per_client=3),
      partition.shards(labels, 4, shards_per_client=3, seed=1),
  )
  assert same_parts(
      reg['k_class'](labels, 5, seed=1, classes_per_client=2),
      partition.k_class(labels, 5, classes_per_client=2, seed=1),
  )
  assert same_parts(
      reg['dirichlet'](labels, 4, seed=1, alpha=0.5, min_size=3),
      partition.dirichlet(labels, 4, alpha=0.5, min_size=3, seed=1),
  )


def test_registry_ignores_other_partitioners_options_and_none():
  labels = MNIST_LIKE[::50]
  got = partition.PARTITIONERS['iid'](
      labels, 4, seed=1, alpha=0.5, classes_per_client=None, min_size=10
  )
  assert same_parts(got, partition.iid(len(labels), 4, seed=1))


def test_registry_unknown_and_missing_options_are_one_line_errors():
  labels = MNIST_LIKE[::50]
  with pytest.raises(partition.PartitionError) as err:
    partition.PARTITIONERS['iid'](labels, 4, seed=1, alfa=0.5)
  assert_one_line(err)
  assert "'alfa'" in str(err.value)
  with pytest.raises(partition.PartitionError) as err:
    partition.PARTITIONERS['dirichlet'](labels, 4, seed=1)
  assert_one_line(err)
  assert 'needs option alpha' in str(err.value)
