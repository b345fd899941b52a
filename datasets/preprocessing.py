"""What a model sees of each dataset: pixel decoding, augmentation, test-time transform, padding.

Image datasets read from files (MNIST, CIFAR) keep their pixels as uint8, as
stored, in memory, on disk and in every TFF request (a quarter of float32's
bytes); the pipeline turns them into float32 in [0, 1] (x / 255, the same
float32 division the loaders used to do) on the batch, or on the example
before augmentation. Datasets already in float (digits, EMNIST, synthetic) or
integer tokens (Shakespeare) feed their arrays as they are. Two need more:

* CIFAR-10/100 (the FedAvg paper follows the TensorFlow CIFAR-10 tutorial): at
  training time a random 24x24 crop, a random left-right flip, brightness and
  contrast jitter, then per-image whitening; at test time the central 24x24
  crop, whitened. The model's input is therefore 24x24x3. Random ops are
  stateless and take a per-example seed from the client pipeline, so runs (and
  resumed runs) are reproducible.
* Shakespeare: the label 0 is padding at the end of a role's last sequence; it
  is excluded from the loss and the accuracy (the paper's accuracy).
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, Optional

import tensorflow as tf

from datasets import shakespeare

CIFAR_CROP = (24, 24, 3)


def pixels_to_float(x: tf.Tensor) -> tf.Tensor:
  """uint8 pixels -> float32 in [0, 1] (x / 255); float input is returned as is."""
  if x.dtype == tf.uint8:
    return tf.cast(x, tf.float32) / 255.0
  return x


@dataclasses.dataclass(frozen=True)
class Preprocessing:
  """Per-dataset transforms.

  Attributes:
    train_map: `(element, seed) -> element` applied per training example
      (its input x is raw, e.g. uint8).
    eval_map: `x -> x` applied to test inputs (batched or single, raw).
    batch_map: `x -> x` applied to each training batch when there is no
      train_map (deterministic, e.g. uint8 -> float32 / 255).
    model_input_shape: the model's input shape if it differs from the data's.
    ignore_label: a label excluded from loss and accuracy (padding), or None.
  """

  train_map: Optional[Callable[[Any, tf.Tensor], Any]] = None
  eval_map: Optional[Callable[[tf.Tensor], tf.Tensor]] = None
  batch_map: Optional[Callable[[tf.Tensor], tf.Tensor]] = None
  model_input_shape: Optional[Sequence[int]] = None
  ignore_label: Optional[int] = None


def cifar_train_map(element, seed):
  """Random crop, flip, brightness/contrast jitter, whitening (stateless, seeded)."""
  seeds = tf.random.experimental.stateless_split(seed, 4)
  x = tf.image.stateless_random_crop(pixels_to_float(element['x']), CIFAR_CROP, seeds[0])
  x = tf.image.stateless_random_flip_left_right(x, seeds[1])
  x = tf.image.stateless_random_brightness(x, 63.0 / 255.0, seeds[2])
  x = tf.image.stateless_random_contrast(x, 0.2, 1.8, seeds[3])
  x = tf.image.per_image_standardization(x)
  return collections.OrderedDict(x=x, y=element['y'])


def cifar_eval_map(x):
  """Central 24x24 crop, whitened (works on one image or a batch)."""
  x = pixels_to_float(x)
  height, width = x.shape[-3], x.shape[-2]
  top, left = (height - CIFAR_CROP[0]) // 2, (width - CIFAR_CROP[1]) // 2
  x = x[..., top:top + CIFAR_CROP[0], left:left + CIFAR_CROP[1], :]
  return tf.image.per_image_standardization(x)


_CIFAR = Preprocessing(train_map=cifar_train_map, eval_map=cifar_eval_map,
                       model_input_shape=CIFAR_CROP)
_TEXT = Preprocessing(ignore_label=shakespeare.PAD_ID)
_PIXELS = Preprocessing(eval_map=pixels_to_float, batch_map=pixels_to_float)

PREPROCESSING: dict[str, Preprocessing] = {
    'mnist': _PIXELS,
    'cifar10': _CIFAR,
    'cifar100': _CIFAR,
    'shakespeare': _TEXT,
    'shakespeare_iid': _TEXT,
}


def preprocessing_for(dataset: str) -> Preprocessing:
  """The dataset's transforms (identity for datasets not listed)."""
  return PREPROCESSING.get(dataset, Preprocessing())


def model_input_dtype(prep: Preprocessing, raw_dtype: tf.dtypes.DType) -> tf.dtypes.DType:
  """The dtype the model sees: float32 after any pixel transform, else the raw one."""
  if prep.train_map is not None or prep.batch_map is not None:
    return tf.float32
  return raw_dtype
