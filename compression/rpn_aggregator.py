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
   weights this is RPN's 1/m average);
   an inner `quantization.ClientQuantizer` (8-bit) stacks quantization on top
   of pooling: each client quantizes and de-quantizes the values it sends (its
   selected filters only: their min and max, at the quantizer's bits) and the
   filters it did not select stay exactly 0; the quantizer's unquantized
   weighted mean then aggregates (a quantizer left to quantize the pooled
   tensor itself would turn those zeros into small non-zero values, as 0 is
   not one of its levels, and leak them into the average);
3. the server unpools the pooled average (adds the mean at every spatial
   position): this pooled average is also what RPN broadcasts, so download
   shrinks by the same factor.

Measurements report what was actually transmitted: `upload_values` and
`upload_bytes` summed over clients (selected filters' pooled values, the
filter masks, at the inner factory's bits per value, plus its per-tensor
overhead when any value of the tensor is sent), and `download_values` /
`download_bytes` of the pooled average (float32; with a threshold, only the
filters not all zero, plus the mask). At threshold 0 they equal
`upload_cost` / `download_cost` times the clients, exactly.
The simulation still broadcasts the full global model (TFF's distributor); it
equals M^0 plus all pooled broadcasts, which is what an RPN client recovers:
a client needs the full model once before its first round
(`initial_download_cost`).
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
from compression import quantization
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
      inner: aggregates the pooled residuals (None = weighted mean); a
        `quantization.ClientQuantizer` is applied on the clients instead (see
        the module doc) and its `unquantized_factory` aggregates.
      threshold: filters with |sum of residual kernel elements| <= threshold are
        not sent (0 = send all filters, no mask).
      kinds: `compression.rpn` kind per tensor of the value (conv, depthwise,
        dense), e.g. from `rpn.kinds_from_keras(model)`; None infers from rank.
    """
    if threshold < 0:
      raise ValueError(f'--rpn_threshold={threshold}: must be >= 0')
    self._inner_spec = inner
    self._quantizer = inner if isinstance(inner, quantization.ClientQuantizer) else None
    if self._quantizer is not None:
      self._inner = self._quantizer.unquantized_factory()
    else:
      self._inner = inner if inner is not None else tff.aggregators.MeanFactory()
    self.threshold = float(threshold)
    self._kinds = list(kinds) if kinds is not None else None

  def for_tensors(self, indices: Sequence[int]) -> 'RPNFactory':
    """The same RPN for a subset of the model's tensors (e.g. FedPer's base
    layers): `kinds` narrowed to those positions."""
    kinds = None if self._kinds is None else [self._kinds[i] for i in indices]
    return RPNFactory(self._inner_spec, threshold=self.threshold, kinds=kinds)

  def kinds_for(self, shapes: Sequence[Sequence[int]]) -> list[str]:
    if self._kinds is None:
      return [rpn.infer_kind(s) for s in shapes]
    if len(self._kinds) != len(shapes):
      raise ValueError(f'RPN got {len(self._kinds)} kinds for {len(shapes)} tensors')
    return self._kinds

  def _encodings(self, shapes, kinds):
    return [accounting.value_encoding(self._inner_spec, rpn.pooled_shape(s, k))
            for s, k in zip(shapes, kinds)]

  # Static costs with every filter selected, for accounting before a round runs:
  # exactly what a round measures at threshold 0, an upper bound above it.
  def upload_cost(self, shapes):
    kinds = self.kinds_for(shapes)
    cost = accounting.ZERO_COST
    for s, k, e in zip(shapes, kinds, self._encodings(shapes, kinds)):
      cost += accounting.encoded_cost(math.prod(rpn.pooled_shape(s, k)), e)
    if self.threshold > 0:
      cost += accounting.TransmissionCost(0, self._mask_bytes(shapes, kinds))
    return cost

  def download_cost(self, shapes):
    kinds = self.kinds_for(shapes)
    cost = accounting.dense_cost([rpn.pooled_shape(s, k) for s, k in zip(shapes, kinds)])
    if self.threshold > 0:
      cost += accounting.TransmissionCost(0, self._mask_bytes(shapes, kinds))
    return cost

  def initial_download_cost(self, shapes: Sequence[Sequence[int]]) -> accounting.TransmissionCost:
    """The full model, float32, that a client needs once before its first round.

    RPN's broadcast is the pooled average, which only updates a model the
    client already holds. `shapes`: every weight of the model (trainable and
    non-trainable), e.g. `[w.shape for w in keras_model.weights]`.
    """
    return accounting.dense_cost(shapes)

  def _mask_bytes(self, shapes, kinds) -> int:
    """Bytes of the filter masks (1 bit per filter of each pooled kernel)."""
    return sum(-(-rpn.num_filters(s, k) // 8) for s, k in zip(shapes, kinds))

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
    quantizer = self._quantizer
    mask_bytes = self._mask_bytes(shapes, kinds) if threshold > 0 else 0

    @tff.tensorflow.computation(value_type)
    def encode(value):
      """One client's upload (as the server decodes it), values and bytes sent."""
      sent, values_sent, byte_counts = [], [], []
      for x, stage, kind, encoding in zip(tf.nest.flatten(value), stages, kinds, encodings):
        if stage is None:
          p, keep = x, None
          n = tf.constant(int(np.prod(x.shape)), tf.int64)
        else:
          p = stage.encode(x, {})[rpn_stage.SpatialMeanPoolingStage.ENCODED_VALUES_KEY]
          keep = rpn.selected_values(x, kind, threshold) if threshold > 0 else None
          _, n, _ = rpn.pool_and_select(x, kind, threshold)
        if quantizer is not None:
          p = quantizer.roundtrip(p, keep)
        sent.append(p)
        values_sent.append(n)
        # Bit-packed values, plus the encoding's overhead when any value is sent.
        overhead = tf.where(n > 0, tf.constant(encoding.overhead_bytes, tf.int64),
                            tf.constant(0, tf.int64))
        byte_counts.append((n * encoding.bits_per_value + 7) // 8 + overhead)
      return (tf.nest.pack_sequence_as(value, sent),
              tf.add_n(values_sent), tf.add_n(byte_counts) + mask_bytes)

    @tff.tensorflow.computation(pooled_type)
    def decode(pooled):
      """The unpooled average, and the values and bytes of broadcasting `pooled`."""
      full, values_sent = [], []
      for p, stage, shape, kind in zip(tf.nest.flatten(pooled), stages, shapes, kinds):
        if stage is None:
          full.append(p)
        else:
          full.append(stage.decode(
              {rpn_stage.SpatialMeanPoolingStage.ENCODED_VALUES_KEY: p}, {}, shape=shape))
        if threshold > 0:
          values_sent.append(rpn.nonzero_filter_values(p, shape, kind))
        else:  # No mask: every pooled value is sent, zero or not.
          values_sent.append(tf.constant(int(np.prod(p.shape)), tf.int64))
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
