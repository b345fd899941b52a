"""FedAvg / FedSGD: type signature and exact aggregates on hand-made data.

Model: softmax regression on 2 features, 2 classes, all weights 0 at start. At
w = 0 every softmax is (1/2, 1/2), so the gradient of the mean cross-entropy of a
dataset is, by hand,
    dL/dW = mean_i x_i (p_i - onehot(y_i))^T,   dL/db = mean_i (p_i - onehot(y_i))
with p_i = (1/2, 1/2). One full-batch SGD step from 0 gives -eta * gradient.
"""

import collections

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from tff_programs import sections
from tff_programs.algorithms import base
from tff_programs.algorithms import fedavg

CLIENT_A = (np.array([[1., 0.], [0., 2.]], np.float32), np.array([0, 1], np.int64))
CLIENT_B = (np.array([[1., 1.], [2., 0.], [0., 1.]], np.float32), np.array([0, 0, 1], np.int64))
ETA = 0.5


def linear_model():
  inputs = tf.keras.Input([2])
  outputs = tf.keras.layers.Dense(2, kernel_initializer='zeros', name='logits')(inputs)
  return tf.keras.Model(inputs, outputs)


TASK = base.Task(
    model_builder=linear_model,
    element_spec=collections.OrderedDict(
        x=tf.TensorSpec([None, 2], tf.float32), y=tf.TensorSpec([None], tf.int64)),
    num_classes=2,
)


def grad_at_zero(x, y):
  residual = 0.5 - np.eye(2)[y]  # p - onehot
  return x.T @ residual / len(y), residual.mean(axis=0)


def dataset(x, y, batch):
  return tf.data.Dataset.from_tensor_slices(collections.OrderedDict(x=x, y=y)).batch(batch)


def cfg(**kwargs):
  """(client training options, the algorithm's own option values) from flag-like kwargs."""
  fields = sections.ClientTrainingOptions.__dataclass_fields__
  training = {k: kwargs.pop(k) for k in list(kwargs) if k in fields}
  return sections.ClientTrainingOptions(**training), kwargs


def build(builder, task, config):
  training, own = config
  options_class = fedavg.FedSGDOptions if builder is fedavg.build_fedsgd else fedavg.FedAvgOptions
  return builder(task, training, options_class(**own))


def run_round(builder, config, datasets):
  algorithm = build(builder, TASK, config)
  state = algorithm.initialize(seed=0)
  output = algorithm.next(state, 1, ['a', 'b'], datasets, {})
  return algorithm, output


def test_type_signature(tff_context):
  algorithm = build(fedavg.build_fedavg, TASK, cfg())
  signature = algorithm.process.next.type_signature
  state = signature.parameter.state
  # (<state@SERVER, client_data@CLIENTS> -> <state@SERVER, metrics@SERVER>), same state type.
  assert str(signature.parameter.client_data) == '{<x=float32[?,2],y=int64[?]>*}@CLIENTS'
  assert state.placement is tff.SERVER and signature.result.metrics.placement is tff.SERVER
  assert signature.result.state == state
  assert str(state.member.global_model_weights) == (
      '<trainable=<float32[2,2],float32[2]>,non_trainable=<>>')
  assert str(signature.result.metrics.member.client_work.train) == (
      '<sparse_categorical_accuracy=float32,loss=float32,num_examples=int64,num_batches=int64>')


def test_fedavg_one_full_batch_step_is_example_weighted_average(tff_context):
  _, output = run_round(
      fedavg.build_fedavg, cfg(client_learning_rate=ETA),
      [dataset(*CLIENT_A, 100), dataset(*CLIENT_B, 100)])
  (ga_w, ga_b), (gb_w, gb_b) = grad_at_zero(*CLIENT_A), grad_at_zero(*CLIENT_B)
  expected_w = -ETA * (2 * ga_w + 3 * gb_w) / 5
  expected_b = -ETA * (2 * ga_b + 3 * gb_b) / 5
  trainable = output.state.global_model_weights.trainable
  np.testing.assert_allclose(trainable[0], expected_w, rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(trainable[1], expected_b, rtol=1e-6, atol=1e-7)
  assert output.metrics['examples'] == 5 and output.metrics['clients'] == 2
  # By hand: g_A = [[-.25, .25], [.5, -.5]], g_B = [[-.5, .5], [0, 0]],
  # (2 g_A + 3 g_B) / 5 = [[-.4, .4], [.2, -.2]], times -eta = -0.5:
  np.testing.assert_allclose(trainable[0], [[0.2, -0.2], [-0.1, 0.1]], atol=1e-7)


def test_uniform_weighting_is_plain_mean(tff_context):
  _, output = run_round(
      fedavg.build_fedavg,
      cfg(client_learning_rate=ETA, client_weighting='uniform'),
      [dataset(*CLIENT_A, 100), dataset(*CLIENT_B, 100)])
  (ga_w, _), (gb_w, _) = grad_at_zero(*CLIENT_A), grad_at_zero(*CLIENT_B)
  np.testing.assert_allclose(output.state.global_model_weights.trainable[0],
                             -ETA * (ga_w + gb_w) / 2, rtol=1e-6, atol=1e-7)


def test_fedsgd_equals_one_full_batch_gradient_step_of_weighted_average(tff_context):
  # FedSGD's clients see B=2 minibatches; the gradient is still over the whole
  # client set, and the server step is -eta * sum_k n_k/n g_k = -eta * g(all data).
  _, output = run_round(
      fedavg.build_fedsgd, cfg(client_learning_rate=ETA),
      [dataset(*CLIENT_A, 2), dataset(*CLIENT_B, 2)])
  x = np.concatenate([CLIENT_A[0], CLIENT_B[0]])
  y = np.concatenate([CLIENT_A[1], CLIENT_B[1]])
  g_w, g_b = grad_at_zero(x, y)
  trainable = output.state.global_model_weights.trainable
  np.testing.assert_allclose(trainable[0], -ETA * g_w, rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(trainable[1], -ETA * g_b, rtol=1e-6, atol=1e-7)


def test_fedavg_multiple_local_steps_match_numpy_sgd(tff_context):
  # B=1, E=2 on client A only: four sequential SGD steps, replayed in numpy.
  _, output = run_round(
      fedavg.build_fedavg, cfg(client_learning_rate=ETA),
      [dataset(*CLIENT_A, 1).repeat(2)])
  w, b = np.zeros([2, 2]), np.zeros([2])
  for _ in range(2):
    for xi, yi in zip(*CLIENT_A):
      logits = xi @ w + b
      p = np.exp(logits - logits.max()); p /= p.sum()
      r = p - np.eye(2)[yi]
      w, b = w - ETA * np.outer(xi, r), b - ETA * r
  np.testing.assert_allclose(output.state.global_model_weights.trainable[0], w, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(output.state.global_model_weights.trainable[1], b, rtol=1e-5, atol=1e-6)


def test_learning_rate_decays_per_round(tff_context):
  algorithm = build(fedavg.build_fedavg, TASK, cfg(client_learning_rate=0.1, learning_rate_decay=0.5))
  state = algorithm.initialize(0)
  out = algorithm.next(state, 3, ['a'], [dataset(*CLIENT_A, 2)], {})
  assert out.metrics['learning_rate'] == pytest.approx(0.025)
  assert algorithm.process.get_hparams(out.state)['client_work']['learning_rate'] == pytest.approx(0.025)


def test_initialization_is_seeded(tff_context):
  def random_model():
    inputs = tf.keras.Input([2])
    return tf.keras.Model(inputs, tf.keras.layers.Dense(3)(inputs))
  task = base.Task(random_model, TASK.element_spec, 3)
  algorithm = build(fedavg.build_fedavg, task, cfg())
  a, b, c = (algorithm.model_weights(algorithm.initialize(s)) for s in (7, 7, 8))
  np.testing.assert_array_equal(a[0], b[0])
  assert not np.array_equal(a[0], c[0])
  # The Keras builder's weights under the seed (the TFF model's variables start at zeros).
  tf.keras.utils.set_random_seed(7)
  np.testing.assert_array_equal(a[0], random_model().get_weights()[0])
  assert np.any(a[0])


def test_dense_communication_accounting(tff_context):
  algorithm = build(fedavg.build_fedavg, TASK, cfg())
  out = algorithm.next(algorithm.initialize(0), 1, ['a', 'b'],
                       [dataset(*CLIENT_A, 2), dataset(*CLIENT_B, 2)], {})
  assert out.metrics['upload_params_per_client'] == 6  # 2x2 kernel + 2 bias
  assert out.metrics['upload_bytes'] == 2 * 6 * 4
  assert out.metrics['download_params'] == 6 and out.metrics['download_bytes'] == 48


@pytest.mark.parametrize('builder', [fedavg.build_fedavg, fedavg.build_fedsgd])
def test_a_client_with_a_non_finite_update_is_counted_as_dropped(tff_context, builder):
  # Client B's inputs hold an inf: its gradient (hence update) is not finite, so
  # TFF drops it (weight 0); the round equals client A alone, and says so.
  bad_x = CLIENT_B[0].copy()
  bad_x[0, 0] = np.inf
  config = cfg(client_learning_rate=ETA)
  algorithm, output = run_round(builder, config, [dataset(*CLIENT_A, 2), dataset(bad_x, CLIENT_B[1], 3)])
  assert output.metrics['non_finite_clients'] == 1
  if builder is fedavg.build_fedavg:  # TFF's FedAvg also resets the dropped client's metrics;
    assert output.metrics['examples'] == 2
  else:  # its FedSGD keeps them: the round's loss is not finite (the loop stops there).
    assert not np.isfinite(output.metrics['train_loss'])
  gw, gb = grad_at_zero(*CLIENT_A)
  kernel, bias = algorithm.model_weights(output.state)
  np.testing.assert_allclose(kernel, -ETA * gw, atol=1e-6)
  np.testing.assert_allclose(bias, -ETA * gb, atol=1e-6)
  # Every client dropped: nothing learned, the training loss is undefined (NaN).
  _, output = run_round(builder, config, [dataset(bad_x, CLIENT_B[1], 3)] * 2)
  assert output.metrics['non_finite_clients'] == 2
  assert not np.isfinite(output.metrics['train_loss'])


def test_clients_with_finite_updates_are_not_counted(tff_context):
  _, output = run_round(fedavg.build_fedavg, cfg(client_learning_rate=ETA),
                        [dataset(*CLIENT_A, 2), dataset(*CLIENT_B, 3)])
  assert output.metrics['non_finite_clients'] == 0
