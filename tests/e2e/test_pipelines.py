"""CIFAR (augmented 24x24 crops) and Shakespeare (padding masked) train end to end.

Tiny fake files in the real formats go through the real loaders, the dataset
preprocessing, FedAvg, evaluation and the checked TFLite export.
"""

import csv
import json
import os
import pickle
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from datasets import shakespeare
from tff_programs import experiment

QUIET = dict(show_progress=False, log=lambda *a: None)


def write_fake_cifar10(directory, per_batch=8, test=10):
  folder = os.path.join(directory, 'cifar-10-batches-py')
  os.makedirs(folder)
  rng = np.random.default_rng(0)

  def batch(n):
    images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    data = images.transpose(0, 3, 1, 2).reshape(n, -1)
    return pickle.dumps({b'data': data, b'labels': list(rng.integers(0, 10, n))}, protocol=2)

  for i in range(1, 6):
    with open(os.path.join(folder, f'data_batch_{i}'), 'wb') as f:
      f.write(batch(per_batch))
  with open(os.path.join(folder, 'test_batch'), 'wb') as f:
    f.write(batch(test))


def rows(run_dir):
  with open(os.path.join(run_dir, 'metrics.csv')) as f:
    return list(csv.DictReader(f))


def test_cifar_pipeline_trains_on_24x24_crops_and_exports(tmp_path):
  write_fake_cifar10(tmp_path)
  cfg = experiment.ExperimentConfig(
      dataset='cifar10', data_dir=str(tmp_path), model='cifar_cnn', partition='iid',
      num_clients=4, client_fraction=0.5, local_epochs=1, batch_size=5, rounds=2,
      eval_every=1, output_dir=str(tmp_path / 'runs'), learning_rate_decay=0.9)
  result = experiment.run_experiment(cfg, **QUIET)
  metric_rows = rows(result.run_dir)
  assert len(metric_rows) == 2 and metric_rows[1]['eval_accuracy']
  assert float(metric_rows[1]['learning_rate']) == pytest.approx(0.05 * 0.9)
  config = json.load(open(os.path.join(result.run_dir, 'config.json')))
  assert config['dataset'] == 'cifar10'
  # The model takes the 24x24 crops (the TF tutorial CNN: 1,068,298 parameters).
  assert result.export_report['accuracy_gap'] <= 0.005
  import tensorflow as tf
  model = tf.keras.models.load_model(os.path.join(result.run_dir, 'model.keras'), compile=False)
  assert model.input_shape == (None, 24, 24, 3) and model.count_params() == 1_068_298


FAKE_PLAY = textwrap.dedent('''\
    1600

    THE TRAGEDY OF FOO

    by William Shakespeare

    ACT I. SCENE 1.
    A room

      KING. One long line of the king that goes on and on for a while, friends.
        A second line of the king, spoken slowly and at some length too.
      QUEEN. The queen answers with a line of her own, quite long as well.
        And another line, for the test split of the queen, at the end here.
      KING. Yet more words from the king, to fill the training set a little.
        The king's last line.
      QUEEN. The queen's last line, which is short.

    THE END
    ''')


def test_shakespeare_pipeline_masks_padding(tmp_path):
  (tmp_path / '100.txt').write_text(FAKE_PLAY)
  cfg = experiment.ExperimentConfig(
      dataset='shakespeare', data_dir=str(tmp_path), model='char_lstm', partition='natural',
      num_clients=2, client_fraction=1.0, local_epochs=1, batch_size=4, rounds=1,
      client_learning_rate=1.0, eval_every=1, output_dir=str(tmp_path / 'runs'))
  result = experiment.run_experiment(cfg, **QUIET)
  metric_rows = rows(result.run_dir)
  assert metric_rows[0]['clients'] == '2'
  # eval_accuracy scores the real characters only: recomputed from the
  # exported model's predictions, the 101 padding positions excluded.
  model = tf.keras.models.load_model(os.path.join(result.run_dir, 'model.keras'), compile=False)
  data = shakespeare.load_shakespeare(str(tmp_path))
  predictions = model.predict(data.x_test, verbose=0).argmax(-1)
  real = data.y_test != shakespeare.PAD_ID
  assert (real.sum(), real.size) == (59, 160)
  assert float(metric_rows[0]['eval_accuracy']) == pytest.approx(
      (predictions == data.y_test)[real].mean(), abs=1e-6)
  assert float(metric_rows[0]['eval_accuracy']) != pytest.approx(
      (predictions == data.y_test).mean(), abs=1e-3)
  assert result.export_report['accuracy_gap'] <= 0.005


def test_a_client_beyond_tffs_100_mib_dataset_limit_trains(tmp_path):
  # One client of 9,000 CIFAR images: 110.6 MB as float32, past the 100 MiB TFF
  # refuses for a dataset serialized into a call. Kept uint8 and read from its
  # file in the worker, its request holds only the example order.
  write_fake_cifar10(tmp_path, per_batch=1800, test=10)
  cfg = experiment.ExperimentConfig(
      dataset='cifar10', data_dir=str(tmp_path), model='tiny_cnn', partition='iid',
      num_clients=1, client_fraction=1.0, local_epochs=1, batch_size='inf', rounds=1,
      eval_every=1, export=False, output_dir=str(tmp_path / 'runs'))
  result = experiment.run_experiment(cfg, **QUIET)
  row = rows(result.run_dir)[0]
  assert int(row['examples']) == 9000 and int(row['non_finite_clients']) == 0
  assert np.isfinite(float(row['train_loss']))
  assert not os.path.exists(os.path.join(result.run_dir, 'client_data'))  # removed at the end
