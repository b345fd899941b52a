"""Small image classifiers: FedAvg MNIST models, the Keras MNIST CNN, toys.

* `mnist_2nn`, `mnist_cnn`: McMahan et al. 2017, "Communication-Efficient
  Learning of Deep Networks from Decentralized Data" (FedAvg), Sec. 3.
* `keras_mnist_cnn`: the Keras `mnist_cnn.py` example, the MNIST model of the
  RPN (random projection) compression experiments.
* `tiny_mlp`, `tiny_cnn`: toys for fast unit and end-to-end tests.

All return uncompiled functional `tf.keras.Model`s that output logits; layer
names follow the `<block>_<part>` convention of `models.common`.
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

from models import common

layers = tf.keras.layers


def mnist_2nn(input_shape: Sequence[int], num_classes: int) -> tf.keras.Model:
  """The FedAvg "2NN": an MLP with two hidden layers of 200 ReLU units.

  On (28, 28, 1) with 10 classes it has 199,210 parameters
  (784*200+200 + 200*200+200 + 200*10+10), as in McMahan et al. 2017.

  Args:
    input_shape: Shape of one example, e.g. (28, 28, 1); flattened.
    num_classes: Number of output logits.

  Returns:
    An uncompiled `tf.keras.Model` named 'mnist_2nn' mapping inputs to logits.
  """
  shape = common.as_shape(input_shape)
  num_classes = common.check_num_classes('mnist_2nn', num_classes)
  inputs = tf.keras.Input(shape, name='input')
  x = layers.Flatten(name='flatten')(inputs)
  x = layers.Dense(200, activation='relu', name='fc1')(x)
  x = layers.Dense(200, activation='relu', name='fc2')(x)
  logits = layers.Dense(num_classes, name='logits')(x)
  return tf.keras.Model(inputs, logits, name='mnist_2nn')


def mnist_cnn(input_shape: Sequence[int], num_classes: int) -> tf.keras.Model:
  """The FedAvg MNIST CNN: two 5x5 conv + 2x2 max-pool blocks, Dense 512.

  Conv 5x5x32 'same' ReLU, MaxPool 2x2, Conv 5x5x64 'same' ReLU, MaxPool 2x2,
  Dense 512 ReLU, Dense num_classes (McMahan et al. 2017, Sec. 3). On
  (28, 28, 1) with 10 classes: 832 + 51,264 + (7*7*64*512+512) + 5,130 =
  1,663,370 parameters. Also works on the 8x8 sklearn digits (2x2x64 features).

  Args:
    input_shape: (height, width, channels), height and width >= 4.
    num_classes: Number of output logits.

  Returns:
    An uncompiled `tf.keras.Model` named 'mnist_cnn'. Blocks: conv1, conv2,
    fc1, logits.
  """
  shape = common.image_shape('mnist_cnn', input_shape)
  num_classes = common.check_num_classes('mnist_cnn', num_classes)
  if min(shape[:2]) < 4:
    raise common.ModelError(f'mnist_cnn needs height, width >= 4, got {shape}')
  inputs = tf.keras.Input(shape, name='input')
  x = inputs
  for i, filters in enumerate((32, 64), start=1):
    x = layers.Conv2D(filters, 5, padding='same', activation='relu',
                      name=f'conv{i}_conv')(x)
    x = layers.MaxPooling2D(2, name=f'conv{i}_pool')(x)
  x = layers.Flatten(name='flatten')(x)
  x = layers.Dense(512, activation='relu', name='fc1')(x)
  logits = layers.Dense(num_classes, name='logits')(x)
  return tf.keras.Model(inputs, logits, name='mnist_cnn')


def keras_mnist_cnn(input_shape: Sequence[int],
                    num_classes: int,
                    *,
                    dropout: bool = False) -> tf.keras.Model:
  """The CNN of the Keras `mnist_cnn.py` example.

  Conv 3x3x32 'valid' ReLU, Conv 3x3x64 'valid' ReLU, MaxPool 2x2, Flatten,
  Dense 128 ReLU, Dense num_classes. On (28, 28, 1) with 10 classes:
  320 + 18,496 + (12*12*64*128+128) + 1,290 = 1,199,882 parameters.

  Args:
    input_shape: (height, width, channels), height and width >= 6.
    num_classes: Number of output logits.
    dropout: If True, add the example's two dropout layers: Dropout(0.25) after
      the pool and Dropout(0.5) after Dense 128 (no parameters). Default off.

  Returns:
    An uncompiled `tf.keras.Model` named 'keras_mnist_cnn'. Blocks: conv1,
    conv2, fc1, logits.
  """
  shape = common.image_shape('keras_mnist_cnn', input_shape)
  num_classes = common.check_num_classes('keras_mnist_cnn', num_classes)
  if min(shape[:2]) < 6:
    raise common.ModelError(
        f'keras_mnist_cnn needs height, width >= 6, got {shape}')
  inputs = tf.keras.Input(shape, name='input')
  x = layers.Conv2D(32, 3, activation='relu', name='conv1_conv')(inputs)
  x = layers.Conv2D(64, 3, activation='relu', name='conv2_conv')(x)
  x = layers.MaxPooling2D(2, name='conv2_pool')(x)
  if dropout:
    x = layers.Dropout(0.25, name='conv2_dropout')(x)
  x = layers.Flatten(name='flatten')(x)
  x = layers.Dense(128, activation='relu', name='fc1')(x)
  if dropout:
    x = layers.Dropout(0.5, name='fc1_dropout')(x)
  logits = layers.Dense(num_classes, name='logits')(x)
  return tf.keras.Model(inputs, logits, name='keras_mnist_cnn')


def keras_mnist_cnn_dropout(input_shape: Sequence[int], num_classes: int) -> tf.keras.Model:
  """`keras_mnist_cnn(..., dropout=True)`: the Keras example exactly, as `--model`.

  The dropout layers regularize the dense layers, which hold 98.6% of the
  parameters; they matter for RPN, whose convolutions learn only a spatially
  constant offset per kernel. Dropout masks are not seeded inside TFF
  computations, so two runs with identical flags differ slightly (measured:
  train loss 2.334 vs 2.303 after one tiny round), unlike the other models.
  """
  return keras_mnist_cnn(input_shape, num_classes, dropout=True)


def tiny_mlp(input_shape: Sequence[int],
             num_classes: int,
             *,
             hidden: int = 16) -> tf.keras.Model:
  """A one-hidden-layer MLP for tests: Flatten, Dense(hidden) ReLU, logits.

  On (8, 8, 1) with 10 classes and hidden=16: 64*16+16 + 16*10+10 = 1,210
  parameters.

  Args:
    input_shape: Shape of one example; flattened.
    num_classes: Number of output logits.
    hidden: Width of the hidden layer.

  Returns:
    An uncompiled `tf.keras.Model` named 'tiny_mlp'. Blocks: fc1, logits.
  """
  shape = common.as_shape(input_shape)
  num_classes = common.check_num_classes('tiny_mlp', num_classes)
  inputs = tf.keras.Input(shape, name='input')
  x = layers.Flatten(name='flatten')(inputs)
  x = layers.Dense(int(hidden), activation='relu', name='fc1')(x)
  logits = layers.Dense(num_classes, name='logits')(x)
  return tf.keras.Model(inputs, logits, name='tiny_mlp')


def tiny_cnn(input_shape: Sequence[int], num_classes: int) -> tf.keras.Model:
  """A one-conv CNN for tests: Conv 3x3x4 'same' ReLU, MaxPool 2, logits.

  On (8, 8, 1) with 10 classes: (3*3*1*4+4) + (4*4*4*10+10) = 40 + 650 = 690
  parameters.

  Args:
    input_shape: (height, width, channels), height and width >= 2.
    num_classes: Number of output logits.

  Returns:
    An uncompiled `tf.keras.Model` named 'tiny_cnn'. Blocks: conv1, logits.
  """
  shape = common.image_shape('tiny_cnn', input_shape)
  num_classes = common.check_num_classes('tiny_cnn', num_classes)
  if min(shape[:2]) < 2:
    raise common.ModelError(f'tiny_cnn needs height, width >= 2, got {shape}')
  inputs = tf.keras.Input(shape, name='input')
  x = layers.Conv2D(4, 3, padding='same', activation='relu',
                    name='conv1_conv')(inputs)
  x = layers.MaxPooling2D(2, name='conv1_pool')(x)
  x = layers.Flatten(name='flatten')(x)
  logits = layers.Dense(num_classes, name='logits')(x)
  return tf.keras.Model(inputs, logits, name='tiny_cnn')
