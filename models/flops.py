"""Analytic parameter and FLOP counts of Keras models, per example.

Conventions (the usual ones of the FedGKT / MobileNet / ResNet papers):

* `count_params`: every weight once (shared layers are not double counted),
  trainable and non-trainable (so BatchNorm's moving mean and variance count:
  4 parameters per BN channel, against 2 in PyTorch's `parameters()`).
* `forward_flops`: 2 FLOPs per multiply-accumulate (MAC) of the layers that
  dominate the cost, computed from layer configs, weight shapes and output
  shapes (no execution):
    - Conv1D/2D/3D: output positions x kernel size
      (oh * ow * kh * kw * cin/groups * cout for Conv2D);
    - DepthwiseConv2D: output positions x depthwise kernel size
      (oh * ow * kh * kw * cin * depth_multiplier);
    - Dense: positions x in * out (positions = 1 for a vector input, T for a
      per-time-step Dense on (T, in));
    - LSTM/GRU/RNN cells with `kernel` and `recurrent_kernel`: per time step
      in * G*units + units * G*units (G = 4 gates for an LSTM).
  Not counted (cheap, elementwise or memory-bound): bias adds, BatchNorm,
  activations, pooling, LRN, residual adds, padding, embedding lookups, LSTM
  gate nonlinearities and peephole products. A weight-owning layer of another
  type raises ValueError rather than being silently counted as free.
* `train_flops`: 3 x forward. The backward pass of each counted layer costs
  about twice its forward (one matmul/convolution for the gradient with respect
  to its input, one for the gradient with respect to its weights); optimizer
  updates are ignored.
"""

from __future__ import annotations

from collections.abc import Sequence
import math

import tensorflow as tf

_FREE_WEIGHTED_LAYERS = (
    tf.keras.layers.BatchNormalization,
    tf.keras.layers.LayerNormalization,
    tf.keras.layers.Embedding,
)
_CONV_LAYERS = (
    tf.keras.layers.Conv1D,
    tf.keras.layers.Conv2D,
    tf.keras.layers.Conv3D,
    tf.keras.layers.DepthwiseConv2D,
)
_UNSUPPORTED_CONV_LAYERS = (
    tf.keras.layers.Conv1DTranspose,
    tf.keras.layers.Conv2DTranspose,
    tf.keras.layers.Conv3DTranspose,
    tf.keras.layers.SeparableConv1D,
    tf.keras.layers.SeparableConv2D,
)


def count_params(model: tf.keras.Model) -> int:
  """Total number of parameters, trainable and non-trainable, each once."""
  unique = {id(w): w for w in model.weights}
  return sum(math.prod(w.shape) for w in unique.values())


def _leaf_layers(model: tf.keras.Model) -> list[tf.keras.layers.Layer]:
  result = []
  for layer in model.layers:
    if isinstance(layer, tf.keras.Model):
      result.extend(_leaf_layers(layer))
    else:
      result.append(layer)
  return result


def _single_shape(shape, layer: tf.keras.layers.Layer, what: str):
  if isinstance(shape, list):
    raise ValueError(f'{layer.name}: multi-tensor {what} not supported')
  return tuple(shape)


def _positions(shape: tuple, layer: tf.keras.layers.Layer) -> int:
  """Product of the dims between batch and channels/features."""
  dims = shape[1:-1]
  if any(d is None for d in dims):
    raise ValueError(f'{layer.name}: unknown dimension in shape {shape}')
  return math.prod(dims)


def _layer_macs(layer: tf.keras.layers.Layer) -> int:
  """Multiply-accumulates of one example through `layer` (see module doc)."""
  if not layer.weights or isinstance(layer, _FREE_WEIGHTED_LAYERS):
    return 0
  if isinstance(layer, _UNSUPPORTED_CONV_LAYERS):
    raise ValueError(f'{layer.name}: {type(layer).__name__} is not supported')
  if isinstance(layer, _CONV_LAYERS):
    out_shape = _single_shape(layer.output_shape, layer, 'output')
    kernel = (layer.depthwise_kernel if isinstance(
        layer, tf.keras.layers.DepthwiseConv2D) else layer.kernel)
    return _positions(out_shape, layer) * math.prod(kernel.shape)
  if isinstance(layer, tf.keras.layers.Dense):
    out_shape = _single_shape(layer.output_shape, layer, 'output')
    return _positions(out_shape, layer) * math.prod(layer.kernel.shape)
  if isinstance(layer, tf.keras.layers.RNN):
    cell = layer.cell
    if not (hasattr(cell, 'kernel') and hasattr(cell, 'recurrent_kernel')):
      raise ValueError(f'{layer.name}: RNN cell {type(cell).__name__} is not '
                       'supported')
    in_shape = _single_shape(layer.input_shape, layer, 'input')
    steps = in_shape[1]
    if steps is None:
      raise ValueError(f'{layer.name}: unknown sequence length')
    return steps * (math.prod(cell.kernel.shape) +
                    math.prod(cell.recurrent_kernel.shape))
  raise ValueError(
      f'{layer.name}: no FLOP rule for weight-owning {type(layer).__name__}')


def _static_model(model: tf.keras.Model,
                  input_shape: Sequence[int]) -> tf.keras.Model:
  """`model`, or a clone of it built on `input_shape` if it has None dims."""
  if len(model.inputs) != 1:
    raise ValueError(f'{model.name}: only single-input models are supported')
  shape = tuple(int(d) for d in input_shape)
  model_shape = tuple(model.inputs[0].shape[1:])
  if len(model_shape) != len(shape) or any(
      m is not None and m != s for m, s in zip(model_shape, shape)):
    raise ValueError(f'{model.name}: input_shape {shape} does not match the '
                     f'model input shape {model_shape}')
  if None not in model_shape:
    return model
  inputs = tf.keras.Input(shape, dtype=model.inputs[0].dtype)
  return tf.keras.models.clone_model(model, input_tensors=inputs)


def forward_flops(model: tf.keras.Model, input_shape: Sequence[int]) -> int:
  """FLOPs (2 x MACs) of one forward pass of one example of `input_shape`.

  Args:
    model: A functional or sequential Keras model with one input (nested
      models are flattened; each layer is counted once per model).
    input_shape: Shape of one example, without the batch dimension; must
      match the model's input shape where that is defined.

  Returns:
    2 x the multiply-accumulates of the Conv, DepthwiseConv, Dense and RNN
    layers (see the module docstring for what is ignored).

  Raises:
    ValueError: for a mismatched shape or a weight-owning layer type with no
      FLOP rule.
  """
  static = _static_model(model, input_shape)
  return 2 * sum(_layer_macs(layer) for layer in _leaf_layers(static))


def train_flops(model: tf.keras.Model, input_shape: Sequence[int]) -> int:
  """FLOPs of one training step (forward + backward) of one example: 3x fwd."""
  return 3 * forward_flops(model, input_shape)
