r"""Round speed: FedSuite's FedAvg round against the same SGD steps in plain TF.

    python benchmarks/round_speed.py [--data_dir=/path/to/mnist] [--quick]
        [--parts=plain,tff,cli,e5,eval,scaling,memory,cifar] [--cifar_dir=...]

Run it on a quiet machine (nothing else running: a benchmark measured beside a
training job is void) and compare absolute figures with a quiet reference
before believing a ratio. Everything below is measured in ONE process, the
plain loop both before and after the FedSuite measurements (their spread says
how much the machine drifted).

Workload (the issue's): the FedAvg paper's MNIST CNN (1,663,370 parameters),
one round = 10 clients x 600 MNIST images, E=1, B=10, i.e. 600 SGD steps.

  plain       a `tf.function` SGD loop over the same 600 batches (FedSuite's
              client pipeline: uint8 pixels scaled per batch), one model;
  tff_stock   one `process.next` of `tff.learning`'s FedAvg with default settings;
  fedsuite    one `algorithm.next` of FedSuite's FedAvg (what the CLI calls);
  concurrency `algorithm.next` with the worker's max_concurrent_computation_calls
              -1 (unlimited, the default), 1, 2, 4;
  cli         a round of `tff_programs.experiment.run_experiment` (the CLI's
              path: sampling, client files, next, divergence check, metrics
              row, checkpoints every 10 rounds), from metrics.csv, no evaluation;
              each round is followed by a plain pass, and the median of these
              paired ratios is reported (`cli_paired_ratio_median`): this VM
              drifts between speed modes, so a ratio of two medians taken
              minutes apart moves by +-30%;
  e5          the same with E=5 (3,000 steps), paired with the plain E=5 pass;
  eval        central evaluation of 10,000 test images: FedSuite's one pass
              (global accuracy + every client's split) vs Keras `model.evaluate`;
  scaling     cli rounds with 10/20/50/100 sampled clients of K=100, and with
              10 sampled of K=100 vs K=3,400 (per-client size fixed at 600);
  memory      driver + worker RSS over 300 short rounds (2 clients x 60 images);
  cifar       `cifar_cnn`, 10 clients x 5,000 CIFAR images, E=1, B=50: a cli
              round vs a plain loop over the same augmentation pipeline.

Writes benchmarks/results/round_speed.json and prints a table. With --quick every
workload is cut down (a smoke run of the script, not a measurement).
"""

from __future__ import annotations

import argparse
import collections
import csv
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from typing import Any, Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tff_programs import quiet_tf  # pylint: disable=g-import-not-at-top,wrong-import-position

quiet_tf.silence_cpp_logs(sys.argv)

import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position
import psutil  # pylint: disable=g-import-not-at-top,wrong-import-position
import tensorflow as tf  # pylint: disable=g-import-not-at-top,wrong-import-position
import tensorflow_federated as tff  # pylint: disable=g-import-not-at-top,wrong-import-position

from datasets import client_files  # pylint: disable=g-import-not-at-top,wrong-import-position
from datasets import federated  # pylint: disable=g-import-not-at-top,wrong-import-position
from datasets import preprocessing  # pylint: disable=g-import-not-at-top,wrong-import-position
from datasets import registry as dataset_registry  # pylint: disable=g-import-not-at-top,wrong-import-position
from models import registry as model_registry  # pylint: disable=g-import-not-at-top,wrong-import-position
from tff_programs import evaluation  # pylint: disable=g-import-not-at-top,wrong-import-position
from tff_programs import experiment  # pylint: disable=g-import-not-at-top,wrong-import-position
from tff_programs import model_adapter  # pylint: disable=g-import-not-at-top,wrong-import-position
from tff_programs import run_outputs  # pylint: disable=g-import-not-at-top,wrong-import-position
from tff_programs import runtime  # pylint: disable=g-import-not-at-top,wrong-import-position
from tff_programs.algorithms import base  # pylint: disable=g-import-not-at-top,wrong-import-position
from tff_programs.algorithms import fedavg  # pylint: disable=g-import-not-at-top,wrong-import-position
from tff_programs import sections  # pylint: disable=g-import-not-at-top,wrong-import-position

LR = 0.1
PARTS = ('plain', 'tff', 'concurrency', 'cli', 'e5', 'eval', 'scaling', 'memory', 'cifar')


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
    start = time.perf_counter()
    self._train(self._dataset).numpy()
    return time.perf_counter() - start


def plain_seconds(datasets: list[tf.data.Dataset], builder: Callable[[], tf.keras.Model],
                  lr: float, repeats: int) -> list[float]:
  """Median-able times of one `tf.function` SGD pass over `datasets`, one model."""
  loop = PlainLoop(datasets, builder, lr)
  return [loop() for _ in range(repeats)]


def paired_cli(data: federated.FederatedData, plain: PlainLoop, **cli_args) -> dict[str, Any]:
  """CLI rounds, each followed by a plain pass: times and paired ratios."""
  after: dict[int, float] = {}
  times = cli_rounds(data, on_round=lambda r: after.__setitem__(r, plain()), **cli_args)
  # cli_rounds returns rounds 2..N-1 (round 1 traces, round N evaluates).
  plain_times = [after[r] for r in range(2, 2 + len(times))]
  ratios = [c / p for c, p in zip(times, plain_times)]
  return {'cli': times, 'plain': plain_times, 'ratios': ratios}


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
               extra: dict | None = None, eval_every: int = 10**6) -> list[float]:
  """`run_experiment` on `data`; the seconds of rounds 2.. from metrics.csv."""
  original_load = experiment.load_federated_data
  original_release = run_outputs.RunOutputs.release_metrics
  experiment.load_federated_data = lambda cfg: data
  if on_round is not None:
    def release(self, round_num, row):
      original_release(self, round_num, row)
      on_round(round_num)
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
  # The last round also evaluates (eval at the last round): leave it out.
  return [float(r['seconds']) for r in rows[1:-1]] or [float(rows[-1]['train_seconds'])]


def rss_mb(worker_tag_prefix: str) -> float:
  """RSS of this process plus the TFF workers it started, in MiB."""
  total = psutil.Process().memory_info().rss
  for pid in runtime.tagged_worker_pids():
    try:
      if psutil.Process(pid).environ().get(runtime.WORKER_TAG_ENV, '').startswith(worker_tag_prefix):
        total += psutil.Process(pid).memory_info().rss
    except psutil.Error:
      pass
  return total / 2**20


# ---- report --------------------------------------------------------------------


def med(times: list[float]) -> float:
  return statistics.median(times)


def table(result: dict[str, Any]) -> str:
  lines = ['| measurement | seconds | vs plain loop |', '|---|---:|---:|']
  plain = result.get('plain_seconds')
  for key, value in result.items():
    if key.endswith('_seconds') and isinstance(value, (int, float)):
      ratio = ''
      ref = result.get(result.get(f'{key[:-8]}_reference', ''), plain)
      if ref and key != 'plain_seconds':
        ratio = f'{value / ref:.2f}x'
      lines.append(f'| {key[:-8]} | {value:.3f} | {ratio} |')
  return '\n'.join(lines)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--data_dir', default=None, help='MNIST folder (default: random uint8 images).')
  parser.add_argument('--cifar_dir', default=None, help='CIFAR-10 folder (the cifar part needs it).')
  parser.add_argument('--parts', default=','.join(p for p in PARTS if p != 'cifar'))
  parser.add_argument('--repeats', type=int, default=3)
  parser.add_argument('--quick', action='store_true', help='Tiny workloads: a smoke run.')
  parser.add_argument('--out', default=os.path.join(os.path.dirname(__file__), 'results', 'round_speed.json'))
  args = parser.parse_args()
  parts = [p.strip() for p in args.parts.split(',') if p.strip()]
  unknown = sorted(set(parts) - set(PARTS))
  if unknown:
    parser.error(f'--parts: unknown {unknown}; allowed: {", ".join(PARTS)}')
  quick = args.quick
  per_client = 60 if quick else 600
  x, y, x_test, y_test = mnist_arrays(args.data_dir)
  if quick:
    x_test, y_test = x_test[:500], y_test[:500]
  prep = preprocessing.preprocessing_for('mnist')
  result: dict[str, Any] = collections.OrderedDict(
      workload=f'10 clients x {per_client} MNIST images, E=1, B=10, mnist_cnn',
      data='real MNIST' if args.data_dir else 'random uint8 MNIST-shaped images',
      machine=f'{platform.machine()} {os.cpu_count()} cores, {platform.python_version()}',
      load_average_at_start=os.getloadavg(), tensorflow=tf.__version__, tff=tff.__version__,
      repeats=args.repeats, quick=quick)
  data = federated_views(x, y, x_test, y_test, num_clients=100, per_client=per_client)
  ids = list(data.client_ids[:10])
  plain_runs: list[float] = []
  with tempfile.TemporaryDirectory() as tmp, client_files.ClientArrayFiles(
      os.path.join(tmp, 'cd'), data.train_arrays) as files:
    datasets_e1 = lambda r=1: client_datasets(data, files, ids, epochs=1, batch=10, prep=prep, round_num=r)
    if 'plain' in parts or 'tff' in parts or 'cli' in parts:
      plain_runs += plain_seconds(datasets_e1(), mnist_cnn, LR, args.repeats)
      print(f'plain (before): {plain_runs}', flush=True)
    if 'tff' in parts:
      spec = collections.OrderedDict(x=tf.TensorSpec([None, 28, 28, 1], tf.float32),
                                     y=tf.TensorSpec([None], tf.int64))
      stock = lambda: tff.learning.algorithms.build_weighted_fed_avg(
          model_adapter.tff_model_fn(mnist_cnn, spec),
          client_optimizer_fn=tff.learning.optimizers.build_sgdm(LR))
      times = next_seconds(stock, datasets_e1, args.repeats)
      result['tff_stock_seconds'] = med(times)
      print(f'tff_stock: {times}', flush=True)
      ours = lambda: fedavg.build_fedavg(base.Task(mnist_cnn, spec, 10),
                                         sections.ClientTrainingOptions(client_learning_rate=LR), fedavg.FedAvgOptions())
      times = next_seconds(ours, datasets_e1, args.repeats)
      result['fedsuite_next_seconds'] = med(times)
      print(f'fedsuite_next: {times}', flush=True)
    if 'concurrency' in parts:
      spec = collections.OrderedDict(x=tf.TensorSpec([None, 28, 28, 1], tf.float32),
                                     y=tf.TensorSpec([None], tf.int64))
      ours = lambda: fedavg.build_fedavg(base.Task(mnist_cnn, spec, 10),
                                         sections.ClientTrainingOptions(client_learning_rate=LR))
      result['worker_concurrency_seconds'] = {}
      for calls in (-1, 1, 2, 4):
        times = next_seconds(ours, datasets_e1, args.repeats, max_concurrent=calls)
        result['worker_concurrency_seconds'][calls] = med(times)
        print(f'max_concurrent_computation_calls={calls}: {times}', flush=True)
    if 'cli' in parts:
      paired = paired_cli(data, PlainLoop(datasets_e1(), mnist_cnn, LR), rounds=2 + 2 * args.repeats + 1,
                          clients_per_round=10, epochs=1, batch=10)
      result['cli_seconds'] = med(paired['cli'])
      result['cli_rounds'] = paired['cli']
      result['cli_paired_plain'] = paired['plain']
      result['cli_paired_ratio_median'] = med(paired['ratios'])
      result['cli_paired_ratios'] = paired['ratios']
      print(f'cli: {paired}', flush=True)
    if plain_runs:
      plain_runs += plain_seconds(datasets_e1(), mnist_cnn, LR, args.repeats)
      print(f'plain (before + after): {plain_runs}', flush=True)
      result['plain_seconds'] = med(plain_runs)
      result['plain_spread'] = [min(plain_runs), max(plain_runs)]
    if 'e5' in parts:
      plain_e5 = PlainLoop(client_datasets(data, files, ids, epochs=5, batch=10, prep=prep), mnist_cnn, LR)
      paired = paired_cli(data, plain_e5, rounds=2 + 2 * args.repeats + 1, clients_per_round=10,
                          epochs=5, batch=10)
      result['plain_e5_seconds'] = med(paired['plain'])
      result['cli_e5_seconds'] = med(paired['cli'])
      result['cli_e5_reference'] = 'plain_e5_seconds'
      result['cli_e5_paired_ratio_median'] = med(paired['ratios'])
      result['cli_e5_paired_ratios'] = paired['ratios']
      print(f'e5: {paired}', flush=True)
  if 'eval' in parts:
    evaluator = evaluation.KerasEvaluator(mnist_cnn, preprocess=prep.eval_map)
    weights = mnist_cnn().get_weights()
    splits = {f'c{i}': np.arange(i, len(y_test), 100) for i in range(100)}
    keras, ours = [], []
    for _ in range(args.repeats + 1):
      start = time.perf_counter()
      evaluator.evaluate(weights, x_test, y_test)
      keras.append(time.perf_counter() - start)
      start = time.perf_counter()
      evaluator.central_and_clients(weights, x_test, y_test, splits)
      ours.append(time.perf_counter() - start)
    result['keras_evaluate_seconds'] = med(keras[1:])
    result['fedsuite_eval_seconds'] = med(ours[1:])
    result['fedsuite_eval_reference'] = 'keras_evaluate_seconds'
    print(f'eval: keras {keras}, fedsuite {ours}', flush=True)
  if 'scaling' in parts:
    series = collections.OrderedDict()
    for m in ((2, 4) if quick else (10, 20, 50, 100)):
      series[m] = med(cli_rounds(data, rounds=4, clients_per_round=m, epochs=1, batch=10))
      print(f'scaling: {m} clients: {series[m]:.3f} s', flush=True)
    first = min(series)
    result['clients_per_round_seconds'] = dict(series)
    result['clients_per_round_vs_linear'] = {
        m: s / (series[first] * m / first) for m, s in series.items()}
    big = federated_views(x, y, x_test, y_test, num_clients=3400, per_client=per_client)
    result['k100_seconds'] = series[first] if first == 10 else med(
        cli_rounds(data, rounds=4, clients_per_round=10, epochs=1, batch=10))
    result['k3400_seconds'] = med(cli_rounds(big, rounds=4, clients_per_round=10, epochs=1, batch=10))
    result['k3400_reference'] = 'k100_seconds'
    print(f'K=3400: {result["k3400_seconds"]:.3f} s', flush=True)
  if 'memory' in parts:
    small = federated_views(x, y, x_test, y_test, num_clients=10, per_client=60)
    samples = {}
    prefix = f'{os.getpid()}-'
    rounds = 40 if quick else 300

    def record(round_num):
      if round_num in (20, rounds) or round_num % 50 == 0:
        samples[round_num] = rss_mb(prefix)

    # Evaluating every 10 rounds: both ends include the evaluation's memory.
    cli_rounds(small, rounds=rounds, clients_per_round=2, epochs=1, batch=10, on_round=record,
               eval_every=10)
    result['rss_mb_by_round'] = samples
    result['rss_growth_20_to_last'] = samples[rounds] / samples[20] - 1
    print(f'memory: {samples}', flush=True)
  if 'cifar' in parts:
    if not args.cifar_dir:
      parser.error('--parts=cifar needs --cifar_dir')
    cifar = dataset_registry.load_dataset('cifar10', args.cifar_dir)
    n = 500 if quick else 5000
    cdata = federated_views(cifar.x_train, cifar.y_train, cifar.x_test[:1000], cifar.y_test[:1000],
                            num_clients=10, per_client=n, name='cifar10')
    cprep = preprocessing.preprocessing_for('cifar10')
    builder = lambda: model_registry.build_model('cifar_cnn', (24, 24, 3), 10)
    with tempfile.TemporaryDirectory() as tmp, client_files.ClientArrayFiles(
        os.path.join(tmp, 'cd'), cdata.train_arrays) as files:
      cds = client_datasets(cdata, files, list(cdata.client_ids), epochs=1, batch=50, prep=cprep)
      plain = plain_seconds(cds, builder, LR, 1)
      times = cli_rounds(cdata, rounds=3, clients_per_round=10, epochs=1, batch=50,
                         model='cifar_cnn', dataset='cifar10')
      plain += plain_seconds(cds, builder, LR, 1)
    result['plain_cifar_seconds'] = med(plain)
    result['cli_cifar_seconds'] = med(times)
    result['cli_cifar_reference'] = 'plain_cifar_seconds'
    print(f'cifar: plain {plain}, cli {times}', flush=True)
  result['load_average_at_end'] = os.getloadavg()
  os.makedirs(os.path.dirname(args.out), exist_ok=True)
  with open(args.out, 'w') as f:
    json.dump(result, f, indent=2, default=str)
  print(table(result))
  print(f'written: {args.out}')


if __name__ == '__main__':
  main()
