"""Mutual TLS between driver and workers: `make-ca` on the command line, refusals,
and workers in their own network namespaces (root only) reached over TLS.

(The test CA itself is tested in tests/tff_programs/remote/test_certificates.py.)
"""

import collections
import os
import re
import shutil
import socket
import subprocess
import sys

import grpc
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from tff_programs import sections
from tff_programs import executor_sandbox
from tff_programs import remote_runtime
from tff_programs import worker as worker_lib
from tff_programs import worker_tls
from tff_programs.algorithms import base
from tff_programs.algorithms import fedavg
from tests.tff_programs.process_checks import wait_until


def test_make_ca_command_line(tmp_path):
  result = subprocess.run(
      [sys.executable, '-m', 'tff_programs.worker_tls', 'make-ca', f'--out={tmp_path}/c',
       '--hosts=127.0.0.1'], cwd=worker_lib.REPO_ROOT, capture_output=True, text=True, timeout=60)
  assert result.returncode == 0, result.stderr
  assert result.stdout.splitlines() == [
      f'test CA: {tmp_path}/c/ca.pem (its key ca-key.pem stays in {tmp_path}/c)',
      f'workers: --worker_tls_dir={tmp_path}/c/worker (valid for 127.0.0.1)',
      f'driver:  --worker_tls_dir={tmp_path}/c/driver',
  ]


# ---- a TLS worker on loopback -------------------------------------------------------------


@pytest.fixture(scope='module')
def tls_worker(tmp_path_factory):
  root = tmp_path_factory.mktemp('tls')
  certs = worker_tls.make_test_ca(str(root / 'ca'), ['127.0.0.1'])
  other = worker_tls.make_test_ca(str(root / 'other'), ['127.0.0.1'])
  log = root / 'worker.log'
  proc = worker_lib.spawn(host='127.0.0.1', tls_dir=certs['worker'], log_file=str(log))
  yield proc, certs, other, log
  assert proc.stop() == 0


def probe(address, credentials=None):
  channel = (grpc.secure_channel(address, credentials) if credentials is not None
             else grpc.insecure_channel(address))
  w = remote_runtime.Worker(address, channel)
  try:
    return w.probe(0.1)
  finally:
    w.close()


def credentials(folder, *, with_cert=True):
  ca, cert, key = (open(os.path.join(folder, n), 'rb').read() for n in worker_tls.TLS_FILES)
  if not with_cert:
    return grpc.ssl_channel_credentials(root_certificates=ca)
  return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)


def log_lines_since(log, start):
  return log.read_text()[start:].strip().splitlines()


def test_the_driver_certificate_gets_in_and_runs_client_work(tff_context, tls_worker):
  proc, certs, _, log = tls_worker
  start = len(log.read_text())

  @tff.tensorflow.computation(np.int32)
  def double(x):
    return 2 * x

  @tff.federated_computation(tff.FederatedType(np.int32, tff.CLIENTS))
  def per_client(values):
    return tff.federated_map(double, values)

  with remote_runtime.workers_runtime([proc.address], tls_dir=certs['driver']) as pool:
    assert per_client([3, 1, 2]) == [6, 2, 4]
    assert pool.traffic()[proc.address].received_bytes > 0
  assert any(line.endswith(' (fedsuite-driver)') and 'accepted 127.0.0.1:' in line
             for line in log_lines_since(log, start))


@pytest.mark.parametrize('who, make_credentials, logged', [
    ('no client certificate', lambda c, o: credentials(c['driver'], with_cert=False),
     'TLS handshake failed (PEER_DID_NOT_RETURN_A_CERTIFICATE)'),
    ('a certificate from another CA', lambda c, o: grpc.ssl_channel_credentials(
        root_certificates=open(c['ca'], 'rb').read(),
        private_key=open(os.path.join(o['driver'], 'key.pem'), 'rb').read(),
        certificate_chain=open(os.path.join(o['driver'], 'cert.pem'), 'rb').read()),
     'TLS handshake failed (CERTIFICATE_VERIFY_FAILED: unable to get local issuer certificate)'),
    ('a worker (server) certificate', lambda c, o: credentials(c['worker']),
     'TLS handshake failed (CERTIFICATE_VERIFY_FAILED: unsuitable certificate purpose)'),
    ('plaintext gRPC', lambda c, o: None, 'TLS handshake failed (WRONG_VERSION_NUMBER)'),
])
def test_clients_without_a_driver_certificate_of_the_ca_are_refused(tls_worker, who,
                                                                     make_credentials, logged):
  proc, certs, other, log = tls_worker
  start = len(log.read_text())
  reason = probe(proc.address, make_credentials(certs, other))
  assert reason is not None, f'{who} got in'
  # The worker logs right after the client saw the refusal.
  assert wait_until(lambda: any(l.endswith(logged) for l in log_lines_since(log, start)),
                    timeout=10), log_lines_since(log, start)
  lines = log_lines_since(log, start)
  assert any(re.search(r'refused 127\.0\.0\.1:\d+: ' + re.escape(logged) + '$', l) for l in lines)
  assert not any('accepted' in l for l in lines), lines


def test_plaintext_bytes_get_no_http2_answer(tls_worker):
  proc, _, _, log = tls_worker
  host, port = worker_tls.split_address(proc.address)
  with socket.create_connection((host, port), timeout=10) as s:
    s.sendall(b'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n' + bytes(9))  # HTTP/2 preface + a frame header
    answer = b''
    try:
      while chunk := s.recv(4096):
        answer += chunk
    except ConnectionResetError:
      pass
  # Nothing, or a TLS alert record (content type 21): never an HTTP/2 SETTINGS frame.
  assert answer == b'' or answer[0] == 21, answer[:20]


# ---- workers in their own network namespaces (root) -------------------------------------------


def _ip(*args, ns=None):
  command = ['ip', *(['netns', 'exec', ns, 'ip'] if ns else []), *args]
  subprocess.run(command, check=True, capture_output=True, timeout=30)


@pytest.fixture
def namespaced_workers(tmp_path):
  """Two workers, each in its own network namespace linked to ours by a veth
  pair (10.231.B.1 here, 10.231.B.2 there; .5/.6), serving mutual TLS."""
  if os.geteuid() != 0 or shutil.which('ip') is None:
    pytest.skip('network namespaces with their own addresses need root and iproute2')
  tag = f'fs{os.getpid() % 100000}'
  block = os.getpid() % 250
  made, procs = [], []
  try:
    for i in range(2):
      ns, here, there = f'{tag}w{i}', f'{tag}h{i}', f'{tag}n{i}'
      _ip('netns', 'add', ns)
      made.append((ns, here))
      _ip('link', 'add', here, 'type', 'veth', 'peer', 'name', there)
      _ip('link', 'set', there, 'netns', ns)
      _ip('addr', 'add', f'10.231.{block}.{4 * i + 1}/30', 'dev', here)
      _ip('link', 'set', here, 'up')
      _ip('addr', 'add', f'10.231.{block}.{4 * i + 2}/30', 'dev', there, ns=ns)
      _ip('link', 'set', there, 'up', ns=ns)
      _ip('link', 'set', 'lo', 'up', ns=ns)
    hosts = [f'10.231.{block}.{4 * i + 2}' for i in range(2)]
    certs = worker_tls.make_test_ca(str(tmp_path / 'ca'), hosts)
    for i, (ns, _) in enumerate(made):
      procs.append(worker_lib.spawn(
          host=hosts[i], port=8443, tls_dir=certs['worker'], log_file=str(tmp_path / f'w{i}.log'),
          prefix=['ip', 'netns', 'exec', ns]))
    yield procs, certs
  finally:
    codes = [p.stop() for p in procs]
    for ns, here in made:
      subprocess.run(['ip', 'netns', 'del', ns], capture_output=True, timeout=30)
      subprocess.run(['ip', 'link', 'del', here], capture_output=True, timeout=30)
  assert codes == [0, 0]


def test_workers_in_their_own_namespaces_over_tls_equal_the_local_round(tff_context,
                                                                       namespaced_workers):
  procs, certs = namespaced_workers
  spec = collections.OrderedDict(x=tf.TensorSpec([None, 2], tf.float32),
                                 y=tf.TensorSpec([None], tf.int64))

  def model():
    inputs = tf.keras.Input([2])
    return tf.keras.Model(inputs, tf.keras.layers.Dense(2)(tf.keras.layers.Dense(3)(inputs)))

  rng = np.random.default_rng(11)
  data = [(rng.normal(size=(n, 2)).astype(np.float32), rng.integers(0, 2, n).astype(np.int64))
          for n in (2, 3, 4, 5)]
  ids = ['a', 'b', 'c', 'd']
  sets = lambda: [tf.data.Dataset.from_tensor_slices(collections.OrderedDict(x=x, y=y)).batch(2)
                  for x, y in data]
  alg = fedavg.build_fedavg(base.Task(model, spec, 2), sections.ClientTrainingOptions(client_learning_rate=0.3), fedavg.FedAvgOptions())
  state = alg.initialize(seed=2)
  local = alg.next(state, 1, ids, sets(), {})
  addresses = [p.address for p in procs]
  with remote_runtime.workers_runtime(addresses, tls_dir=certs['driver']) as pool:
    remote = alg.next(state, 1, ids, sets(), {})
    traffic = pool.traffic()
  for x, y in zip(tf.nest.flatten(remote.state), tf.nest.flatten(local.state)):
    np.testing.assert_array_equal(x, y)
  assert remote.metrics == local.metrics
  assert all(traffic[a].sent_bytes > 0 for a in addresses)
  for p in procs:
    host, port = worker_tls.split_address(p.address)
    # Three namespaces: ours, the worker's (its own address), the executor's (loopback only).
    ours, worker_ns, executor_ns = (os.readlink(f'/proc/{pid}/ns/net')
                                    for pid in ('self', p.pid, p.executor_pid))
    assert len({ours, worker_ns, executor_ns}) == 3
    owned = executor_sandbox.socket_inodes(p.pid)
    listening = [(a, port_) for a, port_, inode in
                 executor_sandbox.read_listening(f'/proc/{p.pid}/net') if inode in owned]
    assert listening == [(socket.inet_aton(host)[::-1].hex().upper(), port)]
    raw = [port_ for _, port_, inode in executor_sandbox.read_listening(f'/proc/{p.executor_pid}/net')
           if inode in executor_sandbox.socket_inodes(p.executor_pid)]
    assert len(raw) == 1
    with pytest.raises(OSError):  # Refused: the raw port exists on no address we can reach.
      socket.create_connection((host, raw[0]), timeout=5).close()
    assert probe(p.address) is not None  # Plaintext to the worker's address: refused.
