r"""The quick-start notebook on any Python: in-process on 3.9-3.11, else through the CLI.

TensorFlow Federated 0.87 supports Python 3.9-3.11 only, and Colab's kernel runs
3.12. `notebooks/quickstart.ipynb` therefore has two paths:

* in-process (`'api'`): the kernel's Python is 3.9-3.11 and has the lock
  installed, so the notebook calls `tff_programs.experiment` directly;
* CLI (`'cli'`): any other Python. The notebook builds (once) a Python 3.11
  virtual environment with FedSuite's lock and runs
  `python -m tff_programs.train` in it, then reads the run folder back
  (`metrics.csv`, `summary.json` with its export report, `model.tflite`).

    mode = choose_mode('auto')                   # 'api' or 'cli'
    python = ensure_env('.venv')                 # CLI path: .venv/bin/python
    run = run_train(python, {'dataset': 'digits', 'rounds': 20, ...})
    run.summary['final_eval_accuracy'], run.export_report['tflite_accuracy']

The environment is built the way the Makefile builds `.venv` (the lock installed
with `pip --no-deps`, see README "Installation"): from `base_python` when one is
given (a local python3.11: what the tests do), otherwise from the standalone
CPython `PYTHON_VERSION` that `uv` (pinned `UV_VERSION`, installed with the
kernel's pip) downloads. An existing environment whose Python is 3.9-3.11 and
whose packages match the lock is reused as it is.

This module imports only the standard library: the kernel that uses it may
have no TensorFlow. `python -m tff_programs.notebook_env predict RUN_DIR COUNT`
runs inside the environment (TensorFlow imported there) and prints the TFLite
model's predictions for the first COUNT test examples as one JSON line.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import shlex
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Optional

SUPPORTED_PYTHON = ((3, 9), (3, 11))  # tensorflow-federated 0.87
PYTHON_VERSION = '3.11.7'  # the CPython of the CLI path's environment (as CI's .venv)
UV_VERSION = '0.13.9'  # installs that CPython (a python-build-standalone build)
LOCK = 'requirements.txt'
STAMP = '.installed'  # the Makefile's "lock installed" marker in a venv
MODES = ('auto', 'api', 'cli')
# Variables of the kernel's Python that must not reach the environment's
# (Colab sets PYTHONPATH to its own 3.12 site-packages).
_PYTHON_VARIABLES = ('PYTHONPATH', 'PYTHONHOME', 'PYTHONSTARTUP', 'VIRTUAL_ENV',
                     '__PYVENV_LAUNCHER__')

Echo = Callable[[str], None]


class NotebookEnvError(RuntimeError):
  """A one-line error: what failed, with what value, and what to do."""


def supported(version: Sequence[int]) -> bool:
  """Whether Python `version` (major, minor, ...) can import TFF 0.87."""
  return SUPPORTED_PYTHON[0] <= tuple(version[:2]) <= SUPPORTED_PYTHON[1]


def _version_text(version: Sequence[int]) -> str:
  return '.'.join(str(v) for v in version)


def choose_mode(mode: str = 'auto', version: Optional[Sequence[int]] = None) -> str:
  """'api' (in-process) or 'cli' for the notebook's MODE on Python `version`.

  'auto' picks 'api' on Python 3.9-3.11 (the kernel's by default) and 'cli'
  elsewhere; 'cli' is allowed anywhere (it runs FedSuite in its own
  environment); 'api' is refused where TFF cannot be imported.
  """
  version = tuple(sys.version_info[:3] if version is None else version)
  if mode not in MODES:
    raise NotebookEnvError(f'MODE={mode!r}: allowed: {", ".join(MODES)}')
  if mode == 'auto':
    return 'api' if supported(version) else 'cli'
  if mode == 'api' and not supported(version):
    raise NotebookEnvError(
        f"MODE='api': TFF 0.87 needs Python 3.9-3.11 and this kernel runs "
        f"{_version_text(version)}; use MODE='auto' or 'cli'")
  return mode


def parse_lock(text: str) -> dict[str, str]:
  """{package: version} of a fully pinned requirements file (`name==version` lines)."""
  pins = {}
  for line in text.splitlines():
    line = line.split('#', 1)[0].strip()
    if not line:
      continue
    name, sep, version = line.partition('==')
    if not sep or not version.strip():
      raise NotebookEnvError(f'lock line {line!r}: every line must pin name==version')
    pins[name.strip()] = version.strip()
  return pins


def lock_mismatches(lock: Mapping[str, str], installed: Mapping[str, Optional[str]]) -> list[str]:
  """Lock entries an environment does not satisfy, one short phrase each."""
  wrong = []
  for name, version in lock.items():
    have = installed.get(name)
    if have is None:
      wrong.append(f'{name} missing')
    elif have != version:
      wrong.append(f'{name} {have} != {version}')
  return wrong


def venv_python(venv_dir: str) -> str:
  """The interpreter of virtual environment `venv_dir`."""
  if os.name == 'nt':
    return os.path.join(venv_dir, 'Scripts', 'python.exe')
  return os.path.join(venv_dir, 'bin', 'python')


def child_env(environ: Optional[Mapping[str, str]] = None) -> dict[str, str]:
  """The environment variables for a process of the other Python.

  The kernel's PYTHONPATH/PYTHONHOME/VIRTUAL_ENV are dropped, so the 3.11
  environment never imports the kernel's (3.12) packages; TensorFlow's C++
  start-up noise is quieted unless the user set its level.
  """
  env = {k: v for k, v in (os.environ if environ is None else environ).items()
         if k not in _PYTHON_VARIABLES}
  env.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  return env


@dataclasses.dataclass(frozen=True)
class EnvProbe:
  """What an environment's interpreter reports: its version and the lock's packages."""

  version: tuple[int, ...]
  installed: dict[str, Optional[str]]


_PROBE_CODE = '''
import json, sys
from importlib import metadata
names = json.load(sys.stdin)
def version(name):
  try:
    return metadata.version(name)
  except metadata.PackageNotFoundError:
    return None
print(json.dumps({"version": list(sys.version_info[:3]),
                  "installed": {n: version(n) for n in names}}))
'''


def probe_env(python: str, lock: Mapping[str, str]) -> EnvProbe:
  """Asks `python` for its version and the installed versions of the lock's packages."""
  proc = subprocess.run([python, '-c', _PROBE_CODE], input=json.dumps(sorted(lock)),
                        capture_output=True, text=True, env=child_env(), check=False)
  if proc.returncode != 0:
    last = (proc.stderr.strip().splitlines() or ['no output'])[-1]
    raise NotebookEnvError(f'{python} does not run ({last}); remove its environment and '
                           'run the cell again')
  out = json.loads(proc.stdout.strip().splitlines()[-1])
  return EnvProbe(tuple(out['version']), out['installed'])


def env_commands(
    venv_dir: str,
    probe: Optional[EnvProbe],
    lock: Mapping[str, str],
    *,
    lock_path: str = LOCK,
    base_python: Optional[str] = None,
    python_version: str = PYTHON_VERSION,
    kernel_python: str = sys.executable,
    pip_args: Sequence[str] = (),
) -> list[list[str]]:
  """The commands that make `venv_dir` a Python 3.9-3.11 environment with the lock.

  Args:
    venv_dir: the environment's folder.
    probe: what its interpreter reported (`probe_env`), or None if it has none.
    lock: the lock's pins (`parse_lock`).
    lock_path: the lock file pip installs.
    base_python: an interpreter to create the environment with
      (`python -m venv`); None: uv installs CPython `python_version` and creates
      the environment with it (`uv venv --seed`, so it has pip).
    python_version: the CPython uv installs.
    kernel_python: the notebook kernel's interpreter (its pip installs uv).
    pip_args: extra pip arguments (tests: `--no-index --find-links DIR`).

  Returns:
    [] when the environment can be reused (its Python is 3.9-3.11 and it
    matches the lock); otherwise the commands, in order: create the
    environment (if it has no interpreter), upgrade its pip, install the lock
    with `--no-deps` (as the Makefile does).

  Raises:
    NotebookEnvError: the folder holds no environment, or one whose Python
      TFF 0.87 does not support.
  """
  python = venv_python(venv_dir)
  commands = []
  if probe is not None:
    if not supported(probe.version):
      raise NotebookEnvError(
          f'VENV_DIR={venv_dir}: its Python is {_version_text(probe.version)}, TFF 0.87 needs '
          f'3.9-3.11; remove it (make clean-venv) or choose another VENV_DIR')
    if not lock_mismatches(lock, probe.installed):
      return []
  elif os.path.isdir(venv_dir) and os.listdir(venv_dir):
    raise NotebookEnvError(f'VENV_DIR={venv_dir}: exists but has no {os.path.relpath(python, venv_dir)}; '
                           'remove it or choose another VENV_DIR')
  elif base_python:
    commands.append([base_python, '-m', 'venv', venv_dir])
  else:
    uv = [kernel_python, '-m', 'uv']
    commands += [
        [kernel_python, '-m', 'pip', 'install', '--quiet', f'uv=={UV_VERSION}'],
        [*uv, 'python', 'install', python_version],
        [*uv, 'venv', '--seed', '--managed-python', '--python', python_version, venv_dir],
    ]
  commands += [
      [python, '-m', 'pip', 'install', '--quiet', '--upgrade', 'pip', *pip_args],
      [python, '-m', 'pip', 'install', '--quiet', '--no-deps', '-r', lock_path, *pip_args],
  ]
  return commands


def stream(command: Sequence[str], *, cwd: Optional[str] = None,
           echo: Echo = print) -> tuple[int, list[str]]:
  """Runs `command` (the other Python's environment), echoing its output lines as they come.

  A notebook shows only what the kernel prints, not a child's own stdout, so
  stdout and stderr are read here and echoed line by line.
  """
  proc = subprocess.Popen(list(command), cwd=cwd, env=child_env(), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, bufsize=1)
  lines = []
  assert proc.stdout is not None
  for line in proc.stdout:
    line = line.rstrip('\n')
    lines.append(line)
    echo(line)
  return proc.wait(), lines


def _run_checked(command: Sequence[str], echo: Echo) -> list[str]:
  """Echoes and runs `command`; a failure is one line: the command and its last output."""
  echo(f'$ {shlex.join(command)}')
  code, lines = stream(command, echo=echo)
  if code != 0:
    last = next((l for l in reversed(lines) if l.strip()), 'no output')
    raise NotebookEnvError(f'`{shlex.join(command[:4])} ...` exited {code}: {last.strip()}')
  return lines


def ensure_env(
    venv_dir: str,
    *,
    lock_path: str = LOCK,
    base_python: Optional[str] = None,
    python_version: str = PYTHON_VERSION,
    pip_args: Sequence[str] = (),
    echo: Echo = print,
) -> str:
  """Makes `venv_dir` a Python 3.11 environment with the lock; returns its interpreter.

  Reuses the environment if it already matches (seconds); otherwise runs
  `env_commands` (first time on Colab: a few minutes, mostly TensorFlow) and
  checks the result against the lock. See `env_commands` for the arguments.
  """
  with open(lock_path) as f:
    lock = parse_lock(f.read())
  python = venv_python(venv_dir)
  probe = probe_env(python, lock) if os.path.exists(python) else None
  commands = env_commands(venv_dir, probe, lock, lock_path=lock_path, base_python=base_python,
                          python_version=python_version, pip_args=pip_args)
  if not commands:
    echo(f'reusing {venv_dir} (Python {_version_text(probe.version)}, matches {lock_path})')
    return python
  for command in commands:
    _run_checked(command, echo)
  probe = probe_env(python, lock)
  wrong = lock_mismatches(lock, probe.installed)
  if wrong or not supported(probe.version):
    raise NotebookEnvError(f'{venv_dir}: still differs from {lock_path} after installing it '
                           f'(Python {_version_text(probe.version)}; {", ".join(wrong[:3])})')
  with open(os.path.join(venv_dir, STAMP), 'w'):
    pass
  echo(f'{venv_dir}: Python {_version_text(probe.version)} with {lock_path} installed')
  return python


def train_flags(settings: Mapping[str, Any]) -> list[str]:
  """`tff_programs.train` flags for ExperimentConfig-style `settings`, in order.

  True/False -> --name/--noname (absl booleans); None -> left out (the default).
  """
  flags = []
  for name, value in settings.items():
    if value is None:
      continue
    if isinstance(value, bool):
      flags.append(f'--{name}' if value else f'--no{name}')
    else:
      flags.append(f'--{name}={value}')
  return flags


def train_command(python: str, settings: Mapping[str, Any]) -> list[str]:
  """`python -m tff_programs.train --flag=value ...` without a progress bar."""
  return [python, '-m', 'tff_programs.train', *train_flags(settings), '--noprogress']


OUTPUTS_PREFIX = 'outputs: '


def parse_run_dir(lines: Sequence[str]) -> str:
  """The run folder from train's `outputs: <run_dir>/ (files...)` line."""
  for line in reversed(lines):
    if line.startswith(OUTPUTS_PREFIX):
      path = line[len(OUTPUTS_PREFIX):].split(' (', 1)[0].strip()
      return path.rstrip('/') or path
  raise NotebookEnvError("train printed no 'outputs:' line; its run folder is unknown")


@dataclasses.dataclass
class RunResult:
  """A finished run read back from its folder."""

  run_dir: str
  summary: dict[str, Any]
  export_report: Optional[dict[str, Any]]  # summary.json 'export' (None with --noexport)
  output: list[str] = dataclasses.field(default_factory=list)  # what train printed


def read_run(run_dir: str, output: Sequence[str] = ()) -> RunResult:
  """summary.json (and its export report) of the run in `run_dir`."""
  path = os.path.join(run_dir, 'summary.json')
  if not os.path.exists(path):
    raise NotebookEnvError(f'{run_dir}: no summary.json (the run did not finish)')
  with open(path) as f:
    summary = json.load(f)
  return RunResult(run_dir, summary, summary.get('export'), list(output))


def run_train(python: str, settings: Mapping[str, Any], *, cwd: Optional[str] = None,
              echo: Echo = print) -> RunResult:
  """Runs `python -m tff_programs.train` with `settings` and reads its run folder.

  `cwd` (default: the current folder) must be the repository root; a relative
  run folder is resolved against it. Train's own one-line error (bad flag,
  missing data file) is raised as it printed it.
  """
  cwd = cwd or os.getcwd()
  command = train_command(python, settings)
  echo(f'$ {shlex.join(command)}')
  code, lines = stream(command, cwd=cwd, echo=echo)
  if code != 0:
    error = next((l for l in reversed(lines) if l.startswith('train: ')), None)
    last = error or next((l for l in reversed(lines) if l.strip()), 'no output')
    raise NotebookEnvError(f'tff_programs.train exited {code}: {last.strip()}')
  run_dir = parse_run_dir(lines)
  return read_run(os.path.join(cwd, run_dir), lines)


def eval_curve(run_dir: str) -> tuple[list[int], list[float]]:
  """(rounds, eval_accuracy) of the evaluated rounds in the run's metrics.csv."""
  with open(os.path.join(run_dir, 'metrics.csv'), newline='') as f:
    rows = [r for r in csv.DictReader(f) if r.get('eval_accuracy')]
  return [int(r['round']) for r in rows], [float(r['eval_accuracy']) for r in rows]


def tflite_predictions(python: str, run_dir: str, count: int, *,
                       cwd: Optional[str] = None) -> tuple[list[int], list[int]]:
  """(predicted, true) classes of the run's TFLite model on its first `count` test examples.

  Runs in the environment of `python` (the kernel may have no TensorFlow).
  """
  command = [python, '-m', 'tff_programs.notebook_env', 'predict', run_dir, str(count)]
  proc = subprocess.run(command, cwd=cwd or os.getcwd(), env=child_env(), capture_output=True,
                        text=True, check=False)
  if proc.returncode != 0:
    last = next((l for l in reversed(proc.stderr.splitlines()) if l.strip()), 'no output')
    raise NotebookEnvError(f'predict exited {proc.returncode}: {last.strip()}')
  out = json.loads(proc.stdout.strip().splitlines()[-1])
  return out['predicted'], out['true']


def _predict(run_dir: str, count: int) -> dict[str, list[int]]:
  """The `predict` command: reloads the run's test set and runs its model.tflite."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  from datasets import preprocessing  # pylint: disable=g-import-not-at-top
  from tff_programs import experiment  # pylint: disable=g-import-not-at-top
  from tff_programs import tflite_export  # pylint: disable=g-import-not-at-top

  with open(os.path.join(run_dir, 'config.json')) as f:
    saved = json.load(f)
  fields = {k: v for k, v in saved.items() if k in experiment.ExperimentConfig.__dataclass_fields__}
  cfg = experiment.ExperimentConfig(**fields)
  x_test, y_test = experiment.load_federated_data(cfg).central_test
  x = x_test[:count]
  eval_map = preprocessing.preprocessing_for(cfg.dataset).eval_map
  if eval_map is not None:
    x = eval_map(tf.constant(x)).numpy()
  with open(os.path.join(run_dir, 'summary.json')) as f:
    tflite_name = os.path.basename(json.load(f)['export']['tflite_path'])
  with open(os.path.join(run_dir, tflite_name), 'rb') as f:
    logits = tflite_export.tflite_predict(f.read(), x)
  return {'predicted': [int(c) for c in np.argmax(logits, axis=-1)],
          'true': [int(c) for c in y_test[:count]]}


def main(argv: Sequence[str]) -> int:
  """`python -m tff_programs.notebook_env predict RUN_DIR COUNT` (one JSON line)."""
  if len(argv) != 4 or argv[1] != 'predict' or not argv[3].isdigit():
    print('usage: python -m tff_programs.notebook_env predict RUN_DIR COUNT', file=sys.stderr)
    return 2
  from tff_programs import quiet_tf  # pylint: disable=g-import-not-at-top
  quiet_tf.silence_cpp_logs(argv)
  print(json.dumps(_predict(argv[2], int(argv[3]))))
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv))
