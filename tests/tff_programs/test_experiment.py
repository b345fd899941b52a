"""run_experiment's contract: one-line refusals before any folder, one meaning of
eval_accuracy, export defaults and gaps, data notes."""

import collections
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


@pytest.mark.parametrize('overrides, message', [
    ({'algorithm': 'fedper', 'client_momentum': 0.9},
     '--client_momentum=0.9: --algorithm=fedper --aggregator=mean does not use it (used by --algorithm=fedavg, --algorithm=rpn); leave it at 0.0'),
    ({'algorithm': 'fedper', 'server_learning_rate': 2.0},
     '--server_learning_rate=2.0: --algorithm=fedper --aggregator=mean does not use it (used by --algorithm=fedavg, --algorithm=fedsgd, --algorithm=rpn, --algorithm=fedprox)'),
    ({'algorithm': 'fedgkt', 'client_momentum': 0.5}, '--client_momentum=0.5: --algorithm=fedgkt does not use it'),
    ({'algorithm': 'fedgkt', 'server_learning_rate': 0.1}, '--server_learning_rate=0.1: --algorithm=fedgkt does not use it'),
    ({'algorithm': 'fedgkt', 'model': 'resnet8'}, "--model=resnet8: --algorithm=fedgkt does not use it"),
    ({'algorithm': 'fedsgd', 'local_epochs': 1, 'client_momentum': 0.9}, '--client_momentum=0.9: --algorithm=fedsgd --aggregator=mean does not use it'),
    ({'algorithm': 'fedsgd', 'local_epochs': 1, 'client_weighting': 'uniform'}, '--client_weighting=uniform: --algorithm=fedsgd --aggregator=mean does not use it'),
    ({'algorithm': 'fedsgd', 'local_epochs': 5}, '--local_epochs=5: fedsgd takes one gradient per round (E=1)'),
    ({'algorithm': 'rpn', 'client_weighting': 'uniform'}, '--client_weighting=uniform: --algorithm=rpn --aggregator=mean does not use it'),
    ({'quantization_bits': 4}, '--quantization_bits=4: --algorithm=fedavg --aggregator=mean does not use it (used by --aggregator=quantized)'),
    ({'aggregator': 'quantized', 'quantization_bits': 40}, '--quantization_bits=40: must be in [1, 16]'),
    ({'aggregator': 'rpn+mean'}, "--aggregator='rpn+mean': each aggregator at most once; mean alone"),
    ({'aggregator': 'zip'}, "--aggregator='zip': unknown 'zip'; allowed: mean, quantized, rpn"),
    ({'algorithm': 'fedgkt', 'aggregator': 'quantized'}, "--aggregator='quantized': fedgkt exchanges features"),
    ({'target_metric': 'train_accuracy'}, "--target_metric='train_accuracy': unknown; allowed: eval_accuracy, personalized_accuracy_mean"),
    ({'min_role_lines': 3}, '--min_role_lines=3: only --dataset=shakespeare'),
    ({'worker_tls_dir': '/x'}, '--worker_tls_dir=/x: only with --workers'),
])
def test_ignored_or_unknown_settings_are_refused_in_one_line(overrides, message):
  with pytest.raises(experiment.ConfigError) as raised:
    experiment.validate(experiment.ExperimentConfig(**overrides))
  assert str(raised.value).startswith(message)
  assert '\n' not in str(raised.value)


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


# ---- eval_accuracy means the global test set, for every algorithm ----------------


class PersonalAlgorithm(base.FederatedAlgorithm):
  """Clients keep their own linear model (a 1-feature threshold classifier)."""

  uses_client_states = True

  def initialize(self, seed):
    return {}

  def next(self, *args):
    raise NotImplementedError

  def model_weights(self, state):
    raise NotImplementedError

  def client_model_weights(self, state, client_state):
    return [np.array([[client_state, -client_state]], np.float32), np.zeros(2, np.float32)]


def linear_model():
  inputs = tf.keras.Input([1])
  return tf.keras.Model(inputs, tf.keras.layers.Dense(2)(inputs))


def test_personal_models_are_averaged_over_trained_clients_on_the_global_test_set():
  # Central test: x = [1, -1, 2, -2], y = [1, 0, 1, 0]. A client with state +1
  # predicts class 0 for x > 0 (accuracy 0 on the central set), state -1 the
  # opposite (accuracy 1). Client c2 was never trained and is left out.
  x = np.array([[1.], [-1.], [2.], [-2.]], np.float32)
  y = np.array([1, 0, 1, 0], np.int64)
  data = federated.FederatedData(
      name='toy', client_ids=('c0', 'c1', 'c2'),
      train_arrays={c: (x, y) for c in ('c0', 'c1', 'c2')},
      test_arrays={'c0': (x[:2], y[:2]), 'c1': (x[:1], y[:1]), 'c2': (x, y)},
      central_test=(x, y), label_histogram=np.ones((3, 2), np.int64), num_classes=2,
      input_shape=(1,))
  task = base.Task(linear_model, {}, 2)
  evaluate, _ = evaluation.make_evaluate_fn(PersonalAlgorithm(), task, data)
  result = evaluate({}, {'c0': np.float32(1.0), 'c1': np.float32(-1.0)})
  assert result['eval_clients'] == 2
  assert result['eval_accuracy'] == pytest.approx(0.5)  # mean of 0 and 1
  # Own splits: c0 scores 0 on (x=1, y=1), (x=-1, y=0); c1 scores 1 on (x=1, y=1).
  assert result['personalized_accuracy_mean'] == pytest.approx(0.5)
  assert (result['personalized_accuracy_min'], result['personalized_accuracy_max']) == (0.0, 1.0)
  assert evaluate({}, {}) == {}


def test_mean_over_models_averages_each_models_loss_and_accuracy():
  evaluator = evaluation.KerasEvaluator(linear_model)
  x = np.array([[1.], [-1.]], np.float32)
  y = np.array([1, 0], np.int64)
  weights = {'a': [np.array([[1., -1.]], np.float32), np.zeros(2, np.float32)],
             'b': [np.array([[-1., 1.]], np.float32), np.zeros(2, np.float32)]}
  result = evaluator.mean_over_models(weights.get, ['a', 'b'], x, y)
  # a: logits (1,-1) for x=1 -> wrong; (-1, 1) for x=-1 -> wrong: loss log(1+e^2).
  # b: both right: loss log(1+e^-2). Accuracy 0 and 1.
  assert result['eval_accuracy'] == pytest.approx(0.5)
  assert result['eval_loss'] == pytest.approx((np.log1p(np.e**2) + np.log1p(np.e**-2)) / 2, rel=1e-5)
  assert result['eval_clients'] == 2


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


def test_one_pass_scores_equal_keras_evaluate_and_per_client_splits():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(2500, 1)).astype(np.float32)
  y = rng.integers(0, 2, 2500).astype(np.int64)
  evaluator = evaluation.KerasEvaluator(linear_model)
  weights = [np.array([[0.7, -0.3]], np.float32), np.array([0.1, -0.1], np.float32)]
  # Bit for bit what model.evaluate reports (the same Keras loss and metric objects).
  assert evaluator.score(weights, x, y)[:2] == evaluator.evaluate(weights, x, y)
  splits = {'a': np.arange(0, 900), 'b': np.arange(900, 2000), 'c': np.arange(2000, 2500)}
  one_pass = evaluator.central_and_clients(weights, x, y, splits)
  two_passes = evaluator.central(weights, x, y)
  two_passes.update(evaluator.per_client(
      None, {c: (x[i], y[i]) for c, i in splits.items()}, shared_weights=weights))
  assert one_pass == pytest.approx(two_passes, abs=1e-12)
  assert (one_pass['eval_loss'], one_pass['eval_accuracy']) == (two_passes['eval_loss'],
                                                               two_passes['eval_accuracy'])
