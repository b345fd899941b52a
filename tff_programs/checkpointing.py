"""Resume points: server state, sampler state and private client states.

A checkpoint of round k is
  checkpoints/program_state_<k>/     `tff.program.FileProgramStateManager`:
                                      OrderedDict(round, sampler, server_state)
  checkpoints/client_states_<k>.npz  private client states (FedPer), if any.
The client-state file is written (atomically) before the program state, so a
version that `load_latest` sees always has its client states. Old versions are
pruned together (`keep_total`).
"""

from __future__ import annotations

import asyncio
import collections
import os
import re
from collections.abc import Callable, Mapping
from typing import Any, Optional

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

_PREFIX = 'program_state_'
_CLIENT_FILE = re.compile(r'^client_states_(\d+)\.npz$')


def _run(coro):
  return asyncio.run(coro)


class CheckpointManager:
  """Saves and restores the program state of a training run."""

  def __init__(self, directory: str, *, keep_total: int = 3):
    self.directory = directory
    os.makedirs(directory, exist_ok=True)
    self._states = tff.program.FileProgramStateManager(
        directory, prefix=_PREFIX, keep_total=keep_total, keep_first=False
    )

  def versions(self) -> list[int]:
    return _run(self._states.get_versions()) or []

  def latest_round(self) -> Optional[int]:
    versions = self.versions()
    return versions[-1] if versions else None

  def save(
      self,
      round_num: int,
      server_state: Any,
      *,
      seed: int,
      client_states: Optional[Mapping[str, Any]] = None,
  ) -> None:
    """Saves round `round_num` (overwrites nothing; a saved round is skipped)."""
    if round_num in self.versions():
      return
    if client_states is not None:
      _save_client_states(
          os.path.join(self.directory, f'client_states_{round_num}.npz'),
          client_states,
      )
    program_state = collections.OrderedDict(
        round=np.int64(round_num),
        sampler=collections.OrderedDict(seed=np.int64(seed), round=np.int64(round_num)),
        server_state=server_state,
    )
    _run(self._states.save(program_state, round_num))
    self._prune_client_states()

  def load(
      self,
      round_num: int,
      server_template: Any,
      client_template: Optional[Callable[[str], Any]] = None,
  ) -> tuple[Any, dict[str, Any], int]:
    """Returns (server_state, client_states, sampler_seed) saved at `round_num`."""
    template = collections.OrderedDict(
        round=np.int64(0),
        sampler=collections.OrderedDict(seed=np.int64(0), round=np.int64(0)),
        server_state=server_template,
    )
    program_state = _run(self._states.load(round_num, template))
    client_states: dict[str, Any] = {}
    path = os.path.join(self.directory, f'client_states_{round_num}.npz')
    if client_template is not None and os.path.exists(path):
      client_states = _load_client_states(path, client_template)
    return (
        program_state['server_state'],
        client_states,
        int(program_state['sampler']['seed']),
    )

  def _prune_client_states(self) -> None:
    keep = set(self.versions())
    for name in os.listdir(self.directory):
      match = _CLIENT_FILE.match(name)
      if match and int(match.group(1)) not in keep:
        os.remove(os.path.join(self.directory, name))


def _save_client_states(path: str, client_states: Mapping[str, Any]) -> None:
  arrays = {}
  for client_id, state in client_states.items():
    for i, leaf in enumerate(tf.nest.flatten(state)):
      arrays[f'{client_id}/{i}'] = np.asarray(leaf)
  tmp = f'{path}.tmp'
  with open(tmp, 'wb') as f:
    np.savez(f, **arrays)
  os.replace(tmp, path)


def _load_client_states(
    path: str, client_template: Callable[[str], Any]
) -> dict[str, Any]:
  with np.load(path) as data:
    leaves: dict[str, dict[int, np.ndarray]] = collections.defaultdict(dict)
    for key in data.files:
      client_id, index = key.rsplit('/', 1)
      leaves[client_id][int(index)] = data[key]
  states = {}
  for client_id, by_index in leaves.items():
    template = client_template(client_id)
    states[client_id] = tf.nest.pack_sequence_as(
        template, [by_index[i] for i in range(len(by_index))]
    )
  return states
