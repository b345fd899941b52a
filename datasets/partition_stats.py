"""What a partition gives each client: label histograms, their table, per-client test sets.

`label_histogram` counts the classes each client holds, `format_histogram`
prints them as a table (a run's log), and `split_test_like_train` gives each
client a test set drawn from the classes it trains on (for personalization
metrics). Pure numpy; `datasets.partition` re-exports these names.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

# pylint: disable=g-importing-member
from datasets.partition_base import PartitionError
from datasets.partition_base import as_labels
from datasets.partition_base import finish
from datasets.partition_base import seeded_rng
# pylint: enable=g-importing-member


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
  labels = as_labels(labels)
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
  test_labels = as_labels(test_labels)
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
  rng = seeded_rng(seed)
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
  return finish(
      [np.concatenate(p) if p else np.zeros(0, np.int64) for p in parts]
  )
