"""A worker's stub counts serialized bytes and turns lost connections into WorkerLost."""

import grpc
import pytest

from tff_programs.remote import errors
from tff_programs.remote import workers


# ---- byte counting (fake stub: exact sizes) ---------------------------------------------------


class FakeStub:
  """Answers like an executor service; fails with a chosen gRPC code."""

  def __init__(self, fail=None):
    self.fail = fail

  def compute(self, request):
    from tensorflow_federated.proto.v0 import executor_pb2  # pylint: disable=g-import-not-at-top
    if self.fail is not None:
      raise FakeRpcError(self.fail)
    del request
    return executor_pb2.ComputeResponse()


class FakeRpcError(grpc.RpcError, grpc.Call):

  def __init__(self, code):
    self._code = code

  def code(self):
    return self._code

  def details(self):
    return 'failed to connect to all addresses; last error:\n  Connection refused'

  def initial_metadata(self):
    return None

  def trailing_metadata(self):
    return None

  def is_active(self):
    return False

  def time_remaining(self):
    return None

  def cancel(self):
    return False

  def add_callback(self, callback):
    return False


def test_counting_stub_counts_serialized_bytes_and_reports_lost_workers():
  from tensorflow_federated.proto.v0 import executor_pb2  # pylint: disable=g-import-not-at-top
  worker = workers.Worker('w:1', channel=None, stub=FakeStub())
  # ComputeRequest{executor{id:'ex'} (field 1), value_ref{id:'abc'} (field 2)}:
  # executor = tag 1 + len 1 + (tag 1 + len 1 + 2) = 6; value_ref = 2 + (2 + 3) = 7.
  request = executor_pb2.ComputeRequest(executor=executor_pb2.ExecutorId(id='ex'),
                                        value_ref=executor_pb2.ValueRef(id='abc'))
  assert request.ByteSize() == 13
  worker.stub.compute(request)
  worker.stub.compute(request)
  assert worker.traffic == workers.Traffic(sent_bytes=26, received_bytes=0, calls=2)
  lost = workers.Worker('w:2', channel=None, stub=FakeStub(grpc.StatusCode.UNAVAILABLE))
  with pytest.raises(errors.WorkerLost) as e:
    lost.stub.compute(request)
  assert e.value.reason == 'failed to connect to all addresses; last error: Connection refused'
  assert lost.traffic.sent_bytes == 13
  broken = workers.Worker('w:3', channel=None, stub=FakeStub(grpc.StatusCode.INVALID_ARGUMENT))
  with pytest.raises(FakeRpcError):  # A computation error is not a lost worker.
    broken.stub.compute(request)
  lost.stub.dispose(request)  # Disposal never raises.
