"""What a model sees of each dataset: augmentation, test-time transform, padding.

Most datasets feed their arrays as they are. Two need more:

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


@dataclasses.dataclass(frozen=True)
class Preprocessing:
  """Per-dataset transforms.

  Attributes:
    train_map: `(element, seed) -> element` applied per training example.
    eval_map: `x -> x` applied to test inputs (batched or single).
    model_input_shape: the model's input shape if it differs from the data's.
    ignore_label: a label excluded from loss and accuracy (padding), or None.
  """

  train_map: Optional[Callable[[Any, tf.Tensor], Any]] = None
  eval_map: Optional[Callable[[tf.Tensor], tf.Tensor]] = None
  model_input_shape: Optional[Sequence[int]] = None
  ignore_label: Optional[int] = None


def cifar_train_map(element, seed):
  """Random crop, flip, brightness/contrast jitter, whitening (stateless, seeded)."""
  seeds = tf.random.experimental.stateless_split(seed, 4)
  x = tf.image.stateless_random_crop(element['x'], CIFAR_CROP, seeds[0])
  x = tf.image.stateless_random_flip_left_right(x, seeds[1])
  x = tf.image.stateless_random_brightness(x, 63.0 / 255.0, seeds[2])
  x = tf.image.stateless_random_contrast(x, 0.2, 1.8, seeds[3])
  x = tf.image.per_image_standardization(x)
  return collections.OrderedDict(x=x, y=element['y'])


def cifar_eval_map(x):
  """Central 24x24 crop, whitened (works on one image or a batch)."""
  height, width = x.shape[-3], x.shape[-2]
  top, left = (height - CIFAR_CROP[0]) // 2, (width - CIFAR_CROP[1]) // 2
  x = x[..., top:top + CIFAR_CROP[0], left:left + CIFAR_CROP[1], :]
  return tf.image.per_image_standardization(x)


_CIFAR = Preprocessing(train_map=cifar_train_map, eval_map=cifar_eval_map,
                       model_input_shape=CIFAR_CROP)
_TEXT = Preprocessing(ignore_label=shakespeare.PAD_ID)

PREPROCESSING: dict[str, Preprocessing] = {
    'cifar10': _CIFAR,
    'cifar100': _CIFAR,
    'shakespeare': _TEXT,
    'shakespeare_iid': _TEXT,
}


def preprocessing_for(dataset: str) -> Preprocessing:
  """The dataset's transforms (identity for datasets not listed)."""
  return PREPROCESSING.get(dataset, Preprocessing())
