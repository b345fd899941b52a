"""FedProx: the proximal step by hand, a two-step round by hand, mu=0 is FedAvg.

Softmax regression on 2 features, 2 classes, weights 0 at start (as in
test_fedavg.py): the gradient of the mean cross-entropy is
    dL/dW = x^T (p - onehot(y)) / n,   dL/db = mean(p - onehot(y)),
and FedProx's client step is w <- w - eta (grad + mu (w - w_t)).
"""

import collections

import numpy as np
import pytest
import tensorflow as tf

from tff_programs import config
from tff_programs import experiment
from tff_programs import options
from tff_programs import sections
from tff_programs.algorithms import base
from tff_programs.algorithms import fedavg
from tff_programs.algorithms import fedprox

X = np.array([[1., 0.], [0., 2.]], np.float32)
Y = np.array([0, 1], np.int64)
ETA, MU = 0.5, 3.0


def linear_model():
  inputs = tf.keras.Input([2])
  return tf.keras.Model(inputs, tf.keras.layers.Dense(2, kernel_initializer='zeros', name='logits')(inputs))


TASK = base.Task(linear_model, collections.OrderedDict(
    x=tf.TensorSpec([None, 2], tf.float32), y=tf.TensorSpec([None], tf.int64)), 2)


def two_batches():
  return tf.data.Dataset.from_tensor_slices(collections.OrderedDict(x=X, y=Y)).batch(2).repeat(2)


def gradient(w, b):
  logits = X @ w + b
  p = np.exp(logits - logits.max(1, keepdims=True))
  p /= p.sum(1, keepdims=True)
  r = p - np.eye(2)[Y]
  return X.T @ r / len(Y), r.mean(0)


def test_proximal_step_by_hand():
  w = [tf.Variable([1.0, 2.0]), tf.Variable(3.0)]
  fedprox.proximal_sgd_step(w, [tf.constant([0.5, -1.0]), tf.constant(0.0)],
                            [tf.constant([0.0, 0.0]), tf.constant(1.0)], 0.1, 2.0)
  # 1 - 0.1 (0.5 + 2 * 1) = 0.75; 2 - 0.1 (-1 + 2 * 2) = 1.7; 3 - 0.1 (0 + 2 * 2) = 2.6
  np.testing.assert_allclose(w[0].numpy(), [0.75, 1.7], rtol=1e-6)
  np.testing.assert_allclose(w[1].numpy(), 2.6, rtol=1e-6)


def test_two_steps_pull_towards_the_global_model(tff_context):
  algorithm = fedprox.build(TASK, sections.ClientTrainingOptions(client_learning_rate=ETA),
                            fedprox.FedProxOptions(prox_mu=MU), None)
  state = algorithm.initialize(0)
  w, b = (a.astype(np.float64) for a in algorithm.model_weights(state))
  w0, b0 = w.copy(), b.copy()
  for _ in range(2):  # Two batches: the second step feels the proximal term.
    gw, gb = gradient(w, b)
    w, b = w - ETA * (gw + MU * (w - w0)), b - ETA * (gb + MU * (b - b0))
  out = algorithm.next(state, 1, ['a'], [two_batches()], {})
  kernel, bias = algorithm.model_weights(out.state)
  np.testing.assert_allclose(kernel, w, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(bias, b, rtol=1e-5, atol=1e-7)
  # TFF 0.87's FedProx adds mu (w_t - w): its kernel would be w + 2 eta mu (w_1 - w_t).
  w1 = -ETA * gradient(w0, b0)[0]
  assert not np.allclose(kernel, w + 2 * ETA * MU * w1, atol=1e-3)
  assert out.metrics['non_finite_clients'] == 0 and out.metrics['examples'] == 4


def test_mu_zero_is_fedavg(tff_context):
  training = sections.ClientTrainingOptions(client_learning_rate=ETA)
  prox = fedprox.build(TASK, training, fedprox.FedProxOptions(prox_mu=0.0), None)
  avg = fedavg.build_fedavg(TASK, training)
  out_prox = prox.next(prox.initialize(0), 1, ['a'], [two_batches()], {})
  out_avg = avg.next(avg.initialize(0), 1, ['a'], [two_batches()], {})
  for a, b in zip(prox.model_weights(out_prox.state), avg.model_weights(out_avg.state)):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
  assert out_prox.metrics['train_loss'] == pytest.approx(out_avg.metrics['train_loss'], rel=1e-6)


def test_a_non_finite_client_is_dropped_and_counted(tff_context):
  bad = X.copy()
  bad[0, 0] = np.inf
  algorithm = fedprox.build(TASK, sections.ClientTrainingOptions(client_learning_rate=ETA),
                            fedprox.FedProxOptions(prox_mu=MU), None)
  datasets = [two_batches(), tf.data.Dataset.from_tensor_slices(
      collections.OrderedDict(x=bad, y=Y)).batch(2)]
  out = algorithm.next(algorithm.initialize(0), 1, ['a', 'b'], datasets, {})
  assert out.metrics['non_finite_clients'] == 1 and out.metrics['examples'] == 4
  assert all(np.isfinite(w).all() for w in algorithm.model_weights(out.state))


def test_options_and_refusals_are_one_line():
  with pytest.raises(options.ConfigError, match=r'^--prox_mu=-1: must be a number >= 0$'):
    config.validate(config.ExperimentConfig(algorithm='fedprox', prox_mu=-1))
  with pytest.raises(options.ConfigError, match='--prox_mu=0.5: --algorithm=fedavg'):
    config.validate(config.ExperimentConfig(prox_mu=0.5))
  def bn_model():
    inputs = tf.keras.Input([2])
    return tf.keras.Model(inputs, tf.keras.layers.BatchNormalization()(inputs))
  with pytest.raises(options.ConfigError, match='^--algorithm=fedprox: the model has batch-norm'):
    experiment.build_algorithm(config.ExperimentConfig(algorithm='fedprox'),
                               base.Task(bn_model, TASK.element_spec, 2))
