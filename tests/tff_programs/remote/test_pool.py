"""Rounds spread over worker processes equal local rounds bit for bit; lost workers;
start-up checks; shared files; a round's bytes per worker.

The workers are real `python -m tff_programs.worker` processes on loopback
ports (plaintext); TLS and network namespaces are in
tests/tff_programs/test_worker_tls.py.
"""

import collections
import concurrent.futures
import os
import re
import signal

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from datasets import client_source
from datasets import preprocessing
from tff_programs import sections
from tff_programs import worker as worker_lib
from tff_programs.algorithms import base
from tff_programs.algorithms import fedavg
from tff_programs.algorithms import fedper
from tff_programs.remote import errors
from tff_programs.remote import measured as measured_lib
from tff_programs.remote import pool as pool_lib
from tff_programs.remote import workers as workers_lib
from tests.tff_programs.process_checks import wait_gone


SPEC = collections.OrderedDict(x=tf.TensorSpec([None, 2], tf.float32),
                               y=tf.TensorSpec([None], tf.int64))
CLIENTS = ['a', 'b', 'c', 'd', 'e']


def two_layer(hidden=3):
  inputs = tf.keras.Input([2])
  h = tf.keras.layers.Dense(hidden, name='fc1')(inputs)
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
    with pool_lib.workers_runtime(addresses) as pool:
      start = pool.traffic()
      assert_nests_equal(alg.initialize(seed=3), state)
      assert pool.traffic_since(start) == {a: workers_lib.Traffic() for a in addresses}, (
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
    columns = measured_lib.traffic_columns(addresses, traffic)
    assert columns['worker_sent_bytes'] == sum(sent)
    assert columns['worker_received_bytes'] == sum(received)
    assert [columns[f'worker{i}_sent_bytes'] for i in range(n)] == sent


def test_only_the_first_worker_returns_the_aggregations_unplaced_inputs(tff_context, workers):
  # FedAvg's aggregation inputs hold, beside each client's update, the zero of
  # the update sum (one model, not per client); the join uses the first
  # partition's. With a model of 5,002 floats (20,008 bytes) dominating the
  # traffic, the third worker (1 of 5 clients) returns one update, not two models.
  alg = fedavg.build_fedavg(base.Task(lambda: two_layer(hidden=1000), SPEC, 2),
                            sections.ClientTrainingOptions(client_learning_rate=0.5),
                            fedavg.FedAvgOptions())
  state = alg.initialize(seed=3)
  local = fedavg_round(alg, state)
  addresses = [w.address for w in workers]
  with pool_lib.workers_runtime(addresses) as pool:
    start = pool.traffic()
    remote = fedavg_round(alg, state)
    received = [pool.traffic_since(start)[a].received_bytes for a in addresses]
  assert_nests_equal(remote.state, local.state)
  assert remote.metrics == local.metrics
  model_bytes = 4 * (2 * 1000 + 1000 + 1000 * 2 + 2)
  assert model_bytes <= received[2] < 1.25 * model_bytes, received  # Was about 2 models.
  assert 2 * model_bytes <= received[1] < 2.25 * model_bytes, received  # 2 clients.
  # The first worker also returns the zero, and the new state from `after`.
  assert 4 * model_bytes <= received[0] < 4.25 * model_bytes, received


def test_fedper_round_on_three_workers_equals_local_and_states_stay_with_their_clients(
    tff_context, workers):
  alg = fedper.FedPerAlgorithm(TASK, sections.ClientTrainingOptions(client_learning_rate=0.5), fedper.FedPerOptions(personal_blocks=1))
  state = alg.initialize(seed=1)
  heads = {c: alg.initial_client_state(c, seed=1) for c in CLIENTS}
  order = ['d', 'a', 'e', 'c', 'b']  # Not sorted: results follow the call's client order.
  local = alg.next(state, 1, order, datasets(order), heads)
  with pool_lib.workers_runtime([w.address for w in workers]) as pool:
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
  with pool_lib.workers_runtime([w.address for w in workers]) as pool:
    assert per_client(values, 10) == [50, 10, 40, 20, 30, 70, 60]
    assert all(t.calls > 0 for t in pool.traffic().values()), '7 clients: 3+2+2 over 3 workers'

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
    with pool_lib.workers_runtime([p.address for p in procs], log=lines.append,
                                        on_rpc=on_rpc) as pool:
      out1 = fedavg_round(alg, state0, 1)
      assert_nests_equal(out1.state, local1.state)
      # Round 2: worker 0 dies after it was sent its clients' data, while
      # worker 1 trains; its clients (the first partition, the one whose values
      # that are not per client the aggregation uses) move to worker 1, and the
      # round completes.
      kill[procs[0].address] = procs[0]
      before = pool.traffic()
      out2 = fedavg_round(alg, out1.state, 2)
      assert_nests_equal(out2.state, local2.state)
      assert out2.metrics == local2.metrics
      assert list(pool.lost) == [procs[0].address]
      assert len(lines) == 1 and lines[0].startswith(f'worker {procs[0].address} lost (')
      assert lines[0].endswith('its clients move to the 1 remaining worker(s)')
      moved = pool.traffic_since(before)[procs[1].address]
      assert moved.calls > 0
      assert wait_gone(procs[0].executor_pid), 'the executor outlived its SIGKILLed worker'
      # Round 3: the last worker dies too: one line naming both; no result.
      kill[procs[1].address] = procs[1]
      with pytest.raises(errors.WorkersLostError) as e:
        fedavg_round(alg, out2.state, 3)
      message = str(e.value)
      assert lines[1].startswith(f'worker {procs[1].address} lost (')
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
    with pytest.raises(errors.WorkerConfigError,
                       match=rf'^--workers: no answer from 127\.0\.0\.1:{port} \(.*\)$'):
      with pool_lib.workers_runtime([f'127.0.0.1:{port}'], connect_timeout=1.0):
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
  with pool_lib.workers_runtime([w.address for w in workers[:2]]) as pool:
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
  with pool_lib.workers_runtime(addresses) as pool:
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
  with pool_lib.workers_runtime(addresses) as pool:
    measured = measured_lib.MeasuredAlgorithm(alg, pool)
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
  expected.update(measured_lib.traffic_columns(addresses, traffic))
  assert out.metrics == expected
  assert list(out.metrics)[-6:] == ['worker_sent_bytes', 'worker_received_bytes',
                                    'worker0_sent_bytes', 'worker0_received_bytes',
                                    'worker1_sent_bytes', 'worker1_received_bytes']
  assert out.metrics['worker0_sent_bytes'] > out.metrics['worker1_sent_bytes'] > 0  # 3 vs 2 clients
