"""Client arrays on disk: exact round trips, identical batches, requests that do not grow with the data."""

import collections
import os

import numpy as np
import pytest
import tensorflow as tf

from datasets import client_files
from datasets import federated
from datasets import preprocessing


@pytest.mark.parametrize('array', [
    np.arange(24, dtype=np.uint8).reshape(2, 3, 4),
    np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4),
    np.array([3, -2, 2**40], np.int64),
    np.arange(6, dtype=np.int32).reshape(2, 3),
    np.zeros((0, 5), np.float32),
    np.arange(6, dtype='>i4'),  # big-endian input is stored little-endian
])
def test_array_files_round_trip_exactly(tmp_path, array):
  f = client_files.write_array(str(tmp_path / 'a'), array)
  assert f.shape == array.shape
  np.testing.assert_array_equal(f.read().numpy(), array)
  np.testing.assert_array_equal(f.load(), array)
  assert os.path.getsize(f.path) == array.size * array.dtype.itemsize
  assert not os.path.exists(f.path + '.tmp')


def test_bool_arrays_are_refused(tmp_path):
  with pytest.raises(ValueError, match='bool'):
    client_files.write_array(str(tmp_path / 'b'), np.zeros(3, bool))


def batches(dataset):
  return [{k: v.numpy() for k, v in b.items()} for b in dataset]


def assert_same_batches(a, b):
  a, b = batches(a), batches(b)
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for k in x:
      np.testing.assert_array_equal(x[k], y[k])


RNG = np.random.default_rng(0)
X = RNG.integers(0, 256, (13, 4, 4, 3), dtype=np.uint8)
Y = RNG.integers(0, 10, 13).astype(np.int64)


def _augment(element, seed):
  x = preprocessing.pixels_to_float(element['x'])
  return collections.OrderedDict(x=tf.image.stateless_random_flip_left_right(x, seed),
                                 y=element['y'])


@pytest.mark.parametrize('options', [
    dict(batch_size=4),
    dict(batch_size=None),
    dict(batch_size=5, batch_map=preprocessing.pixels_to_float),
    dict(batch_size=3, map_fn=_augment),
    dict(batch_size=3, map_fn=_augment, extras={'z': RNG.random((13, 2)).astype(np.float32)}),
    dict(batch_size=4, batch_map=preprocessing.pixels_to_float,
         extras={'z': RNG.random((13, 2)).astype(np.float32)}),
])
def test_datasets_from_files_equal_datasets_from_arrays(tmp_path, options):
  with client_files.ClientArrayFiles(str(tmp_path / 'cd'), {'c': (X, Y)}) as files:
    x_file, y_file = files.get('c')
    common = dict(epochs=2, shuffle_seed=7, **options)
    from_files = federated.client_dataset(x_file, y_file, **common)
    from_arrays = federated.client_dataset(X, Y, **common)
    assert_same_batches(from_files, from_arrays)
    assert from_files.cardinality() == from_arrays.cardinality()
  assert not os.path.exists(tmp_path / 'cd')


def test_extras_follow_their_examples():
  z = np.arange(13, dtype=np.float32)[:, None] * np.ones((1, 2), np.float32)
  ids = np.arange(13, dtype=np.int64)
  for batch in federated.client_dataset(ids, Y, batch_size=4, epochs=2, shuffle_seed=1,
                                        extras={'z': z}):
    np.testing.assert_array_equal(batch['z'].numpy()[:, 0], batch['x'].numpy())
    np.testing.assert_array_equal(batch['y'].numpy(), Y[batch['x'].numpy()])


def serialized_bytes(dataset):
  """What TFF ships for a dataset argument: its graph (as tff's value_serialization does)."""
  return len(tf.raw_ops.DatasetToGraphV2(input_dataset=dataset._variant_tensor).numpy())  # pylint: disable=protected-access


def test_a_request_holds_paths_and_orders_not_the_data(tmp_path):
  sizes = {}
  for shape in ((28, 28, 1), (32, 32, 3)):
    x = np.zeros((2000, *shape), np.uint8)
    y = np.zeros(2000, np.int64)
    with client_files.ClientArrayFiles(str(tmp_path / str(shape[0])), {'c': (x, y)}) as files:
      kwargs = dict(batch_size=10, epochs=1, shuffle_seed=0, batch_map=preprocessing.pixels_to_float)
      sizes[shape] = (serialized_bytes(federated.client_dataset(*files.get('c'), **kwargs)),
                      serialized_bytes(federated.client_dataset(x, y, **kwargs)))
  (files_28, arrays_28), (files_32, arrays_32) = sizes[(28, 28, 1)], sizes[(32, 32, 3)]
  # Embedded: the graph grows with the pixels (1.57 MB vs 6.1 MB of uint8).
  assert arrays_28 > 2000 * 784 and arrays_32 > 2000 * 3072
  # From files: the same size whatever the images hold (paths, shapes, the order).
  assert abs(files_32 - files_28) < 64
  assert files_28 < 2000 * 4 + 8192  # the order (int32) and the graph, no pixels


def test_files_are_written_on_first_use_and_stale_ones_removed(tmp_path):
  folder = tmp_path / 'cd'
  folder.mkdir()
  (folder / 'stale.x').write_bytes(b'old')
  files = client_files.ClientArrayFiles(str(folder), {'a/1': (X, Y), 'b': (X[:2], Y[:2])})
  assert os.listdir(folder) == ['stale.x']  # Nothing touched before the first use...
  x_file, _ = files.get('a/1')  # ...which removes what an interrupted run left.
  assert sorted(os.listdir(folder)) == sorted(
      os.path.basename(p) for p in (x_file.path, files.get('a/1')[1].path))
  assert '/' not in os.path.basename(x_file.path)
  assert files.num_examples('b') == 2 and 'b' in files and 'c' not in files
  files.close()
  files.close()
  assert not folder.exists()
