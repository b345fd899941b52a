"""MobileNet-v1 (Howard et al. 2017) for 32x32 inputs, as used by FedPer.

Arivazhagan et al. 2019 ("Federated Learning with Personalization Layers")
train MobileNet-v1 from scratch on CIFAR and FLICKR-AES and personalize its last
blocks. This is the standard architecture with the CIFAR adaptation common in
the literature: the stem convolution has stride 1 instead of 2 (a 32x32 image
cannot afford 5 halvings), and the 13 depthwise-separable blocks keep
MobileNet's strides, so the maps go 32 -> 16 -> 8 -> 4 -> 2 before global
average pooling. ReLU (not ReLU6), no dropout, no pretrained weights.

Blocks (the `num_blocks` keyword keeps the first n of them; FedPer's "11
depthwise+pointwise blocks" is `num_blocks=11`, which ends at 512 channels on a
4x4 map):

  #   pointwise filters  stride      #   pointwise filters  stride
  1   64                 1           8   512                1
  2   128                2           9   512                1
  3   128                1           10  512                1
  4   256                2           11  512                1
  5   256                1           12  1024               2
  6   512                2           13  1024               1
  7   512                1
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

from models import common

layers = tf.keras.layers

# (pointwise filters, depthwise stride) of MobileNet-v1's 13 separable blocks.
MOBILENET_V1_BLOCKS: tuple[tuple[int, int], ...] = (
    (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1),
    (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1))


def mobilenet_v1(input_shape: Sequence[int],
                 num_classes: int,
                 *,
                 width_multiplier: float = 1.0,
                 num_blocks: int = 13) -> tf.keras.Model:
  """MobileNet-v1 for 32x32 images (stem stride 1), logits output.

  stem: Conv 3x3 x int(32*alpha), stride 1, + BN + ReLU; then `num_blocks`
  depthwise-separable blocks `dwNN` = DepthwiseConv 3x3 (stride s) + BN + ReLU,
  Conv 1x1 x int(filters*alpha) + BN + ReLU; global average pool; Dense logits.
  Convolutions have no bias (followed by BN). Channel counts use Keras'
  `int(filters * alpha)` rounding.

  On (32, 32, 3), 10 classes, alpha=1, 13 blocks: 3,239,114 parameters, of which
  21,888 are BN moving statistics (3,217,226 trainable). Per block with cin ->
  cout: 9*cin (depthwise) + 4*cin (BN) + cin*cout (pointwise) + 4*cout (BN);
  stem 3*3*3*32 + 4*32 = 992; logits 1024*10 + 10 = 10,250.

  Args:
    input_shape: (height, width, channels), e.g. (32, 32, 3).
    num_classes: Number of output logits.
    width_multiplier: MobileNet's alpha; scales every layer's channels.
    num_blocks: How many of the 13 depthwise-separable blocks to keep (1..13).

  Returns:
    An uncompiled `tf.keras.Model` named 'mobilenet_v1'. Blocks: stem,
    dw01..dwNN, logits.
  """
  shape = common.image_shape('mobilenet_v1', input_shape)
  num_classes = common.check_num_classes('mobilenet_v1', num_classes)
  if not 1 <= num_blocks <= len(MOBILENET_V1_BLOCKS):
    raise common.ModelError(
        f'mobilenet_v1: num_blocks must be in 1..{len(MOBILENET_V1_BLOCKS)},'
        f' got {num_blocks}')
  if width_multiplier <= 0:
    raise common.ModelError(
        f'mobilenet_v1: width_multiplier must be > 0, got {width_multiplier}')

  def width(filters: int) -> int:
    channels = int(filters * width_multiplier)
    if channels < 1:
      raise common.ModelError(
          f'mobilenet_v1: width_multiplier={width_multiplier} leaves {filters}'
          ' filters with no channels')
    return channels

  inputs = tf.keras.Input(shape, name='input')
  x = layers.Conv2D(width(32), 3, padding='same', use_bias=False,
                    name='stem_conv')(inputs)
  x = layers.BatchNormalization(name='stem_bn')(x)
  x = layers.ReLU(name='stem_relu')(x)
  for i, (filters, strides) in enumerate(
      MOBILENET_V1_BLOCKS[:num_blocks], start=1):
    block = f'dw{i:02d}'
    x = layers.DepthwiseConv2D(3, strides=strides, padding='same',
                               use_bias=False, name=f'{block}_dwconv')(x)
    x = layers.BatchNormalization(name=f'{block}_dwbn')(x)
    x = layers.ReLU(name=f'{block}_dwrelu')(x)
    x = layers.Conv2D(width(filters), 1, use_bias=False,
                      name=f'{block}_pwconv')(x)
    x = layers.BatchNormalization(name=f'{block}_pwbn')(x)
    x = layers.ReLU(name=f'{block}_pwrelu')(x)
  x = layers.GlobalAveragePooling2D(name='gap')(x)
  logits = layers.Dense(num_classes, name='logits')(x)
  return tf.keras.Model(inputs, logits, name='mobilenet_v1')
