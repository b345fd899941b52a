"""RPN as a TFF aggregation factory (plugs into FedAvg as `model_aggregator`).

    RPNFactory(inner=None, *, threshold=0.0, kinds=None, full_every=0).create(value_type, weight_type)

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

Full rounds (`full_every` = K > 0; FedSuite's variant, not the paper's).
Pooling never transmits a kernel's spatial pattern. With K > 0, every K-th
round (K, 2K, ...) the clients send their residuals unpooled (every value,
no filter selection, no mask; b-bit with a quantizing inner) and the server
broadcasts the full average: that round is a FedAvg round. The other rounds
are pooled as above. The process's state is then
    <rounds=int64, inner=inner state>@SERVER
where `rounds` counts the rounds aggregated so far (0 at `initialize`, +1 per
`next`). `next` decides on the server whether round `rounds + 1` is full and
broadcasts that bit; each client `tf.cond`s between the two encodings. Only
the taken branch runs, so a pooled round neither copies nor quantizes full
kernels (a mask select would run both encodings every round, the full
quantization included, for nothing in K - 1 rounds of K). A TFF computation
has one static type, so with K > 0 every round aggregates values in the
model's shape: in a pooled round each client's decoded upload is unpooled on
the client (its pooled values repeated over space, which the server would
otherwise do), and the inner mean of those is the unpooled pooled average bit
for bit. The simulated aggregation then costs what FedAvg's does, small next
to client training (the counted traffic stays RPN's); and the inner must be a
mean (the weighted mean, or a `ClientQuantizer`'s), for which aggregating the
repeated values is exact. The counter is part of the state, so it is
checkpointed with the server state and a resumed run continues the schedule.
With K = 0 the process is exactly the paper's (state: the inner's only).

Measurements report what was actually transmitted in that round:
`upload_values` and `upload_bytes` summed over clients (in a pooled round,
selected filters' pooled values, the filter masks, at the inner factory's bits
per value, plus its per-tensor overhead when any value of the tensor is sent;
in a full round, every value at the inner factory's bits, no mask), and
`download_values` / `download_bytes` of the broadcast (float32; a pooled
round's pooled average, with a threshold only the filters not all zero, plus
the mask; a full round's every value). With K > 0 they add `full_round` (1 in
a full round, else 0). The bit saying that a round is full is not counted: a
client knows the round's number from the round itself. The static
`upload_cost` / `download_cost` (a pooled round's, every filter selected) and
`full_upload_cost` / `full_download_cost` are what a round sends at threshold
0, exactly; the algorithms use them before a round runs and take the measured
values instead whenever an aggregator reports `accounting.MEASURED_KEYS`, as
RPN always does, so every round's row counts what that round sent.
The simulation still broadcasts the full global model (TFF's distributor); it
equals M^0 plus all broadcasts, which is what an RPN client recovers: a client
needs the full model once before its first round (`initial_download_cost`).
"""

from __future__ import annotations

import collections
import dataclasses
import math
from collections.abc import Sequence
from typing import Any, Optional

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from compression import accounting
from compression import quantization
from compression import rpn
from compression import rpn_stage

_POOLED = rpn_stage.SpatialMeanPoolingStage.ENCODED_VALUES_KEY


class RPNFactory(tff.aggregators.WeightedAggregationFactory):
  """Residual pooling (RPN) around an inner weighted aggregation factory."""

  def __init__(
      self,
      inner: Optional[tff.aggregators.WeightedAggregationFactory] = None,
      *,
      threshold: float = 0.0,
      kinds: Optional[Sequence[str]] = None,
      full_every: int = 0,
  ):
    """Args:
      inner: aggregates the pooled residuals (None = weighted mean); a
        `quantization.ClientQuantizer` is applied on the clients instead (see
        the module doc) and its `unquantized_factory` aggregates.
      threshold: filters with |sum of residual kernel elements| <= threshold are
        not sent (0 = send all filters, no mask).
      kinds: `compression.rpn` kind per tensor of the value (conv, depthwise,
        dense), e.g. from `rpn.kinds_from_keras(model)`; None infers from rank.
      full_every: K > 0 sends full, unpooled kernels every K-th round (see
        the module doc); 0 = never (the paper). Needs a mean inner (None, a
        `tff.aggregators.MeanFactory` or a `ClientQuantizer`).
    """
    if threshold < 0:
      raise ValueError(f'--rpn_threshold={threshold}: must be >= 0')
    if not isinstance(full_every, (int, np.integer)) or isinstance(full_every, bool) or full_every < 0:
      raise ValueError(f'--rpn_full_every={full_every!r}: must be an integer >= 0 (0 = never)')
    self._inner_spec = inner
    self._quantizer = inner if isinstance(inner, quantization.ClientQuantizer) else None
    if self._quantizer is not None:
      self._inner = self._quantizer.unquantized_factory()
    else:
      self._inner = inner if inner is not None else tff.aggregators.MeanFactory()
    if full_every and not isinstance(self._inner, tff.aggregators.MeanFactory):
      raise ValueError(f'--rpn_full_every={full_every}: needs a mean inner aggregator (mean or '
                       f'quantized), not {type(inner).__name__}')
    self.threshold = float(threshold)
    self.full_every = int(full_every)
    self._kinds = list(kinds) if kinds is not None else None

  def for_tensors(self, indices: Sequence[int]) -> 'RPNFactory':
    """The same RPN for a subset of the model's tensors (e.g. FedPer's base
    layers): `kinds` narrowed to those positions."""
    kinds = None if self._kinds is None else [self._kinds[i] for i in indices]
    return RPNFactory(self._inner_spec, threshold=self.threshold, kinds=kinds,
                      full_every=self.full_every)

  def kinds_for(self, shapes: Sequence[Sequence[int]]) -> list[str]:
    if self._kinds is None:
      return [rpn.infer_kind(s) for s in shapes]
    if len(self._kinds) != len(shapes):
      raise ValueError(f'RPN got {len(self._kinds)} kinds for {len(shapes)} tensors')
    return self._kinds

  def _encodings(self, shapes, kinds):
    return [accounting.value_encoding(self._inner_spec, rpn.pooled_shape(s, k))
            for s, k in zip(shapes, kinds)]

  # Static costs, for accounting before a round runs. upload_cost and
  # download_cost are a pooled round's with every filter selected: exactly
  # what a pooled round measures at threshold 0, an upper bound above it.
  # Measured values (every round, see the module doc) override them.
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

  def full_upload_cost(self, shapes: Sequence[Sequence[int]]) -> accounting.TransmissionCost:
    """Per-client upload of a full round: every value, at the inner's encoding, no mask."""
    return sum((accounting.encoded_cost(math.prod(s), accounting.value_encoding(self._inner_spec, s))
                for s in shapes), accounting.ZERO_COST)

  def full_download_cost(self, shapes: Sequence[Sequence[int]]) -> accounting.TransmissionCost:
    """The broadcast of a full round: every value, float32."""
    return accounting.dense_cost(shapes)

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
    shapes = [tuple(s.shape.as_list()) for s in tf.nest.flatten(specs)]
    kinds = self.kinds_for(shapes)
    layout = _Layout(
        specs=specs, shapes=shapes, kinds=kinds,
        stages=[rpn_stage.SpatialMeanPoolingStage(k, self.threshold)
                if rpn.is_poolable(s, k) else None for s, k in zip(shapes, kinds)],
        encodings=self._encodings(shapes, kinds),
        full_encodings=[accounting.value_encoding(self._inner_spec, s) for s in shapes],
        threshold=self.threshold, quantizer=self._quantizer,
        mask_bytes=self._mask_bytes(shapes, kinds) if self.threshold > 0 else 0)
    if self.full_every == 0:
      return _pooled_process(layout, self._inner, value_type, weight_type)
    return _alternating_process(layout, self._inner, value_type, weight_type, self.full_every)


@dataclasses.dataclass(frozen=True)
class _Layout:
  """What `create` derives from the value type (per flat tensor), for both kinds of process."""

  specs: Any                                  # the value's tf.TensorSpec structure
  shapes: list[tuple[int, ...]]
  kinds: list[str]
  stages: list[Optional[rpn_stage.SpatialMeanPoolingStage]]  # None: not poolable
  encodings: list[accounting.ValueEncoding]   # of the pooled tensor
  full_encodings: list[accounting.ValueEncoding]  # of the full tensor (full rounds)
  threshold: float
  quantizer: Optional[quantization.ClientQuantizer]
  mask_bytes: int                             # of a pooled upload or broadcast

  def pooled_upload(self, x, i):
    """Tensor `i` of one client's pooled upload, as the server decodes it (pooled
    shape), with the values and bytes (without the mask) sent."""
    stage, kind = self.stages[i], self.kinds[i]
    if stage is None:
      p, keep = x, None
      n = tf.constant(int(np.prod(x.shape)), tf.int64)
    else:
      p = stage.encode(x, {})[_POOLED]
      keep = rpn.selected_values(x, kind, self.threshold) if self.threshold > 0 else None
      _, n, _ = rpn.pool_and_select(x, kind, self.threshold)
    if self.quantizer is not None:
      p = self.quantizer.roundtrip(p, keep)
    return p, n, _sent_bytes(n, self.encodings[i])

  def full_upload(self, x, i):
    """Tensor `i` of one client's full upload (every value), as decoded, values, bytes."""
    if self.quantizer is not None:
      x = self.quantizer.roundtrip(x)
    n = tf.constant(int(np.prod(x.shape)), tf.int64)
    return x, n, _sent_bytes(n, self.full_encodings[i])

  def unpool(self, p, i):
    stage = self.stages[i]
    return p if stage is None else stage.decode({_POOLED: p}, {}, shape=self.shapes[i])

  def pooled_broadcast_values(self, p, i):
    """Values the server broadcasts of pooled aggregate tensor `p` (number `i`)."""
    if self.threshold > 0:
      return rpn.nonzero_filter_values(p, self.shapes[i], self.kinds[i])
    return tf.constant(int(np.prod(p.shape)), tf.int64)  # No mask: every pooled value, zero or not.


def _sent_bytes(n: tf.Tensor, encoding: accounting.ValueEncoding) -> tf.Tensor:
  """Bit-packed values, plus the encoding's overhead when any value is sent (int64)."""
  overhead = tf.where(n > 0, tf.constant(encoding.overhead_bytes, tf.int64),
                      tf.constant(0, tf.int64))
  return (n * encoding.bits_per_value + 7) // 8 + overhead


def _pooled_process(layout: _Layout, inner, value_type, weight_type) -> tff.templates.AggregationProcess:
  """RPN as the paper: every round pooled; the inner aggregates the pooled type."""
  pooled_specs = tf.nest.pack_sequence_as(layout.specs, [
      tf.TensorSpec(rpn.pooled_shape(s, k), spec.dtype)
      for s, k, spec in zip(layout.shapes, layout.kinds, tf.nest.flatten(layout.specs))])
  pooled_type = tff.types.tensorflow_to_type(pooled_specs)
  inner_process = inner.create(pooled_type, weight_type)

  @tff.tensorflow.computation(value_type)
  def encode(value):
    """One client's upload (as the server decodes it), values and bytes sent."""
    sent = [layout.pooled_upload(x, i) for i, x in enumerate(tf.nest.flatten(value))]
    return (tf.nest.pack_sequence_as(value, [p for p, _, _ in sent]),
            tf.add_n([n for _, n, _ in sent]), tf.add_n([b for _, _, b in sent]) + layout.mask_bytes)

  @tff.tensorflow.computation(pooled_type)
  def decode(pooled):
    """The unpooled average, and the values and bytes of broadcasting `pooled`."""
    flat = tf.nest.flatten(pooled)
    values = tf.add_n([layout.pooled_broadcast_values(p, i) for i, p in enumerate(flat)])
    full = [layout.unpool(p, i) for i, p in enumerate(flat)]
    return tf.nest.pack_sequence_as(pooled, full), values, values * 4 + layout.mask_bytes

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


def _alternating_process(layout: _Layout, inner, value_type, weight_type,
                         full_every: int) -> tff.templates.AggregationProcess:
  """Pooled rounds with a full round every `full_every`-th (see the module doc)."""
  inner_process = inner.create(value_type, weight_type)
  flag_type = tff.TensorType(np.bool_)

  @tff.tensorflow.computation
  def no_rounds():
    return tf.constant(0, tf.int64)

  @tff.tensorflow.computation(np.int64)
  def count_round(rounds):
    return rounds + 1

  @tff.tensorflow.computation(np.int64)
  def is_full(round_num):
    return rpn.is_full_round(round_num, full_every)

  @tff.tensorflow.computation(flag_type)
  def as_count(flag):
    return tf.cast(flag, tf.int32)

  @tff.tensorflow.computation(value_type, flag_type)
  def encode(value, full):
    """One client's upload as the server decodes it, in the model's shape (a pooled
    round's unpooled), with the values and bytes sent."""
    sent = []
    for i, x in enumerate(tf.nest.flatten(value)):
      pooled = lambda x=x, i=i: _unpooled(layout, layout.pooled_upload(x, i), i)
      if layout.stages[i] is None:  # Sent the same way in both kinds of round.
        sent.append(pooled())
      else:
        sent.append(tf.cond(full, lambda x=x, i=i: layout.full_upload(x, i), pooled))
    mask_bytes = tf.where(full, tf.constant(0, tf.int64), tf.constant(layout.mask_bytes, tf.int64))
    return (tf.nest.pack_sequence_as(value, [y for y, _, _ in sent]),
            tf.add_n([n for _, n, _ in sent]), tf.add_n([b for _, _, b in sent]) + mask_bytes)

  @tff.tensorflow.computation(value_type, flag_type)
  def broadcast_size(result, full):
    """Values and bytes the server broadcasts of the aggregate `result`."""
    values = []
    for i, x in enumerate(tf.nest.flatten(result)):
      every = tf.constant(int(np.prod(x.shape)), tf.int64)
      if layout.stages[i] is None:
        values.append(every)
      else:
        pooled = rpn.pooled_of_unpooled(x, layout.kinds[i])
        values.append(tf.cond(full, lambda every=every: every,
                              lambda p=pooled, i=i: layout.pooled_broadcast_values(p, i)))
    total = tf.add_n(values)
    mask_bytes = tf.where(full, tf.constant(0, tf.int64), tf.constant(layout.mask_bytes, tf.int64))
    return total, total * 4 + mask_bytes

  @tff.federated_computation
  def initialize():
    return tff.federated_zip(collections.OrderedDict(
        rounds=tff.federated_eval(no_rounds, tff.SERVER), inner=inner_process.initialize()))

  @tff.federated_computation(
      initialize.type_signature.result,
      tff.FederatedType(value_type, tff.CLIENTS),
      tff.FederatedType(weight_type, tff.CLIENTS),
  )
  def next_fn(state, value, weight):
    rounds = tff.federated_map(count_round, state.rounds)
    full = tff.federated_map(is_full, rounds)
    encoded = tff.federated_map(encode, (value, tff.federated_broadcast(full)))
    inner_output = inner_process.next(state.inner, encoded[0], weight)
    size = tff.federated_map(broadcast_size, (inner_output.result, full))
    measurements = tff.federated_zip(collections.OrderedDict(
        upload_values=tff.federated_sum(encoded[1]),
        upload_bytes=tff.federated_sum(encoded[2]),
        download_values=size[0],
        download_bytes=size[1],
        full_round=tff.federated_map(as_count, full),
        inner=inner_output.measurements,
    ))
    new_state = tff.federated_zip(collections.OrderedDict(rounds=rounds, inner=inner_output.state))
    return tff.templates.MeasuredProcessOutput(
        state=new_state, result=inner_output.result, measurements=measurements)

  return tff.templates.AggregationProcess(initialize, next_fn)


def _unpooled(layout: _Layout, upload, i: int):
  """A pooled upload (value, n, bytes) with its value unpooled to the model's shape."""
  p, n, b = upload
  return layout.unpool(p, i), n, b
