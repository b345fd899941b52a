"""End to end: `python -m tff_programs.train` on tiny synthetic data.

Subprocesses are what a user runs: they prove the CLI, the files it writes, the
Ctrl-C path, `--resume`, one-line errors, and that no worker_binary survives.
"""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tff_programs import executor_sandbox
from tff_programs import runtime

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = [
    '--dataset=synthetic', '--model=tiny_mlp', '--partition=iid', '--num_clients=4',
    '--client_fraction=0.5', '--local_epochs=1', '--batch_size=16', '--eval_every=1',
    '--client_learning_rate=0.1', '--seed=3', '--progress=false',
]
TIME_COLUMNS = ('seconds', 'train_seconds')


def _sigint_as_in_a_terminal():
  signal.signal(signal.SIGINT, signal.SIG_DFL)


def train(args, *, wait=True, timeout=300):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3', PYTHONPATH=REPO)
  # SIGINT as in a terminal: under a background job (`cmd &`, as CI may run the
  # tests) it is ignored, children inherit that, and Ctrl-C would never arrive.
  proc = subprocess.Popen([sys.executable, '-m', 'tff_programs.train', *args],
                          cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, preexec_fn=_sigint_as_in_a_terminal)
  if not wait:
    return proc
  out, err = proc.communicate(timeout=timeout)
  return proc.returncode, out, err


def workers_of(pid):
  return runtime.tagged_worker_pids(started_by=pid)


def rows(run_dir):
  with open(os.path.join(run_dir, 'metrics.csv')) as f:
    return [{k: v for k, v in r.items() if k not in TIME_COLUMNS} for r in csv.DictReader(f)]


@pytest.fixture(scope='module')
def finished_run(tmp_path_factory):
  out = tmp_path_factory.mktemp('runs')
  # E=5 so the model is trained (quantization must not flip near-tied logits).
  code, stdout, stderr = train([*TINY, '--rounds=3', f'--output_dir={out}', '--run_name=smoke',
                                '--target_accuracy=0.3', '--local_epochs=5'])
  return out / 'smoke', code, stdout, stderr


def test_smoke_writes_every_output(finished_run):
  run_dir, code, stdout, stderr = finished_run
  assert code == 0, stderr[-3000:]
  assert f'outputs: {run_dir}/ (metrics.csv, summary.json, tensorboard/, checkpoints/, model.keras, model.tflite)' in stdout
  for name in ('config.json', 'metrics.csv', 'summary.json', 'label_histogram.csv',
               'model.keras', 'model.tflite', 'export_model.json', 'tff_worker.log'):
    assert (run_dir / name).exists(), name
  assert (run_dir / 'model' / 'saved_model.pb').exists()
  assert (run_dir / 'checkpoints' / 'server_state_3.npz').is_file()
  assert list((run_dir / 'tensorboard').glob('events.out.tfevents.*'))
  metric_rows = rows(run_dir)
  assert [r['round'] for r in metric_rows] == ['1', '2', '3']
  for r in metric_rows:
    assert r['clients'] == '2' and float(r['train_loss']) > 0 and r['eval_accuracy']
    assert int(r['upload_bytes']) == 2 * 4 * int(r['upload_params_per_client'])
  summary = json.loads((run_dir / 'summary.json').read_text())
  assert summary['rounds_completed'] == 3
  assert summary['best_eval_accuracy'] == max(float(r['eval_accuracy']) for r in metric_rows)
  assert 'rounds_to_target' in summary and summary['target_accuracy'] == 0.3
  assert summary['export']['accuracy_gap'] <= 0.005
  assert summary['final_eval_accuracy'] >= 0.5, 'chance is 0.1: training must work'
  config = json.loads((run_dir / 'config.json').read_text())
  assert config['model'] == 'tiny_mlp' and config['batch_size'] == 16


def test_export_cli_quantized(finished_run):
  run_dir = finished_run[0]
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3', PYTHONPATH=REPO)
  proc = subprocess.run([sys.executable, '-m', 'tff_programs.export', f'--run_dir={run_dir}',
                         '--quantize'], cwd=REPO, env=env, capture_output=True, text=True,
                        timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  report = json.loads((run_dir / 'export_model.json').read_text())
  assert report['quantized'] and (run_dir / 'model_quant.tflite').exists()
  assert abs(report['keras_accuracy'] - report['tflite_accuracy']) <= 0.005


def test_existing_run_without_resume_is_a_one_line_error(finished_run):
  run_dir = finished_run[0]
  code, _, stderr = train([*TINY, '--rounds=3', f'--output_dir={run_dir.parent}', '--run_name=smoke'])
  assert code == 2
  lines = [l for l in stderr.splitlines() if l.startswith('train: error:')]
  assert len(lines) == 1 and '--resume' in lines[0]


@pytest.mark.parametrize('flag,expected', [
    ('--client_fraction=0', '--client_fraction=0.0: must be in (0, 1]'),
    ('--batch_size=0', "--batch_size='0': must be a positive integer or 'inf'"),
    ('--model=resnet9000', "--model='resnet9000': unknown; allowed:"),
    ('--max_train_examples=-5', '--max_train_examples=-5: must be an integer >= 0'),
    ('--learning_rate_decay_from=0', '--learning_rate_decay_from=0: must be an integer >= 1'),
    ('--rounds=2.5', "flag --rounds=2.5: invalid literal for int() with base 10: '2.5'"),
    ('--no_such_flag=1', "Unknown command line flag 'no_such_flag'"),
])
def test_bad_flag_is_one_line_error(tmp_path, flag, expected):
  code, stdout, stderr = train([*TINY, '--rounds=1', f'--output_dir={tmp_path}', flag])
  assert code == 2
  assert stderr.strip().splitlines()[-1].startswith(f'train: error: {expected}'), stderr[-2000:]
  assert 'Traceback' not in stderr
  assert not os.listdir(tmp_path), 'a rejected run must not create a run folder'


def test_ctrl_c_saves_then_resume_equals_uninterrupted(tmp_path):
  rounds = 30  # 0.1-0.2 s a round on 2 cores: Ctrl-C after round 3 lands seconds before the end.
  full = train([*TINY, f'--rounds={rounds}', f'--output_dir={tmp_path}', '--run_name=full',
                '--checkpoint_every=5'])
  assert full[0] == 0, full[2][-3000:]
  proc = train([*TINY, f'--rounds={rounds}', f'--output_dir={tmp_path}', '--run_name=cut',
                '--checkpoint_every=5'], wait=False)
  metrics = tmp_path / 'cut' / 'metrics.csv'
  deadline = time.monotonic() + 240

  def wait_for_rounds(n):
    while time.monotonic() < deadline and proc.poll() is None:
      if metrics.exists() and len(metrics.read_text().splitlines()) >= n + 1:  # + header
        return
      time.sleep(0.02)

  wait_for_rounds(1)
  # Mid-run, as in `make train`: the executor is bound on no address of this
  # machine's network namespace (it lives in its own, reached by a Unix socket).
  # (Checked after round 1, so that the slow process scan is not what delays Ctrl-C.)
  [worker] = workers_of(proc.pid)
  owned = executor_sandbox.socket_inodes(worker)
  assert owned, 'the worker holds its listening socket'
  assert [s for s in executor_sandbox.read_listening() if s[2] in owned] == []
  assert os.readlink(f'/proc/{worker}/ns/net') != os.readlink('/proc/self/ns/net')
  wait_for_rounds(3)
  assert proc.poll() is None, 'the run ended before the test could press Ctrl-C'
  proc.send_signal(signal.SIGINT)
  _, stderr = proc.communicate(timeout=120)
  assert proc.returncode == 130, stderr[-3000:]
  assert 'Run the same command with --resume' in stderr
  saved = sorted(int(p.name[len('server_state_'):-len('.npz')])
                 for p in (tmp_path / 'cut' / 'checkpoints').glob('server_state_*.npz'))
  done = [int(r['round']) for r in rows(tmp_path / 'cut')]
  # Cut mid-run; the checkpoint is exactly the last round with a row: never ahead, never behind.
  assert 3 <= done[-1] < rounds and done == list(range(1, done[-1] + 1))
  assert saved and saved[-1] == done[-1]
  assert workers_of(proc.pid) == [], 'worker_binary outlived Ctrl-C'
  resumed = train([*TINY, f'--rounds={rounds}', f'--output_dir={tmp_path}', '--run_name=cut',
                   '--checkpoint_every=5', '--resume'])
  assert resumed[0] == 0, resumed[2][-3000:]
  assert rows(tmp_path / 'cut') == rows(tmp_path / 'full')
  summaries = [json.loads((tmp_path / n / 'summary.json').read_text()) for n in ('full', 'cut')]
  for key in ('final_eval_accuracy', 'best_eval_accuracy', 'rounds_completed'):
    assert summaries[0][key] == summaries[1][key]


def test_missing_data_file_is_one_line_error_and_no_worker(tmp_path):
  code, _, stderr = train(['--dataset=mnist', f'--data_dir={tmp_path}', '--rounds=1',
                           f'--output_dir={tmp_path}/runs'])
  assert code == 2
  last = stderr.strip().splitlines()[-1]
  assert last.startswith('train: error:') and 'train-images-idx3-ubyte.gz' in last


def test_outputs_line_lists_only_what_the_run_wrote(tmp_path):
  from tff_programs import train as train_cli
  for name in ('metrics.csv', 'summary.json'):
    (tmp_path / name).write_text('')
  (tmp_path / 'checkpoints').mkdir()
  assert train_cli.listed_outputs(str(tmp_path)) == ['metrics.csv', 'summary.json', 'checkpoints/']
  for cid in ('client_000', 'client_001', 'client_002'):
    (tmp_path / f'model_{cid}.tflite').write_text('')
  (tmp_path / 'model_client_000.keras').write_text('')
  assert train_cli.listed_outputs(str(tmp_path))[3:] == ['model_client_000.keras', '3 .tflite files']


def test_a_diverging_run_stops_at_the_first_bad_round_with_one_line(tmp_path):
  # eta = 0.1 * 1e5**(r-1): the weights grow with the rate until they overflow.
  code, _, stderr = train([*TINY, '--rounds=12', f'--output_dir={tmp_path}', '--run_name=div',
                           '--learning_rate_decay=100000', '--checkpoint_every=100',
                           '--progress=false'])
  assert code == 3, stderr[-3000:]
  assert stderr.strip().splitlines() == [l for l in stderr.strip().splitlines()
                                         if l.startswith('round ')] + [stderr.strip().splitlines()[-1]]
  error = stderr.strip().splitlines()[-1]
  assert error.startswith('train: error: round ') and ' diverged (' in error
  bad = int(error.split('round ')[1].split()[0])
  assert 2 <= bad <= 12
  assert f'at learning rate {0.1 * 1e5 ** (bad - 1):g}:' in error
  done = [int(r['round']) for r in rows(tmp_path / 'div')]
  assert done == list(range(1, bad))
  saved = sorted(int(p.name[len('server_state_'):-len('.npz')])
                 for p in (tmp_path / 'div' / 'checkpoints').glob('server_state_*.npz'))
  assert saved == [bad - 1]
  summary = json.loads((tmp_path / 'div' / 'summary.json').read_text())
  assert summary['rounds_completed'] == bad - 1


@pytest.mark.parametrize('algorithm', ['fedavg', 'fedper'])
def test_two_worker_processes_give_the_local_runs_metrics(tmp_path, algorithm):
  from tff_programs import worker as worker_lib
  procs = [worker_lib.spawn() for _ in range(2)]
  try:
    common = [*TINY, '--rounds=2', f'--output_dir={tmp_path}', f'--algorithm={algorithm}',
              '--export=false']
    local = train([*common, '--run_name=local'])
    assert local[0] == 0, local[2][-3000:]
    remote = train([*common, '--run_name=remote',
                    f'--workers={",".join(p.address for p in procs)}'])
    assert remote[0] == 0, remote[2][-3000:]
  finally:
    for p in procs:
      p.stop()
  local_rows, remote_rows = rows(tmp_path / 'local'), rows(tmp_path / 'remote')
  traffic = lambda row: {k: v for k, v in row.items() if not k.startswith('worker')}
  assert [traffic(r) for r in remote_rows] == local_rows  # Bit for bit.
  for row in remote_rows:
    assert int(row['worker0_sent_bytes']) > 0 and int(row['worker1_sent_bytes']) > 0
    assert int(row['worker_sent_bytes']) == (int(row['worker0_sent_bytes'])
                                             + int(row['worker1_sent_bytes']))
