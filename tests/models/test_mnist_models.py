"""Tests for models.mnist_models: exact sizes, shapes, names and determinism."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from models import common
from models import flops
from models import mnist_models
from models import registry


def _seeded_weights(builder, *args, seed: int = 7, **kwargs):
  tf.keras.utils.set_random_seed(seed)
  return builder(*args, **kwargs).get_weights()


@pytest.mark.parametrize('builder, input_shape, expected', [
    # 784*200+200 + 200*200+200 + 200*10+10 = 157,000 + 40,200 + 2,010.
    (mnist_models.mnist_2nn, (28, 28, 1), 199_210),
    # conv1 5*5*1*32+32 = 832; conv2 5*5*32*64+64 = 51,264;
    # fc1 (7*7*64)*512+512 = 1,606,144; logits 512*10+10 = 5,130.
    (mnist_models.mnist_cnn, (28, 28, 1), 1_663_370),
    # Digits 8x8: maps 8 -> 4 -> 2; fc1 (2*2*64)*512+512 = 131,584;
    # 832 + 51,264 + 131,584 + 5,130.
    (mnist_models.mnist_cnn, (8, 8, 1), 188_810),
    # conv1 3*3*1*32+32 = 320; conv2 3*3*32*64+64 = 18,496; maps 28->26->24->12;
    # fc1 (12*12*64)*128+128 = 1,179,776; logits 128*10+10 = 1,290.
    (mnist_models.keras_mnist_cnn, (28, 28, 1), 1_199_882),
    # 64*16+16 + 16*10+10.
    (mnist_models.tiny_mlp, (8, 8, 1), 1_210),
    # conv 3*3*1*4+4 = 40; logits (4*4*4)*10+10 = 650.
    (mnist_models.tiny_cnn, (8, 8, 1), 690),
])
def test_exact_parameter_counts(builder, input_shape, expected):
  model = builder(input_shape, 10)
  assert flops.count_params(model) == expected
  assert model.count_params() == expected
  assert model.output_shape == (None, 10)


def test_mnist_cnn_layers():
  model = mnist_models.mnist_cnn((28, 28, 1), 10)
  assert [l.name for l in model.layers] == [
      'input', 'conv1_conv', 'conv1_pool', 'conv2_conv', 'conv2_pool',
      'flatten', 'fc1', 'logits'
  ]
  assert model.get_layer('conv1_conv').output_shape == (None, 28, 28, 32)
  assert model.get_layer('conv2_pool').output_shape == (None, 7, 7, 64)


def test_mnist_cnn_on_digits_forward():
  model = mnist_models.mnist_cnn((8, 8, 1), 10)
  x = np.random.RandomState(0).rand(3, 8, 8, 1).astype(np.float32)
  assert model(x).shape == (3, 10)


def test_keras_mnist_cnn_dropout_option_adds_no_parameters():
  plain = mnist_models.keras_mnist_cnn((28, 28, 1), 10)
  with_dropout = mnist_models.keras_mnist_cnn((28, 28, 1), 10, dropout=True)
  assert not any(
      isinstance(l, tf.keras.layers.Dropout) for l in plain.layers)
  rates = {l.name: l.rate for l in with_dropout.layers
           if isinstance(l, tf.keras.layers.Dropout)}
  assert rates == {'conv2_dropout': 0.25, 'fc1_dropout': 0.5}
  assert with_dropout.count_params() == plain.count_params() == 1_199_882
  registered = registry.build_model('keras_mnist_cnn_dropout', (28, 28, 1), 10)
  assert [l.name for l in registered.layers] == [l.name for l in with_dropout.layers]


def test_tiny_mlp_hidden_option():
  model = mnist_models.tiny_mlp((8, 8, 1), 3, hidden=5)
  assert model.count_params() == 64 * 5 + 5 + 5 * 3 + 3


def test_too_small_images_raise():
  with pytest.raises(common.ModelError):
    mnist_models.mnist_cnn((3, 3, 1), 10)
  with pytest.raises(common.ModelError):
    mnist_models.keras_mnist_cnn((5, 5, 1), 10)


@pytest.mark.parametrize('builder, input_shape', [
    (mnist_models.mnist_2nn, (28, 28, 1)),
    (mnist_models.mnist_cnn, (8, 8, 1)),
    (mnist_models.keras_mnist_cnn, (28, 28, 1)),
    (mnist_models.tiny_mlp, (8, 8, 1)),
    (mnist_models.tiny_cnn, (8, 8, 1)),
])
def test_deterministic_under_seed(builder, input_shape):
  first = _seeded_weights(builder, input_shape, 10)
  second = _seeded_weights(builder, input_shape, 10)
  other = _seeded_weights(builder, input_shape, 10, seed=8)
  assert len(first) == len(second)
  for a, b in zip(first, second):
    np.testing.assert_array_equal(a, b)
  assert not np.array_equal(first[0], other[0])


if __name__ == '__main__':
  raise SystemExit(pytest.main([__file__, '-q', '-p', 'no:cacheprovider']))
