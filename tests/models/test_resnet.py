"""Tests for models.resnet and models.gkt: sizes, depths, splits, sharing."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from models import blocks
from models import common
from models import gkt
from models import layers as fs_layers
from models import resnet

CIFAR = (32, 32, 3)
FEATURES = (32, 32, 16)


def _trainable(model: tf.keras.Model) -> int:
  return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def _depth(model: tf.keras.Model) -> int:
  """Weight layers on the main path: conv + dense, without projections."""
  return sum(
      1 for l in model.layers
      if isinstance(l, (tf.keras.layers.Conv2D, tf.keras.layers.Dense)) and
      not l.name.endswith('_proj'))


@pytest.mark.parametrize('name, input_shape, block, total, trainable', [
    # BasicBlock models (He et al. 2016, option A shortcuts, no projections).
    # ResNet-56 trainable: stem 432+32; stage 1: 18*2,304 + 18*32; stage 2:
    # 4,608 + 17*9,216 + 18*64; stage 3: 18,432 + 17*36,864 + 18*128;
    # logits 650 -> 853,018. BN channels 16 + 18*(16+32+64) = 2,032, each
    # with 2 moving statistics -> +4,064.
    ('resnet56', CIFAR, 'basic', 857_082, 853_018),
    # ResNet-110: 464 + (36*2,304 + 36*32) + (4,608 + 35*9,216 + 36*64)
    # + (18,432 + 35*36,864 + 36*128) + 650 = 1,727,962; BN channels 4,048.
    ('resnet110', CIFAR, 'basic', 1_736_058, 1_727_962),
    # ResNet-8 edge: stem 432 + 4*16; 3 blocks of 2*(2,304 + 4*16); 170.
    ('resnet8', CIFAR, 'basic', 14_874, 14_650),
    # Servers: the full model minus the stem (432 + 4*16 = 496).
    ('resnet55_server', FEATURES, 'basic', 857_082 - 496, 853_018 - 464),
    ('resnet109_server', FEATURES, 'basic', 1_736_058 - 496, 1_727_962 - 464),
    # Bottleneck variants (FedGKT's code). Edge: stem 464; block 1: 256 +
    # 2,304 + 1,024 + 1,024 (proj) + BN 2*(16+16+64+64); block 2: 1,024 +
    # 2,304 + 1,024 + BN 2*(16+16+64); logits 64*10+10 -> 10,586 trainable.
    ('resnet8', CIFAR, 'bottleneck', 11_130, 10_586),
    # ResNet-56: stem 464; stage 1: 4,928 + 5*4,544; stage 2: 24,192 +
    # 5*17,792; stage 3: 95,488 + 5*70,400; logits 256*10+10 -> 591,322.
    ('resnet56', CIFAR, 'bottleneck', 600_314, 591_322),
    # ResNet-110: 464 + (4,928 + 11*4,544) + (24,192 + 11*17,792)
    # + (95,488 + 11*70,400) + 2,570 = 1,147,738.
    ('resnet110', CIFAR, 'bottleneck', 1_164_794, 1_147_738),
])
def test_cifar_resnet_counts(build, name, input_shape, block, total,
                             trainable):
  model = build(name, input_shape, block=block)
  assert model.count_params() == total
  assert _trainable(model) == trainable
  assert model.output_shape == (None, 10)


@pytest.mark.parametrize('name, block, depth', [
    ('resnet8', 'basic', 8),
    ('resnet56', 'basic', 56),
    ('resnet110', 'basic', 110),
    ('resnet8', 'bottleneck', 8),
    ('resnet56', 'bottleneck', 56),
    ('resnet110', 'bottleneck', 110),
])
def test_depth_is_the_name(build, name, block, depth):
  assert _depth(build(name, CIFAR, block=block)) == depth


def test_resnet56_structure(build):
  model = build('resnet56', CIFAR)
  names = [b[0].split('_')[0] for b in blocks.model_blocks(model)]
  assert names == (['stem'] + [f's{s}b{i:02d}' for s in (1, 2, 3)
                               for i in range(1, 10)] + ['logits'])
  assert isinstance(model.get_layer('s2b01_pad'), fs_layers.ZeroPadShortcut)
  assert model.get_layer('s1b09_out').output_shape == (None, 32, 32, 16)
  assert model.get_layer('s2b01_out').output_shape == (None, 16, 16, 32)
  assert model.get_layer('s3b09_out').output_shape == (None, 8, 8, 64)


def test_resnet34(build):
  model = build('resnet34', CIFAR)
  # Trainable 21,282,122 (the CIFAR ResNet-34's usual count); BN channels
  # 64 + 2*(3*64 + 4*128 + 6*256 + 3*512) + 128 + 256 + 512 = 8,512.
  assert model.count_params() == 21_299_146
  assert _trainable(model) == 21_282_122
  assert _depth(model) == 34
  block_names = [b[0].split('_')[0] for b in blocks.model_blocks(model)]
  assert len(block_names) == 1 + 16 + 1
  projections = sorted(l.name for l in model.layers if l.name.endswith('_proj'))
  assert projections == ['s2b01_proj', 's3b01_proj', 's4b01_proj']
  assert model.get_layer('stem_relu').output_shape == (None, 32, 32, 64)
  assert model.get_layer('s4b03_out').output_shape == (None, 4, 4, 512)


def test_server_is_full_model_minus_stem(build):
  full = build('resnet56', CIFAR)
  server = build('resnet55_server', FEATURES)
  stem = {w.name for w in full.weights if w.name.startswith('stem_')}
  assert {w.name for w in full.weights} - stem == {
      w.name for w in server.weights}
  assert server.input_shape == (None, 32, 32, 16)


def test_gkt_edge_split_shares_weights(build):
  tf.keras.utils.set_random_seed(0)
  extractor, classifier, full = gkt.build_gkt_edge(CIFAR, 10)
  assert extractor.output_shape == (None, 32, 32, 16)
  assert classifier.input_shape == (None, 32, 32, 16)
  assert [l.name for l in classifier.layers][0] == 'features'
  assert {id(w) for w in full.weights} == (
      {id(w) for w in extractor.weights} | {id(w) for w in classifier.weights})
  assert full.count_params() == (
      extractor.count_params() + classifier.count_params())
  x = np.random.RandomState(0).rand(2, *CIFAR).astype(np.float32)
  np.testing.assert_allclose(
      classifier(extractor(x)).numpy(), full(x).numpy(), rtol=1e-5, atol=1e-6)
  server = build('resnet55_server', FEATURES)
  assert server(extractor(x)).shape == (2, 10)
  assert [b[0] for b in blocks.model_blocks(full)] == [
      'stem_conv', 's1b01_conv1', 's1b02_conv1', 's1b03_conv1', 'logits'
  ]


def test_gkt_full_edge_model_round_trips(tmp_path):
  _, _, full = gkt.build_gkt_edge((8, 8, 3), 4)
  x = np.random.RandomState(1).rand(1, 8, 8, 3).astype(np.float32)
  path = str(tmp_path / 'edge.keras')
  full.save(path)
  np.testing.assert_allclose(
      tf.keras.models.load_model(path)(x).numpy(), full(x).numpy(), atol=1e-6)


def test_zero_pad_shortcut_round_trips(tmp_path):
  model = resnet.cifar_resnet((8, 8, 3), 4, depth=8)  # Stages 2, 3 pad.
  x = np.random.RandomState(2).rand(1, 8, 8, 3).astype(np.float32)
  path = str(tmp_path / 'resnet8_he.keras')
  model.save(path)
  loaded = tf.keras.models.load_model(path)
  assert isinstance(loaded.get_layer('s3b01_pad'), fs_layers.ZeroPadShortcut)
  np.testing.assert_allclose(loaded(x).numpy(), model(x).numpy(), atol=1e-6)


def test_zero_pad_shortcut_values():
  layer = fs_layers.ZeroPadShortcut(out_channels=4, strides=2)
  x = np.arange(16, dtype=np.float32).reshape(1, 2, 2, 4)[..., :2]
  y = layer(x).numpy()
  assert y.shape == (1, 1, 1, 4)
  np.testing.assert_array_equal(y[0, 0, 0], [0.0, x[0, 0, 0, 0], x[0, 0, 0, 1],
                                             0.0])


def test_edge_deterministic_under_seed():
  tf.keras.utils.set_random_seed(5)
  first = gkt.resnet8_edge(CIFAR, 10).get_weights()
  tf.keras.utils.set_random_seed(5)
  second = gkt.resnet8_edge(CIFAR, 10).get_weights()
  for a, b in zip(first, second, strict=True):
    np.testing.assert_array_equal(a, b)
  tf.keras.utils.set_random_seed(6)
  assert not np.array_equal(first[0], gkt.resnet8_edge(CIFAR, 10).get_weights()[0])


@pytest.mark.parametrize('call', [
    lambda: resnet.cifar_resnet(CIFAR, 10, depth=57),
    lambda: resnet.cifar_resnet(CIFAR, 10, depth=56, block='wide'),
    lambda: gkt.build_gkt_server(FEATURES, 10, depth=56),
    lambda: gkt.build_gkt_server((32, 32, 3), 10),
    lambda: gkt.build_gkt_edge((32, 32), 10),
])
def test_invalid_configurations_raise(call):
  with pytest.raises(common.ModelError):
    call()


if __name__ == '__main__':
  raise SystemExit(pytest.main([__file__, '-q', '-p', 'no:cacheprovider']))
