"""FedAvg + RPN (and + 8-bit, and with full rounds) trains and reports what it transmits, per round and in total."""

import csv
import os
import subprocess
import sys

import pytest

from tff_programs import experiment

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# tiny_cnn on 8x8x1: conv 3x3x1x4 (36 + 4 bias), 2x2 max-pool, dense 4*4*4 -> 10
# (640 + 10): 690 params. RPN sends the conv kernel pooled to 1x1x1x4:
# 4 + 4 + 640 + 10 = 658 values.
FULL, POOLED = 690, 658


def run(tmp_path, **overrides):
  cfg = experiment.ExperimentConfig(**{**dict(
      dataset='synthetic', model='tiny_cnn', partition='iid', num_clients=4,
      client_fraction=0.5, local_epochs=5, batch_size=16, rounds=2, eval_every=1,
      client_learning_rate=0.3,
      output_dir=str(tmp_path), export=False), **overrides})
  result = experiment.run_experiment(cfg, show_progress=False, log=lambda *a: None)
  with open(f'{cfg.run_dir}/metrics.csv') as f:
    return result.summary, list(csv.DictReader(f))


@pytest.mark.parametrize('algorithm,aggregator,up_params,up_bytes_per_client', [
    ('fedavg', 'mean', FULL, FULL * 4),
    ('rpn', 'mean', POOLED, POOLED * 4),
    # 8-bit above 500 values: only the 640-value dense kernel: 640 + 8 bytes.
    ('fedavg', 'quantized', FULL, (36 + 4 + 10) * 4 + 640 + 8),
    ('rpn', 'quantized', POOLED, (4 + 4 + 10) * 4 + 640 + 8),
])
def test_transmission_per_round_and_total(tmp_path, algorithm, aggregator, up_params, up_bytes_per_client):
  quantized = {'quantization_threshold': 500} if aggregator == 'quantized' else {}
  summary, rows = run(tmp_path, algorithm=algorithm, aggregator=aggregator, **quantized)
  for row in rows:
    assert float(row['upload_params_per_client']) == up_params
    assert int(row['upload_bytes']) == 2 * up_bytes_per_client
    assert int(row['download_params']) == (POOLED if algorithm == 'rpn' else FULL)
  assert summary['upload_bytes_total'] == 2 * 2 * up_bytes_per_client
  assert summary['upload_params_per_client'] == up_params
  assert summary['upload_params_per_client_mean'] == up_params
  assert 'rpn_full_round' not in rows[0]  # Only with --rpn_full_every.
  assert summary['final_eval_accuracy'] > 0.2  # it trains (chance is 0.1)


@pytest.mark.parametrize('algorithm', ['fedavg', 'rpn'])
def test_quantized_runs_are_reproducible(tmp_path, algorithm):
  # Every tensor quantized (threshold 0), RPN with filter selection: identical
  # flags give identical metrics (quantization rounds to the nearest level;
  # TFF's stochastic rounding is unseeded).
  untimed = lambda rows: [{k: v for k, v in r.items() if 'seconds' not in k} for r in rows]
  flags = dict(algorithm=algorithm, aggregator='quantized', quantization_threshold=0,
               **({'rpn_threshold': 0.01} if algorithm == 'rpn' else {}))
  _, rows_a = run(tmp_path / 'a', **flags)
  _, rows_b = run(tmp_path / 'b', **flags)
  assert len(rows_a) == 2 and untimed(rows_a) == untimed(rows_b)


def test_rpn_aggregator_composes_with_quantization_and_fedper(tmp_path):
  # --aggregator=rpn+quantized under FedAvg (n_k weights) sends what the RPN
  # preset with the quantized aggregator sends; under FedPer, RPN pools only
  # the base: tiny_cnn with its dense 'logits' block personal leaves the conv
  # (pooled 36 -> 4) and its bias: 4 + 4 = 8 values per client.
  quantized = dict(quantization_threshold=500)
  _, stacked = run(tmp_path / 'a', algorithm='fedavg', aggregator='rpn+quantized', **quantized)
  _, preset = run(tmp_path / 'b', algorithm='rpn', aggregator='quantized', rpn_weighting='num_examples',
                  **quantized)
  same = lambda rows: [{k: v for k, v in r.items() if 'seconds' not in k} for r in rows]
  assert same(stacked) == same(preset)
  _, rows = run(tmp_path / 'c', algorithm='fedper', aggregator='rpn', personal_blocks=1)
  assert [float(r['upload_params_per_client']) for r in rows] == [8.0, 8.0]
  assert [int(r['download_params']) for r in rows] == [8, 8]
  # Each client downloads the full base (36 + 4 values) once, before its first round.
  assert int(rows[0]['initial_download_bytes']) == 2 * 40 * 4


def untimed(rows):
  return [{k: v for k, v in r.items() if 'seconds' not in k} for r in rows]


# --rpn_full_every=2: rounds 1 and 3 pooled, round 2 full (every value, no pooling).
# (values, bytes) one client uploads per round.
@pytest.mark.parametrize('flags,per_client', [
    (dict(algorithm='rpn'), [(POOLED, POOLED * 4), (FULL, FULL * 4), (POOLED, POOLED * 4)]),
    # 8-bit above 500 values (the 640-value dense kernel: 640 + 8 bytes); the
    # full conv kernel (36 values) stays float32 like the pooled one.
    (dict(algorithm='fedavg', aggregator='rpn+quantized', quantization_threshold=500),
     [(POOLED, (4 + 4 + 10) * 4 + 648), (FULL, (36 + 4 + 10) * 4 + 648), (POOLED, (4 + 4 + 10) * 4 + 648)]),
    # FedPer with the dense block personal: the base is the conv (36 -> 4) and its bias.
    (dict(algorithm='fedper', aggregator='rpn', personal_blocks=1), [(8, 32), (40, 160), (8, 32)]),
])
def test_full_every_2_sends_round_2_full(tmp_path, flags, per_client):
  summary, rows = run(tmp_path, rounds=3, rpn_full_every=2, **flags)
  assert [(float(r['upload_params_per_client']), int(r['upload_bytes'])) for r in rows] == [
      (values, 2 * b) for values, b in per_client]
  assert [int(r['download_params']) for r in rows] == [values for values, _ in per_client]
  # The broadcast is float32, to both clients; first-time clients also download the model once.
  assert [int(r['download_bytes']) - int(r['initial_download_bytes']) for r in rows] == [
      2 * 4 * values for values, _ in per_client]
  assert summary['upload_bytes_total'] == 2 * sum(b for _, b in per_client)
  assert [int(r['rpn_full_round']) for r in rows] == [0, 1, 0]
  # The summary: the last (pooled) round's values, and the mean over the three rounds.
  assert summary['upload_params_per_client'] == per_client[2][0]
  assert summary['upload_params_per_client_mean'] == pytest.approx(sum(v for v, _ in per_client) / 3)


def test_resume_continues_the_full_round_schedule(tmp_path):
  # Cut after round 1: the checkpointed aggregator state says one round is done,
  # so the resumed run's round 2 is full (a counter restarting at 0 would pool it).
  flags = dict(algorithm='rpn', rpn_full_every=2, rounds=3, run_name='run')
  _, uninterrupted = run(tmp_path / 'full', **flags)
  run(tmp_path / 'cut', **{**flags, 'rounds': 1})
  _, resumed = run(tmp_path / 'cut', **flags, resume=True)
  assert [float(r['upload_params_per_client']) for r in resumed] == [POOLED, FULL, POOLED]
  assert untimed(resumed) == untimed(uninterrupted)


def test_bad_full_every_is_a_one_line_config_error(tmp_path):
  for value in (-1, 2.5):
    with pytest.raises(experiment.ConfigError) as e:
      run(tmp_path, algorithm='rpn', rpn_full_every=value)
    assert str(e.value) == f'--rpn_full_every={value}: must be an integer >= 0 (0 = never)'
  with pytest.raises(experiment.ConfigError, match=r'^--rpn_full_every=2: --algorithm=fedavg --aggregator=mean does not use it'):
    run(tmp_path, algorithm='fedavg', rpn_full_every=2)


@pytest.mark.parametrize('value,code,line', [
    ('-1', 2, 'train: error: --rpn_full_every=-1: must be an integer >= 0 (0 = never)'),
    # absl parses integer flags; train.py reports its error in one line, too.
    ('2.5', 2, "train: error: flag --rpn_full_every=2.5: invalid literal for int() with base 10: '2.5'"),
])
def test_cli_flag_errors_are_one_line(tmp_path, value, code, line):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3', PYTHONPATH=REPO)
  proc = subprocess.run([sys.executable, '-m', 'tff_programs.train', '--algorithm=rpn', '--dataset=synthetic',
                         f'--rpn_full_every={value}', f'--output_dir={tmp_path}'],
                        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == code
  assert [l for l in proc.stderr.splitlines() if 'rpn_full_every' in l] == [line]
  assert 'Traceback' not in proc.stderr and not os.listdir(tmp_path)
