r"""A FedSuite worker: TFF's executor service for a driver started with --workers.

    python -m tff_programs.worker --port=8000          # serves 127.0.0.1:8000 (plaintext)
    python -m tff_programs.worker --port=8443 --worker_tls_dir=certs/worker
                                                        # serves 0.0.0.0:8443 (mutual TLS)
    python -m tff_programs.worker --port=8443 --worker_tls_dir=certs/worker \
        --worker_binary=/opt/tff-cuda/worker_binary     # a TFF executor built with CUDA

The executor (`worker_binary`, or --worker_binary) is started through
FedSuite's runtime (`runtime.LocalWorker`): it runs in a private network
namespace, so its own port exists on no interface of this machine, and it is
reached only through its launcher's Unix socket. This program relays HOST:PORT
to that socket (`worker_tls.Relay`):

* without --worker_tls_dir only on a loopback address (the default
  127.0.0.1), for a driver on this machine run by the same user (connections
  from other users' sockets are refused). Another --host is refused in one line.
* with --worker_tls_dir (ca.pem, cert.pem, key.pem; `python -m
  tff_programs.worker_tls make-ca` makes a test CA) on --host (default
  0.0.0.0): mutual TLS; only clients with a certificate from that CA get in.

It prints one line with the address it serves (then the driver can connect),
logs (its own lines and the executor's) to --log_file, and on Ctrl-C or
SIGTERM stops the executor and exits 0. If the executor dies, it exits 1 (a
supervisor restarts it; the driver has moved its clients elsewhere).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import importlib.util
import logging
import os
import re
import selectors
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from typing import Optional

from tff_programs import quiet_tf
from tff_programs import worker_tls
from tff_programs.remote import addresses

EXIT_OK, EXIT_EXECUTOR_DIED, EXIT_USAGE = 0, 1, 2


def listen_host(host: Optional[str], tls: bool) -> str:
  """The address to serve; WorkerConfigError (one line) for a non-loopback
  address without TLS."""
  if host is None:
    return '0.0.0.0' if tls else '127.0.0.1'
  if not tls and not worker_tls.is_loopback_host(host):
    raise worker_tls.WorkerConfigError(
        f'--host={host}: without --worker_tls_dir a worker serves this machine only '
        '(127.0.0.1 or ::1); give --worker_tls_dir to serve other machines')
  return host


def check_port(port: int) -> int:
  if not 0 <= port < 65536:
    raise worker_tls.WorkerConfigError(f'--port={port}: must be 0-65535 (0: any free port)')
  return port


def check_concurrency(calls: int) -> int:
  """`calls` if -1 (unlimited) or >= 1 (the executor's --max_concurrent_computation_calls)."""
  problem = addresses.concurrency_problem(calls)
  if problem:
    raise worker_tls.WorkerConfigError(f'--concurrency={calls}: {problem}')
  return calls


def stock_worker_binary() -> str:
  """The wheel's worker_binary path, found without importing TensorFlow."""
  spec = importlib.util.find_spec('tensorflow_federated')
  if spec is None or not spec.submodule_search_locations:
    raise worker_tls.WorkerConfigError('tensorflow_federated is not installed')
  return os.path.join(list(spec.submodule_search_locations)[0], 'data', 'worker_binary')


def _process_alive(pid: Optional[int]) -> bool:
  """Whether `pid` runs (a zombie awaiting its reaper counts as gone)."""
  if pid is None:
    return False
  try:
    with open(f'/proc/{pid}/stat') as f:
      return f.read().rsplit(')', 1)[1].split()[0] not in ('Z', 'X')
  except OSError:
    return False


def _logger(path: str) -> logging.Logger:
  log = logging.getLogger('fedsuite.worker')
  log.setLevel(logging.INFO)
  log.propagate = False
  handler = logging.FileHandler(path)
  handler.setFormatter(logging.Formatter('%(asctime)s fedsuite-worker: %(message)s'))
  log.addHandler(handler)
  return log


async def _serve(executor, relay: worker_tls.Relay, host: str, port: int, describe,
                 log: logging.Logger) -> int:
  """Serves until SIGINT/SIGTERM (returns 0) or until the executor dies (returns 1)."""
  loop = asyncio.get_running_loop()
  stop = asyncio.Event()
  for sig in (signal.SIGINT, signal.SIGTERM):
    loop.add_signal_handler(sig, stop.set)
  try:
    bound = await relay.start(host, port)
  except OSError as e:
    raise worker_tls.WorkerConfigError(f'--host={host} --port={port}: cannot listen ({e.strerror or e})') from e
  address = f'[{host}]:{bound}' if ':' in host else f'{host}:{bound}'
  line = describe(address)
  log.info(line)
  print(line, flush=True)
  code = EXIT_OK
  while not stop.is_set():
    try:
      await asyncio.wait_for(stop.wait(), timeout=0.5)
    except asyncio.TimeoutError:
      pass
    if not (_process_alive(executor.launcher_pid) and _process_alive(executor.pid)):
      # Ctrl-C in a terminal signals the executor's launcher too: a stop
      # request that arrives with the executor's death is a clean stop.
      await asyncio.sleep(0.5)
      code = EXIT_OK if stop.is_set() else EXIT_EXECUTOR_DIED
      break
  await relay.close()
  return code


def run(port: int, *, host: Optional[str] = None, tls_dir: Optional[str] = None,
        worker_binary: Optional[str] = None, log_file: Optional[str] = None,
        isolation: str = 'required', concurrency: int = 0) -> int:
  """Validates the flags, starts the executor and serves; returns the exit code."""
  check_port(port)
  check_concurrency(concurrency)
  tls = tls_dir is not None
  host = listen_host(host, tls)
  ssl_context = worker_tls.server_context(tls_dir) if tls else None
  log_file = os.path.abspath(log_file or os.path.join(
      tempfile.gettempdir(), f'fedsuite_worker_{os.getpid()}.log'))
  from tff_programs import runtime  # pylint: disable=g-import-not-at-top  (imports TensorFlow)

  try:
    binary = runtime.check_worker_binary(worker_binary) if worker_binary else stock_worker_binary()
  except runtime.ExecutorError as e:
    raise worker_tls.WorkerConfigError(str(e)) from e
  log = _logger(log_file)
  notice = runtime.gpu_notice(runtime.visible_gpus(), worker_binary)
  if notice:
    log.info(notice)
    print(f'worker: {notice}', file=sys.stderr, flush=True)
  executor = runtime.LocalWorker(
      binary=binary, max_concurrent_computation_calls=concurrency, log_path=log_file,
      isolation=isolation)
  try:
    try:
      executor.get_stub()  # Starts it and waits until it answers.
    except runtime.ExecutorError as e:
      reason = str(e).splitlines()[0]
      if reason.startswith('--require_private_executor:'):  # The driver's flag; here:
        reason = ('--executor_isolation=required:' + reason.split(':', 1)[1] +
                  '; --executor_isolation=auto runs it so (only behind a firewall or NetworkPolicy)')
      message = f'worker: error: {reason}'
      log.info(message)
      print(message, file=sys.stderr, flush=True)
      return EXIT_EXECUTOR_DIED
    where = ('in a private network namespace' if executor.isolated else
             f'on port {executor.port} of every interface (no private network namespace)')
    mode = 'mutual TLS' if tls else f'plaintext, this machine and uid {os.getuid()} only'

    def describe(address: str) -> str:
      return (f'worker: serving {address} ({mode}); executor pid {executor.pid} {where}; '
              f'log {log_file}')

    relay = worker_tls.Relay(executor.socket_path, ssl_context=ssl_context, log=log.info)
    code = asyncio.run(_serve(executor, relay, host, port, describe, log))
    if code == EXIT_EXECUTOR_DIED:
      message = f'worker: error: the executor (pid {executor.pid}) exited; see {log_file}'
      log.info(message)
      print(message, file=sys.stderr, flush=True)
    return code
  finally:
    executor.shutdown()
    log.info('stopped')


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog='python -m tff_programs.worker',
      description='Serves TFF\'s executor service to a FedSuite driver (--workers).')
  parser.add_argument('--port', type=int, required=True,
                      help='TCP port to serve (0: any free port; the line printed at start-up names it)')
  parser.add_argument('--host', default=None,
                      help='address to serve: default 127.0.0.1; with --worker_tls_dir 0.0.0.0 '
                      '(every IPv4 interface; :: for IPv6). Without TLS only loopback addresses.')
  parser.add_argument('--worker_tls_dir', default=None,
                      help='folder with ca.pem, cert.pem (this worker\'s certificate) and key.pem: '
                      'serve mutual TLS; drivers need a client certificate from the same CA')
  parser.add_argument('--worker_binary', default=None,
                      help='TFF executor service binary to run instead of the wheel\'s (a CPU '
                      'build), e.g. TFF built from source with CUDA')
  parser.add_argument('--log_file', default=None,
                      help='log of this worker and its executor (default: '
                      'fedsuite_worker_<pid>.log in the temp folder)')
  parser.add_argument('--concurrency', type=int, default=0,
                      help='client computations the executor runs at once (its '
                      '--max_concurrent_computation_calls): 0 (default): one per CPU core of this '
                      'machine; -1 (TFF\'s default): all the driver sends; N: N (see train.py '
                      '--worker_concurrency). Changes no result.')
  parser.add_argument('--executor_isolation', choices=('required', 'auto'), default='required',
                      help='required (default): refuse to run when the executor cannot get a '
                      'private network namespace; auto: then run it in this machine\'s namespace '
                      'with a warning (its raw port listens on every interface: only where a '
                      'firewall or a Kubernetes NetworkPolicy blocks it)')
  return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
  args = build_parser().parse_args(argv)
  quiet_tf.silence_cpp_logs(sys.argv)  # Before `run` imports TensorFlow.
  try:
    return run(args.port, host=args.host, tls_dir=args.worker_tls_dir,
               worker_binary=args.worker_binary, log_file=args.log_file,
               isolation=args.executor_isolation, concurrency=args.concurrency)
  except KeyboardInterrupt:
    return EXIT_OK
  except (worker_tls.WorkerConfigError, OSError) as e:
    message = str(e).splitlines()[0] if str(e) else type(e).__name__
    print(f'worker: error: {message}', file=sys.stderr)
    return EXIT_USAGE


# ---- starting workers from Python (tests, benchmarks, scripts) ------------------------------

_SERVING = re.compile(r'^worker: serving (\S+) \(.*\); executor pid (\d+) .*; log (.+)$')
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclasses.dataclass
class WorkerProcess:
  """A `python -m tff_programs.worker` started by `spawn`."""

  process: subprocess.Popen
  address: str
  executor_pid: int
  log_file: str
  stderr_lines: list[str]

  @property
  def pid(self) -> int:
    return self.process.pid

  def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int:
    """Sends `sig` (if still running) and returns the exit code."""
    if self.process.poll() is None:
      self.process.send_signal(sig)
    try:
      return self.process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
      self.process.kill()
      return self.process.wait(timeout=10)


def spawn(*, port: int = 0, host: Optional[str] = None, tls_dir: Optional[str] = None,
          worker_binary: Optional[str] = None, log_file: Optional[str] = None,
          isolation: Optional[str] = None, concurrency: Optional[int] = None,
          prefix: Sequence[str] = (), start_timeout: float = 180.0) -> WorkerProcess:
  """Starts a worker process and returns once it serves (its address parsed
  from the line it prints). `prefix` runs it under another command (e.g.
  `ip netns exec NAME`). RuntimeError (with the worker's stderr) if it exits
  or stays silent for `start_timeout` seconds."""
  command = [*prefix, sys.executable, '-m', 'tff_programs.worker', f'--port={port}']
  for flag, value in (('host', host), ('worker_tls_dir', tls_dir),
                      ('worker_binary', worker_binary), ('log_file', log_file),
                      ('executor_isolation', isolation), ('concurrency', concurrency)):
    if value is not None:
      command.append(f'--{flag}={value}')
  env = dict(os.environ)
  env['PYTHONPATH'] = os.pathsep.join(p for p in (REPO_ROOT, env.get('PYTHONPATH')) if p)
  process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=env)
  stderr_lines: list[str] = []
  drain = threading.Thread(target=lambda: stderr_lines.extend(process.stderr), daemon=True)
  drain.start()
  line = ''
  with selectors.DefaultSelector() as sel:
    sel.register(process.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + start_timeout
    while time.monotonic() < deadline and process.poll() is None:
      if sel.select(timeout=0.2):
        line = process.stdout.readline()
        break
  match = _SERVING.match(line.strip())
  if match is None:
    if process.poll() is None:
      process.kill()
    process.wait(timeout=30)
    drain.join(timeout=5)
    raise RuntimeError(f'worker did not start (exit code {process.returncode}): '
                       f'{"".join(stderr_lines).strip()[-2000:]}')
  return WorkerProcess(process, match.group(1), int(match.group(2)), match.group(3),
                       stderr_lines)


if __name__ == '__main__':
  sys.exit(main())
