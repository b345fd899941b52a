"""tff_programs/configs/*.flags: each parses with train.py's flags into a valid config.

Nothing is trained: a flag file is read exactly as `--flagfile=` would read it
(on a private copy of train.py's flags), turned into an ExperimentConfig and
validated, and checked against the reproduce preset of the same paper setting.
Then its data is loaded and partitioned exactly as a run does
(`experiment.load_federated_data`), from small fake files in the real formats
whose sizes matter where the preset depends on them: the fake 100.txt has as
many roles as the real 1994 text (`shakespeare.GUTENBERG_1994_CLIENTS`), the
fake CIFAR-10 folder lacks `test_batch` like the real one.
"""

import copy
import dataclasses
import glob
import os
import pickle

import numpy as np
import pytest

from datasets import shakespeare
from tff_programs import experiment
from tff_programs import paper_comparisons
from tff_programs import paper_experiments
from tff_programs import train

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG_DIR = os.path.join(REPO, 'tff_programs', 'configs')
FLAG_FILES = sorted(os.path.basename(p) for p in glob.glob(os.path.join(CONFIG_DIR, '*.flags')))

# Flag file -> the (reproduce experiment, setting) it is one run of.
PRESETS = {
    'mnist_2nn_iid.flags': ('mnist_2nn_table1_iid', 'C=0.1 B=10'),
    'mnist_2nn_noniid.flags': ('mnist_2nn_table1_noniid', 'C=0.1 B=10'),
    'mnist_cnn_iid.flags': ('mnist_cnn_table2_iid', 'FedAvg E=5 B=10'),
    'mnist_cnn_noniid.flags': ('mnist_cnn_table2_noniid', 'FedAvg E=5 B=10'),
    'mnist_cnn_fedsgd_iid.flags': ('mnist_cnn_table2_iid', 'FedSGD E=1 B=inf'),
    'mnist_cnn_fedsgd_noniid.flags': ('mnist_cnn_table2_noniid', 'FedSGD E=1 B=inf'),
    'shakespeare_lstm_role.flags': ('shakespeare_lstm', 'FedAvg E=1 B=10'),
    'shakespeare_lstm_iid.flags': ('shakespeare_lstm_iid', 'FedAvg E=1 B=10'),
    'cifar10_fedavg.flags': ('cifar10_table3', 'FedAvg E=5 B=50'),
    'cifar10_fedsgd.flags': ('cifar10_table3', 'FedSGD E=1 B=inf'),
    'cifar10_fedavg_table3.flags': ('cifar10_fedavg_table3', 'FedAvg E=5 B=50'),
}
# Flag file -> the (reproduce comparison, run) it is the main run of (issue #15).
COMPARISON_PRESETS = {
    'cifar10_fedper_fig2_k4.flags': ('cifar10_fedper_fig2_k4', 'FedPer K_P=2'),
    'cifar10_fedper_fig2_k8.flags': ('cifar10_fedper_fig2_k8', 'FedPer K_P=2'),
    'cifar10_fedgkt_iid.flags': ('cifar10_fedgkt_iid', 'FedGKT ResNet-8 + ResNet-55'),
    'cifar10_fedgkt_dirichlet.flags': ('cifar10_fedgkt_dirichlet', 'FedGKT ResNet-8 + ResNet-55'),
    'cifar10_rpn_resnet8.flags': ('cifar10_rpn_resnet8', 'RPN'),
    'mnist_cnn_table2_iid_seeds.flags': ('mnist_cnn_table2_iid_seeds', 'FedAvg E=5 B=10'),
}
# Per-run choices a flag file may set differently from the reproduce preset.
RUN_CHOICES = frozenset({
    'client_learning_rate', 'rounds', 'eval_every', 'checkpoint_every', 'seed', 'data_dir',
    'output_dir', 'run_name', 'resume', 'export', 'quantize',
})


def parse_flag_file(name: str) -> experiment.ExperimentConfig:
  """The config `python -m tff_programs.train --flagfile=<name>` would run."""
  values = copy.deepcopy(train.FLAGS)  # A private copy: absl's global FLAGS stay unparsed.
  values(['train', f'--flagfile={os.path.join(CONFIG_DIR, name)}'])
  return experiment.ExperimentConfig(
      **{field: values[field].value for field in experiment.ExperimentConfig.__dataclass_fields__})


ALL_PRESETS = sorted({**PRESETS, **COMPARISON_PRESETS})


def test_every_flag_file_is_a_known_preset():
  assert FLAG_FILES == ALL_PRESETS


@pytest.mark.parametrize('name', ALL_PRESETS)
def test_flag_file_builds_a_valid_config(name):
  cfg = parse_flag_file(name)
  assert cfg.data_dir is None, 'data paths belong on the command line (--data_dir)'
  assert cfg.rounds > 1
  assert name in COMPARISON_PRESETS or cfg.target_accuracy is not None
  experiment.validate(cfg)


# ------------------------------------------------------------ the presets' data


def write_fake_mnist(directory):
  """mnist.npz: 600 train / 100 test 28x28 uint8 images, 60 / 10 per digit."""
  rng = np.random.default_rng(0)
  np.savez(
      os.path.join(directory, 'mnist.npz'),
      x_train=rng.integers(0, 256, (600, 28, 28), dtype=np.uint8),
      y_train=np.arange(600, dtype=np.uint8) % 10,
      x_test=rng.integers(0, 256, (100, 28, 28), dtype=np.uint8),
      y_test=np.arange(100, dtype=np.uint8) % 10,
  )


def write_fake_cifar10(directory, per_batch=100):
  """cifar-10-batches-py/data_batch_1..5, no test_batch (like the real copy)."""
  folder = os.path.join(directory, 'cifar-10-batches-py')
  os.makedirs(folder)
  rng = np.random.default_rng(0)
  for i in range(1, 6):
    batch = {
        b'data': rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
        b'labels': [int(v) for v in np.arange(per_batch) % 10],
    }
    with open(os.path.join(folder, f'data_batch_{i}'), 'wb') as f:
      pickle.dump(batch, f, protocol=2)


def _role_name(i):
  """A distinct all-letter role name: ROLE + i in base 26 (A..Z)."""
  digits = ''
  while True:
    i, r = divmod(i, 26)
    digits = chr(ord('A') + r) + digits
    if not i:
      return 'ROLE' + digits


def fake_shakespeare_text(num_roles, num_two_line_roles):
  """A 1994-layout play where `num_two_line_roles` roles speak 2 lines, the rest 3."""
  lines = ['1600', '', 'THE TRAGEDY OF FAKES', '', 'by William Shakespeare', '',
           'ACT I. SCENE 1.', 'A room', '']
  for i in range(num_roles):
    name = _role_name(i)
    lines.append(f'  {name}. The first words that {name.lower()} speaks.')
    lines.append(f'    A second line, spoken by {name.lower()} too.')
    if i >= num_two_line_roles:
      lines.append('    And a third line to end the speech.')
  return '\n'.join(lines + ['', 'THE END', ''])


# The real 1994 text's role counts: roles with >= 2 lines, of which this many
# have >= 3 (the reference preprocessing's rule).
REAL_CLIENTS = shakespeare.GUTENBERG_1994_CLIENTS[shakespeare.MIN_ROLE_LINES]
REAL_REFERENCE_CLIENTS = shakespeare.GUTENBERG_1994_CLIENTS[
    shakespeare.REFERENCE_MIN_ROLE_LINES]


@pytest.fixture(name='fake_data_dirs', scope='module')
def fixture_fake_data_dirs(tmp_path_factory):
  """Dataset name -> a folder with fake files standing in for the real ones."""
  root = tmp_path_factory.mktemp('fake_data')
  dirs = {}
  for name, write in (('mnist', write_fake_mnist), ('cifar10', write_fake_cifar10)):
    dirs[name] = str(root / name)
    os.makedirs(dirs[name])
    write(dirs[name])
  text = fake_shakespeare_text(REAL_CLIENTS, REAL_CLIENTS - REAL_REFERENCE_CLIENTS)
  (root / 'shakespeare').mkdir()
  (root / 'shakespeare' / '100.txt').write_text(text)
  dirs['shakespeare'] = dirs['shakespeare_iid'] = str(root / 'shakespeare')
  return dirs


def test_fake_shakespeare_has_the_real_texts_role_counts(fake_data_dirs):
  with open(os.path.join(fake_data_dirs['shakespeare'], '100.txt')) as f:
    text = f.read()
  assert shakespeare.statistics(text)['num_clients'] == 1215
  assert shakespeare.statistics(text, min_role_lines=3)['num_clients'] == 1149


@pytest.mark.parametrize('name', ALL_PRESETS)
def test_flag_file_loads_and_partitions_its_data(name, fake_data_dirs):
  cfg = parse_flag_file(name)
  cfg = dataclasses.replace(cfg, data_dir=fake_data_dirs[cfg.dataset])
  experiment.validate(cfg)
  data = experiment.load_federated_data(cfg)
  assert len(data.client_ids) == cfg.num_clients
  assert all(len(data.train_arrays[c][1]) > 0 for c in data.client_ids)


@pytest.mark.parametrize('exp_name', sorted(set(paper_experiments.EXPERIMENTS) - {'smoke'}))
def test_reproduce_experiment_loads_and_partitions_its_data(exp_name, fake_data_dirs):
  exp = paper_experiments.EXPERIMENTS[exp_name]
  loaded = {}
  for setting in exp.settings:
    cfg = exp.config(setting, 0.1, data_dir=None)
    cfg = dataclasses.replace(cfg, data_dir=fake_data_dirs[cfg.dataset])
    experiment.validate(cfg)
    key = (cfg.dataset, cfg.partition, cfg.num_clients, cfg.shards_per_client)
    if key not in loaded:  # Settings differ in E, B, C and rates, not in data.
      loaded[key] = len(experiment.load_federated_data(cfg).client_ids)
    assert loaded[key] == cfg.num_clients, setting.label


@pytest.mark.parametrize('name', sorted(COMPARISON_PRESETS))
def test_flag_file_matches_its_comparison_run(name):
  cfg = parse_flag_file(name)
  exp_name, label = COMPARISON_PRESETS[name]
  comp = paper_comparisons.COMPARISONS[exp_name]
  run = comp.run(label)
  assert cfg.client_learning_rate in run.learning_rates and cfg.seed in comp.seeds
  preset = comp.config(run, cfg.client_learning_rate, cfg.seed)
  ours, theirs = cfg.to_json(), preset.to_json()
  differing = {k: (v, theirs[k]) for k, v in ours.items()
               if k not in RUN_CHOICES - {'rounds', 'eval_every', 'export'} and v != theirs[k]}
  assert not differing, f'{name} vs {exp_name}/{label}: {differing}'


@pytest.mark.parametrize('exp_name', sorted(set(paper_comparisons.COMPARISONS) - {'smoke_comparison'}))
def test_comparison_loads_partitions_and_builds_its_models(exp_name, fake_data_dirs):
  """Every run's data on fake files (the real formats), its task and Keras model: 32x32 for CIFAR."""
  comp = paper_comparisons.COMPARISONS[exp_name]
  for run, lr, seed in comp.instances(seeds=comp.seeds[:1]):
    if run.missing_flags():  # A flag another change adds (--rpn_full_every): checked in test_reproduce.
      continue
    cfg = dataclasses.replace(comp.config(run, lr, seed), data_dir=fake_data_dirs[comp.base['dataset']])
    experiment.validate(cfg)
    data = experiment.load_federated_data(cfg)
    assert len(data.client_ids) == cfg.num_clients, run.label
    task = experiment.make_task(cfg, data)
    side = 32 if cfg.dataset == 'cifar10' else 28
    assert task.element_spec['x'].shape.as_list()[1:3] == [side, side], run.label
    if cfg.algorithm != 'fedgkt':  # FedGKT builds its own ResNet-8 / ResNet-55 (models.gkt).
      assert task.model_builder().input_shape[1:3] == (side, side)


@pytest.mark.parametrize('name', sorted(PRESETS))
def test_flag_file_matches_its_reproduce_preset(name):
  cfg = parse_flag_file(name)
  exp_name, label = PRESETS[name]
  exp = paper_experiments.EXPERIMENTS[exp_name]
  preset = exp.config(exp.setting(label), cfg.client_learning_rate)
  ours, theirs = cfg.to_json(), preset.to_json()  # to_json normalizes B ('10' -> 10).
  differing = {k: (v, theirs[k]) for k, v in ours.items()
               if k not in RUN_CHOICES and v != theirs[k]}
  assert not differing, f'{name} vs {exp_name}/{label}: {differing}'


def test_flag_file_batch_inf_and_bool_values():
  cfg = parse_flag_file('mnist_cnn_fedsgd_iid.flags')
  assert cfg.batch is None and cfg.algorithm == 'fedsgd' and cfg.local_epochs == 1
  assert cfg.personalized_eval is False


# One algorithm per kind of run is built (TFF computations traced, nothing trained): the
# RPN experiment's runs (ResNet-8: FedAvg, RPN, 8-bit, RPN + 8-bit, full kernels every 5th
# round when --rpn_full_every exists), FedPer K_P=2 on MobileNet-v1, FedGKT's ResNet-8/55.
BUILT = [('cifar10_rpn_resnet8', None), ('cifar10_fedper_fig2_k4', 'FedPer K_P=2'),
         ('cifar10_fedgkt_iid', 'FedGKT ResNet-8 + ResNet-55')]


@pytest.mark.parametrize('exp_name, label', BUILT)
def test_comparison_algorithms_build(exp_name, label, fake_data_dirs, tff_context):
  del tff_context
  comp = paper_comparisons.COMPARISONS[exp_name]
  runs = [comp.run(label)] if label else list(comp.runs)
  built = []
  for run in runs:
    if run.missing_flags():
      continue
    cfg = dataclasses.replace(comp.config(run, run.learning_rates[0], 0), data_dir=fake_data_dirs['cifar10'])
    data = experiment.load_federated_data(cfg)
    algorithm = experiment.build_algorithm(cfg, experiment.make_task(cfg, data))
    built.append((run.label, algorithm.name))
  assert built and all(name == comp.run(label_).overrides['algorithm'] for label_, name in built), built
