"""RPN pooling, unpooling and filter selection on hand-made kernels (no TFF)."""

import numpy as np
import pytest
import tensorflow as tf

from compression import rpn
from compression import rpn_stage
from models import registry


def kernel(shape):
  return tf.constant(np.arange(np.prod(shape), dtype=np.float32).reshape(shape))


def test_conv2d_pooled_is_spatial_mean_and_unpool_broadcasts():
  # 2x2 spatial, 1 input, 2 filters: filter 0 = [0, 2, 4, 6], filter 1 = [1, 3, 5, 7].
  x = kernel([2, 2, 1, 2])
  pooled = rpn.pool(x, rpn.CONV)
  assert pooled.shape == (1, 1, 1, 2)
  np.testing.assert_allclose(pooled.numpy().ravel(), [3.0, 4.0])
  np.testing.assert_allclose(rpn.unpool(pooled, [2, 2, 1, 2]).numpy()[:, :, 0, 0], [[3, 3], [3, 3]])


def test_conv1d_pools_the_single_spatial_axis():
  x = kernel([3, 2, 1])  # k=3, in=2, out=1: in 0 -> [0, 2, 4], in 1 -> [1, 3, 5]
  pooled = rpn.pool(x, rpn.CONV)
  assert pooled.shape == (1, 2, 1)
  np.testing.assert_allclose(pooled.numpy().ravel(), [2.0, 3.0])
  assert rpn.pooled_shape([3, 2, 1], rpn.CONV) == (1, 2, 1)


def test_depthwise_pools_spatially_and_has_a_filter_per_channel():
  x = kernel([3, 3, 2, 1])  # channel 0 = 0, 2, ..., 16 (mean 8); channel 1 = 1..17 odd (mean 9)
  pooled, values, bits = rpn.pool_and_select(x, rpn.DEPTHWISE, 0.0)
  np.testing.assert_allclose(pooled.numpy().ravel(), [8.0, 9.0])
  assert int(values) == 2 and int(bits) == 0
  assert rpn.num_filters([3, 3, 2, 1], rpn.DEPTHWISE) == 2


@pytest.mark.parametrize('shape,kind', [
    ([1, 1, 4, 8], rpn.CONV),       # pointwise 1x1
    ([1, 4, 8], rpn.CONV),          # 1-D kernel of size 1
    ([4, 8], rpn.DENSE),            # dense kernel
    ([8], rpn.DENSE),               # bias
])
def test_size_one_and_dense_tensors_are_left_alone(shape, kind):
  x = kernel(shape)
  pooled, values, bits = rpn.pool_and_select(x, kind, 5.0)
  np.testing.assert_array_equal(pooled.numpy(), x.numpy())
  assert int(values) == np.prod(shape) and int(bits) == 0
  assert not rpn.is_poolable(shape, kind)


def test_filter_selection_sends_only_large_contributions():
  # Filter contributions (sum of kernel elements): f0 = 0.4, f1 = -3.0, f2 = 1.2.
  r = np.zeros([2, 2, 3, 3], np.float32)
  r[..., 0] = 0.4 / 12
  r[..., 1] = -3.0 / 12
  r[..., 2] = 1.2 / 12
  pooled, values, bits = rpn.pool_and_select(tf.constant(r), rpn.CONV, 1.0)
  np.testing.assert_allclose(rpn.filter_contributions(tf.constant(r), rpn.CONV).numpy(), [0.4, -3.0, 1.2], rtol=1e-6)
  p = pooled.numpy()
  assert np.all(p[..., 0] == 0)                    # |0.4| <= 1: dropped
  np.testing.assert_allclose(p[..., 1], -0.25)     # kept: spatial mean of -3/12
  np.testing.assert_allclose(p[..., 2], 0.1)
  assert int(values) == 2 * 3                      # 2 filters x in=3 pooled values
  assert int(bits) == 3                            # 1 mask bit per filter


def test_selected_values_mark_the_pooled_values_of_selected_filters():
  r = np.zeros([2, 2, 2, 3], np.float32)
  r[..., 1] = 1.0                                   # contribution 8; the others 0
  keep = rpn.selected_values(tf.constant(r), rpn.CONV, 1.0).numpy()
  assert keep.shape == (1, 1, 2, 3)
  np.testing.assert_array_equal(keep[0, 0], [[False, True, False]] * 2)
  d = np.zeros([3, 3, 2, 2], np.float32)
  d[:, :, 1, 0] = 1.0                               # depthwise: only filter (in=1, mult=0)
  np.testing.assert_array_equal(rpn.selected_values(tf.constant(d), rpn.DEPTHWISE, 1.0).numpy()[0, 0],
                                [[False, False], [True, False]])
  with pytest.raises(ValueError, match='not pooled'):
    rpn.selected_values(tf.zeros([1, 1, 2, 3]), rpn.CONV, 1.0)


def test_threshold_zero_keeps_even_zero_filters():
  _, values, bits = rpn.pool_and_select(tf.zeros([3, 3, 2, 4]), rpn.CONV, 0.0)
  assert int(values) == 8 and int(bits) == 0


def test_keras_mnist_cnn_transmits_paper_table1_count():
  # RPN paper, Table 1: 1,199,882 parameters -> 1,183,242 per client per direction.
  model = registry.build_model('keras_mnist_cnn', (28, 28, 1), 10)
  shapes = [w.shape for w in model.trainable_weights]
  assert sum(int(np.prod(s)) for s in shapes) == 1_199_882
  assert rpn.transmitted_params(shapes, rpn.kinds_from_keras(model)) == 1_183_242


def test_kinds_from_keras_tells_depthwise_from_conv():
  inputs = tf.keras.Input([8, 8, 3])
  h = tf.keras.layers.Conv2D(4, 3, name='c')(inputs)
  h = tf.keras.layers.DepthwiseConv2D(3, name='d')(h)
  h = tf.keras.layers.Conv2D(5, 1, name='p')(h)
  model = tf.keras.Model(inputs, tf.keras.layers.Dense(2, name='o')(tf.keras.layers.Flatten()(h)))
  assert rpn.kinds_from_keras(model) == [rpn.CONV, rpn.DENSE, rpn.DEPTHWISE, rpn.DENSE,
                                         rpn.CONV, rpn.DENSE, rpn.DENSE, rpn.DENSE]


def test_stage_encode_decode_and_commutes_with_sum():
  stage = rpn_stage.SpatialMeanPoolingStage(rpn.CONV, 0.0)
  assert stage.commutes_with_sum and stage.decode_needs_input_shape
  a, b = kernel([3, 3, 2, 2]), tf.ones([3, 3, 2, 2])
  ea = stage.encode(a, {})['pooled']
  eb = stage.encode(b, {})['pooled']
  summed_then_decoded = stage.decode({'pooled': ea + eb}, {}, shape=[3, 3, 2, 2])
  decoded_then_summed = (stage.decode({'pooled': ea}, {}, shape=[3, 3, 2, 2]) +
                         stage.decode({'pooled': eb}, {}, shape=[3, 3, 2, 2]))
  np.testing.assert_allclose(summed_then_decoded.numpy(), decoded_then_summed.numpy())
  # By hand: a[i, j, c, f] = 4 (3i + j) + 2c + f, whose spatial mean is 16 + 2c + f;
  # b pools to 1. Their sum, unpooled, is 17 + 2c + f at every (i, j).
  np.testing.assert_array_equal(tf.reshape(ea, [2, 2]).numpy(), [[16., 17.], [18., 19.]])
  expected = np.broadcast_to(np.array([[17., 18.], [19., 20.]], np.float32), [3, 3, 2, 2])
  np.testing.assert_array_equal(summed_then_decoded.numpy(), expected)


def test_stage_rejects_bad_arguments():
  with pytest.raises(ValueError):
    rpn_stage.SpatialMeanPoolingStage('bogus')
  with pytest.raises(ValueError):
    rpn_stage.SpatialMeanPoolingStage(rpn.CONV, -1.0)
