"""What a model sees of each dataset: pixel decoding, augmentation, test-time transform, padding.

Image datasets read from files (MNIST, CIFAR) keep their pixels as uint8, as
stored, in memory, on disk and in every TFF request (a quarter of float32's
bytes); the pipeline turns them into float32 in [0, 1] (x / 255, the same
float32 division the loaders used to do) on the batch, or on the example
before augmentation. Datasets already in float (digits, EMNIST, synthetic) or
integer tokens (Shakespeare) feed their arrays as they are. Two need more:

* CIFAR-10/100 has two pipelines (`--cifar_input`, `CIFAR_INPUTS`):
  - 'crop24' (default; the FedAvg paper's, from the TensorFlow CIFAR-10
    tutorial): at training time a random 24x24 crop, a random left-right flip,
    brightness and contrast jitter, then per-image whitening; at test time the
    central 24x24 crop, whitened. The model's input is 24x24x3.
  - 'pad32' (the standard augmentation of the CIFAR ResNet/MobileNet papers,
    used by FedPer's MobileNet-v1 and FedGKT's ResNets, which are defined on
    32x32): at training time the image padded with 4 black pixels on each side,
    a random 32x32 crop of it and a random left-right flip; then, train and
    test alike, per-channel normalization (x - mean_c) / std_c with the
    dataset's published training-set statistics. At test time the whole image.
    The model's input is 32x32x3. Per-channel normalization rather than
    per-image standardization: it is what the reference implementations do
    (FedGKT's released code: torchvision's RandomCrop(32, padding=4),
    RandomHorizontalFlip, Normalize(CIFAR_MEAN, CIFAR_STD)), and being one fixed
    affine map per channel it keeps each image's brightness and contrast, which
    per-image standardization removes; the statistics are those of the 50,000
    training images (the held-out data_batch_5 changes them in the 4th decimal).
  Random ops are stateless and take a per-example seed from the client
  pipeline, so runs (and resumed runs) are reproducible.
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
CIFAR_FULL = (32, 32, 3)
CIFAR_PAD = 4
CIFAR_INPUTS = ('crop24', 'pad32')
CIFAR_DATASETS = ('cifar10', 'cifar100')
# Per-channel (R, G, B) mean and std of the training images, pixels in [0, 1]
# (the published values; CIFAR-10's checked on the 50,000 training images).
CIFAR_CHANNEL_STATS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    'cifar10': ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    'cifar100': ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}


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


def normalize_channels(x: tf.Tensor, dataset: str) -> tf.Tensor:
  """(x - mean_c) / std_c per channel, x in [0, 1] (one image or a batch)."""
  mean, std = CIFAR_CHANNEL_STATS[dataset]
  return (x - tf.constant(mean, tf.float32)) / tf.constant(std, tf.float32)


def cifar_pad32_train_map(dataset: str) -> Callable[[Any, tf.Tensor], Any]:
  """`dataset`'s 'pad32' training map: pad 4 (black) + random 32x32 crop + flip, normalized."""
  def train_map(element, seed):
    seeds = tf.random.experimental.stateless_split(seed, 2)
    x = pixels_to_float(element['x'])
    x = tf.pad(x, [[CIFAR_PAD, CIFAR_PAD], [CIFAR_PAD, CIFAR_PAD], [0, 0]])
    x = tf.image.stateless_random_crop(x, CIFAR_FULL, seeds[0])
    x = tf.image.stateless_random_flip_left_right(x, seeds[1])
    return collections.OrderedDict(x=normalize_channels(x, dataset), y=element['y'])
  return train_map


def cifar_pad32_eval_map(dataset: str) -> Callable[[tf.Tensor], tf.Tensor]:
  """`dataset`'s 'pad32' test map: the whole image, normalized (one image or a batch)."""
  return lambda x: normalize_channels(pixels_to_float(x), dataset)


_CIFAR = Preprocessing(train_map=cifar_train_map, eval_map=cifar_eval_map,
                       model_input_shape=CIFAR_CROP)
_CIFAR_PAD32 = {
    name: Preprocessing(train_map=cifar_pad32_train_map(name), eval_map=cifar_pad32_eval_map(name),
                        model_input_shape=CIFAR_FULL)
    for name in CIFAR_DATASETS
}
_TEXT = Preprocessing(ignore_label=shakespeare.PAD_ID)
_PIXELS = Preprocessing(eval_map=pixels_to_float, batch_map=pixels_to_float)

PREPROCESSING: dict[str, Preprocessing] = {
    'mnist': _PIXELS,
    'cifar10': _CIFAR,
    'cifar100': _CIFAR,
    'shakespeare': _TEXT,
    'shakespeare_iid': _TEXT,
}


def preprocessing_for(dataset: str, *, cifar_input: str = 'crop24') -> Preprocessing:
  """The dataset's transforms (identity for datasets not listed).

  Args:
    dataset: a dataset name of `datasets.registry`.
    cifar_input: CIFAR's pipeline, one of `CIFAR_INPUTS` (see the module
      docstring); anything but the default 'crop24' is only for CIFAR.

  Raises:
    ValueError: an unknown `cifar_input`, or 'pad32' for a non-CIFAR dataset.
  """
  if cifar_input not in CIFAR_INPUTS:
    raise ValueError(f'--cifar_input={cifar_input!r}: allowed: {", ".join(CIFAR_INPUTS)}')
  if cifar_input != 'crop24':
    if dataset not in CIFAR_DATASETS:
      raise ValueError(f'--cifar_input={cifar_input}: only for --dataset=cifar10 or cifar100, '
                       f'not {dataset}')
    return _CIFAR_PAD32[dataset]
  return PREPROCESSING.get(dataset, Preprocessing())


def model_input_dtype(prep: Preprocessing, raw_dtype: tf.dtypes.DType) -> tf.dtypes.DType:
  """The dtype the model sees: float32 after any pixel transform, else the raw one."""
  if prep.train_map is not None or prep.batch_map is not None:
    return tf.float32
  return raw_dtype
