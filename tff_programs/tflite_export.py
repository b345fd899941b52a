"""Trained models to Keras/SavedModel and TFLite, each TFLite model checked against Keras.

`export_model(model, folder, x_test, y_test)` writes
  <name>.keras       the Keras model (Keras v3 file; `tf.keras.models.load_model`)
  <name>/            a TF SavedModel (serving signature: inputs -> logits)
  <name>.tflite      float TFLite model, or dynamic-range quantized (int8 weights,
                     float activations) as <name>_quant.tflite
  export_<name>.json Keras and TFLite test accuracy; they must agree within 0.5 points.
`export_trained` exports what a run trained: the global model, or the chosen
clients' own models (FedPer, FedGKT). The command line is `tff_programs.export`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from typing import Any, Optional

import numpy as np
import tensorflow as tf

from tff_programs.options import ConfigError

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


def export_client_ids(export_clients: str, client_ids: Sequence[str], export: bool = True) -> list[str]:
  """Clients whose own models are exported (--export_clients: none | all | ids)."""
  if not export or export_clients == 'none':
    return []
  if export_clients == 'all':
    return list(client_ids)
  wanted = [c.strip() for c in export_clients.split(',') if c.strip()]
  unknown = [c for c in wanted if c not in set(client_ids)]
  if unknown:
    raise ConfigError(f'--export_clients: unknown client ids {unknown}; ids look like {client_ids[0]}')
  return wanted


def export_trained(*, run_dir: str, algorithm: Any, task: Any, data: Any, training: Any,
                   export_clients: Sequence[str], quantize: bool, seed: int,
                   log: Callable[[str], None] = print) -> dict[str, Any]:
  """Exports a finished run's model(s), each checked against Keras on its test data.

  The global model (FedAvg, FedSGD, RPN, FedProx) on the central test set; for
  algorithms whose clients keep their own models, each client in
  `export_clients` on its own test split (none by default: one line says how
  to ask). A TFLite model that disagrees with Keras is reported in one line
  (and in the report), not raised: training finished and is saved.
  """
  common = dict(quantize=quantize, preprocess=task.preprocessing.eval_map,
                ignore_label=task.ignore_label, raise_on_gap=False)
  if not algorithm.uses_client_states:
    model = algorithm.build_model(task, training.state)
    report = export_model(model, run_dir, *data.central_test, **common)
    reports = {'model': report}
  else:
    reports = {}
    if not export_clients:
      log(f'{algorithm.name}: each client has its own model; none exported '
          '(--export_clients=all or comma-separated ids exports them)')
    for cid in export_clients:
      client_state = training.client_states.get(cid)
      if client_state is None:
        client_state = algorithm.initial_client_state(cid, seed)
      model = algorithm.build_model(task, training.state, client_state)
      x, y = data.test_arrays[cid] if data.test_arrays else data.central_test
      reports[cid] = export_model(model, os.path.join(run_dir, 'clients'), x, y,
                                  name=f'model_{cid}', **common)
    gaps = [r['accuracy_gap'] for r in reports.values()]
    report = {'clients': reports, 'accuracy_gap': max(gaps) if gaps else 0.0}
  exceeded = [r['gap_message'] for r in reports.values() if r.get('accuracy_gap_exceeded')]
  report['accuracy_gap_exceeded'] = bool(exceeded)
  for message in exceeded:
    log(f'warning: {message}')
  return report
