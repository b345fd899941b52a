"""The learning-rate schedule: decay from a round, and annealing a run on --resume."""

import csv
import json
import os

import pytest

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



def test_fedper_follows_the_schedule(tmp_path):
  cfg = experiment.ExperimentConfig(
      algorithm='fedper', personal_blocks=1, dataset='synthetic', model='tiny_mlp',
      partition='iid', num_clients=4, client_fraction=0.5, local_epochs=1, batch_size=16,
      rounds=3, eval_every=3, client_learning_rate=0.1, learning_rate_decay=0.5,
      learning_rate_decay_from=2, output_dir=str(tmp_path), export=False,
      personalized_eval=False)
  result = experiment.run_experiment(cfg, **QUIET)
  assert [float(r['learning_rate']) for r in read_rows(result.run_dir)] == pytest.approx(
      [0.1, 0.1, 0.05])
