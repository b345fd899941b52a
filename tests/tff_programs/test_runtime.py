"""No TFF worker_binary outlives a run: normal exit, exception, SIGKILL, plain exit."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import tensorflow as tf
import tensorflow_federated as tff

from tff_programs import runtime

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@tff.tensorflow.computation(tf.int32)
def add_one(x):
  return x + 1


def _wait_gone(tag, timeout=10.0):
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline:
    if not runtime.tagged_worker_pids(tag):
      return True
    time.sleep(0.1)
  return False


def test_worker_runs_inside_block_and_is_gone_after():
  with runtime.tff_runtime() as worker:
    assert add_one(2) == 3
    assert runtime.tagged_worker_pids(worker.tag) == [worker.pid]
  assert runtime.tagged_worker_pids(worker.tag) == []


def test_worker_is_gone_after_an_exception():
  with pytest.raises(RuntimeError, match='boom'):
    with runtime.tff_runtime() as worker:
      assert add_one(1) == 2
      raise RuntimeError('boom')
  assert runtime.tagged_worker_pids(worker.tag) == []


def test_worker_restarts_after_it_dies():
  with runtime.tff_runtime() as worker:
    assert add_one(1) == 2
    first = worker.pid
    os.kill(first, signal.SIGKILL)
    time.sleep(0.5)
    assert add_one(5) == 6
    assert worker.pid != first
  assert runtime.tagged_worker_pids(worker.tag) == []


def _child(code: str, tag_file: str) -> subprocess.Popen:
  script = textwrap.dedent(f'''
      import os, sys, signal
      sys.path.insert(0, {REPO!r})
      os.environ['TF_CPP_MIN_LOG_LEVEL'] = '3'
      import tensorflow as tf, tensorflow_federated as tff
      from tff_programs import runtime
      @tff.tensorflow.computation(tf.int32)
      def f(x):
        return x * 2
      ''') + textwrap.dedent(code).replace('TAG_FILE', repr(tag_file))
  return subprocess.Popen([sys.executable, '-c', script], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, cwd=REPO)


def test_worker_dies_with_a_sigkilled_parent(tmp_path):
  tag_file = str(tmp_path / 'tag')
  child = _child('''
      with runtime.tff_runtime() as w:
        assert f(2) == 4
        open(TAG_FILE, 'w').write(w.tag)
        os.kill(os.getpid(), signal.SIGKILL)
      ''', tag_file)
  out, err = child.communicate(timeout=120)
  assert child.returncode == -signal.SIGKILL, err.decode()[-2000:]
  tag = open(tag_file).read()
  assert _wait_gone(tag), 'worker_binary outlived a SIGKILLed parent'


def test_default_context_worker_stopped_at_exit_and_pipes_released(tmp_path):
  # No `with` block: the default context installed on import owns the worker;
  # the child exits normally, and communicate() returning proves no process
  # still holds the stdout/stderr pipes.
  tag_file = str(tmp_path / 'tag')
  child = _child('''
      assert f(3) == 6
      open(TAG_FILE, 'w').write(runtime.install_default_context().tag)
      print('ok')
      ''', tag_file)
  out, err = child.communicate(timeout=120)
  assert child.returncode == 0, err.decode()[-2000:]
  assert out.decode().strip().endswith('ok')
  assert _wait_gone(open(tag_file).read(), timeout=5)
