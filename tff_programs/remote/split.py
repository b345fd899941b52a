"""A computation with clients split for the workers by TFF 0.87's compiler passes.

`replace_intrinsics_with_bodies` lowers every mean and sum to
`federated_aggregate`; then `divisive_force_align_and_split_by_intrinsics`
(the split TFF's DistributeAggregateForm compiler uses) cuts the computation
into
    before:    (arg -> <aggregation inputs, intermediate state>)
    aggregate: (aggregation inputs -> aggregation results)
    after:     (<arg, aggregation results, intermediate state> -> result)
`before` runs per partition of the clients on a worker (client training
happens here), `aggregate` once on the driver over all clients, `after` where
`before` ran: the intermediate state is handed over, so no client work runs
twice (`pool.WorkerPool` runs the three parts).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

from tensorflow_federated.python.core.backends.native import compiler
from tensorflow_federated.python.core.environments.tensorflow_backend import tensorflow_tree_transformations
from tensorflow_federated.python.core.impl.compiler import building_blocks
from tensorflow_federated.python.core.impl.compiler import intrinsic_defs
from tensorflow_federated.python.core.impl.compiler import transformations
from tensorflow_federated.python.core.impl.compiler import tree_analysis
from tensorflow_federated.python.core.impl.computation import computation_impl
from tensorflow_federated.python.core.impl.context_stack import context_stack_impl
from tensorflow_federated.python.core.impl.types import type_analysis

from tff_programs.remote.errors import NotSpreadableError  # pylint: disable=g-importing-member
from tff_programs.remote.errors import one_line  # pylint: disable=g-importing-member
from tff_programs.remote.partitions import is_per_client  # pylint: disable=g-importing-member


@dataclasses.dataclass
class Plan:
  """A computation with clients, split for the workers (see the module docstring).

  Attributes:
    before: runs per partition on a worker (native-compiled).
      (<arg> -> <intrinsic_args_from_before_comp, intermediate_state>), or the
      whole computation (arg -> result) when `aggregate` is None.
    aggregate: runs once on the driver over all clients:
      (<intrinsic_args_from_before_comp> -> aggregation results); None if the
      computation does not aggregate (client work only).
    after: runs where `before` ran (native-compiled):
      (<arg, intrinsic_results, intermediate_state> -> result).
    per_client_result: the result holds per-client values (so `after` runs
      on every partition, and results are concatenated in partition order).
  """

  before: Any
  aggregate: Optional[Any]
  after: Optional[Any]
  per_client_result: bool


def _concrete(building_block) -> computation_impl.ConcreteComputation:
  return computation_impl.ConcreteComputation(
      computation_proto=building_block.proto, context_stack=context_stack_impl.context_stack)


def _called_intrinsics(building_block) -> set[str]:
  uris = set()

  def visit(bb):
    if isinstance(bb, building_blocks.Intrinsic):
      uris.add(bb.uri)

  tree_analysis.visit_postorder(building_block, visit)
  return uris


def split_computation(comp, name: str = 'the computation') -> Plan:
  """Splits a computation with clients into before / aggregate / after (TFF 0.87 passes).

  Raises NotSpreadableError (one line) when an aggregation depends on another
  one (a second aggregation after a broadcast of the first's result), or the
  computation aggregates otherwise than by `federated_aggregate` once means
  and sums are lowered (secure sums).
  """
  lam = comp.to_building_block()
  if not isinstance(lam, building_blocks.Lambda) or lam.parameter_type is None:
    raise NotSpreadableError(f'{name}: not a federated computation with a parameter')
  lowered, _ = tensorflow_tree_transformations.replace_intrinsics_with_bodies(lam)
  uris = _called_intrinsics(lowered)
  aggregate_uri = intrinsic_defs.FEDERATED_AGGREGATE.uri
  others = sorted(u for u in uris if u != aggregate_uri and getattr(
      intrinsic_defs.uri_to_intrinsic_def(u), 'aggregation_kind', None) is not None)
  if others:
    raise NotSpreadableError(
        f'{name}: aggregates with {", ".join(others)}, which cannot be split over workers')
  if aggregate_uri not in uris:  # Client work only: each partition runs all of it.
    return Plan(before=compiler.desugar_and_transform_to_native(_concrete(lowered)),
                aggregate=None, after=None, per_client_result=True)
  try:
    before, aggregate, after = transformations.divisive_force_align_and_split_by_intrinsics(
        lowered, [intrinsic_defs.FEDERATED_AGGREGATE], [()], [], [()])
  except Exception as e:  # pylint: disable=broad-except  (TFF raises several kinds)
    raise NotSpreadableError(
        f'{name}: cannot be split over workers ({type(e).__name__}: {one_line(e, 160)})') from e
  return Plan(
      before=compiler.desugar_and_transform_to_native(_concrete(before)),
      aggregate=_concrete(aggregate),
      after=compiler.desugar_and_transform_to_native(_concrete(after)),
      per_client_result=type_analysis.contains(comp.type_signature.result, is_per_client),
  )
