"""RPN's pooling as a `tensorflow_model_optimization` tensor-encoding stage.

TFF's own compression (`tff.aggregators.EncodedSumFactory`) is built from
tensor-encoding stages. Spatial mean pooling with filter selection fits that
interface exactly: encode = pool and zero unselected filters; decode = unpool
(broadcast). Decoding is linear, so the stage `commutes_with_sum`: the server may
sum pooled values from many clients and unpool once, which is what RPN's server
does. The stage is the single home of the math (it calls `compression.rpn`).
"""

from __future__ import annotations

import tensorflow as tf
from tensorflow_model_optimization.python.core.internal import tensor_encoding as te

from compression import rpn


@te.core.tf_style_encoding_stage
class SpatialMeanPoolingStage(te.core.EncodingStageInterface):
  """Encodes a conv-kernel residual as its spatial mean over selected filters."""

  ENCODED_VALUES_KEY = 'pooled'

  def __init__(self, kind: str = rpn.CONV, threshold: float = 0.0):
    if kind not in rpn.KINDS:
      raise ValueError(f'kind={kind!r}; allowed: {rpn.KINDS}')
    if threshold < 0:
      raise ValueError(f'threshold={threshold}: must be >= 0')
    self._kind = kind
    self._threshold = float(threshold)

  @property
  def name(self) -> str:
    return 'spatial_mean_pooling'

  @property
  def compressible_tensors_keys(self) -> list[str]:
    return [self.ENCODED_VALUES_KEY]

  @property
  def commutes_with_sum(self) -> bool:
    return True

  @property
  def decode_needs_input_shape(self) -> bool:
    return True

  def get_params(self):
    return {}, {}

  def encode(self, x, encode_params):
    del encode_params
    pooled, _, _ = rpn.pool_and_select(x, self._kind, self._threshold)
    return {self.ENCODED_VALUES_KEY: pooled}

  def decode(self, encoded_tensors, decode_params, num_summands=None, shape=None):
    del decode_params, num_summands
    pooled = encoded_tensors[self.ENCODED_VALUES_KEY]
    if shape is None:
      raise ValueError('SpatialMeanPoolingStage.decode needs the input shape')
    return rpn.unpool(pooled, tf.cast(shape, tf.int32) if isinstance(shape, tf.Tensor) else shape)
