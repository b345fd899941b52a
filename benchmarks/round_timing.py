r"""The measuring tools of benchmarks/round_speed.py (see its docstring).

A CLI round timed from metrics.csv (`cli_rounds`), each paired with a plain
`tf.function` pass over the same batches (`PlainLoop`, `paired_cli`); the busy
cores and CPU seconds of every measurement (`BusyCores`, `worker_cpu_seconds`),
because this VM at times runs a process on one of its two vCPUs; a round split
into its phases (`profile_rounds`); `tff.learning` processes timed directly
(`next_seconds`). Run by hand, never by the tests.
"""

from __future__ import annotations

import collections
import csv
import os
import statistics
import tempfile
import time
from collections.abc import Mapping, Sequence
from typing import Any, Callable

import numpy as np
import psutil
import tensorflow as tf

from datasets import client_files
from datasets import federated
from datasets import preprocessing
from datasets import registry as dataset_registry
from models import registry as model_registry
from tff_programs import checkpointing
from tff_programs import experiment
from tff_programs import program_logic
from tff_programs import run_outputs
from tff_programs import runtime
from tff_programs.algorithms import base
from tff_programs.algorithms import fedavg

LR = 0.1


# ---- how many cores a measurement had -----------------------------------------


def cpu_jiffies() -> tuple[int, int]:
  """(busy, total) jiffies of the whole machine since boot, from /proc/stat."""
  with open('/proc/stat') as f:
    values = [int(v) for v in f.readline().split()[1:]]
  idle = values[3] + values[4]  # idle + iowait
  return sum(values) - idle, sum(values)


class BusyCores:
  """Cores the machine kept busy between `start()` and `stop()` (0..cpu_count).

  This VM runs in two speed modes: in one, a pass of the plain loop keeps
  both cores busy (~1.7 cores, 2.3-3.3 s); in the other the same pass takes
  5.15 s with the same CPU time and one core idle (~0.9 cores). Recording the
  busy cores of every measurement tells the modes apart, so FedSuite's round
  and the plain pass are compared in the same mode.
  """

  def __init__(self):
    self._start = cpu_jiffies()

  def start(self) -> None:
    self._start = cpu_jiffies()

  def stop(self) -> float:
    busy, total = cpu_jiffies()
    d_busy, d_total = busy - self._start[0], total - self._start[1]
    return (os.cpu_count() or 1) * d_busy / d_total if d_total else 0.0


TWO_CORE_MODE = 1.4  # busy cores at or above which a measurement ran in the fast mode
SETTLE_SECONDS = 1.0  # idle time between a cli round and its paired plain pass


# ---- data ---------------------------------------------------------------------


def mnist_arrays(data_dir: str | None, seed: int = 0):
  """Real MNIST (uint8) if a folder is given, else MNIST-shaped random uint8 images."""
  if data_dir:
    data = dataset_registry.load_dataset('mnist', data_dir)
    return data.x_train, data.y_train, data.x_test, data.y_test
  rng = np.random.default_rng(seed)
  x = rng.integers(0, 256, (60000, 28, 28, 1), dtype=np.uint8)
  y = rng.integers(0, 10, 60000).astype(np.int64)
  return x, y, x[:10000], y[:10000]


def federated_views(x, y, x_test, y_test, *, num_clients: int, per_client: int,
                    name: str = 'mnist', num_classes: int = 10) -> federated.FederatedData:
  """K clients of `per_client` examples each, as views of (x, y) (client k takes
  block k mod (len(x) // per_client)), so K=3,400 costs no memory."""
  blocks = len(x) // per_client
  ids = tuple(f'client_{i:04d}' for i in range(num_clients))
  arrays = {cid: (x[(i % blocks) * per_client:(i % blocks + 1) * per_client],
                  y[(i % blocks) * per_client:(i % blocks + 1) * per_client])
            for i, cid in enumerate(ids)}
  return federated.FederatedData(
      name=name, client_ids=ids, train_arrays=arrays, test_arrays=None,
      central_test=(x_test, y_test),
      label_histogram=np.ones((num_clients, num_classes), np.int64),
      num_classes=num_classes, input_shape=tuple(x.shape[1:]))


def mnist_cnn():
  return model_registry.build_model('mnist_cnn', (28, 28, 1), 10)


# ---- the plain loop -----------------------------------------------------------


class PlainLoop:
  """One `tf.function` SGD pass over `datasets` (concatenated), one model.

  Traced once on construction; each call times one more pass. Calling it right
  after each CLI round (`cli_rounds(on_round=...)`) pairs every round with a
  plain pass measured seconds apart: on a VM whose speed drifts between modes,
  the median of the paired ratios is far steadier than a ratio of medians.
  """

  def __init__(self, datasets: list[tf.data.Dataset], builder: Callable[[], tf.keras.Model],
               lr: float):
    model = builder()
    loss_fn = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function
    def train(ds):
      loss = tf.constant(0.0)
      for batch in ds:
        with tf.GradientTape() as tape:
          loss = loss_fn(batch['y'], model(batch['x'], training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        for v, g in zip(model.trainable_variables, grads):
          v.assign_sub(lr * g)
      return loss

    dataset = datasets[0]
    for d in datasets[1:]:
      dataset = dataset.concatenate(d)
    self._train, self._dataset = train, dataset
    train(dataset)  # warm-up: tracing

  def __call__(self) -> float:
    meter = BusyCores()
    cpu = time.process_time()
    start = time.perf_counter()
    self._train(self._dataset).numpy()
    seconds = time.perf_counter() - start
    self.last_busy_cores = meter.stop()
    self.last_cpu_seconds = time.process_time() - cpu
    return seconds


def plain_seconds(datasets: list[tf.data.Dataset], builder: Callable[[], tf.keras.Model],
                  lr: float, repeats: int) -> list[float]:
  """Median-able times of one `tf.function` SGD pass over `datasets`, one model."""
  loop = PlainLoop(datasets, builder, lr)
  return [loop() for _ in range(repeats)]


def paired_cli(data: federated.FederatedData, plain: PlainLoop, **cli_args) -> dict[str, Any]:
  """CLI rounds, each followed by a plain pass: times, busy cores, CPU
  seconds and paired ratios.

  `two_core_ratios` keeps the pairs whose round and plain pass both ran in the
  VM's fast mode (>= TWO_CORE_MODE busy cores, see BusyCores): the like-for-like
  comparison. `ratios` is every pair, whatever its modes. `cpu_ratios` compare
  CPU seconds (the round's driver + worker, the plain pass's process), which do
  not depend on the mode.
  """
  after: dict[int, tuple[float, float, float]] = {}

  def plain_pass(round_num):
    # A settling second on each side: a process's TF threads spin for a while
    # after their work, and would run into the other side's measurement.
    time.sleep(SETTLE_SECONDS)
    seconds = plain()
    after[round_num] = (seconds, plain.last_busy_cores, plain.last_cpu_seconds)
    time.sleep(SETTLE_SECONDS)

  busy: dict[int, float] = {}
  cpu: dict[int, float] = {}
  times = cli_rounds(data, on_round=plain_pass, busy_cores=busy, cpu_seconds=cpu, **cli_args)
  # cli_rounds returns rounds 2..N-1 (round 1 traces, round N evaluates).
  rounds = range(2, 2 + len(times))
  plain_times = [after[r][0] for r in rounds]
  ratios = [c / p for c, p in zip(times, plain_times)]
  cli_busy = [busy[r] for r in rounds]
  plain_busy = [after[r][1] for r in rounds]
  two_core = [ratio for ratio, b_cli, b_plain in zip(ratios, cli_busy, plain_busy)
              if b_cli >= TWO_CORE_MODE and b_plain >= TWO_CORE_MODE]
  cli_cpu = [cpu[r] for r in rounds]
  plain_cpu = [after[r][2] for r in rounds]
  return {'cli': times, 'plain': plain_times, 'ratios': ratios,
          'cli_busy_cores': cli_busy, 'plain_busy_cores': plain_busy,
          'two_core_ratios': two_core, 'cli_cpu': cli_cpu, 'plain_cpu': plain_cpu,
          'cpu_ratios': [c / p for c, p in zip(cli_cpu, plain_cpu)]}


def mode_summary(prefix: str, paired: dict[str, Any]) -> dict[str, Any]:
  """The paired series' busy cores and its like-for-like (fast mode) ratios."""
  two_core = paired['two_core_ratios']
  return {f'{prefix}_busy_cores': paired['cli_busy_cores'],
          f'{prefix}_plain_busy_cores': paired['plain_busy_cores'],
          f'{prefix}_two_core_ratios': two_core,
          f'{prefix}_two_core_ratio_median': med(two_core) if two_core else None,
          f'{prefix}_min_ratio': min(paired['cli']) / min(paired['plain']),
          f'{prefix}_cpu_seconds': paired['cli_cpu'],
          f'{prefix}_plain_cpu_seconds': paired['plain_cpu'],
          f'{prefix}_cpu_ratio_median': med(paired['cpu_ratios'])}


def pooled_pairs(halves: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
  """Several `paired_cli` series of one setting pooled: every list
  concatenated, with the medians of the round, its plain pass, the three
  ratios and the busy cores."""
  pooled = {key: [v for half in halves for v in half[key]] for key in halves[0]}
  for key in ('cli', 'plain', 'ratios', 'two_core_ratios', 'cpu_ratios', 'cli_busy_cores',
              'plain_busy_cores'):
    pooled[f'{key}_median'] = med(pooled[key]) if pooled[key] else None
  return pooled


def client_datasets(data: federated.FederatedData, files, ids, *, epochs: int, batch: int,
                    prep: preprocessing.Preprocessing, round_num: int = 1):
  return [federated.client_dataset(*files.get(cid), batch_size=batch, epochs=epochs,
                                   shuffle_seed=federated.round_seed(0, round_num, i),
                                   map_fn=prep.train_map, batch_map=prep.batch_map)
          for i, cid in enumerate(ids)]


# ---- TFF process.next ----------------------------------------------------------


def next_seconds(make_process, datasets_for_round, repeats: int,
                 max_concurrent: int = -1) -> list[float]:
  with runtime.tff_runtime(max_concurrent_computation_calls=max_concurrent):
    algorithm_or_process = make_process()
    is_algorithm = isinstance(algorithm_or_process, base.FederatedAlgorithm)
    state = algorithm_or_process.initialize(0) if is_algorithm else algorithm_or_process.initialize()

    def step(state, r):
      datasets = datasets_for_round(r)
      if is_algorithm:
        ids = [f'c{i}' for i in range(len(datasets))]
        return algorithm_or_process.next(state, r, ids, datasets, {}).state
      return algorithm_or_process.next(state, datasets).state

    state = step(state, 1)  # warm-up: tracing
    times = []
    for r in range(repeats):
      start = time.perf_counter()
      state = step(state, r + 2)
      times.append(time.perf_counter() - start)
    return times


# ---- the CLI path --------------------------------------------------------------


def cli_rounds(data: federated.FederatedData, *, rounds: int, clients_per_round: int,
               epochs: int, batch: int, model: str = 'mnist_cnn', dataset: str = 'mnist',
               on_round: Callable[[int], None] | None = None,
               extra: dict | None = None, eval_every: int = 10**6,
               busy_cores: dict[int, float] | None = None,
               cpu_seconds: dict[int, float] | None = None) -> list[float]:
  """`run_experiment` on `data`; the seconds of rounds 2.. from metrics.csv.

  `on_round(r)` runs after round r's row is written; `busy_cores`, if given,
  receives each round's busy cores (from taking its inputs to its row), and
  `cpu_seconds` its CPU seconds (driver + TFF worker): the cost of the work,
  which unlike wall time does not depend on the VM's speed mode.
  """
  original_load = experiment.load_federated_data
  original_release = run_outputs.RunOutputs.release_metrics
  original_take = program_logic.RoundInputs.take
  experiment.load_federated_data = lambda cfg: data
  meter = BusyCores()

  cpu_at_start = [0.0]

  def take(self, round_num):
    meter.start()
    if cpu_seconds is not None:
      cpu_at_start[0] = time.process_time() + worker_cpu_seconds()
    return original_take(self, round_num)

  def release(self, round_num, row):
    if busy_cores is not None:
      busy_cores[round_num] = meter.stop()
    if cpu_seconds is not None:
      cpu_seconds[round_num] = time.process_time() + worker_cpu_seconds() - cpu_at_start[0]
    original_release(self, round_num, row)
    if on_round is not None:
      on_round(round_num)

  program_logic.RoundInputs.take = take
  run_outputs.RunOutputs.release_metrics = release
  try:
    with tempfile.TemporaryDirectory() as out:
      cfg = experiment.ExperimentConfig(
          dataset=dataset, model=model, partition='iid', num_clients=len(data.client_ids),
          client_fraction=clients_per_round / len(data.client_ids), local_epochs=epochs,
          batch_size=batch, client_learning_rate=LR, rounds=rounds, eval_every=eval_every,
          export=False, output_dir=out, run_name='bench', personalized_eval=False,
          **(extra or {}))
      experiment.run_experiment(cfg, show_progress=False, log=lambda *a: None)
      with open(os.path.join(out, 'bench', 'metrics.csv')) as f:
        rows = list(csv.DictReader(f))
  finally:
    experiment.load_federated_data = original_load
    run_outputs.RunOutputs.release_metrics = original_release
    program_logic.RoundInputs.take = original_take
  # The last round also evaluates (eval at the last round): leave it out.
  return [float(r['seconds']) for r in rows[1:-1]] or [float(rows[-1]['train_seconds'])]


def round_costs(seconds: Sequence[float], cpu_seconds: Sequence[float],
                busy_cores: Sequence[float]) -> dict[str, Any]:
  """Medians of wall and CPU seconds, with every round's values and busy cores."""
  return {'seconds': med(seconds), 'cpu_seconds': med(cpu_seconds), 'rounds': list(seconds),
          'cpu_rounds': list(cpu_seconds), 'busy_cores': list(busy_cores)}


def cost_of_rounds(data: federated.FederatedData, *, rounds: int,
                   clients_per_round: int) -> dict[str, Any]:
  """`round_costs` of CLI rounds 2..N-1 (E=1, B=10)."""
  busy: dict[int, float] = {}
  cpu: dict[int, float] = {}
  seconds = cli_rounds(data, rounds=rounds, clients_per_round=clients_per_round, epochs=1,
                       batch=10, busy_cores=busy, cpu_seconds=cpu)
  measured = range(2, 2 + len(seconds))
  return round_costs(seconds, [cpu[r] for r in measured], [busy[r] for r in measured])


def pooled_costs(runs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
  """`cost_of_rounds` results of the same setting pooled: `round_costs` over all
  their rounds (e.g. the two halves of an A-B-B-A series)."""
  return round_costs(*([v for r in runs for v in r[key]]
                       for key in ('rounds', 'cpu_rounds', 'busy_cores')))


def profile_clients(data: federated.FederatedData, sizes: tuple[int, int]) -> dict[str, Any]:
  """`profile_rounds` at a small and a big number of sampled clients, in
  A-B-B-A order (so that the VM's drift weighs on both), per client: where the
  big round's cost beyond linear goes (driver or worker CPU)."""
  small_m, big_m = sizes
  halves: dict[int, list[dict[str, Any]]] = collections.defaultdict(list)
  for m in (small_m, big_m, big_m, small_m):
    p = profile_rounds(data, rounds=8 if m == small_m else 5, clients_per_round=m,
                       epochs=1, batch=10)
    halves[m].append({'seconds': p['seconds'], 'busy_cores': p['busy_cores'],
                      'driver_cpu_per_client': p['driver_cpu_in_next'] / m,
                      'worker_cpu_per_client': p['worker_cpu_in_next'] / m})
    print(f'profile_clients: {m} clients: {halves[m][-1]}', flush=True)
  pooled = {m: {k: statistics.mean(h[k] for h in hs) for k in
                ('seconds', 'driver_cpu_per_client', 'worker_cpu_per_client')}
            for m, hs in halves.items()}
  return {'halves': dict(halves), 'pooled': pooled,
          'wall_vs_linear': pooled[big_m]['seconds'] / (pooled[small_m]['seconds'] * big_m / small_m)}


def per_client_cost(x, y, x_test, y_test, *, per_client: int,
                    prep: preprocessing.Preprocessing, rounds: int) -> dict[str, Any]:
  """The cost of a client beyond its SGD steps: the same examples and steps a
  round as 10 clients x `per_client` and as 100 clients x `per_client // 10`
  (E=1, B=10), in A-B-B-A order, each round paired with a plain pass over that
  layout's datasets (`paired_cli`). Per extra client (90 of them): the CLI's
  and the plain loop's extra wall and CPU seconds a round, pooled over the
  halves (medians)."""
  layouts = {10: per_client, 100: per_client // 10}
  halves: dict[int, list[dict[str, Any]]] = collections.defaultdict(list)
  for m in (10, 100, 100, 10):
    data = federated_views(x, y, x_test, y_test, num_clients=m, per_client=layouts[m])
    with tempfile.TemporaryDirectory() as tmp, client_files.ClientArrayFiles(
        os.path.join(tmp, 'cd'), data.train_arrays) as files:
      plain = PlainLoop(client_datasets(data, files, list(data.client_ids), epochs=1, batch=10,
                                        prep=prep), mnist_cnn, LR)
      halves[m].append(paired_cli(data, plain, rounds=rounds, clients_per_round=m, epochs=1,
                                  batch=10))
  pooled = {m: {key: med([v for half in hs for v in half[key]])
                for key in ('cli', 'plain', 'cli_cpu', 'plain_cpu')}
            for m, hs in halves.items()}
  extra = lambda key: (pooled[100][key] - pooled[10][key]) / (100 - 10)
  summary = {
      'layouts': {f'{m} x {n}': pooled[m] for m, n in layouts.items()},
      'cli_extra_seconds_per_client': extra('cli'),
      'plain_extra_seconds_per_client': extra('plain'),
      'cli_extra_cpu_seconds_per_client': extra('cli_cpu'),
      'plain_extra_cpu_seconds_per_client': extra('plain_cpu'),
      'cli_minus_plain_seconds_per_round': {
          f'{m} x {n}': pooled[m]['cli'] - pooled[m]['plain'] for m, n in layouts.items()},
  }
  return {'summary': summary, 'halves': dict(halves)}


def worker_cpu_seconds() -> float:
  """User + system CPU seconds of the TFF workers this process started."""
  total = 0.0
  for pid in runtime.tagged_worker_pids(started_by=os.getpid()):
    try:
      times = psutil.Process(pid).cpu_times()
      total += times.user + times.system
    except psutil.Error:
      pass
  return total


def profile_rounds(data: federated.FederatedData, *, rounds: int, **cli_args) -> dict[str, Any]:
  """A CLI round split into its phases (wall seconds per round, median over
  rounds 2..N-1): taking the prefetched inputs, `algorithm.next` (with the
  driver's and the worker's CPU seconds during it: the driver's is TFF's
  serialization and gRPC, the worker's the training), the divergence check,
  writing the metrics row, checkpointing (every 10th round by default, outside
  the row's `seconds`), and what is left of `seconds`."""
  phases = (('inputs', program_logic.RoundInputs, 'take'),
            ('algorithm_next', fedavg.LearningProcessAlgorithm, 'next'),
            ('divergence_check', program_logic, 'check_finite'),
            ('metrics_row', run_outputs.RunOutputs, 'release_metrics'),
            ('checkpoint', checkpointing.CheckpointManager, 'save'))
  per_round: dict[int, collections.Counter] = collections.defaultdict(collections.Counter)
  current = [0]
  originals = []

  def timed(name, fn):
    def wrapper(*args, **kwargs):
      if name == 'inputs':
        current[0] += 1
      counter = per_round[current[0]]
      cpu0, worker0 = time.process_time(), worker_cpu_seconds() if name == 'algorithm_next' else 0.0
      start = time.perf_counter()
      try:
        return fn(*args, **kwargs)
      finally:
        counter[name] += time.perf_counter() - start
        if name == 'algorithm_next':
          counter['driver_cpu_in_next'] += time.process_time() - cpu0
          counter['worker_cpu_in_next'] += worker_cpu_seconds() - worker0
    return wrapper

  for name, owner, attr in phases:
    original = getattr(owner, attr)
    originals.append((owner, attr, original))
    setattr(owner, attr, timed(name, original))
  busy: dict[int, float] = {}
  try:
    seconds = cli_rounds(data, rounds=rounds, busy_cores=busy, **cli_args)
  finally:
    for owner, attr, original in originals:
      setattr(owner, attr, original)
  measured = range(2, 2 + len(seconds))
  names = [name for name, _, _ in phases if name != 'checkpoint']
  result = {name: med([per_round[r][name] for r in measured])
            for name in names + ['driver_cpu_in_next', 'worker_cpu_in_next']}
  result['rest_of_round'] = med([s - sum(per_round[r][n] for n in names)
                                 for r, s in zip(measured, seconds)])
  result['seconds'] = med(seconds)
  saves = [per_round[r]['checkpoint'] for r in per_round if per_round[r]['checkpoint']]
  result['checkpoint_per_save'] = med(saves) if saves else None
  result['busy_cores'] = [busy[r] for r in measured]
  result['rounds'] = seconds
  result['per_round'] = {r: dict(per_round[r]) for r in measured}
  return result


def rss_parts_mb() -> tuple[float, float]:
  """(RSS of this process, RSS of the TFF workers it started), in MiB."""
  workers = 0
  for pid in runtime.tagged_worker_pids(started_by=os.getpid()):
    try:
      workers += psutil.Process(pid).memory_info().rss
    except psutil.Error:
      pass
  return psutil.Process().memory_info().rss / 2**20, workers / 2**20


# ---- report --------------------------------------------------------------------


def med(times: list[float]) -> float:
  return statistics.median(times)
