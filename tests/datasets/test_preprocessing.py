"""CIFAR augmentation and test transform; Shakespeare padding label."""

import collections

import numpy as np
import pytest
import tensorflow as tf

from datasets import preprocessing
from datasets import shakespeare


def image(seed=0):
  return tf.constant(np.random.default_rng(seed).random((32, 32, 3), dtype=np.float32))


def test_cifar_train_map_crops_to_24_and_whitens():
  out = preprocessing.cifar_train_map(collections.OrderedDict(x=image(), y=tf.constant(3)), tf.constant([1, 2], tf.int64))
  assert out['x'].shape == (24, 24, 3) and int(out['y']) == 3
  assert abs(float(tf.reduce_mean(out['x']))) < 1e-4
  assert abs(float(tf.math.reduce_std(out['x'])) - 1.0) < 1e-2


def test_cifar_train_map_is_deterministic_per_seed():
  element = collections.OrderedDict(x=image(), y=tf.constant(1))
  a = preprocessing.cifar_train_map(element, tf.constant([5, 6], tf.int64))['x']
  b = preprocessing.cifar_train_map(element, tf.constant([5, 6], tf.int64))['x']
  c = preprocessing.cifar_train_map(element, tf.constant([7, 8], tf.int64))['x']
  np.testing.assert_array_equal(a, b)
  assert not np.allclose(a, c)


def test_cifar_eval_map_takes_the_central_crop():
  x = np.zeros((2, 32, 32, 3), np.float32)
  x[:, 4:28, 4:28, :] = np.arange(24 * 24 * 3, dtype=np.float32).reshape(24, 24, 3)
  out = preprocessing.cifar_eval_map(tf.constant(x)).numpy()
  assert out.shape == (2, 24, 24, 3)
  expected = tf.image.per_image_standardization(x[:, 4:28, 4:28, :]).numpy()
  np.testing.assert_allclose(out, expected, rtol=1e-6)


def test_registry_defaults_to_identity_and_knows_text_padding():
  assert preprocessing.preprocessing_for('digits') == preprocessing.Preprocessing()
  mnist = preprocessing.preprocessing_for('mnist')
  assert mnist.train_map is None and mnist.batch_map is mnist.eval_map is preprocessing.pixels_to_float
  assert preprocessing.preprocessing_for('shakespeare').ignore_label == shakespeare.PAD_ID == 0
  assert tuple(preprocessing.preprocessing_for('cifar10').model_input_shape) == (24, 24, 3)


def test_pixels_to_float_is_the_loaders_old_float32_division_bit_for_bit():
  pixels = np.arange(256, dtype=np.uint8).reshape(16, 16)
  converted = preprocessing.pixels_to_float(tf.constant(pixels)).numpy()
  assert converted.dtype == np.float32
  np.testing.assert_array_equal(converted, pixels.astype(np.float32) / 255.0)
  floats = tf.constant([0.25, 1.0])
  assert preprocessing.pixels_to_float(floats) is floats


def test_cifar_maps_take_uint8_pixels_as_they_took_floats():
  raw = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
  as_float = raw.astype(np.float32) / 255.0
  np.testing.assert_array_equal(preprocessing.cifar_eval_map(tf.constant(raw)).numpy(),
                                preprocessing.cifar_eval_map(tf.constant(as_float)).numpy())
  seed = tf.constant([3, 4], tf.int64)
  element = lambda x: {'x': tf.constant(x[0]), 'y': tf.constant(1)}
  np.testing.assert_array_equal(
      preprocessing.cifar_train_map(element(raw), seed)['x'].numpy(),
      preprocessing.cifar_train_map(element(as_float), seed)['x'].numpy())


def test_model_input_dtype():
  assert preprocessing.model_input_dtype(preprocessing.preprocessing_for('mnist'), tf.uint8) == tf.float32
  assert preprocessing.model_input_dtype(preprocessing.preprocessing_for('cifar10'), tf.uint8) == tf.float32
  assert preprocessing.model_input_dtype(preprocessing.preprocessing_for('shakespeare'), tf.int32) == tf.int32


# The 'pad32' CIFAR pipeline (--cifar_input=pad32).

CIFAR10_MEAN = np.array([0.4914, 0.4822, 0.4465], np.float32)
CIFAR10_STD = np.array([0.2470, 0.2435, 0.2616], np.float32)


def raw_images(n, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)


def pad32_train(x, seed, dataset='cifar10'):
  prep = preprocessing.preprocessing_for(dataset, cifar_input='pad32')
  element = collections.OrderedDict(x=tf.constant(x), y=tf.constant(7))
  out = prep.train_map(element, tf.constant(seed, tf.int64))
  assert int(out['y']) == 7
  return out['x'].numpy()


def windows_matching(out, raw):
  """(top, left, flipped) of the 32x32 windows of the 4-pixel zero-padded image equal to `out`."""
  pixels = np.pad(raw.astype(np.float32) / np.float32(255.0), ((4, 4), (4, 4), (0, 0)))
  undone = out * CIFAR10_STD + CIFAR10_MEAN
  found = []
  for top in range(9):
    for left in range(9):
      window = pixels[top:top + 32, left:left + 32]
      for flipped, candidate in ((False, window), (True, window[:, ::-1])):
        if np.allclose(undone, candidate, atol=1e-5):
          found.append((top, left, flipped))
  return found


def test_pad32_train_map_is_one_window_of_the_padded_image_normalized_per_channel():
  raw = raw_images(1)[0]
  positions = set()
  for seed in range(12):
    out = pad32_train(raw, [seed, 1])
    assert out.shape == (32, 32, 3) and out.dtype == np.float32
    found = windows_matching(out, raw)
    assert len(found) == 1, (seed, found)
    positions.add(found[0])
  # 12 seeds land on several offsets and both orientations (81 x 2 possible).
  assert len({p[:2] for p in positions}) > 6 and {p[2] for p in positions} == {False, True}


def test_pad32_padding_is_black_before_normalization():
  white = (1.0 - CIFAR10_MEAN) / CIFAR10_STD
  black = (0.0 - CIFAR10_MEAN) / CIFAR10_STD
  possible = {32 * 32 - (32 - dy) * (32 - dx) for dy in range(5) for dx in range(5)}
  black_counts = []
  for seed in range(12):
    out = pad32_train(np.full((32, 32, 3), 255, np.uint8), [seed, 5])
    is_black = np.isclose(out, black, atol=1e-5).all(axis=-1)
    assert (is_black | np.isclose(out, white, atol=1e-5).all(axis=-1)).all()
    assert int(is_black.sum()) in possible  # Whole padded rows/columns at the border.
    black_counts.append(int(is_black.sum()))
  assert max(black_counts) > 0


def test_pad32_train_map_is_deterministic_per_seed_and_takes_uint8_as_floats():
  raw = raw_images(1, seed=3)[0]
  a = pad32_train(raw, [5, 6])
  np.testing.assert_array_equal(a, pad32_train(raw, [5, 6]))
  assert not np.allclose(a, pad32_train(raw, [7, 8]))
  as_float = raw.astype(np.float32) / 255.0
  np.testing.assert_array_equal(a, pad32_train(as_float, [5, 6]))


def test_pad32_eval_map_is_the_whole_image_normalized():
  raw = raw_images(3)
  prep = preprocessing.preprocessing_for('cifar10', cifar_input='pad32')
  out = prep.eval_map(tf.constant(raw)).numpy()
  assert out.shape == (3, 32, 32, 3)
  expected = (raw.astype(np.float32) / np.float32(255.0) - CIFAR10_MEAN) / CIFAR10_STD
  np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(prep.eval_map(tf.constant(raw[0])).numpy(), expected[0], rtol=1e-6, atol=1e-6)
  # CIFAR-100 uses its own statistics.
  c100 = preprocessing.preprocessing_for('cifar100', cifar_input='pad32').eval_map(tf.constant(raw)).numpy()
  np.testing.assert_allclose(c100[0, 0, 0], (raw[0, 0, 0] / 255.0 - np.array([0.5071, 0.4865, 0.4409]))
                             / np.array([0.2673, 0.2564, 0.2762]), rtol=1e-5)


def test_cifar_input_lookup():
  assert tuple(preprocessing.preprocessing_for('cifar10', cifar_input='pad32').model_input_shape) == (32, 32, 3)
  assert preprocessing.preprocessing_for('cifar10', cifar_input='crop24') is preprocessing.preprocessing_for('cifar10')
  assert preprocessing.model_input_dtype(
      preprocessing.preprocessing_for('cifar100', cifar_input='pad32'), tf.uint8) == tf.float32
  with pytest.raises(ValueError, match=r'^--cifar_input=pad32: only for --dataset=cifar10 or cifar100, not mnist$'):
    preprocessing.preprocessing_for('mnist', cifar_input='pad32')
  with pytest.raises(ValueError, match=r"^--cifar_input='pad': allowed: crop24, pad32$"):
    preprocessing.preprocessing_for('cifar10', cifar_input='pad')
