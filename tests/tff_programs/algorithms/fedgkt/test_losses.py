"""FedGKT losses and train steps (pure TF, no TFF): values computed by hand."""

import collections
import math

import numpy as np
import pytest
import tensorflow as tf

from tff_programs.algorithms.fedgkt import losses as gkt_losses

LN3 = math.log(3.0)


def test_kd_kl_by_hand_with_temperature_squared():
  # Teacher [0, 0] -> p_t = (1/2, 1/2); student z/T = [0, ln 3] -> p_s = (1/4, 3/4).
  # KL(p_t || p_s) = 1/2 ln(2) + 1/2 ln(2/3) = 1/2 ln(4/3).
  teacher = tf.constant([[0.0, 0.0]])
  half_ln_4_3 = 0.5 * math.log(4.0 / 3.0)
  np.testing.assert_allclose(gkt_losses.kd_kl(teacher, tf.constant([[0.0, LN3]]), 1.0),
                             half_ln_4_3, rtol=1e-6)
  # T = 2 on student logits [0, 2 ln 3]: the same softened p_s, times T^2 = 4.
  np.testing.assert_allclose(gkt_losses.kd_kl(teacher, tf.constant([[0.0, 2 * LN3]]), 2.0),
                             4 * half_ln_4_3, rtol=1e-6)
  # The softening itself: at T = 2, [0, ln 3] -> p_s = (1/(1+sqrt3), sqrt3/(1+sqrt3)).
  p = 1 / (1 + math.sqrt(3))
  expected = 4 * (0.5 * math.log(0.5 / p) + 0.5 * math.log(0.5 / (1 - p)))
  np.testing.assert_allclose(gkt_losses.kd_kl(teacher, tf.constant([[0.0, LN3]]), 2.0),
                             expected, rtol=1e-6)


def test_kd_kl_is_a_batch_mean_and_directed():
  teacher = tf.constant([[0.0, 0.0], [1.0, 2.0]])
  student = tf.constant([[0.0, LN3], [1.0, 2.0]])  # second example: teacher == student
  np.testing.assert_allclose(gkt_losses.kd_kl(teacher, student, 1.0),
                             0.5 * math.log(4.0 / 3.0) / 2, rtol=1e-6)
  # KL(p_s || p_t) = 1/4 ln(1/2) + 3/4 ln(3/2) for the first example.
  reverse = 0.25 * math.log(0.5) + 0.75 * math.log(1.5)
  np.testing.assert_allclose(gkt_losses.kd_kl(student[:1], teacher[:1], 1.0), reverse, rtol=1e-6)


@pytest.mark.parametrize('temperature', [0.5, 1.0, 3.0, 20.0])
def test_kd_kl_zero_when_teacher_equals_student(temperature):
  logits = tf.random.stateless_normal([6, 10], seed=[1, 2]) * 5
  np.testing.assert_allclose(gkt_losses.kd_kl(logits, logits, temperature), 0.0, atol=1e-6)


def test_kd_gradient_is_t_times_probability_gap_and_teacher_gets_none():
  teacher = tf.Variable([[0.0, 0.0], [2.0, -1.0]])
  student = tf.Variable([[0.0, LN3], [0.5, 0.5]])
  t = 3.0
  with tf.GradientTape(persistent=True) as tape:
    loss = gkt_losses.kd_kl(teacher, student, t)
  p_s = tf.nn.softmax(student / t).numpy()
  p_t = tf.nn.softmax(teacher / t).numpy()
  # d/dz_s [T^2 KL(p_t || softmax(z_s/T))] = T (p_s - p_t), over B = 2.
  np.testing.assert_allclose(tape.gradient(loss, student), t * (p_s - p_t) / 2, rtol=1e-5)
  assert tape.gradient(loss, teacher) is None


def test_cross_entropy_by_hand():
  logits = tf.constant([[0.0, LN3], [0.0, LN3]])
  np.testing.assert_allclose(gkt_losses.cross_entropy(tf.constant([1, 0]), logits),
                             (-math.log(0.75) - math.log(0.25)) / 2, rtol=1e-6)


def test_losses_masking_and_direction():
  y = tf.constant([1, 0])
  z_c = tf.constant([[0.0, LN3], [1.0, 0.0]])
  z_s = tf.constant([[0.0, 0.0], [0.0, 1.0]])
  ce_c = gkt_losses.cross_entropy(y, z_c)
  ce_s = gkt_losses.cross_entropy(y, z_s)
  kw = dict(alpha=0.5, temperature=2.0)
  # No teacher logits yet: pure cross-entropy, whatever z_s holds.
  np.testing.assert_allclose(gkt_losses.client_loss(y, z_c, z_s, teacher_mask=0.0, **kw), ce_c)
  np.testing.assert_allclose(gkt_losses.client_loss(y, z_c, z_s * 100, teacher_mask=0.0, **kw), ce_c)
  full = ce_c + 0.5 * gkt_losses.kd_kl(z_s, z_c, 2.0)
  np.testing.assert_allclose(gkt_losses.client_loss(y, z_c, z_s, **kw), full, rtol=1e-6)
  # Per-example mask: only example 0 distills, still averaged over B = 2.
  only_first = ce_c + 0.5 * gkt_losses.kd_kl(z_s[:1], z_c[:1], 2.0) / 2
  np.testing.assert_allclose(
      gkt_losses.client_loss(y, z_c, z_s, teacher_mask=tf.constant([1.0, 0.0]), **kw),
      only_first, rtol=1e-6)
  # The server is the student of the clients' logits.
  np.testing.assert_allclose(gkt_losses.server_loss(y, z_s, z_c, **kw),
                             ce_s + 0.5 * gkt_losses.kd_kl(z_c, z_s, 2.0), rtol=1e-6)
  np.testing.assert_allclose(gkt_losses.server_loss(y, z_s, z_c, teacher_mask=0.0, **kw), ce_s)


def linear_edge():
  """x (2) -> H = x W_e (2, no bias) -> z = H W_c + b_c (2 classes)."""
  inputs = tf.keras.Input([2])
  fe = tf.keras.layers.Dense(2, use_bias=False, name='fe')
  fc = tf.keras.layers.Dense(2, name='fc')
  h = fe(inputs)
  features = tf.keras.Input([2])
  extractor = tf.keras.Model(inputs, h)
  classifier = tf.keras.Model(features, fc(features))
  for layer, values in ((fe, [np.array([[1.0, 0.5], [-0.5, 1.0]])]),
                        (fc, [np.array([[0.3, -0.2], [0.1, 0.4]]), np.array([0.05, -0.05])])):
    layer.set_weights([v.astype(np.float32) for v in values])
  return extractor, classifier


X = np.array([[1.0, 2.0], [0.5, -1.0], [2.0, 0.0]], np.float32)
Y = np.array([0, 1, 1], np.int64)
Z_S = np.array([[2.0, -1.0], [0.0, 0.0], [-1.0, 3.0]], np.float32)


def numpy_edge_step(we, wc, bc, lr, alpha, t, mask):
  """One SGD step of CE + mask * alpha * T^2 KL, backpropagated by hand."""
  def softmax(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)
  h = X @ we
  z = h @ wc + bc
  b = len(Y)
  d_z = (softmax(z) - np.eye(2)[Y]) / b + mask * alpha * t * (softmax(z / t) - softmax(Z_S / t)) / b
  d_wc, d_bc = h.T @ d_z, d_z.sum(0)
  d_we = X.T @ (d_z @ wc.T)
  return we - lr * d_we, wc - lr * d_wc, bc - lr * d_bc


@pytest.mark.parametrize('mask', [0.0, 1.0])
@pytest.mark.parametrize('compiled', [False, True])
def test_edge_train_step_matches_hand_backprop(mask, compiled):
  extractor, classifier = linear_edge()
  we, (wc, bc) = extractor.get_weights()[0], classifier.get_weights()
  step = lambda: gkt_losses.edge_train_step(
      extractor, classifier, 0.1, X, Y, Z_S, mask, alpha=0.7, temperature=2.0)
  out = tf.function(step)() if compiled else step()
  expected = numpy_edge_step(we, wc, bc, 0.1, 0.7, 2.0, mask)
  for got, want in zip(extractor.get_weights() + classifier.get_weights(), expected):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(out.logits, X @ we @ wc + bc, rtol=1e-5)
  assert out.optimizer_state is None


def test_server_train_step_uses_server_loss():
  server = tf.keras.Sequential([tf.keras.Input([2]), tf.keras.layers.Dense(2)])
  server.set_weights([np.eye(2, dtype=np.float32), np.zeros(2, np.float32)])
  z_c = np.array([[0.0, 1.0], [1.0, 0.0], [0.0, 0.0]], np.float32)
  with tf.GradientTape() as tape:
    loss = gkt_losses.server_loss(Y, server(X), z_c, alpha=1.0, temperature=3.0)
  grads = tape.gradient(loss, server.trainable_variables)
  expected = [w - 0.2 * g for w, g in zip(server.get_weights(), grads)]
  out = gkt_losses.server_train_step(server, 0.2, X, Y, z_c, 1.0, alpha=1.0, temperature=3.0)
  np.testing.assert_allclose(out.loss, loss, rtol=1e-6)
  for got, want in zip(server.get_weights(), expected):
    np.testing.assert_allclose(got, want, rtol=1e-6)


class CountingSGD:
  """A functional optimizer (the `tff.learning.optimizers` protocol) that counts steps."""

  def next(self, state, weights, gradients):
    new = [w - state['learning_rate'] * g for w, g in zip(weights, gradients)]
    return collections.OrderedDict(learning_rate=state['learning_rate'], step=state['step'] + 1), new


def test_functional_optimizer_state_threads_through_steps():
  extractor, classifier = linear_edge()
  we, (wc, bc) = extractor.get_weights()[0], classifier.get_weights()
  state = collections.OrderedDict(learning_rate=tf.constant(0.1), step=tf.constant(0))
  for _ in range(2):
    state = gkt_losses.edge_train_step(
        extractor, classifier, CountingSGD(), X, Y, Z_S, 0.0, alpha=1.0, temperature=1.0,
        optimizer_state=state).optimizer_state
  assert int(state['step']) == 2
  expected = numpy_edge_step(*numpy_edge_step(we, wc, bc, 0.1, 1.0, 1.0, 0.0), 0.1, 1.0, 1.0, 0.0)
  for got, want in zip(extractor.get_weights() + classifier.get_weights(), expected):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
