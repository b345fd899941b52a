"""`WorkerPool`: a TFF synchronous context spreading a call's clients over workers.

* A computation whose argument holds no clients (`initialize`, weight getters
  and setters, FedGKT's server phase) runs in the context that was current
  when the pool was entered: the driver's own sandboxed worker.
* A computation with clients (a round's `next`, FedGKT's client phase) is
  split (`split`: before / aggregate / after). The clients are cut into
  N = len(addresses) contiguous partitions (`partitions`), always N whatever
  workers are lost, so the split never depends on failures. Each partition's
  `before` runs on a worker (client training happens here) through
  `tff.framework.RemoteExecutor`; the aggregation inputs of all partitions
  come back (one model update, weight and metrics per client: what each
  client uploads in federated learning) and `aggregate` runs once, on the
  driver, over all clients in client order; `after` runs on the worker that
  still holds the partition's intermediate state (once if the result has no
  per-client values; per partition, in partition order, when it has: FedPer's
  client states).

Why not TFF's `MergeableCompExecutionContext` over `AsyncExecutionContext`s
(`tff.backends.native.create_mergeable_comp_execution_context`)? In TFF 0.87
(1) `RemoteExecutor` makes blocking gRPC calls inside its coroutines, so
contexts sharing one event loop run their workers one after another; (2) the
partial aggregates are merged in completion order, so float sums vary from run
to run, and per-client results are concatenated in completion order, so client
states could be handed to the wrong clients; (3) its compiler
(`compile_to_mergeable_comp_form`) passes nothing but the aggregate from
`up_to_merge` to `after_merge`, so `after_merge` holds the client work again:
FedPer's client states come out of it, i.e. every client trains twice; (4)
`AsyncExecutionContext` retries a dead worker forever; (5) its partitioner
gives every partition the first clients again when the argument's last
element is not per-client (FedGKT's client phase ends with the server's
learning rate). Here each partition runs in its own thread, nothing depends
on completion order, and no client work runs twice (the divisive split hands
the intermediate state over).

A worker that dies or becomes unreachable (gRPC UNAVAILABLE) mid-round is
marked lost (one line on stderr names it); its partitions are run again on the
remaining workers, so the round completes with the same result. When no worker
is left the round raises `WorkersLostError` (one line naming each worker and
why) before anything of the round is returned, so the program loop's last
checkpoint stays the resume point. A lost worker stays out of the run (restart
the run with `--resume` to use it again).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import os
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Optional

import grpc
import tensorflow as tf
from tensorflow_federated.python.common_libs import structure
from tensorflow_federated.python.core.backends.native import compiler
from tensorflow_federated.python.core.environments.tensorflow_frontend import tensorflow_computation
from tensorflow_federated.python.core.impl.context_stack import context_base
from tensorflow_federated.python.core.impl.context_stack import context_stack_impl
from tensorflow_federated.python.core.impl.executors import remote_executor
from tensorflow_federated.python.core.impl.types import placements
from tensorflow_federated.python.core.impl.types import type_conversions

# pylint: disable=g-importing-member
from tff_programs.remote.addresses import check_workers
from tff_programs.remote.errors import WorkerConfigError
from tff_programs.remote.errors import WorkerLost
from tff_programs.remote.errors import WorkersLostError
from tff_programs.remote.errors import one_line
from tff_programs.remote.partitions import count_clients
from tff_programs.remote.partitions import join_partitions
from tff_programs.remote.partitions import normalize_arg
from tff_programs.remote.partitions import partition_bounds
from tff_programs.remote.partitions import per_client_paths
from tff_programs.remote.partitions import slice_clients
from tff_programs.remote.partitions import with_per_client_parts
from tff_programs.remote.split import Plan
from tff_programs.remote.split import split_computation
from tff_programs.remote.workers import Traffic
from tff_programs.remote.workers import Worker
from tff_programs.remote.workers import open_channel
# pylint: enable=g-importing-member

CONNECT_TIMEOUT_S = 30.0


class _Partition:
  """A contiguous slice of a call's clients, and its values on the worker holding it."""

  def __init__(self, index: int, arg: Any, num_clients: int):
    self.index = index
    self.arg = arg
    self.num_clients = num_clients
    self.worker: Optional[Worker] = None
    self.executor: Optional[remote_executor.RemoteExecutor] = None
    self.arg_value = None  # RemoteValue of `arg` on the worker.
    self.before_value = None  # RemoteValue of `before`'s result on the worker.
    self.aggregation_inputs = None  # Computed part 0 of `before`'s result.
    self.output = None  # Computed result of `after` (or of the whole computation).

  def release(self) -> None:
    """Frees the partition's executor on its worker (the values go with it)."""
    executor, self.executor = self.executor, None
    self.arg_value = self.before_value = None
    if executor is not None:
      executor.close()


def _log_stderr(line: str) -> None:
  print(line, file=sys.stderr, flush=True)


class WorkerPool(context_base.SyncContext):
  """A TFF synchronous execution context spreading clients over executor services.

  See the module docstring. `addresses` keeps the --workers order; `lost`
  maps a lost worker's address to the reason.
  """

  def __init__(self, workers: Sequence[Worker], fallback: context_base.SyncContext, *,
               log: Callable[[str], None] = _log_stderr):
    self._workers = list(workers)
    self._fallback = fallback
    self._log = log
    self._plans: dict[int, tuple[Any, Plan]] = {}
    self._lock = threading.Lock()
    self._threads = concurrent.futures.ThreadPoolExecutor(
        max_workers=2 * len(self._workers), thread_name_prefix='fedsuite-workers')

  @property
  def addresses(self) -> tuple[str, ...]:
    return tuple(w.address for w in self._workers)

  @property
  def lost(self) -> dict[str, str]:
    return {w.address: w.lost for w in self._workers if w.lost is not None}

  def traffic(self) -> dict[str, Traffic]:
    """Running totals per worker address (a snapshot)."""
    return {w.address: w.traffic for w in self._workers}

  def traffic_since(self, snapshot: Mapping[str, Traffic]) -> dict[str, Traffic]:
    """Per worker, what was exchanged since `snapshot = pool.traffic()`."""
    now = self.traffic()
    return {a: now[a] - snapshot.get(a, Traffic()) for a in now}

  def check_shared_file(self, path: str) -> dict[str, Optional[str]]:
    """Whether each live worker reads the file `path` as the driver does.

    Client datasets built from files (`datasets.client_files`) are read by the
    executor: remote workers need the driver's files at the same path (shared
    storage). Returns, per worker address, None if the worker's executor read
    the same bytes, else a one-line reason (missing, different content).
    """
    expected = open(path, 'rb').read()
    absolute = os.path.abspath(path)

    @tensorflow_computation.tf_computation
    def read():
      return tf.io.read_file(absolute)

    comp = compiler.desugar_and_transform_to_native(read)

    def check(worker: Worker) -> Optional[str]:
      async def run():
        executor = remote_executor.RemoteExecutor(worker.stub)
        executor.set_cardinalities({placements.CLIENTS: 1})
        try:
          fn = await executor.create_value(comp, comp.type_signature)
          return await (await executor.create_call(fn)).compute()
        finally:
          executor.close()

      try:
        got = asyncio.run(run())
      except WorkerLost as e:
        return f'unreachable ({e.reason})'
      except grpc.RpcError as e:
        details = e.details() if isinstance(e, grpc.Call) else str(e)
        return one_line(f'cannot read {absolute}: {details}')
      if got != expected:
        return f'{absolute} differs from the driver\'s ({len(got)} vs {len(expected)} bytes)'
      return None

    live = [w for w in self._workers if w.lost is None]
    return dict(zip((w.address for w in live), self._threads.map(check, live)))

  def close(self) -> None:
    self._threads.shutdown(wait=True)
    for worker in self._workers:
      worker.close()

  def invoke(self, comp, arg):
    """Runs `comp` on the workers if its argument holds clients, else locally."""
    parameter = comp.type_signature.parameter
    clients = 0
    if arg is not None and parameter is not None:
      try:
        clients = count_clients(normalize_arg(arg), parameter)
      except Exception:  # pylint: disable=broad-except  (the local context reports it)
        clients = 0
    if clients <= 0:
      return self._fallback.invoke(comp, arg)
    return self._invoke_on_workers(comp, arg)

  def plan(self, comp) -> Plan:
    """The split of `comp` (cached per computation object)."""
    with self._lock:
      cached = self._plans.get(id(comp))
    if cached is not None and cached[0] is comp:
      return cached[1]
    plan = split_computation(comp, name=_name(comp))
    with self._lock:
      self._plans[id(comp)] = (comp, plan)  # Keeps `comp` alive: its id is not reused.
    return plan

  def _invoke_on_workers(self, comp, arg):
    plan = self.plan(comp)
    parameter = comp.type_signature.parameter
    arg = normalize_arg(arg)
    partitions = [
        _Partition(i, slice_clients(arg, parameter, start, end), end - start)
        for i, (start, end) in enumerate(
            partition_bounds(count_clients(arg, parameter), len(self._workers)))]
    try:
      self._run_phase(partitions, lambda p: self._before(plan, comp, p))
      if plan.aggregate is None:
        outputs = [p.output for p in partitions]
      else:
        inputs = join_partitions([p.aggregation_inputs for p in partitions],
                                 plan.before.type_signature.result[0])
        aggregated = self._fallback.invoke(
            plan.aggregate, structure.Struct([('intrinsic_args_from_before_comp', inputs)]))
        targets = partitions if plan.per_client_result else partitions[:1]
        for p in partitions[len(targets):]:
          p.release()
        self._run_phase(targets, lambda p: self._after(plan, comp, p, aggregated))
        outputs = [p.output for p in targets]
    finally:
      for p in partitions:
        p.release()
    result_type = comp.type_signature.result
    result = join_partitions(outputs, result_type) if plan.per_client_result else outputs[0]
    return tensorflow_computation.transform_result(
        type_conversions.type_to_py_container(result, result_type))

  def _run_phase(self, partitions: Sequence[_Partition],
                 task: Callable[[_Partition], None]) -> None:
    """Runs `task` for every partition in parallel, each on its worker; a
    partition whose worker is lost moves to a remaining one. Raises
    WorkersLostError when none remains, after the running tasks have ended."""
    load: dict[str, int] = collections.Counter()
    futures: dict[concurrent.futures.Future, _Partition] = {}

    def submit(p: _Partition) -> None:
      if p.worker is None or p.worker.lost is not None:
        p.release()
        p.worker = self._pick(p.index, load)
      load[p.worker.address] += 1
      futures[self._threads.submit(task, p)] = p

    try:
      for p in partitions:
        submit(p)
      while futures:
        done, _ = concurrent.futures.wait(futures, return_when=concurrent.futures.FIRST_COMPLETED)
        for future in done:
          p = futures.pop(future)
          load[p.worker.address] -= 1
          error = future.exception()
          if error is None:
            continue
          if not isinstance(error, WorkerLost):
            raise error
          self._mark_lost(error.worker, error.reason)
          submit(p)
    finally:
      for future in futures:
        future.cancel()
      concurrent.futures.wait(futures)

  def _pick(self, index: int, load: Mapping[str, int]) -> Worker:
    """Partition `index`'s worker: worker `index` (mod N) while it is alive and
    idle, else the least loaded live one (ties: --workers order)."""
    live = [w for w in self._workers if w.lost is None]
    if not live:
      reasons = '; '.join(f'{w.address} ({w.lost})' for w in self._workers)
      raise WorkersLostError(f'every worker is lost: {reasons}')
    own = self._workers[index % len(self._workers)]
    if own.lost is None and not load.get(own.address, 0):
      return own
    return min(live, key=lambda w: (load.get(w.address, 0), self._workers.index(w)))

  def _mark_lost(self, worker: Worker, reason: str) -> None:
    with self._lock:
      if worker.lost is not None:
        return
      worker.lost = reason
    left = sum(w.lost is None for w in self._workers)
    self._log(f'worker {worker.address} lost ({reason}); ' + (
        f'its clients move to the {left} remaining worker(s)' if left else 'no worker remains'))

  def _before(self, plan: Plan, comp, p: _Partition, fetch_inputs: bool = True) -> None:
    """Sends the partition's argument to its worker and runs `before` there;
    fetches its aggregation inputs unless `fetch_inputs` is False (a re-run for
    `after`, whose inputs were already aggregated)."""

    async def run():
      executor = remote_executor.RemoteExecutor(p.worker.stub)
      p.executor = executor
      executor.set_cardinalities({placements.CLIENTS: p.num_clients})
      p.arg_value = await executor.create_value(p.arg, comp.type_signature.parameter)
      fn = await executor.create_value(plan.before, plan.before.type_signature)
      if plan.aggregate is None:
        p.output = await (await executor.create_call(fn, p.arg_value)).compute()
        return
      wrapped = await executor.create_struct(structure.Struct([(None, p.arg_value)]))
      p.before_value = await executor.create_call(fn, wrapped)
      if not fetch_inputs:
        return
      inputs = await executor.create_selection(p.before_value, 0)
      if p.index == 0:
        p.aggregation_inputs = await inputs.compute()
      else:  # The join uses only the first partition's values that are not per client.
        p.aggregation_inputs = await _computed_per_client_parts(
            executor, inputs, plan.before.type_signature.result[0])

    asyncio.run(run())  # RemoteExecutor's coroutines block on gRPC: one thread each.

  def _after(self, plan: Plan, comp, p: _Partition, aggregated) -> None:
    """Runs `after` on the worker holding the partition's intermediate state
    (running `before` again first if the partition moved to another worker)."""
    if p.before_value is None:
      self._before(plan, comp, p, fetch_inputs=False)
    parameter = plan.after.type_signature.parameter

    async def run():
      executor = p.executor
      results = await executor.create_value(aggregated, parameter[1])
      state = await executor.create_selection(p.before_value, 1)
      names = [n for n, _ in structure.iter_elements(parameter)]
      arg = await executor.create_struct(structure.Struct(
          list(zip(names, (p.arg_value, results, state)))))
      fn = await executor.create_value(plan.after, plan.after.type_signature)
      p.output = await (await executor.create_call(fn, arg)).compute()

    asyncio.run(run())


async def _computed_per_client_parts(executor: remote_executor.RemoteExecutor, value,
                                     type_spec) -> Any:
  """The per-client parts of remote `value` (of `type_spec`), computed in one
  call (after one selection call per path step), with None elsewhere
  (`partitions.with_per_client_parts`).

  FedAvg's aggregation inputs, for example, hold the zero of the sum's
  accumulator (one model, not per client) beside the client updates: every
  partition but the first would send it back for nothing.
  """
  paths = per_client_paths(type_spec)
  if paths == [()]:
    return await value.compute()
  if not paths:
    return None
  selected = []
  for path in paths:
    part = value
    for index in path:
      part = await executor.create_selection(part, index)
    selected.append((None, part))
  computed = await (await executor.create_struct(structure.Struct(selected))).compute()
  return with_per_client_parts(type_spec, [v for _, v in structure.iter_elements(computed)])


def _name(comp) -> str:
  try:
    return f'the computation {comp.type_signature.compact_representation()[:100]}'
  except Exception:  # pylint: disable=broad-except
    return 'the computation'


@contextlib.contextmanager
def workers_runtime(
    addresses: Sequence[str],
    *,
    tls_dir: Optional[str] = None,
    connect_timeout: float = CONNECT_TIMEOUT_S,
    log: Callable[[str], None] = _log_stderr,
    on_rpc: Optional[Callable[[str, str], None]] = None,
) -> Iterator[WorkerPool]:
  """Installs a `WorkerPool` over `addresses` as the TFF context for the block.

  Enter it inside `runtime.tff_runtime()`: computations without clients, and
  every aggregation, keep running in that (driver-side) context.

  Args:
    addresses: 'HOST:PORT' of each `python -m tff_programs.worker` (see
      `parse_workers`).
    tls_dir: folder with ca.pem, cert.pem (the driver's client certificate)
      and key.pem; None: plaintext, loopback workers only.
    connect_timeout: seconds each worker has to answer at start-up.
    log: receives the one line per lost worker (default: stderr).
    on_rpc: test hook called before every RPC with (address, method).

  Raises:
    WorkerConfigError: one line, before any computation runs: a malformed
      address, a worker on another machine without TLS, a missing TLS file,
      or a worker that does not answer (each named, with the reason).
  """
  addresses = list(addresses)
  check_workers(addresses, tls_dir=tls_dir)
  workers = [Worker(a, open_channel(a, tls_dir), on_rpc=on_rpc) for a in addresses]
  try:
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(workers)) as threads:
      problems = list(threads.map(lambda w: w.probe(connect_timeout), workers))
    silent = [f'{w.address} ({why})' for w, why in zip(workers, problems) if why is not None]
    if silent:
      raise WorkerConfigError(f'--workers: no answer from {"; ".join(silent)}')
  except BaseException:
    for worker in workers:
      worker.close()
    raise
  stack = context_stack_impl.context_stack
  previous = stack.current
  pool = WorkerPool(workers, previous, log=log)
  stack.set_default_context(pool)
  try:
    yield pool
  finally:
    stack.set_default_context(previous)
    pool.close()
