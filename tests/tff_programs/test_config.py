"""The flat configuration: validation of every section, refusal of unused options."""

import dataclasses

import pytest

from tff_programs import config
from tff_programs import options
from tff_programs import sections
from tff_programs.algorithms import ALGORITHMS


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
    ({'worker_concurrency': -2}, '--worker_concurrency=-2: must be -1 (all at once), 0 (one per CPU core) or an integer >= 1'),
])
def test_ignored_or_unknown_settings_are_refused_in_one_line(overrides, message):
  with pytest.raises(options.ConfigError) as raised:
    config.validate(config.ExperimentConfig(**overrides))
  assert str(raised.value).startswith(message)
  assert '\n' not in str(raised.value)




def test_every_option_is_one_flat_field_with_its_sections_default():
  flat = config.ExperimentConfig()
  declared = options.fields_of(config.all_sections())
  assert set(declared) == set(config.ExperimentConfig.__dataclass_fields__)
  for name, (field, _) in declared.items():
    assert getattr(flat, name) == field.default, name
  # Shared options are one flag: --server_learning_rate (FedAvg, FedSGD, RPN, FedProx).
  owners = [s.name for s in ALGORITHMS.values() if 'server_learning_rate' in s.options.__dataclass_fields__]
  assert owners == ['fedavg', 'fedsgd', 'rpn', 'fedprox']


def test_sections_come_back_typed_from_the_flat_config():
  cfg = config.ExperimentConfig(algorithm='fedper', personal_blocks=2, client_learning_rate=0.3,
                                batch_size='inf')
  training = cfg.section(sections.ClientTrainingOptions)
  assert (training.client_learning_rate, training.batch) == (0.3, None)
  assert cfg.section(ALGORITHMS['fedper'].options).personal_blocks == 2
  assert cfg.to_json()['batch_size'] == 'inf'
  assert config.from_flat({**cfg.to_json(), 'not_a_flag': 1}) == cfg


def test_sections_used_follow_the_algorithm_and_the_aggregator_stack():
  used = lambda **kw: {cls.__name__ for cls in config.sections_used(config.ExperimentConfig(**kw))}
  assert 'ModelOptions' in used() and 'ModelOptions' not in used(algorithm='fedgkt')
  assert {'RPNOptions', 'QuantizationOptions'} <= used(aggregator='rpn+quantized')
  assert 'QuantizationOptions' not in used(algorithm='fedgkt')


def test_a_shared_flag_needs_the_same_default_everywhere():
  class A(options.Options):
    x: int = options.option(1, 'x')

  class B(options.Options):
    x: int = options.option(2, 'x')

  with pytest.raises(TypeError, match="option 'x' has default 1 in A but 2 in B"):
    options.fields_of([A, B])


def test_flags_are_generated_grouped_with_types_and_defaults():
  from absl import flags
  values = flags.FlagValues()
  groups = config.flag_groups()
  defined = options.define_flags(groups, values, overrides={'batch_size': 'string'})
  assert set(defined) == set(config.ExperimentConfig.__dataclass_fields__)
  assert defined['gkt_kd'] == 'Algorithm: fedgkt (He et al. 2020)' and defined['rounds'] == 'Run'
  values(['prog', '--rounds=7', '--batch_size=inf', '--noexport', '--gkt_alpha=0.5'])
  assert (values.rounds, values.batch_size, values.export, values.gkt_alpha) == (7, 'inf', False, 0.5)
  text = options.group_help(values, [title for title, _ in groups])
  assert text.index('Client training') < text.index('Algorithm: fedgkt') < text.index('--gkt_kd')
