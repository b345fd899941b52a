"""FedGKT's TFF computations: the client phase, server training, server inference.

Each is one `tff.federated_map` of a `tf.function` over Keras models (`losses`
has the steps); the orchestration between them (which client when, features
in RAM or on disk) is Python in `algorithm.FedGKTAlgorithm.next`: features
are data, not model state, and must stream through bounded memory.

Type signatures (E = edge weights OrderedDict(trainable=<float32[...]...>,
non_trainable=<...>), S = server weights, same layout; O_e, O_s:
`tff.learning.optimizers` SGD or Adam states, as numpy):
  client_phase: (<{E}@CLIENTS, {O_e}@CLIENTS, {<x,y,z>*}@CLIENTS,
                  {<x,y>*}@CLIENTS, {float32}@CLIENTS, float32@SERVER>
                 -> {<edge=E, optimizer=O_e, features=float32[?,h,w,c],
                      logits=float32[?,C], labels=int64[?],
                      metrics=<loss_sum,correct,examples,non_finite>>}@CLIENTS)
      args: edge weights, the edge optimizer's state, the training batches
      (x, y, pending z_s), the extraction batches (x, y) in a fixed order, the
      teacher mask (1 = use KD) and the learning rate (broadcast). Trains E_c
      epochs, then extracts. non_finite (int32): 1 if the client's trained
      edge weights, training loss, features or logits have a NaN or inf
      (`partial_fedavg.non_finite_flag`); the round's sum is `non_finite_clients`.
  server_train: (<<model=S, optimizer=O_s>@SERVER, <h,z,y>*@SERVER, float32@SERVER>
                 -> <state=<model=S, optimizer=O_s>,
                     metrics=<loss_sum,correct,examples>>@SERVER)
  server_infer: (<S@SERVER, <h,z,y>*@SERVER> -> float32[?,C]@SERVER)
      Z_s of each batch with training-mode BN (batch statistics), as in
      FedGKT's released code; the returned state is untouched.

The models come from builders: `default_edge_builder` (FedGKT's ResNet-8,
`models.gkt`) and `default_server_builder` (ResNet-55/109) unless the caller
gives its own (the tests use tiny stand-ins).
"""

from __future__ import annotations

import collections
import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from models import gkt
from tff_programs import model_adapter
from tff_programs.algorithms import client_loop
from tff_programs.algorithms import partial_fedavg
from tff_programs.algorithms.fedgkt import feature_store
from tff_programs.algorithms.fedgkt import losses
from tff_programs.algorithms.fedgkt import options

EdgeBuilder = Callable[[], tuple[tf.keras.Model, tf.keras.Model, tf.keras.Model]]
ServerBuilder = Callable[[Sequence[int]], tf.keras.Model]


def default_edge_builder(input_shape: Sequence[int], num_classes: int,
                         config: options.FedGKTConfig) -> EdgeBuilder:
  """() -> (extractor, classifier, full) of FedGKT's ResNet-8 edge model."""
  return functools.partial(gkt.build_gkt_edge, tuple(input_shape), num_classes,
                           block=config.block)


def default_server_builder(num_classes: int, config: options.FedGKTConfig) -> ServerBuilder:
  """feature_shape -> FedGKT's ResNet-55/109 server model."""
  return lambda feature_shape: gkt.build_gkt_server(
      tuple(feature_shape), num_classes, depth=config.server_depth, block=config.block)


def build_optimizer(name: str, learning_rate: float) -> tff.learning.optimizers.Optimizer:
  """The functional optimizer 'sgd' | 'adam' (its learning rate is reset each round)."""
  if name == 'adam':
    return tff.learning.optimizers.build_adam(learning_rate)
  return tff.learning.optimizers.build_sgdm(learning_rate)


def initial_optimizer_state(optimizer: tff.learning.optimizers.Optimizer,
                            variables: Sequence[tf.Variable]) -> collections.OrderedDict:
  """The optimizer's initial state over `variables` as numpy (float32 / int64)."""
  state = optimizer.initialize(tuple(tf.TensorSpec(v.shape, v.dtype) for v in variables))

  def to_numpy(value):
    if isinstance(value, bool):
      raise TypeError('unexpected bool in optimizer state')
    if isinstance(value, int):
      return np.int64(value)
    if isinstance(value, float):
      return np.float32(value)
    return np.asarray(value)

  return tf.nest.map_structure(to_numpy, state)


@dataclasses.dataclass(frozen=True)
class GKTComputations:
  """The TFF computations of FedGKT (type signatures in the module docstring)."""

  client_phase: tff.Computation
  server_train: tff.Computation
  server_infer: tff.Computation
  edge_optimizer_state: Any  # initial states (numpy), also the containers' template
  server_optimizer_state: Any


def build_fedgkt_computations(
    edge_builder: EdgeBuilder,
    server_builder: ServerBuilder,
    *,
    input_spec: tf.TensorSpec,
    label_dtype: tf.dtypes.DType,
    num_classes: int,
    config: options.FedGKTConfig,
) -> GKTComputations:
  """Builds the client-phase, server-train and server-infer computations.

  Args:
    edge_builder: () -> (extractor, classifier, full edge model), sharing layers.
    server_builder: feature_shape -> server model (features -> logits).
    input_spec: spec of a batch of inputs, (None, *input_shape).
    label_dtype: dtype of the labels.
    num_classes: C.
    config: the FedGKT config (T, alpha, kd_mode are compiled in).

  Returns:
    The three computations.
  """
  extractor, classifier, full = edge_builder()
  feature_shape = tuple(extractor.output_shape[1:])
  server_template = server_builder(feature_shape)
  edge_optimizer = build_optimizer(config.optimizer, config.client_learning_rate)
  server_optimizer = build_optimizer(config.optimizer, config.server_learning_rate)
  edge_opt_template = initial_optimizer_state(
      edge_optimizer, losses.edge_variables(extractor, classifier))
  server_opt_template = initial_optimizer_state(
      server_optimizer, server_template.trainable_variables)
  spec_of = lambda a: tf.TensorSpec(np.shape(a), tf.as_dtype(np.asarray(a).dtype))
  edge_type = tff.types.tensorflow_to_type(model_adapter.weight_specs(full))
  edge_opt_type = tff.types.tensorflow_to_type(tf.nest.map_structure(spec_of, edge_opt_template))
  server_type = tff.types.tensorflow_to_type(model_adapter.weight_specs(server_template))
  server_state_type = tff.types.tensorflow_to_type(collections.OrderedDict(
      model=model_adapter.weight_specs(server_template),
      optimizer=tf.nest.map_structure(spec_of, server_opt_template)))
  y_spec = tf.TensorSpec([None], label_dtype)
  z_spec = tf.TensorSpec([None, num_classes], tf.float32)
  h_spec = tf.TensorSpec([None, *feature_shape], tf.float32)
  train_seq = tff.SequenceType(tff.types.tensorflow_to_type(
      collections.OrderedDict(x=input_spec, y=y_spec, z=z_spec)))
  extract_seq = tff.SequenceType(tff.types.tensorflow_to_type(
      collections.OrderedDict(x=input_spec, y=y_spec)))
  feature_seq = tff.SequenceType(tff.types.tensorflow_to_type(
      feature_store.feature_element_spec(feature_shape, num_classes, label_dtype)))
  alpha, temperature = float(config.alpha), float(config.temperature)
  server_mask = 1.0 if config.server_kd else 0.0

  def zero_totals():
    return (tf.constant(0.0), tf.constant(0.0), tf.constant(0, tf.int64))

  def add_totals(totals, loss, labels, logits):
    n = tf.shape(labels, out_type=tf.int64)[0]
    return (totals[0] + loss * tf.cast(n, tf.float32),
            totals[1] + losses.correct_count(labels, logits), totals[2] + n)

  def totals_dict(totals):
    return collections.OrderedDict(loss_sum=totals[0], correct=totals[1], examples=totals[2])

  def gather(spec):
    return tf.TensorArray(spec.dtype, size=0, dynamic_size=True, infer_shape=False,
                          element_shape=spec.shape)

  # tf.functions: automatic control dependencies order the weight assignments
  # before training and training before extraction / the returned snapshot.
  def with_learning_rate(template, state, learning_rate):
    state = model_adapter.pack_like(template, state)
    state['learning_rate'] = learning_rate
    return state

  @tf.function
  def client_work(models, weights, opt_state, train_data, extract_data, teacher_mask,
                  learning_rate):
    extractor, classifier, full = models
    model_adapter.assign_weights(full, weights)
    opt_state = with_learning_rate(edge_opt_template, opt_state, learning_rate)

    def step(carry, batch):
      totals, state = carry
      out = losses.edge_train_step(
          extractor, classifier, edge_optimizer, batch['x'], batch['y'], batch['z'],
          teacher_mask, alpha=alpha, temperature=temperature, optimizer_state=state)
      return add_totals(totals, out.loss, batch['y'], out.logits), out.optimizer_state

    totals, opt_state = client_loop.fold(train_data, (zero_totals(), opt_state), step)
    features, logits, labels = gather(h_spec), gather(z_spec), gather(y_spec)
    i = tf.constant(0)
    for batch in extract_data:
      h = extractor(batch['x'], training=False)
      features = features.write(i, h)
      logits = logits.write(i, classifier(h, training=False))
      labels = labels.write(i, batch['y'])
      i += 1
    edge = model_adapter.snapshot_weights(full)
    features, logits = features.concat(), logits.concat()
    metrics = totals_dict(totals)
    metrics['non_finite'] = partial_fedavg.non_finite_flag(totals[0], edge, features, logits)
    return collections.OrderedDict(
        edge=edge, optimizer=opt_state, features=features, logits=logits,
        labels=labels.concat(), metrics=metrics)

  @tff.tensorflow.computation(edge_type, edge_opt_type, train_seq, extract_seq, np.float32,
                              np.float32)
  def client_update(edge_weights, edge_opt_state, train_data, extract_data, teacher_mask,
                    learning_rate):
    return client_work(edge_builder(), edge_weights, edge_opt_state, train_data, extract_data,
                       teacher_mask, learning_rate)

  @tff.federated_computation(
      tff.FederatedType(edge_type, tff.CLIENTS), tff.FederatedType(edge_opt_type, tff.CLIENTS),
      tff.FederatedType(train_seq, tff.CLIENTS), tff.FederatedType(extract_seq, tff.CLIENTS),
      tff.FederatedType(np.float32, tff.CLIENTS), tff.FederatedType(np.float32, tff.SERVER))
  def client_phase(edge_weights, edge_optimizer_state, train_data, extract_data, teacher_mask,
                   learning_rate):
    return tff.federated_map(client_update, (
        edge_weights, edge_optimizer_state, train_data, extract_data, teacher_mask,
        tff.federated_broadcast(learning_rate)))

  @tf.function
  def server_work(server, state, data, learning_rate):
    model_adapter.assign_weights(server, state['model'])
    opt_state = with_learning_rate(server_opt_template, state['optimizer'], learning_rate)

    def step(carry, batch):
      totals, opt = carry
      out = losses.server_train_step(
          server, server_optimizer, batch['h'], batch['y'], batch['z'], server_mask,
          alpha=alpha, temperature=temperature, optimizer_state=opt)
      return add_totals(totals, out.loss, batch['y'], out.logits), out.optimizer_state

    totals, opt_state = client_loop.fold(data, (zero_totals(), opt_state), step)
    return collections.OrderedDict(
        state=collections.OrderedDict(model=model_adapter.snapshot_weights(server),
                                      optimizer=opt_state),
        metrics=totals_dict(totals))

  @tff.tensorflow.computation(server_state_type, feature_seq, np.float32)
  def server_update(state, data, learning_rate):
    return server_work(server_builder(feature_shape), state, data, learning_rate)

  @tff.federated_computation(
      tff.FederatedType(server_state_type, tff.SERVER),
      tff.FederatedType(feature_seq, tff.SERVER), tff.FederatedType(np.float32, tff.SERVER))
  def server_train(state, data, learning_rate):
    return tff.federated_map(server_update, (state, data, learning_rate))

  # Z_s with training-mode BN (each batch's own statistics), as the server
  # computes logits while it trains: FedGKT's released code keeps the
  # server's training-pass outputs "since the client will continue the
  # iteration based on the server logits". Inference-mode BN would use moving
  # statistics that lag the weights; while the server has trained few steps
  # those Z_s are far off (a 2-client CIFAR-10 check, 10 server steps a round:
  # the next round's edge loss 9.08 with them, 2.00 with these). The moving
  # statistics this call updates belong to its throwaway model copy.
  @tf.function
  def infer_work(server, weights, data):
    model_adapter.assign_weights(server, weights)
    logits = gather(z_spec)
    i = tf.constant(0)
    for batch in data:
      logits = logits.write(i, server(batch['h'], training=True))
      i += 1
    return logits.concat()

  @tff.tensorflow.computation(server_type, feature_seq)
  def server_logits(weights, data):
    return infer_work(server_builder(feature_shape), weights, data)

  @tff.federated_computation(tff.FederatedType(server_type, tff.SERVER),
                             tff.FederatedType(feature_seq, tff.SERVER))
  def server_infer(weights, data):
    return tff.federated_map(server_logits, (weights, data))

  return GKTComputations(client_phase, server_train, server_infer,
                         edge_opt_template, server_opt_template)
