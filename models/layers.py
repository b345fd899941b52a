"""Small serializable custom layers used by the FedSuite builders.

All are registered with `tf.keras.utils.register_keras_serializable` under the
package 'fedsuite', so models containing them round-trip through
`model.save('m.keras')` / `tf.keras.models.load_model` with no `custom_objects`
(importing `models` is enough) and convert with `tf.lite.TFLiteConverter`.
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf

_PACKAGE = 'fedsuite'


@tf.keras.utils.register_keras_serializable(package=_PACKAGE)
class LocalResponseNormalization(tf.keras.layers.Layer):
  """Local response normalization across channels (Krizhevsky et al. 2012).

  Computes `x / (bias + alpha * sum_{|d| <= depth_radius} x_{c+d}^2) ** beta`
  with `tf.nn.local_response_normalization` (TFLite has it as a builtin op).
  The defaults are those of the TensorFlow CIFAR-10 tutorial model (`norm1`,
  `norm2` in `cifar10.py`), used by McMahan et al. 2017 (FedAvg):
  depth_radius=4, bias=1.0, alpha=0.001/9.0, beta=0.75. It has no weights.
  """

  def __init__(self,
               depth_radius: int = 4,
               bias: float = 1.0,
               alpha: float = 0.001 / 9.0,
               beta: float = 0.75,
               **kwargs: Any):
    super().__init__(**kwargs)
    self.depth_radius = int(depth_radius)
    self.bias = float(bias)
    self.alpha = float(alpha)
    self.beta = float(beta)

  def call(self, inputs: tf.Tensor) -> tf.Tensor:
    return tf.nn.local_response_normalization(
        inputs,
        depth_radius=self.depth_radius,
        bias=self.bias,
        alpha=self.alpha,
        beta=self.beta)

  def compute_output_shape(self, input_shape):
    return input_shape

  def get_config(self) -> dict[str, Any]:
    config = super().get_config()
    config.update(
        depth_radius=self.depth_radius,
        bias=self.bias,
        alpha=self.alpha,
        beta=self.beta)
    return config


@tf.keras.utils.register_keras_serializable(package=_PACKAGE)
class ZeroPadShortcut(tf.keras.layers.Layer):
  """The parameter-free "option A" ResNet shortcut (He et al. 2016, Sec. 4.2).

  Subsamples the spatial dims by `strides` (keeps every `strides`-th pixel, as a
  1x1 stride-s identity would) and zero-pads the channel dim up to
  `out_channels`, half the new channels before and half after. The CIFAR ResNets
  of He et al. (ResNet-20/32/44/56/110, 0.27M-1.7M parameters) use it for every
  shortcut that changes shape.
  """

  def __init__(self, out_channels: int, strides: int = 1, **kwargs: Any):
    super().__init__(**kwargs)
    self.out_channels = int(out_channels)
    self.strides = int(strides)

  def call(self, inputs: tf.Tensor) -> tf.Tensor:
    x = inputs[:, ::self.strides, ::self.strides, :]
    extra = self.out_channels - inputs.shape[-1]
    if extra < 0:
      raise ValueError(f'{self.name}: cannot pad {inputs.shape[-1]} channels '
                       f'down to {self.out_channels}')
    before = extra // 2
    return tf.pad(x, [[0, 0], [0, 0], [0, 0], [before, extra - before]])

  def get_config(self) -> dict[str, Any]:
    config = super().get_config()
    config.update(out_channels=self.out_channels, strides=self.strides)
    return config


def _unit_forget_bias(units: int):
  """LSTM bias initializer: ones for the forget gate, zeros elsewhere."""

  def init(shape, dtype=None):
    del shape
    return tf.concat([
        tf.zeros([units], dtype),
        tf.ones([units], dtype),
        tf.zeros([2 * units], dtype)
    ], axis=0)

  return init


@tf.keras.utils.register_keras_serializable(package=_PACKAGE)
class PeepholeLSTMCell(tf.keras.layers.Layer):
  """An LSTM cell with diagonal peephole connections (Gers & Schmidhuber 2000).

  The gates see the cell state: `i = sigmoid(W_i x + U_i h + b_i + p_i * c)`,
  `f = sigmoid(... + p_f * c)`, `c' = f * c + i * tanh(W_c x + U_c h + b_c)`,
  `o = sigmoid(... + p_o * c')`, `h' = o * tanh(c')`, as in TF1's
  `tf.nn.rnn_cell.LSTMCell(use_peepholes=True)`. It has the Keras LSTMCell
  weights (kernel, recurrent_kernel, bias; gate order i, f, c, o) plus three
  `units`-vectors, i.e. `3 * units` more parameters. Keras 2.14 no longer ships
  `PeepholeLSTMCell`; this one exists because it is the reading of the FedAvg
  Shakespeare LSTM that reproduces the paper's 866,578 parameters (see
  `models.lstm`). Use it inside `tf.keras.layers.RNN`.
  """

  def __init__(self, units: int, **kwargs: Any):
    super().__init__(**kwargs)
    self.units = int(units)
    self.state_size = [self.units, self.units]
    self.output_size = self.units

  def build(self, input_shape):
    input_dim = int(input_shape[-1])
    units = self.units
    self.kernel = self.add_weight(
        name='kernel', shape=(input_dim, 4 * units),
        initializer='glorot_uniform')
    self.recurrent_kernel = self.add_weight(
        name='recurrent_kernel', shape=(units, 4 * units),
        initializer='orthogonal')
    self.bias = self.add_weight(
        name='bias', shape=(4 * units,), initializer=_unit_forget_bias(units))
    self.input_gate_peephole_weights = self.add_weight(
        name='input_gate_peephole_weights', shape=(units,),
        initializer='glorot_uniform')
    self.forget_gate_peephole_weights = self.add_weight(
        name='forget_gate_peephole_weights', shape=(units,),
        initializer='glorot_uniform')
    self.output_gate_peephole_weights = self.add_weight(
        name='output_gate_peephole_weights', shape=(units,),
        initializer='glorot_uniform')
    super().build(input_shape)

  def call(self, inputs: tf.Tensor, states):
    h_tm1, c_tm1 = states
    z = (tf.matmul(inputs, self.kernel) +
         tf.matmul(h_tm1, self.recurrent_kernel) + self.bias)
    z_i, z_f, z_c, z_o = tf.split(z, 4, axis=-1)
    i = tf.sigmoid(z_i + self.input_gate_peephole_weights * c_tm1)
    f = tf.sigmoid(z_f + self.forget_gate_peephole_weights * c_tm1)
    c = f * c_tm1 + i * tf.tanh(z_c)
    o = tf.sigmoid(z_o + self.output_gate_peephole_weights * c)
    h = o * tf.tanh(c)
    return h, [h, c]

  def get_config(self) -> dict[str, Any]:
    config = super().get_config()
    config.update(units=self.units)
    return config
