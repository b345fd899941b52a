"""FedGKT with the real ResNet-8 edge and ResNet-55 server (`models.gkt`), tiny input.

The other FedGKT tests use stand-in models; this one runs the default
builders (block='bottleneck', depth 55: FedGKT's released code) for one round
on 8x8x1 images, 3 classes, 2 clients with 3 and 4 examples (about 15 s on
2 cores, mostly tracing ResNet-55).

Parameter counts by hand (conv kernels k*k*in*out, no biases; BN 4 values per
channel, 2 trainable (gamma, beta) and 2 moving statistics; a Bottleneck with
p planes: 1x1 in->p, 3x3 p->p, 1x1 p->4p, plus a 1x1 in->4p projection + BN
when the shape changes):
  edge extractor: stem conv 3*3*1*16 = 144 + BN 64                    =    208
  edge classifier: Bottleneck(16 -> 64, projection) 5,248
                   + Bottleneck(64 -> 64) 4,736 + Dense 64*3 + 3 = 195 =  10,179
  edge total 10,387; BN channels 16 + (16+16+64+64) + (16+16+64) = 272,
    so 544 moving statistics and 9,843 trainable.
  server (ResNet-56 without the stem, 6 Bottlenecks per stage):
    stage 1 (p=16):  5,248 + 5 * 4,736      =  28,928
    stage 2 (p=32): 24,832 + 5 * 18,176     = 115,712
    stage 3 (p=64): 96,768 + 5 * 71,168     = 452,608
    Dense 256*3 + 3                         =     771   -> 598,019;
    BN channels 640 + 1,280 + 2,560 = 4,480 -> 8,960 statistics, 589,059 trainable.
  FedAvg's full model (extractor + server): 208 + 598,019 = 598,227
    (trainable 176 + 589,059 = 589,235).
Feature map per example: 8 x 8 x 16 = 1,024 float32 values.
"""

import collections

import numpy as np
import pytest
import tensorflow as tf

from datasets import client_source
from datasets import federated as federated_lib
from datasets import preprocessing
from tff_programs.algorithms import base
from tff_programs.algorithms import fedgkt

C = 3
SHAPE = (8, 8, 1)
SIZES = {'a': 3, 'b': 4}


def make_data():
  rng = np.random.default_rng(0)
  arrays = {cid: (rng.normal(size=(n, *SHAPE)).astype(np.float32),
                  rng.integers(0, C, n).astype(np.int64)) for cid, n in SIZES.items()}
  return federated_lib.FederatedData(
      name='tiny_images', client_ids=tuple(SIZES), train_arrays=arrays, test_arrays=arrays,
      central_test=arrays['b'], label_histogram=np.ones((2, C), np.int64), num_classes=C,
      input_shape=SHAPE)


def test_one_round_with_the_real_resnet8_and_resnet55(tff_context):
  data = make_data()
  spec = collections.OrderedDict(x=tf.TensorSpec([None, *SHAPE], tf.float32),
                                 y=tf.TensorSpec([None], tf.int64))
  task = base.Task(lambda: None, spec, C, data=client_source.ClientDataSource(
      data, preprocessing=preprocessing.Preprocessing(), seed=0, batch_size=None, epochs=1))
  config = fedgkt.FedGKTConfig(client_batch_size=4, server_batch_size=8)
  assert (config.block, config.server_depth) == ('bottleneck', 55)
  alg = fedgkt.FedGKTAlgorithm(task, config)  # default builders: models.gkt

  assert alg.feature_shape == (8, 8, 16)
  assert (alg.edge_params, alg.server_params) == (10_387, 598_019)
  assert (alg.full_params, alg.full_trainable_params) == (598_227, 589_235)
  assert 'features=float32[?,8,8,16],logits=float32[?,3]' in str(
      alg.computations.client_phase.type_signature)

  state = alg.initialize(0)
  states = {cid: alg.initial_client_state(cid, 0) for cid in SIZES}
  edge_values = sum(w.size for w in tf.nest.flatten(states['a']['edge']))
  server_values = sum(w.size for w in tf.nest.flatten(state['model']))
  assert (edge_values, server_values) == (10_387, 598_019)
  out = alg.next(state, 1, list(SIZES), [None, None], states)

  m = out.metrics
  n = sum(SIZES.values())
  assert (m['clients'], m['examples'], m['non_finite_clients']) == (2, n, 0)
  # Per example up: H (1,024 floats) + Z_c (3 floats) + Y (int64); down: Z_s.
  assert m['feature_bytes'] == m['upload_bytes'] == n * ((1024 + 3) * 4 + 8)
  assert m['upload_params_per_client'] == n * (1024 + 3 + 1) / 2
  assert m['download_bytes'] == n * 3 * 4
  assert m['fedavg_upload_params_per_client'] == 598_227
  for key in ('train_loss', 'train_accuracy', 'server_train_loss', 'server_train_accuracy'):
    assert np.isfinite(m[key]), key
  for cid, k in SIZES.items():
    new = out.client_states[cid]
    assert new['server_logits'].shape == (k, C) and np.isfinite(new['server_logits']).all()
    assert all(np.isfinite(w).all() for w in tf.nest.flatten(new['edge']))
  assert all(np.isfinite(w).all() for w in tf.nest.flatten(out.state['model']))

  evaluation = alg.evaluate(out.state, out.client_states, data)
  assert evaluation['eval_clients'] == 2
  for key in ('eval_loss', 'edge_loss'):
    assert np.isfinite(evaluation[key]), key
  assert 0.0 <= evaluation['edge_accuracy'] <= 1.0
  # By hand: client k's f_s(f_e^(k)) on the central test set (b's 4 examples)
  # and on its own split, averaged over the two clients.
  hits = lambda model, x, y: np.argmax(model(x, training=False).numpy(), axis=-1) == y
  models = {cid: alg.build_model(task, out.state, out.client_states[cid]) for cid in SIZES}
  central = [hits(models[cid], *data.central_test).mean() for cid in SIZES]
  own = [hits(models[cid], *data.test_arrays[cid]).mean() for cid in SIZES]
  assert evaluation['eval_accuracy'] == pytest.approx(np.mean(central), abs=1e-6)
  assert evaluation['personalized_accuracy_mean'] == pytest.approx(np.mean(own), abs=1e-6)
  assert evaluation['personalized_accuracy_min'] == pytest.approx(min(own), abs=1e-6)

  model = models['a']
  assert model.count_params() == 598_227
  logits = model(data.train_arrays['a'][0], training=False).numpy()
  assert logits.shape == (3, C) and np.isfinite(logits).all()
