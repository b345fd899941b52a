"""Shared pieces of the model builders: the error type and input-shape checks.

Every builder in `models/` follows one naming convention, which `models.blocks`
relies on (see its docstring): a layer is named `<block>_<part>` (the block id
has no underscore, e.g. `conv1_conv`, `s2b03_bn1`, `dw07_pwconv`) or, when it
is a block by itself, just `<block>` (e.g. `fc1`, `logits`, `embed`). The final
Dense layer of every classifier is named `logits` and has no activation.
"""

from __future__ import annotations

from collections.abc import Sequence


class ModelError(ValueError):
  """A model was requested that cannot be built (unknown name, bad shape)."""


def as_shape(input_shape: Sequence[int]) -> tuple[int, ...]:
  """Returns `input_shape` as a tuple of positive Python ints (no batch dim)."""
  try:
    shape = tuple(int(d) for d in input_shape)
  except (TypeError, ValueError) as e:
    raise ModelError(
        f'input_shape must be a sequence of ints, got {input_shape!r}') from e
  if not shape or any(d <= 0 for d in shape):
    raise ModelError(
        f'input_shape must be non-empty and positive, got {input_shape!r}')
  return shape


def image_shape(model_name: str,
                input_shape: Sequence[int]) -> tuple[int, int, int]:
  """Checks that `input_shape` is (height, width, channels) and returns it."""
  shape = as_shape(input_shape)
  if len(shape) != 3:
    raise ModelError(
        f'{model_name} expects an image input_shape (height, width, channels),'
        f' got {shape}')
  return shape  # pytype: disable=bad-return-type


def check_num_classes(model_name: str, num_classes: int) -> int:
  """Checks that `num_classes` is an int >= 1 and returns it."""
  if isinstance(num_classes, bool) or int(num_classes) != num_classes or (
      num_classes < 1):
    raise ModelError(f'{model_name}: num_classes must be an int >= 1, '
                     f'got {num_classes!r}')
  return int(num_classes)
