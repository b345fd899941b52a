"""RPNFactory as a TFF aggregation process: type signature, exact values, transmitted counts."""

import numpy as np
import pytest
import tensorflow_federated as tff

from compression import accounting
from compression import quantization
from compression import rpn
from compression import rpn_aggregator

VALUE_TYPE = tff.StructWithPythonType(
    [tff.TensorType(np.float32, [3, 3, 1, 2]), tff.TensorType(np.float32, [2])], list)
WEIGHT_TYPE = tff.TensorType(np.float32)
# Client a: kernel channel 0 = 0, 2, ..., 16 (mean 8), channel 1 = 1, ..., 17 (mean 9).
A = [np.arange(18, dtype=np.float32).reshape(3, 3, 1, 2), np.array([1., 2.], np.float32)]
B = [np.ones((3, 3, 1, 2), np.float32), np.array([3., 4.], np.float32)]


def test_type_signature(tff_context):
  process = rpn_aggregator.RPNFactory().create(VALUE_TYPE, WEIGHT_TYPE)
  signature = str(process.next.type_signature)
  assert 'value={<float32[3,3,1,2],float32[2]>}@CLIENTS' in signature
  assert 'result=<float32[3,3,1,2],float32[2]>@SERVER' in signature
  assert 'measurements=<upload_values=int64,upload_bytes=int64,download_values=int64,download_bytes=int64' in signature


def test_weighted_mean_of_pooled_residuals_unpooled(tff_context):
  process = rpn_aggregator.RPNFactory().create(VALUE_TYPE, WEIGHT_TYPE)
  out = process.next(process.initialize(), [A, B], [1.0, 3.0])
  kernel, bias = out.result
  # Channel 0: (1 * 8 + 3 * 1) / 4 = 2.75; channel 1: (1 * 9 + 3 * 1) / 4 = 3.0, everywhere.
  np.testing.assert_allclose(kernel[..., 0, 0], np.full([3, 3], 2.75))
  np.testing.assert_allclose(kernel[..., 0, 1], np.full([3, 3], 3.0))
  np.testing.assert_allclose(bias, [(1 + 9) / 4, (2 + 12) / 4])
  m = out.measurements
  assert m['upload_values'] == 2 * (2 + 2)        # per client: 2 pooled + 2 bias values
  assert m['upload_bytes'] == 2 * 4 * 4
  assert m['download_values'] == 4 and m['download_bytes'] == 16


def test_threshold_drops_filters_and_counts_the_mask(tff_context):
  # Contributions: a = (72, 81) (sum of kernel elements), b = (9, 9). Threshold 50
  # keeps both of a's filters and none of b's.
  process = rpn_aggregator.RPNFactory(threshold=50.0).create(VALUE_TYPE, WEIGHT_TYPE)
  out = process.next(process.initialize(), [A, B], [1.0, 1.0])
  np.testing.assert_allclose(out.result[0][..., 0, 0], np.full([3, 3], (8 + 0) / 2))
  m = out.measurements
  assert m['upload_values'] == (2 + 2) + (0 + 2)
  assert m['upload_bytes'] == (4 * 4 + 1) + (2 * 4 + 1)  # + 1 mask byte each
  assert m['download_values'] == 4 and m['download_bytes'] == 4 * 4 + 1


def test_quantized_inner_counts_bits_and_overhead(tff_context):
  factory = rpn_aggregator.RPNFactory(quantization.QuantizedMeanFactory(8, threshold=0))
  process = factory.create(VALUE_TYPE, WEIGHT_TYPE)
  out = process.next(process.initialize(), [A, B], [1.0, 1.0])
  # Per client and tensor: 2 values x 1 byte + 8 bytes (min, max) = 10 bytes.
  assert out.measurements['upload_bytes'] == 2 * 2 * 10
  np.testing.assert_allclose(out.result[1], [2.0, 3.0], atol=0.02)  # quantization error only


def test_static_costs_match_measured_at_threshold_zero():
  factory = rpn_aggregator.RPNFactory()
  shapes = [(3, 3, 1, 2), (2,)]
  assert factory.upload_cost(shapes) == accounting.TransmissionCost(4, 16)
  assert factory.download_cost(shapes) == accounting.TransmissionCost(4, 16)


def test_negative_threshold_is_rejected():
  with pytest.raises(ValueError, match='--rpn_threshold'):
    rpn_aggregator.RPNFactory(threshold=-1)
