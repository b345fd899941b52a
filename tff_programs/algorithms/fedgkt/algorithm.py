"""`FedGKTAlgorithm`: FedGKT behind the program loop's `FederatedAlgorithm` interface.

It owns the orchestration of a round (`next`): which client runs when, where
the uploaded features wait (`feature_store`), when the server trains and
answers, the round's metrics row and its traffic (`communication`). Client
inputs (`client_data`), the TFF computations (`computations`) and the client
models for evaluation and export (`client_models`) are built by the modules
it calls.

State. Server state: OrderedDict(model=OrderedDict(trainable, non_trainable)
(f_s's weights), optimizer=its optimizer state). Client state (private,
checkpointed with the run): OrderedDict(
  edge=OrderedDict(trainable, non_trainable)   the full edge model's weights,
  optimizer=...                                its optimizer state (Adam moments),
  server_logits=float32 (n_k, C)               pending Z_s, training-data order,
  has_server_logits=int32 scalar               0 until the server answered).
All clients start from the same seeded edge initialization (as FedAvg's
clients start from one global model); they diverge from round 1 on.

Data. The clients' inputs carry their pending Z_s, so the algorithm builds
them itself from the task's data source (`task.data`: each client's arrays,
as files the TFF worker reads), with FedAvg's seeded shuffles; it asks the
program loop for no datasets (`client_datasets`).

Divergence: each round's `non_finite_clients` counts the clients whose
trained edge weights, training loss, features or logits contain NaN or inf.

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
import math
from collections.abc import Mapping, Sequence
from typing import Any, Optional

import numpy as np
import tensorflow as tf

from compression import accounting
from tff_programs import model_adapter
from tff_programs.algorithms import base
from tff_programs.algorithms.fedgkt import client_data
from tff_programs.algorithms.fedgkt import client_models
from tff_programs.algorithms.fedgkt import computations
from tff_programs.algorithms.fedgkt import feature_store
from tff_programs.algorithms.fedgkt import options


class FedGKTAlgorithm(base.FederatedAlgorithm):
  """FedGKT for the program logic (see the package and module docstrings)."""

  name = 'fedgkt'
  uses_client_states = True

  def __init__(self, task: base.Task, config: options.FedGKTConfig, *,
               edge_builder: Optional[computations.EdgeBuilder] = None,
               server_builder: Optional[computations.ServerBuilder] = None,
               train_map: Optional[client_data.TrainMap] = None,
               eval_map: Optional[client_data.EvalMap] = None,
               batch_map: Optional[client_data.EvalMap] = None):
    """Builds the computations.

    Args:
      task: input spec (model input shape and dtype after preprocessing),
        label dtype, number of classes, the clients' data (`task.data`, a
        `datasets.client_source.ClientDataSource`: their arrays or array
        files) and the dataset's preprocessing; its `model_builder` is not used.
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
      (The three transforms default to `task.preprocessing`'s.)

    Raises:
      ValueError: a client's features would not fit in one gRPC message to
        the TFF worker (one line, before any run folder exists).
    """
    self.task = task
    self._task = task
    self._config = config
    prep = task.preprocessing
    self._train_map = train_map if train_map is not None else prep.train_map
    self._batch_map = batch_map if batch_map is not None else prep.batch_map
    eval_map = eval_map if eval_map is not None else prep.eval_map
    input_spec = task.element_spec['x']
    self._input_shape = tuple(input_spec.shape[1:])
    self._label_dtype = tf.as_dtype(task.element_spec['y'].dtype)
    self._num_classes = task.num_classes
    self._edge_builder = edge_builder or computations.default_edge_builder(
        self._input_shape, task.num_classes, config)
    self._server_builder = server_builder or computations.default_server_builder(
        task.num_classes, config)
    extractor, _, full = self._edge_builder()
    self.feature_shape = tuple(int(d) for d in extractor.output_shape[1:])
    server = self._server_builder(self.feature_shape)
    edge_specs = model_adapter.weight_specs(full)
    server_specs = model_adapter.weight_specs(server)
    self.computations = computations.build_fedgkt_computations(
        self._edge_builder, self._server_builder, input_spec=input_spec,
        label_dtype=self._label_dtype, num_classes=task.num_classes, config=config)
    self._feature_values = math.prod(self.feature_shape)
    count = model_adapter.num_values
    self.edge_params = count(edge_specs['trainable'] + edge_specs['non_trainable'])
    self.server_params = count(server_specs['trainable'] + server_specs['non_trainable'])
    extractor_specs = model_adapter.weight_specs(extractor)
    # FedAvg's model is the whole f_s(f_e(x)): the stem (extractor) + server.
    self.full_trainable_params = (count(extractor_specs['trainable'])
                                  + count(server_specs['trainable']))
    self.full_params = self.full_trainable_params + (
        count(extractor_specs['non_trainable']) + count(server_specs['non_trainable']))
    self._spill_dir = config.spill_dir or task.scratch_dir
    feature_store.remove_stale_rounds(self._spill_dir)
    self._client_models = client_models.ClientModels(
        self._edge_builder, self._server_builder, self.feature_shape, input_spec, eval_map)
    self._seed: Optional[int] = None
    self._initial_edge: dict[int, collections.OrderedDict] = {}
    if task.data is not None:
      self._check_client_sizes()

  # ---- data and state ---------------------------------------------------

  def _check_client_sizes(self) -> None:
    """One client's features must fit in one gRPC message to the TFF worker."""
    largest = max(self.task.data.num_examples(cid) for cid in self.task.data.client_ids)
    feature_bytes = self._feature_bytes(largest)
    if feature_bytes > feature_store.MAX_CLIENT_FEATURE_BYTES:
      raise ValueError(
          f'fedgkt: the largest client ({largest:,} examples) would upload {feature_bytes / 2**30:.1f} '
          f'GiB of features in one message (TFF\'s limit is 2 GB); use more clients '
          '(--num_clients) or fewer examples (--max_train_examples)')

  def _train_arrays(self, client_id: str) -> tuple[np.ndarray, np.ndarray]:
    if self.task.data is None:
      raise RuntimeError('FedGKTAlgorithm needs the clients\' data in its task (task.data)')
    return self.task.data.data.train_arrays[client_id]

  def client_datasets(self, client_ids: Sequence[str], round_num: int) -> list[Any]:
    """Nothing to build ahead: a client's inputs carry its pending Z_s, built in `next`."""
    del round_num
    return [None] * len(client_ids)

  def initialize(self, seed: int) -> Any:
    self._seed = int(seed)
    tf.keras.utils.set_random_seed(seed)
    return collections.OrderedDict(
        model=model_adapter.weights_of(self._server_builder(self.feature_shape)),
        optimizer=_copy(self.computations.server_optimizer_state))

  def _initial_edge_weights(self, seed: int) -> collections.OrderedDict:
    if seed not in self._initial_edge:
      # Distinct from the server's stream; the same for every client.
      tf.keras.utils.set_random_seed(int(np.random.SeedSequence([seed, 7]).generate_state(1)[0]))
      self._initial_edge[seed] = model_adapter.weights_of(self._edge_builder()[2])
    return self._initial_edge[seed]

  def initial_client_state(self, client_id: str, seed: int) -> Any:
    n = len(self._train_arrays(client_id)[1])
    edge = self._initial_edge_weights(seed)
    return collections.OrderedDict(
        edge=_copy(edge),
        optimizer=_copy(self.computations.edge_optimizer_state),
        server_logits=np.zeros([n, self._num_classes], np.float32),
        has_server_logits=np.int32(0))

  def learning_rates(self, round_num: int) -> tuple[float, float]:
    c = self._config
    return tuple(base.decayed_learning_rate(rate, c.learning_rate_decay,
                                            c.learning_rate_decay_from, round_num)
                 for rate in (c.client_learning_rate, c.server_learning_rate))

  # ---- one round -------------------------------------------------------

  def client_inputs(self, client_id: str, client_state: Mapping[str, Any], round_num: int):
    """(training dataset with pending Z_s, extraction dataset, permutation) of
    this client and round (`client_data.client_inputs`). With the data
    source's client files, both read the client's x and y from disk when
    they run."""
    source = self.task.data
    x, y = source.arrays(client_id)
    return client_data.client_inputs(
        x, y, client_state['server_logits'], num_examples=source.num_examples(client_id),
        seed=self._seed, round_num=round_num, index=source.index(client_id),
        batch_size=self._config.client_batch_size, epochs=self._config.client_epochs,
        train_map=self._train_map, batch_map=self._batch_map)

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
    return feature_store.feature_bytes(n, self._feature_values, self._num_classes,
                                       self._label_bytes())

  def spills(self, sizes: Sequence[int]) -> bool:
    """Whether a round with these client sizes writes features to disk."""
    held = (sum(sizes) if self._config.mode == 'sync' else max(sizes, default=0))
    return feature_store.exceeds_memory(self._feature_bytes(held), self._config.memory_budget_mb)

  def next(self, state, round_num, client_ids, client_datasets, client_states) -> base.RoundOutput:
    """One FedGKT round; `client_datasets` are ignored (`client_datasets`
    builds none): the clients' inputs, which carry their pending Z_s, are
    built here from `task.data`."""
    del client_datasets
    if self._seed is None:
      raise RuntimeError('FedGKTAlgorithm.initialize(seed) must run before next()')
    config = self._config
    client_lr, server_lr = self.learning_rates(round_num)
    sizes = [len(self._train_arrays(c)[1]) for c in client_ids]
    spill = self.spills(sizes)
    new_states: dict[str, Any] = {}
    client_totals = np.zeros(3)
    non_finite = []  # ids of this round's clients with a NaN/inf update or loss
    server_totals = np.zeros(3)
    server_state = state

    def client_step(cid, store):
      out, order = self._run_client(cid, client_states[cid], round_num, client_lr)
      position = store.add(np.asarray(out['features']), np.asarray(out['logits']),
                           np.asarray(out['labels']))
      m = out['metrics']
      client_totals[:] += (float(m['loss_sum']), float(m['correct']), int(m['examples']))
      if int(m['non_finite']):
        non_finite.append(cid)
      new_states[cid] = collections.OrderedDict(
          edge=model_adapter.weights_to_numpy(out['edge']),
          optimizer=model_adapter.pack_like(
              self.computations.edge_optimizer_state,
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
          model=model_adapter.weights_to_numpy(result['state']['model']),
          optimizer=model_adapter.pack_like(
              self.computations.server_optimizer_state,
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

    with feature_store.round_directory(self._spill_dir, round_num, spill) as workdir:

      def new_store():
        return feature_store.FeatureStore(self.feature_shape, self._num_classes,
                                          self._label_dtype, config.server_batch_size,
                                          directory=workdir)

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
    float_bytes = feature_store.FLOAT_BYTES
    fedavg = accounting.TransmissionCost(self.full_params, self.full_params * float_bytes)
    return collections.OrderedDict(
        upload_params_per_client=n * (up_floats + 1) / max(m, 1),
        upload_bytes=n * (up_floats * float_bytes + label),
        download_params=n * down_floats / max(m, 1),
        download_bytes=n * down_floats * float_bytes,
        **accounting.traffic_row(fedavg, fedavg, m, prefix='fedavg_'),
        split_upload_bytes=epochs * n * (f * float_bytes + label),
        split_download_bytes=epochs * n * f * float_bytes,
    )

  # ---- models, evaluation, export ---------------------------------------

  def model_weights(self, state) -> list[np.ndarray]:
    """The server model f_s's weights (a model on features, not on inputs;
    a client's deployable model is `build_model(task, state, client_state)`)."""
    return self._client_models.server_keras_order(state['model'])

  def build_model(self, task, state, client_state=None) -> tf.keras.Model:
    """Client k's model x -> f_s(f_e^(k)(x)) (the initial edge if no state)."""
    del task
    if client_state is None:
      client_state = self.initial_client_state(self.task.data.client_ids[0], self._seed or 0)
    return self._client_models.keras_model(client_state['edge'], state['model'])

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
    return self._client_models.evaluate(state['model'], client_states, data)


def _copy(nest: Any) -> Any:
  return tf.nest.map_structure(lambda a: np.array(a, copy=True), nest)


def build(task: base.Task, training: Any, opts: options.FedGKTOptions,
          aggregator: Optional[Any]) -> FedGKTAlgorithm:
  """FedGKT from the client training section and its flags (no aggregator: it
  exchanges features and logits, not model updates)."""
  del aggregator
  return FedGKTAlgorithm(task, options.config_from(training, opts))


SPEC = base.AlgorithmSpec(
    name='fedgkt', build=build, options=options.FedGKTOptions, uses_model=False,
    uses_aggregator=False,
    description='group knowledge transfer: edge ResNet-8 + server ResNet-55/109, He et al. 2020; see --gkt_*')
