"""CheckpointManager: resume from the newest readable version, no stale temp files, no silent loss of client states."""

import collections
import logging
import os
import shutil
import struct
import zipfile

import numpy as np
import psutil
import pytest
import tensorflow as tf
import tensorflow_federated as tff
import tree

from tff_programs import checkpointing
from tff_programs import client_states


def server(r):
  return collections.OrderedDict(w=np.full([3], r, np.float32))


SERVER_TEMPLATE = server(0)


def client(r):
  # Flattened (sorted keys): 0 = h (4 float32), 1 = visits.
  return {'h': np.full([4], r, np.float32), 'visits': np.int64(r)}


def client_template(cid):
  return client(0)


def save_rounds_2_and_4(directory):
  """Round 2 knows client 'a'; round 4 also 'new', written before 'a'."""
  manager = checkpointing.CheckpointManager(str(directory))
  manager.save(2, server(2), seed=7, client_states={'a': client(2)})
  manager.save(4, server(4), seed=7, client_states={'new': client(40), 'a': client(4)})
  return manager


def flip_last_data_byte(npz_path, entry):
  """Corrupts the last byte of an entry's array data (the zip's CRC then fails)."""
  with zipfile.ZipFile(npz_path) as archive:
    info = archive.getinfo(entry)
  with open(npz_path, 'r+b') as f:
    f.seek(info.header_offset + 26)
    name_len, extra_len = struct.unpack('<HH', f.read(4))
    end = info.header_offset + 30 + name_len + extra_len + info.compress_size
    f.seek(end - 1)
    byte = f.read(1)[0]
    f.seek(end - 1)
    f.write(bytes([byte ^ 0xFF]))


def truncate_to_half(path):
  with open(path, 'r+b') as f:
    f.truncate(os.path.getsize(path) // 2)


def save_first_format(directory, round_num, seed=7, w=None):
  """A version as the first format wrote it: a `FileProgramStateManager` SavedModel."""
  program_state = collections.OrderedDict(
      round=np.int64(round_num),
      sampler=collections.OrderedDict(seed=np.int64(seed), round=np.int64(round_num)),
      server_state=server(round_num if w is None else w))
  states = tff.program.FileProgramStateManager(str(directory), prefix='program_state_')
  checkpointing._run(states.save(program_state, round_num))


def replace_with_another_models_state(directory, round_num):
  other = directory.parent / 'other_model'
  checkpointing.CheckpointManager(str(other)).save(
      round_num, {'v': np.zeros([3], np.float32)}, seed=7)
  shutil.copy(other / f'server_state_{round_num}.npz', directory / f'server_state_{round_num}.npz')


CORRUPTIONS = {
    'truncated_server_state': lambda d: truncate_to_half(d / 'server_state_4.npz'),
    'corrupted_server_state_bytes': lambda d: flip_last_data_byte(d / 'server_state_4.npz', 'server_state/0.npy'),
    'empty_server_state_file': lambda d: (d / 'server_state_4.npz').write_bytes(b''),
    'server_state_of_another_model': lambda d: replace_with_another_models_state(d, 4),
    'missing_client_states': lambda d: (d / 'client_states_4.npz').unlink(),
    'truncated_client_states': lambda d: truncate_to_half(d / 'client_states_4.npz'),
    'corrupted_client_state_bytes': lambda d: flip_last_data_byte(d / 'client_states_4.npz', 'a/0.npy'),
}

FIRST_FORMAT_CORRUPTIONS = {
    'truncated_variables': lambda d: truncate_to_half(
        d / 'program_state_4' / 'variables' / 'variables.data-00000-of-00001'),
    'garbage_saved_model_pb': lambda d: (d / 'program_state_4' / 'saved_model.pb').write_bytes(b'not a proto'),
    'empty_program_state_folder': lambda d: (shutil.rmtree(d / 'program_state_4'),
                                             (d / 'program_state_4').mkdir()),
}


def warnings_of(caplog):
  return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


@pytest.mark.parametrize('corruption', sorted(CORRUPTIONS))
def test_load_latest_falls_back_to_the_previous_version(tmp_path, caplog, corruption):
  save_rounds_2_and_4(tmp_path / 'ckpt')
  CORRUPTIONS[corruption](tmp_path / 'ckpt')
  store = client_states.ClientStateStore(client_template, directory=str(tmp_path / 'spill'),
                                         memory_budget_bytes=30)
  with caplog.at_level(logging.WARNING):
    restored = checkpointing.CheckpointManager(str(tmp_path / 'ckpt')).load_latest(
        SERVER_TEMPLATE, client_template, into=store)
  assert restored.round_num == 2 and restored.seed == 7
  np.testing.assert_array_equal(restored.server_state['w'], [2, 2, 2])
  # Exactly round 2's clients: nothing of round 4 (e.g. 'new', read before 'a' failed) survives.
  assert restored.client_states is store and list(store) == ['a']
  np.testing.assert_array_equal(store['a']['h'], [2, 2, 2, 2])
  assert int(store['a']['visits']) == 2
  assert not (tmp_path / 'spill' / 'new.npz').exists()
  messages = warnings_of(caplog)
  assert len(messages) == 1 and '\n' not in messages[0], messages
  assert messages[0].startswith('Skipping the checkpoint of round 4 in ') and '(unreadable: ' in messages[0]
  if corruption == 'missing_client_states':
    assert 'client_states_4.npz is missing' in messages[0]
  if corruption == 'server_state_of_another_model':
    assert ("(unreadable: CheckpointError: server_state_4.npz: server state unlike this run's "
            "('v' where this run has 'w'))") in messages[0]


@pytest.mark.parametrize('corruption', sorted(FIRST_FORMAT_CORRUPTIONS))
def test_load_latest_falls_back_within_the_first_format(tmp_path, caplog, corruption):
  for r in (2, 4):
    save_first_format(tmp_path, r)
  FIRST_FORMAT_CORRUPTIONS[corruption](tmp_path)
  with caplog.at_level(logging.WARNING):
    restored = checkpointing.CheckpointManager(str(tmp_path)).load_latest(SERVER_TEMPLATE)
  assert (restored.round_num, restored.seed) == (2, 7)
  np.testing.assert_array_equal(restored.server_state['w'], [2, 2, 2])
  messages = warnings_of(caplog)
  assert len(messages) == 1 and messages[0].startswith('Skipping the checkpoint of round 4 in '), messages


def test_load_latest_of_an_intact_folder_reads_the_newest_without_warnings(tmp_path, caplog):
  save_rounds_2_and_4(tmp_path)
  with caplog.at_level(logging.WARNING):
    restored = checkpointing.CheckpointManager(str(tmp_path)).load_latest(SERVER_TEMPLATE, client_template)
  assert restored.round_num == 4 and restored.seed == 7
  np.testing.assert_array_equal(restored.server_state['w'], [4, 4, 4])
  assert sorted(restored.client_states) == ['a', 'new']
  assert int(restored.client_states['new']['visits']) == 40
  assert warnings_of(caplog) == []


def test_load_latest_without_versions_returns_none(tmp_path):
  assert checkpointing.CheckpointManager(str(tmp_path)).load_latest(SERVER_TEMPLATE, client_template) is None


def test_load_latest_fails_in_one_line_when_no_version_is_readable(tmp_path, caplog):
  save_rounds_2_and_4(tmp_path)
  (tmp_path / 'client_states_2.npz').unlink()
  truncate_to_half(tmp_path / 'client_states_4.npz')
  into = {'stale': client(9)}
  with caplog.at_level(logging.WARNING):
    with pytest.raises(checkpointing.CheckpointError) as error:
      checkpointing.CheckpointManager(str(tmp_path)).load_latest(SERVER_TEMPLATE, client_template, into=into)
  message = str(error.value)
  assert '\n' not in message
  assert message.startswith(f'no readable checkpoint in {tmp_path} (rounds [2, 4]; round 4: BadZipFile: ')
  assert [m.split(' in ')[0] for m in warnings_of(caplog)] == [
      'Skipping the checkpoint of round 4', 'Skipping the checkpoint of round 2']
  assert into == {}


def test_load_of_a_version_without_its_client_states_is_an_error(tmp_path):
  manager = save_rounds_2_and_4(tmp_path)
  (tmp_path / 'client_states_4.npz').unlink()
  with pytest.raises(checkpointing.CheckpointError,
                     match=r'^checkpoint of round 4 has no client states \(.*client_states_4\.npz is missing\)$'):
    manager.load(4, SERVER_TEMPLATE, client_template)
  # Algorithms without client states (no template) never read the file.
  state, clients, seed = manager.load(4, SERVER_TEMPLATE)
  np.testing.assert_array_equal(state['w'], [4, 4, 4])
  assert clients == {} and seed == 7


def test_redoing_a_skipped_round_replaces_its_files(tmp_path, caplog):
  manager = save_rounds_2_and_4(tmp_path)
  truncate_to_half(tmp_path / 'server_state_4.npz')
  assert manager.load_latest(SERVER_TEMPLATE, client_template).round_num == 2
  manager.save(2, server(22), seed=7, client_states={'a': client(22)})  # readable: kept as is
  manager.save(3, server(3), seed=7, client_states={'a': client(3)})
  manager.save(4, server(44), seed=7, client_states={'a': client(44)})
  assert manager.versions() == [2, 3, 4]
  state, clients, _ = manager.load(2, SERVER_TEMPLATE, client_template)
  np.testing.assert_array_equal(state['w'], [2, 2, 2])
  assert int(clients['a']['visits']) == 2
  caplog.clear()
  with caplog.at_level(logging.WARNING):
    restored = checkpointing.CheckpointManager(str(tmp_path)).load_latest(SERVER_TEMPLATE, client_template)
  assert restored.round_num == 4 and warnings_of(caplog) == []
  np.testing.assert_array_equal(restored.server_state['w'], [44, 44, 44])
  assert list(restored.client_states) == ['a'] and int(restored.client_states['a']['visits']) == 44


def test_a_failed_server_state_save_leaves_no_temp_file_or_orphan(tmp_path, monkeypatch):
  manager = checkpointing.CheckpointManager(str(tmp_path))
  manager.save(2, server(2), seed=7, client_states={'a': client(2)})
  renamed = []
  replace = os.replace

  def full_disk(src, dst):
    renamed.append(os.path.basename(src))
    if os.path.basename(dst).startswith('server_state_'):
      raise OSError('No space left on device')
    replace(src, dst)

  monkeypatch.setattr(checkpointing.os, 'replace', full_disk)
  with pytest.raises(OSError, match='No space left'):
    manager.save(4, server(4), seed=7, client_states={'a': client(4)})
  # The client states of round 4 were complete; its server state was not: both go.
  assert renamed == ['client_states_4.npz.tmp', 'server_state_4.npz.tmp']
  assert sorted(os.listdir(tmp_path)) == ['client_states_2.npz', 'server_state_2.npz']
  assert manager.versions() == [2]


class FailingStates(collections.abc.Mapping):
  """Client states whose second client cannot be read (e.g. Ctrl-C mid-write)."""

  def __iter__(self):
    return iter(['a', 'b'])

  def __len__(self):
    return 2

  def __getitem__(self, cid):
    if cid == 'b':
      raise KeyboardInterrupt('simulated Ctrl-C')
    return client(4)


def test_an_interrupted_client_state_save_leaves_no_tmp_file(tmp_path):
  manager = checkpointing.CheckpointManager(str(tmp_path))
  manager.save(2, server(2), seed=7, client_states={'a': client(2)})
  with pytest.raises(KeyboardInterrupt):
    manager.save(4, server(4), seed=7, client_states=FailingStates())
  assert sorted(os.listdir(tmp_path)) == ['client_states_2.npz', 'server_state_2.npz']
  assert manager.versions() == [2]


def test_opening_a_folder_removes_what_a_killed_save_left(tmp_path):
  save_rounds_2_and_4(tmp_path)
  # A process killed mid-save (no `except` ran): our .tmp files, the first
  # format's temp folder, and a client-state file whose server state was never written.
  (tmp_path / 'program_state_6_temp1234' / 'variables').mkdir(parents=True)
  (tmp_path / 'program_state_6_temp1234' / 'saved_model.pb').write_bytes(b'partial')
  (tmp_path / 'client_states_6.npz.tmp').write_bytes(b'partial')
  (tmp_path / 'server_state_6.npz.tmp').write_bytes(b'partial')
  shutil.copy(tmp_path / 'client_states_4.npz', tmp_path / 'client_states_6.npz')
  (tmp_path / 'notes.txt').write_text('not ours')
  manager = checkpointing.CheckpointManager(str(tmp_path))
  assert sorted(os.listdir(tmp_path)) == [
      'client_states_2.npz', 'client_states_4.npz', 'notes.txt', 'server_state_2.npz', 'server_state_4.npz']
  assert manager.load_latest(SERVER_TEMPLATE, client_template).round_num == 4


def test_a_run_folder_of_the_first_checkpoint_format_still_resumes(tmp_path):
  # The first writer (before streaming): np.savez of '<client>/<leaf>' keys.
  with open(tmp_path / 'client_states_5.npz', 'wb') as f:
    np.savez(f, **{'a/0': np.full([4], 5, np.float32), 'a/1': np.int64(5)})
  save_first_format(tmp_path, 5)
  restored = checkpointing.CheckpointManager(str(tmp_path)).load_latest(SERVER_TEMPLATE, client_template)
  assert (restored.round_num, restored.seed) == (5, 7)
  np.testing.assert_array_equal(restored.server_state['w'], [5, 5, 5])
  np.testing.assert_array_equal(restored.client_states['a']['h'], [5, 5, 5, 5])
  assert int(restored.client_states['a']['visits']) == 5


def learning_state(r):
  """A server state shaped like tff.learning's: attrs classes, nested dicts, scalars of several dtypes."""
  return tff.learning.templates.LearningAlgorithmState(
      global_model_weights=tff.learning.models.ModelWeights(
          trainable=[np.full([2, 3], r, np.float32), np.full([3], -r, np.float32)],
          non_trainable=[np.float64(r / 4)]),
      distributor=(),
      client_work=collections.OrderedDict(lr=np.float32(0.5 * r), steps=np.int32(r)),
      aggregator=collections.OrderedDict(value_sum_process=(), tag=np.bytes_(b'rpn')),
      finalizer=[np.int64(r), np.zeros([0], np.float32)])


def test_a_saved_server_state_loads_back_identical_in_structure_dtypes_and_values(tmp_path):
  manager = checkpointing.CheckpointManager(str(tmp_path))
  manager.save(3, learning_state(3), seed=11)
  assert sorted(os.listdir(tmp_path)) == ['server_state_3.npz']
  state, clients, seed = checkpointing.CheckpointManager(str(tmp_path)).load(3, learning_state(0))
  assert seed == 11 and clients == {}
  assert type(state) is type(learning_state(0))
  expected = tree.flatten(learning_state(3))
  loaded = tree.flatten(state)
  assert len(loaded) == len(expected) == 8
  for got, want in zip(loaded, expected):
    assert type(got) is type(want) and got.dtype == want.dtype and np.shape(got) == np.shape(want)
    np.testing.assert_array_equal(got, want)
  assert checkpointing.leaf_paths(state) == [
      'global_model_weights/trainable/0', 'global_model_weights/trainable/1',
      'global_model_weights/non_trainable/0', 'client_work/lr', 'client_work/steps',
      'aggregator/tag', 'finalizer/0', 'finalizer/1']


def test_a_first_format_run_continues_in_numpy_files_and_prunes_both(tmp_path):
  for r in (2, 4):
    save_first_format(tmp_path, r)
  manager = checkpointing.CheckpointManager(str(tmp_path), keep_total=3)
  assert manager.load_latest(SERVER_TEMPLATE).round_num == 4
  manager.save(6, server(6), seed=7)
  assert manager.versions() == [2, 4, 6]
  manager.save(8, server(8), seed=7)
  assert sorted(os.listdir(tmp_path)) == ['program_state_4', 'server_state_6.npz', 'server_state_8.npz']
  manager.save(10, server(10), seed=7)
  assert sorted(os.listdir(tmp_path)) == ['server_state_10.npz', 'server_state_6.npz', 'server_state_8.npz']
  state, _, _ = manager.load(8, SERVER_TEMPLATE)
  np.testing.assert_array_equal(state['w'], [8, 8, 8])


def test_keep_total_below_one_is_refused_in_one_line(tmp_path):
  with pytest.raises(ValueError, match=r'^keep_total must be >= 1, got 0$'):
    checkpointing.CheckpointManager(str(tmp_path), keep_total=0)


def test_saving_leaves_nothing_behind_in_the_process(tmp_path):
  # The first format (tff.program.FileProgramStateManager, a SavedModel a save)
  # kept about one state's size in the process per save: here 4 MiB x 120 saves.
  state = collections.OrderedDict(w=np.random.default_rng(0).random([1024, 1024], np.float32))
  manager = checkpointing.CheckpointManager(str(tmp_path))
  rss = lambda: psutil.Process().memory_info().rss / 2**20
  for r in range(1, 21):
    manager.save(r, state, seed=1)
  warm = rss()
  for r in range(21, 141):
    manager.save(r, state, seed=1)
  assert rss() - warm < 40, f'{rss() - warm:.0f} MiB kept over 120 saves of a 4 MiB state'
  assert manager.versions() == [138, 139, 140]
