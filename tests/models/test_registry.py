"""Tests for models.registry: names, errors and the common builder contract."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from models import registry

EXPECTED_NAMES = {
    'mnist_2nn', 'mnist_cnn', 'keras_mnist_cnn', 'keras_mnist_cnn_dropout', 'cifar_cnn',
    'tiny_mlp', 'tiny_cnn', 'char_lstm', 'cnn_fedper', 'mobilenet_v1', 'resnet34',
    'resnet56', 'resnet110', 'resnet8', 'resnet8_edge', 'resnet55_server',
    'resnet109_server'
}
# Cheap to build: built twice to check that layer names are explicit/stable.
SMALL = ('mnist_2nn', 'mnist_cnn', 'keras_mnist_cnn', 'keras_mnist_cnn_dropout', 'cifar_cnn', 'tiny_mlp',
         'tiny_cnn', 'cnn_fedper', 'resnet8')


def test_registered_names():
  assert set(registry.MODELS) == EXPECTED_NAMES


def test_every_registered_model_has_a_natural_shape(natural_shapes):
  assert set(natural_shapes) == set(registry.MODELS)


def test_unknown_name_is_one_line_model_error_listing_names():
  with pytest.raises(registry.ModelError) as info:
    registry.build_model('resnet9000', (32, 32, 3), 10)
  message = str(info.value)
  assert isinstance(info.value, ValueError)
  assert '\n' not in message
  assert 'resnet9000' in message
  for name in registry.MODELS:
    assert name in message


@pytest.mark.parametrize('name, shape', [
    ('mnist_cnn', (784,)),
    ('cifar_cnn', (24, 24)),
    ('char_lstm', (80, 1)),
    ('tiny_mlp', ()),
    ('tiny_mlp', (8, -1)),
])
def test_bad_input_shape_raises_model_error(name, shape):
  with pytest.raises(registry.ModelError):
    registry.build_model(name, shape, 10)


def test_bad_num_classes_raises_model_error():
  with pytest.raises(registry.ModelError):
    registry.build_model('tiny_mlp', (8, 8, 1), 0)


def test_options_are_passed_to_the_builder():
  model = registry.build_model('tiny_mlp', (8, 8, 1), 10, hidden=32)
  assert model.count_params() == 64 * 32 + 32 + 32 * 10 + 10


def test_unknown_option_is_a_type_error():
  with pytest.raises(TypeError):
    registry.build_model('tiny_mlp', (8, 8, 1), 10, hiden=32)


@pytest.mark.parametrize('name', sorted(EXPECTED_NAMES))
def test_uncompiled_logits_model(name, natural, natural_shapes):
  model = natural(name)
  input_shape, num_classes = natural_shapes[name]
  assert isinstance(model, tf.keras.Model)
  assert model.optimizer is None  # Uncompiled.
  assert model.input_shape == (None, *input_shape)
  logits = model.get_layer('logits')
  assert logits is model.layers[-1]
  assert isinstance(logits, tf.keras.layers.Dense)
  assert logits.get_config()['activation'] == 'linear'
  if name == 'char_lstm':
    assert model.output_shape == (None, input_shape[0], num_classes)
  else:
    assert model.output_shape == (None, num_classes)


@pytest.mark.parametrize('name', SMALL)
def test_layer_names_are_stable_across_builds(name, natural_shapes):
  input_shape, num_classes = natural_shapes[name]
  first = registry.build_model(name, input_shape, num_classes)
  second = registry.build_model(name, input_shape, num_classes)
  assert [l.name for l in first.layers] == [l.name for l in second.layers]
  assert [w.name for w in first.weights] == [w.name for w in second.weights]


@pytest.mark.parametrize('name', ('tiny_cnn', 'cnn_fedper', 'resnet8'))
def test_forward_pass_gives_finite_logits(name, natural, natural_shapes):
  model = natural(name)
  input_shape, num_classes = natural_shapes[name]
  x = np.random.RandomState(0).rand(2, *input_shape).astype(np.float32)
  logits = model(x, training=False).numpy()
  assert logits.shape == (2, num_classes)
  assert np.all(np.isfinite(logits))


if __name__ == '__main__':
  raise SystemExit(pytest.main([__file__, '-q', '-p', 'no:cacheprovider']))
