"""FedPer: base-only aggregation, private persistent heads, K_P=0 == FedAvg, resume."""

import collections
import csv
import os

import numpy as np
import pytest
import tensorflow as tf

from tff_programs import sections
from tff_programs import client_states as client_states_lib
from tff_programs import experiment
from tff_programs import sampling
from tff_programs.algorithms import base
from tff_programs.algorithms import fedavg
from tff_programs.algorithms import fedper

SPEC = collections.OrderedDict(x=tf.TensorSpec([None, 2], tf.float32), y=tf.TensorSpec([None], tf.int64))
DATA = {
    'a': (np.array([[1., 0.], [0., 2.]], np.float32), np.array([0, 1], np.int64)),
    'b': (np.array([[1., 1.], [2., 0.], [0., 1.]], np.float32), np.array([0, 0, 1], np.int64)),
}
LR = 0.5


def two_layer():
  inputs = tf.keras.Input([2])
  h = tf.keras.layers.Dense(2, name='fc1')(inputs)
  return tf.keras.Model(inputs, tf.keras.layers.Dense(2, name='logits')(h))


TASK = base.Task(two_layer, SPEC, 2)


def dataset(cid, batch=100, epochs=1):
  x, y = DATA[cid]
  return tf.data.Dataset.from_tensor_slices(collections.OrderedDict(x=x, y=y)).batch(batch).repeat(epochs)


def numpy_step(w1, b1, w2, b2, x, y, lr):
  """One full-batch SGD step of the mean cross-entropy of a 2-layer linear net."""
  h = x @ w1 + b1
  logits = h @ w2 + b2
  p = np.exp(logits - logits.max(1, keepdims=True)); p /= p.sum(1, keepdims=True)
  d_logits = (p - np.eye(2)[y]) / len(y)
  d_w2, d_b2 = h.T @ d_logits, d_logits.sum(0)
  d_h = d_logits @ w2.T
  d_w1, d_b1 = x.T @ d_h, d_h.sum(0)
  return w1 - lr * d_w1, b1 - lr * d_b1, w2 - lr * d_w2, b2 - lr * d_b2


def test_weight_split_round_trips_and_picks_the_head():
  model = two_layer()
  split = fedper.WeightSplit.from_model(model, frozenset({'logits/kernel:0', 'logits/bias:0'}))
  assert split.personal_trainable == (2, 3) and split.base_trainable == (0, 1)
  base_part, personal = split.split(['W1', 'b1', 'W2', 'b2'], [])
  assert base_part['trainable'] == ['W1', 'b1'] and personal['trainable'] == ['W2', 'b2']
  assert split.merge(base_part, personal) == (['W1', 'b1', 'W2', 'b2'], [])


def test_server_averages_base_only_and_heads_stay_private(tff_context):
  algorithm = fedper.FedPerAlgorithm(TASK, sections.ClientTrainingOptions(client_learning_rate=LR), fedper.FedPerOptions(personal_blocks=1))
  state = algorithm.initialize(seed=1)
  heads = {c: algorithm.initial_client_state(c, seed=1) for c in DATA}
  assert not np.array_equal(heads['a']['trainable'][0], heads['b']['trainable'][0]), 'heads are per client'
  out = algorithm.next(state, 1, ['a', 'b'], [dataset('a'), dataset('b')], heads)
  w1, b1 = state['model']['base']['trainable']
  expected_base, n = [np.zeros_like(w1), np.zeros_like(b1)], {'a': 2, 'b': 3}
  for cid, (x, y) in DATA.items():
    w2, b2 = heads[cid]['trainable']
    nw1, nb1, nw2, nb2 = numpy_step(w1, b1, w2, b2, x, y, LR)
    expected_base[0] += n[cid] / 5 * nw1
    expected_base[1] += n[cid] / 5 * nb1
    # The client keeps its own trained head; nobody averages it.
    np.testing.assert_allclose(out.client_states[cid]['trainable'][0], nw2, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out.client_states[cid]['trainable'][1], nb2, rtol=1e-5, atol=1e-6)
  new_base = out.state['model']['base']['trainable']
  np.testing.assert_allclose(new_base[0], expected_base[0], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(new_base[1], expected_base[1], rtol=1e-5, atol=1e-6)
  assert out.metrics['examples'] == 5
  # Only the base (2x2 + 2 values) is uploaded.
  assert out.metrics['upload_params_per_client'] == 6


def test_personal_blocks_zero_matches_fedavg(tff_context):
  config = sections.ClientTrainingOptions(client_learning_rate=LR, local_epochs=2), fedper.FedPerOptions(personal_blocks=0)
  per = fedper.FedPerAlgorithm(TASK, *config)
  avg = fedavg.build_fedavg(TASK, sections.ClientTrainingOptions(client_learning_rate=LR), fedavg.FedAvgOptions())
  per_state, avg_state = per.initialize(4), avg.initialize(4)
  empty = {c: per.initial_client_state(c, 4) for c in DATA}
  for r in (1, 2):
    datasets = [dataset('a', 1, 2), dataset('b', 2, 2)]
    per_state = per.next(per_state, r, ['a', 'b'], datasets, empty).state
    avg_state = avg.next(avg_state, r, ['a', 'b'], datasets, {}).state
  for p, a in zip(per.model_weights(per_state), avg.model_weights(avg_state)):
    np.testing.assert_allclose(p, a, rtol=1e-6, atol=1e-7)


def test_finetune_runs_one_head_only_epoch_then_normal_training(tff_context):
  """Appendix A.3 by hand: client a (2 examples), batch 1, E = 2 epochs.

  The dataset holds 4 batches (a0, a1, a0, a1). Fine-tuning first takes one
  SGD step per batch of the first epoch (a0, a1) on the head alone, the base
  frozen; then the normal E = 2 epochs (4 steps) train base and head.
  """
  config = sections.ClientTrainingOptions(client_learning_rate=LR, local_epochs=2), fedper.FedPerOptions(fedper_finetune=True)
  tuned = fedper.FedPerAlgorithm(TASK, *config)
  state = tuned.initialize(0)
  head = tuned.initial_client_state('a', 0)
  w1, b1 = state['model']['base']['trainable']
  w2, b2 = head['trainable']
  out = tuned.next(state, 1, ['a'], [dataset('a', batch=1, epochs=2)], {'a': head})
  x, y = DATA['a']
  examples = [(x[i:i + 1], y[i:i + 1]) for i in (0, 1, 0, 1)]

  def train(weights, head_only_batches, base_moves_in_finetune=False):
    w1, b1, w2, b2 = weights
    for xb, yb in examples[:head_only_batches]:
      n1, nb1, w2, b2 = numpy_step(w1, b1, w2, b2, xb, yb, LR)
      if base_moves_in_finetune:
        w1, b1 = n1, nb1
    for xb, yb in examples:
      w1, b1, w2, b2 = numpy_step(w1, b1, w2, b2, xb, yb, LR)
    return w1, b1, w2, b2

  expected = train((w1, b1, w2, b2), head_only_batches=2)
  got = (*out.state['model']['base']['trainable'], *out.client_states['a']['trainable'])
  for g, e in zip(got, expected):  # one client: the new base is its trained base
    np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-6)
  # The alternatives this excludes differ: no fine-tuning, one or two
  # epochs (1 or 4 batches) of it, or a fine-tuning epoch that moves the base.
  for wrong in (train((w1, b1, w2, b2), 0), train((w1, b1, w2, b2), 1),
                train((w1, b1, w2, b2), 4),
                train((w1, b1, w2, b2), 2, base_moves_in_finetune=True)):
    assert max(np.abs(g - w).max() for g, w in zip(got, wrong)) > 1e-3


def test_non_finite_flag_marks_nan_or_inf_in_any_tensor():
  finite = [tf.ones([2, 2]), tf.zeros([3])]
  assert int(fedper.non_finite_flag(tf.constant(1.5), finite)) == 0
  assert int(fedper.non_finite_flag(tf.constant(np.inf), finite)) == 1  # the loss
  assert int(fedper.non_finite_flag(tf.constant(1.5), [tf.ones([2]), tf.constant([0., np.nan])])) == 1
  # Integer tensors (counts) are not checked; nothing to check is finite.
  assert int(fedper.non_finite_flag(tf.constant(7, tf.int64), finite)) == 0
  assert int(fedper.non_finite_flag([])) == 0


def test_non_finite_clients_counts_clients_with_nan_or_inf_updates(tff_context):
  """c and d have an inf input: NaN logits, loss and update; a and b stay finite."""
  bad = (np.array([[np.inf, 0.], [1., 1.]], np.float32), np.array([0, 1], np.int64))
  datasets = {cid: dataset(cid) for cid in DATA}
  for cid in ('c', 'd'):
    datasets[cid] = tf.data.Dataset.from_tensor_slices(
        collections.OrderedDict(x=bad[0], y=bad[1])).batch(100)
  algorithm = fedper.FedPerAlgorithm(TASK, sections.ClientTrainingOptions(client_learning_rate=LR), fedper.FedPerOptions())
  state = algorithm.initialize(0)
  ids = ['a', 'c', 'b', 'd']
  heads = {c: algorithm.initial_client_state(c, 0) for c in ids}
  out = algorithm.next(state, 1, ids, [datasets[c] for c in ids], heads)
  assert out.metrics['non_finite_clients'] == 2
  assert np.isfinite(out.client_states['a']['trainable'][0]).all()
  assert not np.isfinite(out.client_states['c']['trainable'][0]).all()
  finite = algorithm.next(algorithm.initialize(0), 1, ['a', 'b'],
                          [datasets['a'], datasets['b']], heads)
  assert finite.metrics['non_finite_clients'] == 0


def test_non_finite_clients_counts_overflowed_updates_behind_a_finite_loss(tff_context):
  """A huge rate (3e38), one step from W1 = 0, b1 = 0 (base), W2 = I, b2 = 0
  (head): logits 0, loss log 2 (finite) for both clients.

  p, x = (1, 4), y = 0: dL/dW1 = x^T (-0.5, 0.5) has +-2 in its second row, so
  W1 moves by 6e38 = inf. q, x = (0, 0): W1 keeps 0; b1 and b2 move by 1.5e38,
  finite. Only p counts.
  """
  algorithm = fedper.FedPerAlgorithm(TASK, sections.ClientTrainingOptions(client_learning_rate=3e38), fedper.FedPerOptions())
  state = algorithm.initialize(0)
  state['model']['base']['trainable'] = [np.zeros((2, 2), np.float32), np.zeros(2, np.float32)]
  head = collections.OrderedDict(trainable=[np.eye(2, dtype=np.float32), np.zeros(2, np.float32)],
                                 non_trainable=[])
  data = {'p': ([[1., 4.]], [0]), 'q': ([[0., 0.]], [0])}
  datasets = [tf.data.Dataset.from_tensor_slices(collections.OrderedDict(
      x=np.array(x, np.float32), y=np.array(y, np.int64))).batch(1) for x, y in data.values()]
  out = algorithm.next(state, 1, list(data), datasets, {c: head for c in data})
  assert out.metrics['non_finite_clients'] == 1
  assert out.metrics['train_loss'] == pytest.approx(np.log(2.0))
  assert all(np.isfinite(w).all() for w in tf.nest.flatten(out.client_states['q']))


def fedper_cfg(tmp_path, **overrides):
  return experiment.ExperimentConfig(**{**dict(
      algorithm='fedper', dataset='synthetic', model='tiny_mlp', partition='k_class',
      classes_per_client=2, num_clients=5, client_fraction=0.4, local_epochs=2, batch_size=8,
      client_learning_rate=0.2, rounds=4, eval_every=1, checkpoint_every=2,
      output_dir=str(tmp_path), export=False, run_name='run'), **overrides})


def full_ids():
  return [f'client_{i:03d}' for i in range(5)]


def read_rows(run_dir):
  with open(f'{run_dir}/metrics.csv') as f:
    return [{k: v for k, v in r.items() if 'seconds' not in k} for r in csv.DictReader(f)]


def test_private_states_persist_across_resume(tmp_path):
  quiet = dict(show_progress=False, log=lambda *a: None)
  full = experiment.run_experiment(fedper_cfg(tmp_path / 'full'), **quiet)
  experiment.run_experiment(fedper_cfg(tmp_path / 'cut', rounds=2), **quiet)
  resumed = experiment.run_experiment(fedper_cfg(tmp_path / 'cut', resume=True), **quiet)
  assert read_rows(full.run_dir) == read_rows(resumed.run_dir)
  assert set(full.training.client_states) == set(resumed.training.client_states)
  for cid, state in full.training.client_states.items():
    for a, b in zip(tf.nest.flatten(state), tf.nest.flatten(resumed.training.client_states[cid])):
      np.testing.assert_array_equal(a, b)
  rows = read_rows(full.run_dir)
  # eval_accuracy: the trained clients' own models on the global test set;
  # personalized_accuracy_*: each on its own split (a different number).
  assert [int(r['eval_clients']) for r in rows] == [
      len(set().union(*(sampling.sample_clients(full_ids(), 2, seed=0, round_num=k)
                        for k in range(1, r + 1)))) for r in range(1, 5)]
  assert all(r['personalized_accuracy_mean'] != r['eval_accuracy'] for r in rows)
  # The last row's spread, recomputed with plain Keras: each trained client's
  # model (shared base + its own head) on its own test split.
  cfg = fedper_cfg(tmp_path / 'full')
  data = experiment.load_federated_data(cfg)
  task = experiment.make_task(cfg, data)
  algorithm = experiment.build_algorithm(cfg, task)
  x_test, y_test = data.central_test
  model, own = task.model_builder(), []
  for cid, state in full.training.client_states.items():
    model.set_weights(list(algorithm.client_model_weights(full.training.state, state)))
    x, y = x_test[data.test_indices[cid]], y_test[data.test_indices[cid]]
    if task.preprocessing.eval_map is not None:
      x = task.preprocessing.eval_map(x)
    own.append(np.mean(np.argmax(model(x, training=False).numpy(), axis=-1) == y))
  assert len(own) == int(rows[-1]['eval_clients'])
  for key, value in (('mean', np.mean(own)), ('std', np.std(own)), ('min', min(own)), ('max', max(own))):
    assert float(rows[-1][f'personalized_accuracy_{key}']) == pytest.approx(value, abs=1e-6), key


def test_export_writes_one_checked_model_per_client(tmp_path):
  result = experiment.run_experiment(
      fedper_cfg(tmp_path, rounds=1, export=True, export_clients='client_000,client_002'),
      show_progress=False, log=lambda *a: None)
  reports = result.export_report['clients']
  assert sorted(reports) == ['client_000', 'client_002']
  for cid, report in reports.items():
    assert report['tflite_path'].endswith(f'clients/model_{cid}.tflite')
    assert report['accuracy_gap'] <= 0.005


def test_unknown_export_client_is_a_config_error(tmp_path):
  with pytest.raises(experiment.ConfigError, match='--export_clients'):
    experiment.run_experiment(fedper_cfg(tmp_path, export=True, export_clients='nobody'),
                              show_progress=False, log=lambda *a: None)


def test_spilling_client_states_to_disk_changes_nothing(tmp_path, monkeypatch):
  quiet = dict(show_progress=False, log=lambda *a: None)
  in_ram = experiment.run_experiment(fedper_cfg(tmp_path / 'ram', rounds=3), **quiet)
  spilled_at_close = []
  close = client_states_lib.ClientStateStore.close
  def recording_close(store):
    spilled_at_close.append(set(store.spilled))
    close(store)
  monkeypatch.setattr(client_states_lib.ClientStateStore, 'close', recording_close)
  # ~1 KiB budget: only about one client's head (16*10 + 10 floats) stays in RAM.
  spilled = experiment.run_experiment(
      fedper_cfg(tmp_path / 'disk', rounds=3, client_state_memory_mb=0.001), **quiet)
  assert spilled_at_close and spilled_at_close[0], 'states were spilled during the run'
  assert read_rows(in_ram.run_dir) == read_rows(spilled.run_dir)
  # The run's end removed the spill files; the final states are read from the checkpoint.
  assert not os.path.exists(os.path.join(spilled.run_dir, 'client_states'))
  for cid, state in in_ram.training.client_states.items():
    for a, b in zip(tf.nest.flatten(state), tf.nest.flatten(spilled.training.client_states[cid])):
      np.testing.assert_array_equal(a, b)
