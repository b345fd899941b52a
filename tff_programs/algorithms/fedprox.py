"""FedProx (Li et al. 2020): FedAvg whose clients stay near the global model.

Each client minimizes its loss plus (mu / 2) ||w - w_t||^2, w_t the global
model it received; its SGD step is
    w <- w - eta (grad f(w) + mu (w - w_t)).
mu = 0 is FedAvg. The server averages the model deltas (n_k/n or uniform, via
the aggregator stack) and applies them with its learning rate.

Not TFF's `build_weighted_fed_prox`: in TFF 0.87 its client work adds
mu (w_t - w) to the gradient (`proximal_client_work.py`: `(y - x)` with x the
current and y the initial weights), which pushes clients *away* from w_t (found
by the hand-computed test here). This module composes its own client work with
TFF's standard parts, as `tff.learning` algorithms are built:
  distributor  `build_broadcast_process` (the global model to the clients)
  client work  E epochs of SGD on the proximal objective (below)
  aggregator   the aggregator stack, counting dropped clients
  finalizer    `build_apply_optimizer_finalizer` (server SGD)
  next: (<state@SERVER, {<x, y>*}@CLIENTS> -> <state@SERVER, metrics@SERVER>)
Clients whose update is not finite are dropped (weight 0), as TFF's FedAvg
does, and counted in `non_finite_clients`. Models with batch-norm statistics
are refused in one line (their statistics would not be averaged).
"""

from __future__ import annotations

import collections
from typing import Any, Optional

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_programs import model_adapter
from tff_programs import options
from tff_programs import sections
from tff_programs.algorithms import base
from tff_programs.algorithms import client_loop
from tff_programs.algorithms import fedavg
from tff_programs.algorithms import fedavg_stats
from tff_programs.options import option


class FedProxOptions(options.Options):
  """FedProx's options: the proximal strength and FedAvg's weighting and server rate."""

  SECTION = 'Algorithm: fedprox (Li et al. 2020)'

  prox_mu: float = option(0.01, 'fedprox: mu, the strength of the proximal term (mu/2)||w - w_t||^2 (0 = FedAvg).',
                          check=lambda v: None if isinstance(v, (int, float)) and v >= 0 else 'must be a number >= 0')
  client_weighting: str = options.same_as(fedavg.FedAvgOptions, 'client_weighting')
  server_learning_rate: float = options.same_as(fedavg.FedAvgOptions, 'server_learning_rate')


def proximal_sgd_step(variables, gradients, anchors, learning_rate, mu) -> None:
  """w <- w - eta (g + mu (w - w_t)), in place (pure TF; unit-tested by hand)."""
  for v, g, a in zip(variables, gradients, anchors):
    v.assign_sub(learning_rate * (g + mu * (v - a)))


def build_client_work(task: base.Task, *, learning_rate: float, mu: float,
                      uniform: bool) -> tff.learning.templates.ClientWorkProcess:
  """FedProx's client work:
    next: (<learning_rate@SERVER, ModelWeights@CLIENTS, {<x, y>*}@CLIENTS>
           -> <learning_rate@SERVER, ClientResult@CLIENTS, <train=...>@SERVER>)
  with hyper-parameter `learning_rate` (the schedule sets it each round)."""
  model_fn = model_adapter.tff_model_fn(task.model_builder, task.element_spec,
                                        ignore_label=task.ignore_label)
  weights_type = tff.learning.models.weights_type_from_model(model_fn)
  data_type = tff.SequenceType(tff.types.tensorflow_to_type(
      collections.OrderedDict((k, task.element_spec[k]) for k in ('x', 'y'))))

  @tf.function
  def train(model, initial, data, eta):
    weights = tff.learning.models.ModelWeights.from_model(model)
    tf.nest.map_structure(lambda v, w: v.assign(w), weights, initial)
    anchors = [tf.identity(a) for a in initial.trainable]

    def step(totals, batch):
      with tf.GradientTape() as tape:
        output = model.forward_pass(batch, training=True)
      grads = tape.gradient(output.loss, weights.trainable)
      proximal_sgd_step(weights.trainable, grads, anchors, eta, mu)
      n = tf.shape(batch['y'], out_type=tf.int64)[0]
      correct = tf.reduce_sum(tf.cast(tf.equal(
          tf.argmax(output.predictions, axis=-1, output_type=tf.int64),
          tf.cast(batch['y'], tf.int64)), tf.float32))
      return (totals[0] + output.loss * tf.cast(n, tf.float32), totals[1] + correct,
              totals[2] + n)

    loss_sum, correct, examples = client_loop.fold(
        data, (tf.constant(0.0), tf.constant(0.0), tf.constant(0, tf.int64)), step)
    update = [a - tf.identity(v) for a, v in zip(initial.trainable, weights.trainable)]
    finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(u)) for u in update]
                           + [tf.math.is_finite(loss_sum)])
    keep = tf.cast(finite, tf.float32)
    weight = keep * (tf.constant(1.0) if uniform else tf.cast(examples, tf.float32))
    update = [tf.where(finite, u, tf.zeros_like(u)) for u in update]
    metrics = collections.OrderedDict(
        loss_sum=tf.where(finite, loss_sum, 0.0), correct=correct * keep,
        examples=examples * tf.cast(finite, tf.int64))
    return tff.learning.templates.ClientResult(update=update, update_weight=weight), metrics

  @tff.tensorflow.computation(weights_type, data_type, np.float32)
  def client_update(initial, data, eta):
    return train(model_fn(), initial, data, eta)

  @tff.tensorflow.computation(tff.types.tensorflow_to_type(collections.OrderedDict(
      loss_sum=tf.TensorSpec([], tf.float32), correct=tf.TensorSpec([], tf.float32),
      examples=tf.TensorSpec([], tf.int64))))
  def finalize(sums):
    n = tf.cast(sums['examples'], tf.float32)
    return collections.OrderedDict(loss=tf.math.divide_no_nan(sums['loss_sum'], n),
                                   sparse_categorical_accuracy=tf.math.divide_no_nan(sums['correct'], n),
                                   num_examples=sums['examples'])

  @tff.federated_computation
  def initialize():
    return tff.federated_value(np.float32(learning_rate), tff.SERVER)

  @tff.federated_computation(initialize.type_signature.result,
                             tff.FederatedType(weights_type, tff.CLIENTS),
                             tff.FederatedType(data_type, tff.CLIENTS))
  def next_fn(state, weights, data):
    results, metrics = tff.federated_map(
        client_update, (weights, data, tff.federated_broadcast(state)))
    train_metrics = tff.federated_map(finalize, tff.federated_sum(metrics))
    return tff.templates.MeasuredProcessOutput(
        state, results, tff.federated_zip(collections.OrderedDict(train=train_metrics)))

  @tff.tensorflow.computation(np.float32)
  def get_hparams(state):
    return collections.OrderedDict(learning_rate=state)

  @tff.tensorflow.computation(np.float32, collections.OrderedDict(learning_rate=np.float32))
  def set_hparams(state, hparams):
    del state
    return hparams['learning_rate']

  return tff.learning.templates.ClientWorkProcess(
      initialize, next_fn, get_hparams_fn=get_hparams, set_hparams_fn=set_hparams)


def build(task: base.Task, training: sections.ClientTrainingOptions, opts: FedProxOptions,
          aggregator: Optional[Any]) -> base.FederatedAlgorithm:
  """FedProx on `task` (client SGD at eta with the proximal term mu)."""
  if fedavg_stats.has_statistics(task.model_builder()):
    raise options.ConfigError('--algorithm=fedprox: the model has batch-norm statistics, which '
                              'this FedProx would not average; use fedavg (it does)')
  model_fn = model_adapter.tff_model_fn(task.model_builder, task.element_spec,
                                        ignore_label=task.ignore_label)
  weights_type = tff.learning.models.weights_type_from_model(model_fn)
  client_work = build_client_work(task, learning_rate=training.client_learning_rate,
                                  mu=float(opts.prox_mu), uniform=opts.client_weighting == 'uniform')

  @tff.tensorflow.computation
  def initial_model_weights():
    return tff.learning.models.ModelWeights.from_model(model_fn())

  process = tff.learning.templates.compose_learning_process(
      initial_model_weights,
      tff.learning.templates.build_broadcast_process(weights_type),
      client_work,
      fedavg.DroppedClientCounter(aggregator).create(
          weights_type.trainable, tff.TensorType(np.float32)),
      tff.learning.templates.build_apply_optimizer_finalizer(
          tff.learning.optimizers.build_sgdm(opts.server_learning_rate), weights_type))
  return fedavg.LearningProcessAlgorithm(
      name='fedprox', process=process, task=task,
      learning_rate_path=('client_work', 'learning_rate'),
      learning_rate=training.client_learning_rate,
      learning_rate_decay=training.learning_rate_decay,
      learning_rate_decay_from=training.learning_rate_decay_from,
      upload_factory=aggregator)


SPEC = base.AlgorithmSpec(name='fedprox', build=build, options=FedProxOptions,
                          description='FedAvg with a proximal term (mu/2)||w - w_t||^2, Li et al. 2020')
