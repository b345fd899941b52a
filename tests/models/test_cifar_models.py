"""Tests for models.cifar_models, models.mobilenet and the LRN layer."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from models import blocks
from models import cifar_models
from models import common
from models import layers as fs_layers
from models import mobilenet


def _trainable(model: tf.keras.Model) -> int:
  return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def test_cifar_cnn_exact_count_and_shapes(build):
  model = build('cifar_cnn', (24, 24, 3))
  # conv1 5*5*3*64+64 = 4,864; conv2 5*5*64*64+64 = 102,464;
  # maps 24 -> 12 -> 6 ('same' 3x3/2 pools); fc1 6*6*64*384+384 = 885,120;
  # fc2 384*192+192 = 73,920; logits 192*10+10 = 1,930. Total 1,068,298.
  assert model.count_params() == 1_068_298
  assert model.get_layer('conv1_pool').output_shape == (None, 12, 12, 64)
  assert model.get_layer('conv2_pool').output_shape == (None, 6, 6, 64)
  assert model.output_shape == (None, 10)
  lrn = model.get_layer('conv1_lrn')
  assert isinstance(lrn, fs_layers.LocalResponseNormalization)
  assert (lrn.depth_radius, lrn.bias, lrn.alpha, lrn.beta) == (4, 1.0,
                                                               0.001 / 9.0,
                                                               0.75)


def test_lrn_matches_formula():
  layer = fs_layers.LocalResponseNormalization(depth_radius=1, bias=2.0,
                                               alpha=0.5, beta=0.75)
  x = np.arange(1.0, 5.0, dtype=np.float32).reshape(1, 1, 1, 4)
  v = x[0, 0, 0]
  sq = v**2
  window = np.array([sq[0] + sq[1], sq[0] + sq[1] + sq[2],
                     sq[1] + sq[2] + sq[3], sq[2] + sq[3]])
  expected = v / (2.0 + 0.5 * window)**0.75
  np.testing.assert_allclose(layer(x).numpy()[0, 0, 0], expected, rtol=1e-6)


def test_lrn_config_round_trip():
  layer = fs_layers.LocalResponseNormalization(depth_radius=2, alpha=0.1,
                                               name='n')
  clone = fs_layers.LocalResponseNormalization.from_config(layer.get_config())
  assert clone.get_config() == layer.get_config()
  assert tf.keras.utils.get_registered_name(
      fs_layers.LocalResponseNormalization) == (
          'fedsuite>LocalResponseNormalization')


def test_cifar_cnn_keras_save_load_and_tflite(build, tmp_path):
  model = build('cifar_cnn', (24, 24, 3))
  x = np.random.RandomState(0).rand(1, 24, 24, 3).astype(np.float32)
  expected = model(x).numpy()

  path = str(tmp_path / 'cifar_cnn.keras')
  model.save(path)
  loaded = tf.keras.models.load_model(path)
  assert isinstance(loaded.get_layer('conv2_lrn'),
                    fs_layers.LocalResponseNormalization)
  np.testing.assert_allclose(loaded(x).numpy(), expected, atol=1e-6)

  tflite = tf.lite.TFLiteConverter.from_keras_model(model).convert()
  interpreter = tf.lite.Interpreter(model_content=tflite)
  interpreter.allocate_tensors()
  interpreter.set_tensor(interpreter.get_input_details()[0]['index'], x)
  interpreter.invoke()
  out = interpreter.get_tensor(interpreter.get_output_details()[0]['index'])
  np.testing.assert_allclose(out, expected, atol=1e-4)


@pytest.mark.parametrize('input_shape, batch_norm, expected', [
    # conv1 5*5*3*32 = 2,400 (no bias) + BN 4*32 = 128; conv2 5*5*32*64 =
    # 51,200 + BN 256; fc1 (8*8*64)*128+128 = 524,416; logits 1,290.
    ((32, 32, 3), True, 579_690),
    # conv1 800 + 128; conv2 51,200 + 256; fc1 (7*7*64)*128+128 = 401,536;
    # logits 1,290.
    ((28, 28, 1), True, 455_210),
    # Biases instead of BN: 2,432 + 51,264 + 524,416 + 1,290.
    ((32, 32, 3), False, 579_402),
])
def test_cnn_fedper_counts(input_shape, batch_norm, expected):
  model = cifar_models.cnn_fedper(input_shape, 10, batch_norm=batch_norm)
  assert model.count_params() == expected
  assert [b[0].split('_')[0] for b in blocks.model_blocks(model)] == [
      'conv1', 'conv2', 'fc1', 'logits'
  ]


def test_mobilenet_v1_counts_and_shapes(build):
  model = build('mobilenet_v1', (32, 32, 3))
  # stem 3*3*3*32 + 4*32 = 992; block cin->cout: 13*cin + cin*cout + 4*cout:
  # 2,720 + 9,536 + 18,560 + 35,456 + 69,888 + 136,448 + 5*270,848
  # + 535,040 + 1,065,984 = 3,227,872; logits 1024*10+10 = 10,250.
  assert model.count_params() == 3_239_114
  # BN moving stats: 2 * (32 + sum(cin) 4,960 + sum(cout) 5,952) = 21,888.
  assert _trainable(model) == 3_239_114 - 21_888
  assert model.get_layer('dw13_pwrelu').output_shape == (None, 2, 2, 1024)
  assert model.get_layer('dw11_pwrelu').output_shape == (None, 4, 4, 512)
  assert len(blocks.model_blocks(model)) == 1 + 13 + 1
  assert blocks.model_blocks(model)[1] == [
      'dw01_dwconv', 'dw01_dwbn', 'dw01_pwconv', 'dw01_pwbn'
  ]


def test_mobilenet_v1_options():
  eleven = mobilenet.mobilenet_v1((32, 32, 3), 10, num_blocks=11)
  # 992 + blocks 1..11 (1,626,848) + logits 512*10+10.
  assert eleven.count_params() == 992 + 1_626_848 + 5_130
  half = mobilenet.mobilenet_v1((32, 32, 3), 10, width_multiplier=0.5)
  # stem 3*3*3*16 + 64 = 496; blocks 848 + 2,720 + 5,184 + 9,536 + 18,560
  # + 35,456 + 5*69,888 + 136,448 + 270,848 = 829,040; logits 512*10+10.
  assert half.count_params() == 496 + 829_040 + 5_130
  with pytest.raises(common.ModelError):
    mobilenet.mobilenet_v1((32, 32, 3), 10, num_blocks=14)
  with pytest.raises(common.ModelError):
    mobilenet.mobilenet_v1((32, 32, 3), 10, width_multiplier=0.0)


@pytest.mark.parametrize('builder, input_shape', [
    (cifar_models.cifar_cnn, (24, 24, 3)),
    (cifar_models.cnn_fedper, (28, 28, 1)),
])
def test_deterministic_under_seed(builder, input_shape):
  tf.keras.utils.set_random_seed(3)
  first = builder(input_shape, 10).get_weights()
  tf.keras.utils.set_random_seed(3)
  second = builder(input_shape, 10).get_weights()
  for a, b in zip(first, second, strict=True):
    np.testing.assert_array_equal(a, b)
  tf.keras.utils.set_random_seed(4)
  assert not np.array_equal(first[0], builder(input_shape, 10).get_weights()[0])


if __name__ == '__main__':
  raise SystemExit(pytest.main([__file__, '-q', '-p', 'no:cacheprovider']))
