"""Seeded client partitions of a labelled dataset (pure numpy).

Every partitioner returns `list[np.ndarray]`: one int64 array of example indices
per client, sorted ascending. Together the arrays cover every example exactly
once, and the same arguments (including `seed`) always give the same partition.
All randomness comes from `np.random.default_rng(seed)`, never global state.

Partitioners (one per concept, as in the papers they come from):

* `iid`: a seeded shuffle cut into equal parts (FedAvg's IID MNIST, 100 x 600).
* `shards`: FedAvg's pathological non-IID split: sort by label, cut into
  `num_clients * shards_per_client` equal shards, deal each client that many.
* `k_class`: FedPer's split: each client sees at most k classes, each class is
  split equally among the clients that may hold it.
* `dirichlet`: per class, client proportions ~ Dir(alpha), resampled until every
  client has `min_size` examples (FedML / FedGKT's `hetero` partition).
* `natural`: one client per group id (e.g. EMNIST writers).

`PARTITIONERS` maps a flag value to a partitioner with the uniform signature
`(labels, num_clients, *, seed, **options)`.

`PartitionError` and the shared argument checks are in `partition_base`;
what a partition gives each client (`label_histogram`, `format_histogram`,
`split_test_like_train`) is in `partition_stats`. Their public names are
re-exported here, where callers have always found them.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

# pylint: disable=g-importing-member,unused-import
from datasets.partition_base import PartitionError
from datasets.partition_base import as_labels
from datasets.partition_base import check_int
from datasets.partition_base import finish
from datasets.partition_base import seeded_rng
from datasets.partition_stats import format_histogram
from datasets.partition_stats import label_histogram
from datasets.partition_stats import split_test_like_train
# pylint: enable=g-importing-member,unused-import


def _check_num_clients(num_examples: int, num_clients: int) -> None:
  check_int('num_clients', num_clients, 1)
  if num_examples < num_clients:
    raise PartitionError(
        f'cannot split {num_examples} examples among {num_clients} clients:'
        ' fewer examples than clients'
    )


def iid(num_examples: int, num_clients: int, *, seed: int) -> list[np.ndarray]:
  """Splits `num_examples` examples uniformly at random into equal parts.

  Sizes differ by at most one when `num_examples` is not divisible by
  `num_clients` (the first `num_examples % num_clients` clients get one more).

  Args:
    num_examples: Number of examples to split.
    num_clients: Number of clients.
    seed: Seed of the shuffle.

  Returns:
    One sorted int64 index array per client.

  Raises:
    PartitionError: fewer examples than clients, or bad arguments.
  """
  _check_num_clients(num_examples, num_clients)
  perm = seeded_rng(seed).permutation(num_examples)
  return finish(np.array_split(perm, num_clients))


def shards(
    labels: Any,
    num_clients: int,
    *,
    shards_per_client: int = 2,
    seed: int,
) -> list[np.ndarray]:
  """FedAvg's pathological non-IID split (McMahan et al. 2017, section 3).

  The examples are sorted by label (stable; ties broken by a seeded
  permutation so examples of one class land in shards at random), cut into
  `num_clients * shards_per_client` contiguous shards of equal size, and each
  client gets `shards_per_client` shards chosen at random. For MNIST with 100
  clients: 200 shards of 300, two per client, so most clients see two digits.
  When the shards cannot all be equal, sizes differ by at most one so every
  example is still used.

  Args:
    labels: 1-D int class labels, one per example.
    num_clients: Number of clients.
    shards_per_client: Shards dealt to each client.
    seed: Seed of the tie-breaking permutation and of the dealing.

  Returns:
    One sorted int64 index array per client.

  Raises:
    PartitionError: fewer examples than shards, or bad arguments.
  """
  labels = as_labels(labels)
  _check_num_clients(len(labels), num_clients)
  shards_per_client = check_int('shards_per_client', shards_per_client, 1)
  num_shards = num_clients * shards_per_client
  if len(labels) < num_shards:
    raise PartitionError(
        f'shards not possible: {num_clients} clients x {shards_per_client}'
        f' shards_per_client = {num_shards} shards but only {len(labels)}'
        ' examples'
    )
  rng = seeded_rng(seed)
  perm = rng.permutation(len(labels))
  order = perm[np.argsort(labels[perm], kind='stable')]
  shard_list = np.array_split(order, num_shards)
  dealt = rng.permutation(num_shards).reshape(num_clients, shards_per_client)
  return finish(
      [np.concatenate([shard_list[s] for s in row]) for row in dealt]
  )


def k_class_assignment(
    num_classes: int, num_clients: int, classes_per_client: int
) -> list[np.ndarray]:
  """The classes each client may hold in `k_class`: client i gets (i*k + j) % C.

  Consecutive blocks of k classes, wrapping around, so every class is held by
  floor or ceil(N*k / C) clients: all classes are covered and spread as evenly
  as possible whenever N*k >= C.

  Args:
    num_classes: Number of classes C.
    num_clients: Number of clients N.
    classes_per_client: k, in [1, C].

  Returns:
    For each client, the sorted class positions (0..C-1) it may hold.

  Raises:
    PartitionError: k outside [1, C], or N*k < C (some class would be unused).
  """
  check_int('classes_per_client', classes_per_client, None)
  if not 1 <= classes_per_client <= num_classes:
    raise PartitionError(
        f'classes_per_client must be in [1, {num_classes}] (the number of'
        f' classes), got {classes_per_client}'
    )
  if num_clients * classes_per_client < num_classes:
    raise PartitionError(
        f'k_class not possible: {num_clients} clients x {classes_per_client}'
        f' classes_per_client < {num_classes} classes, so some class would'
        ' belong to no client'
    )
  k = classes_per_client
  return [
      np.sort((i * k + np.arange(k)) % num_classes) for i in range(num_clients)
  ]


def k_class(
    labels: Any,
    num_clients: int,
    *,
    classes_per_client: int,
    seed: int,
) -> list[np.ndarray]:
  """FedPer's split: each client holds at most `classes_per_client` classes.

  Classes (the distinct labels present, in sorted order) are assigned by
  `k_class_assignment`; then each class's examples are shuffled (seeded) and
  split equally (sizes differ by at most one; earlier clients get the extra
  example) among the clients allowed that class, in client order. FedPer uses
  N=10 clients and k in {2, 4, 8, 10} on 10 classes.

  Args:
    labels: 1-D int class labels, one per example.
    num_clients: Number of clients.
    classes_per_client: k, in [1, number of distinct labels].
    seed: Seed of the per-class shuffles.

  Returns:
    One sorted int64 index array per client.

  Raises:
    PartitionError: impossible k, or a client would end up with no example.
  """
  labels = as_labels(labels)
  _check_num_clients(len(labels), num_clients)
  classes = np.unique(labels)
  assignment = k_class_assignment(len(classes), num_clients, classes_per_client)
  holders = [[] for _ in classes]
  for client, positions in enumerate(assignment):
    for pos in positions:
      holders[pos].append(client)
  rng = seeded_rng(seed)
  parts = [[] for _ in range(num_clients)]
  for pos, c in enumerate(classes):
    idx = rng.permutation(np.flatnonzero(labels == c))
    pieces = np.array_split(idx, len(holders[pos]))
    for client, piece in zip(holders[pos], pieces):
      parts[client].append(piece)
  result = finish([np.concatenate(p) for p in parts])
  empty = [i for i, p in enumerate(result) if p.size == 0]
  if empty:
    raise PartitionError(
        f'k_class left {len(empty)} client(s) without examples (first:'
        f' client {empty[0]}): too few examples per class for {num_clients}'
        ' clients'
    )
  return result


def dirichlet(
    labels: Any,
    num_clients: int,
    *,
    alpha: float,
    seed: int,
    min_size: int = 10,
    max_tries: int = 1000,
) -> list[np.ndarray]:
  """Label-skewed split with client proportions ~ Dirichlet(alpha) per class.

  Follows FedML / FedGKT's `partition_data(..., 'hetero', ...)`: for each
  class, shuffle its examples, draw proportions p ~ Dir(alpha * 1_N), zero the
  proportion of clients already holding more than n/N examples (which keeps
  client sizes from running away), renormalize, and cut the class at the
  cumulative proportions. The whole draw is repeated until every client has at
  least `min_size` examples. Small alpha -> few classes per client; large alpha
  -> close to IID.

  Args:
    labels: 1-D int class labels, one per example.
    num_clients: Number of clients.
    alpha: Dirichlet concentration, > 0.
    seed: Seed of all draws.
    min_size: Minimum examples per client.
    max_tries: Number of full draws before giving up.

  Returns:
    One sorted int64 index array per client.

  Raises:
    PartitionError: alpha <= 0, num_clients * min_size > examples, or no draw
      met min_size within max_tries.
  """
  labels = as_labels(labels)
  n = len(labels)
  _check_num_clients(n, num_clients)
  if (
      isinstance(alpha, bool)
      or not isinstance(alpha, (int, float, np.number))
      or not np.isfinite(alpha)
      or alpha <= 0
  ):
    raise PartitionError(f'alpha must be a finite number > 0, got {alpha!r}')
  min_size = check_int('min_size', min_size, 0)
  max_tries = check_int('max_tries', max_tries, 1)
  if num_clients * min_size > n:
    raise PartitionError(
        f'dirichlet not possible: {num_clients} clients x min_size {min_size}'
        f' > {n} examples'
    )
  rng = seeded_rng(seed)
  class_indices = [np.flatnonzero(labels == c) for c in np.unique(labels)]
  concentration = np.full(num_clients, float(alpha))
  for _ in range(max_tries):
    pieces = [[] for _ in range(num_clients)]
    sizes = np.zeros(num_clients, dtype=np.int64)
    for idx in class_indices:
      idx = rng.permutation(idx)
      p = rng.dirichlet(concentration)
      p = p * (sizes < n / num_clients)
      total = p.sum()
      if total <= 0:  # Every eligible draw underflowed (tiny alpha).
        p = (sizes < n / num_clients).astype(np.float64)
        total = p.sum()
      cuts = (np.cumsum(p / total) * len(idx)).astype(np.int64)[:-1]
      for client, piece in enumerate(np.split(idx, cuts)):
        pieces[client].append(piece)
        sizes[client] += len(piece)
    if sizes.min() >= min_size:
      return finish([np.concatenate(p) for p in pieces])
  raise PartitionError(
      f'dirichlet(alpha={alpha}) gave some client fewer than min_size='
      f'{min_size} examples in {max_tries} tries; lower min_size or raise alpha'
  )


def natural(groups: Any) -> list[np.ndarray]:
  """One client per group id, clients in sorted order of the unique ids.

  Args:
    groups: 1-D array with the group id (e.g. writer) of each example.

  Returns:
    One sorted int64 index array per distinct group.

  Raises:
    PartitionError: `groups` is not 1-D or is empty.
  """
  groups = np.asarray(groups)
  if groups.ndim != 1 or groups.size == 0:
    raise PartitionError(
        f'groups must be a non-empty 1-D array, got shape {groups.shape}'
    )
  order = np.argsort(groups, kind='stable')
  _, starts = np.unique(groups[order], return_index=True)
  return finish(np.split(order, starts[1:]))


# The registry: a flag value -> a partitioner with a uniform signature.

_OPTIONS = {
    'iid': (),
    'shards': ('shards_per_client',),
    'k_class': ('classes_per_client',),
    'dirichlet': ('alpha', 'min_size', 'max_tries'),
}
_REQUIRED = {'k_class': ('classes_per_client',), 'dirichlet': ('alpha',)}
_ALL_OPTIONS = frozenset(o for opts in _OPTIONS.values() for o in opts)

Partitioner = Callable[..., list[np.ndarray]]


def _registered(name: str, fn: Partitioner) -> Partitioner:
  """Wraps `fn` as `(labels, num_clients, *, seed, **options)`.

  A caller can pass every partition flag uniformly: options that belong to
  another partitioner (e.g. `alpha` for 'iid') and options set to None are
  ignored; an option no partitioner knows, or a missing required option, is a
  one-line PartitionError.
  """

  def partition(
      labels: Any, num_clients: int, *, seed: int, **options: Any
  ) -> list[np.ndarray]:
    unknown = sorted(set(options) - _ALL_OPTIONS)
    if unknown:
      raise PartitionError(
          f'unknown partition option {unknown[0]!r}; allowed:'
          f' {", ".join(sorted(_ALL_OPTIONS))}'
      )
    kwargs = {
        k: v
        for k, v in options.items()
        if k in _OPTIONS[name] and v is not None
    }
    missing = [o for o in _REQUIRED.get(name, ()) if o not in kwargs]
    if missing:
      raise PartitionError(
          f'partition {name!r} needs option {missing[0]} (e.g.'
          f' --{missing[0]}=...)'
      )
    if name == 'iid':
      return fn(len(labels), num_clients, seed=seed)
    return fn(labels, num_clients, seed=seed, **kwargs)

  partition.__name__ = f'{name}_partition'
  partition.__doc__ = f'`{fn.__name__}` with the uniform registry signature.'
  return partition


PARTITIONERS: dict[str, Partitioner] = {
    'iid': _registered('iid', iid),
    'shards': _registered('shards', shards),
    'k_class': _registered('k_class', k_class),
    'dirichlet': _registered('dirichlet', dirichlet),
}
