"""FedGKT: types, one round's data flow, spill == RAM, KD ablations, resume, export.

Tiny stand-ins for ResNet-8 / ResNet-55 keep these fast: the edge is a 1x1 conv
(2 channels) + BN + ReLU extractor and a GAP + Dense classifier; the server is
Flatten + Dense on the (4, 4, 2) features. (The real ResNet-8 + ResNet-55
stack exports the same way but takes minutes to trace and convert on 2 cores.)
"""

import collections
import csv
import dataclasses
import os

import numpy as np
import pytest
import tensorflow as tf

from datasets import client_source
from datasets import federated as federated_lib
from tff_programs import experiment
from tff_programs import model_adapter
from tff_programs import sampling
from tff_programs.algorithms import base
from tff_programs.algorithms import fedgkt
from tff_programs.algorithms.fedgkt import computations
from tff_programs.algorithms.fedgkt import feature_store
from tff_programs.algorithms.fedgkt import losses as gkt_losses

C = 3
SHAPE = (4, 4, 1)


def tiny_edge(input_shape=SHAPE, num_classes=C):
  inputs = tf.keras.Input(input_shape)
  conv = tf.keras.layers.Conv2D(2, 1, name='fe_conv')
  bn = tf.keras.layers.BatchNormalization(name='fe_bn')
  h = tf.keras.layers.ReLU(name='fe_relu')(bn(conv(inputs)))
  gap = tf.keras.layers.GlobalAveragePooling2D(name='gap')
  dense = tf.keras.layers.Dense(num_classes, name='logits')
  features = tf.keras.Input(h.shape[1:])
  return (tf.keras.Model(inputs, h, name='tiny_extractor'),
          tf.keras.Model(features, dense(gap(features))),
          tf.keras.Model(inputs, dense(gap(h))))


def tiny_server(feature_shape, num_classes=C):
  features = tf.keras.Input(feature_shape)
  return tf.keras.Model(features, tf.keras.layers.Dense(num_classes, name='s_logits')(
      tf.keras.layers.Flatten()(features)), name='tiny_server')


def make_data():
  rng = np.random.default_rng(3)
  arrays = {cid: (rng.normal(size=(n, *SHAPE)).astype(np.float32),
                  rng.integers(0, C, n).astype(np.int64)) for cid, n in (('a', 5), ('b', 7))}
  return federated_lib.FederatedData(
      name='tiny', client_ids=('a', 'b'), train_arrays=arrays, test_arrays=arrays,
      central_test=arrays['b'], label_histogram=np.ones((2, C), np.int64), num_classes=C,
      input_shape=SHAPE)


DATA = make_data()
SPEC = collections.OrderedDict(x=tf.TensorSpec([None, *SHAPE], tf.float32),
                               y=tf.TensorSpec([None], tf.int64))
TASK = base.Task(lambda: None, SPEC, C)
CONFIG = fedgkt.FedGKTConfig(client_epochs=2, client_batch_size=3, server_epochs=2,
                             server_batch_size=4, client_learning_rate=0.1,
                             server_learning_rate=0.1)


def with_data(task, data):
  """`task` with the clients' data (in-graph arrays: no files)."""
  return dataclasses.replace(task, data=client_source.ClientDataSource(
      data, preprocessing=task.preprocessing, seed=0, batch_size=None, epochs=1))


def algorithm(data=DATA, **overrides):
  return fedgkt.FedGKTAlgorithm(with_data(TASK, data), dataclasses.replace(CONFIG, **overrides),
                                edge_builder=tiny_edge, server_builder=tiny_server)


def first_round(alg, clients=('a', 'b'), states=None, seed=0):
  state = alg.initialize(seed)
  states = states or {c: alg.initial_client_state(c, seed) for c in clients}
  return state, states, alg.next(state, 1, list(clients), [None] * len(clients), states)


def assert_nests_equal(a, b):
  tf.nest.assert_same_structure(a, b)
  for x, y in zip(tf.nest.flatten(a), tf.nest.flatten(b)):
    np.testing.assert_array_equal(x, y)


def test_type_signatures(tff_context):
  comps = algorithm().computations
  edge = ('<trainable=<float32[1,1,1,2],float32[2],float32[2],float32[2],float32[2,3],float32[3]>,'
          'non_trainable=<float32[2],float32[2]>>')
  server = '<trainable=<float32[32,3],float32[3]>,non_trainable=<>>'
  opt = '<learning_rate=float32>'
  totals = '<loss_sum=float32,correct=float32,examples=int64>'
  client_totals = '<loss_sum=float32,correct=float32,examples=int64,non_finite=int32>'
  features = '<h=float32[?,4,4,2],z=float32[?,3],y=int64[?]>*'
  assert str(comps.client_phase.type_signature) == (
      f'(<edge_weights={{{edge}}}@CLIENTS,edge_optimizer_state={{{opt}}}@CLIENTS,'
      'train_data={<x=float32[?,4,4,1],y=int64[?],z=float32[?,3]>*}@CLIENTS,'
      'extract_data={<x=float32[?,4,4,1],y=int64[?]>*}@CLIENTS,'
      'teacher_mask={float32}@CLIENTS,learning_rate=float32@SERVER> -> '
      f'{{<edge={edge},optimizer={opt},features=float32[?,4,4,2],logits=float32[?,3],'
      f'labels=int64[?],metrics={client_totals}>}}@CLIENTS)')
  state = f'<model={server},optimizer={opt}>'
  assert str(comps.server_train.type_signature) == (
      f'(<state={state}@SERVER,data={features}@SERVER,learning_rate=float32@SERVER> -> '
      f'<state={state},metrics={totals}>@SERVER)')
  assert str(comps.server_infer.type_signature) == (
      f'(<weights={server}@SERVER,data={features}@SERVER> -> float32[?,3]@SERVER)')


def server_view(alg, state, client_state, x):
  """Z_s the server computes for a client: f_s(f_e^(k)(x)), inference mode."""
  model = alg.build_model(TASK, state, client_state)
  return model(x, training=False).numpy()


def test_one_round_returns_server_logits_and_counts_communication(tff_context):
  alg = algorithm()
  _, before, out = first_round(alg)
  for cid, n in (('a', 5), ('b', 7)):
    new = out.client_states[cid]
    assert new['server_logits'].shape == (n, C) and new['server_logits'].dtype == np.float32
    assert int(new['has_server_logits']) == 1 and int(before[cid]['has_server_logits']) == 0
    assert not np.allclose(new['edge']['trainable'][0], before[cid]['edge']['trainable'][0])
    # The stored Z_s are the trained server's logits of the client's own
    # features, in training-data order (extraction ran in a permuted order).
    np.testing.assert_allclose(new['server_logits'], server_view(alg, out.state, new, DATA.train_arrays[cid][0]),
                               rtol=1e-5, atol=1e-5)
  m = out.metrics
  assert (m['clients'], m['examples']) == (2, 2 * 12)  # examples trained on: E_c = 2 epochs
  assert m['non_finite_clients'] == 0
  # 12 examples uploaded: H = 4*4*2 = 32 floats, Z_c 3 floats, Y 1 int64 (8 bytes).
  assert m['upload_params_per_client'] == 12 * (32 + 3 + 1) / 2
  assert m['upload_bytes'] == 12 * ((32 + 3) * 4 + 8)
  assert m['download_params'] == 12 * 3 / 2 and m['download_bytes'] == 12 * 3 * 4
  # FedAvg on stem + server: trainable 2+2 conv, 2+2 BN, 96+3 dense = 107; + 4 BN
  # stats, which FedAvg averages too (both directions).
  assert (m['fedavg_upload_params_per_client'], m['fedavg_download_params']) == (111, 111)
  assert (m['fedavg_upload_bytes'], m['fedavg_download_bytes']) == (2 * 111 * 4, 2 * 111 * 4)
  # Split learning: H + Y up, dL/dH down, every example, E_c = 2 times.
  assert m['split_upload_bytes'] == 2 * 12 * (32 * 4 + 8)
  assert m['split_download_bytes'] == 2 * 12 * 32 * 4
  assert m['features_spilled'] == 0


def tiny_bn_server(feature_shape, num_classes=C):
  """tiny_server with a BatchNormalization before the logits."""
  features = tf.keras.Input(feature_shape)
  flat = tf.keras.layers.BatchNormalization(name='s_bn')(tf.keras.layers.Flatten()(features))
  return tf.keras.Model(features, tf.keras.layers.Dense(num_classes, name='s_logits')(flat),
                        name='tiny_bn_server')


def test_server_logits_use_batch_statistics_like_the_servers_training_pass(tff_context):
  # FedGKT's released code sends the logits of the server's training pass:
  # BN normalizes with the batch's statistics, not the moving ones (which lag
  # the weights: after 2 epochs here they are still near their initial 0 / 1).
  alg = fedgkt.FedGKTAlgorithm(with_data(TASK, DATA),
                               dataclasses.replace(CONFIG, server_batch_size=8),
                               edge_builder=tiny_edge, server_builder=tiny_bn_server)
  _, _, out = first_round(alg)
  for cid in ('a', 'b'):  # 5 and 7 examples: one server batch each
    new = out.client_states[cid]
    extractor, _, full = tiny_edge()
    model_adapter.assign_weights(full, new['edge'])
    server = tiny_bn_server((4, 4, 2))
    model_adapter.assign_weights(server, out.state['model'])
    h = extractor(DATA.train_arrays[cid][0], training=False)
    np.testing.assert_allclose(new['server_logits'], server(h, training=True).numpy(),
                               rtol=1e-4, atol=1e-5)
    assert np.abs(new['server_logits'] - server(h, training=False).numpy()).max() > 1e-2


@pytest.mark.parametrize('mode', ['sync', 'async'])
def test_spilled_features_train_exactly_like_features_in_ram(tff_context, tmp_path, monkeypatch, mode):
  spill_dir = str(tmp_path / 'spill')
  written = []
  original_add = fedgkt.FeatureStore.add

  def spy(store, *args):
    position = original_add(store, *args)
    if store.spilled:
      written.append(os.path.getsize(store._sources[position]))  # pylint: disable=protected-access
    return position

  monkeypatch.setattr(fedgkt.FeatureStore, 'add', spy)
  in_ram = first_round(algorithm(mode=mode))[2]
  assert not written
  spilled = first_round(algorithm(mode=mode, memory_budget_mb=0.0, spill_dir=spill_dir))[2]
  assert len(written) == 2 and min(written) > 5 * 32 * 4  # one TFRecord file per client
  assert not os.path.exists(spill_dir), 'feature files are deleted after the round'
  assert (in_ram.metrics['features_spilled'], spilled.metrics['features_spilled']) == (0, 1)
  assert_nests_equal(in_ram.state, spilled.state)
  for cid in ('a', 'b'):
    assert_nests_equal(in_ram.client_states[cid], spilled.client_states[cid])
  same = lambda row: {k: v for k, v in row.items() if k != 'features_spilled'}
  assert same(in_ram.metrics) == same(spilled.metrics)


def test_rounds_beyond_tffs_dataset_limit_spill_whatever_the_budget(tff_context, monkeypatch):
  alg = algorithm(memory_budget_mb=1024.0)
  assert not alg.spills([5, 5])
  # TFF refuses datasets serialized above 100 MiB; in RAM they are constants.
  assert fedgkt.IN_CALL_LIMIT_BYTES < 100 * 2**20
  ten = alg._feature_bytes(10)  # pylint: disable=protected-access
  monkeypatch.setattr(feature_store, 'IN_CALL_LIMIT_BYTES', ten - 1)
  assert alg.spills([5, 5]) and not alg.spills([5, 4])


def eager_client(alg, cid, client_state, mask, lr=0.1):
  """The client phase's training, eagerly, on the same batches."""
  extractor, classifier, full = tiny_edge()
  model_adapter.assign_weights(full, client_state['edge'])
  train, _, _ = alg.client_inputs(cid, client_state, 1)
  for batch in train:
    gkt_losses.edge_train_step(extractor, classifier, lr, batch['x'], batch['y'], batch['z'],
                               mask, alpha=CONFIG.alpha, temperature=CONFIG.temperature)
  return model_adapter.weights_of(full)


def with_teacher(alg):
  rng = np.random.default_rng(5)
  states = {}
  for cid in ('a', 'b'):
    s = alg.initial_client_state(cid, 0)
    s['server_logits'] = rng.normal(size=s['server_logits'].shape).astype(np.float32) * 3
    s['has_server_logits'] = np.int32(1)
    states[cid] = s
  return states


def test_kd_none_trains_clients_on_pure_cross_entropy(tff_context):
  none, both = algorithm(kd_mode='none'), algorithm(kd_mode='both')
  states = with_teacher(none)
  out_none = first_round(none, states=states)[2]
  out_both = first_round(both, states=states)[2]
  for cid in ('a', 'b'):
    ce_only = eager_client(none, cid, states[cid], mask=0.0)
    distilled = eager_client(both, cid, states[cid], mask=1.0)
    for got, want in zip(tf.nest.flatten(out_none.client_states[cid]['edge']), tf.nest.flatten(ce_only)):
      np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    for got, want in zip(tf.nest.flatten(out_both.client_states[cid]['edge']), tf.nest.flatten(distilled)):
      np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert not np.allclose(ce_only['trainable'][0], distilled['trainable'][0])
    # Nobody needs Z_s: none computed, the old ones are kept.
    np.testing.assert_array_equal(out_none.client_states[cid]['server_logits'], states[cid]['server_logits'])
  assert out_none.metrics['download_bytes'] == 0
  assert out_none.metrics['upload_params_per_client'] == 12 * (32 + 1) / 2  # no Z_c either


def test_round_one_has_no_teacher_and_only_both_distills_on_the_server(tff_context):
  outs = {mode: first_round(algorithm(kd_mode=mode))[2] for mode in fedgkt.KD_MODES}
  for mode in ('server_to_edge', 'both'):  # identical clients: no Z_s yet anywhere
    for cid in ('a', 'b'):
      assert_nests_equal(outs['none'].client_states[cid]['edge'], outs[mode].client_states[cid]['edge'])
  assert_nests_equal(outs['none'].state, outs['server_to_edge'].state)  # server: CE only
  assert not np.allclose(outs['none'].state['model']['trainable'][0],
                         outs['both'].state['model']['trainable'][0])


def test_async_answers_each_client_right_after_training_on_it(tff_context):
  out = first_round(algorithm(mode='async'))[2]
  alone = first_round(algorithm(mode='sync'), clients=('a',))[2]
  # Client a is answered by the server trained on a alone; b by the final server.
  np.testing.assert_array_equal(out.client_states['a']['server_logits'],
                                alone.client_states['a']['server_logits'])
  b = out.client_states['b']
  np.testing.assert_allclose(b['server_logits'], server_view(algorithm(), out.state, b, DATA.train_arrays['b'][0]),
                             rtol=1e-5, atol=1e-5)


def test_adam_keeps_optimizer_state_per_client_and_server(tff_context):
  out = first_round(algorithm(optimizer='adam'))[2]
  # Steps: server 2 epochs * (2 + 2) batches of 4; client a 2 epochs * 2 batches of 3.
  assert int(out.state['optimizer']['step']) == 8
  assert int(out.client_states['a']['optimizer']['step']) == 4
  assert int(out.client_states['b']['optimizer']['step']) == 6


def test_gkt_flags_are_validated_in_one_line():
  with pytest.raises(experiment.ConfigError, match=r"^--gkt_kd='x': allowed: both, server_to_edge, none$"):
    experiment.validate(experiment.ExperimentConfig(gkt_kd='x'))
  with pytest.raises(experiment.ConfigError, match='--gkt_server_depth=56: allowed: 55, 109'):
    experiment.validate(experiment.ExperimentConfig(gkt_server_depth=56))
  with pytest.raises(experiment.ConfigError, match='--aggregator'):
    experiment.validate(experiment.ExperimentConfig(algorithm='fedgkt', aggregator='quantized'))


def gkt_cfg(tmp_path, **overrides):
  return experiment.ExperimentConfig(**{**dict(
      algorithm='fedgkt', dataset='synthetic', partition='k_class',
      classes_per_client=2, num_clients=5, client_fraction=0.4, local_epochs=1, batch_size=8,
      client_learning_rate=0.01, gkt_server_learning_rate=0.01, gkt_optimizer='adam',
      gkt_server_epochs=2, rounds=4, eval_every=1, checkpoint_every=2, output_dir=str(tmp_path),
      export=False, run_name='run'), **overrides})


def read_rows(run_dir):
  with open(f'{run_dir}/metrics.csv') as f:
    return [{k: v for k, v in r.items() if 'seconds' not in k} for r in csv.DictReader(f)]


QUIET = dict(show_progress=False, log=lambda *a: None)


@pytest.fixture
def tiny_models(monkeypatch):
  monkeypatch.setattr(computations, 'default_edge_builder',
                      lambda shape, classes, config: lambda: tiny_edge(shape, classes))
  monkeypatch.setattr(computations, 'default_server_builder',
                      lambda classes, config: lambda shape: tiny_server(shape, classes))


def linear_edge(input_shape=(2,), num_classes=2, fe_init='identity'):
  """Edge f_c(f_e(x)) = (x E) W + b: f_e = Dense(2, no bias) 'fe', f_c = Dense 'fc'
  (initial E = identity, W = 0, b = 0: outputs and gradients by hand)."""
  inputs = tf.keras.Input(input_shape)
  fe = tf.keras.layers.Dense(2, use_bias=False, kernel_initializer=fe_init, name='fe')
  fc = tf.keras.layers.Dense(num_classes, kernel_initializer='zeros', name='fc')
  features = tf.keras.Input([2])
  return (tf.keras.Model(inputs, fe(inputs)), tf.keras.Model(features, fc(features)),
          tf.keras.Model(inputs, fc(fe(inputs))))


def linear_server(feature_shape, num_classes=2):
  """Server f_s(H) = H S + s: Dense 's' (initial S = 0, s = 0)."""
  features = tf.keras.Input(feature_shape)
  return tf.keras.Model(features, tf.keras.layers.Dense(
      num_classes, kernel_initializer='zeros', name='s')(features))


def linear_data(train, test, central):
  ids = tuple(sorted(train))
  return federated_lib.FederatedData(
      name='linear', client_ids=ids, train_arrays=train, test_arrays=test,
      central_test=central, label_histogram=np.ones((len(ids), 2), np.int64), num_classes=2,
      input_shape=(2,))


LINEAR_SPEC = collections.OrderedDict(x=tf.TensorSpec([None, 2], tf.float32),
                                      y=tf.TensorSpec([None], tf.int64))
LINEAR_TASK = base.Task(lambda: None, LINEAR_SPEC, 2)


def xy(x, y):
  return np.asarray(x, np.float32), np.asarray(y, np.int64)


def test_both_learning_rates_used_follow_the_schedule(tff_context, tmp_path, monkeypatch):
  """The rates the client and server steps use (not only the logged ones).

  One client, one example x = (1, 2), y = 0, one plain-SGD step on each side,
  every round from the same initial states: the edge starts at E = I, W = 0,
  b = 0, so z_c = 0, dCE/dz = softmax(0) - onehot(0) = (-0.5, 0.5), and
  W = -eta_c x^T (-0.5, 0.5), b = -eta_c (-0.5, 0.5) (E gets no gradient
  while W = 0). The server sees H = x E = x and starts at S = 0, s = 0: the
  same step with eta_s (CE only: kd_mode='server_to_edge', and the client has
  no teacher logits). Rates: 0.1 / 0.2, decay 0.5 from round 2.
  """
  monkeypatch.setattr(computations, 'default_edge_builder',
                      lambda shape, classes, config: lambda: linear_edge(shape, classes))
  monkeypatch.setattr(computations, 'default_server_builder',
                      lambda classes, config: lambda shape: linear_server(shape, classes))
  cfg = experiment.ExperimentConfig(
      algorithm='fedgkt', dataset='synthetic', client_learning_rate=0.1,
      gkt_server_learning_rate=0.2, learning_rate_decay=0.5, learning_rate_decay_from=2,
      gkt_kd='server_to_edge', gkt_optimizer='sgd', local_epochs=1, batch_size=1,
      gkt_server_epochs=1, output_dir=str(tmp_path))
  alg = experiment.build_algorithm(cfg, with_data(
      LINEAR_TASK, linear_data({'a': xy([[1., 2.]], [0])}, None, xy([[1., 2.]], [0]))))
  gradient = np.array([[-0.5, 0.5], [-1.0, 1.0]])  # x^T (p - onehot)
  state = alg.initialize(0)
  client = alg.initial_client_state('a', 0)
  for round_num, eta_c, eta_s in ((1, 0.1, 0.2), (2, 0.1, 0.2), (3, 0.05, 0.1), (4, 0.025, 0.05)):
    out = alg.next(state, round_num, ['a'], [None], {'a': client})
    e, w, b = out.client_states['a']['edge']['trainable']
    np.testing.assert_array_equal(e, np.eye(2))
    np.testing.assert_allclose(w, -eta_c * gradient, rtol=1e-6)
    np.testing.assert_allclose(b, -eta_c * gradient[0], rtol=1e-6)
    s_kernel, s_bias = out.state['model']['trainable']
    np.testing.assert_allclose(s_kernel, -eta_s * gradient, rtol=1e-6)
    np.testing.assert_allclose(s_bias, -eta_s * gradient[0], rtol=1e-6)
    assert (out.metrics['learning_rate'], out.metrics['server_learning_rate']) == pytest.approx(
        (eta_c, eta_s))


def test_evaluation_averages_the_sampled_clients_on_the_central_test_set():
  """By hand, with S = I (f_s(H) = H) and two trained clients, c never sampled:

  central x = (1,0) (0,1) (2,1) (1,3) (3,2), y = 0 1 0 0 1.
  a: E = I, so f_s(f_e(x)) = x: argmax 0 1 0 1 0 -> 3/5; its edge adds
     b = (0, 10) to x: always 1 -> 2/5.
  b: E swaps the two inputs: argmax 1 0 1 0 1 -> 2/5; its edge (W = I, b = 0)
     too -> 2/5.
  eval_accuracy = (3/5 + 2/5) / 2 = 0.5, edge_accuracy = 0.4 (c's initial
  edge, E = I and W = 0, would make them 0.533 and 0.467).
  Own splits: a (1,0) y=0 -> 1/1; b (0,2) (1,0) y=1 1 -> swapped argmax 0 1 -> 1/2.
  """
  central = xy([[1, 0], [0, 1], [2, 1], [1, 3], [3, 2]], [0, 1, 0, 0, 1])
  test = {'a': xy([[1, 0]], [0]), 'b': xy([[0, 2], [1, 0]], [1, 1]), 'c': xy([[5, 1]], [1])}
  data = linear_data(test, test, central)
  alg = fedgkt.FedGKTAlgorithm(with_data(LINEAR_TASK, data), CONFIG, edge_builder=linear_edge,
                               server_builder=linear_server)
  alg.initialize(0)
  server = linear_server((2,))
  server.get_layer('s').set_weights([np.eye(2), np.zeros(2)])
  state = collections.OrderedDict(model=model_adapter.weights_of(server))
  swap = np.array([[0., 1.], [1., 0.]])
  states = {}
  for cid, e, bias in (('a', np.eye(2), [0., 10.]), ('b', swap, [0., 0.])):
    _, _, full = linear_edge()
    full.get_layer('fe').set_weights([e])
    full.get_layer('fc').set_weights([np.eye(2), np.array(bias)])
    states[cid] = alg.initial_client_state(cid, 0)
    states[cid]['edge'] = model_adapter.weights_of(full)

  def cross_entropy(logits, y):
    return np.mean(np.log(np.exp(logits).sum(1)) - logits[np.arange(len(y)), y])

  x, y = central
  got = alg.evaluate(state, states, data)
  assert list(got) == ['eval_clients', 'eval_loss', 'eval_accuracy', 'edge_loss',
                       'edge_accuracy', 'personalized_accuracy_mean',
                       'personalized_accuracy_std', 'personalized_accuracy_min',
                       'personalized_accuracy_max']
  assert got['eval_clients'] == 2
  assert got['eval_accuracy'] == pytest.approx(0.5)
  assert got['edge_accuracy'] == pytest.approx(0.4)
  assert got['eval_loss'] == pytest.approx(
      (cross_entropy(x, y) + cross_entropy(x @ swap, y)) / 2, rel=1e-6)
  assert got['edge_loss'] == pytest.approx(
      (cross_entropy(x + [0, 10], y) + cross_entropy(x @ swap, y)) / 2, rel=1e-6)
  assert [got[f'personalized_accuracy_{k}'] for k in ('mean', 'std', 'min', 'max')] == (
      pytest.approx([0.75, 0.25, 0.5, 1.0]))
  # Without per-client test splits: no personalized columns.
  no_splits = dataclasses.replace(data, test_arrays=None)
  assert 'personalized_accuracy_mean' not in alg.evaluate(state, states, no_splits)
  # Before any client has trained there is nothing to evaluate.
  assert alg.evaluate(state, {}, data) == {'eval_clients': 0}


def test_non_finite_clients_counts_clients_with_nan_or_inf_updates(tff_context):
  """Clients c and d hold an inf pixel: their BN statistics, loss and edge
  weights become NaN; a stays finite. Exactly 2 of the 3 are counted."""
  arrays = dict(DATA.train_arrays)
  for cid, n in (('c', 4), ('d', 3)):
    x = np.ones((n, *SHAPE), np.float32)
    x[0, 1, 1, 0] = np.inf
    arrays[cid] = (x, np.zeros(n, np.int64))
  data = dataclasses.replace(DATA, client_ids=('a', 'b', 'c', 'd'), train_arrays=arrays,
                             test_arrays=arrays)
  for mode in fedgkt.MODES:
    alg = algorithm(data, mode=mode)
    out = first_round(alg, clients=('a', 'c', 'd'))[2]
    assert out.metrics['non_finite_clients'] == 2
    assert np.isfinite(out.client_states['a']['edge']['trainable'][0]).all()
    assert not np.isfinite(out.client_states['c']['edge']['trainable'][0]).all()
    assert not np.isfinite(out.metrics['train_loss'])


def test_non_finite_clients_counts_overflowed_weights_behind_a_finite_loss(tff_context):
  """A huge rate (3e38) and one SGD step from W = 0, b = 0 (losses: log 2, finite).

  Client p, x = (1, 4), y = 0: W's second row moves by 3e38 * 2 = inf. Client
  q, x = (0, 0): W keeps 0, b = (1.5e38, -1.5e38), still finite (and so are
  its features 0 and logits b). Only p counts; the mean training loss stays
  log 2, so a loss check alone would not see it.
  """
  config = dataclasses.replace(CONFIG, client_learning_rate=3e38, kd_mode='none',
                               client_epochs=1, client_batch_size=1, server_epochs=1)
  train = {'p': xy([[1., 4.]], [0]), 'q': xy([[0., 0.]], [0])}
  alg = fedgkt.FedGKTAlgorithm(with_data(LINEAR_TASK, linear_data(train, None, train['p'])),
                               config, edge_builder=linear_edge, server_builder=linear_server)
  out = first_round(alg, clients=('p', 'q'))[2]
  assert out.metrics['non_finite_clients'] == 1
  assert out.metrics['train_loss'] == pytest.approx(np.log(2.0))
  assert np.isinf(out.client_states['p']['edge']['trainable'][1]).any()
  assert all(np.isfinite(w).all() for w in tf.nest.flatten(out.client_states['q']['edge']))


def test_resume_equals_uninterrupted_run(tmp_path, tiny_models):
  full = experiment.run_experiment(gkt_cfg(tmp_path / 'full', gkt_memory_budget_mb=0.0), **QUIET)
  experiment.run_experiment(gkt_cfg(tmp_path / 'cut', rounds=2), **QUIET)
  resumed = experiment.run_experiment(gkt_cfg(tmp_path / 'cut', resume=True), **QUIET)
  rows = read_rows(full.run_dir)
  assert [r['features_spilled'] for r in rows] == ['1'] * 4
  assert not os.path.exists(os.path.join(full.run_dir, 'gkt_features'))
  for row in rows:
    row.pop('features_spilled')
  cut_rows = read_rows(resumed.run_dir)
  for row in cut_rows:
    row.pop('features_spilled')
  assert rows == cut_rows
  assert_nests_equal(full.training.state, resumed.training.state)
  assert set(full.training.client_states) == set(resumed.training.client_states)
  for cid, state in full.training.client_states.items():
    assert_nests_equal(state, resumed.training.client_states[cid])
  assert {'eval_accuracy', 'edge_accuracy', 'eval_loss'} <= set(rows[-1])
  # Evaluated: the clients sampled so far (2 a round, seeded), none of the others.
  ids = [f'client_{i:03d}' for i in range(5)]
  seen, expected = set(), []
  for r in range(1, 5):
    seen.update(sampling.sample_clients(ids, 2, seed=0, round_num=r))
    expected.append(len(seen))
  assert expected == [2, 4, 4, 5]
  assert [int(r['eval_clients']) for r in rows] == expected
  # Global test set, 10 balanced classes, clients with 2 classes each: above chance.
  assert float(rows[-1]['eval_accuracy']) > 0.2


def test_export_writes_a_checked_tflite_model_per_client(tmp_path, tiny_models):
  """Each exported client model is its own extractor stacked with the server."""
  result = experiment.run_experiment(
      gkt_cfg(tmp_path, rounds=1, num_clients=2, client_fraction=1.0, partition='iid', gkt_server_epochs=1,
              export=True, export_clients='client_000,client_001'), **QUIET)
  reports = result.export_report['clients']
  assert sorted(reports) == ['client_000', 'client_001']
  models = {}
  for cid, report in reports.items():
    assert report['tflite_path'].endswith(f'clients/model_{cid}.tflite')
    assert os.path.getsize(report['tflite_path']) == report['tflite_bytes'] > 0
    assert report['accuracy_gap'] <= 0.005
    models[cid] = tf.keras.models.load_model(report['keras_path'])
    assert [layer.name for layer in models[cid].layers[1:]] == ['tiny_extractor', 'tiny_server']
  # Same server, each client's own extractor.
  a, b = (models[c].get_layer('tiny_extractor').get_weights()[0] for c in sorted(models))
  assert not np.array_equal(a, b)
  np.testing.assert_array_equal(models['client_000'].get_layer('tiny_server').get_weights()[0],
                                models['client_001'].get_layer('tiny_server').get_weights()[0])


def test_feature_folders_left_by_a_killed_run_are_removed(tff_context, tmp_path):
  spill_dir = tmp_path / 'gkt_features'
  stale = spill_dir / 'round_00007_abc'
  stale.mkdir(parents=True)
  (stale / 'client_00000.tfrecord').write_bytes(b'features of a killed process')
  algorithm(spill_dir=str(spill_dir))
  assert not spill_dir.exists()
