"""Shared fixtures for tests/models: each model is built at most once a session.

Building the big ResNets takes seconds on the 2-core CI machine, so tests get
models through the session-scoped `build` and `natural` fixtures, which cache
by (name, input_shape, num_classes, options). Tests must not train or
otherwise mutate cached models.
"""

from __future__ import annotations

import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

# pylint: disable=g-import-not-at-top,g-bad-import-order,redefined-outer-name
from collections.abc import Callable
from typing import Any

import pytest
import tensorflow as tf

from models import registry

# Natural (input_shape, num_classes) of every registered model.
NATURAL_SHAPES: dict[str, tuple[tuple[int, ...], int]] = {
    'mnist_2nn': ((28, 28, 1), 10),
    'mnist_cnn': ((28, 28, 1), 10),
    'keras_mnist_cnn': ((28, 28, 1), 10),
    'keras_mnist_cnn_dropout': ((28, 28, 1), 10),
    'cifar_cnn': ((24, 24, 3), 10),
    'tiny_mlp': ((8, 8, 1), 10),
    'tiny_cnn': ((8, 8, 1), 10),
    'char_lstm': ((80,), 90),
    'cnn_fedper': ((32, 32, 3), 10),
    'mobilenet_v1': ((32, 32, 3), 10),
    'resnet34': ((32, 32, 3), 10),
    'resnet56': ((32, 32, 3), 10),
    'resnet110': ((32, 32, 3), 10),
    'resnet8': ((32, 32, 3), 10),
    'resnet8_edge': ((32, 32, 3), 10),
    'resnet55_server': ((32, 32, 16), 10),
    'resnet109_server': ((32, 32, 16), 10),
}
# Registered aliases share the build of their target.
_ALIASES = {'resnet8_edge': 'resnet8'}


@pytest.fixture(scope='session')
def build() -> Callable[..., tf.keras.Model]:
  """Returns `build(name, input_shape, num_classes=10, **options)`, cached."""
  cache: dict[Any, tf.keras.Model] = {}

  def get(name: str, input_shape, num_classes: int = 10,
          **options: Any) -> tf.keras.Model:
    name = _ALIASES.get(name, name)
    # Spell out defaulted options so that e.g. block='basic' and no block
    # share one build.
    options = {**(registry.MODELS[name].__kwdefaults__ or {}), **options}
    key = (name, tuple(input_shape), num_classes,
           tuple(sorted(options.items())))
    if key not in cache:
      tf.keras.utils.set_random_seed(0)
      cache[key] = registry.build_model(name, input_shape, num_classes,
                                        **options)
    return cache[key]

  return get


@pytest.fixture(scope='session')
def natural(build) -> Callable[[str], tf.keras.Model]:
  """Returns `natural(name)`: the cached model `name` on its natural shape."""

  def get(name: str) -> tf.keras.Model:
    input_shape, num_classes = NATURAL_SHAPES[name]
    return build(name, input_shape, num_classes)

  return get


@pytest.fixture(scope='session')
def natural_shapes() -> dict[str, tuple[tuple[int, ...], int]]:
  """The natural (input_shape, num_classes) of every registered model."""
  return dict(NATURAL_SHAPES)
