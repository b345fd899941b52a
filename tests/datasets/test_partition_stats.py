"""Tests for datasets.partition_stats: label histograms, their table, test sets like train."""

from __future__ import annotations

import numpy as np
import pytest

from datasets import partition
from datasets import partition_base
from datasets import partition_stats

from tests.datasets.partition_checks import MNIST_LIKE, assert_exact_cover, assert_one_line, same_parts


# ------------------------------------------------------- histogram / format


def test_label_histogram_hand_made():
  labels = np.array([0, 1, 1, 2, 0, 2])
  parts = [np.array([0, 1]), np.array([2, 3, 4]), np.array([5])]
  hist = partition_stats.label_histogram(labels, parts, 3)
  assert hist.dtype == np.int64
  np.testing.assert_array_equal(hist, [[1, 1, 0], [1, 1, 1], [0, 0, 1]])


def test_label_histogram_rejects_label_out_of_range():
  with pytest.raises(partition_base.PartitionError) as err:
    partition_stats.label_histogram(np.array([0, 3]), [np.array([0, 1])], 3)
  assert_one_line(err)


def test_format_histogram_rows_and_truncation():
  hist = np.array([[1, 0], [0, 2], [3, 3]])
  text = partition_stats.format_histogram(hist, max_rows=2)
  lines = text.splitlines()
  assert lines[0].split() == ['client', 'n', '0', '1']
  assert lines[1].split() == ['0', '1', '1', '0']
  assert lines[2].split() == ['1', '2', '0', '2']
  assert lines[3] == '... (1 more clients)'
  assert lines[4].startswith('3 clients, 9 examples')


# ------------------------------------------------- split_test_like_train


def test_split_test_like_train_hand_computed():
  train_hist = np.array([[3, 1, 0], [1, 0, 0], [0, 0, 2]])
  test_labels = np.array([0, 0, 0, 0, 1, 1, 2, 2, 2])
  parts = partition_stats.split_test_like_train(test_labels, train_hist, seed=0)
  hist = partition_stats.label_histogram(test_labels, parts, 3)
  # Class 0 split 3:1 between clients 0 and 1; class 1 only client 0;
  # class 2 only client 2.
  np.testing.assert_array_equal(hist, [[3, 2, 0], [1, 0, 0], [0, 0, 3]])
  assert_exact_cover(parts, 9)


def test_split_test_like_train_drops_classes_nobody_trains_on():
  train_hist = np.array([[2, 0], [1, 0]])
  test_labels = np.array([0, 1, 1, 0, 0])
  parts = partition_stats.split_test_like_train(test_labels, train_hist, seed=0)
  assert sorted(np.concatenate(parts).tolist()) == [0, 3, 4]
  assert [len(p) for p in parts] == [2, 1]


def test_split_test_like_train_never_gives_unheld_class():
  labels = MNIST_LIKE[::10]
  parts = partition.dirichlet(labels, 10, alpha=0.1, seed=3, min_size=5)
  train_hist = partition_stats.label_histogram(labels, parts, 10)
  test_labels = np.repeat(np.arange(10), 100)
  test_parts = partition_stats.split_test_like_train(
      test_labels, train_hist, seed=3
  )
  test_hist = partition_stats.label_histogram(test_labels, test_parts, 10)
  assert not np.any((test_hist > 0) & (train_hist == 0))
  all_idx = np.concatenate(test_parts)
  assert len(all_idx) == len(np.unique(all_idx))  # Disjoint.
  assert len(all_idx) == 1000  # Every class is held by someone here.
  again = partition_stats.split_test_like_train(test_labels, train_hist, seed=3)
  assert same_parts(test_parts, again)
