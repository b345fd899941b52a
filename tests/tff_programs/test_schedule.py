"""The learning-rate schedule: decay from a round, and annealing a run on --resume."""

import collections
import csv
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from tff_programs import experiment
from tff_programs import run_outputs
from tff_programs.algorithms import base

QUIET = dict(show_progress=False, log=lambda *a: None)


@pytest.mark.parametrize('decay_from,expected', [
    (1, [0.1, 0.05, 0.025, 0.0125]),     # the paper's eta * decay**(r - 1)
    (2, [0.1, 0.1, 0.05, 0.025]),
    (4, [0.1, 0.1, 0.1, 0.1]),
])
def test_decayed_learning_rate_by_hand(decay_from, expected):
  assert [base.decayed_learning_rate(0.1, 0.5, decay_from, r) for r in (1, 2, 3, 4)] == expected


def schedule(decay, decay_from):
  return {'learning_rate_decay': decay, 'learning_rate_decay_from': decay_from}


def test_schedules_agree_only_on_the_finished_rounds():
  constant = schedule(1.0, 1)
  # Decaying after round 5 keeps rounds 1..5 at eta.
  assert run_outputs.schedules_agree(constant, schedule(0.9, 5), 5)
  assert not run_outputs.schedules_agree(constant, schedule(0.9, 5), 6)
  # Two decays agree on round 1 (both eta) and differ from round 2.
  assert run_outputs.schedules_agree(schedule(0.9, 1), schedule(0.8, 1), 1)
  assert not run_outputs.schedules_agree(schedule(0.9, 1), schedule(0.8, 1), 2)
  assert run_outputs.schedules_agree(constant, constant, 100)


def test_resume_may_change_the_schedule_only_past_the_checkpoint(tmp_path):
  outputs = run_outputs.RunOutputs(str(tmp_path))
  flags = {'model': 'a', 'rounds': 10, **schedule(1.0, 1)}
  outputs.prepare(flags, resume=False)
  annealed = {**flags, 'rounds': 20, **schedule(0.9, 10)}
  with pytest.raises(run_outputs.RunDirError, match=r'--learning_rate_decay \(saved 1.0, now 0.9\)'):
    outputs.prepare(annealed, resume=True, finished_rounds=11)
  outputs.prepare(annealed, resume=True, finished_rounds=10)
  assert json.load(open(outputs.config_path)) == annealed  # it now describes the whole run
  # A saved run from before the schedule flags, with no defaults given: a plain mismatch.
  old = run_outputs.RunOutputs(str(tmp_path / 'old'))
  old.prepare({'model': 'a'}, resume=False)
  with pytest.raises(run_outputs.RunDirError, match='--learning_rate_decay_from'):
    old.prepare({'model': 'a', **schedule(0.9, 3)}, resume=True, finished_rounds=2)
  # Other flags still must match, schedule or not.
  with pytest.raises(run_outputs.RunDirError, match='--model'):
    outputs.prepare({**annealed, 'model': 'b'}, resume=True, finished_rounds=10)


def read_rows(run_dir):
  with open(os.path.join(run_dir, 'metrics.csv')) as f:
    return [{k: v for k, v in r.items() if 'seconds' not in k} for r in csv.DictReader(f)]


def test_annealing_a_finished_run_equals_a_fresh_run_with_the_final_flags(tmp_path):
  common = dict(dataset='synthetic', model='tiny_mlp', partition='iid', num_clients=4,
                client_fraction=0.5, local_epochs=1, batch_size=16, eval_every=1,
                client_learning_rate=0.1, seed=3, output_dir=str(tmp_path), export=False,
                personalized_eval=False)
  experiment.run_experiment(experiment.ExperimentConfig(**common, rounds=2, run_name='cut'), **QUIET)
  final = dict(rounds=4, learning_rate_decay=0.5, learning_rate_decay_from=2)
  experiment.run_experiment(
      experiment.ExperimentConfig(**common, **final, run_name='cut', resume=True), **QUIET)
  experiment.run_experiment(experiment.ExperimentConfig(**common, **final, run_name='fresh'), **QUIET)
  cut, fresh = read_rows(tmp_path / 'cut'), read_rows(tmp_path / 'fresh')
  assert [float(r['learning_rate']) for r in cut] == pytest.approx([0.1, 0.1, 0.05, 0.025])
  assert cut == fresh
  # Decaying from round 1 would have changed round 2: refused, nothing lost.
  with pytest.raises(run_outputs.RunDirError, match='--learning_rate_decay_from'):
    experiment.run_experiment(experiment.ExperimentConfig(
        **common, rounds=6, learning_rate_decay=0.5, run_name='cut', resume=True), **QUIET)
  assert read_rows(tmp_path / 'cut') == cut


def identity_mlp():
  """x -> (x I + 0) I + 0: base 'fc1' and head 'logits' start at identity."""
  inputs = tf.keras.Input([2])
  h = tf.keras.layers.Dense(2, kernel_initializer='identity', name='fc1')(inputs)
  return tf.keras.Model(inputs, tf.keras.layers.Dense(
      2, kernel_initializer='identity', name='logits')(h))


def test_fedper_uses_the_scheduled_rate(tff_context, tmp_path):
  """The rate the client's SGD step uses (not only the logged one), round by round.

  One client, one example x = (1, 1), y = 0, one step from the identity net
  (every round from the same initial state): logits = (1, 1), dCE/dz =
  softmax - onehot = (-0.5, 0.5), and by backprop through identity layers
  every kernel's gradient is G = [[-0.5, 0.5], [-0.5, 0.5]] and every bias's
  g = (-0.5, 0.5): after the round each weight is its initial value - eta_r G
  (or g). Rates 0.1, decay 0.5 from round 2: 0.1, 0.1, 0.05, 0.025.
  """
  cfg = experiment.ExperimentConfig(
      algorithm='fedper', personal_blocks=1, client_learning_rate=0.1,
      learning_rate_decay=0.5, learning_rate_decay_from=2, local_epochs=1,
      output_dir=str(tmp_path))
  spec = collections.OrderedDict(x=tf.TensorSpec([None, 2], tf.float32),
                                 y=tf.TensorSpec([None], tf.int64))
  algorithm = experiment.build_algorithm(cfg, base.Task(identity_mlp, spec, 2))
  data = tf.data.Dataset.from_tensor_slices(collections.OrderedDict(
      x=np.array([[1., 1.]], np.float32), y=np.array([0], np.int64))).batch(1)
  kernel_grad = np.array([[-0.5, 0.5], [-0.5, 0.5]])
  bias_grad = np.array([-0.5, 0.5])
  state = algorithm.initialize(0)
  head = algorithm.initial_client_state('a', 0)
  for round_num, eta in ((1, 0.1), (2, 0.1), (3, 0.05), (4, 0.025)):
    out = algorithm.next(state, round_num, ['a'], [data], {'a': head})
    assert out.metrics['learning_rate'] == pytest.approx(eta)
    w1, b1 = out.state['model']['base']['trainable']  # one client: its trained base
    w2, b2 = out.client_states['a']['trainable']
    for kernel in (w1, w2):
      np.testing.assert_allclose(kernel, np.eye(2) - eta * kernel_grad, rtol=1e-6)
    for bias in (b1, b2):
      np.testing.assert_allclose(bias, -eta * bias_grad, rtol=1e-6)
