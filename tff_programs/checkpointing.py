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
import zipfile
from collections.abc import Callable, Mapping, MutableMapping
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
      into: Optional[MutableMapping[str, Any]] = None,
  ) -> tuple[Any, MutableMapping[str, Any], int]:
    """Returns (server_state, client_states, sampler_seed) saved at `round_num`.

    Client states are put into `into` (a dict by default).
    """
    template = collections.OrderedDict(
        round=np.int64(0),
        sampler=collections.OrderedDict(seed=np.int64(0), round=np.int64(0)),
        server_state=server_template,
    )
    program_state = _run(self._states.load(round_num, template))
    client_states = into if into is not None else {}
    path = os.path.join(self.directory, f'client_states_{round_num}.npz')
    if client_template is not None and os.path.exists(path):
      _load_client_states(path, client_template, client_states)
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
  """Writes an .npz (a zip of .npy) one array at a time: a store that spills to
  disk is streamed, never loaded whole."""
  tmp = f'{path}.tmp'
  with zipfile.ZipFile(tmp, 'w', allowZip64=True) as archive:
    for client_id in client_states:
      for i, leaf in enumerate(tf.nest.flatten(client_states[client_id])):
        with archive.open(f'{client_id}/{i}.npy', 'w', force_zip64=True) as f:
          np.lib.format.write_array(f, np.asarray(leaf), allow_pickle=False)
  os.replace(tmp, path)


def _load_client_states(
    path: str, client_template: Callable[[str], Any], into: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
  """Reads client states one client at a time into `into` (e.g. a spilling store)."""
  with np.load(path) as data:
    by_client: dict[str, list[str]] = collections.defaultdict(list)
    for key in data.files:
      by_client[key.rsplit('/', 1)[0]].append(key)
    for client_id, keys in by_client.items():
      keys.sort(key=lambda k: int(k.rsplit('/', 1)[1]))
      into[client_id] = tf.nest.pack_sequence_as(
          client_template(client_id), [data[k] for k in keys])
  return into
