"""Tests for models.lstm and the peephole LSTM cell."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from models import blocks
from models import common
from models import flops
from models import layers as fs_layers
from models import lstm


def _plain_count(vocab: int) -> int:
  # 8V embedding + 4*256*(8+256+1) + 4*256*(256+256+1) + 257V dense.
  return 8 * vocab + 271_360 + 525_312 + 257 * vocab


def test_plain_formula_has_no_integer_solution_and_peephole_has_258():
  assert (lstm.PAPER_PARAMS - _plain_count(0)) % 265 != 0
  peephole_fixed = _plain_count(0) + 2 * 3 * 256
  assert (lstm.PAPER_PARAMS - peephole_fixed) % 265 == 0
  assert (lstm.PAPER_PARAMS - peephole_fixed) // 265 == lstm.PAPER_VOCAB_SIZE
  assert lstm.PAPER_VOCAB_SIZE == 258


@pytest.fixture(scope='module')
def paper_model():
  return lstm.char_lstm((80,), lstm.PAPER_VOCAB_SIZE, peepholes=True)


def test_paper_parameter_count(paper_model):
  assert paper_model.count_params() == 866_578 == lstm.PAPER_PARAMS


def test_default_keras_lstm_count(natural):
  model = natural('char_lstm')  # V = 90: TFF's 86 characters + 4 specials.
  assert model.count_params() == _plain_count(90) == 820_522
  assert isinstance(model.get_layer('lstm1'), tf.keras.layers.LSTM)


def test_per_step_logits(paper_model):
  assert paper_model.input_shape == (None, 80)
  assert paper_model.inputs[0].dtype == tf.int32
  assert paper_model.output_shape == (None, 80, 258)
  tokens = np.random.RandomState(0).randint(0, 258, (2, 80)).astype(np.int32)
  assert paper_model(tokens).shape == (2, 80, 258)


def test_blocks(paper_model):
  assert blocks.model_blocks(paper_model) == [['embed'], ['lstm1'], ['lstm2'],
                                              ['logits']]


def test_flops_by_hand(natural):
  # Per step: LSTM1 8*1024 + 256*1024 = 270,336; LSTM2 512*1024 = 524,288;
  # Dense 256*90 = 23,040 MACs; 80 steps.
  expected = 2 * 80 * (270_336 + 524_288 + 23_040)
  assert flops.forward_flops(natural('char_lstm'), (80,)) == expected


def test_peephole_cell_matches_numpy_reference():
  tf.keras.utils.set_random_seed(0)
  cell = fs_layers.PeepholeLSTMCell(3)
  x = np.random.RandomState(1).randn(2, 4).astype(np.float32)
  h0 = np.random.RandomState(2).randn(2, 3).astype(np.float32)
  c0 = np.random.RandomState(3).randn(2, 3).astype(np.float32)
  h, (h_state, c) = cell(x, [h0, c0])
  assert cell.count_params() == 4 * 3 * (4 + 3 + 1) + 3 * 3

  sigmoid = lambda v: 1.0 / (1.0 + np.exp(-v))
  z = x @ cell.kernel.numpy() + h0 @ cell.recurrent_kernel.numpy()
  z = z + cell.bias.numpy()
  z_i, z_f, z_c, z_o = np.split(z, 4, axis=-1)
  i = sigmoid(z_i + cell.input_gate_peephole_weights.numpy() * c0)
  f = sigmoid(z_f + cell.forget_gate_peephole_weights.numpy() * c0)
  c_ref = f * c0 + i * np.tanh(z_c)
  o = sigmoid(z_o + cell.output_gate_peephole_weights.numpy() * c_ref)
  np.testing.assert_allclose(c.numpy(), c_ref, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(h.numpy(), o * np.tanh(c_ref), rtol=1e-5,
                             atol=1e-6)
  np.testing.assert_array_equal(h.numpy(), h_state.numpy())
  np.testing.assert_array_equal(cell.bias.numpy()[3:6], np.ones(3))


def test_peephole_model_round_trips(tmp_path):
  model = lstm.char_lstm((6,), 5, units=4, peepholes=True)
  tokens = np.array([[0, 1, 2, 3, 4, 0]], np.int32)
  path = str(tmp_path / 'lstm.keras')
  model.save(path)
  loaded = tf.keras.models.load_model(path)
  np.testing.assert_allclose(loaded(tokens).numpy(), model(tokens).numpy(),
                             atol=1e-6)


@pytest.mark.parametrize('peepholes', [False, True])
def test_deterministic_under_seed(peepholes):
  weights = []
  for _ in range(2):
    tf.keras.utils.set_random_seed(11)
    weights.append(
        lstm.char_lstm((6,), 5, units=4, peepholes=peepholes).get_weights())
  for a, b in zip(*weights, strict=True):
    np.testing.assert_array_equal(a, b)
  tf.keras.utils.set_random_seed(12)
  other = lstm.char_lstm((6,), 5, units=4, peepholes=peepholes).get_weights()
  assert not np.array_equal(weights[0][0], other[0])


def test_bad_shape_raises():
  with pytest.raises(common.ModelError):
    lstm.char_lstm((80, 1), 10)


if __name__ == '__main__':
  raise SystemExit(pytest.main([__file__, '-q', '-p', 'no:cacheprovider']))
