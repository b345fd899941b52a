"""CIFAR-size CNNs: the FedAvg CIFAR-10 CNN and the small FedPer CNN.

* `cifar_cnn`: the TensorFlow CIFAR-10 tutorial model (`cifar10.py` of the old
  TF models repo), which McMahan et al. 2017 (FedAvg, Sec. 3) train on 24x24x3
  crops of CIFAR-10.
* `cnn_fedper`: a small 2-conv-block + 2-dense-block CNN for FedPer
  (Arivazhagan et al. 2019, "Federated Learning with Personalization Layers")
  experiments on 32x32x3 (CIFAR) or 28x28x1 (MNIST-like) inputs; its four
  blocks are the base/personalization split points.
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

from models import common
from models import layers as fs_layers

layers = tf.keras.layers


def cifar_cnn(input_shape: Sequence[int], num_classes: int) -> tf.keras.Model:
  """The TensorFlow CIFAR-10 tutorial CNN used by FedAvg (McMahan et al. 2017).

  conv1: Conv 5x5x64 'same' ReLU, MaxPool 3x3 stride 2 'same', LRN;
  conv2: Conv 5x5x64 'same' ReLU, LRN, MaxPool 3x3 stride 2 'same';
  Flatten, Dense 384 ReLU (fc1), Dense 192 ReLU (fc2), Dense num_classes.
  LRN = `layers.LocalResponseNormalization(depth_radius=4, bias=1.0,
  alpha=0.001/9.0, beta=0.75)`, as in the tutorial.

  On (24, 24, 3) with 10 classes the maps are 24 -> 12 -> 6, and the model has
  exactly 1,068,298 parameters:
    conv1  5*5*3*64 + 64          =   4,864
    conv2  5*5*64*64 + 64         = 102,464
    fc1    6*6*64*384 + 384       = 885,120
    fc2    384*192 + 192          =  73,920
    logits 192*10 + 10            =   1,930

  Args:
    input_shape: (height, width, channels), 24x24x3 for the FedAvg setup.
    num_classes: Number of output logits.

  Returns:
    An uncompiled `tf.keras.Model` named 'cifar_cnn'. Blocks: conv1, conv2,
    fc1, fc2, logits.
  """
  shape = common.image_shape('cifar_cnn', input_shape)
  num_classes = common.check_num_classes('cifar_cnn', num_classes)
  inputs = tf.keras.Input(shape, name='input')
  x = layers.Conv2D(64, 5, padding='same', activation='relu',
                    name='conv1_conv')(inputs)
  x = layers.MaxPooling2D(3, strides=2, padding='same', name='conv1_pool')(x)
  x = fs_layers.LocalResponseNormalization(name='conv1_lrn')(x)
  x = layers.Conv2D(64, 5, padding='same', activation='relu',
                    name='conv2_conv')(x)
  x = fs_layers.LocalResponseNormalization(name='conv2_lrn')(x)
  x = layers.MaxPooling2D(3, strides=2, padding='same', name='conv2_pool')(x)
  x = layers.Flatten(name='flatten')(x)
  x = layers.Dense(384, activation='relu', name='fc1')(x)
  x = layers.Dense(192, activation='relu', name='fc2')(x)
  logits = layers.Dense(num_classes, name='logits')(x)
  return tf.keras.Model(inputs, logits, name='cifar_cnn')


def cnn_fedper(input_shape: Sequence[int],
               num_classes: int,
               *,
               hidden: int = 128,
               batch_norm: bool = True) -> tf.keras.Model:
  """A small CNN with 4 blocks for FedPer: 2 conv blocks + 2 dense blocks.

  conv1: Conv 5x5x32 'same' (+ BN) + ReLU + MaxPool 2x2;
  conv2: Conv 5x5x64 'same' (+ BN) + ReLU + MaxPool 2x2;
  fc1: Dense `hidden` ReLU; logits: Dense num_classes.
  With BN the convolutions have no bias (BN's beta replaces it).

  Parameters with batch_norm=True and hidden=128 (BN counts gamma, beta and the
  two non-trainable moving statistics, 4 per channel):
    (32, 32, 3), 10 classes: 2,400 + 128 + 51,200 + 256 + (8*8*64*128+128)
      + 1,290 = 579,690.
    (28, 28, 1), 10 classes: 800 + 128 + 51,200 + 256 + (7*7*64*128+128)
      + 1,290 = 455,210.

  Args:
    input_shape: (height, width, channels), e.g. (32, 32, 3) or (28, 28, 1).
    num_classes: Number of output logits.
    hidden: Width of the hidden dense block fc1.
    batch_norm: Whether the conv blocks use batch normalization.

  Returns:
    An uncompiled `tf.keras.Model` named 'cnn_fedper'. Blocks: conv1, conv2,
    fc1, logits (so FedPer's K_P ranges over 0..4).
  """
  shape = common.image_shape('cnn_fedper', input_shape)
  num_classes = common.check_num_classes('cnn_fedper', num_classes)
  if min(shape[:2]) < 4:
    raise common.ModelError(f'cnn_fedper needs height, width >= 4, got {shape}')
  inputs = tf.keras.Input(shape, name='input')
  x = inputs
  for i, filters in enumerate((32, 64), start=1):
    x = layers.Conv2D(filters, 5, padding='same', use_bias=not batch_norm,
                      name=f'conv{i}_conv')(x)
    if batch_norm:
      x = layers.BatchNormalization(name=f'conv{i}_bn')(x)
    x = layers.ReLU(name=f'conv{i}_relu')(x)
    x = layers.MaxPooling2D(2, name=f'conv{i}_pool')(x)
  x = layers.Flatten(name='flatten')(x)
  x = layers.Dense(int(hidden), activation='relu', name='fc1')(x)
  logits = layers.Dense(num_classes, name='logits')(x)
  return tf.keras.Model(inputs, logits, name='cnn_fedper')
