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
  assert out.measurements['download_bytes'] == 4 * 4  # the mean goes down unquantized
  # Every 2-value tensor here holds its own min and max (or is constant: b's pooled
  # kernel, 1 and 1), so 8 bits carry it exactly: pooled (8, 9) and (1, 1), biases
  # (1, 2) and (3, 4); unweighted means (4.5, 5.0) and (2, 3).
  kernel, bias = out.result
  np.testing.assert_array_equal(kernel[..., 0, 0], np.full([3, 3], 4.5))
  np.testing.assert_array_equal(kernel[..., 0, 1], np.full([3, 3], 5.0))
  np.testing.assert_array_equal(bias, [2.0, 3.0])


def struct_type(shapes):
  return tff.StructWithPythonType([tff.TensorType(np.float32, s) for s in shapes], list)


# conv 3x3x2x4 (pooled: 8 values), its bias, a dense kernel and its bias.
COST_SHAPES = [(3, 3, 2, 4), (4,), (4, 2), (2,)]


def cost_client(offset):
  """Hand-made residuals whose conv filter 3 is exactly zero (a filter that got no gradient)."""
  kernel = np.arange(72, dtype=np.float32).reshape(3, 3, 2, 4) + offset
  kernel[..., 3] = 0.0
  return [kernel, np.array([1., -2., 3., 0.5], np.float32) * offset,
          np.arange(8, dtype=np.float32).reshape(4, 2) - offset, np.array([offset, 2.0], np.float32)]


@pytest.mark.parametrize('inner,upload_bytes', [
    (None, 22 * 4),
    # 8-bit above 3 values: pooled conv 8 + 8, bias 4 + 8, dense 8 + 8; the
    # 2-value bias stays float32: 8.
    (quantization.QuantizedMeanFactory(8, threshold=3), 16 + 12 + 16 + 8),
])
def test_static_costs_match_measured_at_threshold_zero(tff_context, inner, upload_bytes):
  factory = rpn_aggregator.RPNFactory(inner)
  up, down = factory.upload_cost(COST_SHAPES), factory.download_cost(COST_SHAPES)
  # 8 pooled conv values + 4 + 8 + 2 = 22 values each way; the broadcast is float32.
  assert up == accounting.TransmissionCost(22, upload_bytes)
  assert down == accounting.TransmissionCost(22, 22 * 4)
  process = factory.create(struct_type(COST_SHAPES), WEIGHT_TYPE)
  out = process.next(process.initialize(), [cost_client(1.0), cost_client(2.0), cost_client(3.0)],
                     [1.0, 1.0, 2.0])
  assert not np.any(out.result[0][..., 3])  # the all-zero filter is still sent: no mask at threshold 0
  m = out.measurements
  assert (m['upload_values'], m['upload_bytes']) == (3 * up.params, 3 * up.bytes)
  assert (m['download_values'], m['download_bytes']) == (down.params, down.bytes)


# conv 2x2x1x5 (filters constant over space: contribution = 4 x pooled value) and a bias.
FILTER_SHAPES = [(2, 2, 1, 5), (2,)]


def filters_client(pooled, bias):
  kernel = np.broadcast_to(np.array(pooled, np.float32), (2, 2, 1, 5)).copy()
  return [kernel, np.array(bias, np.float32)]


def test_quantized_rpn_unselected_filters_decode_to_exact_zeros(tff_context):
  # Threshold 1 selects filters with |4 x pooled value| > 1, i.e. |value| > 0.25.
  a = filters_client([3.0, 0.1, -1.0, 1.0, -0.05], [1.0, -1.0])  # sends f0, f2, f3
  b = filters_client([0.2, -2.0, 2.0, 0.0, 0.1], [0.5, 0.5])     # sends f1, f2
  c = filters_client([0.1] * 5, [0.0, 4.0])                       # sends no filter
  # Every tensor is 8-bit quantized (threshold 0): a client's zeros for its
  # unselected filters sit strictly between the min and max of its pooled
  # tensor, where 0 is not a quantization level (a's levels: -1 + 4k/255).
  factory = rpn_aggregator.RPNFactory(quantization.QuantizedMeanFactory(8, threshold=0), threshold=1.0)
  process = factory.create(struct_type(FILTER_SHAPES), WEIGHT_TYPE)
  out = process.next(process.initialize(), [a, b, c], [1.0, 1.0, 1.0])
  kernel, bias = out.result
  f32 = np.float32
  # A client's min and max decode exactly; a's 1.0 becomes the nearest level,
  # -1 + 128 * 4/255 (quantized for real, not passed through).
  a_f3 = f32(128) / f32(255) * f32(4) + f32(-1)
  assert abs(a_f3 - 1.0) > 0.007
  expected = np.array([f32(3) / f32(3), f32(-2) / f32(3), f32(1) / f32(3), a_f3 / f32(3), 0.0], f32)
  for i in range(2):
    for j in range(2):
      np.testing.assert_array_equal(kernel[i, j, 0], expected)  # f4: nobody sent it -> exactly 0
  np.testing.assert_array_equal(bias, [f32(1.5) / f32(3), f32(3.5) / f32(3)])
  m = out.measurements
  # Per client: selected values at 1 byte + 8 bytes min/max (none if no value
  # is sent) + 1 mask byte (5 filters); the bias is 2 bytes + 8.
  assert m['upload_values'] == (3 + 2) + (2 + 2) + (0 + 2)
  assert m['upload_bytes'] == (3 + 8 + 1 + 10) + (2 + 8 + 1 + 10) + (0 + 0 + 1 + 10)
  # Broadcast: the 4 filters some client sent (f4 is not) + bias, float32, + mask.
  assert m['download_values'] == 4 + 2 and m['download_bytes'] == 6 * 4 + 1
  # Rounding is deterministic: the same inputs give the same aggregate.
  again = process.next(process.initialize(), [a, b, c], [1.0, 1.0, 1.0])
  np.testing.assert_array_equal(again.result[0], kernel)


def test_pointwise_1x1_conv_is_not_pooled_and_is_counted_dense(tff_context):
  # Declared a conv, the 1x1 kernel has no spatial extent: no pooling, no
  # filter selection (its filters are far below the threshold), no mask bits.
  shapes = [(3, 3, 1, 2), (1, 1, 2, 3)]
  factory = rpn_aggregator.RPNFactory(threshold=50.0, kinds=[rpn.CONV, rpn.CONV])
  a = [A[0], np.full((1, 1, 2, 3), 0.5, np.float32)]
  b = [B[0], np.arange(6, dtype=np.float32).reshape(1, 1, 2, 3)]
  process = factory.create(struct_type(shapes), WEIGHT_TYPE)
  out = process.next(process.initialize(), [a, b], [1.0, 3.0])
  np.testing.assert_allclose(out.result[1], (a[1] + 3 * b[1]) / 4)  # the plain weighted mean
  # Uploads: a sends its 2 pooled filters, b none (contributions 9 <= 50), each
  # 1 mask byte for the 3x3 kernel's 2 filters; both send all 6 pointwise values.
  m = out.measurements
  assert m['upload_values'] == (2 + 6) + (0 + 6)
  assert m['upload_bytes'] == (8 + 1 + 24) + (0 + 1 + 24)
  assert m['download_values'] == 2 + 6 and m['download_bytes'] == 8 * 4 + 1
  assert factory.upload_cost(shapes) == accounting.TransmissionCost(2 + 6, (2 + 6) * 4 + 1)
  assert factory.download_cost(shapes) == accounting.TransmissionCost(2 + 6, (2 + 6) * 4 + 1)


def test_initial_download_is_the_full_dense_model():
  # RPN broadcasts pooled averages: a new client first needs the whole model.
  shapes = [(3, 3, 1, 32), (32,), (5408, 10), (10,), (32,)]  # the last: e.g. batch-norm statistics
  full = accounting.TransmissionCost(288 + 32 + 54080 + 10 + 32, 4 * (288 + 32 + 54080 + 10 + 32))
  for inner in (None, quantization.QuantizedMeanFactory(8, threshold=100)):
    factory = rpn_aggregator.RPNFactory(inner, threshold=0.5)
    assert factory.initial_download_cost(shapes) == full
    assert accounting.initial_download_cost(factory, shapes) == full
  # Aggregators whose every broadcast is the full model need nothing more.
  assert accounting.initial_download_cost(None, shapes) == accounting.ZERO_COST
  assert accounting.initial_download_cost(
      quantization.QuantizedMeanFactory(), shapes) == accounting.ZERO_COST


def test_negative_threshold_is_rejected():
  with pytest.raises(ValueError, match='--rpn_threshold'):
    rpn_aggregator.RPNFactory(threshold=-1)
