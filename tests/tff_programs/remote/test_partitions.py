"""A call's clients cut into contiguous partitions and joined back (pure)."""

import collections

import numpy as np
import pytest
import tensorflow_federated as tff

from tff_programs.remote import partitions


@pytest.mark.parametrize('clients, parts, bounds', [
    (5, 2, [(0, 3), (3, 5)]),
    (5, 3, [(0, 2), (2, 4), (4, 5)]),
    (7, 3, [(0, 3), (3, 5), (5, 7)]),
    (2, 4, [(0, 1), (1, 2)]),  # Never an empty partition.
    (4, 1, [(0, 4)]),
])
def test_partition_bounds(clients, parts, bounds):
  assert partitions.partition_bounds(clients, parts) == bounds


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
  parts = [partitions.slice_clients(value, type_spec, *b)
           for b in partitions.partition_bounds(5, 3)]
  assert [tff.structure.to_odict(p) for p in parts] == [
      collections.OrderedDict(a=[1, 2], s=0.5, b=[10, 20], e=7, t=9),
      collections.OrderedDict(a=[3, 4], s=0.5, b=[30, 40], e=7, t=9),
      collections.OrderedDict(a=[5], s=0.5, b=[50], e=7, t=9),
  ]
  assert tff.structure.to_odict(partitions.join_partitions(parts, type_spec)) == value


# Shaped like FedAvg's aggregation inputs: per-client updates and weights beside
# unplaced accumulator zeros (the zero of the update sum is model-sized).
AGGREGATION_INPUTS = tff.StructType([
    ('update', tff.FederatedType(np.float32, tff.CLIENTS)),
    ('zero', tff.StructType([np.float32, np.float32])),
    ('mean', tff.StructType([('value', tff.FederatedType(np.float32, tff.CLIENTS)),
                             ('zero', np.float32)])),
    ('server', tff.FederatedType(np.int32, tff.SERVER)),
    ('weight', tff.FederatedType(np.float32, tff.CLIENTS)),
])


def test_per_client_paths_are_the_largest_per_client_parts_in_order():
  assert partitions.per_client_paths(AGGREGATION_INPUTS) == [(0,), (2, 0), (4,)]
  assert partitions.per_client_paths(tff.FederatedType(np.float32, tff.CLIENTS)) == [()]
  assert partitions.per_client_paths(tff.StructType([np.float32])) == []
  assert partitions.holds_per_client(AGGREGATION_INPUTS)
  assert not partitions.holds_per_client(AGGREGATION_INPUTS['zero'])


def test_partitions_after_the_first_need_only_their_per_client_parts():
  first = collections.OrderedDict(update=[1.0, 2.0], zero=(0.0, 0.0),
                                  mean=collections.OrderedDict(value=[5.0, 6.0], zero=0.0),
                                  server=3, weight=[2.0, 3.0])
  second = partitions.with_per_client_parts(AGGREGATION_INPUTS, [[7.0], [8.0], [4.0]])
  assert second == tff.structure.Struct([
      ('update', [7.0]), ('zero', None),
      ('mean', tff.structure.Struct([('value', [8.0]), ('zero', None)])),
      ('server', None), ('weight', [4.0])])
  joined = partitions.join_partitions([first, second], AGGREGATION_INPUTS)
  assert joined.update == [1.0, 2.0, 7.0] and joined.weight == [2.0, 3.0, 4.0]
  assert joined.mean.value == [5.0, 6.0, 8.0] and joined.mean.zero == 0.0
  assert joined.zero == (0.0, 0.0) and joined.server == 3  # The first partition's.
  with pytest.raises(ValueError, match='2 parts for 3 per-client paths'):
    partitions.with_per_client_parts(AGGREGATION_INPUTS, [[7.0], [8.0]])
