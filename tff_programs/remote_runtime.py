r"""Spreads each round's clients over several TFF executor services (`--workers`).

    with runtime.tff_runtime() as local, remote_runtime.workers_runtime(
        ['10.0.0.2:8443', '10.0.0.3:8443'], tls_dir='certs/driver') as pool:
      algorithm = remote_runtime.MeasuredAlgorithm(algorithm, pool)
      output = algorithm.next(...)   # the round's clients run on the workers;
                                     # output.metrics gains worker<i>_sent_bytes, ...

Each worker is a `python -m tff_programs.worker` (TFF's `worker_binary` behind
a loopback or mutual-TLS endpoint). `WorkerPool` is a TFF synchronous context:
a computation without clients runs in the driver's own context; a computation
with clients is split by TFF's compiler passes into before / aggregate /
after, its clients are cut into one contiguous partition per worker, `before`
(the client training) runs on the workers, `aggregate` once on the driver over
all clients in client order, and `after` on the workers that hold the
intermediate state. A lost worker's clients move to the remaining workers; when
none remains the round raises `WorkersLostError`. Every request and response is
counted per worker; `MeasuredAlgorithm` puts each round's bytes in its metrics.

Results equal a local run's exactly (tested bit for bit with 2 and 3 workers):
every client runs the same TF graph on the same inputs, and the aggregation
runs once over all clients in the same order as in the local executor. That
holds for workers with the same CPU kind as the driver: oneDNN kernels chosen
for another instruction set can differ in the last bits.

The work is done in `tff_programs.remote`, one job per module (`partitions`,
`split`, `workers`, `pool`, `measured`; each documents its part). This module
is the public face its callers (`experiment`, `train`, benchmarks, tests)
import: the names below, unchanged.
"""

# pylint: disable=g-importing-member,unused-import
from tff_programs.remote.addresses import check_workers
from tff_programs.remote.addresses import parse_workers
from tff_programs.remote.errors import NotSpreadableError
from tff_programs.remote.errors import WorkerConfigError
from tff_programs.remote.errors import WorkersLostError
from tff_programs.remote.measured import MeasuredAlgorithm
from tff_programs.remote.measured import traffic_columns
from tff_programs.remote.partitions import join_partitions
from tff_programs.remote.partitions import partition_bounds
from tff_programs.remote.partitions import slice_clients
from tff_programs.remote.pool import CONNECT_TIMEOUT_S
from tff_programs.remote.pool import WorkerPool
from tff_programs.remote.pool import workers_runtime
from tff_programs.remote.split import Plan
from tff_programs.remote.split import split_computation
from tff_programs.remote.workers import CountingStub
from tff_programs.remote.workers import Traffic
from tff_programs.remote.workers import Worker
from tff_programs.remote.workers import lost_reason
from tff_programs.remote.workers import open_channel
# pylint: enable=g-importing-member,unused-import
