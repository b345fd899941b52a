"""experiment.load_federated_data: --max_train_examples / --max_test_examples."""

import numpy as np

from datasets import registry as dataset_registry
from tff_programs import experiment


def test_subsets_are_taken_before_partitioning_and_for_the_central_test_set():
  cfg = experiment.ExperimentConfig(dataset='synthetic', partition='iid', num_clients=4,
                                    max_train_examples=40, max_test_examples=12, seed=5)
  experiment.validate(cfg)
  data = experiment.load_federated_data(cfg)
  full = dataset_registry.load_dataset('synthetic', None, seed=5)
  sizes = [len(y) for _, y in data.train_arrays.values()]
  assert sizes == [10, 10, 10, 10]  # 40 examples, split evenly over 4 IID clients
  x_test, y_test = data.central_test
  assert len(y_test) == 12
  # Every kept example is an example of the full set (a subset, not a resample).
  full_rows = {row.tobytes() for row in full.x_train}
  assert all(row.tobytes() in full_rows for x, _ in data.train_arrays.values() for row in x)
  assert int(data.label_histogram.sum()) == 40


def test_zero_keeps_every_example():
  cfg = experiment.ExperimentConfig(dataset='synthetic', partition='iid', num_clients=4)
  data = experiment.load_federated_data(cfg)
  full = dataset_registry.load_dataset('synthetic', None, seed=0)
  assert int(data.label_histogram.sum()) == len(full.y_train)
  assert len(data.central_test[1]) == len(full.y_test)
  assert np.array_equal(np.sort(data.central_test[1]), np.sort(full.y_test))
