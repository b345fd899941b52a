"""`tff_programs.remote_runtime` keeps the names its callers import (experiment,
train, benchmarks/workers.py, worker tests): each is the object of the
`tff_programs.remote` module that does the work (tested there, in
tests/tff_programs/remote/)."""

import pytest

from tff_programs import remote_runtime
from tff_programs.remote import addresses
from tff_programs.remote import errors
from tff_programs.remote import measured
from tff_programs.remote import partitions
from tff_programs.remote import pool
from tff_programs.remote import split
from tff_programs.remote import workers


@pytest.mark.parametrize('name, module', [
    ('parse_workers', addresses),
    ('check_workers', addresses),
    ('WorkerConfigError', errors),
    ('WorkersLostError', errors),
    ('NotSpreadableError', errors),
    ('workers_runtime', pool),
    ('WorkerPool', pool),
    ('CONNECT_TIMEOUT_S', pool),
    ('MeasuredAlgorithm', measured),
    ('traffic_columns', measured),
    ('split_computation', split),
    ('Plan', split),
    ('partition_bounds', partitions),
    ('slice_clients', partitions),
    ('join_partitions', partitions),
    ('Worker', workers),
    ('Traffic', workers),
    ('CountingStub', workers),
    ('lost_reason', workers),
    ('open_channel', workers),
])
def test_the_public_names_are_the_remote_modules_objects(name, module):
  assert getattr(remote_runtime, name) is getattr(module, name)
