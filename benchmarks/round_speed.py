r"""Round speed: FedSuite's FedAvg round against the same SGD steps in plain TF.

    python benchmarks/round_speed.py [--data_dir=/path/to/mnist] [--quick]
        [--parts=plain,tff,cli,e5,eval,scaling,memory,cifar,profile] [--cifar_dir=...]

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
  concurrency  cli rounds (paired with plain passes) at --worker_concurrency=1
              (one client at a time) and 0 (one per core, the default), A-B-B-A,
              for E=1 and E=5;
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
              10 sampled of K=100 vs K=3,400 (per-client size fixed at 600),
              in wall and in CPU seconds (driver + worker);
  memory      driver + worker RSS over 300 short rounds (2 clients x 60 images),
              in a fresh child process when other parts run too (a run starts
              in a fresh process; this one's heap is shaped by the other parts);
  cifar       `cifar_cnn`, 10 clients x 5,000 CIFAR images, E=1, B=50: a cli
              round vs a plain loop over the same augmentation pipeline;
  profile     a cli round split into its phases: taking the prefetched inputs,
              `algorithm.next` (with the driver's and the worker's CPU seconds
              in it), the divergence check, the metrics row, the rest, and a
              checkpoint save;
  profile_clients  the profile at 10 and 100 sampled clients (A-B-B-A order),
              per client: where a 100-client round's cost beyond linear goes
              (driver or worker CPU);
  per_client_cost  the same 6,000 images and 600 steps a round as 10 clients x 600
              and as 100 clients x 60 (A-B-B-A), each round paired with a plain
              pass over the same layout's datasets: the extra cost of a client
              (its set-up: dataset, weights in and out, its share of the
              aggregation), in the CLI and in the plain loop, per client.

Speed modes. This VM (Firecracker, `sched_vcpu_pack=15` on its kernel command
line) at times runs a process's threads on one vCPU while the other idles: the
same plain pass then takes 2x (5.15 s instead of 2.4-3.3 s) with the same CPU
seconds. Every cli round and plain pass therefore also records the cores the
machine kept busy (`*_busy_cores`, from /proc/stat) and its CPU seconds; the
paired series report three ratios: all pairs (`*_paired_ratio_median`), pairs
where both sides had two cores (`*_two_core_ratio_median`, like for like), and
CPU seconds (`*_cpu_ratio_median`, independent of the mode).

Writes benchmarks/results/round_speed.json and prints a table. With --quick every
workload is cut down (a smoke run of the script, not a measurement).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tff_programs import quiet_tf  # pylint: disable=g-import-not-at-top,wrong-import-position

quiet_tf.silence_cpp_logs(sys.argv)

import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position
import tensorflow as tf  # pylint: disable=g-import-not-at-top,wrong-import-position
import tensorflow_federated as tff  # pylint: disable=g-import-not-at-top,wrong-import-position

from datasets import client_files  # pylint: disable=g-import-not-at-top,wrong-import-position
from datasets import preprocessing  # pylint: disable=g-import-not-at-top,wrong-import-position
from datasets import registry as dataset_registry  # pylint: disable=g-import-not-at-top,wrong-import-position
from models import registry as model_registry  # pylint: disable=g-import-not-at-top,wrong-import-position
from tff_programs import evaluation  # pylint: disable=g-import-not-at-top,wrong-import-position
from tff_programs import model_adapter  # pylint: disable=g-import-not-at-top,wrong-import-position
from tff_programs.algorithms import base  # pylint: disable=g-import-not-at-top,wrong-import-position
from tff_programs.algorithms import fedavg  # pylint: disable=g-import-not-at-top,wrong-import-position
from tff_programs import sections  # pylint: disable=g-import-not-at-top,wrong-import-position
from benchmarks import round_timing as timing  # pylint: disable=g-import-not-at-top,wrong-import-position

PARTS = ('plain', 'tff', 'concurrency', 'cli', 'e5', 'eval', 'scaling', 'memory', 'cifar', 'profile',
         'profile_clients', 'per_client_cost')


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


_MEMORY_KEYS = ('rss_mb_by_round', 'rss_driver_mb_by_round', 'rss_worker_mb_by_round',
                'rss_growth_20_to_last')


def memory_series(x, y, x_test, y_test, quick: bool) -> dict[str, Any]:
  """Driver and worker RSS (MiB) over 300 CLI rounds of 2 clients x 60 images,
  evaluated and checkpointed every 10 rounds, at rounds 20, 50, 100, ... 300."""
  small = timing.federated_views(x, y, x_test, y_test, num_clients=10, per_client=60)
  samples, driver, worker = {}, {}, {}
  rounds = 40 if quick else 300

  def record(round_num):
    if round_num in (20, rounds) or round_num % 50 == 0:
      driver[round_num], worker[round_num] = timing.rss_parts_mb()
      samples[round_num] = driver[round_num] + worker[round_num]

  # Evaluating every 10 rounds: both ends include the evaluation's memory.
  timing.cli_rounds(small, rounds=rounds, clients_per_round=2, epochs=1, batch=10, on_round=record,
                    eval_every=10)
  print(f'memory: {samples} (driver {driver}, worker {worker})', flush=True)
  return dict(zip(_MEMORY_KEYS, (samples, driver, worker, samples[rounds] / samples[20] - 1)))


def memory_in_fresh_process(args: argparse.Namespace) -> dict[str, Any]:
  """`memory_series` run by this script in a child process (`--parts=memory`)."""
  with tempfile.TemporaryDirectory() as tmp:
    out = os.path.join(tmp, 'memory.json')
    command = [sys.executable, os.path.abspath(__file__), '--parts=memory', f'--out={out}']
    command += [f'--data_dir={args.data_dir}'] if args.data_dir else []
    command += ['--quick'] if args.quick else []
    subprocess.run(command, check=True)
    with open(out) as f:
      child = json.load(f)
  return {key: child[key] for key in _MEMORY_KEYS}


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
  x, y, x_test, y_test = timing.mnist_arrays(args.data_dir)
  if quick:
    x_test, y_test = x_test[:500], y_test[:500]
  prep = preprocessing.preprocessing_for('mnist')
  result: dict[str, Any] = collections.OrderedDict(
      workload=f'10 clients x {per_client} MNIST images, E=1, B=10, mnist_cnn',
      data='real MNIST' if args.data_dir else 'random uint8 MNIST-shaped images',
      machine=f'{platform.machine()} {os.cpu_count()} cores, {platform.python_version()}',
      load_average_at_start=os.getloadavg(), tensorflow=tf.__version__, tff=tff.__version__,
      repeats=args.repeats, quick=quick)
  data = timing.federated_views(x, y, x_test, y_test, num_clients=100, per_client=per_client)
  ids = list(data.client_ids[:10])
  plain_runs: list[float] = []
  with tempfile.TemporaryDirectory() as tmp, client_files.ClientArrayFiles(
      os.path.join(tmp, 'cd'), data.train_arrays) as files:
    datasets_e1 = lambda r=1: timing.client_datasets(data, files, ids, epochs=1, batch=10, prep=prep, round_num=r)
    if 'plain' in parts or 'tff' in parts or 'cli' in parts:
      plain_runs += timing.plain_seconds(datasets_e1(), timing.mnist_cnn, timing.LR, args.repeats)
      print(f'plain (before): {plain_runs}', flush=True)
    if 'tff' in parts:
      spec = collections.OrderedDict(x=tf.TensorSpec([None, 28, 28, 1], tf.float32),
                                     y=tf.TensorSpec([None], tf.int64))
      stock = lambda: tff.learning.algorithms.build_weighted_fed_avg(
          model_adapter.tff_model_fn(timing.mnist_cnn, spec),
          client_optimizer_fn=tff.learning.optimizers.build_sgdm(timing.LR))
      times = timing.next_seconds(stock, datasets_e1, args.repeats)
      result['tff_stock_seconds'] = timing.med(times)
      print(f'tff_stock: {times}', flush=True)
      ours = lambda: fedavg.build_fedavg(base.Task(timing.mnist_cnn, spec, 10),
                                         sections.ClientTrainingOptions(client_learning_rate=timing.LR), fedavg.FedAvgOptions())
      times = timing.next_seconds(ours, datasets_e1, args.repeats)
      result['fedsuite_next_seconds'] = timing.med(times)
      print(f'fedsuite_next: {times}', flush=True)
    if 'concurrency' in parts:
      # The CLI round at --worker_concurrency=1 (one client at a time) and 0
      # (one per core, the default), in A-B-B-A order per E, each round
      # paired with a plain pass as in `cli`: same VM, same minutes.
      result['worker_concurrency_ab'] = {}
      for epochs in (1, 5):
        plain_loop = timing.PlainLoop(
            timing.client_datasets(data, files, ids, epochs=epochs, batch=10, prep=prep),
            timing.mnist_cnn, timing.LR)
        series = collections.defaultdict(list)
        for calls in (1, 0, 0, 1):
          series[calls].append(timing.paired_cli(
              data, plain_loop, rounds=2 + args.repeats + 1, clients_per_round=10, epochs=epochs,
              batch=10, extra={'worker_concurrency': calls}))
          print(f'E={epochs} worker_concurrency={calls}: {series[calls][-1]}', flush=True)
        result['worker_concurrency_ab'][f'E{epochs}'] = {
            calls: timing.pooled_pairs(halves) for calls, halves in series.items()}
    if 'cli' in parts:
      paired = timing.paired_cli(data, timing.PlainLoop(datasets_e1(), timing.mnist_cnn, timing.LR), rounds=2 + 2 * args.repeats + 1,
                          clients_per_round=10, epochs=1, batch=10)
      result['cli_seconds'] = timing.med(paired['cli'])
      result['cli_rounds'] = paired['cli']
      result['cli_paired_plain'] = paired['plain']
      result['cli_paired_ratio_median'] = timing.med(paired['ratios'])
      result['cli_paired_ratios'] = paired['ratios']
      result.update(timing.mode_summary('cli', paired))
      print(f'cli: {paired}', flush=True)
    if plain_runs:
      plain_runs += timing.plain_seconds(datasets_e1(), timing.mnist_cnn, timing.LR, args.repeats)
      print(f'plain (before + after): {plain_runs}', flush=True)
      result['plain_seconds'] = timing.med(plain_runs)
      result['plain_spread'] = [min(plain_runs), max(plain_runs)]
    if 'e5' in parts:
      plain_e5 = timing.PlainLoop(timing.client_datasets(data, files, ids, epochs=5, batch=10, prep=prep), timing.mnist_cnn, timing.LR)
      paired = timing.paired_cli(data, plain_e5, rounds=2 + 2 * args.repeats + 1, clients_per_round=10,
                          epochs=5, batch=10)
      result['plain_e5_seconds'] = timing.med(paired['plain'])
      result['cli_e5_seconds'] = timing.med(paired['cli'])
      result['cli_e5_rounds'] = paired['cli']
      result['cli_e5_paired_plain'] = paired['plain']
      result['cli_e5_reference'] = 'plain_e5_seconds'
      result['cli_e5_paired_ratio_median'] = timing.med(paired['ratios'])
      result['cli_e5_paired_ratios'] = paired['ratios']
      result.update(timing.mode_summary('cli_e5', paired))
      print(f'e5: {paired}', flush=True)
  if 'eval' in parts:
    evaluator = evaluation.KerasEvaluator(timing.mnist_cnn, preprocess=prep.eval_map)
    weights = timing.mnist_cnn().get_weights()
    splits = {f'c{i}': np.arange(i, len(y_test), 100) for i in range(100)}
    keras, ours = [], []
    for _ in range(args.repeats + 1):
      start = time.perf_counter()
      evaluator.evaluate(weights, x_test, y_test)
      keras.append(time.perf_counter() - start)
      start = time.perf_counter()
      evaluator.central_and_clients(weights, x_test, y_test, splits)
      ours.append(time.perf_counter() - start)
    result['keras_evaluate_seconds'] = timing.med(keras[1:])
    result['fedsuite_eval_seconds'] = timing.med(ours[1:])
    result['fedsuite_eval_reference'] = 'keras_evaluate_seconds'
    print(f'eval: keras {keras}, fedsuite {ours}', flush=True)
  if 'profile' in parts:
    profile = timing.profile_rounds(data, rounds=2 + 2 * args.repeats + 1, clients_per_round=10,
                             epochs=1, batch=10)
    result['cli_round_profile'] = profile
    print(f'profile: {profile}', flush=True)
  if 'profile_clients' in parts:
    result['profile_clients'] = timing.profile_clients(data, (2, 4) if quick else (10, 100))
  if 'per_client_cost' in parts:
    result['per_client_cost'] = timing.per_client_cost(
        x, y, x_test, y_test, per_client=per_client, prep=prep, rounds=2 + 2 * args.repeats + 1)
    print(f"per_client_cost: {result['per_client_cost']['summary']}", flush=True)
  if 'scaling' in parts:
    # Wall seconds carry the VM's speed mode; CPU seconds (driver + worker) are
    # the cost of the work itself, so linearity is judged on both.
    # The sizes run in A-B-B-A order (10, 20, 50, 100, 100, 50, 20, 10), each
    # pooling its two series: a drift of the VM's speed over the minutes of
    # the series weighs on every size alike instead of on the last ones.
    rounds = 2 + max(args.repeats, 2) + 1
    sizes = (2, 4) if quick else (10, 20, 50, 100)
    series = collections.defaultdict(list)
    for m in (*sizes, *reversed(sizes)):
      series[m].append(timing.cost_of_rounds(data, rounds=rounds, clients_per_round=m))
      print(f'scaling: {m} clients: {series[m][-1]}', flush=True)
    points = collections.OrderedDict((m, timing.pooled_costs(series[m])) for m in sizes)
    first = min(points)
    for kind in ('seconds', 'cpu_seconds'):
      base_per_client = points[first][kind] / first
      result[f'clients_per_round_{kind}'] = {m: p[kind] for m, p in points.items()}
      result[f'clients_per_round_{kind}_vs_linear'] = {
          m: p[kind] / (base_per_client * m) for m, p in points.items()}
    result['clients_per_round_rounds'] = dict(points)
    # K=100 is measured again right after K=3,400: the machine drifts over the
    # minutes of this series, so K=3,400 is compared with its neighbour.
    big = timing.federated_views(x, y, x_test, y_test, num_clients=3400, per_client=per_client)
    k3400 = timing.cost_of_rounds(big, rounds=rounds, clients_per_round=10)
    k100 = timing.cost_of_rounds(data, rounds=rounds, clients_per_round=10)
    result['k100_seconds'], result['k3400_seconds'] = k100['seconds'], k3400['seconds']
    result['k3400_reference'] = 'k100_seconds'
    result['k100_cpu'], result['k3400_cpu'] = k100['cpu_seconds'], k3400['cpu_seconds']
    result['k3400_rounds'], result['k100_rounds'] = k3400, k100
    print(f'K=3400: {k3400}', flush=True)
  if 'memory' in parts:
    if parts == ['memory']:
      result.update(memory_series(x, y, x_test, y_test, quick), memory_process='this process (the only part)')
    else:
      # A run starts in a fresh process: measure its growth in one, not in a
      # process whose heap the other parts have shaped.
      result.update(memory_in_fresh_process(args), memory_process='a fresh child process')
  if 'cifar' in parts:
    if not args.cifar_dir:
      parser.error('--parts=cifar needs --cifar_dir')
    cifar = dataset_registry.load_dataset('cifar10', args.cifar_dir)
    n = 500 if quick else 5000
    cdata = timing.federated_views(cifar.x_train, cifar.y_train, cifar.x_test[:1000], cifar.y_test[:1000],
                            num_clients=10, per_client=n, name='cifar10')
    cprep = preprocessing.preprocessing_for('cifar10')
    builder = lambda: model_registry.build_model('cifar_cnn', (24, 24, 3), 10)
    with tempfile.TemporaryDirectory() as tmp, client_files.ClientArrayFiles(
        os.path.join(tmp, 'cd'), cdata.train_arrays) as files:
      cds = timing.client_datasets(cdata, files, list(cdata.client_ids), epochs=1, batch=50, prep=cprep)
      plain = timing.plain_seconds(cds, builder, timing.LR, 1)
      times = timing.cli_rounds(cdata, rounds=3, clients_per_round=10, epochs=1, batch=50,
                         model='cifar_cnn', dataset='cifar10')
      plain += timing.plain_seconds(cds, builder, timing.LR, 1)
    result['plain_cifar_seconds'] = timing.med(plain)
    result['cli_cifar_seconds'] = timing.med(times)
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
