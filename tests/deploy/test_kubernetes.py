"""The Kubernetes example agrees with itself and with the worker's command line:
ports, labels the NetworkPolicy admits, certificate names, secrets, flags."""

import fnmatch
import os
import re

import pytest

from tff_programs import worker as worker_lib
from tff_programs import worker_tls

PATH = os.path.join(worker_lib.REPO_ROOT, 'deploy', 'kubernetes', 'fedsuite-workers.yaml')


@pytest.fixture(scope='module')
def docs():
  text = open(PATH).read()
  found = {}
  for doc in text.split('\n---\n'):
    kind = re.search(r'^kind: (\S+)$', doc, re.M).group(1)
    found[kind] = doc
  found['header'] = text.split('\napiVersion:', 1)[0]
  return found


def one(pattern, text):
  values = re.findall(pattern, text, re.M)
  assert len(values) == 1, (pattern, values)
  return values[0]


def args(doc):
  """The container's `args:` items (`- --flag=value` lines)."""
  block = doc.split('args:\n', 1)[1]
  return re.findall(r'^\s+- (--\S+)$', block.split('volumeMounts:', 1)[0], re.M)


def flag(arguments, name):
  return one(rf'^--{name}=(\S+)$', '\n'.join(arguments))


def test_kinds(docs):
  assert sorted(k for k in docs if k != 'header') == ['Job', 'NetworkPolicy', 'Service',
                                                      'StatefulSet']


def test_worker_flags_are_the_workers_and_ports_agree(docs):
  workers = docs['StatefulSet']
  arguments = args(workers)
  parsed = worker_lib.build_parser().parse_args(arguments)  # Exits on an unknown flag.
  assert parsed.worker_tls_dir == one(r'^\s+mountPath: (/etc/\S+)$', workers)
  assert worker_lib.listen_host(parsed.host, tls=True) == '0.0.0.0'
  port = parsed.port
  assert int(one(r'^\s+containerPort: (\d+)$', workers)) == port
  assert int(one(r'^\s+port: (\d+)$', docs['Service'])) == port
  assert int(one(r'^\s+targetPort: (\d+)$', docs['Service'])) == port
  assert int(one(r'^\s+port: (\d+)$', docs['NetworkPolicy'])) == port


def test_the_network_policy_admits_only_the_driver_pods(docs):
  policy = docs['NetworkPolicy']
  selected = one(r'^  podSelector:\n    matchLabels:\n      app: (\S+)$', policy)
  assert selected == one(r'^        app: (\S+)$', docs['StatefulSet'].split('template:')[1])
  admitted = re.findall(r'^\s+- podSelector:\n\s+matchLabels:\n\s+app: (\S+)$', policy, re.M)
  assert admitted == [one(r'^        app: (\S+)$', docs['Job'])] == ['fedsuite-driver']
  assert 'ipBlock' not in policy and 'namespaceSelector' not in policy
  assert re.findall(r'^    - (Ingress|Egress)$', policy, re.M) == ['Ingress', 'Egress']
  assert one(r'^  egress: (\[\])', policy) == '[]'


def test_the_driver_lists_every_worker_by_a_name_the_certificate_covers(docs):
  workers = docs['StatefulSet']
  replicas = int(one(r'^  replicas: (\d+)$', workers))
  service = one(r'^  serviceName: (\S+)$', workers)
  name = one(r'^  name: (\S+)$', workers)
  assert service == one(r'^  name: (\S+)$', docs['Service'])
  addresses = worker_tls.parse_workers(flag(args(docs['Job']), 'workers'))
  port = worker_lib.build_parser().parse_args(args(workers)).port
  assert addresses == tuple(f'{name}-{i}.{service}.default.svc.cluster.local:{port}'
                            for i in range(replicas))
  [hosts] = re.findall(r"--hosts='([^']+)'", docs['header'])
  for address in addresses:
    host, _ = worker_tls.split_address(address)
    assert any(fnmatch.fnmatch(host, pattern) and host.count('.') == pattern.count('.')
               for pattern in hosts.split(',')), host
  worker_tls.check_hosts(hosts.split(','))


def test_secrets_hold_the_made_certificates(docs):
  header = docs['header']
  made = dict(re.findall(r'kubectl create secret generic (\S+) --from-file=certs/(\w+)/', header))
  assert made == {'fedsuite-worker-tls': 'worker', 'fedsuite-driver-tls': 'driver'}
  assert one(r'^\s+secretName: (\S+)$', docs['StatefulSet']) == 'fedsuite-worker-tls'
  assert one(r'^\s+secretName: (\S+)$', docs['Job']) == 'fedsuite-driver-tls'
  assert flag(args(docs['Job']), 'worker_tls_dir') == one(
      r'^\s+mountPath: (/etc/\S+)$', docs['Job'])
