"""Byte accounting: dense, bit-packed and quantized costs by hand."""

from compression import accounting
from compression import quantization


def test_dense_cost_counts_float32():
  assert accounting.dense_cost([(3, 3, 1, 32), (32,)]) == accounting.TransmissionCost(320, 1280)


def test_encoded_bytes_bit_packs_and_adds_overhead():
  assert accounting.encoded_bytes(10, accounting.ValueEncoding(8, 8)) == 18
  assert accounting.encoded_bytes(10, accounting.ValueEncoding(4, 0)) == 5
  assert accounting.encoded_bytes(3, accounting.ValueEncoding(3, 0)) == 2  # 9 bits -> 2 bytes
  assert accounting.encoded_bytes(0, accounting.ValueEncoding(8, 8)) == 0  # nothing sent: no min/max either


def test_quantized_factory_only_quantizes_large_tensors():
  q = quantization.QuantizedMeanFactory(bits=8, threshold=100)
  # (10, 20) has 200 values > 100: 200 bytes + 8; (20,) stays float32: 80 bytes.
  assert q.upload_cost([(10, 20), (20,)]) == accounting.TransmissionCost(220, 208 + 80)
  assert q.download_cost([(10, 20), (20,)]) == accounting.TransmissionCost(220, 880)


def test_costs_add_and_scale():
  c = accounting.TransmissionCost(2, 8)
  assert c + c == accounting.TransmissionCost(4, 16) and c.times(3) == accounting.TransmissionCost(6, 24)
