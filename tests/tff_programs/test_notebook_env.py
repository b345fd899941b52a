"""The notebook's two paths: which one, the environment commands, the CLI and its results.

The environment test creates a real virtual environment from this machine's
Python 3.11 (what the notebook's BASE_PYTHON does) and installs a tiny lock of
hand-made wheels from a local folder, so it needs no network and no
TensorFlow install. On Colab the interpreter comes from uv instead (commands
asserted exactly below) and the lock is requirements.txt.
"""

import base64
import hashlib
import json
import os
import subprocess
import sys
import zipfile

import pytest

from tff_programs import notebook_env as ne

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.parametrize('version, mode', [
    ((3, 12, 1), 'cli'), ((3, 13, 0), 'cli'), ((3, 8, 18), 'cli'),
    ((3, 9, 0), 'api'), ((3, 10, 13), 'api'), ((3, 11, 7), 'api'),
])
def test_auto_mode_is_in_process_exactly_on_python_3_9_to_3_11(version, mode):
  assert ne.choose_mode('auto', version) == mode


def test_cli_mode_is_allowed_anywhere_and_api_only_where_tff_imports():
  assert ne.choose_mode('cli', (3, 11, 7)) == 'cli'
  assert ne.choose_mode('api', (3, 9, 1)) == 'api'
  with pytest.raises(ne.NotebookEnvError) as e:
    ne.choose_mode('api', (3, 12, 1))
  assert str(e.value) == ("MODE='api': TFF 0.87 needs Python 3.9-3.11 and this kernel runs "
                          "3.12.1; use MODE='auto' or 'cli'")
  with pytest.raises(ne.NotebookEnvError, match=r"^MODE='API': allowed: auto, api, cli$"):
    ne.choose_mode('API', (3, 11, 7))


def test_the_pinned_python_is_a_3_11_the_api_path_supports():
  version = tuple(int(v) for v in ne.PYTHON_VERSION.split('.'))
  assert len(version) == 3 and version[:2] == (3, 11)


def test_lock_parsing_and_mismatches():
  lock = ne.parse_lock('# a comment\nabsl-py==1.4.0\n\ntensorflow==2.14.1  # pinned\n')
  assert lock == {'absl-py': '1.4.0', 'tensorflow': '2.14.1'}
  assert ne.lock_mismatches(lock, {'absl-py': '1.4.0', 'tensorflow': '2.14.1', 'x': '1'}) == []
  assert ne.lock_mismatches(lock, {'absl-py': '2.0.0', 'tensorflow': None}) == [
      'absl-py 2.0.0 != 1.4.0', 'tensorflow missing']
  with pytest.raises(ne.NotebookEnvError, match=r"^lock line 'numpy>=1': every line must pin"):
    ne.parse_lock('numpy>=1\n')


def test_the_repository_lock_parses_to_exact_pins():
  with open(os.path.join(REPO, 'requirements.txt')) as f:
    lock = ne.parse_lock(f.read())
  pins = [l for l in open(os.path.join(REPO, 'requirements.txt')).read().splitlines()
          if l.strip() and not l.startswith('#')]
  assert len(lock) == len(pins)
  # The header comment mentions tensorflow-federated==0.87.0: only the pin counts.
  assert lock['tensorflow_federated'] == '0.87.0' and 'tensorflow-federated' not in lock
  assert lock['jax'] == '0.4.13'


LOCK = {'absl-py': '1.4.0', 'numpy': '1.25.2'}


def test_colab_path_commands_install_uv_then_its_pinned_cpython_then_the_lock(tmp_path):
  venv = str(tmp_path / 'env')
  commands = ne.env_commands(venv, None, LOCK, lock_path='requirements.txt',
                             kernel_python='/usr/bin/python3')
  python = os.path.join(venv, 'bin', 'python')
  assert commands == [
      ['/usr/bin/python3', '-m', 'pip', 'install', '--quiet', 'uv==0.13.9'],
      ['/usr/bin/python3', '-m', 'uv', 'python', 'install', '3.11.7'],
      ['/usr/bin/python3', '-m', 'uv', 'venv', '--seed', '--managed-python', '--python', '3.11.7',
       venv],
      [python, '-m', 'pip', 'install', '--quiet', '--upgrade', 'pip'],
      [python, '-m', 'pip', 'install', '--quiet', '--no-deps', '-r', 'requirements.txt'],
  ]


def test_local_python_commands_are_the_makefiles(tmp_path):
  venv = str(tmp_path / 'env')
  python = os.path.join(venv, 'bin', 'python')
  assert ne.env_commands(venv, None, LOCK, base_python='/opt/py/bin/python3.11',
                         pip_args=('--no-index',)) == [
      ['/opt/py/bin/python3.11', '-m', 'venv', venv],
      [python, '-m', 'pip', 'install', '--quiet', '--upgrade', 'pip', '--no-index'],
      [python, '-m', 'pip', 'install', '--quiet', '--no-deps', '-r', 'requirements.txt',
       '--no-index'],
  ]


def test_an_environment_is_reused_when_it_matches_and_reinstalled_when_not(tmp_path):
  venv = str(tmp_path / 'env')
  python = os.path.join(venv, 'bin', 'python')
  matching = ne.EnvProbe((3, 10, 13), dict(LOCK))
  assert ne.env_commands(venv, matching, LOCK) == []
  stale = ne.EnvProbe((3, 11, 7), {'absl-py': '1.4.0', 'numpy': '1.26.0'})
  assert ne.env_commands(venv, stale, LOCK, base_python='/opt/py/bin/python3.11') == [
      [python, '-m', 'pip', 'install', '--quiet', '--upgrade', 'pip'],
      [python, '-m', 'pip', 'install', '--quiet', '--no-deps', '-r', 'requirements.txt'],
  ]


def test_an_environment_tff_cannot_use_or_a_folder_without_one_is_refused(tmp_path):
  venv = str(tmp_path / 'env')
  with pytest.raises(ne.NotebookEnvError) as e:
    ne.env_commands(venv, ne.EnvProbe((3, 12, 1), dict(LOCK)), LOCK)
  assert str(e.value) == (f'VENV_DIR={venv}: its Python is 3.12.1, TFF 0.87 needs 3.9-3.11; '
                          'remove it (make clean-venv) or choose another VENV_DIR')
  os.makedirs(os.path.join(venv, 'data'))
  with pytest.raises(ne.NotebookEnvError) as e:
    ne.env_commands(venv, None, LOCK, base_python='/opt/py/bin/python3.11')
  assert str(e.value) == (f'VENV_DIR={venv}: exists but has no bin/python; remove it or choose '
                          'another VENV_DIR')


def test_train_flags_and_command():
  settings = {'dataset': 'digits', 'client_fraction': 0.25, 'batch_size': 'inf',
              'run_name': None, 'export': False, 'resume': True, 'target_accuracy': 0.9}
  assert ne.train_flags(settings) == [
      '--dataset=digits', '--client_fraction=0.25', '--batch_size=inf', '--noexport',
      '--resume', '--target_accuracy=0.9']
  assert ne.train_command('/v/bin/python', {'rounds': 3}) == [
      '/v/bin/python', '-m', 'tff_programs.train', '--rounds=3', '--noprogress']


def test_run_dir_comes_from_trains_outputs_line():
  lines = ['round 2/2 loss=1.3861', 'done: 2 rounds',
           'outputs: runs/notebook/quickstart/ (metrics.csv, summary.json, model.tflite)']
  assert ne.parse_run_dir(lines) == 'runs/notebook/quickstart'
  assert ne.parse_run_dir(['outputs: /tmp/a b/run/ (metrics.csv)']) == '/tmp/a b/run'
  with pytest.raises(ne.NotebookEnvError, match="^train printed no 'outputs:' line"):
    ne.parse_run_dir(['done: 2 rounds'])


def test_child_env_drops_the_kernels_python_variables():
  env = ne.child_env({'PYTHONPATH': '/env/python', 'PYTHONHOME': '/usr', 'VIRTUAL_ENV': '/v',
                      'HOME': '/root', 'TF_CPP_MIN_LOG_LEVEL': '3'})
  assert env == {'HOME': '/root', 'TF_CPP_MIN_LOG_LEVEL': '3'}
  assert ne.child_env({'PATH': '/bin'}) == {'PATH': '/bin', 'TF_CPP_MIN_LOG_LEVEL': '2'}


def test_results_are_read_back_from_the_run_folder(tmp_path):
  run_dir = str(tmp_path)
  with open(os.path.join(run_dir, 'metrics.csv'), 'w') as f:
    f.write('round,eval_accuracy,train_loss\n1,,2.5\n2,0.625,2.0\n3,,1.5\n4,0.75,1.0\n')
  assert ne.eval_curve(run_dir) == ([2, 4], [0.625, 0.75])
  with pytest.raises(ne.NotebookEnvError, match=r'no summary.json \(the run did not finish\)$'):
    ne.read_run(run_dir)
  export = {'tflite_path': f'{run_dir}/model.tflite', 'tflite_accuracy': 0.75}
  with open(os.path.join(run_dir, 'summary.json'), 'w') as f:
    json.dump({'rounds_completed': 4, 'export': export}, f)
  run = ne.read_run(run_dir, ['done'])
  assert (run.summary['rounds_completed'], run.export_report, run.output) == (4, export, ['done'])
  assert ne.read_run(run_dir).export_report['tflite_accuracy'] == 0.75


def test_a_refused_flag_is_trains_own_one_line_error(tmp_path):
  with pytest.raises(ne.NotebookEnvError) as e:
    ne.run_train(sys.executable, {'dataset': 'nope', 'output_dir': str(tmp_path)}, cwd=REPO,
                 echo=lambda line: None)
  assert str(e.value).startswith(
      "tff_programs.train exited 2: train: error: --dataset='nope': unknown; allowed: ")
  assert os.listdir(tmp_path) == []


def _wheel(directory, version):
  """A minimal pure-Python wheel of `fedsuite-probe` (module fedsuite_probe)."""
  dist = f'fedsuite_probe-{version}.dist-info'
  files = {
      'fedsuite_probe/__init__.py': f"VERSION = '{version}'\n",
      f'{dist}/METADATA': f'Metadata-Version: 2.1\nName: fedsuite-probe\nVersion: {version}\n',
      f'{dist}/WHEEL': 'Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n'
                       'Tag: py3-none-any\n',
  }
  record = []
  for name, text in files.items():
    digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b'=')
    record.append(f'{name},sha256={digest.decode()},{len(text.encode())}')
  files[f'{dist}/RECORD'] = '\n'.join(record + [f'{dist}/RECORD,,']) + '\n'
  with zipfile.ZipFile(os.path.join(directory, f'fedsuite_probe-{version}-py3-none-any.whl'),
                       'w') as z:
    for name, text in files.items():
      z.writestr(name, text)


def test_ensure_env_creates_from_a_local_python_reuses_then_follows_the_lock(tmp_path):
  wheels = tmp_path / 'wheels'
  wheels.mkdir()
  _wheel(str(wheels), '1.0')
  _wheel(str(wheels), '2.0')
  lock = tmp_path / 'lock.txt'
  lock.write_text('# the lock\nfedsuite-probe==1.0\n')
  venv = str(tmp_path / 'env')
  base = getattr(sys, '_base_executable', sys.executable)
  options = dict(lock_path=str(lock), base_python=base,
                 pip_args=('--no-index', '--find-links', str(wheels)))
  python = os.path.join(venv, 'bin', 'python')
  here = '.'.join(str(v) for v in sys.version_info[:3])  # the local python's version
  installed = lambda: subprocess.run(
      [python, '-c', 'import sys, fedsuite_probe; print(sys.version_info[:3], fedsuite_probe.VERSION)'],
      capture_output=True, text=True, check=True).stdout.strip()

  echoed = []
  assert ne.ensure_env(venv, echo=echoed.append, **options) == python
  assert [l.split()[1:4] for l in echoed if l.startswith('$ ')] == [
      [base, '-m', 'venv'], [python, '-m', 'pip'], [python, '-m', 'pip']]
  assert echoed[-1] == f'{venv}: Python {here} with {lock} installed'
  assert installed() == f'{tuple(sys.version_info[:3])} 1.0'
  assert os.path.exists(os.path.join(venv, '.installed'))

  echoed = []
  assert ne.ensure_env(venv, echo=echoed.append, **options) == python
  assert echoed == [f'reusing {venv} (Python {here}, matches {lock})']

  lock.write_text('fedsuite-probe==2.0\n')
  echoed = []
  ne.ensure_env(venv, echo=echoed.append, **options)
  assert [l.split()[1:5] for l in echoed if l.startswith('$ ')] == [
      [python, '-m', 'pip', 'install'], [python, '-m', 'pip', 'install']]
  assert installed() == f'{tuple(sys.version_info[:3])} 2.0'

  lock.write_text('fedsuite-probe==3.0\n')  # no such wheel: pip's own error, in one line
  with pytest.raises(ne.NotebookEnvError, match=r'exited 1: ERROR: No matching distribution'):
    ne.ensure_env(venv, echo=lambda line: None, **options)
