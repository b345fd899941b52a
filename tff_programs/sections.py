"""The option sections every run has: data, model, client training, the run, the executor.

Algorithms and aggregators declare their own options next to their code
(`FedAvgOptions` in `algorithms/fedavg.py`, ...); `tff_programs.config` puts
everything together. Each field is one `--flag` (see `tff_programs.options`).
"""

from __future__ import annotations

import math
from typing import Optional, Union

from datasets import partition as partition_lib
from datasets import preprocessing as preprocessing_lib
from datasets import registry as dataset_registry
from models import registry as model_registry
from tff_programs import options
from tff_programs.options import ConfigError, option
from tff_programs.remote import addresses

_DATASET_OPTION = dataset_registry.DatasetOptions.__dataclass_fields__['min_role_lines']


def parse_batch_size(value: Union[int, str, None]) -> Optional[int]:
  """'inf'/None -> None (B = the whole client set); positive ints -> int."""
  if value is None or (isinstance(value, str) and value.strip().lower() in ('inf', 'infinity')):
    return None
  try:
    b = int(value)
    if b != float(value):
      raise ValueError
  except (TypeError, ValueError):
    raise ConfigError(f"--batch_size={value!r}: must be a positive integer or 'inf'") from None
  if b < 1:
    raise ConfigError(f"--batch_size={value!r}: must be a positive integer or 'inf'")
  return b


class DataOptions(options.Options):
  """What data, and how it is split into clients."""

  SECTION = 'Data'

  dataset: str = option('digits', 'digits (scikit-learn, embedded) | mnist | cifar10 | cifar100 | emnist | shakespeare | shakespeare_iid | synthetic.',
                        names=dataset_registry.DATASETS)
  data_dir: Optional[str] = option(None, 'Folder with the dataset files (mnist: the 4 IDX .gz files or mnist.npz; cifar: the python batches or tarball; emnist: TFF cache; shakespeare: 100.txt).')
  min_role_lines: int = option(_DATASET_OPTION.default, _DATASET_OPTION.metadata['help'])
  max_train_examples: int = option(0, 'Use a seeded random subset of at most this many training examples, before partitioning (0 = all); for quick runs of large models on a small machine.',
                                   check=options.int_at_least(0, ' (0 = all examples)'))
  max_test_examples: int = option(0, 'Evaluate on a seeded random subset of at most this many test examples (0 = all).',
                                  check=options.int_at_least(0, ' (0 = all examples)'))
  partition: str = option('shards', 'iid | shards (pathological non-IID) | k_class | dirichlet | natural.',
                          names=(*partition_lib.PARTITIONERS, 'natural'))
  num_clients: int = option(20, 'K, the number of clients.', check=options.int_at_least(1))
  shards_per_client: int = option(2, 'shards partition: shards per client (the paper: 2).')
  classes_per_client: int = option(2, 'k_class partition: at most this many classes per client.')
  dirichlet_alpha: float = option(0.5, 'dirichlet partition: concentration alpha (smaller = more skewed).',
                                  check=options.number_in(0, math.inf, low_open=True, high_open=True))
  cifar_input: str = option('crop24', "cifar10/cifar100 input pipeline: crop24 (the FedAvg paper's: random 24x24 crops, flips, brightness/contrast jitter, per-image whitening; test: the central 24x24 crop; models see 24x24x3) | pad32 (the standard 32x32 one of FedPer's MobileNet and FedGKT's ResNets: pad 4 + random 32x32 crop + flip, per-channel mean/std normalization; test: the whole image; models see 32x32x3).",
                            allowed=preprocessing_lib.CIFAR_INPUTS)

  def check(self) -> None:
    try:
      dataset_registry.check_dataset(
          self.dataset, dataset_registry.DatasetOptions(min_role_lines=self.min_role_lines))
    except ValueError as e:
      raise ConfigError(str(e)) from None
    if self.cifar_input != 'crop24' and self.dataset not in preprocessing_lib.CIFAR_DATASETS:
      raise ConfigError(f'--cifar_input={self.cifar_input}: only for --dataset=cifar10 or cifar100 '
                        f'(not {self.dataset}); leave it at crop24')

  @property
  def partition_options(self) -> dict:
    """The partitioner's own options (the other partitioners' are not passed)."""
    return {
        'shards': {'shards_per_client': self.shards_per_client},
        'k_class': {'classes_per_client': self.classes_per_client},
        'dirichlet': {'alpha': self.dirichlet_alpha},
    }.get(self.partition, {})


class ModelOptions(options.Options):
  """The model clients train (algorithms with fixed models, FedGKT, do not use it)."""

  SECTION = 'Model'

  model: str = option('mnist_cnn', 'Model name from models/registry.py (mnist_2nn, mnist_cnn, keras_mnist_cnn, cifar_cnn, ...).',
                      names=model_registry.MODELS)


class ClientTrainingOptions(options.Options):
  """How sampled clients train each round (C, E, B, eta and its schedule)."""

  SECTION = 'Client training'

  client_fraction: float = option(0.25, 'C in (0, 1]: m = max(round(C*K), 1) clients per round.',
                                  check=options.number_in(0, 1, low_open=True))
  local_epochs: int = option(5, 'E >= 1, local epochs per round.', check=options.int_at_least(1))
  batch_size: Union[int, str, None] = option(10, "B: local minibatch size, or 'inf' for the whole client dataset as one batch.",
                                             check=lambda v: parse_batch_size(v) and None)
  client_learning_rate: float = option(0.05, 'eta, the client learning rate (for fedsgd: the gradient step).',
                                       check=options.positive_number)
  learning_rate_decay: float = option(1.0, 'eta at round r is eta * decay**(r-1) (1.0 = constant).',
                                      check=options.positive_number)
  learning_rate_decay_from: int = option(1, 'Keep eta constant up to this round, then decay: eta * decay**(r - from). A --resume may raise it past the finished rounds to anneal a plateaued run.',
                                         check=options.int_at_least(1))

  @property
  def batch(self) -> Optional[int]:
    """B as an int, or None for B=inf (the whole client dataset as one batch)."""
    return parse_batch_size(self.batch_size)


class RunOptions(options.Options):
  """The run: rounds, evaluation, checkpoints, outputs, export."""

  SECTION = 'Run'

  rounds: int = option(50, 'Total communication rounds (may be raised with --resume).', check=options.int_at_least(1))
  eval_every: int = option(5, 'Evaluate on the test set every this many rounds (and at the last).', check=options.int_at_least(1))
  checkpoint_every: int = option(10, 'Checkpoint every this many rounds (and at the last, and on exit).', check=options.int_at_least(1))
  target_accuracy: Optional[float] = option(None, 'Target test accuracy for rounds-to-target (e.g. 0.99).',
                                            check=options.optional(options.number_in(0, 1, low_open=True)))
  stop_at_target: bool = option(False, 'End the run once the test accuracy reaches --target_accuracy.')
  target_metric: str = option('eval_accuracy', "Column that --target_accuracy and rounds-to-target read: eval_accuracy (global test set; for FedPer/FedGKT the average over trained clients of their models on it) | personalized_accuracy_mean (each client's model on its own test split: FedPer's measure).",
                              names=('eval_accuracy', 'personalized_accuracy_mean'))
  seed: int = option(0, 'Seed of initialization, partition, sampling and shuffling.')
  output_dir: str = option('runs', 'Parent folder of run folders.')
  run_name: Optional[str] = option(None, 'Run folder name (default: derived from the main flags).')
  resume: bool = option(False, 'Continue the run in the run folder from its latest checkpoint.')
  export: bool = option(True, 'Export the final model (.keras, SavedModel, .tflite checked against Keras).')
  quantize: bool = option(False, 'Export a dynamic-range quantized TFLite model instead of float.')
  personalized_eval: bool = option(True, 'Also evaluate on per-client test splits (client mean/std/min/max).')
  client_state_memory_mb: float = option(1024.0, 'fedper/fedgkt: RAM for private client states; least recently used ones past it are kept on disk in the run folder.',
                                         check=lambda v: None if options.positive_number(v) is None else 'must be > 0')
  export_clients: str = option('none', 'fedper/fedgkt: clients whose own models are exported: none (default) | all | comma-separated ids.')

  def check(self) -> None:
    if self.stop_at_target and self.target_accuracy is None:
      raise ConfigError('--stop_at_target needs --target_accuracy')


class ExecutorOptions(options.Options):
  """Where TFF computations run: the local executor's isolation, or remote workers."""

  SECTION = 'Executor'

  require_private_executor: bool = option(False, 'Refuse to run when the TFF executor (worker_binary: unauthenticated, runs any graph it is sent) cannot be put in a private network namespace; by default such a machine gets a one-line warning naming the exposed port.')
  workers: str = option('', "Spread each round's clients over these TFF workers (`python -m tff_programs.worker`): HOST:PORT[,HOST:PORT...]; empty = this process's own executor.")
  worker_tls_dir: Optional[str] = option(None, 'With --workers on other machines: folder with the CA certificate and this driver\'s certificate and key (`python -m tff_programs.worker_tls make-ca`); traffic is then mutually authenticated and encrypted.')
  worker_binary: Optional[str] = option(None, "Run this TFF executor service instead of the pip package's CPU-only worker_binary (e.g. TFF built from source with CUDA).")
  worker_concurrency: int = option(0, "Client computations this process's TFF worker runs at once (worker_binary --max_concurrent_computation_calls). 0: one per CPU core of this machine (a client's small steps leave cores idle between ops; a second client fills them: benchmarks/round_speed.py); 1: one client after another; -1: all at once (TFF's default; memory grows with the clients of a round). Changes no result.", check=addresses.concurrency_problem)

  def check(self) -> None:
    if self.worker_tls_dir and not self.workers:
      raise ConfigError(f'--worker_tls_dir={self.worker_tls_dir}: only with --workers')


COMMON_SECTIONS = (DataOptions, RunOptions, ExecutorOptions)
