"""Resume points: server state, sampler state and private client states.

A checkpoint of round k is
  checkpoints/server_state_<k>.npz   round, sampler seed, the server state's
                                      leaf paths and its leaves (one .npy each)
  checkpoints/client_states_<k>.npz  private client states (FedPer, FedGKT), if any.
Both are zips of .npy arrays written one array at a time into `<file>.tmp`
and renamed, so a file is either whole or absent. The client-state file is
written before the server state, so a complete save of round k always has
both. Old versions are pruned together (`keep_total`).

Why not `tff.program.FileProgramStateManager` (the first format, below): it
writes a TF SavedModel per save, and every `tf.saved_model.save` leaves about
one state's size in the process (the MNIST CNN's: ~6 MB a checkpoint, 0.6 GB
over 1,000 rounds at one checkpoint every 10; TF issues #32234, #40171).
numpy archives keep nothing in the process and take 5 ms a save, not 124.

Folders written by the first format (`program_state_<k>/`, a SavedModel
holding OrderedDict(round, sampler, server_state)) are still read, so runs
started before the change resume; their versions are pruned like the new ones.

Resuming (`load_latest`) takes the newest *readable* version: a version whose
files are truncated or corrupted (a full disk, a copy cut short, a crash of
the file system), whose server state is shaped unlike this run's (another
model or algorithm), or that lacks the client states its algorithm keeps, is
skipped with one warning line, and the run goes on from the version before.
Redoing the skipped rounds replaces their unreadable files.

Temporary files of an interrupted save (`*_<k>.npz.tmp`, the first format's
`program_state_<k>_temp<nnnn>/` folders) and client-state files without their
server state are removed when a manager opens the folder.
"""

from __future__ import annotations

import asyncio
import collections
import os
import re
import shutil
import zipfile
from collections.abc import Callable, Iterable, Mapping, MutableMapping
from typing import Any, NamedTuple, Optional

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff
import tree
from absl import logging

_SERVER_FILE = re.compile(r'^server_state_(\d+)\.npz$')
_CLIENT_FILE = re.compile(r'^client_states_(\d+)\.npz$')
_FIRST_FORMAT_PREFIX = 'program_state_'
_FIRST_FORMAT_DIR = re.compile(r'^' + _FIRST_FORMAT_PREFIX + r'(\d+)$')
# `_write_npz` writes `<file>.tmp` and renames it; the first format's
# `tff.program.FileProgramStateManager` saved into `program_state_<k>_temp<random>/`
# and renamed it. Either is left behind by an interrupted save.
_STALE = re.compile(
    r'^(' + _FIRST_FORMAT_PREFIX + r'\d+_temp\d+|(server_state|client_states)_\d+\.npz\.tmp)$')


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


def leaf_paths(structure: Any) -> list[str]:
  """'/'-joined paths of a structure's leaves, in `tree.flatten` order
  (e.g. 'global_model_weights/trainable/0'): what a saved server state is
  checked against before it is packed into this run's structure."""
  return ['/'.join(str(p) for p in path) for path, _ in tree.flatten_with_path(structure)]


class CheckpointManager:
  """Saves and restores the program state of a training run."""

  def __init__(self, directory: str, *, keep_total: int = 3):
    if keep_total < 1:
      raise ValueError(f'keep_total must be >= 1, got {keep_total}')
    self.directory = directory
    self.keep_total = keep_total
    os.makedirs(directory, exist_ok=True)
    self._unreadable: set[int] = set()  # versions `load_latest` skipped
    self._remove_stale_files()

  def versions(self) -> list[int]:
    """Saved rounds, oldest first (either format)."""
    found = set()
    for name in os.listdir(self.directory):
      match = _SERVER_FILE.match(name) or _FIRST_FORMAT_DIR.match(name)
      if match:
        found.add(int(match.group(1)))
    return sorted(found)

  def latest_round(self) -> Optional[int]:
    """The newest saved round, readable or not (`load_latest` checks)."""
    versions = self.versions()
    return versions[-1] if versions else None

  def _server_path(self, round_num: int) -> str:
    return os.path.join(self.directory, f'server_state_{round_num}.npz')

  def _first_format_path(self, round_num: int) -> str:
    return os.path.join(self.directory, f'{_FIRST_FORMAT_PREFIX}{round_num}')

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
      self._remove_version(round_num)
    self._unreadable.discard(round_num)
    try:
      if client_states is not None:
        _save_client_states(self._client_path(round_num), client_states)
      leaves = tree.flatten(server_state)
      _write_npz(self._server_path(round_num), [
          ('round', np.int64(round_num)),
          ('seed', np.int64(seed)),
          ('paths', np.array(leaf_paths(server_state), dtype=str)),
      ] + [(f'server_state/{i}', leaf) for i, leaf in enumerate(leaves)])
    except BaseException:
      self._remove_stale_files()
      raise
    self._prune()

  def load(
      self,
      round_num: int,
      server_template: Any,
      client_template: Optional[Callable[[str], Any]] = None,
      into: Optional[MutableMapping[str, Any]] = None,
  ) -> tuple[Any, MutableMapping[str, Any], int]:
    """Returns (server_state, client_states, sampler_seed) saved at `round_num`.

    The server state is packed into `server_template`'s structure. Client
    states (read when `client_template` is given) are put into `into` (a dict
    by default).

    Raises:
      CheckpointError: the saved server state is shaped unlike the template,
        or `client_template` is given but the version has no client-state
        file (its clients would silently restart from scratch).
      Exception: whatever zipfile, numpy or (first format) TF raise on
        unreadable files.
    """
    if os.path.exists(self._server_path(round_num)):
      server_state, seed = _load_server_state(
          self._server_path(round_num), round_num, server_template)
    else:
      server_state, seed = self._load_first_format(round_num, server_template)
    client_states = into if into is not None else {}
    if client_template is not None:
      path = self._client_path(round_num)
      if not os.path.exists(path):
        raise CheckpointError(
            f'checkpoint of round {round_num} has no client states ({path} is missing)')
      _load_client_states(path, client_template, client_states)
    return server_state, client_states, seed

  def _load_first_format(self, round_num: int, server_template: Any) -> tuple[Any, int]:
    """Reads a `program_state_<k>/` SavedModel of the first format (once, at resume)."""
    template = collections.OrderedDict(
        round=np.int64(0),
        sampler=collections.OrderedDict(seed=np.int64(0), round=np.int64(0)),
        server_state=server_template,
    )
    states = tff.program.FileProgramStateManager(self.directory, prefix=_FIRST_FORMAT_PREFIX)
    program_state = _run(states.load(round_num, template))
    return program_state['server_state'], int(program_state['sampler']['seed'])

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

  def _remove_version(self, round_num: int, *, with_client_states: bool = False) -> None:
    """Deletes a version's server state (either format) and, if asked, its client states."""
    if os.path.isdir(self._first_format_path(round_num)):
      shutil.rmtree(self._first_format_path(round_num))
    paths = [self._server_path(round_num)] + ([self._client_path(round_num)] if with_client_states else [])
    for path in paths:
      if os.path.exists(path):
        os.remove(path)

  def _prune(self) -> None:
    """Keeps the newest `keep_total` versions and no client states without their version."""
    versions = self.versions()
    for round_num in versions[:-self.keep_total]:
      self._remove_version(round_num, with_client_states=True)
    self._remove_orphan_client_states()

  def _remove_orphan_client_states(self) -> None:
    keep = set(self.versions())
    for name in os.listdir(self.directory):
      match = _CLIENT_FILE.match(name)
      if match and int(match.group(1)) not in keep:
        os.remove(os.path.join(self.directory, name))

  def _remove_stale_files(self) -> None:
    """Removes what interrupted saves leave: temp files/folders, and
    client-state files whose server state was never written."""
    for name in os.listdir(self.directory):
      if _STALE.match(name):
        path = os.path.join(self.directory, name)
        if os.path.isdir(path):
          shutil.rmtree(path, ignore_errors=True)
        else:
          os.remove(path)
    self._remove_orphan_client_states()


def _write_npz(path: str, entries: Iterable[tuple[str, Any]]) -> None:
  """Writes an .npz (an uncompressed zip of .npy) one array at a time, so a
  store that spills to disk is streamed, never loaded whole. The file appears
  at `path` only when complete (written as `<path>.tmp`, then renamed);
  nothing is left at `path` or beside it if writing fails."""
  tmp = f'{path}.tmp'
  try:
    with zipfile.ZipFile(tmp, 'w', allowZip64=True) as archive:
      for name, value in entries:
        with archive.open(f'{name}.npy', 'w', force_zip64=True) as f:
          np.lib.format.write_array(f, np.asarray(value), allow_pickle=False)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def _load_server_state(path: str, round_num: int, template: Any) -> tuple[Any, int]:
  """(server state packed as `template`, sampler seed) from a `server_state_<k>.npz`.

  Leaves come back as saved (dtype, shape, value); a scalar as a numpy scalar
  (np.float32, np.int64, ...), as TFF hands scalars out.

  Raises:
    CheckpointError: the file holds another round, or leaves at other paths
      than the template's (another model, algorithm or aggregator).
  """
  with np.load(path, allow_pickle=False) as data:
    saved_round = int(data['round'])
    if saved_round != round_num:
      raise CheckpointError(f'{os.path.basename(path)} holds round {saved_round}')
    saved_paths = [str(p) for p in data['paths']]
    expected = leaf_paths(template)
    if saved_paths != expected:
      differs = next((f'{s!r} where this run has {e!r}' for s, e in zip(saved_paths, expected) if s != e),
                     f'{len(saved_paths)} leaves where this run has {len(expected)}')
      raise CheckpointError(f'{os.path.basename(path)}: server state unlike this run\'s ({differs})')
    leaves = []
    for i in range(len(saved_paths)):
      value = data[f'server_state/{i}']
      leaves.append(value[()] if value.ndim == 0 else value)  # a numpy scalar stays one
    return tree.unflatten_as(template, leaves), int(data['seed'])


def _save_client_states(path: str, client_states: Mapping[str, Any]) -> None:
  """Client id -> state as '<client>/<leaf index>' arrays (`tf.nest` order), streamed."""
  _write_npz(path, (
      (f'{client_id}/{i}', leaf)
      for client_id in client_states
      for i, leaf in enumerate(tf.nest.flatten(client_states[client_id]))))


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
