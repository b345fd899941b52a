"""A round's bytes to and from each worker, in its metrics row.

`MeasuredAlgorithm` wraps any algorithm run in a `pool.WorkerPool`; the
program loop writes the added `traffic_columns` to metrics.csv like any other
column. A round sends each worker the server state, its clients' data (or,
with client files on shared storage, their paths:
`WorkerPool.check_shared_file` says whether a worker sees the driver's files)
and the split computation (about 240 KB for FedAvg on the MNIST CNN); it
receives one update per client.
"""

from __future__ import annotations

import collections
from collections.abc import Mapping, Sequence

from tff_programs.algorithms import base
from tff_programs.remote import pool as pool_lib
from tff_programs.remote.workers import Traffic  # pylint: disable=g-importing-member


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


class MeasuredAlgorithm(base.FederatedAlgorithm):
  """An algorithm whose round rows also hold the bytes exchanged with each worker.

  Wraps any `FederatedAlgorithm`: every attribute and method but `next` is the
  wrapped algorithm's (present and future ones); `next` adds the
  `traffic_columns` of what went to and came from the workers during that
  round. The program loop writes them to metrics.csv like any other column.
  """

  _OWN = frozenset({'next', '_algorithm', '_pool', '__class__', '__dict__'})

  def __init__(self, algorithm: base.FederatedAlgorithm, pool: pool_lib.WorkerPool):
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
