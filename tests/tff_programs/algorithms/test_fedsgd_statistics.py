"""FedSGD on a batch-norm model averages the moving statistics (n_k weights)."""

import collections

import numpy as np
import pytest
import tensorflow as tf

from tff_programs import sections
from tff_programs import experiment
from tff_programs.algorithms import base
from tff_programs.algorithms import fedavg
from tff_programs.algorithms import fedavg_stats

SPEC = collections.OrderedDict(x=tf.TensorSpec([None, 2], tf.float32), y=tf.TensorSpec([None], tf.int64))
DATA = {
    'a': (np.array([[1., 0.], [0., 2.]], np.float32), np.array([0, 1], np.int64)),
    'b': (np.array([[1., 1.], [2., 0.], [0., 1.]], np.float32), np.array([0, 0, 1], np.int64)),
}
ETA, SERVER_LR, BN_MOMENTUM = 0.5, 0.8, 0.9


def bn_net():
  inputs = tf.keras.Input([2])
  h = tf.keras.layers.Dense(2, name='fc1')(inputs)
  h = tf.keras.layers.BatchNormalization(momentum=BN_MOMENTUM, name='bn')(h)
  return tf.keras.Model(inputs, tf.keras.layers.Dense(2, name='logits')(h))


TASK = base.Task(bn_net, SPEC, 2)


def dataset(cid):
  x, y = DATA[cid]
  return tf.data.Dataset.from_tensor_slices(collections.OrderedDict(x=x, y=y)).batch(100)


def config(**overrides):
  return experiment.ExperimentConfig(**{**dict(
      algorithm='fedsgd', client_learning_rate=ETA, server_learning_rate=SERVER_LR,
      local_epochs=1, batch_size='inf'), **overrides})


def test_fedsgd_averages_statistics_and_takes_the_fedsgd_step(tff_context):
  ours = experiment.build_algorithm(config(algorithm='fedsgd'), TASK)
  assert isinstance(ours, fedavg_stats.FedAvgWithStatistics) and ours.name == 'fedsgd'
  stock = fedavg.build_tff_fedsgd(TASK, sections.ClientTrainingOptions(client_learning_rate=ETA), fedavg.FedSGDOptions(server_learning_rate=SERVER_LR))
  s_ours, s_stock = ours.initialize(3), stock.initialize(3)
  w0 = ours.model_weights(s_ours)  # Keras order: W1, b1, gamma, beta, mean, var, W2, b2
  out = ours.next(s_ours, 1, ['a', 'b'], [dataset('a'), dataset('b')], {})
  stock_out = stock.next(s_stock, 1, ['a', 'b'], [dataset('a'), dataset('b')], {})
  got, stock_weights = ours.model_weights(out.state), stock.model_weights(stock_out.state)
  # Statistics: n_k-weighted average of each client's one batch-norm update
  # from (0, 1) towards the moments of h = x W1 + b1 at the global weights.
  mean, var = np.zeros(2), np.zeros(2)
  for cid, gamma in (('a', 2 / 5), ('b', 3 / 5)):
    h = DATA[cid][0] @ w0[0] + w0[1]
    mean += gamma * (1 - BN_MOMENTUM) * h.mean(0)
    var += gamma * (BN_MOMENTUM + (1 - BN_MOMENTUM) * h.var(0))
  np.testing.assert_allclose(got[4], mean, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(got[5], var, rtol=1e-5, atol=1e-6)
  # Trainable weights: TFF's FedSGD step w - eta*server_lr * sum_k n_k/n g_k...
  for i in (0, 1, 2, 3, 6, 7):
    np.testing.assert_allclose(got[i], stock_weights[i], rtol=1e-5, atol=1e-6)
  assert not np.allclose(got[0], w0[0])
  # ...which leaves the statistics at 0 and 1.
  np.testing.assert_array_equal(stock_weights[4], np.zeros(2))
  np.testing.assert_array_equal(stock_weights[5], np.ones(2))
  assert out.metrics['learning_rate'] == pytest.approx(ETA * SERVER_LR)


@pytest.mark.parametrize('overrides, message', [
    ({'batch_size': 10}, "--batch_size=10: fedsgd on a model with batch-norm statistics"),
])
def test_fedsgd_on_statistics_refuses_what_it_cannot_honour(tff_context, overrides, message):
  with pytest.raises(fedavg_stats.StatisticsError, match=message):
    experiment.build_algorithm(config(**overrides, algorithm='fedsgd'), TASK)


def test_fedsgd_without_statistics_is_tffs():
  plain = base.Task(lambda: tf.keras.Sequential([tf.keras.Input([2]), tf.keras.layers.Dense(2)]),
                    SPEC, 2)
  algorithm = experiment.build_algorithm(config(batch_size=10, algorithm='fedsgd'), plain)
  assert isinstance(algorithm, fedavg.LearningProcessAlgorithm)
