"""Rounds spread over worker processes equal local rounds bit for bit; lost workers; bytes.

The workers are real `python -m tff_programs.worker` processes on loopback
ports (plaintext); TLS and network namespaces are in test_worker_tls.py.
"""

import collections
import concurrent.futures
import os
import re
import signal
import time

import grpc
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from datasets import client_source
from datasets import preprocessing
from tff_programs import sections
from tff_programs import experiment
from tff_programs import remote_runtime
from tff_programs import worker as worker_lib
from tff_programs.algorithms import base
from tff_programs.algorithms import fedavg
from tff_programs.algorithms import fedper

SPEC = collections.OrderedDict(x=tf.TensorSpec([None, 2], tf.float32),
                               y=tf.TensorSpec([None], tf.int64))
CLIENTS = ['a', 'b', 'c', 'd', 'e']


def two_layer():
  inputs = tf.keras.Input([2])
  h = tf.keras.layers.Dense(3, name='fc1')(inputs)
  return tf.keras.Model(inputs, tf.keras.layers.Dense(2, name='logits')(h))


TASK = base.Task(two_layer, SPEC, 2)


def client_data():
  """5 clients with 2..6 hand-made examples (different sizes: weights n_k differ)."""
  rng = np.random.default_rng(7)
  return {cid: (rng.normal(size=(n, 2)).astype(np.float32), rng.integers(0, 2, n).astype(np.int64))
          for cid, n in zip(CLIENTS, (2, 3, 4, 5, 6))}


DATA = client_data()


def datasets(clients=CLIENTS):
  return [tf.data.Dataset.from_tensor_slices(collections.OrderedDict(
      x=DATA[c][0], y=DATA[c][1])).batch(2) for c in clients]


def assert_nests_equal(a, b):
  tf.nest.assert_same_structure(a, b)
  for x, y in zip(tf.nest.flatten(a), tf.nest.flatten(b)):
    np.testing.assert_array_equal(x, y)


def fedavg_round(alg, state, round_num=1, clients=CLIENTS):
  return alg.next(state, round_num, clients, datasets(clients), {})


def start_workers(n, **kwargs):
  with concurrent.futures.ThreadPoolExecutor(n) as threads:
    return list(threads.map(lambda _: worker_lib.spawn(**kwargs), range(n)))


def wait_gone(pid, timeout=20.0):
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline:
    if not worker_lib._process_alive(pid):  # pylint: disable=protected-access
      return True
    time.sleep(0.05)
  return False


def stop_all(procs):
  codes = [p.stop() for p in procs]
  gone = [wait_gone(p.executor_pid) for p in procs]
  return codes, gone


@pytest.fixture(scope='module')
def workers():
  """Three plaintext workers on loopback ports for the module."""
  procs = start_workers(3)
  yield procs
  codes, gone = stop_all(procs)
  assert codes == [0, 0, 0] and all(gone), 'a worker did not stop cleanly'


# ---- equality with the local context --------------------------------------------------


def test_fedavg_round_on_two_and_three_workers_equals_the_local_round(tff_context, workers):
  alg = fedavg.build_fedavg(TASK, sections.ClientTrainingOptions(client_learning_rate=0.5), fedavg.FedAvgOptions())
  state = alg.initialize(seed=3)
  local = fedavg_round(alg, state)
  for n in (2, 3):
    addresses = [w.address for w in workers[:n]]
    with remote_runtime.workers_runtime(addresses) as pool:
      start = pool.traffic()
      assert_nests_equal(alg.initialize(seed=3), state)
      assert pool.traffic_since(start) == {a: remote_runtime.Traffic() for a in addresses}, (
          'a computation without clients runs on the driver')
      remote = fedavg_round(alg, state)
      traffic = pool.traffic_since(start)
    # Bit for bit: same client graphs, one aggregation over all clients in order.
    assert_nests_equal(remote.state, local.state)
    assert remote.metrics == local.metrics
    assert alg.model_weights(remote.state)[0].tolist() == alg.model_weights(local.state)[0].tolist()
    # 5 clients cut into ceil-sized partitions: 3+2 (n=2), 2+2+1 (n=3). Each
    # worker was sent its clients' data and returned one update per client.
    sent = [traffic[a].sent_bytes for a in addresses]
    received = [traffic[a].received_bytes for a in addresses]
    assert all(s > 0 for s in sent) and all(r > 0 for r in received), traffic
    if n == 2:
      assert sent[0] > sent[1] and received[0] > received[1], traffic
    else:
      assert sent[1] > sent[2] and received[1] > received[2], traffic
    columns = remote_runtime.traffic_columns(addresses, traffic)
    assert columns['worker_sent_bytes'] == sum(sent)
    assert columns['worker_received_bytes'] == sum(received)
    assert [columns[f'worker{i}_sent_bytes'] for i in range(n)] == sent


def test_fedper_round_on_three_workers_equals_local_and_states_stay_with_their_clients(
    tff_context, workers):
  alg = fedper.FedPerAlgorithm(TASK, sections.ClientTrainingOptions(client_learning_rate=0.5), fedper.FedPerOptions(personal_blocks=1))
  state = alg.initialize(seed=1)
  heads = {c: alg.initial_client_state(c, seed=1) for c in CLIENTS}
  order = ['d', 'a', 'e', 'c', 'b']  # Not sorted: results follow the call's client order.
  local = alg.next(state, 1, order, datasets(order), heads)
  with remote_runtime.workers_runtime([w.address for w in workers]) as pool:
    remote = alg.next(state, 1, order, datasets(order), heads)
    assert all(t.sent_bytes > 0 for t in pool.traffic().values())
  assert_nests_equal(remote.state, local.state)
  assert remote.metrics == local.metrics
  assert list(remote.client_states) == order
  for cid in CLIENTS:
    assert_nests_equal(remote.client_states[cid], local.client_states[cid])
    assert not np.array_equal(remote.client_states[cid]['trainable'][0],
                              heads[cid]['trainable'][0]), 'the head was trained'


def test_client_work_without_aggregation_keeps_the_client_order(tff_context, workers):
  @tff.tensorflow.computation(np.int32, np.int32)
  def scale(x, k):
    return x * k

  @tff.federated_computation(tff.FederatedType(np.int32, tff.CLIENTS),
                             tff.FederatedType(np.int32, tff.SERVER))
  def per_client(values, k):
    return tff.federated_map(scale, (values, tff.federated_broadcast(k)))

  values = [5, 1, 4, 2, 3, 7, 6]
  with remote_runtime.workers_runtime([w.address for w in workers]) as pool:
    assert per_client(values, 10) == [50, 10, 40, 20, 30, 70, 60]
    assert all(t.calls > 0 for t in pool.traffic().values()), '7 clients: 3+2+2 over 3 workers'


# ---- which computations can be spread ---------------------------------------------------


def conv_model(batch_norm):
  inputs = tf.keras.Input([4, 4, 1])
  h = tf.keras.layers.Conv2D(2, 3, padding='same', name='conv')(inputs)
  if batch_norm:
    h = tf.keras.layers.BatchNormalization(name='bn')(h)
  h = tf.keras.layers.GlobalAveragePooling2D()(h)
  return tf.keras.Model(inputs, tf.keras.layers.Dense(3, name='logits')(h))


@pytest.mark.parametrize('algorithm, aggregator, batch_norm', [
    ('fedavg', 'mean', False),      # TFF's build_weighted_fed_avg
    ('fedsgd', 'mean', False),      # TFF's build_fed_sgd
    ('rpn', 'quantized', False),    # RPN around 8-bit quantization
    ('fedavg', 'mean', True),       # FedAvg with batch-norm statistics (FedSuite's process)
    ('fedper', 'mean', False),      # FedSuite's process with client states
])
def test_every_round_computation_splits_over_workers(algorithm, aggregator, batch_norm):
  cfg = experiment.ExperimentConfig(algorithm=algorithm, aggregator=aggregator,
                                    local_epochs=1 if algorithm == 'fedsgd' else 5)
  spec = collections.OrderedDict(x=tf.TensorSpec([None, 4, 4, 1], tf.float32),
                                 y=tf.TensorSpec([None], tf.int64))
  task = base.Task(lambda: conv_model(batch_norm), spec, 3)
  alg = experiment.build_algorithm(cfg, task)
  plan = remote_runtime.split_computation(alg.process.next)
  assert plan.aggregate is not None and plan.after is not None
  assert plan.per_client_result == (algorithm == 'fedper' or batch_norm)


def test_dependent_aggregations_are_refused_in_one_line():
  @tff.federated_computation(tff.FederatedType(np.float32, tff.CLIENTS))
  def two_stage(values):
    mean = tff.federated_mean(values)
    centred = tff.federated_map(tff.tensorflow.computation(lambda v, m: v - m),
                                (values, tff.federated_broadcast(mean)))
    return tff.federated_sum(centred)

  with pytest.raises(remote_runtime.NotSpreadableError, match='cannot be split over workers') as e:
    remote_runtime.split_computation(two_stage)
  assert '\n' not in str(e.value)


# ---- lost workers ---------------------------------------------------------------------


def test_a_worker_killed_mid_round_moves_its_clients_then_losing_all_fails_in_one_line(
    tff_context):
  alg = fedavg.build_fedavg(TASK, sections.ClientTrainingOptions(client_learning_rate=0.5), fedavg.FedAvgOptions())
  state0 = alg.initialize(seed=5)
  local1 = fedavg_round(alg, state0, 1)
  local2 = fedavg_round(alg, local1.state, 2)
  procs = start_workers(2)
  kill = {}  # address -> process to SIGKILL at its next create_call

  def on_rpc(address, method):
    if method == 'create_call' and address in kill:
      victim = kill.pop(address)
      victim.process.send_signal(signal.SIGKILL)  # No cleanup in the worker at all.
      victim.process.wait(timeout=30)

  lines = []
  try:
    with remote_runtime.workers_runtime([p.address for p in procs], log=lines.append,
                                        on_rpc=on_rpc) as pool:
      out1 = fedavg_round(alg, state0, 1)
      assert_nests_equal(out1.state, local1.state)
      # Round 2: worker 1 dies after it was sent its clients' data, while
      # worker 0 trains; its clients move to worker 0 and the round completes.
      kill[procs[1].address] = procs[1]
      before = pool.traffic()
      out2 = fedavg_round(alg, out1.state, 2)
      assert_nests_equal(out2.state, local2.state)
      assert out2.metrics == local2.metrics
      assert list(pool.lost) == [procs[1].address]
      assert len(lines) == 1 and lines[0].startswith(f'worker {procs[1].address} lost (')
      assert lines[0].endswith('its clients move to the 1 remaining worker(s)')
      moved = pool.traffic_since(before)[procs[0].address]
      assert moved.calls > 0
      assert wait_gone(procs[1].executor_pid), 'the executor outlived its SIGKILLed worker'
      # Round 3: the last worker dies too: one line naming both; no result.
      kill[procs[0].address] = procs[0]
      with pytest.raises(remote_runtime.WorkersLostError) as e:
        fedavg_round(alg, out2.state, 3)
      message = str(e.value)
      assert lines[1].startswith(f'worker {procs[0].address} lost (')
      assert lines[1].endswith('; no worker remains')
      assert '\n' not in message
      assert re.fullmatch(
          rf'every worker is lost: {re.escape(procs[0].address)} \(.+\); '
          rf'{re.escape(procs[1].address)} \(.+\)', message), message
  finally:
    for p in procs:
      p.stop(signal.SIGKILL)
  assert all(wait_gone(p.executor_pid) for p in procs)


# ---- start-up checks ---------------------------------------------------------------------


def test_a_worker_that_does_not_answer_is_named_at_start_up(tff_context):
  with grpc_free_port() as port:
    with pytest.raises(remote_runtime.WorkerConfigError,
                       match=rf'^--workers: no answer from 127\.0\.0\.1:{port} \(.*\)$'):
      with remote_runtime.workers_runtime([f'127.0.0.1:{port}'], connect_timeout=1.0):
        pass


class grpc_free_port:  # pylint: disable=invalid-name
  """A loopback port nobody listens on (held bound, not listening, for the block)."""

  def __enter__(self):
    import socket  # pylint: disable=g-import-not-at-top
    self._socket = socket.socket()
    self._socket.bind(('127.0.0.1', 0))
    return self._socket.getsockname()[1]

  def __exit__(self, *exc):
    self._socket.close()


@pytest.mark.parametrize('spec, error', [
    ('', r'--workers: empty'),
    ('127.0.0.1', r"'127.0.0.1' is not HOST:PORT"),
    ('127.0.0.1:0', r'the port must be 1-65535'),
    ('127.0.0.1:99999', r'the port must be 1-65535'),
    ('127.0.0.1:80,127.0.0.1:80', r'127.0.0.1:80 is listed twice'),
    ('::1:80', r"'::1:80' is not HOST:PORT \(IPv6: \[ADDR\]:PORT\)"),
])
def test_parse_workers_refuses_malformed_lists_in_one_line(spec, error):
  with pytest.raises(remote_runtime.WorkerConfigError, match=error):
    remote_runtime.parse_workers(spec)


def test_parse_workers_normalizes_and_checks_where_plaintext_may_go(tmp_path):
  assert remote_runtime.parse_workers(' 127.0.0.1:5000, [::1]:5001,localhost:5002 ') == (
      '127.0.0.1:5000', '[::1]:5001', 'localhost:5002')
  remote_runtime.check_workers(['127.0.0.1:1', '[::1]:2', 'localhost:3'], tls_dir=None)
  with pytest.raises(remote_runtime.WorkerConfigError,
                     match=r'^--workers: 10\.0\.0\.2:5000 is not on this machine; .*--worker_tls_dir'):
    remote_runtime.check_workers(['127.0.0.1:1', '10.0.0.2:5000'], tls_dir=None)
  (tmp_path / 'ca.pem').write_text('x')
  with pytest.raises(remote_runtime.WorkerConfigError, match=r'missing cert\.pem, key\.pem'):
    remote_runtime.check_workers(['10.0.0.2:5000'], tls_dir=str(tmp_path))


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
  worker = remote_runtime.Worker('w:1', channel=None, stub=FakeStub())
  # ComputeRequest{executor{id:'ex'} (field 1), value_ref{id:'abc'} (field 2)}:
  # executor = tag 1 + len 1 + (tag 1 + len 1 + 2) = 6; value_ref = 2 + (2 + 3) = 7.
  request = executor_pb2.ComputeRequest(executor=executor_pb2.ExecutorId(id='ex'),
                                        value_ref=executor_pb2.ValueRef(id='abc'))
  assert request.ByteSize() == 13
  worker.stub.compute(request)
  worker.stub.compute(request)
  assert worker.traffic == remote_runtime.Traffic(sent_bytes=26, received_bytes=0, calls=2)
  lost = remote_runtime.Worker('w:2', channel=None, stub=FakeStub(grpc.StatusCode.UNAVAILABLE))
  with pytest.raises(remote_runtime._WorkerLost) as e:  # pylint: disable=protected-access
    lost.stub.compute(request)
  assert e.value.reason == 'failed to connect to all addresses; last error: Connection refused'
  assert lost.traffic.sent_bytes == 13
  broken = remote_runtime.Worker('w:3', channel=None, stub=FakeStub(grpc.StatusCode.INVALID_ARGUMENT))
  with pytest.raises(FakeRpcError):  # A computation error is not a lost worker.
    broken.stub.compute(request)
  lost.stub.dispose(request)  # Disposal never raises.


def test_traffic_columns_name_workers_by_position():
  traffic = {'h:1': remote_runtime.Traffic(10, 1, 2), 'h:2': remote_runtime.Traffic(30, 3, 4)}
  assert remote_runtime.traffic_columns(['h:1', 'h:2'], traffic) == collections.OrderedDict(
      worker_sent_bytes=40, worker_received_bytes=4, worker0_sent_bytes=10,
      worker0_received_bytes=1, worker1_sent_bytes=30, worker1_received_bytes=3)
  assert traffic['h:2'] - traffic['h:1'] == remote_runtime.Traffic(20, 2, 2)


# ---- partitions (pure) ---------------------------------------------------------------------


@pytest.mark.parametrize('clients, parts, bounds', [
    (5, 2, [(0, 3), (3, 5)]),
    (5, 3, [(0, 2), (2, 4), (4, 5)]),
    (7, 3, [(0, 3), (3, 5), (5, 7)]),
    (2, 4, [(0, 1), (1, 2)]),  # Never an empty partition.
    (4, 1, [(0, 4)]),
])
def test_partition_bounds(clients, parts, bounds):
  assert remote_runtime.partition_bounds(clients, parts) == bounds


def test_slicing_and_joining_partitions_round_trips_whatever_the_element_order():
  # Per-client values first and last, a server value in between and at the end
  # (TFF 0.87's partitioner restarts at client 0 after a trailing server value).
  type_spec = tff.StructType([
      ('a', tff.FederatedType(np.int32, tff.CLIENTS)),
      ('s', tff.FederatedType(np.float32, tff.SERVER)),
      ('b', tff.FederatedType(np.int32, tff.CLIENTS)),
      ('e', tff.FederatedType(np.int32, tff.CLIENTS, all_equal=True)),
      ('t', tff.FederatedType(np.int32, tff.SERVER)),
  ])
  value = collections.OrderedDict(a=[1, 2, 3, 4, 5], s=0.5, b=[10, 20, 30, 40, 50], e=7, t=9)
  parts = [remote_runtime.slice_clients(value, type_spec, *b)
           for b in remote_runtime.partition_bounds(5, 3)]
  assert [tff.structure.to_odict(p) for p in parts] == [
      collections.OrderedDict(a=[1, 2], s=0.5, b=[10, 20], e=7, t=9),
      collections.OrderedDict(a=[3, 4], s=0.5, b=[30, 40], e=7, t=9),
      collections.OrderedDict(a=[5], s=0.5, b=[50], e=7, t=9),
  ]
  assert tff.structure.to_odict(remote_runtime.join_partitions(parts, type_spec)) == value


# ---- FedGKT: client phase on the workers, server phase on the driver ----------------------------


def tiny_edge(input_shape=(4, 4, 1), num_classes=3):
  inputs = tf.keras.Input(input_shape)
  h = tf.keras.layers.ReLU(name='fe_relu')(tf.keras.layers.Conv2D(2, 1, name='fe_conv')(inputs))
  dense = tf.keras.layers.Dense(num_classes, name='logits')
  gap = tf.keras.layers.GlobalAveragePooling2D(name='gap')
  features = tf.keras.Input(h.shape[1:])
  return (tf.keras.Model(inputs, h), tf.keras.Model(features, dense(gap(features))),
          tf.keras.Model(inputs, dense(gap(h))))


def tiny_server(feature_shape, num_classes=3):
  features = tf.keras.Input(feature_shape)
  return tf.keras.Model(features, tf.keras.layers.Dense(num_classes, name='s_logits')(
      tf.keras.layers.Flatten()(features)))


def test_fedgkt_round_with_clients_on_workers_equals_the_local_round(tff_context, workers):
  from datasets import federated as federated_lib  # pylint: disable=g-import-not-at-top
  from tff_programs.algorithms import fedgkt  # pylint: disable=g-import-not-at-top

  rng = np.random.default_rng(3)
  arrays = {cid: (rng.normal(size=(n, 4, 4, 1)).astype(np.float32),
                  rng.integers(0, 3, n).astype(np.int64)) for cid, n in (('a', 5), ('b', 7))}
  data = federated_lib.FederatedData(
      name='tiny', client_ids=('a', 'b'), train_arrays=arrays, test_arrays=arrays,
      central_test=arrays['b'], label_histogram=np.ones((2, 3), np.int64), num_classes=3,
      input_shape=(4, 4, 1))
  spec = collections.OrderedDict(x=tf.TensorSpec([None, 4, 4, 1], tf.float32),
                                 y=tf.TensorSpec([None], tf.int64))
  config = fedgkt.FedGKTConfig(client_epochs=1, client_batch_size=3, server_epochs=1,
                               server_batch_size=4, client_learning_rate=0.1,
                               server_learning_rate=0.1)

  def one_round():
    source = client_source.ClientDataSource(data, preprocessing=preprocessing.Preprocessing(),
                                            seed=0, batch_size=None, epochs=1)
    alg = fedgkt.FedGKTAlgorithm(base.Task(lambda: None, spec, 3, data=source), config,
                                 edge_builder=tiny_edge, server_builder=tiny_server)
    state = alg.initialize(0)
    states = {c: alg.initial_client_state(c, 0) for c in ('a', 'b')}
    return alg.next(state, 1, ['a', 'b'], [None, None], states)

  local = one_round()
  with remote_runtime.workers_runtime([w.address for w in workers[:2]]) as pool:
    remote = one_round()
    traffic = pool.traffic()
  assert_nests_equal(remote.state, local.state)
  assert_nests_equal(remote.client_states, local.client_states)
  assert remote.metrics == local.metrics
  # One client per call: each call is one partition, on the first worker.
  assert traffic[workers[0].address].calls > 0


# ---- shared storage for client files -------------------------------------------------------


def test_check_shared_file_says_which_workers_read_the_drivers_file(tff_context, workers, tmp_path):
  probe = tmp_path / 'probe'
  probe.write_bytes(b'fedsuite \x00\xff probe')
  addresses = [w.address for w in workers[:2]]
  with remote_runtime.workers_runtime(addresses) as pool:
    assert pool.check_shared_file(str(probe)) == {a: None for a in addresses}
    # /proc/self/... names another file in each process: what a worker without
    # the driver's storage sees. fd 900 is open in the driver only.
    fd = os.open(str(probe), os.O_RDONLY)
    os.dup2(fd, 900)
    try:
      missing = pool.check_shared_file('/proc/self/fd/900')
    finally:
      os.close(900)
      os.close(fd)
    differs = pool.check_shared_file('/proc/self/cmdline')
  for a in addresses:
    assert missing[a].startswith('cannot read /proc/self/fd/900: ') and '\n' not in missing[a]
    assert re.fullmatch(r"/proc/self/cmdline differs from the driver's \(\d+ vs \d+ bytes\)",
                        differs[a]), differs[a]


def test_measured_algorithm_adds_the_rounds_bytes_per_worker_to_its_row(tff_context, workers):
  alg = fedper.FedPerAlgorithm(TASK, sections.ClientTrainingOptions(client_learning_rate=0.5), fedper.FedPerOptions(personal_blocks=1))
  state = alg.initialize(seed=1)
  heads = {c: alg.initial_client_state(c, seed=1) for c in CLIENTS}
  addresses = [w.address for w in workers[:2]]
  with remote_runtime.workers_runtime(addresses) as pool:
    measured = remote_runtime.MeasuredAlgorithm(alg, pool)
    # Everything but `next` is the wrapped algorithm's.
    assert measured.uses_client_states and measured.name == 'fedper'
    assert isinstance(measured, base.FederatedAlgorithm)
    assert measured.initial_client_state('a', 1)['trainable'][0].tolist() == (
        heads['a']['trainable'][0].tolist())
    before = pool.traffic()
    out = measured.next(state, 1, CLIENTS, datasets(), heads)
    traffic = pool.traffic_since(before)
  plain = alg.next(state, 1, CLIENTS, datasets(), heads)  # Locally: the same row without bytes.
  expected = collections.OrderedDict(plain.metrics)
  expected.update(remote_runtime.traffic_columns(addresses, traffic))
  assert out.metrics == expected
  assert list(out.metrics)[-6:] == ['worker_sent_bytes', 'worker_received_bytes',
                                    'worker0_sent_bytes', 'worker0_received_bytes',
                                    'worker1_sent_bytes', 'worker1_received_bytes']
  assert out.metrics['worker0_sent_bytes'] > out.metrics['worker1_sent_bytes'] > 0  # 3 vs 2 clients
