"""`python -m tff_programs.worker`: serves loopback only without TLS, keeps the
executor private, stops cleanly, reports a dead executor; GPU notice; binary checks."""

import os
import re
import signal
import socket
import stat
import subprocess
import sys

import pytest

from tff_programs import executor_sandbox
from tff_programs import remote_runtime
from tff_programs import runtime
from tff_programs.remote import addresses
from tff_programs import worker as worker_lib
from tff_programs import worker_tls
from tests.tff_programs.process_checks import wait_gone, wait_until

REPO = worker_lib.REPO_ROOT


def run_cli(*args, timeout=120):
  return subprocess.run([sys.executable, '-m', 'tff_programs.worker', *args], cwd=REPO,
                        capture_output=True, text=True, timeout=timeout)


def listeners_of(pid, namespace_pid):
  """(hex address, port) of LISTEN sockets of `pid`, as seen in `namespace_pid`'s network."""
  owned = executor_sandbox.socket_inodes(pid)
  return sorted((a, p) for a, p, inode in executor_sandbox.read_listening(f'/proc/{namespace_pid}/net')
                if inode in owned)


@pytest.mark.parametrize('args, message', [
    (['--port=0', '--host=0.0.0.0'],
     'worker: error: --host=0.0.0.0: without --worker_tls_dir a worker serves this machine only '
     '(127.0.0.1 or ::1); give --worker_tls_dir to serve other machines'),
    (['--port=0', '--host=10.1.2.3'], 'worker: error: --host=10.1.2.3: without --worker_tls_dir'),
    (['--port=70000'], 'worker: error: --port=70000: must be 0-65535 (0: any free port)'),
    (['--port=0', '--worker_tls_dir=/nonexistent/certs'],
     'worker: error: --worker_tls_dir=/nonexistent/certs: no such folder'),
    (['--port=0', '--concurrency=-2'],
     'worker: error: --concurrency=-2: must be -1 (all at once), 0 (one per CPU core) or an integer >= 1'),
    (['--port=0', '--worker_binary=/nonexistent/worker_binary'],
     'worker: error: --worker_binary=/nonexistent/worker_binary: no such file'),
])
def test_bad_flags_are_refused_in_one_line_before_any_executor_starts(args, message):
  result = run_cli(*args, '--log_file=/dev/null')
  assert result.returncode == 2, result.stderr
  assert result.stderr.startswith(message), result.stderr
  assert len(result.stderr.strip().splitlines()) == 1, result.stderr
  assert result.stdout == ''


def test_serves_loopback_only_keeps_the_executor_private_and_stops_on_sigterm(tmp_path):
  log = tmp_path / 'worker.log'
  proc = worker_lib.spawn(log_file=str(log))
  try:
    host, port = worker_tls.split_address(proc.address)
    assert host == '127.0.0.1' and port > 0
    executor = proc.executor_pid
    # By default the executor runs one client computation per CPU core at once.
    with open(f'/proc/{executor}/cmdline') as f:
      assert f'--max_concurrent_computation_calls={addresses.usable_cores()}' in f.read().split('\0')
    # The executor lives in its own network namespace, the worker in ours.
    assert os.readlink(f'/proc/{executor}/ns/net') != os.readlink(f'/proc/{proc.pid}/ns/net')
    assert os.readlink(f'/proc/{proc.pid}/ns/net') == os.readlink('/proc/self/ns/net')
    # In our namespace the worker listens on 127.0.0.1:port only, and nothing of the executor.
    assert listeners_of(proc.pid, proc.pid) == [('0100007F', port)]
    assert listeners_of(executor, proc.pid) == []
    # Inside its namespace the executor listens on its raw port; from here that port is closed.
    [(_, raw_port)] = listeners_of(executor, executor)
    with pytest.raises(ConnectionRefusedError):
      socket.create_connection(('127.0.0.1', raw_port), timeout=5).close()
    # Through the worker, the executor answers TFF requests.
    w = remote_runtime.Worker(proc.address, remote_runtime.open_channel(proc.address))
    assert w.probe(10) is None
    w.close()
    if os.geteuid() == 0:  # Another user of this machine is refused.
      assert connect_as(65534, port) == b''
      assert wait_until(lambda: 'not uid 65534' in log.read_text(), timeout=10), log.read_text()
      assert re.search(r"refused 127\.0\.0\.1:\d+: plaintext connections are for this worker's "
                       rf"user \(uid {os.getuid()}\) only, not uid 65534", log.read_text())
  finally:
    code = proc.stop(signal.SIGTERM)
  assert code == 0, ''.join(proc.stderr_lines)
  assert wait_gone(proc.executor_pid), 'the executor outlived its worker'
  text = log.read_text()
  assert f'worker: serving {proc.address} (plaintext, this machine and uid {os.getuid()} only)' in text
  assert 'accepted 127.0.0.1:' in text
  assert text.rstrip().endswith('stopped')


def connect_as(uid, port):
  """What a process of user `uid` reads back after sending an HTTP/2 preface to port."""
  script = ('import socket\n'
            f's = socket.create_connection(("127.0.0.1", {port}), timeout=10)\n'
            's.sendall(b"PRI * HTTP/2.0\\r\\n\\r\\nSM\\r\\n\\r\\n" + bytes(9))\n'
            'data = b""\n'
            'try:\n'
            '  while True:\n'
            '    chunk = s.recv(4096)\n'
            '    if not chunk: break\n'
            '    data += chunk\n'
            'except OSError: pass\n'
            'print(data.hex())\n')
  # setpriv switches the user after exec: `subprocess.run(user=uid)` must fork()
  # this gRPC-threaded process (no vfork with a user change), and the forked
  # child crashed once in CI (SIGSEGV before exec; gRPC: "Other threads are
  # currently calling into gRPC, skipping fork() handlers").
  result = subprocess.run(['/usr/bin/setpriv', f'--reuid={uid}', f'--regid={uid}',
                           '--clear-groups', '/usr/bin/python3', '-I', '-c', script],
                          cwd='/', capture_output=True, text=True, timeout=60)
  assert result.returncode == 0, result.stderr
  return bytes.fromhex(result.stdout.strip())


def test_a_dead_executor_stops_the_worker_with_exit_code_1(tmp_path):
  proc = worker_lib.spawn(log_file=str(tmp_path / 'worker.log'))
  os.kill(proc.executor_pid, signal.SIGKILL)
  assert proc.process.wait(timeout=60) == 1
  proc.stop()
  stderr = ''.join(proc.stderr_lines).strip()
  assert stderr == (f'worker: error: the executor (pid {proc.executor_pid}) exited; '
                    f'see {tmp_path / "worker.log"}')


# ---- GPUs and --worker_binary (pure) ---------------------------------------------------------


def test_gpu_notice_only_when_gpus_would_stay_idle(tmp_path):
  stock = str(tmp_path / 'tff' / 'worker_binary')
  gpus = ['/physical_device:GPU:0', '/physical_device:GPU:1']
  assert runtime.gpu_notice([], None, stock) is None
  assert runtime.gpu_notice([], '/opt/tff-cuda/worker_binary', stock) is None
  assert runtime.gpu_notice(gpus, '/opt/tff-cuda/worker_binary', stock) is None
  line = runtime.gpu_notice(gpus, None, stock)
  assert line == ("2 GPU(s) here (/physical_device:GPU:0, /physical_device:GPU:1) stay unused: "
                  "TFF 0.87's pip worker_binary, which runs all client work, is a CPU-only build; "
                  "--worker_binary=PATH runs a TFF executor built from source with CUDA")
  # --worker_binary naming the wheel's own binary is still the CPU build.
  assert runtime.gpu_notice(gpus[:1], stock, stock).startswith('1 GPU(s) here')


def test_check_worker_binary(tmp_path):
  binary = tmp_path / 'worker_binary'
  binary.write_text('#!/bin/sh\n')
  with pytest.raises(runtime.ExecutorError, match=r'^--worker_binary=.*: not executable \(chmod \+x\)$'):
    runtime.check_worker_binary(str(binary))
  binary.chmod(binary.stat().st_mode | stat.S_IXUSR)
  assert runtime.check_worker_binary(str(binary)) == str(binary)
  with pytest.raises(runtime.ExecutorError, match=r': not a file$'):
    runtime.check_worker_binary(str(tmp_path))
  with pytest.raises(runtime.ExecutorError, match=r'^--worker_binary=missing: no such file$'):
    runtime.check_worker_binary('missing')


def test_listen_host():
  assert worker_lib.listen_host(None, tls=False) == '127.0.0.1'
  assert worker_lib.listen_host(None, tls=True) == '0.0.0.0'
  assert worker_lib.listen_host('::1', tls=False) == '::1'
  assert worker_lib.listen_host('127.0.0.2', tls=False) == '127.0.0.2'
  assert worker_lib.listen_host('10.0.0.2', tls=True) == '10.0.0.2'
  with pytest.raises(worker_tls.WorkerConfigError, match='--host=192.168.1.5: without --worker_tls_dir'):
    worker_lib.listen_host('192.168.1.5', tls=False)


def test_a_user_built_executor_runs_instead_of_the_wheels(tmp_path):
  # A stand-in for TFF built with CUDA: a script that leaves a mark and runs the wheel's binary.
  marks = tmp_path / 'marks'
  binary = tmp_path / 'my_worker_binary'
  binary.write_text(f'#!/bin/sh\necho "$@" >> {marks}\nexec {runtime.worker_binary_path()} "$@"\n')
  binary.chmod(0o755)
  proc = worker_lib.spawn(worker_binary=str(binary), log_file=str(tmp_path / 'worker.log'),
                          concurrency=1)
  try:
    w = remote_runtime.Worker(proc.address, remote_runtime.open_channel(proc.address))
    assert w.probe(10) is None
    w.close()
    assert marks.read_text().startswith('--max_concurrent_computation_calls=1 --port=')
  finally:
    assert proc.stop() == 0
  # The driver's own executor too (train's --worker_binary).
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tensorflow_federated as tff  # pylint: disable=g-import-not-at-top

  @tff.tensorflow.computation(tf.int32)
  def add_one(x):
    return x + 1

  marks.unlink()
  with runtime.tff_runtime(worker_binary=str(binary)):
    assert add_one(1) == 2
  assert marks.read_text().startswith(
      f'--max_concurrent_computation_calls={addresses.usable_cores()} --port=')
  with pytest.raises(runtime.ExecutorError, match='--worker_binary=/nonexistent: no such file'):
    with runtime.tff_runtime(worker_binary='/nonexistent'):
      pass


def test_without_network_namespaces_the_worker_refuses_unless_told_otherwise(tmp_path, monkeypatch):
  monkeypatch.setenv('FEDSUITE_SANDBOX_NO_NAMESPACES', '1')  # The launcher's test hook.
  result = run_cli('--port=0', f'--log_file={tmp_path}/w.log')
  assert result.returncode == 1
  assert result.stderr.strip() == (
      'worker: error: --executor_isolation=required: no private network namespace on this '
      'machine (FEDSUITE_SANDBOX_NO_NAMESPACES is set); the TFF executor would listen on every '
      'interface; --executor_isolation=auto runs it so (only behind a firewall or NetworkPolicy)')
  assert result.stdout == ''
