"""Tests for the loaders, on tiny files the tests write themselves."""

from __future__ import annotations

import gzip
import io
import os
import pickle
import struct
import tarfile

import numpy as np
import pytest

from datasets import base
from datasets import cifar
from datasets import digits
from datasets import emnist
from datasets import mnist
from datasets import synthetic


def one_line(err: pytest.ExceptionInfo) -> str:
  text = str(err.value)
  assert '\n' not in text
  return text


# ------------------------------------------------------------------ digits


def test_digits_shapes_range_and_split_sizes():
  data = digits.load_digits()
  assert data.name == 'digits'
  assert data.num_classes == 10
  assert data.x_train.shape == (1437, 8, 8, 1)
  assert data.x_test.shape == (360, 8, 8, 1)
  assert data.input_shape == (8, 8, 1)
  assert data.x_train.dtype == np.float32 and data.y_train.dtype == np.int64
  assert data.x_train.min() == 0.0 and data.x_train.max() == 1.0
  # Stratified: 360 of 1,797 is ~20% of each class (176..183 per class).
  counts = np.bincount(data.y_test, minlength=10)
  total = np.bincount(np.concatenate([data.y_train, data.y_test]))
  assert np.all(np.abs(counts - 0.2 * total) < 1)


def test_digits_deterministic_for_seed_and_seed_dependent():
  a = digits.load_digits(seed=1)
  b = digits.load_digits(seed=1)
  c = digits.load_digits(seed=2)
  np.testing.assert_array_equal(a.x_test, b.x_test)
  assert not np.array_equal(a.x_test, c.x_test)


def test_stratified_split_hand_computed():
  labels = np.array([0] * 6 + [1] * 3 + [2])  # n=10, 30% -> 3 test.
  train, test = digits.stratified_split(labels, 0.3, seed=0)
  # Exact shares 1.8, 0.9, 0.3 -> floors 1, 0, 0, remainders go to classes 1
  # then 0.
  np.testing.assert_array_equal(
      np.bincount(labels[test], minlength=3), [2, 1, 0]
  )
  np.testing.assert_array_equal(
      np.sort(np.concatenate([train, test])), np.arange(10)
  )


def test_digits_rejects_bad_test_fraction():
  with pytest.raises(base.DatasetError) as err:
    digits.load_digits(test_fraction=1.5)
  assert 'test_fraction' in one_line(err)


# ------------------------------------------------------------------ MNIST


def idx_bytes(array: np.ndarray, magic: int) -> bytes:
  """Encodes `array` (uint8) in the IDX format by hand."""
  header = struct.pack('>i', magic) + struct.pack(
      f'>{array.ndim}i', *array.shape
  )
  return header + array.astype(np.uint8).tobytes()


def tiny_mnist():
  rng = np.random.default_rng(0)
  return (
      rng.integers(0, 256, (3, 28, 28), dtype=np.uint8),
      np.array([7, 0, 9], np.uint8),
      rng.integers(0, 256, (2, 28, 28), dtype=np.uint8),
      np.array([1, 2], np.uint8),
  )


def write_idx_files(directory, arrays, compress=True):
  for name, array, magic in zip(
      mnist.IDX_FILES, arrays, (2051, 2049, 2051, 2049)
  ):
    raw = idx_bytes(array, magic)
    if compress:
      with gzip.open(directory / name, 'wb') as f:
        f.write(raw)
    else:
      (directory / name[: -len('.gz')]).write_bytes(raw)


@pytest.mark.parametrize('compress', [True, False])
def test_mnist_idx_round_trip(tmp_path, compress):
  arrays = tiny_mnist()
  write_idx_files(tmp_path, arrays, compress=compress)
  data = mnist.load_mnist(str(tmp_path))
  assert data.name == 'mnist' and data.num_classes == 10
  assert data.x_train.shape == (3, 28, 28, 1)
  assert data.x_train.dtype == np.uint8 and data.y_train.dtype == np.int64
  np.testing.assert_array_equal(data.x_train[..., 0], arrays[0])
  np.testing.assert_array_equal(data.y_train, [7, 0, 9])
  np.testing.assert_array_equal(data.x_test[..., 0], arrays[2])
  np.testing.assert_array_equal(data.y_test, [1, 2])


def test_mnist_npz_round_trip(tmp_path):
  x_train, y_train, x_test, y_test = tiny_mnist()
  np.savez(
      tmp_path / 'mnist.npz',
      x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test,
  )
  data = mnist.load_mnist(str(tmp_path))
  np.testing.assert_array_equal(data.x_train[..., 0], x_train)
  assert data.x_train.dtype == np.uint8
  np.testing.assert_array_equal(data.y_test, [1, 2])
  assert data.x_test.shape == (2, 28, 28, 1)


def test_mnist_npz_missing_key_is_one_line(tmp_path):
  np.savez(tmp_path / 'mnist.npz', x_train=np.zeros((1, 28, 28)))
  with pytest.raises(base.DatasetError) as err:
    mnist.load_mnist(str(tmp_path))
  text = one_line(err)
  assert 'mnist.npz' in text and 'y_train' in text


def test_mnist_missing_files_message(tmp_path):
  with pytest.raises(base.DatasetFileNotFoundError) as err:
    mnist.load_mnist(str(tmp_path))
  text = one_line(err)
  assert 'train-images-idx3-ubyte.gz (+3 more IDX files)' in text
  assert 'mnist.npz' in text and str(tmp_path) in text
  assert isinstance(err.value, FileNotFoundError)


def test_mnist_partial_idx_names_the_missing_file(tmp_path):
  write_idx_files(tmp_path, tiny_mnist())
  os.remove(tmp_path / 't10k-labels-idx1-ubyte.gz')
  with pytest.raises(base.DatasetFileNotFoundError) as err:
    mnist.load_mnist(str(tmp_path))
  text = one_line(err)
  assert 't10k-labels-idx1-ubyte.gz' in text
  assert 'train-images' not in text


def test_mnist_bad_magic_is_one_line(tmp_path):
  arrays = tiny_mnist()
  write_idx_files(tmp_path, arrays)
  with gzip.open(tmp_path / 'train-images-idx3-ubyte.gz', 'wb') as f:
    f.write(idx_bytes(arrays[0], 2049))  # A label magic on an image file.
  with pytest.raises(base.DatasetError) as err:
    mnist.load_mnist(str(tmp_path))
  text = one_line(err)
  assert 'train-images-idx3-ubyte.gz' in text
  assert 'magic number 2049, expected 2051' in text


def test_mnist_truncated_and_not_gzip_are_one_line(tmp_path):
  arrays = tiny_mnist()
  write_idx_files(tmp_path, arrays)
  with gzip.open(tmp_path / 't10k-images-idx3-ubyte.gz', 'wb') as f:
    f.write(idx_bytes(arrays[2], 2051)[:-10])
  with pytest.raises(base.DatasetError) as err:
    mnist.load_mnist(str(tmp_path))
  assert 't10k-images-idx3-ubyte.gz' in one_line(err)
  (tmp_path / 't10k-images-idx3-ubyte.gz').write_bytes(b'not gzip at all')
  with pytest.raises(base.DatasetError) as err:
    mnist.load_mnist(str(tmp_path))
  assert 't10k-images-idx3-ubyte.gz' in one_line(err)


def test_mnist_needs_data_dir():
  with pytest.raises(base.DatasetError) as err:
    mnist.load_mnist(None)
  assert '--data_dir is required' in one_line(err)


def write_npz(directory, **overrides):
  """mnist.npz from tiny_mnist(), with some arrays replaced."""
  arrays = dict(zip(('x_train', 'y_train', 'x_test', 'y_test'), tiny_mnist()))
  arrays.update(overrides)
  np.savez(directory / 'mnist.npz', **arrays)
  return str(directory / 'mnist.npz')


def test_mnist_npz_float_pixels_load_only_as_raw_whole_values(tmp_path):
  x_train, y_train, _, _ = tiny_mnist()
  write_npz(tmp_path, x_train=x_train.astype(np.float64),
            y_train=y_train.astype(np.int64))
  data = mnist.load_mnist(str(tmp_path))
  np.testing.assert_array_equal(data.x_train[..., 0], x_train)
  np.testing.assert_array_equal(data.y_train, [7, 0, 9])
  assert data.x_train.dtype == np.uint8 and data.y_train.dtype == np.int64
  # The same images already scaled to [0, 1] would be divided by 255 twice.
  path = write_npz(tmp_path, x_train=x_train / 255.0)
  with pytest.raises(base.DatasetError) as err:
    mnist.load_mnist(str(tmp_path))
  assert one_line(err).startswith(
      f'MNIST: {path}: x_train holds non-integer values'
  )


_NAN = np.zeros((3, 28, 28), np.float32)
_NAN[1, 2, 3] = np.nan
_BAD_MNIST = {
    'nan': (dict(x_train=_NAN),
            'x_train contains NaN (1 of 2352 values); expected uint8 pixel'
            ' values 0..255'),
    'scaled': (dict(x_test=np.full((2, 28, 28), 0.5, np.float32)),
               'x_test holds non-integer values (e.g. 0.5); expected uint8'
               ' pixel values 0..255 (already scaled to [0, 1]?)'),
    'shape': (dict(x_train=np.zeros((3, 28, 27), np.uint8)),
              'x_train has shape (3, 28, 27); expected (N, 28, 28)'),
    'pixel_range': (dict(x_test=np.full((2, 28, 28), 300, np.int16)),
                    'x_test has values 300..300; expected uint8 pixel values'
                    ' 0..255'),
    'bool': (dict(x_train=np.zeros((3, 28, 28), bool)),
             'x_train has dtype bool; expected uint8 pixel values 0..255'),
    'label_high': (dict(y_train=np.array([7, 10, 9], np.uint8)),
                   'y_train has labels 7..10; expected integer class labels'
                   ' 0..9'),
    'label_negative': (dict(y_test=np.array([-1, 2], np.int8)),
                       'y_test has labels -1..2; expected integer class'
                       ' labels 0..9'),
    'label_fraction': (dict(y_test=np.array([1.0, 2.5])),
                       'y_test holds non-integer values (e.g. 2.5); expected'
                       ' integer class labels 0..9'),
    'label_count': (dict(y_train=np.array([7, 0], np.uint8)),
                    'y_train holds 2 labels for 3 images; expected one per'
                    ' image'),
    'label_shape': (dict(y_train=np.zeros((3, 1), np.uint8)),
                    'y_train has shape (3, 1); expected (3,), one label per'
                    ' image'),
}


@pytest.mark.parametrize('case', sorted(_BAD_MNIST))
def test_mnist_npz_bad_arrays_are_one_line_naming_file_and_key(tmp_path, case):
  overrides, problem = _BAD_MNIST[case]
  path = write_npz(tmp_path, **overrides)
  with pytest.raises(base.DatasetError) as err:
    mnist.load_mnist(str(tmp_path))
  assert one_line(err) == f'MNIST: {path}: {problem}'


def test_mnist_idx_label_out_of_range_names_the_file(tmp_path):
  arrays = list(tiny_mnist())
  arrays[3] = np.array([1, 12], np.uint8)
  write_idx_files(tmp_path, arrays)
  with pytest.raises(base.DatasetError) as err:
    mnist.load_mnist(str(tmp_path))
  path = tmp_path / 't10k-labels-idx1-ubyte.gz'
  assert one_line(err) == (
      f'MNIST: {path} has labels 1..12; expected integer class labels 0..9'
  )


def test_mnist_idx_images_of_the_wrong_size_name_the_file(tmp_path):
  arrays = list(tiny_mnist())
  arrays[0] = np.zeros((3, 32, 32), np.uint8)
  write_idx_files(tmp_path, arrays)
  with pytest.raises(base.DatasetError) as err:
    mnist.load_mnist(str(tmp_path))
  path = tmp_path / 'train-images-idx3-ubyte.gz'
  assert one_line(err) == (
      f'MNIST: {path} has shape (3, 32, 32); expected (N, 28, 28)'
  )


# ------------------------------------------------------------------ CIFAR


def cifar_batch(images: np.ndarray, labels, label_key=b'labels', extra=None):
  """A python-version CIFAR batch: rows are R plane, G plane, B plane."""
  data = images.transpose(0, 3, 1, 2).reshape(len(images), -1)
  batch = {b'batch_label': b'fake', b'data': data, label_key: list(labels)}
  batch.update(extra or {})
  return pickle.dumps(batch, protocol=2)  # Like the Python 2 originals.


def fake_cifar10_files():
  """{file name: bytes}, 2 images per train batch, 3 test images."""
  rng = np.random.default_rng(0)
  files, images = {}, {}
  for i, name in enumerate(cifar._CIFAR10.train_files + ('test_batch',)):
    n = 3 if name == 'test_batch' else 2
    imgs = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    labels = [(i + j) % 10 for j in range(n)]
    files[name] = cifar_batch(imgs, labels)
    images[name] = (imgs, labels)
  return files, images


def check_cifar10(data, images):
  assert data.name == 'cifar10' and data.num_classes == 10
  assert data.x_train.shape == (10, 32, 32, 3)
  assert data.x_test.shape == (3, 32, 32, 3)
  assert data.x_train.dtype == np.uint8 and data.y_train.dtype == np.int64
  first, labels = images['data_batch_1']
  np.testing.assert_array_equal(data.x_train[:2], first)
  np.testing.assert_array_equal(data.y_train[:2], labels)
  np.testing.assert_array_equal(data.y_train[-2:], images['data_batch_5'][1])
  np.testing.assert_array_equal(data.x_test, images['test_batch'][0])
  assert data.notes == (
      'cifar10: test set = the official test_batch (3 images); train = 10'
      ' images',
  )


def test_cifar_pixel_layout_hand_computed(tmp_path):
  # One red pixel at (row 1, col 2): data index c*1024 + h*32 + w.
  data = np.zeros((1, 3072), np.uint8)
  data[0, 0 * 1024 + 1 * 32 + 2] = 255
  data[0, 2 * 1024 + 0 * 32 + 0] = 51  # Blue at (0, 0).
  raw = pickle.dumps({b'data': data, b'labels': [3]})
  folder = tmp_path / 'cifar-10-batches-py'
  folder.mkdir()
  for name in cifar._CIFAR10.train_files + ('test_batch',):
    (folder / name).write_bytes(raw)
  got = cifar.load_cifar10(str(tmp_path))
  assert got.x_train[0, 1, 2, 0] == 255
  assert got.x_train[0, 0, 0, 2] == 51
  assert int(got.x_train[0].sum()) == 306


@pytest.mark.parametrize('layout', ['folder', 'direct'])
def test_cifar10_from_batch_files(tmp_path, layout):
  files, images = fake_cifar10_files()
  folder = tmp_path / 'cifar-10-batches-py' if layout == 'folder' else tmp_path
  folder.mkdir(exist_ok=True)
  for name, raw in files.items():
    (folder / name).write_bytes(raw)
  check_cifar10(cifar.load_cifar10(str(tmp_path)), images)


def write_tarball(path, folder, files):
  with tarfile.open(path, 'w:gz') as tar:
    for name, raw in files.items():
      info = tarfile.TarInfo(f'{folder}/{name}')
      info.size = len(raw)
      tar.addfile(info, io.BytesIO(raw))


@pytest.mark.parametrize(
    'tarball', ['cifar-10-python.tar.gz', 'cifar-10-batches-py.tar.gz']
)
def test_cifar10_from_tarball_without_extracting(tmp_path, tarball):
  files, images = fake_cifar10_files()
  write_tarball(tmp_path / tarball, 'cifar-10-batches-py', files)
  check_cifar10(cifar.load_cifar10(str(tmp_path)), images)
  assert os.listdir(tmp_path) == [tarball]  # Nothing extracted.
  # The tarball's own path works too.
  check_cifar10(cifar.load_cifar10(str(tmp_path / tarball)), images)


def check_cifar10_holdout(data, images, location):
  """Without test_batch: data_batch_1-4 train, data_batch_5 is the test set."""
  assert data.x_train.shape == (8, 32, 32, 3)
  assert data.x_test.shape == (2, 32, 32, 3)
  train = [images[f'data_batch_{i}'] for i in range(1, 5)]
  np.testing.assert_array_equal(data.x_train, np.concatenate([x for x, _ in train]))
  np.testing.assert_array_equal(
      data.y_train, np.concatenate([y for _, y in train])
  )
  np.testing.assert_array_equal(data.x_test, images['data_batch_5'][0])
  np.testing.assert_array_equal(data.y_test, images['data_batch_5'][1])
  assert data.notes == (
      f'cifar10: no test_batch in {location}, so data_batch_5 (2 images) is'
      ' held out as the test set and training uses the other 4 batches (8'
      ' images); accuracies are not comparable with results on the official'
      ' test set',
  )


@pytest.mark.parametrize('layout', ['folder', 'direct'])
def test_cifar10_without_test_batch_holds_out_data_batch_5(tmp_path, layout):
  files, images = fake_cifar10_files()
  del files['test_batch']
  folder = tmp_path / 'cifar-10-batches-py' if layout == 'folder' else tmp_path
  folder.mkdir(exist_ok=True)
  for name, raw in files.items():
    (folder / name).write_bytes(raw)
  check_cifar10_holdout(cifar.load_cifar10(str(tmp_path)), images, folder)


def test_cifar10_tarball_without_test_batch_holds_out_data_batch_5(tmp_path):
  files, images = fake_cifar10_files()
  del files['test_batch']
  tarball = tmp_path / 'cifar-10-python.tar.gz'
  write_tarball(tarball, 'cifar-10-batches-py', files)
  check_cifar10_holdout(cifar.load_cifar10(str(tmp_path)), images, tarball)


def test_cifar10_needs_all_five_train_batches(tmp_path):
  files, _ = fake_cifar10_files()
  del files['data_batch_5']
  for name, raw in files.items():
    (tmp_path / name).write_bytes(raw)
  with pytest.raises(base.DatasetFileNotFoundError):
    cifar.load_cifar10(str(tmp_path))


def test_cifar100_still_needs_its_test_file(tmp_path):
  imgs = np.zeros((1, 32, 32, 3), np.uint8)
  folder = tmp_path / 'cifar-100-python'
  folder.mkdir()
  (folder / 'train').write_bytes(
      cifar_batch(imgs, [1], b'fine_labels', {b'coarse_labels': [1]})
  )
  with pytest.raises(base.DatasetFileNotFoundError):
    cifar.load_cifar100(str(tmp_path))


_NAN_ROW = np.zeros((2, 3072), np.float32)
_NAN_ROW[0, 5] = np.nan
_BAD_CIFAR = {
    'nan': ({b'data': _NAN_ROW, b'labels': [0, 1]},
            'data contains NaN (1 of 6144 values); expected uint8 pixel values'
            ' 0..255'),
    'scaled': ({b'data': np.full((2, 3072), 0.25), b'labels': [0, 1]},
               'data holds non-integer values (e.g. 0.25); expected uint8'
               ' pixel values 0..255 (already scaled to [0, 1]?)'),
    'shape': ({b'data': np.zeros((2, 32, 32, 3), np.uint8), b'labels': [0, 1]},
              'data has shape (2, 32, 32, 3); expected (N, 3072)'),
    'pixel_range': ({b'data': np.full((2, 3072), -1, np.int32),
                     b'labels': [0, 1]},
                    'data has values -1..-1; expected uint8 pixel values'
                    ' 0..255'),
    'label_range': ({b'data': np.zeros((2, 3072), np.uint8),
                     b'labels': [3, 10]},
                    'labels has labels 3..10; expected integer class labels'
                    ' 0..9'),
    'label_text': ({b'data': np.zeros((2, 3072), np.uint8),
                    b'labels': [b'cat', b'dog']},
                   'labels has dtype |S3; expected integer class labels'
                   ' 0..9'),
}


@pytest.mark.parametrize('case', sorted(_BAD_CIFAR))
def test_cifar_bad_arrays_are_one_line_naming_the_batch(tmp_path, case):
  files, _ = fake_cifar10_files()
  batch, problem = _BAD_CIFAR[case]
  files['data_batch_2'] = pickle.dumps(batch, protocol=2)
  for name, raw in files.items():
    (tmp_path / name).write_bytes(raw)
  with pytest.raises(base.DatasetError) as err:
    cifar.load_cifar10(str(tmp_path))
  assert one_line(err) == (
      f'CIFAR-10: {tmp_path / "data_batch_2"}: {problem}'
  )


def test_cifar100_fine_and_coarse_from_tarball(tmp_path):
  rng = np.random.default_rng(1)
  imgs = rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
  files = {
      'train': cifar_batch(
          imgs[:3], [99, 0, 42], b'fine_labels', {b'coarse_labels': [19, 0, 3]}
      ),
      'test': cifar_batch(
          imgs[3:], [5], b'fine_labels', {b'coarse_labels': [7]}
      ),
  }
  write_tarball(tmp_path / 'cifar-100-python.tar.gz', 'cifar-100-python', files)
  fine = cifar.load_cifar100(str(tmp_path))
  assert fine.name == 'cifar100' and fine.num_classes == 100
  np.testing.assert_array_equal(fine.y_train, [99, 0, 42])
  np.testing.assert_array_equal(fine.x_test, imgs[3:])
  coarse = cifar.load_cifar100(str(tmp_path), label_mode='coarse')
  assert coarse.num_classes == 20
  np.testing.assert_array_equal(coarse.y_train, [19, 0, 3])
  np.testing.assert_array_equal(coarse.y_test, [7])


def test_cifar100_bad_label_mode():
  with pytest.raises(base.DatasetError) as err:
    cifar.load_cifar100('/nonexistent', label_mode='medium')
  assert "'medium'" in one_line(err)


def test_cifar_missing_files_message(tmp_path):
  with pytest.raises(base.DatasetFileNotFoundError) as err:
    cifar.load_cifar10(str(tmp_path))
  text = one_line(err)
  assert 'cifar-10-batches-py/data_batch_1' in text
  assert 'cifar-10-python.tar.gz' in text and str(tmp_path) in text
  with pytest.raises(base.DatasetFileNotFoundError) as err:
    cifar.load_cifar100(str(tmp_path / 'nope'))
  text = one_line(err)
  assert 'cifar-100-python.tar.gz' in text and '(missing)' in text


class _Evil:

  def __reduce__(self):
    return (os.system, ('echo pwned',))


def test_cifar_pickle_cannot_run_code(tmp_path):
  files, _ = fake_cifar10_files()
  files['data_batch_3'] = pickle.dumps({b'data': _Evil(), b'labels': []})
  for name, raw in files.items():
    (tmp_path / name).write_bytes(raw)
  with pytest.raises(base.DatasetError) as err:
    cifar.load_cifar10(str(tmp_path))
  text = one_line(err)
  assert 'data_batch_3' in text and 'is not allowed' in text


def test_cifar_wrong_label_count_and_missing_key(tmp_path):
  files, _ = fake_cifar10_files()
  files['test_batch'] = pickle.dumps(
      {b'data': np.zeros((2, 3072), np.uint8), b'labels': [1]}
  )
  for name, raw in files.items():
    (tmp_path / name).write_bytes(raw)
  with pytest.raises(base.DatasetError) as err:
    cifar.load_cifar10(str(tmp_path))
  assert 'test_batch: labels holds 1 labels for 2 images' in one_line(err)
  (tmp_path / 'test_batch').write_bytes(pickle.dumps({b'data': 1}))
  with pytest.raises(base.DatasetError) as err:
    cifar.load_cifar10(str(tmp_path))
  assert "test_batch has no b'labels' entry" in one_line(err)


# ------------------------------------------------------------------ EMNIST


def test_emnist_arrays_from_synthetic_client_data():
  tff = pytest.importorskip('tensorflow_federated')
  cd = tff.simulation.datasets.emnist.get_synthetic()
  data = emnist.arrays_from_client_data(cd, cd, 'emnist_synthetic')
  assert data.name == 'emnist_synthetic' and data.num_classes == 10
  assert data.x_train.shape == (20, 28, 28, 1)
  assert data.x_train.dtype == np.float32 and data.y_train.dtype == np.int64
  assert data.group_names == ('synthetic1', 'synthetic2')
  np.testing.assert_array_equal(data.train_groups, [0] * 10 + [1] * 10)
  np.testing.assert_array_equal(data.test_groups, [0] * 10 + [1] * 10)
  np.testing.assert_array_equal(data.y_train, list(range(10)) * 2)
  # TFF's synthetic pixels are integers 0..9 divided by 9; background is 1.0.
  expected = next(iter(cd.create_tf_dataset_for_client('synthetic1')))
  np.testing.assert_array_equal(
      data.x_train[0, ..., 0], expected['pixels'].numpy()
  )
  assert data.x_train[0, 0, 0, 0] == 1.0


def test_emnist_missing_cache_file_names_it(tmp_path):
  with pytest.raises(base.DatasetFileNotFoundError) as err:
    emnist.load_emnist(str(tmp_path))
  text = one_line(err)
  assert 'emnist_all.sqlite' in text and str(tmp_path) in text
  assert 'emnist_all.sqlite.lzma' in text


# --------------------------------------------------------------- synthetic


def test_synthetic_shapes_balance_and_determinism():
  data = synthetic.make_synthetic(num_train=203, num_test=50, seed=3)
  assert data.name == 'synthetic'
  assert data.x_train.shape == (203, 8, 8, 1)
  assert data.x_train.dtype == np.float32
  assert data.y_train.dtype == np.int64
  counts = np.bincount(data.y_train, minlength=10)
  assert counts.max() - counts.min() <= 1
  again = synthetic.make_synthetic(num_train=203, num_test=50, seed=3)
  np.testing.assert_array_equal(data.x_train, again.x_train)
  other = synthetic.make_synthetic(num_train=203, num_test=50, seed=4)
  assert not np.array_equal(data.x_train, other.x_train)


def test_synthetic_is_learnable_by_nearest_centroid():
  data = synthetic.make_synthetic(seed=0)
  flat = data.x_train.reshape(len(data.x_train), -1)
  centroids = np.stack(
      [flat[data.y_train == c].mean(axis=0) for c in range(10)]
  )
  test = data.x_test.reshape(len(data.x_test), -1)
  dist = ((test[:, None, :] - centroids[None]) ** 2).sum(-1)
  assert (dist.argmin(1) == data.y_test).mean() >= 0.9


def test_synthetic_rejects_bad_arguments():
  with pytest.raises(base.DatasetError) as err:
    synthetic.make_synthetic(num_classes=1)
  assert 'num_classes' in one_line(err)


def test_array_dataset_checks_lengths():
  with pytest.raises(base.DatasetError) as err:
    base.ArrayDataset(
        'bad', np.zeros((3, 2)), np.zeros(2), np.zeros((1, 2)), np.zeros(1), 2
    )
  assert 'x_train has 3 examples but y_train has 2' in one_line(err)


def test_array_dataset_notes_default_empty_and_must_be_one_line_strings():
  args = ('ok', np.zeros((1, 2)), np.zeros(1), np.zeros((1, 2)), np.zeros(1), 2)
  assert base.ArrayDataset(*args).notes == ()
  assert base.ArrayDataset(*args, notes=('a note',)).notes == ('a note',)
  for bad in (['a list'], ('two\nlines',), ('',), 'a string'):
    with pytest.raises(base.DatasetError) as err:
      base.ArrayDataset(*args, notes=bad)
    assert 'ok: notes must be a tuple of non-empty one-line strings' in one_line(err)


def _numbered(n_train: int, n_test: int, groups: bool = False) -> base.ArrayDataset:
  """x[i] = i (as a 1x1 'image'), y[i] = i % 3, optional groups i // 2."""
  def split(n):
    return np.arange(n, dtype=np.float32).reshape(n, 1, 1, 1), np.arange(n) % 3
  x_tr, y_tr = split(n_train)
  x_te, y_te = split(n_test)
  return base.ArrayDataset(
      'numbered', x_tr, y_tr, x_te, y_te, num_classes=3,
      train_groups=np.arange(n_train) // 2 if groups else None,
      test_groups=np.arange(n_test) // 2 if groups else None)


def test_subsample_sizes_order_and_alignment():
  data = _numbered(100, 40, groups=True)
  small = base.subsample(data, max_train=10, max_test=5, seed=7)
  ids = small.x_train.reshape(-1).astype(int)
  assert len(ids) == 10 and len(set(ids)) == 10
  assert list(ids) == sorted(ids)  # original relative order kept
  # Labels and groups follow their examples: y = i % 3, group = i // 2.
  np.testing.assert_array_equal(small.y_train, ids % 3)
  np.testing.assert_array_equal(small.train_groups, ids // 2)
  test_ids = small.x_test.reshape(-1).astype(int)
  assert len(test_ids) == 5
  assert small.notes == (
      'numbered: a seeded random subset (seed 7) of the examples: 10 of 100'
      ' train and 5 of 40 test examples',
  )
  np.testing.assert_array_equal(small.y_test, test_ids % 3)
  np.testing.assert_array_equal(small.test_groups, test_ids // 2)


def test_subsample_is_seeded_and_splits_draw_independently():
  data = _numbered(100, 40)
  a = base.subsample(data, max_train=10, max_test=5, seed=1)
  b = base.subsample(data, max_train=10, max_test=5, seed=1)
  c = base.subsample(data, max_train=10, max_test=5, seed=2)
  np.testing.assert_array_equal(a.x_train, b.x_train)
  assert not np.array_equal(a.x_train, c.x_train)
  # Changing (or not cutting) the test split leaves the training subset as is.
  d = base.subsample(data, max_train=10, max_test=0, seed=1)
  np.testing.assert_array_equal(a.x_train, d.x_train)
  assert len(d.y_test) == 40


def test_subsample_no_cut_returns_the_same_object_and_rejects_negatives():
  data = _numbered(10, 4)
  assert base.subsample(data) is data
  assert base.subsample(data, max_train=10, max_test=99) is data
  with pytest.raises(base.DatasetError, match=r'^max_test=-1: must be >= 0'):
    base.subsample(data, max_test=-1)
