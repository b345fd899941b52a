r"""How much slower is a TFF FedAvg round than the same SGD steps in plain TF?

    python benchmarks/round_speed.py [--repeats=3] [--out=benchmarks/results/round_speed.json]

Workload (the FedAvg paper's MNIST CNN, 1,663,370 params): one round = 10 clients
x 600 MNIST-shaped examples, E=1, B=10, i.e. 600 SGD steps in all. Measured in ONE
process on the same machine, so the ratio is meaningful on a noisy shared box:

  plain_loop      a `tf.function` SGD step over the same 600 batches, one model
                  (the reference: the cheapest way to do that work in TF);
  tff_<variant>   one `process.next` of FedAvg on the same data, per variant:
                  stock    tff.learning defaults (VariableModel, DATASET_REDUCE)
                  iterator LoopImplementation.DATASET_ITERATOR
                  fedsuite what FedSuite uses (see FedAvgConfig defaults).
Each timing is the median of `--repeats` runs after one warm-up (tracing).
Writes the medians and the ratios tff/plain to a JSON file.
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

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # pylint: disable=g-import-not-at-top
import tensorflow as tf
import tensorflow_federated as tff

from models import registry as model_registry
from tff_programs import model_adapter
from tff_programs import runtime
from tff_programs.algorithms import base
from tff_programs.algorithms import fedavg

CLIENTS, PER_CLIENT, BATCH, LR = 10, 600, 10, 0.1


def make_data(seed=0):
  rng = np.random.default_rng(seed)
  x = rng.random((CLIENTS * PER_CLIENT, 28, 28, 1), dtype=np.float32)
  y = rng.integers(0, 10, CLIENTS * PER_CLIENT).astype(np.int64)
  return x, y


def client_datasets(x, y):
  return [
      tf.data.Dataset.from_tensor_slices(collections.OrderedDict(
          x=x[i * PER_CLIENT:(i + 1) * PER_CLIENT], y=y[i * PER_CLIENT:(i + 1) * PER_CLIENT]
      )).batch(BATCH)
      for i in range(CLIENTS)
  ]


def builder():
  return model_registry.build_model('mnist_cnn', (28, 28, 1), 10)


def time_plain_loop(x, y, repeats):
  model = builder()
  loss_fn = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
  dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(BATCH)

  @tf.function
  def train_epoch(ds):
    loss = tf.constant(0.0)
    for xb, yb in ds:
      with tf.GradientTape() as tape:
        loss = loss_fn(yb, model(xb, training=True))
      grads = tape.gradient(loss, model.trainable_variables)
      for v, g in zip(model.trainable_variables, grads):
        v.assign_sub(LR * g)
    return loss

  train_epoch(dataset)  # warm-up / tracing
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    train_epoch(dataset).numpy()
    times.append(time.perf_counter() - start)
  return times


def time_tff(process, datasets, repeats):
  state = process.initialize()
  state = process.next(state, datasets).state  # warm-up / tracing
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    state = process.next(state, datasets).state
    times.append(time.perf_counter() - start)
  return times


def variants():
  spec = collections.OrderedDict(
      x=tf.TensorSpec([None, 28, 28, 1], tf.float32), y=tf.TensorSpec([None], tf.int64))
  model_fn = model_adapter.tff_model_fn(builder, spec)
  sgd = tff.learning.optimizers.build_sgdm(LR)
  yield 'stock', tff.learning.algorithms.build_weighted_fed_avg(
      model_fn, client_optimizer_fn=sgd)
  yield 'iterator', tff.learning.algorithms.build_weighted_fed_avg(
      model_fn, client_optimizer_fn=sgd,
      loop_implementation=tff.learning.LoopImplementation.DATASET_ITERATOR)
  task = base.Task(builder, spec, 10)
  yield 'fedsuite', fedavg.build_fedavg(task, fedavg.FedAvgConfig(client_learning_rate=LR)).process


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--repeats', type=int, default=3)
  parser.add_argument('--out', default=os.path.join(os.path.dirname(__file__), 'results', 'round_speed.json'))
  args = parser.parse_args()
  x, y = make_data()
  datasets = client_datasets(x, y)
  result = collections.OrderedDict(
      workload=f'{CLIENTS} clients x {PER_CLIENT} examples, E=1, B={BATCH}, mnist_cnn',
      machine=f'{platform.machine()} {os.cpu_count()} cores',
      tensorflow=tf.__version__, tff=tff.__version__, repeats=args.repeats)
  # Interleave: plain loop before and after the TFF variants, to catch drift.
  plain = time_plain_loop(x, y, args.repeats)
  with runtime.tff_runtime():
    for name, process in variants():
      times = time_tff(process, datasets, args.repeats)
      result[f'tff_{name}_seconds'] = statistics.median(times)
      print(f'tff_{name}: {times}', flush=True)
  plain += time_plain_loop(x, y, args.repeats)
  result['plain_loop_seconds'] = statistics.median(plain)
  print(f'plain_loop: {plain}', flush=True)
  for key in [k for k in result if k.startswith('tff_') and k.endswith('_seconds')]:
    result[key.replace('_seconds', '_ratio')] = result[key] / result['plain_loop_seconds']
  os.makedirs(os.path.dirname(args.out), exist_ok=True)
  with open(args.out, 'w') as f:
    json.dump(result, f, indent=2)
  print(json.dumps(result, indent=2))


if __name__ == '__main__':
  main()
