"""The reproduce driver: its registry of paper experiments, grids, and one end-to-end run.

The end-to-end test runs `reproduce.main` in-process on the registered 'smoke'
experiment (synthetic data, tiny_mlp, 2 settings x 2 learning rates x 2 rounds),
then runs it again and checks that nothing is retrained, then extends one run.
"""

import json
import math
import os

import psutil
import pytest

from datasets import registry as dataset_registry
from tff_programs import experiment
from tff_programs import paper_experiments
from tff_programs import reproduce
from tff_programs import runtime

EXPERIMENTS = paper_experiments.EXPERIMENTS

# The speedups the paper prints next to its rounds (Tables 1 and 2): recomputing
# them from the registry's rounds checks the transcription of both.
PRINTED_SPEEDUPS = {
    'mnist_cnn_table2_iid': [3.5, 9.6, 2.7, 18.4, 21.6, 19.6, 31.3, 34.8],
    'mnist_cnn_table2_noniid': [0.5, 0.8, 0.7, 1.4, 1.4, 1.1, 2.1, 2.8],
    'shakespeare_lstm_iid': [1.5, 4.1, 5.4, 6.2, 13.0],
    'shakespeare_lstm': [7.1, 6.5, 23.8, 25.7, 95.3],
    'mnist_2nn_table1_iid': [1.0, 0.9, None, None, 3.6, 4.1, 4.2, 4.5],
    'mnist_2nn_table1_noniid': [2.4, 2.8, None, None, 4.9, 5.3, 7.4, 8.6],
}


# The registry.


def test_paper_names_are_registered():
  for name in ('mnist_cnn_table2_iid', 'mnist_cnn_table2_noniid', 'mnist_2nn_table1_iid',
               'mnist_2nn_table1_noniid', 'shakespeare_lstm', 'cifar10_table3'):
    assert name in EXPERIMENTS


@pytest.mark.parametrize('name', sorted(EXPERIMENTS))
def test_every_setting_is_a_valid_config(name):
  exp = EXPERIMENTS[name]
  assert len({s.label for s in exp.settings}) == len({s.slug for s in exp.settings}) == len(exp.settings)
  labels = {s.label for s in exp.settings}
  for s in exp.settings:
    assert exp.baseline_of(s) in labels
    assert set(s.paper_rounds_at) == set(exp.extra_targets)
    assert 1 <= exp.budget(s) <= exp.max_rounds
    cfg = exp.config(s, exp.lr_center)
    assert cfg.target_accuracy == exp.target_accuracy and cfg.rounds == exp.budget(s)
    assert cfg.dataset in dataset_registry.DATASETS
    experiment.validate(cfg)


@pytest.mark.parametrize('name', sorted(PRINTED_SPEEDUPS))
def test_paper_rounds_reproduce_the_printed_speedups(name):
  exp = EXPERIMENTS[name]
  rows = [s for s in exp.settings if exp.baseline_of(s) != s.label]
  speedups = []
  for s in rows:
    base = exp.setting(exp.baseline_of(s)).paper_rounds
    speedups.append(None if s.paper_rounds is None else round(base / s.paper_rounds, 1))
  assert speedups == PRINTED_SPEEDUPS[name]


def test_table_2_rounds_and_settings():
  iid = EXPERIMENTS['mnist_cnn_table2_iid']
  assert [s.paper_rounds for s in iid.settings] == [626, 179, 65, 234, 34, 29, 32, 20, 18]
  noniid = EXPERIMENTS['mnist_cnn_table2_noniid']
  assert [s.paper_rounds for s in noniid.settings] == [483, 1000, 600, 672, 350, 334, 426, 229, 173]
  sgd = iid.config(iid.settings[0], 0.1)
  assert (sgd.algorithm, sgd.local_epochs, sgd.batch) == ('fedsgd', 1, None)
  avg = iid.config(iid.setting('fedavg-e20-b10'), 0.1)
  assert (avg.local_epochs, avg.batch, avg.client_fraction, avg.num_clients) == (20, 10, 0.1, 100)
  assert noniid.config(noniid.settings[0], 0.1).partition == 'shards'


def test_table_1_c_zero_is_one_client_per_round():
  from tff_programs import sampling
  exp = EXPERIMENTS['mnist_2nn_table1_iid']
  cfg = exp.config(exp.setting('C=0.0 B=10'), 0.1)
  assert sampling.clients_per_round(cfg.num_clients, cfg.client_fraction) == 1
  assert exp.setting('c1.0-binf').paper_rounds is None  # The paper's '—'.


def test_cifar_table_3():
  exp = EXPERIMENTS['cifar10_table3']
  sgd, avg = exp.settings
  assert exp.target_accuracy == 0.8 and exp.extra_targets == (0.82, 0.85)
  assert (sgd.paper_rounds, dict(sgd.paper_rounds_at)) == (3750, {0.82: 6600, 0.85: None})
  assert (avg.paper_rounds, dict(avg.paper_rounds_at)) == (280, {0.82: 630, 0.85: 2000})
  assert exp.config(sgd, 0.1).learning_rate_decay == 0.9934
  cfg = exp.config(avg, 0.1)
  assert (cfg.learning_rate_decay, cfg.local_epochs, cfg.batch) == (0.99, 5, 50)


def test_budget_rules():
  exp = EXPERIMENTS['mnist_cnn_table2_iid']
  assert exp.budget(exp.setting('fedavg-e5-b10')) == 30  # 1.5 x 20.
  assert exp.budget(exp.settings[0]) == 939  # 1.5 x 626.
  table1 = EXPERIMENTS['mnist_2nn_table1_noniid']
  assert table1.budget(table1.setting('c1.0-binf')) == table1.max_rounds  # No paper number.
  assert exp.config(exp.settings[0], 0.1, rounds=7).rounds == 7


def test_unknown_names_are_one_line_errors():
  with pytest.raises(paper_experiments.ExperimentError) as e:
    paper_experiments.get_experiment('mnist')
  assert str(e.value).startswith("--experiment='mnist': unknown; allowed: mnist_cnn_table2_iid, ")
  with pytest.raises(paper_experiments.ExperimentError, match='no such setting; allowed: fedsgd'):
    EXPERIMENTS['smoke'].setting('nope')


# Learning-rate grids.


def test_paper_grids():
  assert paper_experiments.learning_rate_grid('paper3', center=0.1, points=3) == (0.0464, 0.1, 0.215)
  assert paper_experiments.learning_rate_grid('paper6', center=1.0, points=4) == (0.681, 1.0, 1.47, 2.15)
  grid = paper_experiments.learning_rate_grid('paper3', center=0.1, points=7)
  assert len(grid) == 7 and grid[3] == 0.1
  for a, b in zip(grid, grid[1:]):
    assert b / a == pytest.approx(10 ** (1 / 3), rel=0.01)


def test_explicit_grid_is_sorted_and_deduplicated():
  assert paper_experiments.learning_rate_grid(' 0.1,0.02, 0.05,0.1 ', center=1, points=1) == (0.02, 0.05, 0.1)


@pytest.mark.parametrize('spec', ['', 'paper4', '0.1,-1', '0.1,abc', 'nan'])
def test_bad_grid_is_an_error(spec):
  with pytest.raises(paper_experiments.ExperimentError, match='--lr_grid='):
    paper_experiments.learning_rate_grid(spec, center=0.1, points=3)


# The program.


def test_help_and_list(capsys):
  assert reproduce.main(['reproduce', '--help']) == 0
  out = capsys.readouterr().out
  for flag in ('--experiment', '--lr_grid', '--lr_center', '--lr_points', '--max_rounds', '--only',
               '--data_dir', '--output_dir', '--report_only'):
    assert flag in out
  assert reproduce.main(['reproduce', '--list']) == 0
  out = capsys.readouterr().out
  assert 'mnist_cnn_table2_iid: ' in out and 'fedavg-e20-b10' in out


@pytest.mark.parametrize('args,expected', [
    (['--experiment=mnist'], "--experiment='mnist': unknown; allowed: mnist_cnn_table2_iid, "),
    ([], '--experiment is required; allowed: '),
    (['--experiment=smoke', '--only=nope'], "--only='nope': no such setting; allowed: "),
    (['--experiment=smoke', '--lr_grid=fast'], "--lr_grid='fast': must be paper3 or paper6"),
    (['--experiment=smoke', '--max_rounds=0'], '--max_rounds=0: must be an integer >= 1'),
    (['--experiment=smoke', '--bogus'], "Unknown command line flag 'bogus'"),
])
def test_bad_flags_are_one_line_errors(capsys, tmp_path, args, expected):
  assert reproduce.main(['reproduce', f'--output_dir={tmp_path}', *args]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith(f'reproduce: error: {expected}'), err
  assert not os.listdir(tmp_path)


def _own_workers(exclude_tag):
  """worker_binary processes started by this process (other than the fixture's)."""
  tags = []
  for pid in runtime.tagged_worker_pids():
    try:
      tag = psutil.Process(pid).environ().get(runtime.WORKER_TAG_ENV, '')
    except psutil.Error:
      continue
    if tag.startswith(f'{os.getpid()}-') and tag != exclude_tag:
      tags.append(tag)
  return tags


def _mtimes(out):
  runs = out / 'smoke' / 'runs'
  return {p.name: (p / 'metrics.csv').stat().st_mtime_ns for p in sorted(runs.iterdir())}


def test_smoke_end_to_end_then_reuse_then_extend(tmp_path, capsys, tff_context):
  out = tmp_path / 'reproduce'
  args = ['reproduce', '--experiment=smoke', f'--output_dir={out}', '--progress=false']
  assert reproduce.main(args) == 0, capsys.readouterr().err[-3000:]
  stdout = capsys.readouterr().out
  assert '4 runs: 0 finished (reused), 4 to train' in stdout
  assert _own_workers(tff_context.tag) == [], 'a worker_binary outlived its run'

  folder = out / 'smoke'
  runs = sorted(p.name for p in (folder / 'runs').iterdir())
  assert runs == ['fedavg-e2-b16-lr0.1-seed0', 'fedavg-e2-b16-lr0.3-seed0',
                  'fedsgd-e1-binf-lr0.1-seed0', 'fedsgd-e1-binf-lr0.3-seed0']
  for name in runs:
    summary = json.loads((folder / 'runs' / name / 'summary.json').read_text())
    assert summary['rounds_completed'] == 2
  text = (folder / 'report.md').read_text()
  assert text.startswith('# smoke\n')
  assert '| FedSGD E=1 B=inf |' in text and '| FedAvg E=2 B=16 |' in text
  for png in ('accuracy.png', 'train_loss.png'):
    data = (folder / png).read_bytes()
    assert data.startswith(b'\x89PNG') and len(data) > 5000
  results = json.loads((folder / 'results.json').read_text())
  assert results['experiment'] == 'smoke' and results['learning_rates'] == [0.1, 0.3]
  assert [s['label'] for s in results['settings']] == ['FedSGD E=1 B=inf', 'FedAvg E=2 B=16']
  for s in results['settings']:
    assert len(s['runs']) == 2 and s['rounds_completed'] == 2
    assert s['learning_rate'] in (0.1, 0.3)
    best = max(s['runs'], key=lambda r: (r['rounds_to_target'] is not None,
                                         -(r['rounds_to_target'] or 0), r['final_accuracy']))
    assert s['final_accuracy'] == best['final_accuracy']

  # Again: every run is finished, nothing is trained, the report is rewritten.
  before = _mtimes(out)
  (folder / 'report.md').unlink()
  assert reproduce.main(args) == 0
  assert '4 runs: 4 finished (reused), 0 to train' in capsys.readouterr().out
  assert _mtimes(out) == before
  assert (folder / 'report.md').read_text() == text

  # A larger budget for one setting and rate resumes that run only.
  extend = [*args, '--max_rounds=3', '--only=fedavg-e2-b16', '--lr_grid=0.3']
  assert reproduce.main(extend) == 0, capsys.readouterr().err[-3000:]
  assert 'resuming to 3 rounds' in capsys.readouterr().out
  after = _mtimes(out)
  changed = [name for name in after if after[name] != before[name]]
  assert changed == ['fedavg-e2-b16-lr0.3-seed0']
  summary = json.loads((folder / 'runs' / changed[0] / 'summary.json').read_text())
  assert summary['rounds_completed'] == 3
  results = json.loads((folder / 'results.json').read_text())
  assert results['settings'][1]['rounds_budget'] == 3
  assert not math.isnan(results['settings'][1]['final_accuracy'])
