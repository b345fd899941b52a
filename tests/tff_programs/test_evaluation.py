"""Evaluation: one pass over the central test set, bit-identical to Keras; one meaning of eval_accuracy."""

import numpy as np
import pytest
import tensorflow as tf

from datasets import federated
from tff_programs import evaluation
from tff_programs.algorithms import base


class PersonalAlgorithm(base.FederatedAlgorithm):
  """Clients keep their own linear model (a 1-feature threshold classifier)."""

  uses_client_states = True

  def initialize(self, seed):
    return {}

  def next(self, *args):
    raise NotImplementedError

  def model_weights(self, state):
    raise NotImplementedError

  def client_model_weights(self, state, client_state):
    return [np.array([[client_state, -client_state]], np.float32), np.zeros(2, np.float32)]


def linear_model():
  inputs = tf.keras.Input([1])
  return tf.keras.Model(inputs, tf.keras.layers.Dense(2)(inputs))


def test_personal_models_are_averaged_over_trained_clients_on_the_global_test_set():
  # Central test: x = [1, -1, 2, -2], y = [1, 0, 1, 0]. A client with state +1
  # predicts class 0 for x > 0 (accuracy 0 on the central set), state -1 the
  # opposite (accuracy 1). Client c2 was never trained and is left out.
  x = np.array([[1.], [-1.], [2.], [-2.]], np.float32)
  y = np.array([1, 0, 1, 0], np.int64)
  data = federated.FederatedData(
      name='toy', client_ids=('c0', 'c1', 'c2'),
      train_arrays={c: (x, y) for c in ('c0', 'c1', 'c2')},
      test_arrays={'c0': (x[:2], y[:2]), 'c1': (x[:1], y[:1]), 'c2': (x, y)},
      central_test=(x, y), label_histogram=np.ones((3, 2), np.int64), num_classes=2,
      input_shape=(1,))
  task = base.Task(linear_model, {}, 2)
  evaluate, _ = evaluation.make_evaluate_fn(PersonalAlgorithm(), task, data)
  result = evaluate({}, {'c0': np.float32(1.0), 'c1': np.float32(-1.0)})
  assert result['eval_clients'] == 2
  assert result['eval_accuracy'] == pytest.approx(0.5)  # mean of 0 and 1
  # Own splits: c0 scores 0 on (x=1, y=1), (x=-1, y=0); c1 scores 1 on (x=1, y=1).
  assert result['personalized_accuracy_mean'] == pytest.approx(0.5)
  assert (result['personalized_accuracy_min'], result['personalized_accuracy_max']) == (0.0, 1.0)
  assert evaluate({}, {}) == {}


def test_mean_over_models_averages_each_models_loss_and_accuracy():
  evaluator = evaluation.KerasEvaluator(linear_model)
  x = np.array([[1.], [-1.]], np.float32)
  y = np.array([1, 0], np.int64)
  weights = {'a': [np.array([[1., -1.]], np.float32), np.zeros(2, np.float32)],
             'b': [np.array([[-1., 1.]], np.float32), np.zeros(2, np.float32)]}
  result = evaluator.mean_over_models(weights.get, ['a', 'b'], x, y)
  # a: logits (1,-1) for x=1 -> wrong; (-1, 1) for x=-1 -> wrong: loss log(1+e^2).
  # b: both right: loss log(1+e^-2). Accuracy 0 and 1.
  assert result['eval_accuracy'] == pytest.approx(0.5)
  assert result['eval_loss'] == pytest.approx((np.log1p(np.e**2) + np.log1p(np.e**-2)) / 2, rel=1e-5)
  assert result['eval_clients'] == 2


def test_one_pass_scores_equal_keras_evaluate_and_per_client_splits():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(2500, 1)).astype(np.float32)
  y = rng.integers(0, 2, 2500).astype(np.int64)
  evaluator = evaluation.KerasEvaluator(linear_model)
  weights = [np.array([[0.7, -0.3]], np.float32), np.array([0.1, -0.1], np.float32)]
  # Bit for bit what model.evaluate reports (the same Keras loss and metric objects).
  assert evaluator.score(weights, x, y)[:2] == evaluator.evaluate(weights, x, y)
  splits = {'a': np.arange(0, 900), 'b': np.arange(900, 2000), 'c': np.arange(2000, 2500)}
  one_pass = evaluator.central_and_clients(weights, x, y, splits)
  two_passes = evaluator.central(weights, x, y)
  two_passes.update(evaluator.per_client(
      None, {c: (x[i], y[i]) for c, i in splits.items()}, shared_weights=weights))
  assert one_pass == pytest.approx(two_passes, abs=1e-12)
  assert (one_pass['eval_loss'], one_pass['eval_accuracy']) == (two_passes['eval_loss'],
                                                               two_passes['eval_accuracy'])
