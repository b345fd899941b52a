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
