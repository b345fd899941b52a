r"""Exports a trained model to Keras/SavedModel and TFLite, and checks TFLite.

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
from collections.abc import Callable
from typing import Any, Optional

if __name__ == '__main__':  # Before TensorFlow: quiet its C++ start-up logging.
  from tff_programs import quiet_tf  # pylint: disable=g-import-not-at-top
  quiet_tf.silence_cpp_logs(sys.argv)

import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position
import tensorflow as tf  # pylint: disable=g-import-not-at-top,wrong-import-position

MAX_ACCURACY_GAP = 0.005  # TFLite must match Keras within 0.5 points.


class ExportError(RuntimeError):
  """One-line export failure (missing model, TFLite disagreeing with Keras)."""


def convert_to_tflite(model: tf.keras.Model, *, quantize: bool = False) -> bytes:
  """TFLite flatbuffer of `model` (dynamic-range quantized if `quantize`).

  Models whose graph cannot be lowered with a dynamic batch (recurrent layers:
  TensorList ops) are converted with a static batch of 1, which lets the
  converter fuse LSTMs into TFLite's builtin op (what a device runs anyway).
  """
  converter = tf.lite.TFLiteConverter.from_keras_model(model)
  if quantize:
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
  try:
    return converter.convert()
  except Exception:  # pylint: disable=broad-except  (ConverterError and friends)
    spec = tf.TensorSpec([1, *model.input_shape[1:]], model.inputs[0].dtype)
    concrete = tf.function(lambda x: model(x, training=False)).get_concrete_function(spec)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], model)
    if quantize:
      converter.optimizations = [tf.lite.Optimize.DEFAULT]
    return converter.convert()


def tflite_predict(tflite_model: bytes, x: np.ndarray, *, batch_size: int = 256) -> np.ndarray:
  """Runs the TFLite interpreter over `x` in batches; returns the outputs."""
  interpreter = tf.lite.Interpreter(model_content=tflite_model, num_threads=os.cpu_count())
  input_detail = interpreter.get_input_details()[0]
  if input_detail['shape_signature'][0] == 1:  # A static-batch model: one at a time.
    batch_size = 1
  output_index = interpreter.get_output_details()[0]['index']
  outputs = []
  current = None
  for start in range(0, len(x), batch_size):
    batch = np.asarray(x[start:start + batch_size], dtype=input_detail['dtype'])
    if current != len(batch):
      interpreter.resize_tensor_input(input_detail['index'], batch.shape)
      interpreter.allocate_tensors()
      current = len(batch)
    interpreter.set_tensor(input_detail['index'], batch)
    interpreter.invoke()
    outputs.append(interpreter.get_tensor(output_index).copy())
  return np.concatenate(outputs)


def accuracy(logits: np.ndarray, y: np.ndarray, ignore_label: Optional[int] = None) -> float:
  """Top-1 accuracy; positions labelled `ignore_label` (padding) are not scored."""
  correct = np.argmax(logits, axis=-1) == y
  if ignore_label is None:
    return float(np.mean(correct))
  valid = y != ignore_label
  return float(correct[valid].mean()) if valid.any() else 0.0


def _preprocessed(x: np.ndarray, preprocess: Optional[Callable], batch_size: int = 1000) -> np.ndarray:
  if preprocess is None:
    return x
  return np.concatenate([preprocess(tf.constant(x[i:i + batch_size])).numpy()
                         for i in range(0, len(x), batch_size)])


def export_model(
    model: tf.keras.Model,
    run_dir: str,
    x_test: np.ndarray,
    y_test: np.ndarray,
    *,
    quantize: bool = False,
    name: str = 'model',
    preprocess: Optional[Callable] = None,
    ignore_label: Optional[int] = None,
    raise_on_gap: bool = True,
) -> dict[str, Any]:
  """Saves `model` in all formats into `run_dir` and verifies the TFLite file.

  The exported model takes preprocessed inputs (`preprocess`, e.g. CIFAR's
  central crop and whitening), as the Keras model did in evaluation.

  Returns:
    A report: paths, Keras and TFLite accuracy, their gap, file sizes.

  Raises:
    ExportError: if the TFLite accuracy differs from Keras' by more than 0.5
      points (with `raise_on_gap`; otherwise the report says
      `accuracy_gap_exceeded` and `gap_message` is its one-line explanation).
  """
  os.makedirs(run_dir, exist_ok=True)
  keras_path = os.path.join(run_dir, f'{name}.keras')
  model.save(keras_path)
  saved_model_dir = os.path.join(run_dir, name)
  tf.saved_model.save(model, saved_model_dir)
  tflite_bytes = convert_to_tflite(model, quantize=quantize)
  tflite_path = os.path.join(run_dir, f'{name}_quant.tflite' if quantize else f'{name}.tflite')
  with open(tflite_path, 'wb') as f:
    f.write(tflite_bytes)
  x_test = _preprocessed(x_test, preprocess)
  keras_accuracy = accuracy(model.predict(x_test, batch_size=512, verbose=0), y_test, ignore_label)
  tflite_accuracy = accuracy(tflite_predict(tflite_bytes, x_test), y_test, ignore_label)
  report = {
      'keras_path': keras_path,
      'saved_model_dir': saved_model_dir,
      'tflite_path': tflite_path,
      'quantized': quantize,
      'tflite_bytes': len(tflite_bytes),
      'keras_accuracy': keras_accuracy,
      'tflite_accuracy': tflite_accuracy,
      'accuracy_gap': abs(keras_accuracy - tflite_accuracy),
      'test_examples': int(len(y_test)),
  }
  report['accuracy_gap_exceeded'] = report['accuracy_gap'] > MAX_ACCURACY_GAP
  with open(os.path.join(run_dir, f'export_{name}.json'), 'w') as f:
    json.dump(report, f, indent=2)
  if report['accuracy_gap_exceeded']:
    message = (f'TFLite accuracy {tflite_accuracy:.4f} differs from Keras {keras_accuracy:.4f} '
               f'by more than {MAX_ACCURACY_GAP:.3f} ({tflite_path})')
    if raise_on_gap:
      raise ExportError(message)
    report['gap_message'] = message
  return report


def _main(argv):
  del argv
  from absl import flags  # pylint: disable=g-import-not-at-top

  from datasets import preprocessing  # pylint: disable=g-import-not-at-top
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
  fields = {k: v for k, v in saved.items() if k in experiment.ExperimentConfig.__dataclass_fields__}
  if f.data_dir:
    fields['data_dir'] = f.data_dir
  cfg = experiment.ExperimentConfig(**fields)
  data = experiment.load_federated_data(cfg)
  model = tf.keras.models.load_model(keras_path, compile=False)
  task = experiment.make_task(cfg, data)
  prep = preprocessing.preprocessing_for(cfg.dataset)
  report = export_model(model, f.run_dir, *data.central_test, quantize=f.quantize,
                        preprocess=prep.eval_map, ignore_label=task.ignore_label)
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
