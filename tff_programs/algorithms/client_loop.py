"""The clients' loop over their batches, one implementation for every algorithm.

`tf.data.Dataset.reduce` (TFF's default client loop) runs the step as a
function called once per batch inside the worker; an iterator loop (`for batch
in dataset` inside a `tf.function`, which autograph turns into a while loop
over an iterator) runs the same steps in the same order without that per-call
cost. Measured for the MNIST CNN (10 clients x 600 examples, B=10, E=1, in the
worker): 3.5 s a round with reduce, 2.6-2.8 s with the iterator, as the plain
`tf.function` loop; results are bit-identical (same ops, same order).
"""

from __future__ import annotations

from typing import Any, Callable

import tensorflow as tf
import tensorflow_federated as tff

# The loop of TFF's own learning processes (`build_weighted_fed_avg`,
# `build_fed_sgd`): the iterator loop, as `fold` below.
TFF_LOOP = tff.learning.LoopImplementation.DATASET_ITERATOR


def fold(dataset: tf.data.Dataset, initial: Any, step: Callable[[Any, Any], Any]) -> Any:
  """`dataset.reduce(initial, step)` as an iterator loop.

  Call it inside a `tf.function` (autograph makes the loop a `tf.while_loop`);
  `step(state, batch)` returns a state of the same structure, shapes and
  dtypes, as `reduce` requires too.
  """
  state = initial
  for batch in dataset:
    state = step(state, batch)
  return state
