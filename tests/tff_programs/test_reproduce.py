"""The reproduce driver: its registry of paper experiments, grids, and one end-to-end run.

The end-to-end test runs `reproduce.main` in-process on the registered 'smoke'
experiment (synthetic data, tiny_mlp, 2 settings x 2 learning rates x 2 rounds),
then runs it again and checks that nothing is retrained, then extends one run.
"""

import dataclasses
import json
import math
import os
import shutil

import pytest

from datasets import registry as dataset_registry
from tff_programs import experiment
from tff_programs import paper_experiments
from tff_programs import reproduce
from tff_programs import reproduce_comparison
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


def test_grid_note_names_the_rates_left_out():
  assert paper_experiments.grid_note({0.215, 0.1, 0.0464}, (0.0464, 0.1, 0.215)) is None
  assert paper_experiments.grid_note({0.1}, (0.0464, 0.1, 0.215)) == (
      "Learning rates in this report: 0.1; the experiment's grid is 0.0464, 0.1, 0.215 (no runs "
      "at 0.0464, 0.215): each setting's rate is chosen among the rates in this report only.")
  assert paper_experiments.grid_note({0.05, 0.1}, (0.1,)) == (
      "Learning rates in this report: 0.05, 0.1; the experiment's grid is 0.1: each setting's "
      'rate is chosen among the rates in this report only.')


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
    (['--experiment=smoke', '--worker_concurrency=-2'],
     '--worker_concurrency=-2: must be -1 (all at once), 0 (one per CPU core) or an integer >= 1'),
])
def test_bad_flags_are_one_line_errors(capsys, tmp_path, args, expected):
  assert reproduce.main(['reproduce', f'--output_dir={tmp_path}', *args]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith(f'reproduce: error: {expected}'), err
  assert not os.listdir(tmp_path)


@pytest.mark.parametrize('experiment_name,module', [('smoke', reproduce),
                                                    ('smoke_comparison', reproduce_comparison)])
def test_worker_concurrency_reaches_every_planned_run(experiment_name, module, tmp_path, capsys,
                                                      monkeypatch):
  # The planned configs are recorded where they would start training; the
  # recorder then interrupts, as Ctrl-C would, so nothing trains.
  seen = []

  def record_and_stop(planned, **kwargs):
    del kwargs
    seen.append([p.config.worker_concurrency for p in planned])
    raise KeyboardInterrupt

  monkeypatch.setattr(module, 'execute', record_and_stop)
  base = ['reproduce', f'--experiment={experiment_name}', f'--output_dir={tmp_path}',
          '--progress=false']
  assert reproduce.main(base) == 130
  assert reproduce.main([*base, '--worker_concurrency=-1']) == 130
  assert 'interrupted; finished rounds are saved' in capsys.readouterr().err
  assert len(seen) == 2 and len(seen[0]) >= 2
  assert seen == [[0] * len(seen[0]), [-1] * len(seen[0])]


def _own_workers(exclude_tag):
  """worker_binary processes started by this process (other than the fixture's)."""
  return sorted(set(runtime.tagged_worker_pids(started_by=os.getpid()))
                - set(runtime.tagged_worker_pids(exclude_tag)))


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
  assert "the experiment's grid" not in text  # The experiment's own grid: no grid note.
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
  # The runs at 0.1 are still on disk and in the report: the grid is whole, no note.
  assert "the experiment's grid" not in (folder / 'report.md').read_text()
  # Without them, the report says that its rates are not the experiment's grid.
  for name in ('fedavg-e2-b16-lr0.1-seed0', 'fedsgd-e1-binf-lr0.1-seed0'):
    shutil.rmtree(folder / 'runs' / name)
  assert reproduce.main([*args, '--report_only']) == 0, capsys.readouterr().err[-3000:]
  assert ("- Learning rates in this report: 0.3; the experiment's grid is 0.1, 0.3 (no runs at "
          "0.1): each setting's rate is chosen among the rates in this report only."
          ) in (folder / 'report.md').read_text()


# ---------------------------------------------------------------- issue #15 experiments


from models import blocks  # pylint: disable=g-import-not-at-top,wrong-import-position
from models import registry as model_registry  # pylint: disable=g-import-not-at-top,wrong-import-position
from tff_programs import comparisons  # pylint: disable=g-import-not-at-top,wrong-import-position
from tff_programs import paper_comparisons  # pylint: disable=g-import-not-at-top,wrong-import-position

COMPARISONS = paper_comparisons.COMPARISONS
ISSUE_15 = ('cifar10_fedavg_table3', 'cifar10_fedper_fig2_k4', 'cifar10_fedper_fig2_k8',
            'cifar10_fedgkt_iid', 'cifar10_fedgkt_dirichlet', 'cifar10_rpn_resnet8',
            'mnist_cnn_table2_iid_seeds')


def test_issue_15_names_are_registered_once():
  for name in ISSUE_15:
    assert (name in EXPERIMENTS) != (name in COMPARISONS), name
  assert not set(EXPERIMENTS) & set(COMPARISONS)
  assert reproduce.get_experiment('cifar10_rpn_resnet8') is COMPARISONS['cifar10_rpn_resnet8']
  assert reproduce.get_experiment('cifar10_fedavg_table3') is EXPERIMENTS['cifar10_fedavg_table3']


def comparison_configs(name):
  """(run, rate, seed, config) of every run of a comparison; runs whose pending
  flag (e.g. --rpn_full_every, added by another change) is not a flag yet are
  checked to be refused as unavailable, then skipped."""
  comp = COMPARISONS[name]
  out = []
  for run, lr, seed in comp.instances():
    if run.missing_flags():
      assert set(run.missing_flags()) <= set(run.pending_flags), run.label
      with pytest.raises(comparisons.UnavailableRunError, match=f'^{run.label}: needs --'):
        comp.config(run, lr, seed)
      continue
    out.append((run, lr, seed, comp.config(run, lr, seed)))
  return out


@pytest.mark.parametrize('name', sorted(COMPARISONS))
def test_every_comparison_run_is_a_valid_config(name):
  comp = COMPARISONS[name]
  comparisons.check(comp)
  configs = comparison_configs(name)
  assert configs
  for run, lr, seed, cfg in configs:
    experiment.validate(cfg)
    assert (cfg.client_learning_rate, cfg.seed, cfg.rounds) == (lr, seed, run.rounds)
    assert cfg.export == comp.export and cfg.dataset in dataset_registry.DATASETS
    if cfg.dataset == 'cifar10':
      assert cfg.cifar_input == 'pad32'  # The models of these papers take 32x32 images.


def test_cifar10_fedavg_table3():
  exp = EXPERIMENTS['cifar10_fedavg_table3']
  (setting,) = exp.settings
  assert exp.budget(setting) == 420 == math.ceil(1.5 * 280)
  assert exp.rates() == (0.0464, 0.1, 0.215)
  cfg = exp.config(setting, 0.1)
  assert (cfg.model, cfg.cifar_input, cfg.partition, cfg.num_clients, cfg.client_fraction) == (
      'cifar_cnn', 'crop24', 'iid', 100, 0.1)
  assert (cfg.local_epochs, cfg.batch, cfg.learning_rate_decay, cfg.eval_every) == (5, 50, 0.99, 2)
  assert (cfg.target_accuracy, cfg.rounds, exp.export) == (0.8, 420, True)
  assert setting.paper_rounds == 280 and any('0.0464, 0.1, 0.215' in n for n in exp.notes)


@pytest.mark.parametrize('k', [4, 8])
def test_cifar10_fedper_fig2(k):
  comp = COMPARISONS[f'cifar10_fedper_fig2_k{k}']
  fedper, fedavg = [cfg for *_, cfg in comparison_configs(f'cifar10_fedper_fig2_k{k}')]
  for cfg in (fedper, fedavg):
    assert (cfg.model, cfg.partition, cfg.classes_per_client, cfg.num_clients) == ('mobilenet_v1', 'k_class', k, 10)
    assert (cfg.client_fraction, cfg.batch, cfg.client_learning_rate, cfg.local_epochs, cfg.rounds) == (
        1.0, 128, 0.01, 1, 30)
    assert cfg.eval_every == 1 and cfg.personalized_eval
  assert (fedper.algorithm, fedper.personal_blocks, fedavg.algorithm) == ('fedper', 2, 'fedavg')
  assert comp.personalized and comp.baseline_label == 'FedAvg'
  (claim,) = comp.claims
  assert (claim.metric, claim.at_least) == ('final_personalized_accuracy_mean', 0.15 if k == 4 else 0.0)
  assert any('e=1 instead of' in r and '30 rounds instead of 100' in r for r in comp.reduced)


def test_fedper_k_p_2_is_mobilenets_classifier_and_the_block_before_it():
  model = model_registry.build_model('mobilenet_v1', (32, 32, 3), 10)
  assert [b[0].split('_')[0] for b in blocks.model_blocks(model)[-3:]] == ['dw12', 'dw13', 'logits']
  personal = blocks.personal_weight_names(model, 2)
  assert {name.split('_')[0].split('/')[0] for name in personal} == {'dw13', 'logits'}
  dw13 = [w for w in model.weights if w.name.startswith('dw13_')]
  assert len(personal) == len(dw13) + 2  # + logits/kernel, logits/bias


@pytest.mark.parametrize('name, partition', [('cifar10_fedgkt_iid', 'iid'),
                                             ('cifar10_fedgkt_dirichlet', 'dirichlet')])
def test_cifar10_fedgkt(name, partition):
  comp = COMPARISONS[name]
  gkt, fedavg = [cfg for *_, cfg in comparison_configs(name)]
  for cfg in (gkt, fedavg):
    assert (cfg.partition, cfg.num_clients, cfg.max_train_examples, cfg.client_fraction) == (
        partition, 16, 10_000, 1.0)
    assert cfg.local_epochs == 1 and cfg.rounds == gkt.rounds >= 10
  assert partition == 'iid' or gkt.dirichlet_alpha == 0.5
  assert (gkt.algorithm, gkt.gkt_server_depth, gkt.gkt_block, gkt.gkt_optimizer) == ('fedgkt', 55, 'basic', 'adam')
  assert (gkt.client_learning_rate, gkt.gkt_server_learning_rate, gkt.gkt_kd) == (0.001, 0.001, 'both')
  assert (fedavg.algorithm, fedavg.model) == ('fedavg', 'resnet56')
  assert comp.flops_input == ((32, 32, 3), 10)
  paper = {r.label: r.paper['final_eval_accuracy'] for r in comp.runs}
  assert paper == ({'FedGKT ResNet-8 + ResNet-55': 0.9297, 'FedAvg ResNet-56': 0.9288} if partition == 'iid'
                   else {'FedGKT ResNet-8 + ResNet-55': 0.8659, 'FedAvg ResNet-56': 0.8660})


def test_fedgkt_edge_flops_are_resnet8s_and_fedavgs_resnet56s():
  configs = {run.label: cfg for run, _, _, cfg in comparison_configs('cifar10_fedgkt_iid')}
  gkt_train, gkt_extract = comparisons.edge_flops_per_example(configs['FedGKT ResNet-8 + ResNet-55'], (32, 32, 3), 10)
  avg_train, avg_extract = comparisons.edge_flops_per_example(configs['FedAvg ResNet-56'], (32, 32, 3), 10)
  assert gkt_train == 3 * gkt_extract and avg_extract == 0
  # models/gkt.py: ResNet-56 / ResNet-8 (basic blocks) = 8.60x the forward FLOPs.
  assert avg_train / gkt_train == pytest.approx(8.60, abs=0.01)


def test_cifar10_rpn_resnet8():
  comp = COMPARISONS['cifar10_rpn_resnet8']
  assert [r.label for r in comp.runs] == ['FedAvg', 'RPN', 'FedAvg + 8-bit', 'RPN + 8-bit',
                                          'RPN, full kernels every 5th round']
  assert comp.runs[-1].overrides == {'algorithm': 'rpn', 'rpn_full_every': 5}
  assert comp.runs[-1].pending_flags == ('rpn_full_every',)
  for run, _, _, cfg in comparison_configs('cifar10_rpn_resnet8'):
    assert (cfg.model, cfg.partition, cfg.num_clients, cfg.client_fraction, cfg.rounds) == (
        'resnet8', 'iid', 10, 1.0, 20)
    assert (cfg.algorithm, cfg.aggregator) == {
        'FedAvg': ('fedavg', 'mean'), 'RPN': ('rpn', 'mean'), 'FedAvg + 8-bit': ('fedavg', 'quantized'),
        'RPN + 8-bit': ('rpn', 'quantized'), 'RPN, full kernels every 5th round': ('rpn', 'mean')}[run.label]
    if cfg.aggregator == 'quantized':
      assert (cfg.quantization_bits, cfg.quantization_threshold) == (8, 0)
  savings = [c for c in comp.claims if c.kind == 'saving']
  assert {c.run for c in savings} == {'RPN', 'RPN + 8-bit', 'RPN, full kernels every 5th round'}
  assert all(c.at_least == 0.44 and c.metric == 'bytes_total' for c in savings)


def test_mnist_cnn_table2_iid_seeds():
  comp = COMPARISONS['mnist_cnn_table2_iid_seeds']
  (run,) = comp.runs
  assert comp.seeds == (0, 1, 2) and comp.target_accuracy == 0.99
  assert run.learning_rates == (0.0464, 0.1, 0.215) and run.paper == {'rounds_to_target': 20}
  configs = comparison_configs('mnist_cnn_table2_iid_seeds')
  assert len(configs) == 9 and {(lr, s) for _, lr, s, _ in configs} == {
      (lr, s) for lr in run.learning_rates for s in (0, 1, 2)}
  cfg = configs[0][-1]
  assert (cfg.model, cfg.partition, cfg.num_clients, cfg.client_fraction, cfg.local_epochs, cfg.batch) == (
      'mnist_cnn', 'iid', 100, 0.1, 5, 10)
  assert cfg.stop_at_target and cfg.target_accuracy == 0.99 and cfg.eval_every == 1


def test_list_shows_comparisons_and_grid_flags_are_refused_for_them(capsys, tmp_path):
  assert reproduce.main(['reproduce', '--list']) == 0
  out = capsys.readouterr().out
  assert 'cifar10_rpn_resnet8 (comparison): ' in out and 'rpn-full-kernels-every-5th-round' in out
  assert reproduce.main(['reproduce', '--experiment=smoke_comparison', f'--output_dir={tmp_path}',
                         '--lr_grid=0.1']) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert err == ['reproduce: error: --lr_grid: only for the FedAvg tables; smoke_comparison is a '
                 'comparison whose runs have their own learning rates (see --list)']
  assert reproduce.main(['reproduce', '--experiment=smoke_comparison', f'--output_dir={tmp_path}',
                         '--only=nope']) == 2
  assert "--only='nope': no such run; allowed: fedper, fedavg" in capsys.readouterr().err
  assert not os.listdir(tmp_path)


def _comparison_mtimes(folder):
  return {p.name: (p / 'metrics.csv').stat().st_mtime_ns for p in sorted((folder / 'runs').iterdir())}


def test_smoke_comparison_end_to_end_then_reuse_then_extend(tmp_path, capsys, tff_context, monkeypatch):
  # One more run that needs a flag FedSuite does not have: skipped and reported, never fatal.
  comp = COMPARISONS['smoke_comparison']
  pending = comparisons.Run('Pending', {'algorithm': 'fedavg', 'no_such_flag_yet': 3}, (0.1,), 2,
                            pending_flags=('no_such_flag_yet',))
  monkeypatch.setitem(COMPARISONS, 'smoke_comparison',
                      dataclasses.replace(comp, runs=(*comp.runs, pending)))
  out = tmp_path / 'reproduce'
  args = ['reproduce', '--experiment=smoke_comparison', f'--output_dir={out}', '--progress=false']
  assert reproduce.main(args) == 0, capsys.readouterr().err[-3000:]
  stdout = capsys.readouterr().out
  assert '3 runs: 0 finished (reused), 2 to train, 1 not available' in stdout
  assert '[3/3] Pending lr=0.1 seed=0: skipped: Pending: needs --no_such_flag_yet' in stdout
  assert _own_workers(tff_context.tag) == []
  folder = out / 'smoke_comparison'
  assert sorted(p.name for p in (folder / 'runs').iterdir()) == ['fedavg-lr0.1-seed0', 'fedper-lr0.1-seed0']
  for png in ('accuracy.png', 'traffic.png', 'personalized.png'):
    assert (folder / png).read_bytes().startswith(b'\x89PNG')
  text = (folder / 'report.md').read_text()
  assert text.startswith('# smoke_comparison\n')
  assert '- Pending: Pending: needs --no_such_flag_yet, which this FedSuite does not have' in text
  results = json.loads((folder / 'results.json').read_text())
  assert results['experiment'] == 'smoke_comparison' and results['run_seeds'] == [0]
  by_label = {r['label']: r for r in results['runs']}
  personalized = {}
  for label, slug in (('FedPer', 'fedper'), ('FedAvg', 'fedavg')):
    summary = json.loads((folder / 'runs' / f'{slug}-lr0.1-seed0' / 'summary.json').read_text())
    personalized[label] = summary['personalized_accuracy_mean']
    metrics = by_label[label]['metrics']
    assert metrics['rounds_completed'] == summary['rounds_completed'] == 2
    assert metrics['final_eval_accuracy'] == pytest.approx(summary['final_eval_accuracy'])
    assert metrics['upload_bytes_total'] == summary['upload_bytes_total']
    assert metrics['final_personalized_accuracy_mean'] == pytest.approx(summary['personalized_accuracy_mean'])
    assert metrics['edge_flops_per_round'] > 0
  # FedPer sends only its base layers: fewer bytes than FedAvg.
  assert by_label['FedPer']['metrics']['upload_bytes_total'] < by_label['FedAvg']['metrics']['upload_bytes_total']
  # Both claims are FedPer's personalized accuracy minus FedAvg's, from the runs' summaries.
  gap = personalized['FedPer'] - personalized['FedAvg']
  assert [c['value'] for c in results['claims']] == [pytest.approx(gap)] * 2
  assert [c['met'] for c in results['claims']] == [True, False]

  # Again: nothing is trained, the report is rewritten identically.
  before = _comparison_mtimes(folder)
  (folder / 'report.md').unlink()
  assert reproduce.main(args) == 0
  assert '3 runs: 2 finished (reused), 0 to train, 1 not available' in capsys.readouterr().out
  assert _comparison_mtimes(folder) == before
  assert (folder / 'report.md').read_text() == text

  # More rounds for one run resumes that run only.
  assert reproduce.main([*args, '--max_rounds=3', '--only=fedavg']) == 0, capsys.readouterr().err[-3000:]
  assert 'resuming to 3 rounds' in capsys.readouterr().out
  after = _comparison_mtimes(folder)
  assert [n for n in after if after[n] != before[n]] == ['fedavg-lr0.1-seed0']
  results = json.loads((folder / 'results.json').read_text())
  # The report reads every run cut at --max_rounds: FedAvg 3 rounds, FedPer its 2.
  assert {r['label']: r['metrics']['rounds_completed'] for r in results['runs'] if r['metrics']} == {
      'FedPer': 2, 'FedAvg': 3}
