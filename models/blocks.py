"""The block structure of FedSuite models, for FedPer's base/personal split.

FedPer (Arivazhagan et al. 2019, "Federated Learning with Personalization
Layers") federates the first blocks of a network (the base) and keeps the last
K_P blocks (the personalization layers) on each client. This module derives the
blocks from layer names alone, so it works on any model rebuilt from the same
builder and keeps no state on the model object.

Naming convention (followed by every builder in `models/`, see
`models.common`): a layer's block id is its name up to the first underscore,
`name.split('_', 1)[0]`. So 'conv1_conv', 'conv1_bn' and 'conv1_pool' form block
'conv1'; 's2b01_conv1', 's2b01_bn2', 's2b01_proj' form the ResNet BasicBlock
's2b01' with its shortcut; 'dw07_dwconv' ... 'dw07_pwbn' form the depthwise-
separable block 'dw07'; 'stem_conv' + 'stem_bn' are the stem; a name with no
underscore ('fc1', 'logits', 'embed', 'lstm2') is a block by itself, so each
Dense layer is its own block. Only layers that own weights are listed; blocks
are ordered by their first layer in `model.layers` (input to output), and a
block's weight-owning layers must be consecutive there, and weight-owning
layers with Keras default names ('dense_3') are rejected. Nested Keras models
are flattened into their layers.
"""

from __future__ import annotations

import numbers
import re

import tensorflow as tf


class BlocksError(ValueError):
  """A model's blocks cannot be derived or the requested split is invalid."""


def block_id(layer_name: str) -> str:
  """The block a layer belongs to: its name up to the first underscore."""
  return layer_name.split('_', 1)[0]


def _keras_default_name(layer: tf.keras.layers.Layer) -> bool:
  """Whether `layer.name` looks auto-generated ('dense', 'conv2d_3', ...)."""
  class_name = type(layer).__name__
  snake = re.sub('(.)([A-Z][a-z0-9]+)', r'\1_\2', class_name)
  snake = re.sub('([a-z])([A-Z])', r'\1_\2', snake).lower()
  return re.fullmatch(rf'{re.escape(snake)}(_\d+)?', layer.name) is not None


def _weighted_layers(model: tf.keras.Model) -> list[tf.keras.layers.Layer]:
  """Weight-owning leaf layers of `model` in `model.layers` order, each once."""
  result = []
  seen = set()

  def visit(layer: tf.keras.layers.Layer) -> None:
    if isinstance(layer, tf.keras.Model):
      for sub in layer.layers:
        visit(sub)
    elif layer.weights and id(layer) not in seen:
      seen.add(id(layer))
      result.append(layer)

  for layer in model.layers:
    visit(layer)
  return result


def model_blocks(model: tf.keras.Model) -> list[list[str]]:
  """The model's blocks in input -> output order.

  Args:
    model: A Keras model whose layers follow the naming convention above.

  Returns:
    A list of blocks, each the list of names of its weight-owning layers. Every
    weight-owning layer is in exactly one block.

  Raises:
    BlocksError: if a weight-owning layer has a Keras default name (e.g.
      'dense_3': not built by a FedSuite builder) or a block's layers are not
      consecutive (a name that does not follow the convention).
  """
  blocks: list[list[str]] = []
  index_of: dict[str, int] = {}
  for layer in _weighted_layers(model):
    if _keras_default_name(layer):
      raise BlocksError(
          f'{model.name}: layer {layer.name!r} has a Keras default name; '
          'blocks need explicit <block>_<part> layer names')
    key = block_id(layer.name)
    if key not in index_of:
      index_of[key] = len(blocks)
      blocks.append([])
    elif index_of[key] != len(blocks) - 1:
      raise BlocksError(
          f'{model.name}: layer {layer.name!r} of block {key!r} comes after '
          f'block {blocks[-1][0].split("_", 1)[0]!r}; layer names do not follow'
          ' the <block>_<part> convention')
    blocks[index_of[key]].append(layer.name)
  return blocks


def personal_weight_names(model: tf.keras.Model,
                          personal_blocks: int) -> frozenset[str]:
  """Names of all weights in the last `personal_blocks` blocks of `model`.

  These are FedPer's personalization layers: the weights a client keeps local.
  Both trainable and non-trainable weights are included (e.g. BatchNorm moving
  mean/variance), as `variable.name` (e.g. 'logits/kernel:0').

  Args:
    model: A Keras model following the naming convention above.
    personal_blocks: K_P, the number of trailing blocks to personalize;
      0 <= K_P <= len(model_blocks(model)).

  Returns:
    A frozenset of variable names; empty for K_P = 0.

  Raises:
    BlocksError: if K_P is not an int in the allowed range.
  """
  blocks = model_blocks(model)
  if (isinstance(personal_blocks, bool) or
      not isinstance(personal_blocks, numbers.Integral) or
      not 0 <= personal_blocks <= len(blocks)):
    raise BlocksError(
        f'{model.name}: personal_blocks={personal_blocks!r} is out of range;'
        f' allowed 0..{len(blocks)} (the model has {len(blocks)} blocks)')
  if personal_blocks == 0:
    return frozenset()
  names = {name for block in blocks[-int(personal_blocks):] for name in block}
  return frozenset(
      weight.name
      for layer in _weighted_layers(model) if layer.name in names
      for weight in layer.weights)
