r"""Federated training from the command line.

    python -m tff_programs.train                       # FedAvg on digits, ~1 min
    python -m tff_programs.train --dataset=mnist --data_dir=/path/to/mnist \
        --model=mnist_cnn --partition=iid --num_clients=100 --client_fraction=0.1 \
        --local_epochs=5 --batch_size=10 --client_learning_rate=0.1 \
        --target_accuracy=0.99 --rounds=60
    python -m tff_programs.train --flagfile=tff_programs/configs/<preset>.flags
    python -m tff_programs.train ... --resume          # continue a stopped run

Flags map one to one onto `tff_programs.experiment.ExperimentConfig`, generated
from the options each section, algorithm and aggregator declares; this file only
parses them, reports errors in one line and wires `run_experiment`.
"""

from __future__ import annotations

import os
import signal
import sys

from tff_programs import quiet_tf  # pylint: disable=g-bad-import-order  (before TensorFlow)

quiet_tf.silence_cpp_logs(sys.argv)

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags

from tff_programs import config as config_lib
from tff_programs import experiment
from tff_programs import options
from tff_programs import program_logic
from tff_programs import progress
from tff_programs import remote_runtime as _remote
from tff_programs import runtime

FLAGS = flags.FLAGS
# One flag per option, declared in its section (tff_programs/config.py); --help
# lists them grouped: the run's sections, then each algorithm's and aggregator's.
GROUPS = config_lib.flag_groups()
options.define_flags(GROUPS, overrides={'batch_size': 'string'})
flags.DEFINE_bool('progress', None, 'Force the progress bar on/off (default: on when stderr is a terminal).')

USER_ERRORS = (ValueError, FileNotFoundError, runtime.ExecutorError, _remote.WorkersLostError)
HELP_FLAGS = ('--help', '-h', '--helpshort', '-?')


def config_from_flags() -> experiment.ExperimentConfig:
  values = {name: FLAGS[name].value for name in experiment.ExperimentConfig.__dataclass_fields__}
  return experiment.ExperimentConfig(**values)


def grouped_help() -> str:
  """--help: the usage above, then the flags grouped by section and algorithm."""
  return '\n'.join([__doc__.strip(), '', options.group_help(FLAGS, [title for title, _ in GROUPS]),
                     '', FLAGS.module_help(sys.modules[__name__].__name__ if __name__ != '__main__'
                                           else sys.argv[0]).strip(),
                     '', 'Try --helpfull for absl\'s own flags as well.'])


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


def _parse_or_exit(argv: list[str]) -> None:
  """Parses the flags; a bad value is one line and exit code 2 (absl would
  print a FATAL line and a hint)."""
  try:
    FLAGS(argv)
  except flags.Error as e:
    print(f'train: error: {str(e).splitlines()[0]}', file=sys.stderr)
    sys.exit(2)


def run() -> None:
  if any(arg in HELP_FLAGS for arg in sys.argv[1:]):
    print(grouped_help())
    sys.exit(0)
  _parse_or_exit(sys.argv)
  app.run(main)


if __name__ == '__main__':
  run()
