"""FedGKT's losses and training steps, in pure TensorFlow (no TFF).

He, Annavaram & Avestimehr 2020, "Group Knowledge Transfer", Eq. (4)-(7): with
p^T = softmax(z / T), the client and server objectives are

  l_c = CE(y, z_c) + alpha * T^2 * KL(p^T(z_s) || p^T(z_c))   (edge student)
  l_s = CE(y, z_s) + alpha * T^2 * KL(p^T(z_c) || p^T(z_s))   (server student)

averaged over the batch. The T^2 factor (Hinton et al. 2015) keeps the gradient
scale of the soft term independent of T. A client has no server logits before
the server first answered it: a `teacher_mask` (scalar or per example, 1 = has
teacher logits) switches the KD term off, leaving pure cross-entropy.

The train steps do one optimizer step on Keras models: plain SGD
(`v -= lr * g`) when given a learning rate, or a `tff.learning.optimizers`
optimizer (functional: its state goes in and comes out, e.g. Adam's moments)
when given one with its state. They work eagerly and inside `tf.function` (the
TFF computations of `fedgkt.computations` call them from their `tf.function`
bodies).
"""

from __future__ import annotations

import collections
from typing import Any, Sequence, Union

import tensorflow as tf

Mask = Union[float, tf.Tensor, None]


def _mask_per_example(mask: Mask, batch_size: tf.Tensor) -> tf.Tensor:
  if mask is None:
    return tf.ones([batch_size], tf.float32)
  mask = tf.cast(mask, tf.float32)
  return tf.broadcast_to(mask, [batch_size])


def kd_kl(teacher_logits: tf.Tensor,
          student_logits: tf.Tensor,
          temperature: float,
          mask: Mask = None) -> tf.Tensor:
  """T^2 * KL(softmax(teacher/T) || softmax(student/T)), mean over the batch.

  Args:
    teacher_logits: (B, C) logits of the teacher (no gradient flows into them).
    student_logits: (B, C) logits of the student.
    temperature: T > 0.
    mask: None, a scalar or a (B,) tensor; example i contributes
      mask_i * KL_i, and the sum is divided by B (masked examples count as 0).

  Returns:
    A float32 scalar: T^2 / B * sum_i mask_i * sum_c p_t,ic (log p_t,ic -
    log p_s,ic).
  """
  teacher = tf.stop_gradient(tf.cast(teacher_logits, tf.float32))
  student = tf.cast(student_logits, tf.float32)
  t = tf.cast(temperature, tf.float32)
  log_p_t = tf.nn.log_softmax(teacher / t, axis=-1)
  log_p_s = tf.nn.log_softmax(student / t, axis=-1)
  per_example = tf.reduce_sum(tf.exp(log_p_t) * (log_p_t - log_p_s), axis=-1)
  batch = tf.shape(per_example)[0]
  weighted = per_example * _mask_per_example(mask, batch)
  return t * t * tf.math.divide_no_nan(tf.reduce_sum(weighted), tf.cast(batch, tf.float32))


def cross_entropy(labels: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
  """Mean sparse softmax cross-entropy of `logits` (B, C) against labels (B,)."""
  return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
      labels=tf.cast(labels, tf.int64), logits=tf.cast(logits, tf.float32)))


def client_loss(labels: tf.Tensor,
                client_logits: tf.Tensor,
                server_logits: tf.Tensor,
                *,
                alpha: float,
                temperature: float,
                teacher_mask: Mask = 1.0) -> tf.Tensor:
  """l_c = CE(y, z_c) + alpha * kd_kl(z_s -> z_c, T, mask); the edge's loss."""
  return cross_entropy(labels, client_logits) + alpha * kd_kl(
      server_logits, client_logits, temperature, teacher_mask)


def server_loss(labels: tf.Tensor,
                server_logits: tf.Tensor,
                client_logits: tf.Tensor,
                *,
                alpha: float,
                temperature: float,
                teacher_mask: Mask = 1.0) -> tf.Tensor:
  """l_s = CE(y, z_s) + alpha * kd_kl(z_c -> z_s, T, mask); the server's loss."""
  return cross_entropy(labels, server_logits) + alpha * kd_kl(
      client_logits, server_logits, temperature, teacher_mask)


StepOutput = collections.namedtuple('StepOutput', ['loss', 'logits', 'optimizer_state'])
# An optimizer: a learning rate (plain SGD, no state) or a functional
# `tff.learning.optimizers.Optimizer` (anything with `next(state, weights, grads)`).
Optimizer = Any


def edge_variables(extractor: tf.keras.Model, classifier: tf.keras.Model) -> list[tf.Variable]:
  """The edge model's trainable variables, each once: f_e's, then f_c's."""
  variables = list(extractor.trainable_variables)
  seen = {id(v) for v in variables}
  return variables + [v for v in classifier.trainable_variables if id(v) not in seen]


def apply_gradients(variables: Sequence[tf.Variable], grads: Sequence[tf.Tensor],
                    optimizer: Optimizer, optimizer_state: Any = None) -> Any:
  """Updates `variables`; returns the optimizer's new state (None for plain SGD)."""
  if hasattr(optimizer, 'next'):
    grads = [tf.zeros_like(v) if g is None else g for v, g in zip(variables, grads)]
    # Tuples: the state's per-variable parts are tuples (tf.data, which
    # carries the state through `Dataset.reduce`, would stack lists).
    new_state, new_weights = optimizer.next(
        optimizer_state, tuple(v.read_value() for v in variables), tuple(grads))
    for v, w in zip(variables, new_weights):
      v.assign(w)
    return new_state
  lr = tf.cast(optimizer, tf.float32)
  for v, g in zip(variables, grads):
    if g is not None:
      v.assign_sub(lr * g)
  return optimizer_state


def edge_train_step(extractor: tf.keras.Model,
                    classifier: tf.keras.Model,
                    optimizer: Optimizer,
                    x: tf.Tensor,
                    y: tf.Tensor,
                    server_logits: tf.Tensor,
                    teacher_mask: Mask,
                    *,
                    alpha: float,
                    temperature: float,
                    optimizer_state: Any = None) -> StepOutput:
  """One optimizer step of the edge model f_c(f_e(x)) on `client_loss`.

  BatchNorm layers run in training mode (their moving statistics update).

  Args:
    extractor: f_e, x -> H.
    classifier: f_c, H -> z_c (may share layers with a full edge model).
    optimizer: a learning rate (plain SGD) or a functional optimizer over
      `edge_variables(extractor, classifier)`.
    x, y: the batch.
    server_logits: (B, C) pending server logits z_s of these examples (any
      values where `teacher_mask` is 0).
    teacher_mask: scalar or (B,): 1 where z_s is a real teacher signal.
    alpha, temperature: KD weight and temperature.
    optimizer_state: the functional optimizer's state (None for SGD).

  Returns:
    StepOutput(loss before the update, z_c of the batch before the update,
    the optimizer's new state).
  """
  variables = edge_variables(extractor, classifier)
  with tf.GradientTape() as tape:
    logits = classifier(extractor(x, training=True), training=True)
    loss = client_loss(y, logits, server_logits, alpha=alpha,
                       temperature=temperature, teacher_mask=teacher_mask)
  state = apply_gradients(variables, tape.gradient(loss, variables), optimizer, optimizer_state)
  return StepOutput(loss, logits, state)


def server_train_step(server: tf.keras.Model,
                      optimizer: Optimizer,
                      features: tf.Tensor,
                      y: tf.Tensor,
                      client_logits: tf.Tensor,
                      teacher_mask: Mask,
                      *,
                      alpha: float,
                      temperature: float,
                      optimizer_state: Any = None) -> StepOutput:
  """One optimizer step of the server model f_s(H) on `server_loss`
  (training-mode BN); `optimizer` as for `edge_train_step`, over
  `server.trainable_variables`.

  Returns:
    StepOutput(loss before the update, z_s of the batch before the update,
    the optimizer's new state).
  """
  variables = list(server.trainable_variables)
  with tf.GradientTape() as tape:
    logits = server(features, training=True)
    loss = server_loss(y, logits, client_logits, alpha=alpha,
                       temperature=temperature, teacher_mask=teacher_mask)
  state = apply_gradients(variables, tape.gradient(loss, variables), optimizer, optimizer_state)
  return StepOutput(loss, logits, state)


def correct_count(labels: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
  """Number (float32) of examples whose argmax logit equals the label."""
  return tf.reduce_sum(tf.cast(tf.equal(
      tf.argmax(logits, axis=-1, output_type=tf.int64), tf.cast(labels, tf.int64)), tf.float32))
