r"""Spreads each round's clients over several TFF executor services (`--workers`).

    with runtime.tff_runtime() as local, remote_runtime.workers_runtime(
        ['10.0.0.2:8443', '10.0.0.3:8443'], tls_dir='certs/driver') as pool:
      algorithm = remote_runtime.MeasuredAlgorithm(algorithm, pool)
      output = algorithm.next(...)   # the round's clients run on the workers;
                                     # output.metrics gains worker<i>_sent_bytes, ...

Each worker is a `python -m tff_programs.worker` (TFF's `worker_binary` behind
a loopback or mutual-TLS endpoint). `WorkerPool` is a TFF synchronous context:

* A computation whose argument holds no clients (`initialize`, weight getters
  and setters, FedGKT's server phase) runs in the context that was current
  when the pool was entered: the driver's own sandboxed worker.
* A computation with clients (a round's `next`, FedGKT's client phase) is
  split by TFF 0.87's compiler passes (`replace_intrinsics_with_bodies`, which
  lowers every mean and sum to `federated_aggregate`, then
  `divisive_force_align_and_split_by_intrinsics`, the split TFF's
  DistributeAggregateForm compiler uses) into
    before:    (arg -> <aggregation inputs, intermediate state>)
    aggregate: (aggregation inputs -> aggregation results)
    after:     (<arg, aggregation results, intermediate state> -> result)
  The clients are cut into N = len(addresses) contiguous partitions (sizes
  as in TFF's mergeable context: 5 clients over 3 workers: 2, 2, 1), always N
  whatever workers are lost, so the split never depends on failures. Each
  partition's `before` runs on a worker (client training
  happens here) through `tff.framework.RemoteExecutor`; the aggregation
  inputs of all partitions come back (one model update, weight and metrics
  per client: what each client uploads in federated learning) and
  `aggregate` runs once, on the driver, over all clients in client order;
  `after` runs on the worker that still holds the partition's intermediate
  state (once if the result has no per-client values; per partition, in
  partition order, when it has: FedPer's client states).

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
learning rate). Here each partition
runs in its own thread, nothing depends on completion order, and no client
work runs twice (the divisive split hands the intermediate state over).

Results equal a local run's exactly (tested bit for bit with 2 and 3 workers):
every client runs the same TF graph on the same inputs, and the aggregation
runs once over all clients in the same order as in the local executor. That
holds for workers with the same CPU kind as the driver: oneDNN kernels chosen
for another instruction set can differ in the last bits.

A worker that dies or becomes unreachable (gRPC UNAVAILABLE) mid-round is
marked lost (one line on stderr names it); its partitions are run again on the
remaining workers, so the round completes with the same result. When no worker
is left the round raises `WorkersLostError` (one line naming each worker and
why) before anything of the round is returned, so the program loop's last
checkpoint stays the resume point. A lost worker stays out of the run (restart
the run with `--resume` to use it again). An unreachable host is noticed by
gRPC keepalive (about 6 minutes: TFF's server refuses more frequent pings).

Bytes: every request to a worker and every response is counted (serialized
protobuf sizes, i.e. without HTTP/2 and TLS framing) per worker; `traffic()`
returns the running totals, `MeasuredAlgorithm` puts each round's into its
metrics row. A round sends each worker the server state, its clients' data
(or, with client files on shared storage, their paths: `check_shared_file`
says whether a worker sees the driver's files) and the split computation
(about 240 KB for FedAvg on the MNIST CNN); it receives one update per client.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import dataclasses
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Optional

import grpc
import tensorflow as tf
import tree
from tensorflow_federated.python.common_libs import structure
from tensorflow_federated.python.core.backends.native import compiler
from tensorflow_federated.python.core.environments.tensorflow_backend import tensorflow_tree_transformations
from tensorflow_federated.python.core.environments.tensorflow_frontend import tensorflow_computation
from tensorflow_federated.python.core.impl.compiler import building_blocks
from tensorflow_federated.python.core.impl.compiler import intrinsic_defs
from tensorflow_federated.python.core.impl.compiler import transformations
from tensorflow_federated.python.core.impl.compiler import tree_analysis
from tensorflow_federated.python.core.impl.computation import computation_impl
from tensorflow_federated.python.core.impl.computation import function_utils
from tensorflow_federated.python.core.impl.context_stack import context_base
from tensorflow_federated.python.core.impl.context_stack import context_stack_impl
from tensorflow_federated.python.core.impl.executors import cardinalities_utils
from tensorflow_federated.python.core.impl.executors import remote_executor
from tensorflow_federated.python.core.impl.executors import remote_executor_grpc_stub
from tensorflow_federated.python.core.impl.types import computation_types
from tensorflow_federated.python.core.impl.types import placements
from tensorflow_federated.python.core.impl.types import type_analysis
from tensorflow_federated.python.core.impl.types import type_conversions

from tff_programs import worker_tls
from tff_programs.algorithms import base
# The --workers / --worker_tls_dir checks (one-line errors), shared with the worker.
from tff_programs.worker_tls import WorkerConfigError  # pylint: disable=g-importing-member
from tff_programs.worker_tls import check_workers  # pylint: disable=g-importing-member
from tff_programs.worker_tls import parse_workers  # pylint: disable=g-importing-member

_MAX_MESSAGE_BYTES = 2 * 1000 * 1000 * 1000
# TFF's executor service (gRPC server defaults) answers pings sent more often
# than every 5 minutes without data with GOAWAY: keepalive stays above that.
_CHANNEL_OPTIONS = (
    ('grpc.max_message_length', _MAX_MESSAGE_BYTES),
    ('grpc.max_receive_message_length', _MAX_MESSAGE_BYTES),
    ('grpc.max_send_message_length', _MAX_MESSAGE_BYTES),
    ('grpc.keepalive_time_ms', 330_000),
    ('grpc.keepalive_timeout_ms', 30_000),
    ('grpc.max_reconnect_backoff_ms', 5_000),
)
CONNECT_TIMEOUT_S = 30.0


class WorkersLostError(RuntimeError):
  """Every worker is lost: the computation could not finish (one line)."""


class NotSpreadableError(ValueError):
  """A computation with clients that cannot be split over workers (one line)."""


class _WorkerLost(Exception):
  """Internal: a worker stopped answering (connection refused, reset, closed)."""

  def __init__(self, worker: 'Worker', reason: str):
    super().__init__(reason)
    self.worker = worker
    self.reason = reason


def _one_line(text: str, limit: int = 200) -> str:
  text = ' '.join(str(text).split())
  return text if len(text) <= limit else text[:limit - 3] + '...'


# ---- traffic ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Traffic:
  """Bytes of serialized requests sent to / responses received from one worker, and RPCs."""

  sent_bytes: int = 0
  received_bytes: int = 0
  calls: int = 0

  def __sub__(self, other: 'Traffic') -> 'Traffic':
    return Traffic(self.sent_bytes - other.sent_bytes,
                   self.received_bytes - other.received_bytes, self.calls - other.calls)


def traffic_columns(addresses: Sequence[str],
                    traffic: Mapping[str, Traffic]) -> 'collections.OrderedDict[str, int]':
  """metrics.csv columns for one round: the totals, then each worker in
  --workers order (worker0_sent_bytes, worker0_received_bytes, worker1_...)."""
  row = collections.OrderedDict(
      worker_sent_bytes=sum(traffic[a].sent_bytes for a in addresses),
      worker_received_bytes=sum(traffic[a].received_bytes for a in addresses),
  )
  for i, address in enumerate(addresses):
    row[f'worker{i}_sent_bytes'] = traffic[address].sent_bytes
    row[f'worker{i}_received_bytes'] = traffic[address].received_bytes
  return row


def lost_reason(error: BaseException) -> Optional[str]:
  """The one-line reason if `error` means the worker cannot be reached (gRPC
  UNAVAILABLE: refused, reset, closed, TLS refused, keepalive timeout), else None."""
  if isinstance(error, grpc.Call) and error.code() == grpc.StatusCode.UNAVAILABLE:
    return _one_line(error.details() or 'unavailable')
  return None


class CountingStub:
  """TFF's `RemoteExecutorStub` interface, counting bytes and turning lost
  connections into `_WorkerLost`.

  Wraps a `RemoteExecutorGrpcStub`: each request's and response's serialized
  size is added to the worker's totals; gRPC UNAVAILABLE (TFF raises it as a
  RetryableGRPCError, which TFF's contexts retry forever) becomes `_WorkerLost`
  so the pool can move the work. Disposal never raises (a lost worker has
  nothing left to free).
  """

  def __init__(self, inner: Any, worker: 'Worker'):
    self._inner = inner
    self._worker = worker

  def _call(self, method: str, request):
    worker = self._worker
    if worker.on_rpc is not None:
      worker.on_rpc(worker.address, method)
    worker.add(sent=request.ByteSize())
    try:
      response = getattr(self._inner, method)(request)
    except Exception as e:  # pylint: disable=broad-except
      reason = lost_reason(e)
      if reason is not None:
        raise _WorkerLost(worker, reason) from e
      raise
    worker.add(received=response.ByteSize())
    return response

  def get_executor(self, request):
    return self._call('get_executor', request)

  def create_value(self, request):
    return self._call('create_value', request)

  def create_struct(self, request):
    return self._call('create_struct', request)

  def create_call(self, request):
    return self._call('create_call', request)

  def create_selection(self, request):
    return self._call('create_selection', request)

  def compute(self, request):
    return self._call('compute', request)

  def dispose(self, request):
    with contextlib.suppress(Exception):
      return self._call('dispose', request)

  def dispose_executor(self, request):
    with contextlib.suppress(Exception):
      return self._call('dispose_executor', request)

  @property
  def is_ready(self) -> bool:
    return self._inner.is_ready


# ---- workers -------------------------------------------------------------------------------


class Worker:
  """One executor service: address, gRPC channel, byte counters, lost reason."""

  def __init__(self, address: str, channel: Any,
               on_rpc: Optional[Callable[[str, str], None]] = None, *, stub: Any = None):
    self.address = address
    self.channel = channel
    self.on_rpc = on_rpc  # Test hook: called before every RPC with (address, method).
    self.lost: Optional[str] = None
    self._lock = threading.Lock()
    self._sent = self._received = self._calls = 0
    inner = stub if stub is not None else remote_executor_grpc_stub.RemoteExecutorGrpcStub(channel)
    self.stub = CountingStub(inner, self)

  def add(self, *, sent: int = 0, received: int = 0) -> None:
    with self._lock:
      self._sent += sent
      self._received += received
      self._calls += 1 if sent else 0

  @property
  def traffic(self) -> Traffic:
    with self._lock:
      return Traffic(self._sent, self._received, self._calls)

  def probe(self, timeout: float) -> Optional[str]:
    """None once the service hands out an executor, else why not after `timeout`
    seconds (asked every half second: the worker may still be starting)."""
    deadline = time.monotonic() + timeout
    while True:
      executor = remote_executor.RemoteExecutor(self.stub)
      try:
        executor.set_cardinalities({placements.CLIENTS: 1})
      except _WorkerLost as e:
        if time.monotonic() + 0.5 > deadline:
          return e.reason
        time.sleep(0.5)
        continue
      except grpc.RpcError as e:
        return _one_line(e.details() if isinstance(e, grpc.Call) else str(e))
      executor.close()
      return None

  def close(self) -> None:
    if self.channel is not None:
      self.channel.close()


def open_channel(address: str, tls_dir: Optional[str] = None):
  """A gRPC channel to a worker: plaintext (loopback workers) or mutual TLS with
  the driver's certificate from `tls_dir` (ca.pem, cert.pem, key.pem)."""
  if tls_dir is None:
    return grpc.insecure_channel(address, options=_CHANNEL_OPTIONS)
  ca, cert, key = (open(p, 'rb').read() for p in worker_tls.check_tls_dir(tls_dir))
  credentials = grpc.ssl_channel_credentials(
      root_certificates=ca, private_key=key, certificate_chain=cert)
  return grpc.secure_channel(address, credentials, options=_CHANNEL_OPTIONS)


# ---- the split -------------------------------------------------------------------------------


@dataclasses.dataclass
class Plan:
  """A computation with clients, split for the workers (see the module docstring).

  Attributes:
    before: runs per partition on a worker (native-compiled).
      (<arg> -> <intrinsic_args_from_before_comp, intermediate_state>), or the
      whole computation (arg -> result) when `aggregate` is None.
    aggregate: runs once on the driver over all clients:
      (<intrinsic_args_from_before_comp> -> aggregation results); None if the
      computation does not aggregate (client work only).
    after: runs where `before` ran (native-compiled):
      (<arg, intrinsic_results, intermediate_state> -> result).
    per_client_result: the result holds per-client values (so `after` runs
      on every partition, and results are concatenated in partition order).
  """

  before: Any
  aggregate: Optional[Any]
  after: Optional[Any]
  per_client_result: bool


def _is_per_client(type_spec: computation_types.Type) -> bool:
  return (isinstance(type_spec, computation_types.FederatedType)
          and type_spec.placement is placements.CLIENTS and not type_spec.all_equal)


def _concrete(building_block) -> computation_impl.ConcreteComputation:
  return computation_impl.ConcreteComputation(
      computation_proto=building_block.proto, context_stack=context_stack_impl.context_stack)


def _called_intrinsics(building_block) -> set[str]:
  uris = set()

  def visit(bb):
    if isinstance(bb, building_blocks.Intrinsic):
      uris.add(bb.uri)

  tree_analysis.visit_postorder(building_block, visit)
  return uris


def split_computation(comp, name: str = 'the computation') -> Plan:
  """Splits a computation with clients into before / aggregate / after (TFF 0.87 passes).

  Raises NotSpreadableError (one line) when an aggregation depends on another
  one (a second aggregation after a broadcast of the first's result), or the
  computation aggregates otherwise than by `federated_aggregate` once means
  and sums are lowered (secure sums).
  """
  lam = comp.to_building_block()
  if not isinstance(lam, building_blocks.Lambda) or lam.parameter_type is None:
    raise NotSpreadableError(f'{name}: not a federated computation with a parameter')
  lowered, _ = tensorflow_tree_transformations.replace_intrinsics_with_bodies(lam)
  uris = _called_intrinsics(lowered)
  aggregate_uri = intrinsic_defs.FEDERATED_AGGREGATE.uri
  others = sorted(u for u in uris if u != aggregate_uri and getattr(
      intrinsic_defs.uri_to_intrinsic_def(u), 'aggregation_kind', None) is not None)
  if others:
    raise NotSpreadableError(
        f'{name}: aggregates with {", ".join(others)}, which cannot be split over workers')
  if aggregate_uri not in uris:  # Client work only: each partition runs all of it.
    return Plan(before=compiler.desugar_and_transform_to_native(_concrete(lowered)),
                aggregate=None, after=None, per_client_result=True)
  try:
    before, aggregate, after = transformations.divisive_force_align_and_split_by_intrinsics(
        lowered, [intrinsic_defs.FEDERATED_AGGREGATE], [()], [], [()])
  except Exception as e:  # pylint: disable=broad-except  (TFF raises several kinds)
    raise NotSpreadableError(
        f'{name}: cannot be split over workers ({type(e).__name__}: {_one_line(e, 160)})') from e
  return Plan(
      before=compiler.desugar_and_transform_to_native(_concrete(before)),
      aggregate=_concrete(aggregate),
      after=compiler.desugar_and_transform_to_native(_concrete(after)),
      per_client_result=type_analysis.contains(comp.type_signature.result, _is_per_client),
  )


# ---- the context ------------------------------------------------------------------------------


def _normalize_arg(arg):
  """The argument as TFF's AsyncExecutionContext hands it to executors
  (`tensorflow_computation.transform_args`: tensors to numpy)."""

  def to_python(obj):
    return structure.to_odict_or_tuple(obj) if isinstance(obj, structure.Struct) else None

  if isinstance(arg, structure.Struct):
    args, kwargs = function_utils.unpack_args_from_struct(arg)
    args = tensorflow_computation.transform_args(tree.traverse(to_python, args))
    kwargs = tensorflow_computation.transform_args(tree.traverse(to_python, kwargs))
    return function_utils.pack_args_into_struct(args, kwargs)
  return tensorflow_computation.transform_args(tree.traverse(to_python, arg))


def _clients(arg, type_spec) -> int:
  return cardinalities_utils.infer_cardinalities(arg, type_spec).get(placements.CLIENTS, 0) or 0


def partition_bounds(num_clients: int, num_partitions: int) -> list[tuple[int, int]]:
  """Contiguous [start, end) client ranges: at most `num_partitions`, none
  empty, sizes differing by at most one, larger ones first (5 over 3: 2, 2, 1)."""
  parts = max(1, min(num_clients, num_partitions))
  base, extra = divmod(num_clients, parts)
  bounds, start = [], 0
  for i in range(parts):
    end = start + base + (1 if i < extra else 0)
    bounds.append((start, end))
    start = end
  return bounds


def slice_clients(value: Any, type_spec: computation_types.Type, start: int, end: int) -> Any:
  """`value` with every per-client list cut to clients [start, end); other
  values (server-placed, unplaced, all-equal) unchanged.

  (TFF 0.87's `mergeable_comp_execution_context._split_value_into_subrounds`
  does this too, but loses its place when a struct's last element is not
  per-client: every partition then gets the first clients again.)
  """
  if isinstance(type_spec, computation_types.StructType):
    elements = structure.iter_elements(structure.from_container(value))
    return structure.Struct([
        (name, slice_clients(v, t, start, end))
        for (name, v), (_, t) in zip(elements, structure.iter_elements(type_spec))])
  if _is_per_client(type_spec):
    return list(value)[start:end]
  return value


def join_partitions(values: Sequence[Any], type_spec: computation_types.Type) -> Any:
  """Inverse of `slice_clients` over consecutive partitions: per-client lists
  concatenated in partition order; other values taken from the first."""
  if isinstance(type_spec, computation_types.StructType):
    structs = [structure.iter_elements(structure.from_container(v)) for v in values]
    columns = zip(*structs) if structs else ()
    return structure.Struct([
        (name, join_partitions([v for _, v in column], t))
        for column, (name, t) in zip(columns, structure.iter_elements(type_spec))])
  if _is_per_client(type_spec):
    return [item for v in values for item in v]
  return values[0]


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
      except _WorkerLost as e:
        return f'unreachable ({e.reason})'
      except grpc.RpcError as e:
        details = e.details() if isinstance(e, grpc.Call) else str(e)
        return _one_line(f'cannot read {absolute}: {details}')
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
        clients = _clients(_normalize_arg(arg), parameter)
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
    arg = _normalize_arg(arg)
    partitions = [
        _Partition(i, slice_clients(arg, parameter, start, end), end - start)
        for i, (start, end) in enumerate(
            partition_bounds(_clients(arg, parameter), len(self._workers)))]
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
          if not isinstance(error, _WorkerLost):
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

  def _before(self, plan: Plan, comp, p: _Partition) -> None:
    """Sends the partition's argument to its worker and runs `before` there."""

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
      inputs = await executor.create_selection(p.before_value, 0)
      p.aggregation_inputs = await inputs.compute()

    asyncio.run(run())  # RemoteExecutor's coroutines block on gRPC: one thread each.

  def _after(self, plan: Plan, comp, p: _Partition, aggregated) -> None:
    """Runs `after` on the worker holding the partition's intermediate state
    (running `before` again first if the partition moved to another worker)."""
    if p.before_value is None:
      self._before(plan, comp, p)
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


def _name(comp) -> str:
  try:
    return f'the computation {comp.type_signature.compact_representation()[:100]}'
  except Exception:  # pylint: disable=broad-except
    return 'the computation'


class MeasuredAlgorithm(base.FederatedAlgorithm):
  """An algorithm whose round rows also hold the bytes exchanged with each worker.

  Wraps any `FederatedAlgorithm`: every attribute and method but `next` is the
  wrapped algorithm's (present and future ones); `next` adds the
  `traffic_columns` of what went to and came from the workers during that
  round. The program loop writes them to metrics.csv like any other column.
  """

  _OWN = frozenset({'next', '_algorithm', '_pool', '__class__', '__dict__'})

  def __init__(self, algorithm: base.FederatedAlgorithm, pool: 'WorkerPool'):
    object.__setattr__(self, '_algorithm', algorithm)
    object.__setattr__(self, '_pool', pool)

  def __getattribute__(self, name):
    if name in MeasuredAlgorithm._OWN:
      return object.__getattribute__(self, name)
    return getattr(object.__getattribute__(self, '_algorithm'), name)

  def __setattr__(self, name, value):
    setattr(self._algorithm, name, value)

  def initialize(self, seed: int):  # Abstract in the base class; reached through the wrapped one.
    return self._algorithm.initialize(seed)

  def model_weights(self, state):
    return self._algorithm.model_weights(state)

  def next(self, state, round_num, client_ids, client_datasets, client_states) -> base.RoundOutput:
    before = self._pool.traffic()
    output = self._algorithm.next(state, round_num, client_ids, client_datasets, client_states)
    row = collections.OrderedDict(output.metrics)
    row.update(traffic_columns(self._pool.addresses, self._pool.traffic_since(before)))
    return base.RoundOutput(output.state, output.client_states, row)


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
