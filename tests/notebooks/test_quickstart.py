"""Executes notebooks/quickstart.ipynb top to bottom on tiny settings, on both of its paths.

A minimal papermill: code cells run in order in one namespace; the cell tagged
"parameters" is followed by the test's overrides. Shell/magic lines (% or !)
are not Python and are skipped.

* In-process path (MODE='auto' on this Python 3.11): FedSuite's Python API in
  the test process.
* CLI path (MODE='cli'), the one Colab's Python 3.12 kernel takes: the notebook
  runs in a separate kernel process in which TensorFlow, TFF, Keras and JAX
  cannot be imported (as on 3.12, where no TFF installs). Its environment is
  this test's own venv (VENV_DIR=sys.prefix, which matches the lock, so the
  notebook reuses it: nothing is downloaded or installed), and `python -m
  tff_programs.train` runs there as a subprocess. On Colab the same cell first
  creates VENV_DIR with uv's CPython 3.11.7 and the lock; creating an
  environment from a local python3.11 is tested in
  tests/tff_programs/test_notebook_env.py.
Both paths run the same settings with the same seed, so they must write the
same metrics.csv (but its timings) and make the same TFLite predictions.
"""

import csv
import importlib.abc
import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NOTEBOOK = os.path.join(REPO, 'notebooks', 'quickstart.ipynb')
TINY = {'ROUNDS': 2, 'NUM_CLIENTS': 6, 'CLIENT_FRACTION': 0.5, 'LOCAL_EPOCHS': 1}
# What a Python 3.12 kernel cannot import (no TFF there; the CLI path needs none of them).
NOT_IN_KERNEL = ('tensorflow', 'tensorflow_federated', 'keras', 'tf_keras', 'jax', 'jaxlib',
                 'tensorflow_model_optimization')
TIMING_COLUMNS = ('seconds', 'train_seconds')


def run_notebook(path, overrides):
  with open(path) as f:
    notebook = json.load(f)
  namespace = {'__name__': '__notebook__'}
  cwd = os.getcwd()
  os.chdir(REPO)
  try:
    for index, cell in enumerate(notebook['cells']):
      if cell['cell_type'] != 'code':
        continue
      source = ''.join(l for l in cell['source'] if not l.lstrip().startswith(('%', '!')))
      exec(compile(source, f'{path}:cell{index}', 'exec'), namespace)  # pylint: disable=exec-used
      if 'parameters' in cell['metadata'].get('tags', []):
        namespace.update(overrides)
  finally:
    os.chdir(cwd)
  return namespace


def metrics_without_timings(run_dir):
  with open(os.path.join(run_dir, 'metrics.csv'), newline='') as f:
    return [{k: v for k, v in row.items() if k not in TIMING_COLUMNS} for row in csv.DictReader(f)]


@pytest.fixture(scope='module')
def api_run(tmp_path_factory):
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  return run_notebook(NOTEBOOK, {**TINY, 'OUTPUT_DIR': str(tmp_path_factory.mktemp('api'))})


def test_in_process_path_runs_top_to_bottom(api_run):
  ns = api_run
  assert ns['IN_PROCESS'] is True and 'PYTHON' not in ns
  assert ns['summary']['rounds_completed'] == 2
  assert ns['rounds'] == [1, 2] and len(ns['accuracy']) == 2
  assert ns['accuracy'][-1] == pytest.approx(ns['summary']['final_eval_accuracy'])
  assert os.path.exists(os.path.join(ns['run_dir'], 'accuracy.png'))
  assert ns['report']['accuracy_gap'] <= 0.005
  assert len(ns['predicted']) == 8 and all(0 <= c <= 9 for c in ns['predicted'])
  assert len(ns['true']) == 8


def test_cli_path_in_a_kernel_without_tensorflow_matches_the_in_process_run(api_run, tmp_path):
  result_path = tmp_path / 'kernel.json'
  overrides = {**TINY, 'OUTPUT_DIR': str(tmp_path / 'cli'), 'MODE': 'cli',
               'VENV_DIR': sys.prefix, 'BASE_PYTHON': getattr(sys, '_base_executable', None)}
  proc = subprocess.run(
      [sys.executable, os.path.abspath(__file__), json.dumps(overrides), str(result_path)],
      capture_output=True, text=True, timeout=600, env={**os.environ, 'MPLBACKEND': 'Agg'},
      check=False)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  ns = json.loads(result_path.read_text())
  out = proc.stdout

  # The kernel never loaded TensorFlow & co.; it reused this venv (no install)
  # and drove the CLI there.
  assert ns['loaded_in_kernel'] == []
  assert ns['in_process'] is False
  assert ns['python'] == os.path.join(sys.prefix, 'bin', 'python')
  assert f'reusing {sys.prefix} (Python 3.11.' in out
  commands = [l for l in out.splitlines() if l.startswith('$ ')]
  assert len(commands) == 1  # no venv, pip or uv command: only train
  assert commands[0].startswith(f"$ {ns['python']} -m tff_programs.train --dataset=digits "
                                '--model=mnist_cnn --partition=shards --num_clients=6 '
                                '--client_fraction=0.5 --local_epochs=1 --batch_size=10 '
                                '--rounds=2 --eval_every=1 --output_dir=')
  assert commands[0].endswith(' --run_name=quickstart --target_accuracy=0.9 --noprogress')
  assert out.count('\noutputs: ') == 1

  # What it read back: summary.json, its export report, metrics.csv, the plot.
  run_dir = os.path.join(str(tmp_path / 'cli'), 'quickstart')
  assert ns['run_dir'] == run_dir and ns['summary']['rounds_completed'] == 2
  assert ns['report'] == ns['summary']['export']
  assert ns['report']['tflite_path'] == os.path.join(run_dir, 'model.tflite')
  assert ns['report']['accuracy_gap'] <= 0.005
  assert ns['rounds'] == [1, 2]
  assert os.path.exists(os.path.join(run_dir, 'accuracy.png'))

  # The same run as in-process: every metric but the timings, the accuracy
  # curve, the TFLite accuracy and predictions.
  api = api_run
  assert metrics_without_timings(run_dir) == metrics_without_timings(api['run_dir'])
  assert ns['accuracy'] == api['accuracy']
  assert ns['report']['tflite_accuracy'] == api['report']['tflite_accuracy']
  assert ns['summary']['final_eval_accuracy'] == api['summary']['final_eval_accuracy']
  assert (ns['predicted'], ns['true']) == (api['predicted'], api['true'])


def test_parameters_default_to_the_colab_path_settings():
  with open(NOTEBOOK) as f:
    cells = json.load(f)['cells']
  parameters = [c for c in cells if 'parameters' in c['metadata'].get('tags', [])]
  ns = {}
  exec(''.join(parameters[0]['source']), ns)  # pylint: disable=exec-used
  # 'auto' takes the CLI path on Colab's 3.12; None makes uv install CPython.
  assert (ns['MODE'], ns['VENV_DIR'], ns['BASE_PYTHON']) == ('auto', '.venv', None)


def test_notebook_has_a_parameters_cell_and_no_outputs_committed():
  with open(NOTEBOOK) as f:
    cells = json.load(f)['cells']
  assert sum('parameters' in c['metadata'].get('tags', []) for c in cells) == 1
  assert all(not c.get('outputs') for c in cells if c['cell_type'] == 'code')


class _NotInKernel(importlib.abc.MetaPathFinder):
  """Refuses NOT_IN_KERNEL imports, as a Python 3.12 kernel without TFF would."""

  def find_spec(self, name, path=None, target=None):
    del path, target
    if name.split('.')[0] in NOT_IN_KERNEL:
      raise ImportError(f'{name}: not importable in this kernel (a Python 3.12 stand-in)')
    return None


def _kernel_main(overrides_json, result_path):
  """The CLI-path kernel: runs the notebook, writes what the test checks as JSON."""
  sys.meta_path.insert(0, _NotInKernel())
  ns = run_notebook(NOTEBOOK, json.loads(overrides_json))
  result = {
      'in_process': ns['IN_PROCESS'], 'python': ns['PYTHON'], 'run_dir': ns['run_dir'],
      'summary': ns['summary'], 'report': ns['report'], 'rounds': ns['rounds'],
      'accuracy': ns['accuracy'], 'predicted': ns['predicted'], 'true': ns['true'],
      'loaded_in_kernel': sorted(m for m in sys.modules if m.split('.')[0] in NOT_IN_KERNEL),
  }
  with open(result_path, 'w') as f:
    json.dump(result, f)


if __name__ == '__main__':
  _kernel_main(sys.argv[1], sys.argv[2])
