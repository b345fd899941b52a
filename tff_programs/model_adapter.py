"""Turns a plain Keras model builder into what `tff.learning` consumes.

`models/` never imports TFF; this adapter is the one place where a Keras builder
becomes a `tff.learning.models.VariableModel` function. Loss is sparse categorical
cross-entropy on logits, metric is accuracy; for sequence tasks a padding label is
masked out of both (the FedAvg paper's Shakespeare accuracy ignores padding).

It also holds the plain-structure view of a Keras model's weights used by
algorithms that build their own TFF computations (FedGKT): `weights_of`,
`weight_specs`, `assign_weights`, `snapshot_weights`, `weights_to_numpy`.
"""

from __future__ import annotations

import collections
import contextlib
import math
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Optional

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff


class MaskedSparseCategoricalAccuracy(tf.keras.metrics.SparseCategoricalAccuracy):
  """Accuracy that ignores positions whose label equals `ignore_label`."""

  def __init__(self, ignore_label: int, name: str = 'sparse_categorical_accuracy', **kwargs):
    super().__init__(name=name, **kwargs)
    self._ignore_label = ignore_label

  def update_state(self, y_true, y_pred, sample_weight=None):
    mask = tf.cast(tf.not_equal(y_true, self._ignore_label), tf.float32)
    if sample_weight is not None:
      mask *= tf.cast(sample_weight, tf.float32)
    return super().update_state(y_true, y_pred, sample_weight=mask)

  def get_config(self):
    return dict(super().get_config(), ignore_label=self._ignore_label)


class MaskedSparseCategoricalCrossentropy(tf.keras.losses.Loss):
  """Mean cross-entropy on logits over positions whose label is not ignored."""

  def __init__(self, ignore_label: int, name: str = 'masked_sparse_ce'):
    super().__init__(name=name, reduction=tf.keras.losses.Reduction.NONE)
    self._ignore_label = ignore_label

  def call(self, y_true, y_pred):
    raise NotImplementedError  # __call__ is overridden.

  def __call__(self, y_true, y_pred, sample_weight=None):
    del sample_weight
    mask = tf.cast(tf.not_equal(y_true, self._ignore_label), tf.float32)
    safe = tf.where(tf.equal(y_true, self._ignore_label), tf.zeros_like(y_true), y_true)
    ce = tf.keras.losses.sparse_categorical_crossentropy(safe, y_pred, from_logits=True)
    return tf.math.divide_no_nan(tf.reduce_sum(ce * mask), tf.reduce_sum(mask))


def loss_fn(ignore_label: Optional[int] = None) -> tf.keras.losses.Loss:
  if ignore_label is None:
    return tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
  return MaskedSparseCategoricalCrossentropy(ignore_label)


def metrics_fn(ignore_label: Optional[int] = None) -> list[tf.keras.metrics.Metric]:
  if ignore_label is None:
    return [tf.keras.metrics.SparseCategoricalAccuracy()]
  return [MaskedSparseCategoricalAccuracy(ignore_label)]


@contextlib.contextmanager
def placeholder_initial_values() -> Iterator[None]:
  """Variables created inside start at zeros instead of their initializers' draws.

  For models whose variables are assigned before they are read: the model of
  a TFF computation. TFF runs a computation's variable initializers on every
  call, i.e. for every client of every round, and the random initializers of
  the MNIST CNN alone draw 1.66M numbers each time (~10 ms of worker CPU a
  client, from perf samples of the worker). FedSuite's computations assign
  the weights they train (the broadcast model, a client's personal part)
  before use, and initial weights come from the seeded Keras builder
  (`initialize(seed)`), never from these variables: so their starting values
  are never seen.
  """

  def creator(next_creator, **kwargs):
    initial, shape, dtype = kwargs.get('initial_value'), kwargs.get('shape'), kwargs.get('dtype')
    if callable(initial) and shape is not None and dtype is not None:
      kwargs['initial_value'] = lambda: tf.zeros(shape, tf.as_dtype(dtype))
    return next_creator(**kwargs)

  with tf.variable_creator_scope(creator):
    yield


def tff_model_fn(
    model_builder: Callable[[], tf.keras.Model],
    element_spec: Any,
    *,
    ignore_label: Optional[int] = None,
    averages_statistics: bool = False,
) -> Callable[[], tff.learning.models.VariableModel]:
  """A no-arg function building a `tff.learning` model from `model_builder`.

  Batches are `OrderedDict(x=..., y=...)`; `element_spec` is their spec.
  `averages_statistics`: the caller's process aggregates non-trainable weights
  (FedPer, FedAvg with statistics), so TFF's warning that batch-norm
  statistics "won't be updated" does not apply and is silenced.
  The Keras model's variables start at zeros (`placeholder_initial_values`):
  computations assign the weights before use.
  """

  def build() -> tff.learning.models.VariableModel:
    with placeholder_initial_values():
      keras_model = model_builder()
    return tff.learning.models.from_keras_model(
        keras_model,
        loss=loss_fn(ignore_label),
        input_spec=collections.OrderedDict(x=element_spec['x'], y=element_spec['y']),
        metrics=metrics_fn(ignore_label),
    )

  def model_fn() -> tff.learning.models.VariableModel:
    if not averages_statistics:
      return build()
    with warnings.catch_warnings():
      warnings.filterwarnings('ignore', message='Batch Normalization contains non-trainable')
      return build()

  return model_fn


def model_weights_from_keras(model: tf.keras.Model) -> tff.learning.models.ModelWeights:
  """`ModelWeights` holding the Keras model's current values as numpy arrays."""
  return tff.learning.models.ModelWeights(
      trainable=[v.numpy() for v in model.trainable_weights],
      non_trainable=[v.numpy() for v in model.non_trainable_weights],
  )


def keras_weights_order(
    model: tf.keras.Model, weights: tff.learning.models.ModelWeights
) -> list[np.ndarray]:
  """Reorders TFF (trainable, non_trainable) weights into `model.get_weights()` order."""
  by_ref = {}
  for var, value in zip(model.trainable_weights, weights.trainable):
    by_ref[var.ref()] = np.asarray(value)
  for var, value in zip(model.non_trainable_weights, weights.non_trainable):
    by_ref[var.ref()] = np.asarray(value)
  return [by_ref[v.ref()] for v in model.weights]


# ---- Keras weights as plain structures -------------------------------------
# Algorithms that run their own TFF computations on Keras models (FedGKT) carry
# a model's weights as OrderedDict(trainable=[...], non_trainable=[...]), lists
# in the model's `trainable_weights` / `non_trainable_weights` order: a fixed
# TFF type, numpy in states and checkpoints.


def weights_of(model: tf.keras.Model) -> collections.OrderedDict:
  """OrderedDict(trainable, non_trainable) of the model's current values (numpy)."""
  return collections.OrderedDict(
      trainable=[v.numpy() for v in model.trainable_weights],
      non_trainable=[v.numpy() for v in model.non_trainable_weights])


def weight_specs(model: tf.keras.Model) -> collections.OrderedDict:
  """OrderedDict(trainable, non_trainable) of the model's `tf.TensorSpec`s."""
  spec = lambda v: tf.TensorSpec(v.shape, v.dtype)
  return collections.OrderedDict(
      trainable=[spec(v) for v in model.trainable_weights],
      non_trainable=[spec(v) for v in model.non_trainable_weights])


def assign_weights(model: tf.keras.Model, weights: Mapping[str, Sequence[Any]]) -> None:
  """Assigns OrderedDict(trainable, non_trainable) values to the model's variables
  (eagerly, or as ops inside a `tf.function`)."""
  for v, w in zip(model.trainable_weights, weights['trainable']):
    v.assign(w)
  for v, w in zip(model.non_trainable_weights, weights['non_trainable']):
    v.assign(w)


def snapshot_weights(model: tf.keras.Model) -> collections.OrderedDict:
  """OrderedDict(trainable, non_trainable) of tensors copying the variables' current
  values (inside a `tf.function`: read after the ops that updated them)."""
  return collections.OrderedDict(
      trainable=[tf.identity(v) for v in model.trainable_weights],
      non_trainable=[tf.identity(v) for v in model.non_trainable_weights])


def weights_to_numpy(weights: Mapping[str, Sequence[Any]]) -> collections.OrderedDict:
  """OrderedDict(trainable, non_trainable) with every value as a numpy array
  (e.g. from a TFF computation's result)."""
  return collections.OrderedDict(
      trainable=[np.asarray(w) for w in weights['trainable']],
      non_trainable=[np.asarray(w) for w in weights['non_trainable']])


def pack_like(template: Any, value: Any) -> Any:
  """`value`'s leaves (e.g. a TFF-returned structure) in `template`'s containers."""
  return tf.nest.pack_sequence_as(template, tf.nest.flatten(value))


def num_values(specs: Sequence[tf.TensorSpec]) -> int:
  """Number of scalar values in tensors of these specs."""
  return int(sum(math.prod(s.shape) for s in specs))
