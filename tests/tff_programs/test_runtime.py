"""No TFF worker_binary outlives a run: normal exit, exception, SIGKILL, plain exit."""

import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time

import psutil
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from tff_programs import runtime
from tff_programs.remote import addresses
from tests.tff_programs.process_checks import wait_until

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@tff.tensorflow.computation(tf.int32)
def add_one(x):
  return x + 1


def _wait_gone(tag, timeout=10.0):
  """Whether every worker_binary tagged `tag` ends within `timeout` seconds."""
  return wait_until(lambda: not runtime.tagged_worker_pids(tag), timeout, interval=0.1)


def test_worker_runs_inside_block_and_is_gone_after():
  # Workers this process started before (a shared test context's) stay out of it.
  earlier = set(runtime.tagged_worker_pids(started_by=os.getpid()))
  with runtime.tff_runtime() as worker:
    assert add_one(2) == 3
    assert runtime.tagged_worker_pids(worker.tag) == [worker.pid]
    # The default tag begins with the starting process's PID.
    assert set(runtime.tagged_worker_pids(started_by=os.getpid())) - earlier == {worker.pid}
    assert runtime.tagged_worker_pids(started_by=os.getppid()) == []
    # Two malloc arenas unless the user chose (test_a_users_malloc_setting_reaches_the_worker).
    assert psutil.Process(worker.pid).environ().get('MALLOC_ARENA_MAX') == (
        os.environ.get('MALLOC_ARENA_MAX', '2'))
  assert runtime.tagged_worker_pids(worker.tag) == []


def test_a_users_malloc_setting_reaches_the_worker(monkeypatch):
  monkeypatch.setenv('MALLOC_ARENA_MAX', '5')
  with runtime.tff_runtime() as worker:
    assert add_one(4) == 5
    assert psutil.Process(worker.pid).environ()['MALLOC_ARENA_MAX'] == '5'
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


# ---- the executor is reachable only by its owner --------------------------------

from tff_programs import executor_sandbox  # pylint: disable=g-import-not-at-top,wrong-import-position


def _namespaces_available() -> bool:
  probe = subprocess.run(['unshare', '--user', '--map-root-user', '--net', 'true'],
                         capture_output=True)
  return probe.returncode == 0 or os.geteuid() == 0


def _non_loopback_listeners(port=None, pid=None):
  """LISTEN sockets of this network namespace on a non-loopback address, for the
  given port or owned by the given process."""
  owned = executor_sandbox.socket_inodes(pid) if pid is not None else set()
  return [(addr, p, inode) for addr, p, inode in executor_sandbox.read_listening()
          if not executor_sandbox.is_loopback(addr) and (p == port or inode in owned)]


@pytest.mark.skipif(not _namespaces_available(), reason='no network namespaces on this machine')
def test_worker_port_is_bound_on_no_address_of_this_network_namespace():
  with runtime.tff_runtime(isolation='required') as worker:
    assert add_one(1) == 2
    assert worker.isolated
    # Nothing of the worker listens on this machine's namespace, on any address...
    owned = executor_sandbox.socket_inodes(worker.pid)
    assert owned, 'the worker holds its listening socket'
    assert [s for s in executor_sandbox.read_listening() if s[2] in owned] == []
    assert _non_loopback_listeners(port=worker.port, pid=worker.pid) == []
    # ...it lives in another network namespace, and is reached through a private Unix socket.
    assert os.readlink(f'/proc/{worker.pid}/ns/net') != os.readlink('/proc/self/ns/net')
    assert os.stat(worker.socket_path).st_mode & 0o777 == 0o600
    assert os.stat(os.path.dirname(worker.socket_path)).st_mode & 0o777 == 0o700
  assert runtime.tagged_worker_pids(worker.tag) == []


def test_without_namespaces_a_run_is_refused_or_warned(monkeypatch, capsys):
  # The launcher honours this test hook by behaving as on a machine without namespaces.
  monkeypatch.setenv('FEDSUITE_SANDBOX_NO_NAMESPACES', '1')
  worker = runtime.LocalWorker(isolation='required')
  with pytest.raises(runtime.ExecutorError, match='--require_private_executor: no private network'):
    worker.get_stub()
  assert worker.pid is None and worker.launcher_pid is None
  with runtime.tff_runtime(isolation='auto') as worker:
    assert add_one(4) == 5
    assert not worker.isolated
    err = capsys.readouterr().err
    assert f'listens on port {worker.port} of every interface' in err
    assert len([l for l in err.splitlines() if 'warning: no private network' in l]) == 1
  assert runtime.tagged_worker_pids(worker.tag) == []


_FAKE_WORKER = textwrap.dedent('''
    import socket, sys, time
    port = int([a for a in sys.argv if a.startswith('--port=')][0].split('=')[1])
    s = socket.socket(socket.AF_INET6)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.bind(('::', port))
    s.listen(1)
    time.sleep(float(sys.argv[1]))
    ''')


def _impostor():
  s = socket.socket(socket.AF_INET6)
  s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
  s.bind(('::', 0))
  s.listen(1)
  return s


def test_an_impostor_on_the_chosen_port_is_detected_and_a_new_port_is_used(monkeypatch, tmp_path):
  impostor = _impostor()
  taken = impostor.getsockname()[1]
  ports = iter([taken, _impostor_free_port()])
  monkeypatch.setattr(executor_sandbox, '_free_port', lambda isolated: next(ports))
  lifeline_r, lifeline_w = os.pipe()
  with open(tmp_path / 'log', 'ab') as log:
    process, port = executor_sandbox.start_worker(
        [sys.executable, '-c', _FAKE_WORKER, '30'], isolated=False, log_file=log,
        lifeline_fd=lifeline_r)
  try:
    assert port != taken
    assert executor_sandbox.listener_owner(port, process.pid, executor_sandbox.read_listening()) == 'worker'
    assert executor_sandbox.listener_owner(taken, process.pid, executor_sandbox.read_listening()) == 'other'
  finally:
    process.kill()
    process.wait()
    impostor.close()
    os.close(lifeline_r)
    os.close(lifeline_w)


def test_an_impostor_is_reported_when_no_port_is_left(tmp_path):
  impostor = _impostor()
  lifeline_r, lifeline_w = os.pipe()
  with open(tmp_path / 'log', 'ab') as log:
    with pytest.raises(RuntimeError, match=f'port {impostor.getsockname()[1]}: another process is listening'):
      executor_sandbox.start_worker(
          [sys.executable, '-c', _FAKE_WORKER, '30'], isolated=False, log_file=log,
          lifeline_fd=lifeline_r, port_override=impostor.getsockname()[1])
  impostor.close()
  os.close(lifeline_r)
  os.close(lifeline_w)


def test_a_worker_that_dies_after_binding_is_not_trusted(tmp_path):
  lifeline_r, lifeline_w = os.pipe()
  with open(tmp_path / 'log', 'ab') as log:
    with pytest.raises(RuntimeError, match='exited'):
      executor_sandbox.start_worker(
          [sys.executable, '-c', _FAKE_WORKER, '0'], isolated=False, log_file=log,
          lifeline_fd=lifeline_r)
  os.close(lifeline_r)
  os.close(lifeline_w)


def _impostor_free_port():
  with socket.socket(socket.AF_INET6) as s:
    s.bind(('::', 0))
    return s.getsockname()[1]


def test_worker_outlives_the_thread_that_started_it():
  # TFF may start the worker from its event-loop thread; PR_SET_PDEATHSIG armed
  # in the driver would kill the worker as soon as that thread ends.
  with runtime.tff_runtime() as worker:
    thread = threading.Thread(target=worker.get_stub)
    thread.start()
    thread.join()
    first = worker.pid
    assert first is not None
    time.sleep(1.0)
    assert runtime.tagged_worker_pids(worker.tag) == [first]
    assert add_one(7) == 8
    assert worker.pid == first
  assert runtime.tagged_worker_pids(worker.tag) == []


def test_launcher_of_a_driver_that_already_died_starts_nothing(tmp_path):
  lifeline_r, lifeline_w = os.pipe()
  status_r, status_w = os.pipe()
  os.close(lifeline_w)  # The driver is gone before the launcher is armed.
  marker = tmp_path / 'started'
  launcher = subprocess.Popen(
      [sys.executable, '-I', executor_sandbox.__file__, f'--socket={tmp_path}/s',
       f'--lifeline_fd={lifeline_r}', f'--status_fd={status_w}', f'--log={tmp_path}/log', '--',
       sys.executable, '-c', f'open({str(marker)!r}, "w")'],
      pass_fds=(lifeline_r, status_w))
  os.close(lifeline_r)
  os.close(status_w)
  assert launcher.wait(timeout=30) == 0
  assert os.read(status_r, 100) == b''
  assert not marker.exists()
  os.close(status_r)


@pytest.mark.parametrize('text, expected', [
    ('  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n'
     '   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 111 1\n'
     '   1: 00000000:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 222 1\n'
     '   2: 0100007F:1F91 0100007F:0050 01 00000000:00000000 00:00000000 00000000     0        0 333 1\n',
     [('0100007F', 8080, 111), ('00000000', 80, 222)]),
])
def test_listening_sockets_parses_proc_net_tcp(text, expected):
  assert executor_sandbox.listening_sockets(text) == expected


@pytest.mark.parametrize('address, loopback', [
    ('0100007F', True), ('0101007F', True), ('00000000', False), ('0101A8C0', False),
    ('00000000000000000000000001000000', True), ('00000000000000000000000000000000', False),
    ('0000000000000000FFFF00000100007F', True), ('0000000000000000FFFF00000101A8C0', False),
])
def test_is_loopback(address, loopback):
  assert executor_sandbox.is_loopback(address) == loopback


def test_concurrency_zero_is_one_client_computation_per_usable_core(monkeypatch):
  # 0 (the default of --worker_concurrency) follows the process's affinity mask,
  # not the machine's core count; -1 (all at once) and N >= 1 pass through.
  monkeypatch.setattr(os, 'sched_getaffinity', lambda pid: {0, 2, 5})
  assert addresses.usable_cores() == 3
  assert [addresses.concurrent_calls(c) for c in (0, 1, 4, -1)] == [3, 1, 4, -1]
  worker = runtime.LocalWorker(command=['true'])
  assert worker._max_concurrent == 3  # pylint: disable=protected-access
  monkeypatch.delattr(os, 'sched_getaffinity')
  monkeypatch.setattr(os, 'cpu_count', lambda: 7)
  assert addresses.concurrent_calls(0) == 7
