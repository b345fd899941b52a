"""FedGKT (He, Annavaram & Avestimehr, NeurIPS 2020): group knowledge transfer.

Each client k trains a small edge model f^(k) = f_c(f_e(x)) (`models.gkt`,
"ResNet-8") on its private data; the server trains a large model f_s
("ResNet-55/109") on the clients' feature maps H = f_e(X). Knowledge flows both
ways by distillation (`gkt_losses`): clients learn from the server's logits Z_s,
the server from the clients' logits Z_c. A round:

  1. every sampled client trains E_c epochs on CE + alpha T^2 KL(Z_s || z_c)
     (CE only while it has no server logits: round 1, or kd_mode='none');
  2. it extracts H and Z_c of all its training examples (inference-mode BN)
     and uploads (H, Z_c, Y);
  3. the server trains E_s epochs on all received (H, Z_c, Y) with
     CE + alpha T^2 KL(Z_c || z_s) (CE only unless kd_mode='both');
  4. it computes Z_s of each client's H and sends them back; the client keeps
     them as the teacher of its next round.
mode='sync' runs 1-4 as above (the server waits for every sampled client);
mode='async' simulates the asynchronous server: clients are processed in the
sampled order and the server trains on each client's features as they arrive
and answers that client at once. kd_mode 'both' (the paper), 'server_to_edge'
(server CE only) and 'none' (CE on both sides; no logits are exchanged) are the
paper's ablations. Client k's final model is f_e^(k) stacked with f_s
(`build_model`).

Evaluation (`evaluate`), like the paper's global test: eval_accuracy /
eval_loss are the average over the clients sampled at least once (their
number: eval_clients) of client k's f_s(f_e^(k)(x)) on the central test set
(the same set FedAvg's global model is evaluated on); never-sampled clients,
whose edge models are untrained, are left out. edge_accuracy / edge_loss: the
same clients' edge models f_c(f_e^(k)(x)) alone, same test set.
personalized_accuracy_*: each of those clients' f_s(f_e^(k)) on its own test
split (mean/std/min/max over clients).

Divergence: each round's `non_finite_clients` counts the clients whose
trained edge weights, training loss, features or logits contain NaN or inf.

State. Server state: OrderedDict(model=OrderedDict(trainable, non_trainable)
(f_s's weights), optimizer=its optimizer state). Client state (private,
checkpointed with the run): OrderedDict(
  edge=OrderedDict(trainable, non_trainable)   the full edge model's weights,
  optimizer=...                                its optimizer state (Adam moments),
  server_logits=float32 (n_k, C)               pending Z_s, training-data order,
  has_server_logits=int32 scalar               0 until the server answered).
All clients start from the same seeded edge initialization (as FedAvg's
clients start from one global model); they diverge from round 1 on.

TFF computations (`GKTComputations`; E = edge weights OrderedDict(trainable=
<float32[...]...>, non_trainable=<...>), S = server weights, same layout):
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
      (`fedper.non_finite_flag`); the round's sum is `non_finite_clients`.
  server_train: (<<model=S, optimizer=O_s>@SERVER, <h,z,y>*@SERVER, float32@SERVER>
                 -> <state=<model=S, optimizer=O_s>,
                     metrics=<loss_sum,correct,examples>>@SERVER)
  server_infer: (<S@SERVER, <h,z,y>*@SERVER> -> float32[?,C]@SERVER)
(O_e, O_s: `tff.learning.optimizers` SGD or Adam states, as numpy.)
The orchestration between them (which client when, features in RAM or on disk)
is Python in `FedGKTAlgorithm.next`: features are data, not model state, and
must stream through bounded memory.

Data and memory. The client's training input must pair each example with its
pending Z_s, so the algorithm builds its clients' datasets itself from the
`FederatedData` given to `bind_data` (experiment.run_experiment calls it): the
same seeded per-epoch shuffles and batches as `datasets.federated.client_dataset`
(the FedAvg clients' order) with z_s gathered alongside. The program loop's
generic (x, y) datasets are ignored. Extraction visits the client's examples in
a seeded per-round permutation (so server batches mix labels even when a
client's data is sorted); Z_s comes back in that order and is stored back in
training-data order.

Feature maps are large (an MNIST image gives 28x28x16 float32 = 49 KiB), so
clients run one at a time through the client phase. If the round's feature
bytes (sync: all sampled clients; async: one client) fit in
`memory_budget_mb` and TFF's limit on a dataset serialized into a call
(`IN_CALL_LIMIT_BYTES`, 100 MiB less headroom), they stay in RAM and reach the
server as `tf.data.Dataset.from_tensor_slices` (serialized into the call and
copied by the TFF worker: transiently up to ~3x their size); otherwise each client's (H, Z_c, Y) is written, batched, to a TFRecord
file under `<spill_dir>/round_*` as soon as it arrives (at most one client's
features are in Python memory at a time) and the server reads a
`tf.data.TFRecordDataset` over the files; the folder is deleted after the round.
Both paths feed the server identical batches in an identical order: each
client's batches in order, clients interleaved in a seeded random order per
server epoch. Limits: one client's features travel in one gRPC message to the
TFF worker (< 2 GB: ~40k MNIST images per client).

Communication per round (metrics row): upload = H (h*w*c float32) + Z_c
(C float32, only when the server distills: kd_mode='both') + Y (labels, their
dtype's bytes) per example; download = Z_s (C float32 per example, only when
clients distill). `fedavg_*` keys: FedAvg on the full model f_s(f_e(x))
(ResNet-56/110) as FedSuite runs it: all weights, batch-norm statistics
included, up and down, per client (`fedavg_stats`).
`split_*` keys: split learning at the same cut, per local epoch: H + Y up and
dL/dH down for every example, E_c times (model hand-over between clients not
counted).
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Optional

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from datasets import client_files
from datasets import federated as federated_lib
from models import gkt
from tff_programs.algorithms import base
from tff_programs.algorithms import fedper
from tff_programs.algorithms import gkt_losses

KD_MODES = ('both', 'server_to_edge', 'none')
MODES = ('sync', 'async')
OPTIMIZERS = ('sgd', 'adam')
BLOCKS = ('basic', 'bottleneck')
SERVER_DEPTHS = gkt.SERVER_DEPTHS
INFERENCE_BATCH = 256
_FLOAT_BYTES = 4
# TFF refuses a dataset argument whose serialized graph exceeds 100 MiB
# (value_serialization's default); in-RAM features are graph constants, so
# rounds holding more than this (less headroom for the graph) spill to disk
# whatever the memory budget.
IN_CALL_LIMIT_BYTES = 96 * 2**20
# One client's features come back from the TFF worker in one gRPC message
# (FedSuite's channels allow 2 GB); checked before a run starts.
MAX_CLIENT_FEATURE_BYTES = 1900 * 10**6

EdgeBuilder = Callable[[], tuple[tf.keras.Model, tf.keras.Model, tf.keras.Model]]
ServerBuilder = Callable[[Sequence[int]], tf.keras.Model]
TrainMap = Callable[[Any, tf.Tensor], Any]  # (OrderedDict(x, y), int64[2] seed) -> same
EvalMap = Callable[[tf.Tensor], tf.Tensor]


@dataclasses.dataclass(frozen=True)
class FedGKTConfig:
  """Hyper-parameters of FedGKT.

  Attributes:
    temperature: T of the softened softmax (KL scaled by T^2).
    alpha: weight of the KD term on both sides.
    client_epochs: E_c, local epochs per round.
    client_batch_size: client minibatch size (None: the whole client set).
    server_epochs: E_s, server epochs over the round's features.
    client_learning_rate: learning rate of the edge optimizer.
    server_learning_rate: learning rate of the server optimizer.
    learning_rate_decay: both rates at round r are rate * decay**(r - 1).
    learning_rate_decay_from: the decay counts rounds after this one (1 = from the
      start; see `base.decayed_learning_rate`).
    server_depth: 55 or 109 (ResNet-56/110 minus the stem).
    block: 'basic' or 'bottleneck' (FedGKT's released code) for edge and server.
    kd_mode: 'both' | 'server_to_edge' | 'none' (see the module docstring).
    mode: 'sync' | 'async'.
    optimizer: 'sgd' (plain SGD) or 'adam' (FedGKT's released code; each
      client and the server keep their Adam moments across rounds).
    memory_budget_mb: feature bytes held in RAM at once; above, spill to disk.
    server_batch_size: server minibatch size (batches never mix clients).
    spill_dir: parent folder of the per-round feature files (None: system temp).
  """

  temperature: float = 3.0
  alpha: float = 1.0
  client_epochs: int = 1
  client_batch_size: Optional[int] = 10
  server_epochs: int = 1
  client_learning_rate: float = 0.05
  server_learning_rate: float = 0.01
  learning_rate_decay: float = 1.0
  learning_rate_decay_from: int = 1
  server_depth: int = 55
  block: str = 'bottleneck'
  kd_mode: str = 'both'
  mode: str = 'sync'
  optimizer: str = 'sgd'
  memory_budget_mb: float = 1024.0
  server_batch_size: int = 64
  spill_dir: Optional[str] = None

  def __post_init__(self):
    for name, allowed in (('kd_mode', KD_MODES), ('mode', MODES), ('block', BLOCKS),
                          ('server_depth', SERVER_DEPTHS), ('optimizer', OPTIMIZERS)):
      if getattr(self, name) not in allowed:
        raise ValueError(f'FedGKTConfig.{name}={getattr(self, name)!r}; allowed: '
                         f'{", ".join(str(a) for a in allowed)}')

  @property
  def client_kd(self) -> bool:
    """Whether clients distill from the server's logits (needs Z_s downloads)."""
    return self.kd_mode in ('both', 'server_to_edge')

  @property
  def server_kd(self) -> bool:
    """Whether the server distills from the clients' logits (needs Z_c uploads)."""
    return self.kd_mode == 'both'


def default_edge_builder(input_shape: Sequence[int], num_classes: int,
                         config: FedGKTConfig) -> EdgeBuilder:
  """() -> (extractor, classifier, full) of FedGKT's ResNet-8 edge model."""
  return functools.partial(gkt.build_gkt_edge, tuple(input_shape), num_classes,
                           block=config.block)


def default_server_builder(num_classes: int, config: FedGKTConfig) -> ServerBuilder:
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


def _like(template: Any, value: Any) -> Any:
  """`value` (a TFF-returned structure) in `template`'s containers."""
  return tf.nest.pack_sequence_as(template, tf.nest.flatten(value))


def _weights_of(model: tf.keras.Model) -> collections.OrderedDict:
  return collections.OrderedDict(
      trainable=[v.numpy() for v in model.trainable_weights],
      non_trainable=[v.numpy() for v in model.non_trainable_weights])


def _specs_of(model: tf.keras.Model) -> collections.OrderedDict:
  spec = lambda v: tf.TensorSpec(v.shape, v.dtype)
  return collections.OrderedDict(
      trainable=[spec(v) for v in model.trainable_weights],
      non_trainable=[spec(v) for v in model.non_trainable_weights])


def _assign(model: tf.keras.Model, weights: Mapping[str, Sequence[Any]]) -> None:
  for v, w in zip(model.trainable_weights, weights['trainable']):
    v.assign(w)
  for v, w in zip(model.non_trainable_weights, weights['non_trainable']):
    v.assign(w)


def _snapshot(model: tf.keras.Model) -> collections.OrderedDict:
  return collections.OrderedDict(
      trainable=[tf.identity(v) for v in model.trainable_weights],
      non_trainable=[tf.identity(v) for v in model.non_trainable_weights])


def _to_numpy(weights: Mapping[str, Sequence[Any]]) -> collections.OrderedDict:
  return collections.OrderedDict(
      trainable=[np.asarray(w) for w in weights['trainable']],
      non_trainable=[np.asarray(w) for w in weights['non_trainable']])


def _num_values(shapes: Sequence[tf.TensorSpec]) -> int:
  return int(sum(math.prod(s.shape) for s in shapes))


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
    config: FedGKTConfig,
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
      edge_optimizer, gkt_losses.edge_variables(extractor, classifier))
  server_opt_template = initial_optimizer_state(
      server_optimizer, server_template.trainable_variables)
  spec_of = lambda a: tf.TensorSpec(np.shape(a), tf.as_dtype(np.asarray(a).dtype))
  edge_type = tff.types.tensorflow_to_type(_specs_of(full))
  edge_opt_type = tff.types.tensorflow_to_type(tf.nest.map_structure(spec_of, edge_opt_template))
  server_type = tff.types.tensorflow_to_type(_specs_of(server_template))
  server_state_type = tff.types.tensorflow_to_type(collections.OrderedDict(
      model=_specs_of(server_template),
      optimizer=tf.nest.map_structure(spec_of, server_opt_template)))
  y_spec = tf.TensorSpec([None], label_dtype)
  z_spec = tf.TensorSpec([None, num_classes], tf.float32)
  h_spec = tf.TensorSpec([None, *feature_shape], tf.float32)
  train_seq = tff.SequenceType(tff.types.tensorflow_to_type(
      collections.OrderedDict(x=input_spec, y=y_spec, z=z_spec)))
  extract_seq = tff.SequenceType(tff.types.tensorflow_to_type(
      collections.OrderedDict(x=input_spec, y=y_spec)))
  feature_seq = tff.SequenceType(tff.types.tensorflow_to_type(feature_element_spec(
      feature_shape, num_classes, label_dtype)))
  alpha, temperature = float(config.alpha), float(config.temperature)
  server_mask = 1.0 if config.server_kd else 0.0

  def zero_totals():
    return (tf.constant(0.0), tf.constant(0.0), tf.constant(0, tf.int64))

  def add_totals(totals, loss, labels, logits):
    n = tf.shape(labels, out_type=tf.int64)[0]
    return (totals[0] + loss * tf.cast(n, tf.float32),
            totals[1] + gkt_losses.correct_count(labels, logits), totals[2] + n)

  def totals_dict(totals):
    return collections.OrderedDict(loss_sum=totals[0], correct=totals[1], examples=totals[2])

  def gather(spec):
    return tf.TensorArray(spec.dtype, size=0, dynamic_size=True, infer_shape=False,
                          element_shape=spec.shape)

  # tf.functions: automatic control dependencies order the weight assignments
  # before training and training before extraction / the returned snapshot.
  def with_learning_rate(template, state, learning_rate):
    state = _like(template, state)
    state['learning_rate'] = learning_rate
    return state

  @tf.function
  def client_work(models, weights, opt_state, train_data, extract_data, teacher_mask,
                  learning_rate):
    extractor, classifier, full = models
    _assign(full, weights)
    opt_state = with_learning_rate(edge_opt_template, opt_state, learning_rate)

    def step(carry, batch):
      totals, state = carry
      out = gkt_losses.edge_train_step(
          extractor, classifier, edge_optimizer, batch['x'], batch['y'], batch['z'],
          teacher_mask, alpha=alpha, temperature=temperature, optimizer_state=state)
      return add_totals(totals, out.loss, batch['y'], out.logits), out.optimizer_state

    totals, opt_state = train_data.reduce((zero_totals(), opt_state), step)
    features, logits, labels = gather(h_spec), gather(z_spec), gather(y_spec)
    i = tf.constant(0)
    for batch in extract_data:
      h = extractor(batch['x'], training=False)
      features = features.write(i, h)
      logits = logits.write(i, classifier(h, training=False))
      labels = labels.write(i, batch['y'])
      i += 1
    edge, features, logits = _snapshot(full), features.concat(), logits.concat()
    metrics = totals_dict(totals)
    metrics['non_finite'] = fedper.non_finite_flag(totals[0], edge, features, logits)
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
    _assign(server, state['model'])
    opt_state = with_learning_rate(server_opt_template, state['optimizer'], learning_rate)

    def step(carry, batch):
      totals, opt = carry
      out = gkt_losses.server_train_step(
          server, server_optimizer, batch['h'], batch['y'], batch['z'], server_mask,
          alpha=alpha, temperature=temperature, optimizer_state=opt)
      return add_totals(totals, out.loss, batch['y'], out.logits), out.optimizer_state

    totals, opt_state = data.reduce((zero_totals(), opt_state), step)
    return collections.OrderedDict(
        state=collections.OrderedDict(model=_snapshot(server), optimizer=opt_state),
        metrics=totals_dict(totals))

  @tff.tensorflow.computation(server_state_type, feature_seq, np.float32)
  def server_update(state, data, learning_rate):
    return server_work(server_builder(feature_shape), state, data, learning_rate)

  @tff.federated_computation(
      tff.FederatedType(server_state_type, tff.SERVER),
      tff.FederatedType(feature_seq, tff.SERVER), tff.FederatedType(np.float32, tff.SERVER))
  def server_train(state, data, learning_rate):
    return tff.federated_map(server_update, (state, data, learning_rate))

  @tf.function
  def infer_work(server, weights, data):
    _assign(server, weights)
    logits = gather(z_spec)
    i = tf.constant(0)
    for batch in data:
      logits = logits.write(i, server(batch['h'], training=False))
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


def feature_element_spec(feature_shape: Sequence[int], num_classes: int,
                         label_dtype: tf.dtypes.DType) -> collections.OrderedDict:
  """Spec of a server batch: OrderedDict(h=features, z=client logits, y=labels)."""
  return collections.OrderedDict(
      h=tf.TensorSpec([None, *feature_shape], tf.float32),
      z=tf.TensorSpec([None, num_classes], tf.float32),
      y=tf.TensorSpec([None], label_dtype))


class FeatureStore:
  """The (H, Z_c, Y) clients uploaded this round: in RAM, or spilled to TFRecords.

  Every client's examples are cut into server batches of `batch_size` (never
  mixing clients). In RAM they are numpy arrays served by
  `Dataset.from_tensor_slices(...).batch`; spilled, each client is one TFRecord
  file with one `tf.train.Example` per batch (h, z, y as serialized
  TensorProtos) read by `TFRecordDataset`. The batches are identical.
  """

  def __init__(self, feature_shape: Sequence[int], num_classes: int,
               label_dtype: tf.dtypes.DType, batch_size: int,
               directory: Optional[str] = None):
    self._spec = feature_element_spec(feature_shape, num_classes, label_dtype)
    self._batch_size = int(batch_size)
    self._directory = directory
    self._sources: list[Any] = []
    self.sizes: list[int] = []

  @property
  def spilled(self) -> bool:
    return self._directory is not None

  def add(self, features: np.ndarray, logits: np.ndarray, labels: np.ndarray) -> int:
    """Stores one client's upload; returns its position."""
    n = len(labels)
    if self._directory is None:
      self._sources.append(collections.OrderedDict(h=features, z=logits, y=labels))
    else:
      path = os.path.join(self._directory, f'client_{len(self._sources):05d}.tfrecord')
      with tf.io.TFRecordWriter(path) as writer:
        for start in range(0, n, self._batch_size):
          part = slice(start, start + self._batch_size)
          writer.write(_example(h=features[part], z=logits[part], y=labels[part]))
      self._sources.append(path)
    self.sizes.append(n)
    return len(self._sources) - 1

  def num_batches(self, position: int) -> int:
    return -(-self.sizes[position] // self._batch_size)

  def client_dataset(self, position: int) -> tf.data.Dataset:
    """Client `position`'s server batches, in upload order."""
    source = self._sources[position]
    if self._directory is None:
      return tf.data.Dataset.from_tensor_slices(source).batch(self._batch_size)
    spec = self._spec

    def parse(record):
      fields = tf.io.parse_single_example(
          record, {k: tf.io.FixedLenFeature([], tf.string) for k in spec})
      return collections.OrderedDict(
          (k, tf.ensure_shape(tf.io.parse_tensor(fields[k], s.dtype), s.shape))
          for k, s in spec.items())

    return tf.data.TFRecordDataset([source]).map(parse)

  def training_dataset(self, epochs: int, seed_words: Sequence[int]) -> tf.data.Dataset:
    """`epochs` passes over every client's batches: each client's batches in
    order, clients interleaved in a random order (seeded) drawn per epoch."""
    if len(self._sources) == 1:
      return self.client_dataset(0).repeat(epochs)
    rng = np.random.default_rng(np.random.SeedSequence(list(seed_words)))
    slots = np.repeat(np.arange(len(self._sources), dtype=np.int64),
                      [self.num_batches(i) for i in range(len(self._sources))])
    choices = np.concatenate([rng.permutation(slots) for _ in range(epochs)])
    sources = [self.client_dataset(i).repeat(epochs) for i in range(len(self._sources))]
    return tf.data.Dataset.choose_from_datasets(
        sources, tf.data.Dataset.from_tensor_slices(choices))


def _remove_stale_rounds(spill_dir: Optional[str]) -> None:
  """Deletes `round_*` feature folders a killed process left in `spill_dir`
  (a live round deletes its own folder when it ends, whatever happens)."""
  if not spill_dir or not os.path.isdir(spill_dir):
    return
  for name in os.listdir(spill_dir):
    if name.startswith('round_'):
      shutil.rmtree(os.path.join(spill_dir, name), ignore_errors=True)
  try:
    os.rmdir(spill_dir)  # Only if empty.
  except OSError:
    pass


def _example(**arrays: np.ndarray) -> bytes:
  feature = {k: tf.train.Feature(bytes_list=tf.train.BytesList(
      value=[tf.make_tensor_proto(np.ascontiguousarray(v)).SerializeToString()]))
             for k, v in arrays.items()}
  return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def _log_softmax(logits: np.ndarray) -> np.ndarray:
  shifted = logits - logits.max(axis=-1, keepdims=True)
  return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


class FedGKTAlgorithm(base.FederatedAlgorithm):
  """FedGKT for the program logic (see the module docstring)."""

  name = 'fedgkt'
  uses_client_states = True

  def __init__(self, task: base.Task, config: FedGKTConfig, *,
               edge_builder: Optional[EdgeBuilder] = None,
               server_builder: Optional[ServerBuilder] = None,
               train_map: Optional[TrainMap] = None,
               eval_map: Optional[EvalMap] = None,
               batch_map: Optional[EvalMap] = None):
    """Builds the computations.

    Args:
      task: input spec (model input shape and dtype after preprocessing),
        label dtype and number of classes; its `model_builder` is not used.
      config: FedGKT hyper-parameters.
      edge_builder: () -> (extractor, classifier, full edge model) sharing
        layers; default `models.gkt.build_gkt_edge` (ResNet-8).
      server_builder: feature_shape -> server model; default
        `models.gkt.build_gkt_server` (ResNet-55/109).
      train_map: the dataset's per-example training transform
        (`datasets.preprocessing`: augmentation), applied to the client's
        training examples (seeded like the FedAvg pipeline) and to the
        examples it extracts features of (seeded per round, as FedGKT's code
        extracts from its augmented training loader).
      eval_map: the dataset's test-time transform (evaluation; export).
      batch_map: the dataset's per-batch training transform when there is no
        train_map (uint8 pixels -> float32 / 255).
    """
    self._task = task
    self._config = config
    self._train_map = train_map
    self._eval_map = eval_map
    self._batch_map = batch_map
    input_spec = task.element_spec['x']
    self._input_shape = tuple(input_spec.shape[1:])
    self._label_dtype = tf.as_dtype(task.element_spec['y'].dtype)
    self._num_classes = task.num_classes
    self._edge_builder = edge_builder or default_edge_builder(
        self._input_shape, task.num_classes, config)
    self._server_builder = server_builder or default_server_builder(task.num_classes, config)
    extractor, _, full = self._edge_builder()
    self.feature_shape = tuple(int(d) for d in extractor.output_shape[1:])
    server = self._server_builder(self.feature_shape)
    self._edge_specs, self._server_specs = _specs_of(full), _specs_of(server)
    self.computations = build_fedgkt_computations(
        self._edge_builder, self._server_builder, input_spec=input_spec,
        label_dtype=self._label_dtype, num_classes=task.num_classes, config=config)
    self._feature_values = math.prod(self.feature_shape)
    self.edge_params = _num_values(self._edge_specs['trainable'] + self._edge_specs['non_trainable'])
    self.server_params = _num_values(self._server_specs['trainable'] + self._server_specs['non_trainable'])
    extractor_specs = _specs_of(extractor)
    # FedAvg's model is the whole f_s(f_e(x)): the stem (extractor) + server.
    self.full_trainable_params = (_num_values(extractor_specs['trainable'])
                                  + _num_values(self._server_specs['trainable']))
    self.full_params = self.full_trainable_params + (
        _num_values(extractor_specs['non_trainable'])
        + _num_values(self._server_specs['non_trainable']))
    _remove_stale_rounds(config.spill_dir)
    self._data = None
    self._files: Optional[client_files.ClientArrayFiles] = None
    self._index: dict[str, int] = {}
    self._seed: Optional[int] = None
    self._initial_edge: dict[int, collections.OrderedDict] = {}
    self._eval = None

  # ---- data and state ---------------------------------------------------

  def bind_data(self, data: federated_lib.FederatedData) -> None:
    """Gives the algorithm the clients' arrays (run_experiment calls this).

    Raises:
      ValueError: a client's features would not fit in one gRPC message to
        the TFF worker (one line, before any run folder exists).
    """
    self._data = data
    self._index = {cid: i for i, cid in enumerate(data.client_ids)}
    largest = max(len(y) for _, y in data.train_arrays.values())
    feature_bytes = self._feature_bytes(largest)
    if feature_bytes > MAX_CLIENT_FEATURE_BYTES:
      raise ValueError(
          f'fedgkt: the largest client ({largest:,} examples) would upload {feature_bytes / 2**30:.1f} '
          f'GiB of features in one message (TFF\'s limit is 2 GB); use more clients '
          '(--num_clients) or fewer examples (--max_train_examples)')

  def bind_client_files(self, files: Optional[client_files.ClientArrayFiles]) -> None:
    """Client inputs read each client's x and y from these files in the worker."""
    self._files = files

  def _train_arrays(self, client_id: str) -> tuple[np.ndarray, np.ndarray]:
    if self._data is None:
      raise RuntimeError('FedGKTAlgorithm needs bind_data(federated_data) before use')
    return self._data.train_arrays[client_id]

  def initialize(self, seed: int) -> Any:
    self._seed = int(seed)
    tf.keras.utils.set_random_seed(seed)
    return collections.OrderedDict(
        model=_weights_of(self._server_builder(self.feature_shape)),
        optimizer=self._copy(self.computations.server_optimizer_state))

  @staticmethod
  def _copy(nest: Any) -> Any:
    return tf.nest.map_structure(lambda a: np.array(a, copy=True), nest)

  def _initial_edge_weights(self, seed: int) -> collections.OrderedDict:
    if seed not in self._initial_edge:
      # Distinct from the server's stream; the same for every client.
      tf.keras.utils.set_random_seed(int(np.random.SeedSequence([seed, 7]).generate_state(1)[0]))
      self._initial_edge[seed] = _weights_of(self._edge_builder()[2])
    return self._initial_edge[seed]

  def initial_client_state(self, client_id: str, seed: int) -> Any:
    n = len(self._train_arrays(client_id)[1])
    edge = self._initial_edge_weights(seed)
    return collections.OrderedDict(
        edge=self._copy(edge),
        optimizer=self._copy(self.computations.edge_optimizer_state),
        server_logits=np.zeros([n, self._num_classes], np.float32),
        has_server_logits=np.int32(0))

  def learning_rates(self, round_num: int) -> tuple[float, float]:
    c = self._config
    return tuple(base.decayed_learning_rate(rate, c.learning_rate_decay,
                                            c.learning_rate_decay_from, round_num)
                 for rate in (c.client_learning_rate, c.server_learning_rate))

  # ---- one round -------------------------------------------------------

  def client_inputs(self, client_id: str, client_state: Mapping[str, Any], round_num: int):
    """(training dataset with pending Z_s, extraction dataset, permutation).

    The training batches are FedAvg's for this client and round (the same
    seeded shuffles, augmentation seeds and pixel transform) with the pending
    Z_s gathered alongside; the extraction batches visit the client's examples
    in a seeded permutation. With client files (`bind_client_files`) both read
    the client's x and y from disk when they run; the request holds only the
    orders, seeds and Z_s.
    """
    x, y = (self._files.get(client_id) if self._files is not None
            else self._train_arrays(client_id))
    n, index = len(self._train_arrays(client_id)[1]), self._index[client_id]
    train_map, batch_map = self._train_map, self._batch_map
    train = federated_lib.client_dataset(
        x, y, batch_size=self._config.client_batch_size, epochs=self._config.client_epochs,
        shuffle_seed=federated_lib.round_seed(self._seed, round_num, index),
        map_fn=train_map, batch_map=batch_map,
        extras={'z': np.asarray(client_state['server_logits'], np.float32)})
    rng = np.random.default_rng(np.random.SeedSequence([self._seed, round_num, index, 1]))
    order = rng.permutation(n)
    seeds = rng.integers(0, 2**31 - 1, size=(n, 2), dtype=np.int64) if train_map is not None else None

    def extraction(x_t, y_t):
      indices = tf.data.Dataset.from_tensor_slices(order)
      if train_map is None:
        def batch_of(i):
          xb = tf.gather(x_t, i)
          return collections.OrderedDict(x=xb if batch_map is None else batch_map(xb),
                                         y=tf.gather(y_t, i))
        return indices.batch(INFERENCE_BATCH).map(batch_of)

      def example_of(i, seed):
        element = collections.OrderedDict(x=tf.gather(x_t, i), y=tf.gather(y_t, i))
        return collections.OrderedDict(x=train_map(element, seed)['x'], y=element['y'])
      return tf.data.Dataset.zip((indices, tf.data.Dataset.from_tensor_slices(seeds))).map(
          example_of).batch(INFERENCE_BATCH)

    if isinstance(x, client_files.ArrayFile):
      extract = tf.data.Dataset.range(1).map(lambda _: (x.read(), y.read())).flat_map(extraction)
    else:
      extract = extraction(tf.convert_to_tensor(x), tf.convert_to_tensor(y))
    return train, extract, order

  def _run_client(self, client_id, client_state, round_num, learning_rate):
    train, extract, order = self.client_inputs(client_id, client_state, round_num)
    use_kd = self._config.client_kd and int(client_state['has_server_logits']) == 1
    [out] = self.computations.client_phase(
        [client_state['edge']], [client_state['optimizer']], [train], [extract],
        [np.float32(1.0 if use_kd else 0.0)], np.float32(learning_rate))
    return out, order

  def _label_bytes(self) -> int:
    return self._label_dtype.size

  def _feature_bytes(self, n: int) -> int:
    return n * ((self._feature_values + self._num_classes) * _FLOAT_BYTES + self._label_bytes())

  def spills(self, sizes: Sequence[int]) -> bool:
    """Whether a round with these client sizes writes features to disk."""
    held = (sum(sizes) if self._config.mode == 'sync' else max(sizes, default=0))
    limit = min(self._config.memory_budget_mb * 2**20, IN_CALL_LIMIT_BYTES)
    return self._feature_bytes(held) > limit

  def next(self, state, round_num, client_ids, client_datasets, client_states) -> base.RoundOutput:
    """One FedGKT round; `client_datasets` (generic x, y batches) are ignored:
    the clients' inputs, which carry their pending Z_s, are built from the
    data given to `bind_data`."""
    del client_datasets
    if self._seed is None:
      raise RuntimeError('FedGKTAlgorithm.initialize(seed) must run before next()')
    config = self._config
    client_lr, server_lr = self.learning_rates(round_num)
    sizes = [len(self._train_arrays(c)[1]) for c in client_ids]
    spill = self.spills(sizes)
    workdir = None
    if spill:
      root = config.spill_dir or tempfile.gettempdir()
      created_root = not os.path.exists(root)
      os.makedirs(root, exist_ok=True)
      workdir = tempfile.mkdtemp(prefix=f'round_{round_num:05d}_', dir=root)
    new_states: dict[str, Any] = {}
    client_totals = np.zeros(3)
    non_finite = []  # ids of this round's clients with a NaN/inf update or loss
    server_totals = np.zeros(3)
    server_state = state

    def new_store():
      return FeatureStore(self.feature_shape, self._num_classes, self._label_dtype,
                          config.server_batch_size, directory=workdir)

    def client_step(cid, store):
      out, order = self._run_client(cid, client_states[cid], round_num, client_lr)
      position = store.add(np.asarray(out['features']), np.asarray(out['logits']),
                           np.asarray(out['labels']))
      m = out['metrics']
      client_totals[:] += (float(m['loss_sum']), float(m['correct']), int(m['examples']))
      if int(m['non_finite']):
        non_finite.append(cid)
      new_states[cid] = collections.OrderedDict(
          edge=_to_numpy(out['edge']),
          optimizer=_like(self.computations.edge_optimizer_state,
                          [np.asarray(v) for v in tf.nest.flatten(out['optimizer'])]),
          server_logits=np.asarray(client_states[cid]['server_logits'], np.float32).copy(),
          has_server_logits=np.int32(client_states[cid]['has_server_logits']))
      return position, order

    def server_step(store, server_state, seed_words):
      result = self.computations.server_train(
          server_state, store.training_dataset(config.server_epochs, seed_words),
          np.float32(server_lr))
      m = result['metrics']
      server_totals[:] += (float(m['loss_sum']), float(m['correct']), int(m['examples']))
      return collections.OrderedDict(
          model=_to_numpy(result['state']['model']),
          optimizer=_like(self.computations.server_optimizer_state,
                          [np.asarray(v) for v in tf.nest.flatten(result['state']['optimizer'])]))

    def answer(cid, store, position, order, server_state):
      if not config.client_kd:
        return  # Nobody uses Z_s: nothing computed, nothing sent.
      z_s = np.asarray(self.computations.server_infer(
          server_state['model'], store.client_dataset(position)))
      logits = np.empty_like(z_s)
      logits[order] = z_s  # Back to training-data order.
      new_states[cid]['server_logits'] = logits
      new_states[cid]['has_server_logits'] = np.int32(1)

    try:
      if config.mode == 'sync':
        store = new_store()
        uploads = [(cid, *client_step(cid, store)) for cid in client_ids]
        server_state = server_step(store, server_state, [self._seed, round_num, 2])
        for cid, position, order in uploads:
          answer(cid, store, position, order, server_state)
      else:
        for k, cid in enumerate(client_ids):
          store = new_store()
          position, order = client_step(cid, store)
          server_state = server_step(store, server_state, [self._seed, round_num, 2, k])
          answer(cid, store, position, order, server_state)
          del store
    finally:
      if workdir is not None:
        shutil.rmtree(workdir, ignore_errors=True)
        if created_root:
          try:
            os.rmdir(root)  # Only if empty (another run may share it).
          except OSError:
            pass

    examples = int(client_totals[2])
    server_examples = int(server_totals[2])
    row = collections.OrderedDict(
        train_loss=client_totals[0] / max(examples, 1),
        train_accuracy=client_totals[1] / max(examples, 1),
        server_train_loss=server_totals[0] / max(server_examples, 1),
        server_train_accuracy=server_totals[1] / max(server_examples, 1),
        clients=len(client_ids), examples=examples, non_finite_clients=len(non_finite),
        learning_rate=client_lr, server_learning_rate=server_lr,
        features_spilled=int(spill), feature_bytes=self._feature_bytes(sum(sizes)))
    row.update(self.communication(sizes))
    return base.RoundOutput(server_state, new_states, row)

  def communication(self, sizes: Sequence[int]) -> collections.OrderedDict:
    """Per-round communication of FedGKT and of FedAvg / split learning.

    Args:
      sizes: n_k of the round's clients.

    Returns:
      upload_params_per_client (mean over clients), upload_bytes (total),
      download_params (mean per client), download_bytes (total), and the
      same for FedAvg on the full model and for split learning (see the
      module docstring).
    """
    m, n = len(sizes), int(sum(sizes))
    c, f, label = self._num_classes, self._feature_values, self._label_bytes()
    up_floats = f + (c if self._config.server_kd else 0)
    down_floats = c if self._config.client_kd else 0
    epochs = self._config.client_epochs
    return collections.OrderedDict(
        upload_params_per_client=n * (up_floats + 1) / max(m, 1),
        upload_bytes=n * (up_floats * _FLOAT_BYTES + label),
        download_params=n * down_floats / max(m, 1),
        download_bytes=n * down_floats * _FLOAT_BYTES,
        fedavg_upload_params_per_client=self.full_params,
        fedavg_upload_bytes=m * self.full_params * _FLOAT_BYTES,
        fedavg_download_params=self.full_params,
        fedavg_download_bytes=m * self.full_params * _FLOAT_BYTES,
        split_upload_bytes=epochs * n * (f * _FLOAT_BYTES + label),
        split_download_bytes=epochs * n * f * _FLOAT_BYTES,
    )

  # ---- models, evaluation, export ---------------------------------------

  def _server_template(self):
    if self._eval is None:
      self._eval = self._build_eval_models()
    return self._eval['server']

  def _build_eval_models(self):
    extractor, classifier, full = self._edge_builder()
    server = self._server_builder(self.feature_shape)
    spec = tf.TensorSpec([None, *self._input_shape], self._task.element_spec['x'].dtype)

    @tf.function(input_signature=[spec])
    def predict(x):
      h = extractor(x, training=False)
      return server(h, training=False), classifier(h, training=False)

    return dict(full=full, server=server, predict=predict)

  def model_weights(self, state) -> list[np.ndarray]:
    """The server model f_s's weights (a model on features, not on inputs;
    a client's deployable model is `build_model(task, state, client_state)`)."""
    server = self._server_template()
    by_ref = {}
    for v, w in zip(server.trainable_weights, state['model']['trainable']):
      by_ref[v.ref()] = np.asarray(w)
    for v, w in zip(server.non_trainable_weights, state['model']['non_trainable']):
      by_ref[v.ref()] = np.asarray(w)
    return [by_ref[v.ref()] for v in server.weights]

  def build_model(self, task, state, client_state=None) -> tf.keras.Model:
    """Client k's model x -> f_s(f_e^(k)(x)) (the initial edge if no state)."""
    del task
    if client_state is None:
      client_state = self.initial_client_state(self._data.client_ids[0], self._seed or 0)
    extractor, _, full = self._edge_builder()
    server = self._server_builder(self.feature_shape)
    _assign(full, client_state['edge'])
    _assign(server, state['model'])
    inputs = tf.keras.Input(self._input_shape, dtype=self._task.element_spec['x'].dtype,
                            name='input')
    return tf.keras.Model(inputs, server(extractor(inputs)), name='fedgkt_client')

  def _scores(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """[loss, accuracy] of f_s(f_e(x)) and of the edge f_c(f_e(x)) on (x, y),
    means over the examples, with the evaluation models' current weights."""
    sums = np.zeros(4)  # loss, correct (stacked), loss, correct (edge)
    for start in range(0, len(y), 1000):
      xb, yb = x[start:start + 1000], np.asarray(y[start:start + 1000])
      if self._eval_map is not None:
        xb = self._eval_map(tf.constant(xb))
      stacked, edge = (np.asarray(t, np.float64) for t in self._eval['predict'](xb))
      rows = np.arange(len(yb))
      sums += (-_log_softmax(stacked)[rows, yb].sum(), np.sum(np.argmax(stacked, -1) == yb),
               -_log_softmax(edge)[rows, yb].sum(), np.sum(np.argmax(edge, -1) == yb))
    return sums / len(y)

  def evaluate(self, state, client_states, data) -> Optional[Mapping[str, float]]:
    """The sampled clients' models on the global test set, and on their own splits.

    Only clients that have trained at least once are evaluated: those with a
    state in `client_states` (the program loop stores exactly the states
    `next` returned). A never-sampled client's edge model is the untrained
    initialization, not a FedGKT result, so it is left out (FedAvg's global
    model, by contrast, has been trained by every round).

    Cost: one forward pass of edge + server over the central test set per
    evaluated client (use --eval_every / --max_test_examples on large runs).

    Returns:
      eval_clients: K, the number of evaluated (ever-sampled) clients;
      eval_loss / eval_accuracy: the mean over the K clients of client k's
        f_s(f_e^(k)(x)) loss / accuracy on `data.central_test` (the paper's
        global test; all clients see the same examples, so this is also the
        accuracy over K copies of the test set);
      edge_loss / edge_accuracy: the same for the edge models f_c(f_e^(k)(x))
        alone;
      personalized_accuracy_mean/std/min/max: over the evaluated clients
        with a non-empty test split, each client's f_s(f_e^(k)) accuracy on
        its own split (only when the data has per-client test splits).
      Before any client has trained (K = 0) only eval_clients=0: there is no
      FedGKT model to evaluate yet (the program loop evaluates after a round,
      so this does not happen there). Losses are mean cross-entropies (nats).
    """
    ids = [cid for cid in data.client_ids if cid in client_states]
    result = collections.OrderedDict(eval_clients=len(ids))
    if not ids:
      return result
    self._server_template()
    _assign(self._eval['server'], state['model'])
    x_test, y_test = data.central_test
    central, personal = [], []
    for cid in ids:
      _assign(self._eval['full'], client_states[cid]['edge'])
      if len(y_test):
        central.append(self._scores(x_test, y_test))
      if data.test_arrays and len(data.test_arrays[cid][1]):
        personal.append(self._scores(*data.test_arrays[cid])[1])
    if central:
      mean = np.mean(central, axis=0)
      result.update(eval_loss=float(mean[0]), eval_accuracy=float(mean[1]),
                    edge_loss=float(mean[2]), edge_accuracy=float(mean[3]))
    if personal:
      a = np.asarray(personal)
      result.update(
          personalized_accuracy_mean=float(a.mean()), personalized_accuracy_std=float(a.std()),
          personalized_accuracy_min=float(a.min()), personalized_accuracy_max=float(a.max()))
    return result
