"""The TFF runtime, started and stopped deterministically, reachable only by its owner.

TFF 0.87 runs every computation in a C++ `worker_binary` subprocess. Its stock
executor factory starts that process lazily, lets it inherit the parent's
stdout/stderr, kills it only in a `__del__` that may never run, and lets it
listen, unauthenticated, on every interface of the machine: anyone who can
reach the port can make it run any TensorFlow graph (read and write files).

This module owns the worker instead:

* `LocalWorker` starts `worker_binary` through `executor_sandbox` (a
  stdlib-only launcher): the worker runs in a private network namespace that
  has only loopback, so its port exists on no interface of this machine; the
  driver talks to it through a Unix socket (0600, in a 0700 folder) that the
  launcher relays to the worker's loopback port; the channel is trusted only
  once the listener on the port is the worker's own socket and the worker is
  alive. Where namespaces are not available, one line at start-up names the
  port and the exposure; `isolation='required'` (`--require_private_executor`,
  or FEDSUITE_EXECUTOR_ISOLATION=required) refuses to run so.
* Lifetime: the driver holds a lifeline pipe to the launcher; when the driver
  process dies (whatever thread started the worker, even by SIGKILL) the
  launcher stops the worker, and the worker dies with the launcher. No
  `preexec_fn` runs in the (multi-threaded) driver between fork and exec. The
  worker logs to a file, never to the parent's pipes; its environment carries a
  tag (`FEDSUITE_WORKER_TAG`) so tests can find exactly the workers a run started,
  and `WORKER_ENV_DEFAULTS` (two malloc arenas) unless the user set them.
* `tff_runtime()` is a context manager that installs a TFF execution context backed
  by such a worker and shuts the worker down on exit, whether the block ends
  normally, by an exception or by Ctrl-C. An `atexit` hook covers notebooks that
  never leave the block.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from typing import Optional

from tff_programs import executor_sandbox
from tff_programs.remote import addresses

WORKER_TAG_ENV = 'FEDSUITE_WORKER_TAG'
ISOLATION_ENV = 'FEDSUITE_EXECUTOR_ISOLATION'
ISOLATIONS = ('auto', 'required', 'off')
_GRPC_MAX_MESSAGE_BYTES = 2 * 1000 * 1000 * 1000
_GRPC_OPTIONS = [(f'grpc.{name}', _GRPC_MAX_MESSAGE_BYTES) for name in (
    'max_message_length', 'max_receive_message_length', 'max_send_message_length')]
# glibc's malloc gives the worker's op threads up to 8 arenas a core, and freed
# memory stays in them: its RSS rose ~430 -> ~520 MiB over 300 short rounds.
# Two arenas: ~370 MiB, flat, the round as fast (README, Performance). A value
# the user sets wins.
WORKER_ENV_DEFAULTS = {'MALLOC_ARENA_MAX': '2'}
_START_TIMEOUT_S = 180.0


class ExecutorError(RuntimeError):
  """One-line failure to start the TFF executor (or refusal to run it exposed)."""


def worker_binary_path() -> str:
  """Path of the `worker_binary` shipped inside the tensorflow_federated wheel."""
  import tensorflow_federated  # pylint: disable=g-import-not-at-top

  return os.path.join(
      os.path.dirname(tensorflow_federated.__file__), 'data', 'worker_binary'
  )


def default_isolation() -> str:
  """FEDSUITE_EXECUTOR_ISOLATION (auto | required | off), default auto."""
  value = os.environ.get(ISOLATION_ENV, 'auto').strip().lower() or 'auto'
  if value not in ISOLATIONS:
    raise ExecutorError(f'{ISOLATION_ENV}={value!r}: allowed: {", ".join(ISOLATIONS)}')
  return value


_warned_exposed: set[int] = set()


def _warn_exposed(port: int, reason: str) -> None:
  if port in _warned_exposed:
    return
  _warned_exposed.add(port)
  print(f'warning: no private network namespace here ({reason}): the TFF executor listens on '
        f'port {port} of every interface of this machine while the run lasts (unauthenticated; '
        'it runs any TensorFlow graph it is sent). --require_private_executor refuses to run so.',
        file=sys.stderr, flush=True)


class LocalWorker:
  """One `worker_binary` process (behind its launcher), started on demand and stopped explicitly."""

  def __init__(
      self,
      *,
      max_concurrent_computation_calls: int = 0,
      log_path: Optional[str] = None,
      tag: Optional[str] = None,
      isolation: Optional[str] = None,
      binary: Optional[str] = None,
      command: Optional[list[str]] = None,
  ):
    """Args:
      max_concurrent_computation_calls: 0 (one per core), -1 (unlimited) or N.
      log_path: the worker's log file (default: a file in the temp folder).
      tag: environment tag of the worker process (default: pid-time).
      isolation: 'auto' (private network namespace if the machine allows it,
        else run exposed with a warning), 'required' (refuse to run exposed) or
        'off'; default from FEDSUITE_EXECUTOR_ISOLATION, else 'auto'.
      binary: the executor service to run (default: the wheel's worker_binary).
      command: the whole executor command without `--port` (tests use a
        stand-in); default `binary --max_concurrent_computation_calls=N`.
    """
    self._max_concurrent = addresses.concurrent_calls(max_concurrent_computation_calls)
    self._log_path = log_path
    self.tag = tag or f'{_tag_prefix(os.getpid())}{time.monotonic_ns()}'
    self.isolation = isolation or default_isolation()
    if self.isolation not in ISOLATIONS:
      raise ExecutorError(f'isolation={self.isolation!r}: allowed: {", ".join(ISOLATIONS)}')
    self._command = command
    self._binary = binary
    self._launcher: Optional[subprocess.Popen[bytes]] = None
    self._lifeline: Optional[int] = None
    self._folder: Optional[str] = None
    self._stub = None
    self._channel = None
    self.status: dict = {}
    self._lock = threading.Lock()

  @property
  def pid(self) -> Optional[int]:
    """The worker_binary process id (None when not running)."""
    return self.status.get('worker_pid') if self._launcher is not None else None

  @property
  def port(self) -> Optional[int]:
    """The worker's TCP port (inside its private namespace when `isolated`)."""
    return self.status.get('port') if self._launcher is not None else None

  @property
  def isolated(self) -> bool:
    return bool(self.status.get('isolated'))

  @property
  def launcher_pid(self) -> Optional[int]:
    return self._launcher.pid if self._launcher is not None else None

  @property
  def socket_path(self) -> Optional[str]:
    return os.path.join(self._folder, 'executor.sock') if self._folder else None

  @property
  def log_path(self) -> str:
    return self._log_path or os.path.join(tempfile.gettempdir(), f'fedsuite_worker_{self.tag}.log')

  def move_log(self, path: str) -> None:
    """Moves the worker's log file to `path` (same file system); the running
    worker keeps writing to it, and a restarted worker appends there."""
    with self._lock:
      if os.path.exists(self.log_path):
        os.replace(self.log_path, path)
      self._log_path = path

  def _alive(self) -> bool:
    if self._launcher is None or self._launcher.poll() is not None:
      return False
    try:
      os.kill(self.status['worker_pid'], 0)
    except (OSError, KeyError):
      return False
    return True

  def get_stub(self):
    """Returns a ready gRPC stub, (re)starting the worker if it is not running."""
    with self._lock:
      if self._stub is not None and self._alive() and self._stub.is_ready:
        return self._stub
      self._stop_process()
      self._start()
      return self._stub

  def _start(self) -> None:
    import grpc  # pylint: disable=g-import-not-at-top
    from tensorflow_federated.python.core.impl.executors import remote_executor_grpc_stub  # pylint: disable=g-import-not-at-top

    log_path = self.log_path
    self._folder = tempfile.mkdtemp(prefix='fedsuite_executor_')  # mode 0700
    lifeline_r, self._lifeline = os.pipe()  # Not inherited by other children.
    status_r, status_w = os.pipe()
    command = self._command or [self._binary or worker_binary_path(),
                                f'--max_concurrent_computation_calls={self._max_concurrent}']
    env = {**WORKER_ENV_DEFAULTS, **os.environ, WORKER_TAG_ENV: self.tag}
    with open(log_path, 'ab') as log:
      self._launcher = subprocess.Popen(
          [sys.executable, '-I', os.path.abspath(executor_sandbox.__file__),
           f'--socket={self.socket_path}', f'--lifeline_fd={lifeline_r}',
           f'--status_fd={status_w}', f'--log={log_path}',
           f'--isolation={"off" if self.isolation == "off" else "auto"}', '--', *command],
          stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env, close_fds=True,
          pass_fds=(lifeline_r, status_w))
    os.close(lifeline_r)
    os.close(status_w)
    try:
      self.status = self._read_status(status_r, log_path)
    finally:
      os.close(status_r)
    if not self.status.get('ok'):
      self._stop_process()
      raise ExecutorError(f'TFF executor did not start: {self.status.get("error")}; see {log_path}')
    if not self.status['isolated']:
      if self.isolation == 'required':
        reason = self.status.get('reason')
        self._stop_process()
        raise ExecutorError(
            f'--require_private_executor: no private network namespace on this machine ({reason}); '
            'the TFF executor would listen on every interface')
      if self.isolation == 'auto':
        _warn_exposed(self.status['port'], self.status.get('reason', ''))
    self._channel = grpc.insecure_channel(f'unix:{self.socket_path}', _GRPC_OPTIONS)
    self._stub = remote_executor_grpc_stub.RemoteExecutorGrpcStub(self._channel)
    deadline = time.monotonic() + 60
    while not self._stub.is_ready:
      if not self._alive() or time.monotonic() > deadline:
        self._stop_process()
        raise ExecutorError(f'TFF executor stopped before its channel was ready; see {log_path}')
      time.sleep(0.05)
    if not self._alive():  # Alive after the channel turned ready, too.
      self._stop_process()
      raise ExecutorError(f'TFF executor exited after its channel was ready; see {log_path}')

  def _read_status(self, fd: int, log_path: str) -> dict:
    """The launcher's one JSON status line (or an error if it exits without one)."""
    sel = selectors.DefaultSelector()
    sel.register(fd, selectors.EVENT_READ)
    data = b''
    deadline = time.monotonic() + _START_TIMEOUT_S
    try:
      while b'\n' not in data:
        if time.monotonic() > deadline:
          return {'ok': False, 'error': f'no answer from the launcher in {_START_TIMEOUT_S:.0f} s'}
        if sel.select(timeout=0.5):
          chunk = os.read(fd, 4096)
          if not chunk:
            break
          data += chunk
    finally:
      sel.close()
    if not data.strip():
      code = self._launcher.wait(timeout=10)
      return {'ok': False, 'error': f'the launcher exited with code {code}'}
    return json.loads(data.splitlines()[0])

  def _stop_process(self) -> None:
    launcher, self._launcher = self._launcher, None
    worker_pid = self.status.get('worker_pid')
    self._stub = None
    if self._channel is not None:
      self._channel.close()
      self._channel = None
    if self._lifeline is not None:
      os.close(self._lifeline)  # The launcher stops the worker and exits.
      self._lifeline = None
    if launcher is not None:
      try:
        launcher.wait(timeout=10)
      except subprocess.TimeoutExpired:
        launcher.kill()  # The worker gets SIGKILL with it (PR_SET_PDEATHSIG).
        launcher.wait(timeout=5)
    if worker_pid is not None:
      _wait_gone(worker_pid, timeout=10)
    if self._folder is not None:
      shutil.rmtree(self._folder, ignore_errors=True)
      self._folder = None

  def shutdown(self) -> None:
    """Stops the worker process (idempotent)."""
    with self._lock:
      self._stop_process()


def _wait_gone(pid: int, timeout: float) -> None:
  """Waits until `pid` has exited (a zombie awaiting its reaper counts as gone)."""
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline:
    try:
      with open(f'/proc/{pid}/stat') as f:
        if f.read().rsplit(')', 1)[1].split()[0] in ('Z', 'X'):
          return
    except OSError:
      return
    time.sleep(0.02)


def _executor_factory(worker: LocalWorker, default_num_clients: int = 0):
  """A TFF executor factory whose executors talk to `worker`."""
  from tensorflow_federated.python.core.impl.executor_stacks import python_executor_stacks  # pylint: disable=g-import-not-at-top
  from tensorflow_federated.python.core.impl.executors import remote_executor  # pylint: disable=g-import-not-at-top
  from tensorflow_federated.python.core.impl.types import placements  # pylint: disable=g-import-not-at-top

  def stack_fn(cardinalities):
    if cardinalities.get(placements.CLIENTS) is None:
      cardinalities[placements.CLIENTS] = default_num_clients
    executor = remote_executor.RemoteExecutor(worker.get_stub())
    executor.set_cardinalities(cardinalities)
    return executor

  return python_executor_stacks.ResourceManagingExecutorFactory(
      executor_stack_fn=stack_fn
  )


def _sync_context(worker: LocalWorker):
  """A synchronous TFF execution context backed by `worker`."""
  import tensorflow_federated as tff  # pylint: disable=g-import-not-at-top
  from tensorflow_federated.python.core.backends.native import compiler  # pylint: disable=g-import-not-at-top
  from tensorflow_federated.python.core.environments.tensorflow_frontend import tensorflow_computation  # pylint: disable=g-import-not-at-top
  from tensorflow_federated.python.core.impl.execution_contexts import sync_execution_context  # pylint: disable=g-import-not-at-top

  del tff
  return sync_execution_context.SyncExecutionContext(
      executor_fn=_executor_factory(worker),
      compiler_fn=compiler.desugar_and_transform_to_native,
      transform_args=tensorflow_computation.transform_args,
      transform_result=tensorflow_computation.transform_result,
  )


_live_workers: set[LocalWorker] = set()


def _shutdown_all() -> None:
  for worker in list(_live_workers):
    worker.shutdown()
    _live_workers.discard(worker)


atexit.register(_shutdown_all)


_default_worker: Optional[LocalWorker] = None


def install_default_context() -> LocalWorker:
  """Replaces the stock context `import tensorflow_federated` installs.

  The stock context's worker is owned by a `__del__` (see module docstring);
  the managed one starts lazily like it, but is stopped at exit and dies with
  the process. Called on import of this module, so any FedSuite code path that
  runs a computation outside `tff_runtime()` is safe as well. Idempotent.
  """
  global _default_worker
  import gc  # pylint: disable=g-import-not-at-top

  from tensorflow_federated.python.core.impl.context_stack import context_stack_impl  # pylint: disable=g-import-not-at-top

  if _default_worker is None:
    _default_worker = LocalWorker()
    _live_workers.add(_default_worker)
    context_stack_impl.context_stack.set_default_context(_sync_context(_default_worker))
    gc.collect()  # Frees the stock ServiceManager now, while `subprocess` is alive.
  return _default_worker


@contextlib.contextmanager
def tff_runtime(
    *, max_concurrent_computation_calls: int = 0, log_path: Optional[str] = None,
    isolation: Optional[str] = None, worker_binary: Optional[str] = None,
) -> Iterator[LocalWorker]:
  """Installs a TFF execution context for the block; stops its worker on exit.

  Usage:
    with tff_runtime():
      state = process.initialize()  # worker starts lazily here
    # worker_binary is gone here, whatever happened inside the block.

  Args:
    max_concurrent_computation_calls: 0 (one per core), -1 (unlimited) or N.
    log_path: the worker's log file.
    isolation: 'auto' | 'required' | 'off' (see `LocalWorker`).
    worker_binary: an executor service binary to run instead of the wheel's
      (`--worker_binary`, e.g. TFF built with CUDA); checked by
      `check_worker_binary`. None: the wheel's.

  Yields:
    The `LocalWorker` (its `tag` identifies the process in tests).
  """
  from tensorflow_federated.python.core.impl.context_stack import context_stack_impl  # pylint: disable=g-import-not-at-top

  worker = LocalWorker(
      max_concurrent_computation_calls=max_concurrent_computation_calls,
      log_path=log_path,
      isolation=isolation,
      binary=check_worker_binary(worker_binary) if worker_binary is not None else None,
  )
  _live_workers.add(worker)
  previous = context_stack_impl.context_stack.current
  context_stack_impl.context_stack.set_default_context(_sync_context(worker))
  try:
    yield worker
  finally:
    worker.shutdown()
    _live_workers.discard(worker)
    context_stack_impl.context_stack.set_default_context(previous)


def check_worker_binary(path: str, flag: str = '--worker_binary') -> str:
  """The absolute path of a user-built executor binary; ExecutorError (one line)
  unless it is an executable file."""
  full = os.path.abspath(os.path.expanduser(path))
  if not os.path.exists(full):
    raise ExecutorError(f'{flag}={path}: no such file')
  if not os.path.isfile(full):
    raise ExecutorError(f'{flag}={path}: not a file')
  if not os.access(full, os.X_OK):
    raise ExecutorError(f'{flag}={path}: not executable (chmod +x)')
  return full


def visible_gpus() -> list[str]:
  """GPUs of this machine: those TensorFlow sees, else those the NVIDIA driver
  lists (/proc/driver/nvidia/gpus; TF without CUDA libraries sees none)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  found = [d.name for d in tf.config.list_physical_devices('GPU')]
  if not found:
    try:
      found = [f'nvidia:{bus}' for bus in sorted(os.listdir('/proc/driver/nvidia/gpus'))]
    except OSError:
      pass
  return found


def gpu_notice(gpus: list[str], worker_binary: Optional[str],
               stock_binary: Optional[str] = None) -> Optional[str]:
  """One line when this machine has GPUs that client work cannot use, else None.

  TFF 0.87's pip `worker_binary` is a CPU-only build, and every TFF
  computation (client training included) runs in it: the GPUs stay idle unless
  `--worker_binary` names an executor built with CUDA.

  Args:
    gpus: GPU names (`visible_gpus()`).
    worker_binary: the --worker_binary flag (None: the wheel's binary).
    stock_binary: the wheel's binary path (default `worker_binary_path()`), to
      recognize --worker_binary pointing at it.
  """
  if not gpus:
    return None
  if worker_binary is not None:
    stock = stock_binary or worker_binary_path()
    if os.path.realpath(worker_binary) != os.path.realpath(stock):
      return None
  return (f'{len(gpus)} GPU(s) here ({", ".join(gpus[:4])}) stay unused: TFF 0.87\'s pip '
          'worker_binary, which runs all client work, is a CPU-only build; --worker_binary=PATH '
          'runs a TFF executor built from source with CUDA')


def _tag_prefix(pid: int) -> str:
  """How a default worker tag begins: the PID of the process that started it."""
  return f'{pid}-'


def tagged_worker_pids(tag: Optional[str] = None, *, started_by: Optional[int] = None) -> list[int]:
  """PIDs of running worker_binary processes (with `tag`, only that run's; with
  `started_by`, only those of executors of that process, whose default tag
  begins with its PID)."""
  import psutil  # pylint: disable=g-import-not-at-top

  pids = []
  for proc in psutil.process_iter(['pid', 'name', 'cmdline']):
    try:
      cmdline = proc.info['cmdline'] or []
      if not cmdline or not cmdline[0].endswith('worker_binary'):
        continue
      if proc.status() == psutil.STATUS_ZOMBIE:
        continue
      filtered = tag is not None or started_by is not None
      worker_tag = proc.environ().get(WORKER_TAG_ENV, '') if filtered else ''
      if tag is not None and worker_tag != tag:
        continue
      if started_by is not None and not worker_tag.startswith(_tag_prefix(started_by)):
        continue
      pids.append(proc.info['pid'])
    except (psutil.NoSuchProcess, psutil.AccessDenied):
      continue
  return pids


install_default_context()
