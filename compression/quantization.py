"""8-bit (b-bit) uniform quantization baseline, with what it transmits.

Wraps TFF's `EncodedSumFactory.quantize_above_threshold` (tensor-encoding
uniform quantization: each tensor with more than `threshold` values is sent as
b-bit integers plus its min and max as two float32s) inside a weighted mean, and
says what that costs on the wire. The server's broadcast is not compressed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import tensorflow_federated as tff

from compression import accounting


class QuantizedMeanFactory(tff.aggregators.WeightedAggregationFactory):
  """Weighted mean whose client uploads are uniformly quantized to `bits`."""

  def __init__(self, bits: int = 8, threshold: int = 20000):
    if not 1 <= bits <= 16:
      raise ValueError(f'quantization bits={bits}: must be in [1, 16]')
    self.bits = bits
    self.threshold = threshold
    self._mean = tff.aggregators.MeanFactory(
        value_sum_factory=tff.aggregators.EncodedSumFactory.quantize_above_threshold(
            quantization_bits=bits, threshold=threshold
        )
    )

  def create(self, value_type, weight_type):
    return self._mean.create(value_type, weight_type)

  def value_encoding(self, shape: Sequence[int]) -> accounting.ValueEncoding:
    if math.prod(shape) > self.threshold:
      return accounting.ValueEncoding(bits_per_value=self.bits, overhead_bytes=8)
    return accounting.FLOAT32

  def upload_cost(self, shapes):
    return sum(
        (accounting.encoded_cost(math.prod(s), self.value_encoding(s)) for s in shapes),
        accounting.ZERO_COST,
    )

  def download_cost(self, shapes):
    return accounting.dense_cost(shapes)
