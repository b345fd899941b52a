"""The workers as the driver sees them: a gRPC channel and a stub that counts bytes.

Every request to a worker and every response is counted (serialized protobuf
sizes, i.e. without HTTP/2 and TLS framing) per worker: `Worker.traffic`
holds the running totals. A worker that cannot be reached (gRPC UNAVAILABLE:
refused, reset, closed, TLS refused, keepalive timeout) raises `WorkerLost`
from its stub, so the pool can move its clients; an unreachable host is
noticed by gRPC keepalive (about 6 minutes: TFF's server refuses more
frequent pings).
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
from collections.abc import Callable
from typing import Any, Optional

import grpc
from tensorflow_federated.python.core.impl.executors import remote_executor
from tensorflow_federated.python.core.impl.executors import remote_executor_grpc_stub
from tensorflow_federated.python.core.impl.types import placements

from tff_programs.remote.addresses import check_tls_dir  # pylint: disable=g-importing-member
from tff_programs.remote.errors import WorkerLost  # pylint: disable=g-importing-member
from tff_programs.remote.errors import one_line  # pylint: disable=g-importing-member

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


@dataclasses.dataclass(frozen=True)
class Traffic:
  """Bytes of serialized requests sent to / responses received from one worker, and RPCs."""

  sent_bytes: int = 0
  received_bytes: int = 0
  calls: int = 0

  def __sub__(self, other: 'Traffic') -> 'Traffic':
    return Traffic(self.sent_bytes - other.sent_bytes,
                   self.received_bytes - other.received_bytes, self.calls - other.calls)


def lost_reason(error: BaseException) -> Optional[str]:
  """The one-line reason if `error` means the worker cannot be reached (gRPC
  UNAVAILABLE: refused, reset, closed, TLS refused, keepalive timeout), else None."""
  if isinstance(error, grpc.Call) and error.code() == grpc.StatusCode.UNAVAILABLE:
    return one_line(error.details() or 'unavailable')
  return None


class CountingStub:
  """TFF's `RemoteExecutorStub` interface, counting bytes and turning lost
  connections into `WorkerLost`.

  Wraps a `RemoteExecutorGrpcStub`: each request's and response's serialized
  size is added to the worker's totals; gRPC UNAVAILABLE (TFF raises it as a
  RetryableGRPCError, which TFF's contexts retry forever) becomes `WorkerLost`
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
        raise WorkerLost(worker, reason) from e
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
      except WorkerLost as e:
        if time.monotonic() + 0.5 > deadline:
          return e.reason
        time.sleep(0.5)
        continue
      except grpc.RpcError as e:
        return one_line(e.details() if isinstance(e, grpc.Call) else str(e))
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
  ca, cert, key = (open(p, 'rb').read() for p in check_tls_dir(tls_dir))
  credentials = grpc.ssl_channel_credentials(
      root_certificates=ca, private_key=key, certificate_chain=cert)
  return grpc.secure_channel(address, credentials, options=_CHANNEL_OPTIONS)
