"""Which computations split into before / aggregate / after for the workers."""

import collections

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from tff_programs import experiment
from tff_programs.algorithms import base
from tff_programs.remote import errors
from tff_programs.remote import split


def conv_model(batch_norm):
  inputs = tf.keras.Input([4, 4, 1])
  h = tf.keras.layers.Conv2D(2, 3, padding='same', name='conv')(inputs)
  if batch_norm:
    h = tf.keras.layers.BatchNormalization(name='bn')(h)
  h = tf.keras.layers.GlobalAveragePooling2D()(h)
  return tf.keras.Model(inputs, tf.keras.layers.Dense(3, name='logits')(h))


@pytest.mark.parametrize('algorithm, aggregator, batch_norm', [
    ('fedavg', 'mean', False),      # TFF's build_weighted_fed_avg
    ('fedsgd', 'mean', False),      # TFF's build_fed_sgd
    ('rpn', 'quantized', False),    # RPN around 8-bit quantization
    ('fedavg', 'mean', True),       # FedAvg with batch-norm statistics (FedSuite's process)
    ('fedper', 'mean', False),      # FedSuite's process with client states
])
def test_every_round_computation_splits_over_workers(algorithm, aggregator, batch_norm):
  cfg = experiment.ExperimentConfig(algorithm=algorithm, aggregator=aggregator,
                                    local_epochs=1 if algorithm == 'fedsgd' else 5)
  spec = collections.OrderedDict(x=tf.TensorSpec([None, 4, 4, 1], tf.float32),
                                 y=tf.TensorSpec([None], tf.int64))
  task = base.Task(lambda: conv_model(batch_norm), spec, 3)
  alg = experiment.build_algorithm(cfg, task)
  plan = split.split_computation(alg.process.next)
  assert plan.aggregate is not None and plan.after is not None
  assert plan.per_client_result == (algorithm == 'fedper' or batch_norm)


def test_dependent_aggregations_are_refused_in_one_line():
  @tff.federated_computation(tff.FederatedType(np.float32, tff.CLIENTS))
  def two_stage(values):
    mean = tff.federated_mean(values)
    centred = tff.federated_map(tff.tensorflow.computation(lambda v, m: v - m),
                                (values, tff.federated_broadcast(mean)))
    return tff.federated_sum(centred)

  with pytest.raises(errors.NotSpreadableError, match='cannot be split over workers') as e:
    split.split_computation(two_stage)
  assert '\n' not in str(e.value)
