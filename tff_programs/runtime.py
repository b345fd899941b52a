"""The TFF runtime, started and stopped deterministically.

TFF 0.87 runs every computation in a C++ `worker_binary` subprocess. Its stock
executor factory starts that process lazily, lets it inherit the parent's
stdout/stderr, and kills it only in a `__del__` that may never run: a worker that
outlives Python keeps running and holds the parent's pipes open (a hung CI job).

This module owns the worker instead:

* `LocalWorker` starts `worker_binary` with `PR_SET_PDEATHSIG` (Linux), so the
  kernel ends it when the Python process dies for any reason, even SIGKILL; its
  output goes to a log file, never to the parent's pipes; its environment carries a
  tag (`FEDSUITE_WORKER_TAG`) so tests can find exactly the workers a run started.
* `tff_runtime()` is a context manager that installs a TFF execution context backed
  by such a worker and shuts the worker down on exit, whether the block ends
  normally, by an exception or by Ctrl-C. An `atexit` hook covers notebooks that
  never leave the block.

The worker listens on all interfaces (it accepts only `--port`); its port is picked
at random and it lives only as long as the run. See README "Security".
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from typing import Optional

WORKER_TAG_ENV = 'FEDSUITE_WORKER_TAG'
_PR_SET_PDEATHSIG = 1
_GRPC_MAX_MESSAGE_BYTES = 2 * 1000 * 1000 * 1000
_GRPC_OPTIONS = [
    ('grpc.max_message_length', _GRPC_MAX_MESSAGE_BYTES),
    ('grpc.max_receive_message_length', _GRPC_MAX_MESSAGE_BYTES),
    ('grpc.max_send_message_length', _GRPC_MAX_MESSAGE_BYTES),
]


def worker_binary_path() -> str:
  """Path of the `worker_binary` shipped inside the tensorflow_federated wheel."""
  import tensorflow_federated  # pylint: disable=g-import-not-at-top

  return os.path.join(
      os.path.dirname(tensorflow_federated.__file__), 'data', 'worker_binary'
  )


def _die_with_parent() -> None:  # pragma: no cover - runs in the child.
  """preexec_fn: ask the kernel to SIGTERM this child when its parent dies."""
  try:
    libc = ctypes.CDLL('libc.so.6', use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
  except OSError:
    pass  # Not Linux: rely on shutdown()/atexit.


class LocalWorker:
  """One `worker_binary` process, started on demand and stopped explicitly."""

  def __init__(
      self,
      *,
      max_concurrent_computation_calls: int = -1,
      log_path: Optional[str] = None,
      tag: Optional[str] = None,
  ):
    self._max_concurrent = max_concurrent_computation_calls
    self._log_path = log_path
    self.tag = tag or f'{os.getpid()}-{time.monotonic_ns()}'
    self._process: Optional[subprocess.Popen[bytes]] = None
    self._stub = None
    self._lock = threading.Lock()

  @property
  def pid(self) -> Optional[int]:
    return self._process.pid if self._process is not None else None

  def get_stub(self):
    """Returns a ready gRPC stub, (re)starting the worker if it is not running."""
    import grpc  # pylint: disable=g-import-not-at-top
    import portpicker  # pylint: disable=g-import-not-at-top
    from tensorflow_federated.python.core.impl.executors import remote_executor_grpc_stub  # pylint: disable=g-import-not-at-top

    with self._lock:
      if self._stub is not None and self._stub.is_ready:
        return self._stub
      self._stop_process()
      port = portpicker.pick_unused_port()
      log_path = self._log_path or os.path.join(
          tempfile.gettempdir(), f'fedsuite_worker_{self.tag}.log'
      )
      env = dict(os.environ, **{WORKER_TAG_ENV: self.tag})
      with open(log_path, 'ab') as log:
        self._process = subprocess.Popen(
            [
                worker_binary_path(),
                f'--port={port}',
                f'--max_concurrent_computation_calls={self._max_concurrent}',
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            env=env,
            preexec_fn=_die_with_parent if sys.platform == 'linux' else None,
            close_fds=True,
        )
      channel = grpc.insecure_channel(f'localhost:{port}', _GRPC_OPTIONS)
      self._stub = remote_executor_grpc_stub.RemoteExecutorGrpcStub(channel)
      deadline = time.monotonic() + 60
      while not self._stub.is_ready:
        if self._process.poll() is not None:
          raise RuntimeError(
              f'TFF worker_binary exited with code {self._process.returncode};'
              f' see {log_path}'
          )
        if time.monotonic() > deadline:
          self._stop_process()
          raise RuntimeError(f'TFF worker_binary did not start; see {log_path}')
        time.sleep(0.05)
      return self._stub

  def _stop_process(self) -> None:
    process, self._process, self._stub = self._process, None, None
    if process is None or process.poll() is not None:
      return
    process.send_signal(signal.SIGINT)
    try:
      process.wait(timeout=5)
    except subprocess.TimeoutExpired:
      process.kill()
      process.wait(timeout=5)

  def shutdown(self) -> None:
    """Stops the worker process (idempotent)."""
    with self._lock:
      self._stop_process()


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
    *, max_concurrent_computation_calls: int = -1, log_path: Optional[str] = None
) -> Iterator[LocalWorker]:
  """Installs a TFF execution context for the block; stops its worker on exit.

  Usage:
    with tff_runtime():
      state = process.initialize()  # worker starts lazily here
    # worker_binary is gone here, whatever happened inside the block.

  Yields:
    The `LocalWorker` (its `tag` identifies the process in tests).
  """
  from tensorflow_federated.python.core.impl.context_stack import context_stack_impl  # pylint: disable=g-import-not-at-top

  worker = LocalWorker(
      max_concurrent_computation_calls=max_concurrent_computation_calls,
      log_path=log_path,
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


def tagged_worker_pids(tag: Optional[str] = None) -> list[int]:
  """PIDs of running worker_binary processes (with `tag`, only that run's)."""
  import psutil  # pylint: disable=g-import-not-at-top

  pids = []
  for proc in psutil.process_iter(['pid', 'name', 'cmdline']):
    try:
      cmdline = proc.info['cmdline'] or []
      if not cmdline or not cmdline[0].endswith('worker_binary'):
        continue
      if proc.status() == psutil.STATUS_ZOMBIE:
        continue
      if tag is not None and proc.environ().get(WORKER_TAG_ENV) != tag:
        continue
      pids.append(proc.info['pid'])
    except (psutil.NoSuchProcess, psutil.AccessDenied):
      continue
  return pids


install_default_context()
