"""Residual networks: ResNet-34 for FedPer and the CIFAR ResNets for FedGKT.

* `resnet34`: ResNet-34 (He et al. 2016, "Deep Residual Learning for Image
  Recognition", Table 1) with the usual CIFAR stem (3x3 conv 64, stride 1, no
  max-pool), used by FedPer (Arivazhagan et al. 2019) on 32x32 inputs. Its
  shape-changing shortcuts are 1x1 projections + BN ("option B").
* `cifar_resnet`, `resnet56`, `resnet110`: the CIFAR ResNets of He et al. 2016,
  Sec. 4.2: a 3x3 conv to 16 channels, three stages of n blocks at 16/32/64
  channels on 32/16/8 maps (first block of stages 2 and 3 has stride 2), global
  average pooling, Dense. With BasicBlocks (two 3x3 convs) depth = 6n + 2 and
  the shape-changing shortcuts are parameter-free zero-padding ("option A"):
  ResNet-56 has 0.85M and ResNet-110 1.7M trainable parameters, as in the
  paper's Table 6. FedGKT (He, Annavaram & Avestimehr 2020) trains these as the
  FedAvg baselines and splits them for its server models (`models.gkt`).
* `block='bottleneck'` builds instead the variant of FedML's CIFAR ResNet code,
  which FedGKT's released implementation uses: torchvision-style Bottleneck
  blocks (1x1, 3x3 with the stride, 1x1 with 4x expansion, projection shortcuts)
  with depth = 9n + 2, i.e. 64/128/256 output channels. Its counts reproduce the
  ratios FedGKT reports (see `models.gkt`).

Every block is named `s<stage>b<NN>` (e.g. `s2b01_conv1`, `s2b01_bn1`,
`s2b01_pad`); the stem is `stem_*`; the head is `gap` + `logits`. BN uses
PyTorch's defaults (momentum 0.9 in Keras terms, epsilon 1e-5); convolutions
have no bias and He-normal initialization.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import tensorflow as tf

from models import common
from models import layers as fs_layers

layers = tf.keras.layers

BLOCK_TYPES = ('basic', 'bottleneck')
CIFAR_WIDTHS = (16, 32, 64)
_BOTTLENECK_EXPANSION = 4

# name -> layer; lets one graph-building function build two graphs that share
# their layers (see `_make`).
LayerBank = dict[str, tf.keras.layers.Layer]


def _make(bank: LayerBank | None, name: str,
          build: Callable[[], layers.Layer]) -> layers.Layer:
  """Returns `bank[name]`, building it first; without a bank, a new layer.

  Calling a graph-building function twice with the same bank applies the same
  layer objects (shared weights) to two inputs, e.g. the FedGKT edge classifier
  on its own `features` input and inside the full edge model (`models.gkt`).
  """
  if bank is None:
    return build()
  if name not in bank:
    bank[name] = build()
  return bank[name]


def _conv(filters: int, kernel: int, strides: int, name: str,
          bank: LayerBank | None = None) -> layers.Layer:
  return _make(bank, name, lambda: layers.Conv2D(
      filters, kernel, strides=strides, padding='same', use_bias=False,
      kernel_initializer='he_normal', name=name))


def _bn(name: str, bank: LayerBank | None = None) -> layers.Layer:
  return _make(bank, name, lambda: layers.BatchNormalization(
      momentum=0.9, epsilon=1e-5, name=name))


def _plain(cls: type[layers.Layer], name: str, bank: LayerBank | None,
           **kwargs) -> layers.Layer:
  return _make(bank, name, lambda: cls(name=name, **kwargs))


def stem(x: tf.Tensor, filters: int) -> tf.Tensor:
  """The CIFAR stem: 3x3 conv (stride 1) + BN + ReLU, block 'stem'."""
  x = _conv(filters, 3, 1, 'stem_conv')(x)
  x = _bn('stem_bn')(x)
  return layers.ReLU(name='stem_relu')(x)


def basic_block(x: tf.Tensor,
                filters: int,
                strides: int,
                block: str,
                *,
                shortcut: str,
                bank: LayerBank | None = None) -> tf.Tensor:
  """A ResNet BasicBlock: two 3x3 conv + BN, identity/A/B shortcut, add, ReLU.

  Args:
    x: Input feature map (NHWC).
    filters: Output channels of both convolutions.
    strides: Stride of the first convolution (and of the shortcut).
    block: Block name prefix, e.g. 's2b01'.
    shortcut: 'A' (zero-pad, no parameters) or 'B' (1x1 conv + BN) for a
      shortcut that changes shape; an unchanged shape always uses identity.
    bank: Optional layer bank for weight sharing (see `_make`).

  Returns:
    The block's output feature map.
  """
  in_channels = x.shape[-1]
  y = _conv(filters, 3, strides, f'{block}_conv1', bank)(x)
  y = _bn(f'{block}_bn1', bank)(y)
  y = _plain(layers.ReLU, f'{block}_relu1', bank)(y)
  y = _conv(filters, 3, 1, f'{block}_conv2', bank)(y)
  y = _bn(f'{block}_bn2', bank)(y)
  if strides != 1 or in_channels != filters:
    if shortcut == 'A':
      x = _make(bank, f'{block}_pad', lambda: fs_layers.ZeroPadShortcut(
          filters, strides, name=f'{block}_pad'))(x)
    elif shortcut == 'B':
      x = _conv(filters, 1, strides, f'{block}_proj', bank)(x)
      x = _bn(f'{block}_projbn', bank)(x)
    else:
      raise ValueError(f'unknown shortcut {shortcut!r}')
  y = _plain(layers.Add, f'{block}_add', bank)([y, x])
  return _plain(layers.ReLU, f'{block}_out', bank)(y)


def bottleneck_block(x: tf.Tensor,
                     planes: int,
                     strides: int,
                     block: str,
                     *,
                     bank: LayerBank | None = None) -> tf.Tensor:
  """A torchvision (v1.5) Bottleneck: 1x1, 3x3 (strided), 1x1 x4, + shortcut.

  Args:
    x: Input feature map (NHWC).
    planes: Width of the 1x1 and 3x3 convolutions; the output has 4*planes.
    strides: Stride of the 3x3 convolution (and of the projection shortcut).
    block: Block name prefix, e.g. 's2b01'.
    bank: Optional layer bank for weight sharing (see `_make`).

  Returns:
    The block's output feature map.
  """
  out_channels = planes * _BOTTLENECK_EXPANSION
  in_channels = x.shape[-1]
  y = _conv(planes, 1, 1, f'{block}_conv1', bank)(x)
  y = _bn(f'{block}_bn1', bank)(y)
  y = _plain(layers.ReLU, f'{block}_relu1', bank)(y)
  y = _conv(planes, 3, strides, f'{block}_conv2', bank)(y)
  y = _bn(f'{block}_bn2', bank)(y)
  y = _plain(layers.ReLU, f'{block}_relu2', bank)(y)
  y = _conv(out_channels, 1, 1, f'{block}_conv3', bank)(y)
  y = _bn(f'{block}_bn3', bank)(y)
  if strides != 1 or in_channels != out_channels:
    x = _conv(out_channels, 1, strides, f'{block}_proj', bank)(x)
    x = _bn(f'{block}_projbn', bank)(x)
  y = _plain(layers.Add, f'{block}_add', bank)([y, x])
  return _plain(layers.ReLU, f'{block}_out', bank)(y)


def stage(x: tf.Tensor,
          *,
          stage_index: int,
          block_type: str,
          width: int,
          num_blocks: int,
          strides: int,
          shortcut: str = 'A',
          bank: LayerBank | None = None) -> tf.Tensor:
  """`num_blocks` residual blocks named s<stage_index>b01, b02, ...

  Args:
    x: Input feature map.
    stage_index: 1-based stage number used in the names.
    block_type: 'basic' or 'bottleneck'.
    width: BasicBlock filters, or Bottleneck planes (output 4*width).
    num_blocks: Number of blocks in the stage.
    strides: Stride of the stage's first block.
    shortcut: BasicBlock shortcut type for shape changes ('A' or 'B').
    bank: Optional layer bank for weight sharing (see `_make`).

  Returns:
    The stage's output feature map.
  """
  check_block_type(block_type)
  for i in range(num_blocks):
    block = f's{stage_index}b{i + 1:02d}'
    block_strides = strides if i == 0 else 1
    if block_type == 'basic':
      x = basic_block(x, width, block_strides, block, shortcut=shortcut,
                      bank=bank)
    else:
      x = bottleneck_block(x, width, block_strides, block, bank=bank)
  return x


def head(x: tf.Tensor,
         num_classes: int,
         *,
         bank: LayerBank | None = None) -> tf.Tensor:
  """Global average pooling ('gap') and the Dense 'logits' layer."""
  x = _plain(layers.GlobalAveragePooling2D, 'gap', bank)(x)
  return _make(bank, 'logits', lambda: layers.Dense(num_classes,
                                                    name='logits'))(x)


def check_block_type(block_type: str) -> str:
  """Raises ModelError unless `block_type` is 'basic' or 'bottleneck'."""
  if block_type not in BLOCK_TYPES:
    raise common.ModelError(
        f'unknown block type {block_type!r}; allowed: {", ".join(BLOCK_TYPES)}')
  return block_type


def cifar_blocks_per_stage(depth: int, block_type: str) -> int:
  """Blocks per stage of the CIFAR ResNet of `depth` (6n+2 or 9n+2 layers)."""
  check_block_type(block_type)
  layers_per_block = 2 if block_type == 'basic' else 3
  per_stage = 3 * layers_per_block
  if depth < per_stage + 2 or (depth - 2) % per_stage:
    raise common.ModelError(
        f'a CIFAR ResNet with {block_type} blocks needs depth = '
        f'{per_stage}n + 2 (n >= 1), got {depth}')
  return (depth - 2) // per_stage


def cifar_stages(x: tf.Tensor, *, depth: int, block_type: str) -> tf.Tensor:
  """The three stages (16/32/64 wide, strides 1/2/2) of a CIFAR ResNet."""
  n = cifar_blocks_per_stage(depth, block_type)
  for index, (width, strides) in enumerate(zip(CIFAR_WIDTHS, (1, 2, 2)),
                                           start=1):
    x = stage(x, stage_index=index, block_type=block_type, width=width,
              num_blocks=n, strides=strides, shortcut='A')
  return x


def cifar_resnet(input_shape: Sequence[int],
                 num_classes: int,
                 *,
                 depth: int,
                 block: str = 'basic') -> tf.keras.Model:
  """A CIFAR ResNet of He et al. 2016 (Sec. 4.2) of the given depth.

  Args:
    input_shape: (height, width, channels), e.g. (32, 32, 3).
    num_classes: Number of output logits.
    depth: 6n+2 for 'basic' (20, 32, 44, 56, 110, ...), 9n+2 for 'bottleneck'
      (56, 110, ...).
    block: 'basic' (the paper's model, option-A shortcuts) or 'bottleneck'
      (FedML's variant used by FedGKT's code).

  Returns:
    An uncompiled `tf.keras.Model` named 'resnet<depth>'. Blocks: stem,
    s1b01.., s2b01.., s3b01.., logits.
  """
  name = f'resnet{depth}'
  shape = common.image_shape(name, input_shape)
  num_classes = common.check_num_classes(name, num_classes)
  cifar_blocks_per_stage(depth, block)
  inputs = tf.keras.Input(shape, name='input')
  x = stem(inputs, CIFAR_WIDTHS[0])
  x = cifar_stages(x, depth=depth, block_type=block)
  return tf.keras.Model(inputs, head(x, num_classes), name=name)


def resnet56(input_shape: Sequence[int],
             num_classes: int,
             *,
             block: str = 'basic') -> tf.keras.Model:
  """ResNet-56 for CIFAR (He et al. 2016), FedGKT's FedAvg baseline.

  With block='basic' (9 BasicBlocks per stage, option-A shortcuts), on
  (32, 32, 3) with 10 classes: 857,082 parameters = 853,018 trainable + 4,064 BN
  moving statistics (2,032 BN channels: 16 + 18*16 + 18*32 + 18*64). Trainable:
  stem 432 + 32; stage 1: 18 convs 3x3 16->16 (41,472) + 18 BN (576);
  stage 2: 4,608 + 17*9,216 + 18*64 BN; stage 3: 18,432 + 17*36,864 + 18*128 BN;
  logits 64*10 + 10 = 650.
  With block='bottleneck' (6 Bottlenecks per stage): 600,314 parameters
  (591,322 trainable).

  Args:
    input_shape: (height, width, channels), e.g. (32, 32, 3).
    num_classes: Number of output logits.
    block: 'basic' or 'bottleneck' (see `cifar_resnet`).

  Returns:
    An uncompiled `tf.keras.Model` named 'resnet56'.
  """
  return cifar_resnet(input_shape, num_classes, depth=56, block=block)


def resnet110(input_shape: Sequence[int],
              num_classes: int,
              *,
              block: str = 'basic') -> tf.keras.Model:
  """ResNet-110 for CIFAR (He et al. 2016), FedGKT's larger FedAvg baseline.

  With block='basic' (18 BasicBlocks per stage), on (32, 32, 3) with 10
  classes: 1,736,058 parameters = 1,727,962 trainable + 8,096 BN moving
  statistics (4,048 BN channels). With block='bottleneck' (12 Bottlenecks per
  stage): 1,164,794 (1,147,738 trainable).

  Args:
    input_shape: (height, width, channels), e.g. (32, 32, 3).
    num_classes: Number of output logits.
    block: 'basic' or 'bottleneck' (see `cifar_resnet`).

  Returns:
    An uncompiled `tf.keras.Model` named 'resnet110'.
  """
  return cifar_resnet(input_shape, num_classes, depth=110, block=block)


RESNET34_STAGES: tuple[tuple[int, int], ...] = ((64, 3), (128, 4), (256, 6),
                                                (512, 3))


def resnet34(input_shape: Sequence[int], num_classes: int) -> tf.keras.Model:
  """ResNet-34 with a CIFAR stem, for FedPer on 32x32 inputs.

  Stem: Conv 3x3x64 stride 1 + BN + ReLU (no max-pool); 16 BasicBlocks in
  stages of [3, 4, 6, 3] blocks, widths [64, 128, 256, 512], the first block
  of stages 2-4 with stride 2 and a 1x1-conv + BN projection shortcut; global
  average pooling; Dense logits. On (32, 32, 3) with 10 classes: 21,299,146
  parameters = 21,282,122 trainable (the usual "21.3M" of the CIFAR ResNet-34)
  + 17,024 BN moving statistics (8,512 BN channels).

  Args:
    input_shape: (height, width, channels), e.g. (32, 32, 3).
    num_classes: Number of output logits.

  Returns:
    An uncompiled `tf.keras.Model` named 'resnet34'. Blocks: stem, s1b01..s1b03,
    s2b01..s2b04, s3b01..s3b06, s4b01..s4b03, logits.
  """
  shape = common.image_shape('resnet34', input_shape)
  num_classes = common.check_num_classes('resnet34', num_classes)
  inputs = tf.keras.Input(shape, name='input')
  x = stem(inputs, 64)
  for index, (width, num_blocks) in enumerate(RESNET34_STAGES, start=1):
    x = stage(x, stage_index=index, block_type='basic', width=width,
              num_blocks=num_blocks, strides=1 if index == 1 else 2,
              shortcut='B')
  return tf.keras.Model(inputs, head(x, num_classes), name='resnet34')
