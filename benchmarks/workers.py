r"""Round time and bytes per worker of a FedAvg round spread over 1, 2 and 4 workers.

    python benchmarks/workers.py [--workers=1,2,4] [--clients=8] [--per_client=100] \
        [--repeats=3] [--out=benchmarks/results/workers.json]
    python benchmarks/workers.py --tiny --out=/tmp/workers.json   # a smoke run, seconds

Workload: FedAvg (TFF's `build_weighted_fed_avg`) with the FedAvg paper's MNIST
CNN (1,663,370 parameters) on MNIST-shaped random images, `--clients` clients
of `--per_client` examples, E=1, B=10. The workers are `python -m
tff_programs.worker` processes on loopback ports of THIS machine: they share
its cores with each other and with the driver, so the times say what the
spreading costs (serialization, transfer, per-round set-up), not what N
machines would gain. Each count's first round (tracing, compilation) is not
timed; the median of `--repeats` rounds is reported, with the bytes sent to and
received from each worker in the last timed round and whether the round's
model equals the local round's bit for bit. A local round (the driver's own
executor, no workers) is measured the same way for reference.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tff_programs import quiet_tf  # pylint: disable=g-import-not-at-top,wrong-import-position

quiet_tf.silence_cpp_logs(sys.argv)  # Before TensorFlow is imported.

import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position
import tensorflow as tf  # pylint: disable=g-import-not-at-top,wrong-import-position

from models import registry as model_registry  # pylint: disable=g-import-not-at-top,wrong-import-position
from tff_programs import remote_runtime  # pylint: disable=g-import-not-at-top,wrong-import-position
from tff_programs import runtime  # pylint: disable=g-import-not-at-top,wrong-import-position
from tff_programs import worker as worker_lib  # pylint: disable=g-import-not-at-top,wrong-import-position
from tff_programs.algorithms import base  # pylint: disable=g-import-not-at-top,wrong-import-position
from tff_programs.algorithms import fedavg  # pylint: disable=g-import-not-at-top,wrong-import-position
from tff_programs import sections  # pylint: disable=g-import-not-at-top,wrong-import-position

BATCH, LR = 10, 0.1


def tiny_model():
  inputs = tf.keras.Input([2])
  return tf.keras.Model(inputs, tf.keras.layers.Dense(2)(tf.keras.layers.Dense(3)(inputs)))


def workload(tiny: bool, clients: int, per_client: int, seed: int = 0):
  """(task, client datasets, description)."""
  rng = np.random.default_rng(seed)
  if tiny:
    shape, classes, builder, name = (2,), 2, tiny_model, 'dense 2-3-2'
  else:
    shape, classes, name = (28, 28, 1), 10, 'mnist_cnn'
    builder = lambda: model_registry.build_model('mnist_cnn', shape, classes)
  x = rng.random((clients * per_client, *shape), dtype=np.float32)
  y = rng.integers(0, classes, clients * per_client).astype(np.int64)
  spec = collections.OrderedDict(x=tf.TensorSpec([None, *shape], tf.float32),
                                 y=tf.TensorSpec([None], tf.int64))
  datasets = [tf.data.Dataset.from_tensor_slices(collections.OrderedDict(
      x=x[i * per_client:(i + 1) * per_client], y=y[i * per_client:(i + 1) * per_client]))
              .batch(BATCH) for i in range(clients)]
  params = sum(int(np.prod(v.shape)) for v in builder().trainable_weights)
  return base.Task(builder, spec, classes), datasets, f'{name} ({params:,} params)'


def timed_rounds(alg, state, datasets, repeats: int, pool=None):
  """(seconds of each timed round, the last round's output, its traffic per worker)."""
  ids = [f'c{i}' for i in range(len(datasets))]
  alg.next(state, 1, ids, datasets, {})  # Warm-up: tracing and compilation.
  times, out, traffic = [], None, {}
  for _ in range(repeats):
    before = pool.traffic() if pool is not None else None
    start = time.perf_counter()
    out = alg.next(state, 1, ids, datasets, {})
    times.append(time.perf_counter() - start)
    if pool is not None:
      traffic = pool.traffic_since(before)
  return times, out, traffic


def same(a, b) -> bool:
  return all(np.array_equal(x, y) for x, y in zip(tf.nest.flatten(a), tf.nest.flatten(b)))


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--workers', default='1,2,4', help='worker counts to measure')
  parser.add_argument('--clients', type=int, default=8)
  parser.add_argument('--per_client', type=int, default=100)
  parser.add_argument('--repeats', type=int, default=3)
  parser.add_argument('--tiny', action='store_true', help='a 2-3-2 dense model: a smoke run')
  parser.add_argument('--out', default=os.path.join('benchmarks', 'results', 'workers.json'))
  args = parser.parse_args(argv)
  counts = sorted({int(c) for c in args.workers.split(',') if c.strip()})
  task, datasets, description = workload(args.tiny, args.clients, args.per_client)
  alg = fedavg.build_fedavg(task, sections.ClientTrainingOptions(client_learning_rate=LR), fedavg.FedAvgOptions())
  results = []
  with runtime.tff_runtime():
    state = alg.initialize(seed=0)
    local_times, local_out, _ = timed_rounds(alg, state, datasets, args.repeats)
    procs = [worker_lib.spawn() for _ in range(max(counts))]
    try:
      for n in counts:
        addresses = [p.address for p in procs[:n]]
        with remote_runtime.workers_runtime(addresses) as pool:
          times, out, traffic = timed_rounds(alg, state, datasets, args.repeats, pool)
        results.append(collections.OrderedDict(
            workers=n,
            round_seconds_median=statistics.median(times),
            round_seconds=times,
            equals_local_round=same(out.state, local_out.state),
            per_worker=[collections.OrderedDict(
                sent_bytes=traffic[a].sent_bytes, received_bytes=traffic[a].received_bytes,
                rpcs=traffic[a].calls) for a in addresses],
        ))
        print(f'{n} worker(s): {statistics.median(times):.3f} s per round; sent per worker '
              f'{[traffic[a].sent_bytes for a in addresses]} B', flush=True)
    finally:
      for p in procs:
        p.stop()
  report = collections.OrderedDict(
      workload=collections.OrderedDict(
          algorithm='fedavg', model=description, clients=args.clients,
          examples_per_client=args.per_client, local_epochs=1, batch_size=BATCH,
          repeats=args.repeats),
      machine=collections.OrderedDict(
          cpus=os.cpu_count(), platform=platform.platform(), python=platform.python_version()),
      local_round_seconds_median=statistics.median(local_times),
      local_round_seconds=local_times,
      spread=results,
  )
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(args.out, 'w') as f:
    json.dump(report, f, indent=2)
  print(f'local: {statistics.median(local_times):.3f} s per round; wrote {args.out}')
  print('| workers | round (s) | sent per worker (MB) | received per worker (MB) | = local |')
  print('|---|---|---|---|---|')
  for r in results:
    sent = ', '.join(f"{w['sent_bytes'] / 1e6:.2f}" for w in r['per_worker'])
    received = ', '.join(f"{w['received_bytes'] / 1e6:.2f}" for w in r['per_worker'])
    print(f"| {r['workers']} | {r['round_seconds_median']:.2f} | {sent} | {received} | "
          f"{'yes' if r['equals_local_round'] else 'NO'} |")
  return 0


if __name__ == '__main__':
  sys.exit(main())
