"""RPN with full, unpooled kernels every K-th round (`full_every`, `--rpn_full_every`).

Hand-made residuals through the TFF aggregation process, round by round:
exact results, exact measured values and bytes, the round counter in the state.
"""

import dataclasses

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from compression import accounting
from compression import quantization
from compression import rpn
from compression import rpn_aggregator
from tff_programs import aggregators
from tff_programs import options
from tff_programs.algorithms import rpn as rpn_preset

# A 3x3 conv kernel with 2 filters and its bias.
SHAPES = [(3, 3, 1, 2), (2,)]
VALUE_TYPE = tff.StructWithPythonType([tff.TensorType(np.float32, s) for s in SHAPES], list)
WEIGHT_TYPE = tff.TensorType(np.float32)
# Client a: filter 0 = 0, 2, ..., 16 over space (mean 8), filter 1 = 1, 3, ..., 17 (mean 9).
A = [np.arange(18, dtype=np.float32).reshape(3, 3, 1, 2), np.array([1., 2.], np.float32)]
B = [np.ones((3, 3, 1, 2), np.float32), np.array([3., 4.], np.float32)]


def run_rounds(factory, clients, weights, rounds):
  """[(state, result, measurements)] of `rounds` calls of next, state carried over."""
  process = factory.create(VALUE_TYPE, WEIGHT_TYPE)
  state, outputs = process.initialize(), []
  for _ in range(rounds):
    out = process.next(state, clients, weights)
    state = out.state
    outputs.append((state, out.result, out.measurements))
  return outputs


def measured(m):
  return (m['upload_values'], m['upload_bytes'], m['download_values'], m['download_bytes'],
          m['full_round'])


def test_state_counts_rounds_and_measurements_say_which_were_full(tff_context):
  process = rpn_aggregator.RPNFactory(full_every=2).create(VALUE_TYPE, WEIGHT_TYPE)
  inner_state = '<value_sum_process=<>,weight_sum_process=<>>@SERVER'
  assert str(process.initialize.type_signature.result) == (
      '<rounds=int64,inner=<value_sum_process=<>,weight_sum_process=<>>>@SERVER')
  # At K=0 (the paper's RPN) no counter: the state is the inner's, as before
  # (checkpoints of earlier RPN runs still resume), and no full_round measurement.
  paper = rpn_aggregator.RPNFactory(full_every=0).create(VALUE_TYPE, WEIGHT_TYPE)
  assert str(paper.initialize.type_signature.result) == inner_state
  assert 'full_round' not in str(paper.next.type_signature)
  assert process.initialize()['rounds'] == 0
  signature = str(process.next.type_signature)
  assert 'result=<float32[3,3,1,2],float32[2]>@SERVER' in signature
  assert ('measurements=<upload_values=int64,upload_bytes=int64,download_values=int64,'
          'download_bytes=int64,full_round=int32,') in signature


def test_k2_pooled_full_pooled_exact_results_and_bytes(tff_context):
  outputs = run_rounds(rpn_aggregator.RPNFactory(full_every=2), [A, B], [1.0, 3.0], 3)
  assert [int(state['rounds']) for state, _, _ in outputs] == [1, 2, 3]
  pooled_kernel = np.empty((3, 3, 1, 2), np.float32)
  # Pooled: filter 0 (1 * 8 + 3 * 1) / 4 = 2.75, filter 1 (1 * 9 + 3 * 1) / 4 = 3, everywhere.
  pooled_kernel[..., 0], pooled_kernel[..., 1] = 2.75, 3.0
  bias = np.array([(1 + 9) / 4, (2 + 12) / 4], np.float32)
  for k in (0, 2):  # rounds 1 and 3
    np.testing.assert_array_equal(outputs[k][1][0], pooled_kernel)
    np.testing.assert_array_equal(outputs[k][1][1], bias)
    # Per client 2 pooled + 2 bias values (16 bytes); the broadcast: the 4 pooled values.
    assert measured(outputs[k][2]) == (2 * 4, 2 * 16, 4, 16, 0)
  # Round 2, full: the weighted mean of the kernels as they are, (a + 3 * 1) / 4 per
  # value: 0.75, 1.25, ... over space: the spatial pattern is transmitted.
  np.testing.assert_array_equal(outputs[1][1][0], (A[0] + 3.0) / 4.0)
  assert outputs[1][1][0][0, 0, 0, 0] == 0.75 and outputs[1][1][0][2, 2, 0, 0] == 4.75
  np.testing.assert_array_equal(outputs[1][1][1], bias)
  # Per client all 18 + 2 values, float32; the broadcast: all 20.
  assert measured(outputs[1][2]) == (2 * 20, 2 * 80, 20, 80, 1)


def test_pooled_rounds_equal_the_papers_rpn_bit_for_bit(tff_context):
  # Clients unpool their pooled uploads so that both kinds of round aggregate one
  # type: the mean of the repeated values is the unpooled pooled mean, exactly.
  a = [A[0] / 7.0, A[1] / 3.0]
  b = [np.cos(np.arange(18, dtype=np.float32)).reshape(3, 3, 1, 2), B[1] / 7.0]
  paper = run_rounds(rpn_aggregator.RPNFactory(), [a, b], [0.3, 1.9], 1)[0]
  variant = run_rounds(rpn_aggregator.RPNFactory(full_every=3), [a, b], [0.3, 1.9], 1)[0]
  for x, y in zip(paper[1], variant[1]):
    np.testing.assert_array_equal(x, y)
  assert [paper[2][k] for k in accounting.MEASURED_KEYS] == [variant[2][k] for k in accounting.MEASURED_KEYS]


def test_k1_is_the_weighted_mean_with_dense_counts(tff_context):
  # Every round full: exactly TFF's weighted mean (FedAvg's aggregation).
  mean = tff.aggregators.MeanFactory().create(VALUE_TYPE, WEIGHT_TYPE)
  expected = mean.next(mean.initialize(), [A, B], [1.0, 3.0]).result
  for _, result, m in run_rounds(rpn_aggregator.RPNFactory(full_every=1), [A, B], [1.0, 3.0], 2):
    for x, y in zip(result, expected):
      np.testing.assert_array_equal(x, y)
    assert measured(m) == (40, 160, 20, 80, 1)


def test_quantized_inner_with_filter_selection(tff_context):
  # Every tensor 8-bit quantized (threshold 0); filter selection at 50: a's
  # contributions (72, 81) are sent, b's (9, 9) are not.
  factory = rpn_aggregator.RPNFactory(quantization.QuantizedMeanFactory(8, threshold=0),
                                      threshold=50.0, full_every=2)
  outputs = run_rounds(factory, [A, B], [1.0, 1.0], 3)
  f32 = np.float32
  for k in (0, 2):
    kernel, bias = outputs[k][1]
    # a's pooled (8, 9) are its min and max (exact); b's filters are exactly 0.
    np.testing.assert_array_equal(kernel[..., 0, 0], np.full((3, 3), f32(8) / f32(2)))
    np.testing.assert_array_equal(kernel[..., 0, 1], np.full((3, 3), f32(9) / f32(2)))
    np.testing.assert_array_equal(bias, [2.0, 3.0])
    # a: 2 kernel values (2 bytes + 8 min/max) + bias (2 + 8) + 1 mask byte; b: no
    # kernel value (no min/max either) + bias 10 + 1 mask byte. Broadcast: 4 values + mask.
    assert measured(outputs[k][2]) == ((2 + 2) + (0 + 2), 21 + 11, 4, 4 * 4 + 1, 0)
  # Round 2, full: every value of every client, quantized as sent (no selection).
  # a's values 0..17 sit on its 8-bit levels (0 + 15 v * 17/255), b's are all 1:
  # the full mean (a + b) / 2, up to float rounding, with its spatial pattern.
  kernel, bias = outputs[1][1]
  np.testing.assert_allclose(kernel, (A[0] + B[0]) / 2, rtol=1e-6)
  assert kernel[0, 0, 0, 0] == 0.5 and kernel[2, 2, 0, 1] == 9.0
  np.testing.assert_array_equal(bias, [2.0, 3.0])
  # Per client: 18 values at 1 byte + 8 (min/max), bias 2 + 8; no mask. Broadcast float32.
  assert measured(outputs[1][2]) == (2 * 20, 2 * (26 + 10), 20, 80, 1)


def test_full_rounds_quantize_what_clients_send(tff_context):
  # Every round full (K=1), every tensor 8-bit: values off the quantization
  # levels come back as the nearest levels, as `quantize_dequantize` computes
  # them (up to float rounding between the TFF graph and eager TF).
  a = [np.sin(np.arange(18, dtype=np.float32)).reshape(3, 3, 1, 2), np.array([0.3, -0.7], np.float32)]
  b = [np.cos(np.arange(18, dtype=np.float32)).reshape(3, 3, 1, 2), np.array([0.1, 0.2], np.float32)]
  factory = rpn_aggregator.RPNFactory(quantization.QuantizedMeanFactory(8, threshold=0), full_every=1)
  (_, (kernel, _), m), = run_rounds(factory, [a, b], [1.0, 1.0], 1)
  q = lambda x: quantization.quantize_dequantize(tf.constant(x), 8).numpy()
  np.testing.assert_allclose(kernel, (q(a[0]) + q(b[0])) / 2, rtol=1e-6, atol=1e-7)
  assert np.abs(kernel - (a[0] + b[0]) / 2).max() > 1e-3  # quantized for real
  assert measured(m) == (2 * 20, 2 * (26 + 10), 20, 80, 1)


# conv 3x3x2x4, its bias, a dense kernel and its bias (test_rpn_aggregator's COST_SHAPES).
COST_SHAPES = [(3, 3, 2, 4), (4,), (4, 2), (2,)]


def cost_client(offset):
  return [np.arange(72, dtype=np.float32).reshape(3, 3, 2, 4) + offset,
          np.array([1., -2., 3., 0.5], np.float32) * offset,
          np.arange(8, dtype=np.float32).reshape(4, 2) - offset, np.array([offset, 2.0], np.float32)]


@pytest.mark.parametrize('inner,full_upload_bytes', [
    (None, 86 * 4),
    # 8-bit above 3 values: conv 72 + 8, bias 4 + 8, dense 8 + 8; the 2-value bias float32: 8.
    (quantization.QuantizedMeanFactory(8, threshold=3), 80 + 12 + 16 + 8),
])
def test_static_full_round_costs_match_measured(tff_context, inner, full_upload_bytes):
  factory = rpn_aggregator.RPNFactory(inner, full_every=2)
  up, down = factory.full_upload_cost(COST_SHAPES), factory.full_download_cost(COST_SHAPES)
  assert up == accounting.TransmissionCost(72 + 4 + 8 + 2, full_upload_bytes)
  assert down == accounting.TransmissionCost(86, 86 * 4)
  # The pooled rounds' static costs are RPN's: 8 pooled conv values + 4 + 8 + 2.
  assert factory.upload_cost(COST_SHAPES).params == factory.download_cost(COST_SHAPES).params == 22
  process = factory.create(tff.StructWithPythonType(
      [tff.TensorType(np.float32, s) for s in COST_SHAPES], list), WEIGHT_TYPE)
  state = process.initialize()
  clients = [cost_client(1.0), cost_client(2.0), cost_client(3.0)]
  for pooled_up, pooled_down, full in ((factory.upload_cost(COST_SHAPES), factory.download_cost(COST_SHAPES), 0),
                                       (up, down, 1)):
    out = process.next(state, clients, [1.0, 1.0, 2.0])
    state = out.state
    assert measured(out.measurements) == (3 * pooled_up.params, 3 * pooled_up.bytes,
                                          pooled_down.params, pooled_down.bytes, full)


def test_is_full_round_every_kth():
  assert [bool(rpn.is_full_round(r, 2)) for r in range(1, 6)] == [False, True, False, True, False]
  assert [bool(rpn.is_full_round(r, 3)) for r in range(1, 7)] == [False, False, True, False, False, True]
  assert [bool(rpn.is_full_round(r, 1)) for r in range(1, 4)] == [True, True, True]
  assert [bool(rpn.is_full_round(r, 0)) for r in range(1, 4)] == [False, False, False]


def test_pooled_of_unpooled_takes_the_first_spatial_position():
  pooled = tf.constant([[[[1.5, -2.0]]]])
  np.testing.assert_array_equal(rpn.pooled_of_unpooled(rpn.unpool(pooled, (3, 3, 1, 2)), rpn.CONV), pooled)
  x = tf.reshape(tf.range(6, dtype=tf.float32), (3, 2, 1))  # 1-D conv: rows 0..2
  np.testing.assert_array_equal(rpn.pooled_of_unpooled(x, rpn.CONV), [[[0.], [1.]]])
  dense = tf.ones((4, 2))
  assert rpn.pooled_of_unpooled(dense, rpn.DENSE) is dense


def test_for_tensors_keeps_full_every():
  factory = rpn_aggregator.RPNFactory(quantization.QuantizedMeanFactory(), threshold=0.5,
                                      kinds=[rpn.CONV, rpn.DENSE, rpn.DEPTHWISE], full_every=4)
  narrowed = factory.for_tensors([0, 2])
  assert (narrowed.full_every, narrowed.threshold) == (4, 0.5)
  assert narrowed.kinds_for([(3, 3, 1, 2), (3, 3, 2, 1)]) == [rpn.CONV, rpn.DEPTHWISE]


@pytest.mark.parametrize('value', [-1, 1.5, True, '2'])
def test_factory_refuses_a_bad_full_every(value):
  with pytest.raises(ValueError, match=r'^--rpn_full_every=.*: must be an integer >= 0 \(0 = never\)$'):
    rpn_aggregator.RPNFactory(full_every=value)


def test_full_rounds_need_a_mean_inner():
  class Clipped(tff.aggregators.WeightedAggregationFactory):
    def create(self, value_type, weight_type):
      raise NotImplementedError

  with pytest.raises(ValueError, match='^--rpn_full_every=2: needs a mean inner aggregator'):
    rpn_aggregator.RPNFactory(Clipped(), full_every=2)
  rpn_aggregator.RPNFactory(Clipped())  # the paper's RPN takes any inner


@pytest.mark.parametrize('cls', [aggregators.RPNOptions, rpn_preset.RPNPresetOptions])
@pytest.mark.parametrize('value,shown', [(-1, '-1'), (2.5, '2.5'), (True, 'True')])
def test_option_errors_are_one_line(cls, value, shown):
  with pytest.raises(options.ConfigError) as e:
    cls(rpn_full_every=value)
  assert str(e.value) == f'--rpn_full_every={shown}: must be an integer >= 0 (0 = never)'


def test_option_declared_once_and_wired():
  field = lambda cls: {f.name: f for f in dataclasses.fields(cls)}['rpn_full_every']
  preset, aggregator = field(rpn_preset.RPNPresetOptions).metadata, field(aggregators.RPNOptions).metadata
  assert dict(preset) == dict(aggregator) and preset['check'] is aggregator['check']
  assert field(aggregators.RPNOptions).default == 0
  for value in ('rpn', 'rpn+quantized'):
    factory = aggregators.build(value, {'rpn_full_every': 3, 'rpn_threshold': 0.25})
    assert isinstance(factory, rpn_aggregator.RPNFactory)
    assert (factory.full_every, factory.threshold) == (3, 0.25)
