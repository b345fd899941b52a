"""Tests for models.flops: hand-computed FLOPs and the FedGKT cost ratios."""

from __future__ import annotations

import pytest
import tensorflow as tf

from models import flops
from models import gkt

layers = tf.keras.layers
CIFAR = (32, 32, 3)


def _model(input_shape, *stack, dtype='float32'):
  inputs = tf.keras.Input(input_shape, dtype=dtype, name='input')
  x = inputs
  for layer in stack:
    x = layer(x)
  return tf.keras.Model(inputs, x)


def test_dense_by_hand():
  model = _model((4,), layers.Dense(3, name='logits'))
  # 4*3 = 12 MACs; the bias add is not counted.
  assert flops.forward_flops(model, (4,)) == 24
  assert flops.train_flops(model, (4,)) == 72
  assert flops.count_params(model) == 15


def test_conv_dense_by_hand():
  model = _model((5, 5, 2),
                 layers.Conv2D(4, 3, name='conv1_conv'),
                 layers.BatchNormalization(name='conv1_bn'),
                 layers.ReLU(name='conv1_relu'),
                 layers.MaxPooling2D(1, name='conv1_pool'),
                 layers.Flatten(name='flatten'),
                 layers.Dense(2, name='logits'))
  # Conv: output 3x3x4, each 3*3*2 MACs -> 9*4*18 = 648. BN, ReLU, pool free.
  # Dense: 36*2 = 72. Forward = 2 * 720.
  assert flops.forward_flops(model, (5, 5, 2)) == 1_440
  assert flops.train_flops(model, (5, 5, 2)) == 4_320


def test_strided_and_depthwise_conv_by_hand():
  model = _model((8, 8, 3),
                 layers.Conv2D(6, 3, strides=2, padding='same', name='a_conv'),
                 layers.DepthwiseConv2D(3, padding='same', depth_multiplier=2,
                                        name='b_dw'))
  # Conv: 4*4 outputs * 6 * (3*3*3) = 2,592; depthwise: 4*4 * 6*2 * 9 = 1,728.
  assert flops.forward_flops(model, (8, 8, 3)) == 2 * (2_592 + 1_728)


def test_lstm_and_per_step_dense_by_hand():
  model = _model((5,),
                 layers.Embedding(7, 3, name='embed'),
                 layers.LSTM(2, return_sequences=True, name='lstm1'),
                 layers.Dense(7, name='logits'),
                 dtype='int32')
  # LSTM per step: 3*8 + 2*8 = 40 MACs, 5 steps = 200; Dense per step 2*7=14,
  # 5 steps = 70; embedding lookup free.
  assert flops.forward_flops(model, (5,)) == 2 * 270


def test_known_models(build):
  # tiny_mlp: 64*16 + 16*10 = 1,184 MACs.
  assert flops.forward_flops(build('tiny_mlp', (8, 8, 1)), (8, 8, 1)) == 2_368
  # tiny_cnn: conv 8*8*4*9 = 2,304; dense 64*10 = 640.
  assert flops.forward_flops(build('tiny_cnn', (8, 8, 1)), (8, 8, 1)) == 5_888
  # mnist_2nn: 784*200 + 200*200 + 200*10 = 198,800 MACs.
  assert flops.forward_flops(build('mnist_2nn', (28, 28, 1)),
                             (28, 28, 1)) == 397_600


def test_unknown_dims_are_resolved_from_input_shape():
  model = _model((None, None, 1), layers.Conv2D(2, 3, padding='same',
                                                name='conv1_conv'))
  # 8*8 outputs * 2 * 9 = 1,152 MACs.
  assert flops.forward_flops(model, (8, 8, 1)) == 2_304


def test_mismatched_shape_and_unsupported_layers_raise():
  model = _model((4,), layers.Dense(3, name='logits'))
  with pytest.raises(ValueError):
    flops.forward_flops(model, (5,))
  transpose = _model((4, 4, 1), layers.Conv2DTranspose(2, 3, name='up_conv'))
  with pytest.raises(ValueError, match='up_conv'):
    flops.forward_flops(transpose, (4, 4, 1))


def test_shared_weights_counted_once():
  extractor, classifier, full = gkt.build_gkt_edge((8, 8, 3), 10)
  assert flops.count_params(full) == (
      flops.count_params(extractor) + flops.count_params(classifier))
  assert flops.forward_flops(full, (8, 8, 3)) == (
      flops.forward_flops(extractor, (8, 8, 3)) +
      flops.forward_flops(classifier, (8, 8, 16)))


# Forward FLOPs on 32x32x3, 10 classes, hand-computed (MACs x 2):
# basic ResNet-8 edge: stem 32*32*16*27 = 442,368; 6 convs 32*32*16*144 =
#   2,359,296 each; fc 160 -> 14,598,304 MACs.
# basic ResNet-56: stem 442,368; stage 1 18*2,359,296; stage 2 16*16*32*144 +
#   17*16*16*32*288 = 1,179,648 + 40,108,032; stage 3 likewise 1,179,648 +
#   40,108,032; fc 640 -> 125,485,696 MACs.
# bottleneck ResNet-8 edge: 442,368 + 4,718,592 + 4,456,448 + 640 = 9,618,048.
# bottleneck ResNet-56: 442,368 + 27,000,832 + 29,884,416 + 29,884,416 + 2,560
#   = 87,214,592 MACs.
FORWARD = {
    ('resnet8', 'basic'): 29_196_608,
    ('resnet56', 'basic'): 250_971_392,
    ('resnet110', 'basic'): 505_775_360,
    ('resnet8', 'bottleneck'): 19_236_096,
    ('resnet56', 'bottleneck'): 174_429_184,
    ('resnet110', 'bottleneck'): 334_861_312,
}


@pytest.mark.parametrize('name, block', sorted(FORWARD))
def test_resnet_forward_flops(build, name, block):
  model = build(name, CIFAR, block=block)
  assert flops.forward_flops(model, CIFAR) == FORWARD[name, block]
  assert flops.train_flops(model, CIFAR) == 3 * FORWARD[name, block]


def test_fedgkt_claims_with_released_bottleneck_models(build):
  """FedGKT: 9-17x fewer edge FLOPs and 54-105x fewer edge parameters."""
  edge = build('resnet8', CIFAR, block='bottleneck')
  r56 = build('resnet56', CIFAR, block='bottleneck')
  r110 = build('resnet110', CIFAR, block='bottleneck')
  edge_flops = flops.train_flops(edge, CIFAR)
  assert round(flops.train_flops(r56, CIFAR) / edge_flops) == 9
  assert round(flops.train_flops(r110, CIFAR) / edge_flops) == 17
  edge_params = flops.count_params(edge)
  assert round(flops.count_params(r56) / edge_params) == 54
  assert round(flops.count_params(r110) / edge_params) == 105


def test_fedgkt_ratios_with_basic_block_models(build):
  edge = build('resnet8', CIFAR)
  edge_flops = flops.train_flops(edge, CIFAR)
  edge_params = flops.count_params(edge)
  ratios = [(flops.train_flops(build(name, CIFAR), CIFAR) / edge_flops,
             flops.count_params(build(name, CIFAR)) / edge_params)
            for name in ('resnet56', 'resnet110')]
  assert [(round(f, 1), round(p, 1)) for f, p in ratios] == [(8.6, 57.6),
                                                             (17.3, 116.7)]


if __name__ == '__main__':
  raise SystemExit(pytest.main([__file__, '-q', '-p', 'no:cacheprovider']))
