"""RPN as a TFF aggregation factory (plugs into FedAvg as `model_aggregator`).

    RPNFactory(inner=None, *, threshold=0.0, kinds=None).create(value_type, weight_type)

creates an `AggregationProcess` whose `next` has the type signature
    (<state@SERVER, value@CLIENTS, weight@CLIENTS>
       -> <state@SERVER, result@SERVER, measurements@SERVER>)
where `value` is the clients' model residuals (the trainable weights' deltas),
`result` has `value`'s type, and:

1. clients (`tff.federated_map`): every conv kernel of the residual is encoded
   by `SpatialMeanPoolingStage` (spatial mean over the selected filters);
   dense weights, biases and 1x1 kernels pass unchanged;
2. the pooled structure is aggregated by the `inner` factory (default
   `tff.aggregators.MeanFactory()`, i.e. the weighted mean; with uniform client
   weights this is RPN's 1/m average; an inner quantizing factory stacks 8-bit
   quantization on top of pooling);
3. the server unpools the pooled average (adds the mean at every spatial
   position): this pooled average is also what RPN broadcasts, so download
   shrinks by the same factor.

Measurements report what was actually transmitted: `upload_values` and
`upload_bytes` summed over clients (selected filters' pooled values, the
filter masks, at the inner factory's bits per value), and `download_values` /
`download_bytes` of the pooled average (filters some client selected, float32).
The simulation still broadcasts the full global model (TFF's distributor); it
equals M^0 plus all pooled broadcasts, which is what an RPN client recovers.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Sequence
from typing import Optional

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from compression import accounting
from compression import rpn
from compression import rpn_stage


class RPNFactory(tff.aggregators.WeightedAggregationFactory):
  """Residual pooling (RPN) around an inner weighted aggregation factory."""

  def __init__(
      self,
      inner: Optional[tff.aggregators.WeightedAggregationFactory] = None,
      *,
      threshold: float = 0.0,
      kinds: Optional[Sequence[str]] = None,
  ):
    """Args:
      inner: aggregates the pooled residuals (None = weighted mean).
      threshold: filters with |sum of residual kernel elements| <= threshold are
        not sent (0 = send all filters, no mask).
      kinds: `compression.rpn` kind per tensor of the value (conv, depthwise,
        dense), e.g. from `rpn.kinds_from_keras(model)`; None infers from rank.
    """
    if threshold < 0:
      raise ValueError(f'--rpn_threshold={threshold}: must be >= 0')
    self._inner_spec = inner
    self._inner = inner if inner is not None else tff.aggregators.MeanFactory()
    self.threshold = float(threshold)
    self._kinds = list(kinds) if kinds is not None else None

  def kinds_for(self, shapes: Sequence[Sequence[int]]) -> list[str]:
    if self._kinds is None:
      return [rpn.infer_kind(s) for s in shapes]
    if len(self._kinds) != len(shapes):
      raise ValueError(f'RPN got {len(self._kinds)} kinds for {len(shapes)} tensors')
    return self._kinds

  def _encodings(self, shapes, kinds):
    return [accounting.value_encoding(self._inner_spec, rpn.pooled_shape(s, k))
            for s, k in zip(shapes, kinds)]

  # Static (threshold 0, every filter) costs, for accounting before a round runs.
  def upload_cost(self, shapes):
    kinds = self.kinds_for(shapes)
    cost = accounting.ZERO_COST
    for s, k, e in zip(shapes, kinds, self._encodings(shapes, kinds)):
      cost += accounting.encoded_cost(math.prod(rpn.pooled_shape(s, k)), e)
      if self.threshold > 0:
        cost += accounting.TransmissionCost(0, -(-rpn.num_filters(s, k) // 8))
    return cost

  def download_cost(self, shapes):
    kinds = self.kinds_for(shapes)
    return accounting.dense_cost([rpn.pooled_shape(s, k) for s, k in zip(shapes, kinds)])

  def create(self, value_type, weight_type) -> tff.templates.AggregationProcess:
    specs = tff.types.type_to_tf_tensor_specs(value_type)
    flat_specs = tf.nest.flatten(specs)
    shapes = [tuple(s.shape.as_list()) for s in flat_specs]
    kinds = self.kinds_for(shapes)
    stages = [rpn_stage.SpatialMeanPoolingStage(k, self.threshold)
              if rpn.is_poolable(s, k) else None for s, k in zip(shapes, kinds)]
    pooled_specs = tf.nest.pack_sequence_as(specs, [
        tf.TensorSpec(rpn.pooled_shape(s, k), spec.dtype)
        for s, k, spec in zip(shapes, kinds, flat_specs)])
    pooled_type = tff.types.tensorflow_to_type(pooled_specs)
    inner_process = self._inner.create(pooled_type, weight_type)
    encodings = self._encodings(shapes, kinds)
    threshold = self.threshold

    @tff.tensorflow.computation(value_type)
    def encode(value):
      pooled, values_sent, byte_counts = [], [], []
      for x, stage, kind, encoding in zip(tf.nest.flatten(value), stages, kinds, encodings):
        if stage is None:
          pooled.append(x)
          n = tf.constant(int(np.prod(x.shape)), tf.int64)
          mask_bits = tf.constant(0, tf.int64)
        else:
          pooled.append(stage.encode(x, {})[rpn_stage.SpatialMeanPoolingStage.ENCODED_VALUES_KEY])
          _, n, mask_bits = rpn.pool_and_select(x, kind, threshold)
        values_sent.append(n)
        value_bytes = (n * encoding.bits_per_value + 7) // 8 + encoding.overhead_bytes
        byte_counts.append(value_bytes + (mask_bits + 7) // 8)
      return (tf.nest.pack_sequence_as(value, pooled),
              tf.add_n(values_sent), tf.add_n(byte_counts))

    @tff.tensorflow.computation(pooled_type)
    def decode(pooled):
      full, values_sent = [], []
      for p, stage, shape, kind in zip(tf.nest.flatten(pooled), stages, shapes, kinds):
        if stage is None:
          full.append(p)
        else:
          full.append(stage.decode(
              {rpn_stage.SpatialMeanPoolingStage.ENCODED_VALUES_KEY: p}, {}, shape=shape))
        values_sent.append(rpn.nonzero_filter_values(p, shape, kind))
      mask_bytes = sum(-(-rpn.num_filters(s, k) // 8) for s, k in zip(shapes, kinds)) if threshold > 0 else 0
      values = tf.add_n(values_sent)
      return tf.nest.pack_sequence_as(pooled, full), values, values * 4 + mask_bytes

    @tff.federated_computation(
        inner_process.initialize.type_signature.result,
        tff.FederatedType(value_type, tff.CLIENTS),
        tff.FederatedType(weight_type, tff.CLIENTS),
    )
    def next_fn(state, value, weight):
      encoded = tff.federated_map(encode, value)
      inner_output = inner_process.next(state, encoded[0], weight)
      decoded = tff.federated_map(decode, inner_output.result)
      measurements = tff.federated_zip(collections.OrderedDict(
          upload_values=tff.federated_sum(encoded[1]),
          upload_bytes=tff.federated_sum(encoded[2]),
          download_values=decoded[1],
          download_bytes=decoded[2],
          inner=inner_output.measurements,
      ))
      return tff.templates.MeasuredProcessOutput(
          state=inner_output.state, result=decoded[0], measurements=measurements)

    return tff.templates.AggregationProcess(inner_process.initialize, next_fn)
