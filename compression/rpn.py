"""RPN's pure tensor math: spatial mean pooling of conv kernels and filter selection.

Huang et al. 2020, "RPN: A Residual Pooling Network for Efficient Federated
Learning". A client's residual R = M^t - M^{t-1} is compressed per tensor:

* Convolution kernels with a spatial extent (s x s, or k for 1-D convs) are
  replaced by their mean over the spatial axes: (s, s, in, out) -> (1, 1, in, out),
  s*s times fewer values. Decoding ("unpooling") adds that mean at every spatial
  position. Kernels of spatial size 1 (pointwise 1x1), dense kernels, biases and
  normalization parameters are sent unchanged.
* Filter selection: a filter's contribution is the sum of its kernel elements in
  R; only filters with |contribution| > threshold are sent (threshold 0 = all),
  plus a 1-bit-per-filter mask saying which.
* Full rounds (FedSuite's variant, not the paper's): pooling never transmits a
  kernel's spatial pattern, so every K-th round (`is_full_round`) may send the
  residual unpooled instead.

What a "filter" is depends on the layer: for a regular convolution the last axis
(output channel) indexes filters; for a depthwise convolution (s, s, in, mult)
every (in, mult) pair is its own filter. Shapes alone cannot tell the two apart,
so callers pass a `kind` per tensor (`kinds_from_keras` derives them).

Everything here is plain TensorFlow on single tensors, unit-tested without TFF.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Union

import numpy as np
import tensorflow as tf

CONV = 'conv'            # (k, in, out) or (h, w, in, out): filters on the last axis
DEPTHWISE = 'depthwise'  # (h, w, in, mult): a filter per (in, mult)
DENSE = 'dense'          # anything else: never pooled
KINDS = (CONV, DEPTHWISE, DENSE)

Shape = Sequence[int]


def infer_kind(shape: Shape) -> str:
  """Rank-3/4 tensors are convolution kernels; everything else is dense."""
  return CONV if len(shape) in (3, 4) else DENSE


def spatial_axes(shape: Shape, kind: str) -> tuple[int, ...]:
  """Spatial axes of a kernel: (0,) for 1-D convs, (0, 1) for 2-D, () if not a conv."""
  if kind == DENSE:
    return ()
  if kind == DEPTHWISE and len(shape) != 4:
    raise ValueError(f'depthwise kernel must be rank 4, got shape {tuple(shape)}')
  if len(shape) == 3:
    return (0,)
  if len(shape) == 4:
    return (0, 1)
  raise ValueError(f'{kind} kernel must be rank 3 or 4, got shape {tuple(shape)}')


def is_poolable(shape: Shape, kind: str) -> bool:
  """True if pooling shrinks the tensor (a conv kernel with spatial size > 1)."""
  axes = spatial_axes(shape, kind)
  return bool(axes) and math.prod(shape[a] for a in axes) > 1


def pooled_shape(shape: Shape, kind: str) -> tuple[int, ...]:
  """The shape sent for a tensor: spatial axes reduced to 1 when poolable."""
  if not is_poolable(shape, kind):
    return tuple(shape)
  axes = spatial_axes(shape, kind)
  return tuple(1 if i in axes else d for i, d in enumerate(shape))


def num_filters(shape: Shape, kind: str) -> int:
  """Filters of a poolable kernel (the selection mask has this many bits)."""
  if not is_poolable(shape, kind):
    return 0
  return shape[-1] if kind == CONV else shape[-2] * shape[-1]


def values_per_filter(shape: Shape, kind: str) -> int:
  """Pooled values one selected filter costs: `in` for convs, 1 for depthwise."""
  return shape[-2] if kind == CONV else 1


def pool(x: tf.Tensor, kind: str) -> tf.Tensor:
  """Mean over the spatial axes, keeping them as size 1 (identity if not poolable)."""
  if not is_poolable(x.shape, kind):
    return x
  return tf.reduce_mean(x, axis=spatial_axes(x.shape, kind), keepdims=True)


def unpool(pooled: tf.Tensor, shape: Shape) -> tf.Tensor:
  """Adds the pooled mean at every spatial position: broadcast back to `shape`."""
  return tf.broadcast_to(pooled, shape)


def pooled_of_unpooled(x: tf.Tensor, kind: str) -> tf.Tensor:
  """The pooled tensor an unpooled (spatially constant) tensor came from.

  Its values at the first spatial position, in the pooled shape: a slice, so
  exactly the pooled values (no arithmetic); identity if not poolable.
  """
  if not is_poolable(x.shape, kind):
    return x
  axes = spatial_axes(x.shape, kind)
  return x[tuple(slice(0, 1) if i in axes else slice(None) for i in range(x.shape.rank))]


def is_full_round(round_num: Union[int, tf.Tensor], full_every: int) -> tf.Tensor:
  """bool: round `round_num` (1-based) sends full, unpooled kernels.

  Every `full_every`-th round (rounds K, 2K, ...); never when `full_every` is 0
  (RPN as the paper: every round pooled).
  """
  if full_every == 0:
    return tf.constant(False)
  return tf.equal(tf.math.floormod(tf.cast(round_num, tf.int64), full_every), 0)


def filter_contributions(residual: tf.Tensor, kind: str) -> tf.Tensor:
  """Per filter, the sum of its kernel elements: shape (out,) or (in, mult)."""
  if kind == CONV:
    return tf.reduce_sum(residual, axis=list(range(len(residual.shape) - 1)))
  if kind == DEPTHWISE:
    return tf.reduce_sum(residual, axis=[0, 1])
  raise ValueError(f'no filters in a {kind} tensor')


def filter_mask(residual: tf.Tensor, kind: str, threshold: float) -> tf.Tensor:
  """float32 mask over filters: 1 where |contribution| > threshold (all if 0)."""
  contributions = filter_contributions(residual, kind)
  if threshold <= 0.0:
    return tf.ones_like(contributions, dtype=tf.float32)
  return tf.cast(tf.abs(contributions) > threshold, tf.float32)


def selected_values(residual: tf.Tensor, kind: str, threshold: float) -> tf.Tensor:
  """bool, in the pooled shape: True where a value belongs to a selected filter.

  A poolable kernel's filter mask broadcast over its pooled values (all True
  for threshold 0); what a quantizer may see of a client's pooled upload.
  """
  shape = residual.shape
  if not is_poolable(shape, kind):
    raise ValueError(f'{kind} tensor of shape {tuple(shape)} is not pooled: no filters to select')
  return _in_pooled_shape(filter_mask(residual, kind, threshold), shape, kind)


def _in_pooled_shape(mask: tf.Tensor, shape: Shape, kind: str) -> tf.Tensor:
  """A float filter mask ((out,) or (in, mult)) as bools over the pooled values."""
  mask = tf.reshape(mask, [1] * (len(shape) - mask.shape.rank) + mask.shape.as_list())
  return tf.broadcast_to(mask > 0.0, pooled_shape(shape, kind))


def pool_and_select(
    residual: tf.Tensor, kind: str, threshold: float = 0.0
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
  """Compresses one tensor of a residual.

  Returns:
    (pooled, values_sent, mask_bits): the pooled tensor with unselected filters
    zeroed, the number of values actually sent (int64) and the number of mask
    bits sent (int64; 0 when threshold is 0 or the tensor is not poolable).
  """
  shape = residual.shape
  if not is_poolable(shape, kind):
    return residual, tf.constant(int(np.prod(shape)), tf.int64), tf.constant(0, tf.int64)
  mask = filter_mask(residual, kind, threshold)
  pooled = pool(residual, kind)
  pooled = tf.where(_in_pooled_shape(mask, shape, kind), pooled, tf.zeros_like(pooled))
  selected = tf.cast(tf.reduce_sum(mask), tf.int64)
  values = selected * values_per_filter(shape, kind)
  bits = tf.constant(num_filters(shape, kind) if threshold > 0 else 0, tf.int64)
  return pooled, values, bits


def nonzero_filter_values(pooled: tf.Tensor, shape: Shape, kind: str) -> tf.Tensor:
  """Values needed to send an aggregated pooled tensor: only filters not all zero."""
  if not is_poolable(shape, kind):
    return tf.constant(int(np.prod(shape)), tf.int64)
  nonzero = tf.not_equal(filter_contributions(tf.abs(pooled), kind), 0.0)
  return tf.reduce_sum(tf.cast(nonzero, tf.int64)) * values_per_filter(shape, kind)


def transmitted_params(shapes: Sequence[Shape], kinds: Sequence[str]) -> int:
  """Values sent per direction with every filter selected (threshold 0)."""
  return int(sum(np.prod(pooled_shape(s, k)) for s, k in zip(shapes, kinds)))


def kinds_from_keras(model: tf.keras.Model) -> list[str]:
  """The kind of each trainable weight of a Keras model, in trainable_weights order."""
  kinds = {}
  for layer in model.submodules if hasattr(model, 'submodules') else model.layers:
    if not isinstance(layer, tf.keras.layers.Layer):
      continue
    if isinstance(layer, tf.keras.layers.DepthwiseConv2D):
      kinds[layer.depthwise_kernel.ref()] = DEPTHWISE
    elif isinstance(layer, (tf.keras.layers.Conv1D, tf.keras.layers.Conv2D)):
      kinds[layer.kernel.ref()] = CONV
  return [kinds.get(w.ref(), DENSE) for w in model.trainable_weights]


def to_int(value: Union[int, tf.Tensor]) -> int:
  return int(value.numpy()) if isinstance(value, tf.Tensor) else int(value)
