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
  assert preprocessing.preprocessing_for('mnist') == preprocessing.Preprocessing()
  assert preprocessing.preprocessing_for('shakespeare').ignore_label == shakespeare.PAD_ID == 0
  assert tuple(preprocessing.preprocessing_for('cifar10').model_input_shape) == (24, 24, 3)
