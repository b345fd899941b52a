"""Tests for models.blocks: block coverage and FedPer personal weight names."""

from __future__ import annotations

import collections

import pytest
import tensorflow as tf

from models import blocks
from models import mnist_models
from models import registry

# Every registered model except the duplicate alias 'resnet8_edge'.
NAMES = sorted(set(registry.MODELS) - {'resnet8_edge'})


@pytest.mark.parametrize('name', NAMES)
def test_blocks_cover_every_weight_owning_layer_exactly_once(name, natural):
  model = natural(name)
  listed = [layer for block in blocks.model_blocks(model) for layer in block]
  owners = [l.name for l in model.layers if l.weights]
  assert collections.Counter(listed) == collections.Counter(owners)
  assert all(count == 1 for count in collections.Counter(listed).values())
  assert blocks.model_blocks(model)[-1] == ['logits']


def test_mnist_cnn_blocks():
  model = mnist_models.mnist_cnn((28, 28, 1), 10)
  assert blocks.model_blocks(model) == [['conv1_conv'], ['conv2_conv'],
                                        ['fc1'], ['logits']]


def test_personal_weight_names_mnist_cnn():
  model = mnist_models.mnist_cnn((28, 28, 1), 10)
  assert blocks.personal_weight_names(model, 0) == frozenset()
  assert blocks.personal_weight_names(model, 1) == {
      'logits/kernel:0', 'logits/bias:0'
  }
  assert blocks.personal_weight_names(model, 2) == {
      'fc1/kernel:0', 'fc1/bias:0', 'logits/kernel:0', 'logits/bias:0'
  }
  everything = blocks.personal_weight_names(model, 4)
  assert everything == {w.name for w in model.weights}


def test_personal_weight_names_same_on_rebuilt_model():
  first = mnist_models.mnist_cnn((28, 28, 1), 10)
  second = mnist_models.mnist_cnn((28, 28, 1), 10)
  assert (blocks.personal_weight_names(first, 3) ==
          blocks.personal_weight_names(second, 3))


def test_personal_weight_names_include_batch_norm_statistics(build):
  model = build('cnn_fedper', (32, 32, 3))
  names = blocks.personal_weight_names(model, 3)
  assert {
      'conv2_conv/kernel:0', 'conv2_bn/gamma:0', 'conv2_bn/beta:0',
      'conv2_bn/moving_mean:0', 'conv2_bn/moving_variance:0'
  } <= names
  assert not any(n.startswith('conv1_') for n in names)


def test_resnet_block_includes_its_shortcut(build):
  model = build('resnet34', (32, 32, 3))
  block = dict((b[0].split('_')[0], b) for b in blocks.model_blocks(model))
  # Order inside a block follows model.layers; membership is what matters.
  assert set(block['s2b01']) == {
      's2b01_conv1', 's2b01_bn1', 's2b01_conv2', 's2b01_bn2', 's2b01_proj',
      's2b01_projbn'
  }
  assert set(block['s2b02']) == {
      's2b02_conv1', 's2b02_bn1', 's2b02_conv2', 's2b02_bn2'
  }


@pytest.mark.parametrize('value', [5, -1, 1.0, True])
def test_out_of_range_personal_blocks_is_one_line_error(value):
  model = mnist_models.mnist_cnn((28, 28, 1), 10)
  with pytest.raises(blocks.BlocksError) as info:
    blocks.personal_weight_names(model, value)
  message = str(info.value)
  assert isinstance(info.value, ValueError)
  assert '\n' not in message
  assert 'mnist_cnn' in message and repr(value) in message
  assert '0..4' in message


def test_keras_default_names_are_rejected():
  model = tf.keras.Sequential([
      tf.keras.Input((3,)),
      tf.keras.layers.Dense(2),
      tf.keras.layers.Dense(2),
  ])
  with pytest.raises(blocks.BlocksError, match='default name'):
    blocks.model_blocks(model)


def test_non_consecutive_block_is_rejected():
  inputs = tf.keras.Input((3,), name='input')
  x = tf.keras.layers.Dense(2, name='a_first')(inputs)
  x = tf.keras.layers.Dense(2, name='b_middle')(x)
  x = tf.keras.layers.Dense(2, name='a_again')(x)
  with pytest.raises(blocks.BlocksError, match='a_again'):
    blocks.model_blocks(tf.keras.Model(inputs, x, name='bad'))


def test_nested_models_are_flattened():
  inner_in = tf.keras.Input((4,), name='inner_input')
  inner = tf.keras.Model(
      inner_in, tf.keras.layers.Dense(3, name='fc1')(inner_in), name='inner')
  outer_in = tf.keras.Input((4,), name='input')
  logits = tf.keras.layers.Dense(2, name='logits')(inner(outer_in))
  model = tf.keras.Model(outer_in, logits, name='outer')
  assert blocks.model_blocks(model) == [['fc1'], ['logits']]
  assert blocks.personal_weight_names(model, 2) == {
      'fc1/kernel:0', 'fc1/bias:0', 'logits/kernel:0', 'logits/bias:0'
  }


if __name__ == '__main__':
  raise SystemExit(pytest.main([__file__, '-q', '-p', 'no:cacheprovider']))
