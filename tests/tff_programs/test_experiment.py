"""run_experiment's contract: one-line refusals before any folder, one meaning of
eval_accuracy, export defaults and gaps, data notes."""

import collections
import csv
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from datasets import federated
from tff_programs import evaluation
from tff_programs import experiment
from tff_programs import runtime
from tff_programs.algorithms import base
from tff_programs.algorithms import fedavg_stats

QUIET = dict(show_progress=False, log=lambda *a: None)
DIGITS = dict(dataset='digits', model='tiny_mlp', partition='iid', num_clients=4,
              client_fraction=0.5, local_epochs=1, batch_size=16, rounds=1, eval_every=1)


def test_a_configuration_failing_at_build_time_creates_no_run_folder(tmp_path):
  # fedsgd on a batch-norm model with a finite B is refused while the algorithm is
  # built: after the data is loaded, before anything is written.
  common = dict(DIGITS, algorithm='fedsgd', model='resnet8', export=False, run_name='r',
                output_dir=str(tmp_path / 'runs'))
  cfg = experiment.ExperimentConfig(**dict(common, batch_size=8))
  with pytest.raises(fedavg_stats.StatisticsError, match='--batch_size=8'):
    experiment.run_experiment(cfg, **QUIET)
  assert not os.path.exists(cfg.run_dir)
  # The same command, fixed, runs as a new run (no --resume needed).
  fixed = experiment.ExperimentConfig(**dict(common, batch_size='inf'))
  result = experiment.run_experiment(fixed, **QUIET)
  assert result.run_dir == cfg.run_dir and result.summary['rounds_completed'] == 1


def test_an_executor_that_cannot_run_privately_is_refused_before_the_run_folder(tmp_path, monkeypatch):
  monkeypatch.setenv('FEDSUITE_SANDBOX_NO_NAMESPACES', '1')
  cfg = experiment.ExperimentConfig(**DIGITS, require_private_executor=True,
                                    output_dir=str(tmp_path / 'runs'))
  with pytest.raises(runtime.ExecutorError, match='--require_private_executor: no private network'):
    experiment.run_experiment(cfg, **QUIET)
  assert not os.path.exists(cfg.run_dir)


def test_worker_concurrency_reaches_the_worker_and_changes_no_result(tmp_path, monkeypatch):
  # The worker's --max_concurrent_computation_calls comes from --worker_concurrency;
  # one client per core (the default, 0), one at a time (1) or all at once (-1)
  # give the same rows.
  started = []
  original = runtime.tff_runtime

  def recording_runtime(**kwargs):
    started.append(kwargs['max_concurrent_computation_calls'])
    return original(**kwargs)

  monkeypatch.setattr(runtime, 'tff_runtime', recording_runtime)
  rows = {}
  for calls in (None, 1, -1):
    overrides = {} if calls is None else {'worker_concurrency': calls}
    cfg = experiment.ExperimentConfig(**dict(DIGITS, rounds=2, export=False, **overrides),
                                      output_dir=str(tmp_path), run_name=f'c{calls}')
    experiment.run_experiment(cfg, **QUIET)
    with open(os.path.join(cfg.run_dir, 'metrics.csv')) as f:
      rows[calls] = [{k: v for k, v in row.items() if 'seconds' not in k}
                     for row in csv.DictReader(f)]
  assert started == [0, 1, -1]
  assert len(rows[None]) == 2 and rows[None] == rows[1] == rows[-1]


# ---- export -------------------------------------------------------------------


def test_fedper_exports_no_client_by_default_and_says_so(tmp_path):
  lines = []
  cfg = experiment.ExperimentConfig(**dict(DIGITS, algorithm='fedper'),
                                    output_dir=str(tmp_path))
  result = experiment.run_experiment(cfg, show_progress=False, log=lines.append)
  assert result.export_report['clients'] == {}
  assert not os.path.exists(os.path.join(cfg.run_dir, 'clients'))
  assert any('none exported (--export_clients=all' in l for l in lines)
  metrics = open(os.path.join(cfg.run_dir, 'metrics.csv')).read().splitlines()
  header, row = metrics[0].split(','), metrics[1].split(',')
  assert row[header.index('eval_clients')] == '2'  # 2 of 4 clients trained in round 1


def test_a_tflite_accuracy_gap_is_one_line_not_an_error(tmp_path, monkeypatch):
  from tff_programs import tflite_export
  # A TFLite model that always answers class 0 disagrees with Keras.
  monkeypatch.setattr(tflite_export, 'tflite_predict',
                      lambda model, x, **kw: np.tile(np.eye(10)[0], (len(x), 1)))
  lines = []
  cfg = experiment.ExperimentConfig(**dict(DIGITS, local_epochs=3), output_dir=str(tmp_path))
  result = experiment.run_experiment(cfg, show_progress=False, log=lines.append)
  assert result.summary['rounds_completed'] == 1
  assert result.export_report['accuracy_gap_exceeded'] is True
  warnings = [l for l in lines if l.startswith('warning: TFLite accuracy')]
  assert len(warnings) == 1 and 'model.tflite' in warnings[0]
  summary = json.loads(open(os.path.join(cfg.run_dir, 'summary.json')).read())
  assert summary['export']['accuracy_gap_exceeded'] is True
