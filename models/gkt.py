"""The FedGKT edge and server models (He, Annavaram & Avestimehr, NeurIPS 2020).

"Group Knowledge Transfer: Federated Learning of Large CNNs at the Edge" splits
a CIFAR ResNet between a small edge model and a large server model:

* Edge, "ResNet-8": a feature extractor x -> H and a small classifier H ->
  logits, trained on the client; the client uploads H (plus its logits) and the
  server distills from/into them.
  - extractor: Conv 3x3x16 (stride 1, no bias) + BN + ReLU, so H is the
    (h, w, 16) map of an h x w image (block 'stem'): (32, 32, 16) in the paper,
    (24, 24, 16) on FedSuite's CIFAR pipeline (the FedAvg paper's 24x24 crops),
    (28, 28, 16) on MNIST;
  - classifier, block='basic' (default): 3 BasicBlocks at 16 channels, stride 1
    (s1b01..s1b03: 6 conv 3x3x16 + BN, identity shortcuts), global average
    pool, Dense logits. Layers with weights: 1 + 6 + 1 = 8, hence "ResNet-8".
  - classifier, block='bottleneck': 2 Bottlenecks with 16 planes (1x1x16,
    3x3x16, 1x1x64; the first with a 1x1x64 projection shortcut), GAP, Dense:
    1 + 2*3 + 1 = 8 layers. This is `resnet8_56` of FedGKT's released code
    (FedML `resnet_gkt`), whose counts give the paper's ratios.
* Server, "ResNet-55"/"ResNet-109": ResNet-56/110 (`models.resnet`) without
  their stem: input = H (H, W, 16), three stages at 16/32/64 channels
  (x4 for bottleneck), GAP, Dense. Same layer names as the full ResNet-56/110,
  so server weights can be matched by name with the FedAvg baseline's.

Paper claim: compared with FedAvg training ResNet-56/110 on the edge, the
ResNet-8 edge needs 9-17x fewer FLOPs and 54-105x fewer parameters. On CIFAR-10
(32x32x3, 10 classes), with `models.flops` conventions:

  block         edge params  R56/edge  R110/edge   FLOPs R56/edge  R110/edge
  bottleneck    11,130       53.9x     104.7x      9.07x           17.41x
  basic         14,874       57.6x     116.7x      8.60x           17.32x

(parameters counted with BN moving statistics; trainable-only: 55.9x/108.4x and
58.2x/117.9x). FedGKT's released code ('bottleneck') reproduces the paper's
54x-105x and 9x-17x exactly; the He et al. BasicBlock models are close.
Asserted in tests/models/test_flops.py.
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

from models import common
from models import resnet

GKT_FEATURE_CHANNELS = 16
_EDGE_BLOCKS = {'basic': 3, 'bottleneck': 2}
SERVER_DEPTHS = (55, 109)


def _edge_classifier(features: tf.Tensor, num_classes: int, block: str,
                     bank: resnet.LayerBank) -> tf.Tensor:
  x = resnet.stage(features, stage_index=1, block_type=block,
                   width=GKT_FEATURE_CHANNELS, num_blocks=_EDGE_BLOCKS[block],
                   strides=1, bank=bank)
  return resnet.head(x, num_classes, bank=bank)


def build_gkt_edge(
    input_shape: Sequence[int],
    num_classes: int,
    *,
    block: str = 'basic',
) -> tuple[tf.keras.Model, tf.keras.Model, tf.keras.Model]:
  """Builds FedGKT's ResNet-8 edge model as (extractor, classifier, full).

  The three models share their layer objects (hence weights): `full` is the
  flat composition x -> stem -> classifier layers -> logits, `extractor` is its
  x -> H prefix, and `classifier` applies the same classifier layers to its own
  `features` input. Training `full` updates `extractor` and `classifier`.

  On (32, 32, 3) with 10 classes: block='basic' has 14,874 parameters (14,650
  trainable): stem 432 + 4*16, 3 x (2*2,304 + 2*4*16), logits 16*10 + 10;
  block='bottleneck' has 11,130 (10,586 trainable).

  Args:
    input_shape: Image shape (height, width, channels), e.g. (32, 32, 3).
    num_classes: Number of output logits.
    block: 'basic' (He et al. BasicBlocks, default) or 'bottleneck' (FedGKT's
      released code).

  Returns:
    (extractor x -> H of shape (height, width, 16), classifier H -> logits,
    full x -> logits), uncompiled, named 'gkt_edge_extractor',
    'gkt_edge_classifier' and 'resnet8'.
  """
  shape = common.image_shape('resnet8', input_shape)
  num_classes = common.check_num_classes('resnet8', num_classes)
  resnet.check_block_type(block)
  inputs = tf.keras.Input(shape, name='input')
  features = resnet.stem(inputs, GKT_FEATURE_CHANNELS)
  extractor = tf.keras.Model(inputs, features, name='gkt_edge_extractor')
  bank: resnet.LayerBank = {}
  feature_input = tf.keras.Input(features.shape[1:], name='features')
  classifier = tf.keras.Model(
      feature_input,
      _edge_classifier(feature_input, num_classes, block, bank),
      name='gkt_edge_classifier')
  full = tf.keras.Model(
      inputs, _edge_classifier(features, num_classes, block, bank),
      name='resnet8')
  return extractor, classifier, full


def build_gkt_server(feature_shape: Sequence[int],
                     num_classes: int,
                     *,
                     depth: int = 55,
                     block: str = 'basic') -> tf.keras.Model:
  """Builds FedGKT's server model: ResNet-(depth+1) without its stem.

  On features (32, 32, 16) with 10 classes: depth=55 has 856,586 parameters
  (ResNet-56's 857,082 minus the stem's 432 + 4*16) with block='basic',
  599,818 with 'bottleneck'; depth=109 has 1,735,562 ('basic') or 1,164,298
  ('bottleneck').

  Args:
    feature_shape: Shape of the edge features H: (height, width, 16).
    num_classes: Number of output logits.
    depth: 55 or 109 (ResNet-56 / ResNet-110 minus the first conv layer).
    block: 'basic' or 'bottleneck', as for the edge model.

  Returns:
    An uncompiled `tf.keras.Model` named 'resnet<depth>_server' with input
    'features'. Blocks: s1b01.., s2b01.., s3b01.., logits.
  """
  name = f'resnet{depth}_server'
  if depth not in SERVER_DEPTHS:
    raise common.ModelError(
        f'build_gkt_server: depth must be one of {SERVER_DEPTHS}, got {depth}')
  shape = common.image_shape(name, feature_shape)
  num_classes = common.check_num_classes(name, num_classes)
  if shape[-1] != GKT_FEATURE_CHANNELS:
    raise common.ModelError(
        f'{name} expects {GKT_FEATURE_CHANNELS}-channel edge features, got'
        f' shape {shape}')
  features = tf.keras.Input(shape, name='features')
  x = resnet.cifar_stages(features, depth=depth + 1, block_type=block)
  return tf.keras.Model(features, resnet.head(x, num_classes), name=name)


def resnet8_edge(input_shape: Sequence[int],
                 num_classes: int,
                 *,
                 block: str = 'basic') -> tf.keras.Model:
  """The full FedGKT edge model x -> logits (`build_gkt_edge(...)[2]`)."""
  return build_gkt_edge(input_shape, num_classes, block=block)[2]


def resnet55_server(feature_shape: Sequence[int],
                    num_classes: int,
                    *,
                    block: str = 'basic') -> tf.keras.Model:
  """FedGKT's ResNet-55 server model on (H, W, 16) features."""
  return build_gkt_server(feature_shape, num_classes, depth=55, block=block)


def resnet109_server(feature_shape: Sequence[int],
                     num_classes: int,
                     *,
                     block: str = 'basic') -> tf.keras.Model:
  """FedGKT's ResNet-109 server model on (H, W, 16) features."""
  return build_gkt_server(feature_shape, num_classes, depth=109, block=block)
