"""client_loop: the iterator loop equals Dataset.reduce, step for step."""

import numpy as np
import tensorflow as tf

from tff_programs.algorithms import client_loop


def test_fold_is_reduce_with_a_nested_state_and_variables():
  data = tf.data.Dataset.from_tensor_slices(np.arange(1, 7, dtype=np.float32)).batch(2)
  # Batches [1, 2], [3, 4], [5, 6]: the variable takes w <- w + 0.5 * sum(batch) - 0.1 * w.
  w = tf.Variable(1.0)

  def step(state, batch):
    total, count = state
    w.assign(w + 0.5 * tf.reduce_sum(batch) - 0.1 * w)
    return total + w * tf.reduce_sum(batch), count + 1

  start = (tf.constant(0.0), tf.constant(0, tf.int64))
  fold = tf.function(lambda: client_loop.fold(data, start, step))
  total, count = fold()
  # By hand: w = 0.9 + 1.5 = 2.4; 2.16 + 3.5 = 5.66; 5.094 + 5.5 = 10.594.
  expected_total = 2.4 * 3 + 5.66 * 7 + 10.594 * 11
  assert int(count) == 3 and float(w.numpy()) == np.float32(10.594)
  assert float(total) == np.float32(expected_total)
  w.assign(1.0)
  reduced = tf.function(lambda: data.reduce(start, step))()
  assert float(reduced[0]) == float(total) and int(reduced[1]) == 3


def test_tff_processes_use_the_iterator_loop():
  assert client_loop.TFF_LOOP.name == 'DATASET_ITERATOR'
