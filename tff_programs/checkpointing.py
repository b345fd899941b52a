"""Resume points: server state, sampler state and private client states.

A checkpoint of round k is
  checkpoints/program_state_<k>/     `tff.program.FileProgramStateManager`:
                                      OrderedDict(round, sampler, server_state)
  checkpoints/client_states_<k>.npz  private client states (FedPer, FedGKT), if any.
The client-state file is written (atomically) before the program state, so a
complete save of round k always has both. Old versions are pruned together
(`keep_total`).

Resuming (`load_latest`) takes the newest *readable* version: a version whose
files are truncated or corrupted (a full disk, a copy cut short, a crash of
the file system), or that lacks the client states its algorithm keeps, is
skipped with one warning line, and the run goes on from the version before.
Redoing the skipped rounds replaces their unreadable files.

Temporary files of an interrupted save (`client_states_<k>.npz.tmp`, TFF's
`program_state_<k>_temp<nnnn>/` folders) and client-state files without their
program state are removed when a manager opens the folder.
"""

from __future__ import annotations

import asyncio
import collections
import os
import re
import shutil
import zipfile
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any, NamedTuple, Optional

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff
from absl import logging

_PREFIX = 'program_state_'
_CLIENT_FILE = re.compile(r'^client_states_(\d+)\.npz$')
# `tff.program.FileProgramStateManager` saves into `<prefix><k>_temp<random>`
# and renames it (file_utils.write_saved_model); `_save_client_states` writes
# `<file>.tmp` and renames it. Either is left behind by an interrupted save.
_STALE = re.compile(r'^(' + _PREFIX + r'\d+_temp\d+|client_states_\d+\.npz\.tmp)$')


class CheckpointError(ValueError):
  """A one-line error about a checkpoint that cannot be used."""


class Restored(NamedTuple):
  """A loaded checkpoint: the round it ends with and what the loop needs."""

  round_num: int
  server_state: Any
  client_states: MutableMapping[str, Any]
  seed: int


def _run(coro):
  return asyncio.run(coro)


def _reason(error: BaseException) -> str:
  """`Type: first line of the message`, at most 200 characters (for one log line)."""
  lines = str(error).strip().splitlines()
  text = type(error).__name__ + (f': {lines[0]}' if lines else '')
  return text if len(text) <= 200 else text[:197] + '...'


class CheckpointManager:
  """Saves and restores the program state of a training run."""

  def __init__(self, directory: str, *, keep_total: int = 3):
    self.directory = directory
    os.makedirs(directory, exist_ok=True)
    self._states = tff.program.FileProgramStateManager(
        directory, prefix=_PREFIX, keep_total=keep_total, keep_first=False
    )
    self._unreadable: set[int] = set()  # versions `load_latest` skipped
    self._remove_stale_files()

  def versions(self) -> list[int]:
    return _run(self._states.get_versions()) or []

  def latest_round(self) -> Optional[int]:
    """The newest saved round, readable or not (`load_latest` checks)."""
    versions = self.versions()
    return versions[-1] if versions else None

  def _client_path(self, round_num: int) -> str:
    return os.path.join(self.directory, f'client_states_{round_num}.npz')

  def save(
      self,
      round_num: int,
      server_state: Any,
      *,
      seed: int,
      client_states: Optional[Mapping[str, Any]] = None,
  ) -> None:
    """Saves round `round_num`.

    A round already saved is skipped, unless `load_latest` found it
    unreadable: then its files are replaced.
    """
    if round_num in self.versions():
      if round_num not in self._unreadable:
        return
      shutil.rmtree(os.path.join(self.directory, f'{_PREFIX}{round_num}'))
    self._unreadable.discard(round_num)
    try:
      if client_states is not None:
        _save_client_states(self._client_path(round_num), client_states)
      program_state = collections.OrderedDict(
          round=np.int64(round_num),
          sampler=collections.OrderedDict(seed=np.int64(seed), round=np.int64(round_num)),
          server_state=server_state,
      )
      _run(self._states.save(program_state, round_num))
    except BaseException:
      self._remove_stale_files()
      raise
    self._prune_client_states()

  def load(
      self,
      round_num: int,
      server_template: Any,
      client_template: Optional[Callable[[str], Any]] = None,
      into: Optional[MutableMapping[str, Any]] = None,
  ) -> tuple[Any, MutableMapping[str, Any], int]:
    """Returns (server_state, client_states, sampler_seed) saved at `round_num`.

    Client states (read when `client_template` is given) are put into `into`
    (a dict by default).

    Raises:
      CheckpointError: `client_template` is given but the version has no
        client-state file (its clients would silently restart from scratch).
      Exception: whatever TF, zipfile or numpy raise on unreadable files.
    """
    template = collections.OrderedDict(
        round=np.int64(0),
        sampler=collections.OrderedDict(seed=np.int64(0), round=np.int64(0)),
        server_state=server_template,
    )
    program_state = _run(self._states.load(round_num, template))
    client_states = into if into is not None else {}
    if client_template is not None:
      path = self._client_path(round_num)
      if not os.path.exists(path):
        raise CheckpointError(
            f'checkpoint of round {round_num} has no client states ({path} is missing)')
      _load_client_states(path, client_template, client_states)
    return (
        program_state['server_state'],
        client_states,
        int(program_state['sampler']['seed']),
    )

  def load_latest(
      self,
      server_template: Any,
      client_template: Optional[Callable[[str], Any]] = None,
      into: Optional[MutableMapping[str, Any]] = None,
  ) -> Optional[Restored]:
    """Loads the newest readable version; None when nothing is saved.

    An unreadable version (truncated or corrupted files, a client-state file
    missing or damaged while `client_template` is given, a structure unlike
    the templates) is skipped with one warning line naming it and why; the
    next save of that round replaces it. With `client_template`, `into` (a
    dict by default) is emptied before each try, so it ends up holding
    exactly the loaded version's client states.

    Raises:
      CheckpointError: versions exist but none is readable.
    """
    versions = self.versions()
    if not versions:
      return None
    client_states = into if into is not None else {}
    newest_reason = None
    for round_num in reversed(versions):
      if client_template is not None:
        client_states.clear()
      try:
        state, client_states, seed = self.load(
            round_num, server_template, client_template, into=client_states)
      except Exception as e:  # pylint: disable=broad-except
        reason = _reason(e)
        newest_reason = newest_reason or f'round {round_num}: {reason}'
        self._unreadable.add(round_num)
        logging.warning('Skipping the checkpoint of round %d in %s (unreadable: %s)',
                        round_num, self.directory, reason)
        continue
      return Restored(round_num, state, client_states, seed)
    if client_template is not None:
      client_states.clear()
    raise CheckpointError(
        f'no readable checkpoint in {self.directory} (rounds {versions}; {newest_reason})')

  def saved_client_states(self, round_num: int,
                          client_template: Callable[[str], Any]) -> 'SavedClientStates':
    """A read-only mapping over the client states saved with round `round_num`
    (each client read from disk when asked for; nothing is held in memory)."""
    path = self._client_path(round_num)
    if not os.path.exists(path):
      raise CheckpointError(f'checkpoint of round {round_num} has no client states ({path} is missing)')
    return SavedClientStates(path, client_template)

  def _prune_client_states(self) -> None:
    keep = set(self.versions())
    for name in os.listdir(self.directory):
      match = _CLIENT_FILE.match(name)
      if match and int(match.group(1)) not in keep:
        os.remove(os.path.join(self.directory, name))

  def _remove_stale_files(self) -> None:
    """Removes what interrupted saves leave: temp files/folders, and
    client-state files whose program state was never written."""
    for name in os.listdir(self.directory):
      if _STALE.match(name):
        path = os.path.join(self.directory, name)
        if os.path.isdir(path):
          shutil.rmtree(path, ignore_errors=True)
        else:
          os.remove(path)
    self._prune_client_states()


def _save_client_states(path: str, client_states: Mapping[str, Any]) -> None:
  """Writes an .npz (a zip of .npy) one array at a time: a store that spills to
  disk is streamed, never loaded whole. Nothing is left at `path` or beside it
  if writing fails."""
  tmp = f'{path}.tmp'
  try:
    with zipfile.ZipFile(tmp, 'w', allowZip64=True) as archive:
      for client_id in client_states:
        for i, leaf in enumerate(tf.nest.flatten(client_states[client_id])):
          with archive.open(f'{client_id}/{i}.npy', 'w', force_zip64=True) as f:
            np.lib.format.write_array(f, np.asarray(leaf), allow_pickle=False)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


class SavedClientStates(Mapping):
  """Client id -> state, read one client at a time from a checkpoint's .npz.

  What a finished run hands back (`TrainingResult.client_states`) once its
  spilling store is closed: every client's final state, none loaded until
  asked for. The file belongs to the run's checkpoints and stays valid while
  the run is not resumed (a later save may prune it).
  """

  def __init__(self, path: str, client_template: Callable[[str], Any]):
    self.path = path
    self._template = client_template
    with np.load(path) as data:
      keys: dict[str, list[str]] = collections.defaultdict(list)
      for key in data.files:
        keys[key.rsplit('/', 1)[0]].append(key)
    self._keys = {c: sorted(k, key=lambda name: int(name.rsplit('/', 1)[1]))
                  for c, k in keys.items()}

  def __getitem__(self, client_id: str) -> Any:
    if client_id not in self._keys:
      raise KeyError(client_id)
    with np.load(self.path) as data:
      return tf.nest.pack_sequence_as(self._template(client_id),
                                      [data[k] for k in self._keys[client_id]])

  def __iter__(self):
    return iter(sorted(self._keys))

  def __len__(self) -> int:
    return len(self._keys)


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
