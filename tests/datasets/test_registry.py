"""Tests for datasets.registry: names, data_dir handling, one-line errors."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest

from datasets import base
from datasets import registry


def test_registered_names():
  assert sorted(registry.DATASETS) == [
      'cifar10', 'cifar100', 'digits', 'emnist', 'mnist', 'shakespeare',
      'shakespeare_iid', 'synthetic'
  ]


def test_digits_needs_no_data_dir_and_uses_seed():
  a = registry.load_dataset('digits', seed=0)
  b = registry.load_dataset('digits', None, seed=1)
  assert a.name == 'digits' and len(a.y_train) == 1437
  assert not np.array_equal(a.y_test, b.y_test)


def test_synthetic_uses_seed():
  a = registry.load_dataset('synthetic', seed=0)
  b = registry.load_dataset('synthetic', '/ignored', seed=0)
  c = registry.load_dataset('synthetic', seed=1)
  assert a.name == 'synthetic'
  np.testing.assert_array_equal(a.x_train, b.x_train)
  assert not np.array_equal(a.x_train, c.x_train)


def test_unknown_name_lists_allowed_names():
  with pytest.raises(base.DatasetError) as err:
    registry.load_dataset('mnsit')
  text = str(err.value)
  assert '\n' not in text
  assert "'mnsit'" in text
  assert 'cifar10, cifar100, digits, emnist, mnist, shakespeare, shakespeare_iid, synthetic' in text


@pytest.mark.parametrize('name', ['mnist', 'cifar10', 'cifar100', 'emnist'])
def test_file_datasets_require_data_dir(name):
  with pytest.raises(base.DatasetError) as err:
    registry.load_dataset(name)
  text = str(err.value)
  assert '\n' not in text
  assert f"'{name}'" in text and '--data_dir is required' in text


def test_mnist_through_registry(tmp_path):
  def write(name, array, magic):
    header = struct.pack('>i', magic) + struct.pack(
        f'>{array.ndim}i', *array.shape
    )
    with gzip.open(tmp_path / name, 'wb') as f:
      f.write(header + array.tobytes())

  write('train-images-idx3-ubyte.gz', np.full((2, 28, 28), 255, np.uint8), 2051)
  write('train-labels-idx1-ubyte.gz', np.array([3, 4], np.uint8), 2049)
  write('t10k-images-idx3-ubyte.gz', np.zeros((1, 28, 28), np.uint8), 2051)
  write('t10k-labels-idx1-ubyte.gz', np.array([5], np.uint8), 2049)
  data = registry.load_dataset('mnist', str(tmp_path))
  assert data.x_train.shape == (2, 28, 28, 1) and data.x_train.max() == 255
  assert data.x_train.dtype == np.uint8
  np.testing.assert_array_equal(data.y_train, [3, 4])
  np.testing.assert_array_equal(data.y_test, [5])


def test_missing_files_through_registry(tmp_path):
  with pytest.raises(base.DatasetFileNotFoundError) as err:
    registry.load_dataset('cifar10', str(tmp_path))
  assert '\n' not in str(err.value)
  assert 'cifar-10-python.tar.gz' in str(err.value)


def test_dataset_options_default_changes_nothing_and_declares_its_users():
  options = registry.DatasetOptions()
  assert options == registry.DEFAULT_OPTIONS
  assert options.min_role_lines == 2
  field = registry.DatasetOptions.__dataclass_fields__['min_role_lines']
  assert field.metadata['datasets'] == ('shakespeare', 'shakespeare_iid')
  assert '1,146' in field.metadata['help']
  for name in registry.DATASETS:
    registry.check_dataset(name, options)  # Defaults suit every dataset.


@pytest.mark.parametrize('name', ['digits', 'mnist', 'synthetic'])
def test_an_option_the_dataset_ignores_is_refused_in_one_line(name):
  options = registry.DatasetOptions(min_role_lines=3)
  with pytest.raises(base.DatasetError) as err:
    registry.load_dataset(name, '/ignored', options=options)
  assert str(err.value) == (
      '--min_role_lines=3: only --dataset=shakespeare / shakespeare_iid use'
      f" it, not '{name}' (leave it at 2)"
  )


def test_check_dataset_rejects_unknown_names_without_reading_files():
  registry.check_dataset('shakespeare', registry.DatasetOptions(min_role_lines=3))
  with pytest.raises(base.DatasetError) as err:
    registry.check_dataset('mnsit')
  assert "unknown dataset 'mnsit'" in str(err.value)
