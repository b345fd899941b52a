"""Uniform quantization: nearest-level rounding, masked uploads, and the TFF mean it wraps."""

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from compression import quantization

# min 0, max 255: with 8 bits the levels are the integers 0..255, so each value
# decodes to the nearest integer (floor for k + 0.3, ceil for k + 0.7).
RAMP = np.concatenate([[0.0, 255.0], np.arange(1, 101) + 0.3, np.arange(101, 201) + 0.7]).astype(np.float32)
NEAREST = np.concatenate([[0.0, 255.0], np.arange(1, 101), np.arange(102, 202)]).astype(np.float32)


def test_rounds_to_the_nearest_level_by_default():
  # TFF's stochastic rounding would round some k + 0.3 up (each with p = 0.3).
  decoded = quantization.quantize_dequantize(tf.constant(RAMP), 8).numpy()
  np.testing.assert_allclose(decoded, NEAREST, rtol=1e-6)


def test_unsent_values_decode_to_exact_zero_and_do_not_widen_the_range():
  x = tf.constant([[-1.0, 10.0], [3.0, 1.0]])
  keep = tf.constant([[True, False], [True, True]])
  decoded = quantization.quantize_dequantize(x, 8, keep=keep).numpy()
  # Range of the sent values: [-1, 3] (not 10): levels -1 + 4k/255; 1.0 -> k = 128.
  assert decoded[0, 1] == 0.0
  assert decoded[0, 0] == -1.0 and decoded[1, 0] == 3.0
  np.testing.assert_allclose(decoded[1, 1], -1 + 128 * 4 / 255, rtol=1e-6)
  none_sent = quantization.quantize_dequantize(x, 8, keep=tf.zeros_like(keep))
  np.testing.assert_array_equal(none_sent.numpy(), np.zeros([2, 2]))


def test_roundtrip_leaves_tensors_at_or_below_the_threshold_alone():
  q = quantization.QuantizedMeanFactory(8, threshold=4)
  x = tf.constant([0.0, 0.3, 1.0, 0.51])
  assert not q.quantizes([4]) and q.quantizes([5])
  np.testing.assert_array_equal(q.roundtrip(x).numpy(), x.numpy())


def test_quantized_mean_is_reproducible(tff_context):
  # FedAvg's quantized aggregator (TFF's EncodedSumFactory): nearest level, so
  # two clients sending RAMP average to NEAREST, the same on every call.
  value_type = tff.TensorType(np.float32, RAMP.shape)
  process = quantization.QuantizedMeanFactory(8, threshold=10).create(value_type, tff.TensorType(np.float32))
  results = [process.next(process.initialize(), [RAMP, RAMP], [1.0, 1.0]).result for _ in range(2)]
  np.testing.assert_allclose(results[0], NEAREST, rtol=1e-6)
  np.testing.assert_array_equal(results[0], results[1])
