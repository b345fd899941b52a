"""A call's clients cut into contiguous partitions, one per worker, and joined back.

Pure functions over TFF values and their types (no executor): how many
clients an argument holds, the partition bounds (sizes as in TFF's mergeable
context: 5 clients over 3 workers: 2, 2, 1), a partition's slice of the
argument, and the inverse that concatenates per-client results in partition
order (so client states go back to their clients whatever finishes first).
The join takes every other value from the first partition, so the other
partitions need to return only their per-client parts (`per_client_paths`,
`with_per_client_parts`): for FedAvg's aggregation inputs that leaves out
the model-sized zero of the sum's accumulator, one model per worker a round.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import tree
from tensorflow_federated.python.common_libs import structure
from tensorflow_federated.python.core.environments.tensorflow_frontend import tensorflow_computation
from tensorflow_federated.python.core.impl.computation import function_utils
from tensorflow_federated.python.core.impl.executors import cardinalities_utils
from tensorflow_federated.python.core.impl.types import computation_types
from tensorflow_federated.python.core.impl.types import placements


def is_per_client(type_spec: computation_types.Type) -> bool:
  """Whether `type_spec` is a CLIENTS-placed value that differs per client."""
  return (isinstance(type_spec, computation_types.FederatedType)
          and type_spec.placement is placements.CLIENTS and not type_spec.all_equal)


def normalize_arg(arg):
  """The argument as TFF's AsyncExecutionContext hands it to executors
  (`tensorflow_computation.transform_args`: tensors to numpy)."""

  def to_python(obj):
    return structure.to_odict_or_tuple(obj) if isinstance(obj, structure.Struct) else None

  if isinstance(arg, structure.Struct):
    args, kwargs = function_utils.unpack_args_from_struct(arg)
    args = tensorflow_computation.transform_args(tree.traverse(to_python, args))
    kwargs = tensorflow_computation.transform_args(tree.traverse(to_python, kwargs))
    return function_utils.pack_args_into_struct(args, kwargs)
  return tensorflow_computation.transform_args(tree.traverse(to_python, arg))


def count_clients(arg, type_spec) -> int:
  """Number of clients in `arg` (of type `type_spec`): 0 if it holds none."""
  return cardinalities_utils.infer_cardinalities(arg, type_spec).get(placements.CLIENTS, 0) or 0


def partition_bounds(num_clients: int, num_partitions: int) -> list[tuple[int, int]]:
  """Contiguous [start, end) client ranges: at most `num_partitions`, none
  empty, sizes differing by at most one, larger ones first (5 over 3: 2, 2, 1)."""
  parts = max(1, min(num_clients, num_partitions))
  base, extra = divmod(num_clients, parts)
  bounds, start = [], 0
  for i in range(parts):
    end = start + base + (1 if i < extra else 0)
    bounds.append((start, end))
    start = end
  return bounds


def slice_clients(value: Any, type_spec: computation_types.Type, start: int, end: int) -> Any:
  """`value` with every per-client list cut to clients [start, end); other
  values (server-placed, unplaced, all-equal) unchanged.

  (TFF 0.87's `mergeable_comp_execution_context._split_value_into_subrounds`
  does this too, but loses its place when a struct's last element is not
  per-client: every partition then gets the first clients again.)
  """
  if isinstance(type_spec, computation_types.StructType):
    elements = structure.iter_elements(structure.from_container(value))
    return structure.Struct([
        (name, slice_clients(v, t, start, end))
        for (name, v), (_, t) in zip(elements, structure.iter_elements(type_spec))])
  if is_per_client(type_spec):
    return list(value)[start:end]
  return value


def holds_per_client(type_spec: computation_types.Type) -> bool:
  """Whether `type_spec` is, or is a struct containing, a per-client value."""
  if isinstance(type_spec, computation_types.StructType):
    return any(holds_per_client(t) for _, t in structure.iter_elements(type_spec))
  return is_per_client(type_spec)


def per_client_paths(type_spec: computation_types.Type,
                     prefix: tuple[int, ...] = ()) -> list[tuple[int, ...]]:
  """Element-index paths of the largest parts of `type_spec` that are
  per-client values, in order; () for a per-client `type_spec` itself."""
  if is_per_client(type_spec):
    return [prefix]
  if isinstance(type_spec, computation_types.StructType):
    return [path for i, (_, t) in enumerate(structure.iter_elements(type_spec))
            for path in per_client_paths(t, (*prefix, i))]
  return []


def with_per_client_parts(type_spec: computation_types.Type, parts: Sequence[Any]) -> Any:
  """A value of `type_spec` holding `parts` (the values at `per_client_paths`,
  in that order) and None wherever no per-client value is: a partition's
  contribution to `join_partitions` when only the first one's other values
  are used."""
  paths = per_client_paths(type_spec)
  by_path = dict(zip(paths, parts))

  def build(t, path):
    if path in by_path:
      return by_path[path]
    if isinstance(t, computation_types.StructType) and holds_per_client(t):
      return structure.Struct([(name, build(e, (*path, i)))
                               for i, (name, e) in enumerate(structure.iter_elements(t))])
    return None

  if len(parts) != len(paths):
    raise ValueError(f'{len(parts)} parts for {len(paths)} per-client paths')
  return build(type_spec, ())


def join_partitions(values: Sequence[Any], type_spec: computation_types.Type) -> Any:
  """Inverse of `slice_clients` over consecutive partitions: per-client lists
  concatenated in partition order; other values taken from the first (so the
  other partitions may hold None there: `with_per_client_parts`)."""
  if not holds_per_client(type_spec):
    return values[0]
  if isinstance(type_spec, computation_types.StructType):
    structs = [structure.iter_elements(structure.from_container(v)) for v in values]
    columns = zip(*structs) if structs else ()
    return structure.Struct([
        (name, join_partitions([v for _, v in column], t))
        for column, (name, t) in zip(columns, structure.iter_elements(type_spec))])
  if is_per_client(type_spec):
    return [item for v in values for item in v]
  return values[0]
