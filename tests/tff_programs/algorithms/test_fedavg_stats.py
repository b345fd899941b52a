"""FedAvg with batch-norm statistics averaging (tff_programs/algorithms/fedavg_stats.py)."""

import collections
import warnings

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
LR = 0.5
BN_MOMENTUM = 0.9


def bn_net():
  inputs = tf.keras.Input([2])
  h = tf.keras.layers.Dense(2, name='fc1')(inputs)
  h = tf.keras.layers.BatchNormalization(momentum=BN_MOMENTUM, name='bn')(h)
  return tf.keras.Model(inputs, tf.keras.layers.Dense(2, name='logits')(h))


TASK = base.Task(bn_net, SPEC, 2)


def dataset(cid):
  x, y = DATA[cid]
  return tf.data.Dataset.from_tensor_slices(collections.OrderedDict(x=x, y=y)).batch(100)


def flags(**overrides):
  """The experiment config the registry builders read (the real one, so it cannot drift)."""
  return experiment.ExperimentConfig(**{**dict(
      client_learning_rate=LR, server_learning_rate=1.0, learning_rate_decay=1.0,
      client_weighting='num_examples', client_momentum=0.0, local_epochs=1,
      rpn_threshold=0.0, rpn_weighting='uniform'), **overrides})


@pytest.mark.parametrize('weighting,gamma', [
    ('num_examples', {'a': 2 / 5, 'b': 3 / 5}),
    ('uniform', {'a': 1 / 2, 'b': 1 / 2}),
])
def test_statistics_are_weighted_averages_and_trainables_match_tff(tff_context, weighting, gamma):
  ours = experiment.build_algorithm(flags(client_weighting=weighting, algorithm='fedavg'), TASK)
  assert isinstance(ours, fedavg_stats.FedAvgWithStatistics) and not ours.uses_client_states
  tff_avg = fedavg.build_tff_fedavg(TASK, sections.ClientTrainingOptions(client_learning_rate=LR), fedavg.FedAvgOptions(client_weighting=weighting))
  s_ours, s_tff = ours.initialize(3), tff_avg.initialize(3)
  w_init = ours.model_weights(s_ours)  # Keras order: W1, b1, gamma, beta, mean, var, W2, b2
  out = ours.next(s_ours, 1, ['a', 'b'], [dataset('a'), dataset('b')], {})
  assert out.client_states == {}
  s_tff = tff_avg.next(s_tff, 1, ['a', 'b'], [dataset('a'), dataset('b')], {}).state
  got, tff_weights = ours.model_weights(out.state), tff_avg.model_weights(s_tff)
  # By hand: one full-batch step per client; BN moves its statistics from
  # (0, 1) towards the batch moments of h = x W1 + b1 at the initial weights.
  mean = np.zeros(2)
  var = np.zeros(2)
  for cid, g in gamma.items():
    h = DATA[cid][0] @ w_init[0] + w_init[1]
    mean += g * (1 - BN_MOMENTUM) * h.mean(0)
    var += g * (BN_MOMENTUM * 1.0 + (1 - BN_MOMENTUM) * h.var(0))
  np.testing.assert_allclose(got[4], mean, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(got[5], var, rtol=1e-5, atol=1e-6)
  # TFF's FedAvg trains the same trainable weights but freezes the statistics.
  for i in (0, 1, 2, 3, 6, 7):
    np.testing.assert_allclose(got[i], tff_weights[i], rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(tff_weights[4], np.zeros(2))
  np.testing.assert_array_equal(tff_weights[5], np.ones(2))
  # Upload = every trainable value plus the 4 statistics values.
  assert out.metrics['upload_params_per_client'] == 2 * 2 + 2 + 2 + 2 + 2 + 2 + 2 * 2 + 2


def test_models_without_statistics_keep_tffs_fedavg():
  def plain():
    inputs = tf.keras.Input([2])
    return tf.keras.Model(inputs, tf.keras.layers.Dense(2)(inputs))
  algorithm = experiment.build_algorithm(flags(algorithm='fedavg'), base.Task(plain, SPEC, 2))
  assert isinstance(algorithm, fedavg.LearningProcessAlgorithm)


@pytest.mark.parametrize('override,message', [
    (dict(client_momentum=0.9), '--client_momentum=0.9: models with batch-norm statistics'),
    (dict(server_learning_rate=2.0), '--server_learning_rate=2.0: models with batch-norm'),
])
def test_unsupported_settings_are_one_line_errors(override, message):
  with pytest.raises(fedavg_stats.StatisticsError) as err:
    experiment.build_algorithm(flags(**override, algorithm='fedavg'), TASK)
  assert str(err.value).startswith(message) and '\n' not in str(err.value)


def test_rpn_on_a_batch_norm_model_averages_statistics_too(tff_context):
  algorithm = experiment.build_algorithm(flags(algorithm='rpn'), TASK)
  assert isinstance(algorithm, fedavg_stats.FedAvgWithStatistics) and algorithm.name == 'rpn'
  state = algorithm.initialize(0)
  w_init = algorithm.model_weights(state)
  out = algorithm.next(state, 1, ['a', 'b'], [dataset('a'), dataset('b')], {})
  got = algorithm.model_weights(out.state)
  # By hand, as above with rpn_weighting='uniform' (gamma = 1/2 each): nothing to pool
  # in a Dense-only model, so the statistics are plain uniform averages.
  mean, var = np.zeros(2), np.zeros(2)
  for cid in ('a', 'b'):
    h = DATA[cid][0] @ w_init[0] + w_init[1]
    mean += 0.5 * (1 - BN_MOMENTUM) * h.mean(0)
    var += 0.5 * (BN_MOMENTUM * 1.0 + (1 - BN_MOMENTUM) * h.var(0))
  np.testing.assert_allclose(got[4], mean, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(got[5], var, rtol=1e-5, atol=1e-6)
  # And every weight equals a uniformly weighted FedAvg round from the same start.
  fedavg_uniform = experiment.build_algorithm(flags(algorithm='fedavg', client_weighting='uniform'), TASK)
  reference = fedavg_uniform.model_weights(fedavg_uniform.next(
      fedavg_uniform.initialize(0), 1, ['a', 'b'], [dataset('a'), dataset('b')], {}).state)
  for g, r in zip(got, reference):
    np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-6)


def test_tffs_frozen_statistics_warning_is_silenced_only_where_they_are_averaged(tff_context):
  def bn_warnings(build):
    with warnings.catch_warnings(record=True) as caught:
      warnings.simplefilter('always')
      build()
    return [w for w in caught if 'Batch Normalization contains' in str(w.message)]
  assert not bn_warnings(lambda: experiment.build_algorithm(flags(algorithm='fedavg'), TASK))
  assert bn_warnings(lambda: fedavg.build_tff_fedavg(TASK, sections.ClientTrainingOptions(), fedavg.FedAvgOptions()))


def test_non_finite_clients_counts_clients_with_nan_or_inf_updates(tff_context):
  """Client c has an inf input: NaN batch statistics, loss and delta; a stays finite."""
  algorithm = experiment.build_algorithm(flags(algorithm='fedavg'), TASK)
  bad = tf.data.Dataset.from_tensor_slices(collections.OrderedDict(
      x=np.array([[np.inf, 1.], [0., 1.]], np.float32), y=np.array([0, 1], np.int64))).batch(100)
  state = algorithm.initialize(0)
  out = algorithm.next(state, 1, ['a', 'c'], [dataset('a'), bad], {})
  assert out.metrics['non_finite_clients'] == 1
  assert not np.isfinite(algorithm.model_weights(out.state)[0]).all()  # the mean is poisoned
  finite = algorithm.next(algorithm.initialize(0), 1, ['a', 'b'], [dataset('a'), dataset('b')], {})
  assert finite.metrics['non_finite_clients'] == 0
