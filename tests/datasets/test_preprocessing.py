"""CIFAR augmentation and test transform; Shakespeare padding label."""

import collections

import numpy as np
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
