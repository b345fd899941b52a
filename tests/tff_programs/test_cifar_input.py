"""--cifar_input: one data option, refused off CIFAR, looked up by experiment.make_task."""

import os
import pickle

import numpy as np
import pytest
import tensorflow as tf

from datasets import preprocessing
from tff_programs import config
from tff_programs import experiment
from tff_programs import options
from tff_programs import sections


def test_default_is_the_fedavg_papers_pipeline_and_pad32_is_allowed_for_cifar():
  assert config.ExperimentConfig().cifar_input == 'crop24'
  for dataset in ('cifar10', 'cifar100'):
    assert sections.DataOptions(dataset=dataset, cifar_input='pad32').cifar_input == 'pad32'
  config.validate(config.ExperimentConfig(dataset='cifar10', model='resnet8', cifar_input='pad32'))


@pytest.mark.parametrize('overrides, message', [
    ({'dataset': 'mnist', 'cifar_input': 'pad32'},
     '--cifar_input=pad32: only for --dataset=cifar10 or cifar100 (not mnist); leave it at crop24'),
    ({'dataset': 'synthetic', 'cifar_input': 'pad32'},
     '--cifar_input=pad32: only for --dataset=cifar10 or cifar100 (not synthetic); leave it at crop24'),
    ({'dataset': 'cifar10', 'cifar_input': 'pad'}, "--cifar_input='pad': allowed: crop24, pad32"),
])
def test_refusals_are_one_line(overrides, message):
  with pytest.raises(options.ConfigError) as raised:
    config.validate(config.ExperimentConfig(**overrides))
  assert str(raised.value) == message


def write_fake_cifar10(directory, per_batch=6):
  folder = os.path.join(directory, 'cifar-10-batches-py')
  os.makedirs(folder)
  rng = np.random.default_rng(0)
  for i in range(1, 6):
    batch = {b'data': rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
             b'labels': [int(v) for v in np.arange(per_batch) % 10]}
    with open(os.path.join(folder, f'data_batch_{i}'), 'wb') as f:
      pickle.dump(batch, f, protocol=2)


@pytest.mark.parametrize('cifar_input, side', [('crop24', 24), ('pad32', 32)])
def test_make_task_uses_the_chosen_pipeline(tmp_path, cifar_input, side):
  write_fake_cifar10(str(tmp_path))
  cfg = experiment.ExperimentConfig(dataset='cifar10', data_dir=str(tmp_path), model='resnet8',
                                    partition='iid', num_clients=2, batch_size=5, local_epochs=1,
                                    cifar_input=cifar_input)
  data = experiment.load_federated_data(cfg)
  task = experiment.make_task(cfg, data)
  assert task.element_spec['x'].shape.as_list() == [None, side, side, 3]
  assert task.element_spec['x'].dtype == tf.float32
  assert task.model_builder().input_shape == (None, side, side, 3)
  expected = preprocessing.preprocessing_for('cifar10', cifar_input=cifar_input)
  x_test = data.central_test[0][:2]
  np.testing.assert_array_equal(task.preprocessing.eval_map(tf.constant(x_test)).numpy(),
                                expected.eval_map(tf.constant(x_test)).numpy())
  # The held-out test batch keeps its 32x32 images; only the pipeline differs.
  assert data.central_test[0].shape[1:] == (32, 32, 3)
  # Training batches (4 train batches x 6 / 2 clients = 12 examples, B=5) come from the train map.
  cid = data.client_ids[0]
  batches = list(task.data.train_dataset(cid, 1))
  assert [b['x'].shape.as_list() for b in batches] == [[5, side, side, 3]] * 2 + [[2, side, side, 3]]
  again = list(task.data.train_dataset(cid, 1))
  np.testing.assert_array_equal(batches[0]['x'].numpy(), again[0]['x'].numpy())
