"""8-bit (b-bit) uniform quantization baseline, with what it transmits.

Wraps TFF's `EncodedSumFactory.quantize_above_threshold` (tensor-encoding
uniform quantization: each tensor with more than `threshold` values is sent as
b-bit integers plus its min and max as two float32s) inside a weighted mean, and
says what that costs on the wire. The server's broadcast is not compressed.

Rounding is deterministic (to the nearest of the 2**bits levels) by default:
TFF's stochastic rounding draws `tf.random.uniform` without a seed inside the
TFF computation, which `--seed` cannot reach, so runs with it differ between
repeats. `stochastic=True` restores it (unbiased, not reproducible).

Stacked under RPN, the quantization is done by RPN on each client
(`ClientQuantizer.roundtrip`) on the selected filters' values only, so that the
filters a client did not select decode to exactly 0; the inner aggregation is
then the plain weighted mean (`unquantized_factory`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Optional, Protocol, runtime_checkable

import tensorflow as tf
import tensorflow_federated as tff
from tensorflow_model_optimization.python.core.internal import tensor_encoding as te

from compression import accounting


def quantize_dequantize(
    x: tf.Tensor, bits: int, *, keep: Optional[tf.Tensor] = None, stochastic: bool = False
) -> tf.Tensor:
  """What the server decodes from a client's b-bit uniformly quantized upload of `x`.

  The same math as TFF's quantizing encoder (`UniformQuantizationEncodingStage`:
  levels between the min and max of the values sent; bit-packing and flattening
  are lossless). With `keep` (bool, `x`'s shape), only the kept values are sent:
  min and max are taken over them, and every other value decodes to exactly 0
  (it was never on the wire; the filter mask says where it was).
  """
  stage = te.stages.UniformQuantizationEncodingStage(bits=bits, stochastic=stochastic)
  encode_params, decode_params = stage.get_params()
  flat = tf.reshape(x, [-1])
  if keep is not None:
    keep = tf.reshape(keep, [-1])
    # Unsent values take the smallest sent value, so they change neither min nor max.
    lowest = tf.reduce_min(tf.where(keep, flat, tf.fill(tf.shape(flat), flat.dtype.max)))
    lowest = tf.where(tf.reduce_any(keep), lowest, tf.zeros_like(lowest))
    flat = tf.where(keep, flat, tf.fill(tf.shape(flat), lowest))
  decoded = stage.decode(stage.encode(flat, encode_params), decode_params)
  if keep is not None:
    decoded = tf.where(keep, decoded, tf.zeros_like(decoded))
  return tf.reshape(decoded, x.shape)


@runtime_checkable
class ClientQuantizer(Protocol):
  """A quantizing aggregator whose client-side encoding another aggregator can apply.

  RPN uses it to quantize only the filters a client selected (see module doc).
  """

  def quantizes(self, shape: Sequence[int]) -> bool:
    """True if a tensor of this shape is quantized (else sent as float32)."""

  def roundtrip(self, x: tf.Tensor, keep: Optional[tf.Tensor] = None) -> tf.Tensor:
    """What the server decodes from this client's upload of `x` (`keep`: values sent)."""

  def unquantized_factory(self) -> tff.aggregators.WeightedAggregationFactory:
    """The aggregation to run on values already `roundtrip`ped."""


class QuantizedMeanFactory(tff.aggregators.WeightedAggregationFactory):
  """Weighted mean whose client uploads are uniformly quantized to `bits`."""

  def __init__(self, bits: int = 8, threshold: int = 20000, *, stochastic: bool = False):
    """Args:
      bits: bits per quantized value, in [1, 16].
      threshold: only tensors with more values than this are quantized.
      stochastic: TFF's randomized rounding (unbiased, but unseeded: runs are
        not reproducible); False rounds to the nearest level.
    """
    if not 1 <= bits <= 16:
      raise ValueError(f'quantization bits={bits}: must be in [1, 16]')
    self.bits = bits
    self.threshold = threshold
    self.stochastic = stochastic
    self._mean = tff.aggregators.MeanFactory(
        value_sum_factory=tff.aggregators.EncodedSumFactory.quantize_above_threshold(
            quantization_bits=bits, threshold=threshold, stochastic=stochastic
        )
    )

  def create(self, value_type, weight_type):
    return self._mean.create(value_type, weight_type)

  def quantizes(self, shape: Sequence[int]) -> bool:
    return math.prod(shape) > self.threshold

  def roundtrip(self, x: tf.Tensor, keep: Optional[tf.Tensor] = None) -> tf.Tensor:
    if not self.quantizes(x.shape):
      return x
    return quantize_dequantize(x, self.bits, keep=keep, stochastic=self.stochastic)

  def unquantized_factory(self) -> tff.aggregators.WeightedAggregationFactory:
    return tff.aggregators.MeanFactory()

  def value_encoding(self, shape: Sequence[int]) -> accounting.ValueEncoding:
    if self.quantizes(shape):
      return accounting.ValueEncoding(bits_per_value=self.bits, overhead_bytes=8)
    return accounting.FLOAT32

  def upload_cost(self, shapes):
    return sum(
        (accounting.encoded_cost(math.prod(s), self.value_encoding(s)) for s in shapes),
        accounting.ZERO_COST,
    )

  def download_cost(self, shapes):
    return accounting.dense_cost(shapes)
