"""tff_programs/model_adapter.py: masked loss and accuracy, weight conversions.

Hand-computed values with 3 classes and logits chosen so softmax is exact:
    logits (0, ln 3, 0) -> p = (1/5, 3/5, 1/5): CE of class 1 = ln(5/3)
    logits (0, 0, 0)    -> p = (1/3, 1/3, 1/3): CE of any class = ln 3
    logits (0, 0, 10)   -> CE of class 0 = ln(2 + e^10) ~ 10.0001
The last one sits on padding (label 0): a loss that did not mask it would be
about 10 times too large.
"""

import collections
import math

import numpy as np
import pytest
import tensorflow as tf

from tff_programs import model_adapter

PAD = 0
LN3 = math.log(3.0)
SURE_1 = [0.0, LN3, 0.0]  # argmax 1; CE(1) = ln(5/3).
FLAT = [0.0, 0.0, 0.0]  # argmax 0 (first of ties); CE(any) = ln 3.
SURE_2 = [0.0, 0.0, 10.0]  # argmax 2; CE(0) ~ 10.


def masked_loss(y_true, logits, sample_weight=None):
  loss = model_adapter.MaskedSparseCategoricalCrossentropy(ignore_label=PAD)
  return float(loss(tf.constant(y_true), tf.constant(logits, tf.float32), sample_weight))


# ------------------------------------------------------------------- the loss


def test_masked_loss_is_the_mean_over_non_padding_positions():
  # Positions: label 1 on SURE_1 (ln 5/3), label 2 on FLAT (ln 3), padding.
  got = masked_loss([[1, 2, PAD]], [[SURE_1, FLAT, SURE_2]])
  assert got == pytest.approx(math.log(5.0) / 2, rel=1e-6)  # (ln 5/3 + ln 3) / 2
  unmasked = float(tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)(
      tf.constant([[1, 2, PAD]]), tf.constant([[SURE_1, FLAT, SURE_2]])))
  assert unmasked == pytest.approx((math.log(5.0) + math.log(2 + math.exp(10))) / 3, rel=1e-6)


def test_masked_loss_weights_every_real_position_equally_across_sequences():
  # Sequence A: 1 real position (ln 5/3); B: 3 real positions (ln 3 each).
  y = [[1, PAD, PAD, PAD], [2, 2, 1, PAD]]
  logits = [[SURE_1, SURE_2, SURE_2, SURE_2], [FLAT, FLAT, FLAT, SURE_2]]
  # (ln 5/3 + 3 ln 3) / 4 = ln 45 / 4, not the mean of per-sequence means (ln 5 / 2).
  assert masked_loss(y, logits) == pytest.approx(math.log(45.0) / 4, rel=1e-6)


def test_masked_loss_of_padding_only_is_zero_not_nan():
  assert masked_loss([[PAD, PAD]], [[SURE_2, FLAT]]) == 0.0


def test_masked_loss_ignores_sample_weight():
  # Documented behaviour: the mask is the only weighting (TFF passes none).
  y, logits = [[1, 2, PAD]], [[SURE_1, FLAT, SURE_2]]
  assert masked_loss(y, logits, tf.constant([[0.0, 1.0, 1.0]])) == masked_loss(y, logits)


def test_loss_fn_picks_the_masked_loss_only_with_an_ignore_label():
  masked = model_adapter.loss_fn(PAD)
  assert isinstance(masked, model_adapter.MaskedSparseCategoricalCrossentropy)
  assert float(masked(tf.constant([[1, PAD]]), tf.constant([[SURE_1, SURE_2]]))) == (
      pytest.approx(math.log(5.0 / 3.0), rel=1e-6))
  plain = model_adapter.loss_fn(None)
  assert isinstance(plain, tf.keras.losses.SparseCategoricalCrossentropy)
  assert float(plain(tf.constant([1, 2]), tf.constant([SURE_1, FLAT]))) == (
      pytest.approx(math.log(5.0) / 2, rel=1e-6))  # On logits: (ln 5/3 + ln 3) / 2.


# --------------------------------------------------------------- the accuracy


def test_masked_accuracy_counts_only_non_padding_positions():
  metric = model_adapter.MaskedSparseCategoricalAccuracy(ignore_label=PAD)
  # Predictions 1, 0, 0, 0: right on the first, wrong on the second, and the
  # two padding positions would count as right (label 0 = argmax 0) unmasked.
  metric.update_state(tf.constant([[1, 2, PAD, PAD]]),
                      tf.constant([[SURE_1, FLAT, FLAT, FLAT]]))
  assert float(metric.result()) == 0.5  # 1 of 2, not 3 of 4.
  metric.update_state(tf.constant([[2, PAD]]), tf.constant([[SURE_2, FLAT]]))
  assert float(metric.result()) == pytest.approx(2 / 3)  # Accumulates: 2 of 3.
  assert [float(v) for v in metric.variables] == [2.0, 3.0]  # total, count


def test_masked_accuracy_multiplies_a_sample_weight_into_the_mask():
  metric = model_adapter.MaskedSparseCategoricalAccuracy(ignore_label=PAD)
  metric.update_state(tf.constant([[1, 2, PAD]]), tf.constant([[SURE_1, FLAT, FLAT]]),
                      sample_weight=tf.constant([[1.0, 0.0, 1.0]]))
  assert float(metric.result()) == 1.0  # Only the first position counts.


def test_masked_accuracy_config_round_trip_keeps_the_ignore_label():
  metric = model_adapter.MaskedSparseCategoricalAccuracy(ignore_label=7)
  config = metric.get_config()
  assert config['ignore_label'] == 7 and config['name'] == 'sparse_categorical_accuracy'
  again = model_adapter.MaskedSparseCategoricalAccuracy.from_config(config)
  again.update_state(tf.constant([[7, 1]]), tf.constant([[FLAT, SURE_1]]))
  assert float(again.result()) == 1.0  # Label 7 is ignored, label 1 is right.


def test_metrics_fn_fresh_metrics_masked_only_with_an_ignore_label():
  (masked,) = model_adapter.metrics_fn(PAD)
  assert isinstance(masked, model_adapter.MaskedSparseCategoricalAccuracy)
  (other,) = model_adapter.metrics_fn(PAD)
  assert other is not masked  # TFF builds a model per call: no shared state.
  (plain,) = model_adapter.metrics_fn(None)
  assert type(plain) is tf.keras.metrics.SparseCategoricalAccuracy  # pylint: disable=unidiomatic-typecheck
  plain.update_state(tf.constant([[1, 2, PAD, PAD]]), tf.constant([[SURE_1, FLAT, FLAT, FLAT]]))
  assert float(plain.result()) == 0.75


# ---------------------------------------------- through the tff.learning model


def lookup_model():
  """Logits = row `x` of a fixed table: input id i -> ROWS[i] at each position."""
  rows = np.array([SURE_2, SURE_1, FLAT], np.float32)
  inputs = tf.keras.Input([None], dtype=tf.int32)
  layer = tf.keras.layers.Embedding(3, 3, embeddings_initializer=tf.constant_initializer(rows))
  return tf.keras.Model(inputs, layer(inputs))


def test_tff_model_masks_padding_in_loss_and_accuracy():
  spec = collections.OrderedDict(x=tf.TensorSpec([None, None], tf.int32),
                                 y=tf.TensorSpec([None, None], tf.int32))
  model = model_adapter.tff_model_fn(lookup_model, spec, ignore_label=PAD)()
  # A TFF model's variables start at zeros; computations assign the weights first.
  assert not np.any(model.trainable_variables[0].numpy())
  model.trainable_variables[0].assign(lookup_model().get_weights()[0])
  # Logits: SURE_1, FLAT, SURE_2 (padding); predictions 1, 0, 2.
  batch = collections.OrderedDict(x=tf.constant([[1, 2, 0]]), y=tf.constant([[1, 2, PAD]]))
  output = model.forward_pass(batch, training=False)
  assert float(output.loss) == pytest.approx(math.log(5.0) / 2, rel=1e-6)
  metrics = model.report_local_unfinalized_metrics()
  assert [float(v) for v in metrics['sparse_categorical_accuracy']] == [1.0, 2.0]
  assert [float(v) for v in metrics['num_examples']] == [1.0]  # One sequence.


# ------------------------------------------------------------------ weights


def bn_first_model():
  """BatchNorm before Dense: model.weights interleaves trainable and not."""
  inputs = tf.keras.Input([2])
  x = tf.keras.layers.BatchNormalization()(inputs)
  outputs = tf.keras.layers.Dense(3)(x)
  return tf.keras.Model(inputs, outputs)


def test_model_weights_from_keras_splits_trainable_and_statistics():
  model = bn_first_model()
  model.set_weights([np.full(w.shape, i, np.float32) for i, w in enumerate(model.weights)])
  # model.weights: gamma 0, beta 1, moving mean 2, moving variance 3, kernel 4, bias 5.
  weights = model_adapter.model_weights_from_keras(model)
  assert [float(w.flat[0]) for w in weights.trainable] == [0, 1, 4, 5]
  assert [float(w.flat[0]) for w in weights.non_trainable] == [2, 3]
  assert [w.shape for w in weights.trainable] == [(2,), (2,), (2, 3), (3,)]
  assert all(isinstance(w, np.ndarray) for w in weights.trainable + weights.non_trainable)


def test_keras_weights_order_undoes_the_split():
  model = bn_first_model()
  source = [np.full(w.shape, 10 + i, np.float32) for i, w in enumerate(model.weights)]
  model.set_weights(source)
  weights = model_adapter.model_weights_from_keras(model)
  ordered = model_adapter.keras_weights_order(model, weights)
  assert [float(w.flat[0]) for w in ordered] == [10, 11, 12, 13, 14, 15]
  fresh = bn_first_model()
  fresh.set_weights(ordered)
  for a, b in zip(fresh.get_weights(), source):
    np.testing.assert_array_equal(a, b)


def test_placeholder_initial_values_start_initialized_variables_at_zero():
  # Inside: the glorot kernel, the ones of gamma and of the moving variance are all zeros;
  # a variable given a value (not an initializer) keeps it.
  with model_adapter.placeholder_initial_values():
    model = bn_first_model()
    counter = tf.Variable(3.0)
  assert [w.shape for w in model.get_weights()] == [(2,), (2,), (2,), (2,), (2, 3), (3,)]
  assert all(not np.any(w) for w in model.get_weights())
  assert float(counter) == 3.0
  outside = bn_first_model()  # gamma and the moving variance start at one again
  np.testing.assert_array_equal(outside.get_weights()[0], [1.0, 1.0])
  np.testing.assert_array_equal(outside.get_weights()[3], [1.0, 1.0])
