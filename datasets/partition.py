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

`label_histogram` / `format_histogram` report what each client holds, and
`split_test_like_train` gives each client a test set drawn from the classes it
trains on (for personalization metrics). `PARTITIONERS` maps a flag value to a
partitioner with the uniform signature
`(labels, num_clients, *, seed, **options)`.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import numpy as np


class PartitionError(ValueError):
  """One-line error: the requested partition is impossible or malformed."""


def _rng(seed: int) -> np.random.Generator:
  """A generator for `seed`, rejecting seeds numpy would reject less clearly."""
  if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
    raise PartitionError(f'seed must be an int, got {seed!r}')
  if seed < 0:
    raise PartitionError(f'seed must be >= 0, got {seed}')
  return np.random.default_rng(int(seed))


def _check_int(name: str, value: Any, minimum: Optional[int]) -> int:
  """Returns `value` as an int, or raises if it is not an int >= `minimum`."""
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
    raise PartitionError(f'{name} must be an int, got {value!r}')
  if minimum is not None and value < minimum:
    raise PartitionError(f'{name} must be >= {minimum}, got {value}')
  return int(value)


def _check_num_clients(num_examples: int, num_clients: int) -> None:
  _check_int('num_clients', num_clients, 1)
  if num_examples < num_clients:
    raise PartitionError(
        f'cannot split {num_examples} examples among {num_clients} clients:'
        ' fewer examples than clients'
    )


def _as_labels(labels: Any) -> np.ndarray:
  """Returns labels as a 1-D int64 array of non-negative class ids."""
  labels = np.asarray(labels)
  if labels.ndim != 1:
    raise PartitionError(
        f'labels must be a 1-D array of class ids, got shape {labels.shape}'
    )
  if labels.size and not np.issubdtype(labels.dtype, np.integer):
    raise PartitionError(f'labels must be integers, got dtype {labels.dtype}')
  labels = labels.astype(np.int64, copy=False)
  if labels.size and labels.min() < 0:
    raise PartitionError(f'labels must be >= 0, got {labels.min()}')
  return labels


def _finish(parts: Sequence[Any]) -> list[np.ndarray]:
  """Sorted int64 index arrays, the common output format."""
  return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]


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
  perm = _rng(seed).permutation(num_examples)
  return _finish(np.array_split(perm, num_clients))


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
  labels = _as_labels(labels)
  _check_num_clients(len(labels), num_clients)
  shards_per_client = _check_int('shards_per_client', shards_per_client, 1)
  num_shards = num_clients * shards_per_client
  if len(labels) < num_shards:
    raise PartitionError(
        f'shards not possible: {num_clients} clients x {shards_per_client}'
        f' shards_per_client = {num_shards} shards but only {len(labels)}'
        ' examples'
    )
  rng = _rng(seed)
  perm = rng.permutation(len(labels))
  order = perm[np.argsort(labels[perm], kind='stable')]
  shard_list = np.array_split(order, num_shards)
  dealt = rng.permutation(num_shards).reshape(num_clients, shards_per_client)
  return _finish(
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
  _check_int('classes_per_client', classes_per_client, None)
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
  labels = _as_labels(labels)
  _check_num_clients(len(labels), num_clients)
  classes = np.unique(labels)
  assignment = k_class_assignment(len(classes), num_clients, classes_per_client)
  holders = [[] for _ in classes]
  for client, positions in enumerate(assignment):
    for pos in positions:
      holders[pos].append(client)
  rng = _rng(seed)
  parts = [[] for _ in range(num_clients)]
  for pos, c in enumerate(classes):
    idx = rng.permutation(np.flatnonzero(labels == c))
    pieces = np.array_split(idx, len(holders[pos]))
    for client, piece in zip(holders[pos], pieces):
      parts[client].append(piece)
  result = _finish([np.concatenate(p) for p in parts])
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
  labels = _as_labels(labels)
  n = len(labels)
  _check_num_clients(n, num_clients)
  if (
      isinstance(alpha, bool)
      or not isinstance(alpha, (int, float, np.number))
      or not np.isfinite(alpha)
      or alpha <= 0
  ):
    raise PartitionError(f'alpha must be a finite number > 0, got {alpha!r}')
  min_size = _check_int('min_size', min_size, 0)
  max_tries = _check_int('max_tries', max_tries, 1)
  if num_clients * min_size > n:
    raise PartitionError(
        f'dirichlet not possible: {num_clients} clients x min_size {min_size}'
        f' > {n} examples'
    )
  rng = _rng(seed)
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
      return _finish([np.concatenate(p) for p in pieces])
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
  return _finish(np.split(order, starts[1:]))


def label_histogram(
    labels: Any, parts: Sequence[np.ndarray], num_classes: int
) -> np.ndarray:
  """Counts of each class held by each client.

  Args:
    labels: 1-D int class labels of the partitioned examples.
    parts: Index arrays, one per client (as returned by a partitioner).
    num_classes: Number of classes (columns).

  Returns:
    int64 array of shape (len(parts), num_classes).

  Raises:
    PartitionError: a label is outside [0, num_classes).
  """
  labels = _as_labels(labels)
  if labels.size and labels.max() >= num_classes:
    raise PartitionError(
        f'label {labels.max()} is outside [0, {num_classes}) for'
        f' num_classes={num_classes}'
    )
  hist = np.zeros((len(parts), num_classes), dtype=np.int64)
  for i, part in enumerate(parts):
    hist[i] = np.bincount(labels[part], minlength=num_classes)
  return hist


def format_histogram(hist: np.ndarray, max_rows: int = 20) -> str:
  """A readable table of a label histogram: client, n, then per-class counts.

  Shows the first `max_rows` clients, then a line saying how many were left
  out, then a line summarising sizes and classes per client over all clients.

  Args:
    hist: (clients, classes) counts, as from `label_histogram`.
    max_rows: Maximum number of client rows printed.

  Returns:
    The table as a multi-line string (no trailing newline).
  """
  hist = np.asarray(hist, dtype=np.int64)
  num_clients, num_classes = hist.shape
  sizes = hist.sum(axis=1)
  width = max(
      [len(str(int(hist.max()))) if hist.size else 1]
      + [len(str(c)) for c in range(num_classes)]
  )
  n_width = max(len('n'), len(str(int(sizes.max()))) if sizes.size else 1)
  c_width = max(len('client'), len(str(max(num_clients - 1, 0))))
  header = (
      f'{"client":>{c_width}} {"n":>{n_width}} '
      + ' '.join(f'{c:>{width}}' for c in range(num_classes))
  )
  lines = [header]
  for i in range(min(num_clients, max_rows)):
    lines.append(
        f'{i:>{c_width}} {int(sizes[i]):>{n_width}} '
        + ' '.join(f'{int(v):>{width}}' for v in hist[i])
    )
  if num_clients > max_rows:
    lines.append(f'... ({num_clients - max_rows} more clients)')
  if num_clients:
    classes_held = (hist > 0).sum(axis=1)
    lines.append(
        f'{num_clients} clients, {int(sizes.sum())} examples; examples per'
        f' client min/mean/max {int(sizes.min())}/{sizes.mean():.1f}/'
        f'{int(sizes.max())}; classes per client min/mean/max'
        f' {int(classes_held.min())}/{classes_held.mean():.1f}/'
        f'{int(classes_held.max())}'
    )
  return '\n'.join(lines)


def _proportional_counts(total: int, weights: np.ndarray) -> np.ndarray:
  """Integer counts summing to `total`, proportional to `weights`.

  Largest-remainder rounding; ties go to the earlier entry, so the result is
  deterministic.
  """
  exact = total * weights / weights.sum()
  counts = np.floor(exact).astype(np.int64)
  remainder = total - counts.sum()
  if remainder:
    order = np.argsort(-(exact - counts), kind='stable')
    counts[order[:remainder]] += 1
  return counts


def split_test_like_train(
    test_labels: Any, train_hist: np.ndarray, *, seed: int
) -> list[np.ndarray]:
  """Per-client test sets whose label mix follows each client's train mix.

  For each class c, the test examples of c are shuffled (seeded) and split,
  disjointly, among the clients whose train histogram has class c,
  proportionally to their train counts of c (largest-remainder rounding). A
  client never gets a class it does not train on; test examples of a class no
  client trains on go to no client (they remain in the central test set).

  Args:
    test_labels: 1-D int labels of the test set.
    train_hist: (clients, classes) train label histogram.
    seed: Seed of the per-class shuffles.

  Returns:
    One sorted int64 index array (into the test set) per client; possibly
    empty for a client.

  Raises:
    PartitionError: a test label is outside the histogram's classes.
  """
  test_labels = _as_labels(test_labels)
  train_hist = np.asarray(train_hist, dtype=np.int64)
  if train_hist.ndim != 2:
    raise PartitionError(
        f'train_hist must be (clients, classes), got shape {train_hist.shape}'
    )
  num_clients, num_classes = train_hist.shape
  if test_labels.size and test_labels.max() >= num_classes:
    raise PartitionError(
        f'test label {test_labels.max()} is outside the {num_classes} classes'
        ' of train_hist'
    )
  rng = _rng(seed)
  parts = [[] for _ in range(num_clients)]
  for c in range(num_classes):
    idx = np.flatnonzero(test_labels == c)
    holders = np.flatnonzero(train_hist[:, c] > 0)
    if idx.size == 0 or holders.size == 0:
      continue
    idx = rng.permutation(idx)
    counts = _proportional_counts(len(idx), train_hist[holders, c])
    for client, piece in zip(holders, np.split(idx, np.cumsum(counts)[:-1])):
      parts[client].append(piece)
  return _finish(
      [np.concatenate(p) if p else np.zeros(0, np.int64) for p in parts]
  )


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
