"""Private client states (FedPer heads, FedGKT edge models), bounded in memory.

`ClientStateStore` is a mapping client id -> state (a nest of numpy arrays).
It holds states in RAM up to `memory_budget_bytes`; past the budget the least
recently used states are written to `<directory>/<client id>.npz` and read back
on access. With 3,400 EMNIST writers or 1,146 Shakespeare roles and a large
personal head, or FedGKT's per-client edge models, the states of all clients
need not fit in memory at once.

Checkpoints (`tff_programs/checkpointing.py`) stream the store one client at a
time, so saving or restoring never needs all states in memory either.

Spill files live only as long as the store: a new store deletes those of an
earlier one (they are not a checkpoint, and would be stale), and `close()`
(or leaving a `with` block) deletes its own, then the directory if the store
created it and it is empty.
"""

from __future__ import annotations

import collections
import contextlib
import os
from collections.abc import Callable, Iterator, MutableMapping
from typing import Any, Optional

import numpy as np
import tensorflow as tf

StateTemplate = Callable[[str], Any]


def state_nbytes(state: Any) -> int:
  return int(sum(np.asarray(leaf).nbytes for leaf in tf.nest.flatten(state)))


class ClientStateStore(MutableMapping):
  """Client states in RAM up to a budget, least recently used ones on disk."""

  def __init__(
      self,
      template: StateTemplate,
      *,
      directory: Optional[str] = None,
      memory_budget_bytes: Optional[int] = None,
  ):
    """Args:
      template: client id -> a state of the right structure (to unflatten files).
      directory: where spilled states go (required with a budget).
      memory_budget_bytes: RAM for states; None = unbounded (no spilling).
    """
    if memory_budget_bytes is not None and directory is None:
      raise ValueError('a client-state memory budget needs a spill directory')
    self._template = template
    self._directory = directory
    self._budget = memory_budget_bytes
    self._memory: collections.OrderedDict[str, Any] = collections.OrderedDict()
    self._sizes: dict[str, int] = {}
    self._on_disk: set[str] = set()
    self._closed = False
    self._created_directory = directory is not None and not os.path.isdir(directory)
    if directory is not None:
      os.makedirs(directory, exist_ok=True)
      self._remove_spill_files()  # never read the spills of an earlier store

  def _remove_spill_files(self) -> None:
    """Deletes `*.npz` spills and `*.npz.tmp` ones an interrupted spill left."""
    for name in os.listdir(self._directory):
      if name.endswith(('.npz', '.npz.tmp')):
        with contextlib.suppress(FileNotFoundError):
          os.remove(os.path.join(self._directory, name))

  def close(self) -> None:
    """Drops all states and deletes the spill files (and the directory if this
    store created it and it is now empty). Idempotent; the store is unusable
    afterwards."""
    if self._closed:
      return
    self._closed = True
    self._memory.clear()
    self._sizes.clear()
    self._on_disk.clear()
    if self._directory is not None and os.path.isdir(self._directory):
      self._remove_spill_files()
      if self._created_directory:
        with contextlib.suppress(OSError):  # not empty: someone else's files
          os.rmdir(self._directory)

  def __enter__(self) -> 'ClientStateStore':
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()

  def _check_open(self) -> None:
    if self._closed:
      raise RuntimeError('ClientStateStore is closed (its spilled states are deleted)')

  def clear(self) -> None:
    """Removes all states (without reading spilled ones back, unlike the mixin's)."""
    self._check_open()
    for client_id in list(self._on_disk):
      os.remove(self._path(client_id))
    self._on_disk.clear()
    self._memory.clear()
    self._sizes.clear()

  @property
  def bytes_in_memory(self) -> int:
    return sum(self._sizes.values())

  @property
  def spilled(self) -> frozenset[str]:
    return frozenset(self._on_disk)

  def _path(self, client_id: str) -> str:
    return os.path.join(self._directory, f'{client_id}.npz')

  def __setitem__(self, client_id: str, state: Any) -> None:
    self._check_open()
    state = tf.nest.map_structure(np.asarray, state)
    self._memory[client_id] = state
    self._memory.move_to_end(client_id)
    self._sizes[client_id] = state_nbytes(state)
    if client_id in self._on_disk:
      os.remove(self._path(client_id))
      self._on_disk.discard(client_id)
    self._evict(keep=client_id)

  def __getitem__(self, client_id: str) -> Any:
    self._check_open()
    if client_id in self._memory:
      self._memory.move_to_end(client_id)
      return self._memory[client_id]
    if client_id not in self._on_disk:
      raise KeyError(client_id)
    with np.load(self._path(client_id)) as data:
      leaves = [data[f'arr_{i}'] for i in range(len(data.files))]
    state = tf.nest.pack_sequence_as(self._template(client_id), leaves)
    self[client_id] = state  # back in RAM, most recently used
    return state

  def __delitem__(self, client_id: str) -> None:
    self._check_open()
    if client_id not in self:
      raise KeyError(client_id)
    if client_id in self._memory:
      del self._memory[client_id]
      del self._sizes[client_id]
    if client_id in self._on_disk:
      os.remove(self._path(client_id))
      self._on_disk.discard(client_id)

  def __contains__(self, client_id: object) -> bool:
    self._check_open()
    return client_id in self._memory or client_id in self._on_disk

  def __iter__(self) -> Iterator[str]:
    self._check_open()
    return iter(sorted(set(self._memory) | self._on_disk))

  def __len__(self) -> int:
    self._check_open()
    return len(set(self._memory) | self._on_disk)

  def _evict(self, keep: str) -> None:
    if self._budget is None:
      return
    while self.bytes_in_memory > self._budget and len(self._memory) > 1:
      client_id = next(iter(self._memory))
      if client_id == keep:
        self._memory.move_to_end(client_id)
        client_id = next(iter(self._memory))
      # Written before it leaves RAM: a failed or interrupted spill (full disk,
      # Ctrl-C) loses no state, so the exit checkpoint still has every client.
      tmp = self._path(client_id) + '.tmp'
      try:
        with open(tmp, 'wb') as f:
          np.savez(f, *tf.nest.flatten(self._memory[client_id]))
        os.replace(tmp, self._path(client_id))
      except BaseException:
        with contextlib.suppress(FileNotFoundError):
          os.remove(tmp)
        raise
      self._on_disk.add(client_id)
      del self._memory[client_id]
      del self._sizes[client_id]
