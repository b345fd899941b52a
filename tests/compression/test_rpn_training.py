"""FedAvg + RPN (and + 8-bit) trains and reports what it transmits, per round and in total."""

import csv

import pytest

from tff_programs import experiment

# tiny_cnn on 8x8x1: conv 3x3x1x4 (36 + 4 bias), 2x2 max-pool, dense 4*4*4 -> 10
# (640 + 10): 690 params. RPN sends the conv kernel pooled to 1x1x1x4:
# 4 + 4 + 640 + 10 = 658 values.
FULL, POOLED = 690, 658


def run(tmp_path, **overrides):
  cfg = experiment.ExperimentConfig(
      dataset='synthetic', model='tiny_cnn', partition='iid', num_clients=4,
      client_fraction=0.5, local_epochs=5, batch_size=16, rounds=2, eval_every=1,
      client_learning_rate=0.3,
      output_dir=str(tmp_path), export=False, **overrides)
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
