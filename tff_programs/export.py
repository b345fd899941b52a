r"""Re-exports a finished run's model to Keras/SavedModel and TFLite, and checks TFLite.

    python -m tff_programs.export --run_dir=runs/<run_name> [--quantize]

Writes into the run folder:
  model.keras        the Keras model (Keras v3 file; `tf.keras.models.load_model`)
  model/             a TF SavedModel (serving signature: images -> logits)
  model.tflite       float TFLite model, or dynamic-range quantized (--quantize:
                     int8 weights, float activations) as model_quant.tflite
  export.json        Keras and TFLite test accuracy; they must agree within
                     0.5 points or the export fails.
The test set is the run's central test set, reloaded from its config.json.
"""

from __future__ import annotations

import json
import os
import sys

if __name__ == '__main__':  # Before TensorFlow: quiet its C++ start-up logging.
  from tff_programs import quiet_tf  # pylint: disable=g-import-not-at-top
  quiet_tf.silence_cpp_logs(sys.argv)

import tensorflow as tf  # pylint: disable=g-import-not-at-top,wrong-import-position

from tff_programs import tflite_export  # pylint: disable=g-import-not-at-top,wrong-import-position
from tff_programs.tflite_export import ExportError  # pylint: disable=g-import-not-at-top,wrong-import-position


def _main(argv):
  del argv
  from absl import flags  # pylint: disable=g-import-not-at-top

  from tff_programs import config as config_lib  # pylint: disable=g-import-not-at-top
  from tff_programs import experiment  # pylint: disable=g-import-not-at-top
  import models.registry  # pylint: disable=g-import-not-at-top,unused-import  (custom layers)

  f = flags.FLAGS
  config_path = os.path.join(f.run_dir, 'config.json')
  keras_path = os.path.join(f.run_dir, 'model.keras')
  for path in (config_path, keras_path):
    if not os.path.exists(path):
      raise ExportError(f'--run_dir={f.run_dir}: {os.path.basename(path)} not found '
                        '(train the run to completion first)')
  with open(config_path) as fp:
    saved = json.load(fp)
  if f.data_dir:
    saved['data_dir'] = f.data_dir
  cfg = config_lib.from_flat(saved)
  data = experiment.load_federated_data(cfg)
  model = tf.keras.models.load_model(keras_path, compile=False)
  task = experiment.make_task(cfg, data)
  report = tflite_export.export_model(model, f.run_dir, *data.central_test, quantize=f.quantize,
                                      preprocess=task.preprocessing.eval_map,
                                      ignore_label=task.ignore_label)
  print(json.dumps(report, indent=2))


def main():
  from absl import app  # pylint: disable=g-import-not-at-top
  from absl import flags  # pylint: disable=g-import-not-at-top

  flags.DEFINE_string('run_dir', None, 'A run folder written by tff_programs.train.')
  flags.DEFINE_bool('quantize', False, 'Dynamic-range quantize the TFLite model.')
  flags.DEFINE_string('data_dir', None, 'Override the data_dir saved in config.json.')
  flags.mark_flag_as_required('run_dir')

  def run(argv):
    from tff_programs import progress  # pylint: disable=g-import-not-at-top

    progress.quiet_tf_logs()
    try:
      _main(argv)
    except (ExportError, ValueError, FileNotFoundError) as e:
      print(f'export: error: {e}', file=sys.stderr)
      sys.exit(2)

  app.run(run)


if __name__ == '__main__':
  main()
