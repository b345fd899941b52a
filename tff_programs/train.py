r"""Federated training from the command line.

    python -m tff_programs.train                       # FedAvg on digits, ~1 min
    python -m tff_programs.train --dataset=mnist --data_dir=/path/to/mnist \
        --model=mnist_cnn --partition=iid --num_clients=100 --client_fraction=0.1 \
        --local_epochs=5 --batch_size=10 --client_learning_rate=0.1 \
        --target_accuracy=0.99 --rounds=60
    python -m tff_programs.train --flagfile=tff_programs/configs/<preset>.flags
    python -m tff_programs.train ... --resume          # continue a stopped run

Flags map one to one onto `tff_programs.experiment.ExperimentConfig`; this file
only parses them, reports errors in one line and wires `run_experiment`.
"""

from __future__ import annotations

import os
import signal
import sys

from tff_programs import quiet_tf  # pylint: disable=g-bad-import-order  (before TensorFlow)

quiet_tf.silence_cpp_logs(sys.argv)

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags

from tff_programs import experiment
from tff_programs import program_logic
from tff_programs import progress
from tff_programs import runtime

_D = experiment.ExperimentConfig()
FLAGS = flags.FLAGS

flags.DEFINE_string('algorithm', _D.algorithm, 'Federated algorithm: fedavg | fedsgd (FedAvg with E=1, B=inf, one gradient step per round) | rpn (FedAvg with residual pooling of conv kernels, Huang et al. 2020) | fedper (private personalization layers, Arivazhagan et al. 2019) | fedgkt (group knowledge transfer: edge ResNet-8 + server ResNet-55/109, He et al. 2020; see --gkt_*).')
flags.DEFINE_string('aggregator', _D.aggregator, 'Model-update aggregator: mean (TFF weighted mean) | quantized (uniform b-bit quantization of uploads). With --algorithm=rpn: what aggregates the pooled residuals (quantized = RPN + 8-bit).')
flags.DEFINE_string('dataset', _D.dataset, 'digits (scikit-learn, embedded) | mnist | cifar10 | cifar100 | emnist | synthetic.')
flags.DEFINE_string('data_dir', _D.data_dir, 'Folder with the dataset files (mnist: the 4 IDX .gz files or mnist.npz; cifar: the python batches or tarball; emnist: TFF cache).')
flags.DEFINE_integer('min_role_lines', _D.min_role_lines, 'shakespeare, shakespeare_iid: a speaking role becomes a client if it has at least this many lines: 2 (the FedAvg paper\'s words: 1,215 clients in 100.txt) or 3 (the reference LEAF/TFF preprocessing: 1,149 clients; the paper reports 1,146).')
flags.DEFINE_integer('max_train_examples', _D.max_train_examples, 'Use a seeded random subset of at most this many training examples, before partitioning (0 = all); for quick runs of large models on a small machine.')
flags.DEFINE_integer('max_test_examples', _D.max_test_examples, 'Evaluate on a seeded random subset of at most this many test examples (0 = all).')
flags.DEFINE_string('model', _D.model, 'Model name from models/registry.py (mnist_2nn, mnist_cnn, keras_mnist_cnn, cifar_cnn, ...).')
flags.DEFINE_string('partition', _D.partition, 'iid | shards (pathological non-IID) | k_class | dirichlet | natural.')
flags.DEFINE_integer('num_clients', _D.num_clients, 'K, the number of clients.')
flags.DEFINE_integer('shards_per_client', _D.shards_per_client, 'shards partition: shards per client (the paper: 2).')
flags.DEFINE_integer('classes_per_client', _D.classes_per_client, 'k_class partition: at most this many classes per client.')
flags.DEFINE_float('dirichlet_alpha', _D.dirichlet_alpha, 'dirichlet partition: concentration alpha (smaller = more skewed).')
flags.DEFINE_float('client_fraction', _D.client_fraction, 'C in (0, 1]: m = max(round(C*K), 1) clients per round.')
flags.DEFINE_integer('local_epochs', _D.local_epochs, 'E >= 1, local epochs per round.')
flags.DEFINE_string('batch_size', str(_D.batch_size), "B: local minibatch size, or 'inf' for the whole client dataset as one batch.")
flags.DEFINE_float('client_learning_rate', _D.client_learning_rate, 'eta, the client SGD learning rate (for fedsgd: the gradient step).')
flags.DEFINE_float('server_learning_rate', _D.server_learning_rate, 'Server learning rate applied to the averaged update (1.0 = the paper).')
flags.DEFINE_float('learning_rate_decay', _D.learning_rate_decay, 'eta at round r is eta * decay**(r-1) (1.0 = constant).')
flags.DEFINE_integer('learning_rate_decay_from', _D.learning_rate_decay_from, 'Keep eta constant up to this round, then decay: eta * decay**(r - from). A --resume may raise it past the finished rounds to anneal a plateaued run.')
flags.DEFINE_string('client_weighting', _D.client_weighting, 'num_examples (n_k/n, the paper) | uniform (1/m).')
flags.DEFINE_float('client_momentum', _D.client_momentum, 'Momentum of the client optimizer (0 = plain SGD).')
flags.DEFINE_float('rpn_threshold', _D.rpn_threshold, 'rpn: send only conv filters whose |sum of residual kernel elements| exceeds this (0 = all filters).')
flags.DEFINE_string('rpn_weighting', _D.rpn_weighting, 'rpn: uniform (1/m, the paper) | num_examples (n_k/n).')
flags.DEFINE_integer('quantization_bits', _D.quantization_bits, 'quantized aggregator: bits per uploaded value.')
flags.DEFINE_integer('quantization_threshold', _D.quantization_threshold, 'quantized aggregator: only tensors with more values than this are quantized.')
flags.DEFINE_bool('quantization_stochastic', _D.quantization_stochastic, 'quantized aggregator: TFF\'s unbiased stochastic rounding (its random numbers are unseeded: runs are then not reproducible) instead of rounding to the nearest level.')
flags.DEFINE_integer('personal_blocks', _D.personal_blocks, 'fedper: K_P, personalization blocks counted from the output (0 = FedAvg).')
flags.DEFINE_bool('fedper_finetune', _D.fedper_finetune, 'fedper: first fine-tune the personal layers one epoch with the base frozen (paper appendix A.3).')
flags.DEFINE_integer('rounds', _D.rounds, 'Total communication rounds (may be raised with --resume).')
flags.DEFINE_integer('eval_every', _D.eval_every, 'Evaluate on the test set every this many rounds (and at the last).')
flags.DEFINE_integer('checkpoint_every', _D.checkpoint_every, 'Checkpoint every this many rounds (and at the last, and on exit).')
flags.DEFINE_float('target_accuracy', _D.target_accuracy, 'Target test accuracy for rounds-to-target (e.g. 0.99).')
flags.DEFINE_bool('stop_at_target', _D.stop_at_target, 'End the run once the test accuracy reaches --target_accuracy.')
flags.DEFINE_string('target_metric', _D.target_metric, 'Column that --target_accuracy and rounds-to-target read: eval_accuracy (global test set; for FedPer/FedGKT the average over trained clients of their models on it) | personalized_accuracy_mean (each client\'s model on its own test split: FedPer\'s measure).')
flags.DEFINE_integer('seed', _D.seed, 'Seed of initialization, partition, sampling and shuffling.')
flags.DEFINE_string('output_dir', _D.output_dir, 'Parent folder of run folders.')
flags.DEFINE_string('run_name', _D.run_name, 'Run folder name (default: derived from the main flags).')
flags.DEFINE_bool('resume', _D.resume, 'Continue the run in the run folder from its latest checkpoint.')
flags.DEFINE_bool('export', _D.export, 'Export the final model (.keras, SavedModel, .tflite checked against Keras).')
flags.DEFINE_bool('quantize', _D.quantize, 'Export a dynamic-range quantized TFLite model instead of float.')
flags.DEFINE_bool('personalized_eval', _D.personalized_eval, 'Also evaluate on per-client test splits (client mean/std/min/max).')
flags.DEFINE_string('export_clients', _D.export_clients, 'fedper/fedgkt: clients whose own models are exported: none (default) | all | comma-separated ids.')
flags.DEFINE_bool('require_private_executor', _D.require_private_executor, 'Refuse to run when the TFF executor (worker_binary: unauthenticated, runs any graph it is sent) cannot be put in a private network namespace; by default such a machine gets a one-line warning naming the exposed port.')
flags.DEFINE_float('gkt_temperature', _D.gkt_temperature, 'fedgkt: distillation temperature T (KL scaled by T^2).')
flags.DEFINE_float('gkt_alpha', _D.gkt_alpha, 'fedgkt: weight alpha of the KD term on clients and server.')
flags.DEFINE_integer('gkt_server_epochs', _D.gkt_server_epochs, 'fedgkt: E_s, server epochs per round over the received features (--local_epochs is E_c).')
flags.DEFINE_float('gkt_server_learning_rate', _D.gkt_server_learning_rate, 'fedgkt: SGD learning rate of the server model (--client_learning_rate: edge models).')
flags.DEFINE_integer('gkt_server_depth', _D.gkt_server_depth, 'fedgkt: server model ResNet-55 | 109 (ResNet-56/110 without the stem). The edge is ResNet-8; --model is not used.')
flags.DEFINE_string('gkt_block', _D.gkt_block, 'fedgkt: residual block of edge and server: bottleneck (FedGKT released code; the paper ratios) | basic.')
flags.DEFINE_string('gkt_kd', _D.gkt_kd, 'fedgkt: knowledge distillation: both (the paper) | server_to_edge (server CE only) | none (CE on both sides).')
flags.DEFINE_string('gkt_mode', _D.gkt_mode, 'fedgkt: sync (server trains after all sampled clients) | async (server trains on each client as it arrives).')
flags.DEFINE_string('gkt_optimizer', _D.gkt_optimizer, 'fedgkt: optimizer of edge and server models: sgd (plain) | adam (FedGKT released code; each client and the server keep their moments across rounds).')
flags.DEFINE_float('gkt_memory_budget_mb', _D.gkt_memory_budget_mb, 'fedgkt: feature maps held in RAM per round up to this many MB (and at most 96 MiB, TFF\'s limit for a dataset passed into a call); above, they are spilled to TFRecord files in the run folder.')
flags.DEFINE_integer('gkt_server_batch_size', _D.gkt_server_batch_size, 'fedgkt: server minibatch size (0 = --batch_size, or 64 if inf).')
flags.DEFINE_float('client_state_memory_mb', _D.client_state_memory_mb, 'fedper/fedgkt: RAM for private client states; least recently used ones past it are kept on disk in the run folder.')
flags.DEFINE_bool('progress', None, 'Force the progress bar on/off (default: on when stderr is a terminal).')

USER_ERRORS = (ValueError, FileNotFoundError, runtime.ExecutorError)


def config_from_flags() -> experiment.ExperimentConfig:
  values = {name: FLAGS[name].value for name in experiment.ExperimentConfig.__dataclass_fields__}
  return experiment.ExperimentConfig(**values)


def _sigterm_to_interrupt(signum, frame):
  del signum, frame
  raise KeyboardInterrupt('SIGTERM')


def main(argv):
  if len(argv) > 1:
    print(f'train: error: unexpected arguments {argv[1:]}; flags look like --name=value',
          file=sys.stderr)
    return 2
  signal.signal(signal.SIGTERM, _sigterm_to_interrupt)
  progress.quiet_tf_logs()
  try:
    cfg = config_from_flags()
    result = experiment.run_experiment(cfg, show_progress=FLAGS.progress)
  except KeyboardInterrupt:
    print(f'train: interrupted; finished rounds are saved in {FLAGS.output_dir}. '
          'Run the same command with --resume to continue.', file=sys.stderr)
    return 130
  except program_logic.DivergenceError as e:
    print(f'train: error: {e}', file=sys.stderr)
    return 3
  except USER_ERRORS as e:
    message = str(e).splitlines()[0] if str(e) else type(e).__name__
    print(f'train: error: {message}', file=sys.stderr)
    return 2
  s = result.summary
  fmt = lambda v: '-' if v is None else f'{v:.4f}'
  print(f"done: {s['rounds_completed']} rounds, final test accuracy "
        f"{fmt(s['final_eval_accuracy'])} (best {fmt(s['best_eval_accuracy'])}), "
        f"rounds to target: {s['rounds_to_target']}")
  if result.export_report and 'tflite_path' in result.export_report:
    r = result.export_report
    print(f"tflite: {r['tflite_path']} accuracy {r['tflite_accuracy']:.4f} "
          f"(keras {r['keras_accuracy']:.4f})")
  print(f'outputs: {result.run_dir}/ ({", ".join(listed_outputs(result.run_dir))})')
  return 0


FIXED_OUTPUTS = ('metrics.csv', 'summary.json', 'tensorboard/', 'checkpoints/')


def listed_outputs(run_dir: str) -> list[str]:
  """The outputs this run actually wrote: the fixed ones, then exported models
  (none with --export=false; one per client for FedPer/FedGKT, then counted)."""
  names = [n for n in FIXED_OUTPUTS if os.path.exists(os.path.join(run_dir, n.rstrip('/')))]
  for ext in ('.keras', '.tflite'):
    found = sorted(f for f in os.listdir(run_dir) if f.endswith(ext))
    names += found if len(found) <= 2 else [f'{len(found)} {ext} files']
  return names


def run() -> None:
  app.run(main)


if __name__ == '__main__':
  run()
