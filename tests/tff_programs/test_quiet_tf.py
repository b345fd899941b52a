"""Entry points start without TF's C++ registration noise, unless logs are asked for."""

import os
import subprocess
import sys

import pytest

from tff_programs import quiet_tf

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.parametrize('argv, wants', [
    (['train'], False),
    (['train', '--rounds=3'], False),
    (['train', '--verbosity=1'], True),
    (['train', '-v', '1'], True),
    (['train', '-v=1'], True),
    (['train', '--validate'], False),
])
def test_wants_logs(argv, wants):
  assert quiet_tf.wants_logs(argv) == wants


def test_silence_respects_the_users_variable(monkeypatch):
  monkeypatch.delenv(quiet_tf.TF_CPP_ENV, raising=False)
  quiet_tf.silence_cpp_logs(['train'])
  assert os.environ[quiet_tf.TF_CPP_ENV] == '3'
  monkeypatch.setenv(quiet_tf.TF_CPP_ENV, '0')
  quiet_tf.silence_cpp_logs(['train'])
  assert os.environ[quiet_tf.TF_CPP_ENV] == '0'
  monkeypatch.delenv(quiet_tf.TF_CPP_ENV)
  quiet_tf.silence_cpp_logs(['train', '--verbosity=0'])
  assert quiet_tf.TF_CPP_ENV not in os.environ


def _help(module, *extra):
  env = {k: v for k, v in os.environ.items() if k != quiet_tf.TF_CPP_ENV}
  return subprocess.run([sys.executable, '-m', module, '--help', *extra], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize('module', ['tff_programs.train', 'tff_programs.reproduce',
                                    'tff_programs.export'])
def test_help_starts_without_tf_cpp_noise(module):
  result = _help(module)  # absl exits with 1 after --help.
  assert 'Unable to register' not in result.stderr
  assert 'Traceback' not in result.stderr, result.stderr[-2000:]
  assert result.stdout.splitlines()[0].strip(), 'help text comes first'


def test_verbosity_brings_the_cpp_logs_back():
  result = _help('tff_programs.train', '--verbosity=1')
  assert 'oneDNN' in result.stderr or 'cuda' in result.stderr.lower()
