"""ClientStateStore: RAM up to a budget, LRU spill to disk, exact round trips, streamed checkpoints."""

import collections

import numpy as np
import pytest

from tff_programs import checkpointing
from tff_programs import client_states


def state(value, n=4):
  # 2 arrays of n float32 (8n bytes) + one int64 (8 bytes).
  return collections.OrderedDict(head=[np.full([n], value, np.float32), np.full([n], -value, np.float32)],
                                 visits=np.int64(value))


def template(cid):
  return state(0)


def assert_same(a, b):
  np.testing.assert_array_equal(a['head'][0], b['head'][0])
  np.testing.assert_array_equal(a['head'][1], b['head'][1])
  assert int(a['visits']) == int(b['visits'])


def test_without_budget_nothing_spills(tmp_path):
  store = client_states.ClientStateStore(template, directory=str(tmp_path))
  for i in range(5):
    store[f'c{i}'] = state(i)
  assert not store.spilled and len(store) == 5 and store.bytes_in_memory == 5 * 40


def test_budget_spills_least_recently_used_and_reloads_exactly(tmp_path):
  store = client_states.ClientStateStore(template, directory=str(tmp_path), memory_budget_bytes=100)
  for i in range(4):            # 40 bytes each: two fit in 100 bytes
    store[f'c{i}'] = state(i)
  assert store.spilled == {'c0', 'c1'}
  assert sorted(p.name for p in tmp_path.iterdir()) == ['c0.npz', 'c1.npz']
  assert store.bytes_in_memory == 80
  assert_same(store['c0'], state(0))           # reloads c0, evicts c2 (least recent)
  assert store.spilled == {'c1', 'c2'} and 'c0.npz' not in {p.name for p in tmp_path.iterdir()}
  assert list(store) == ['c0', 'c1', 'c2', 'c3'] and 'c2' in store and 'c9' not in store
  for i in range(4):
    assert_same(store[f'c{i}'], state(i))


def test_overwrite_and_delete(tmp_path):
  store = client_states.ClientStateStore(template, directory=str(tmp_path), memory_budget_bytes=40)
  store['a'] = state(1)
  store['b'] = state(2)          # spills a
  store['a'] = state(7)          # a back in RAM with a new value (spills b); its file is gone
  assert store.spilled == {'b'}
  assert sorted(p.name for p in tmp_path.iterdir()) == ['b.npz']
  assert_same(store['a'], state(7))
  del store['b']
  assert len(store) == 1 and not list(tmp_path.iterdir())
  with pytest.raises(KeyError):
    store['b']


def test_budget_needs_a_directory():
  with pytest.raises(ValueError):
    client_states.ClientStateStore(template, memory_budget_bytes=10)


def test_checkpoint_streams_a_spilling_store_and_restores_into_one(tmp_path):
  store = client_states.ClientStateStore(template, directory=str(tmp_path / 'a'), memory_budget_bytes=50)
  for i in range(6):
    store[f'c{i}'] = state(i)
  manager = checkpointing.CheckpointManager(str(tmp_path / 'ckpt'))
  manager.save(3, {'w': np.float32(1)}, seed=0, client_states=store)
  restored = client_states.ClientStateStore(template, directory=str(tmp_path / 'b'), memory_budget_bytes=50)
  _, loaded, _ = manager.load(3, {'w': np.float32(0)}, template, into=restored)
  assert loaded is restored and len(restored) == 6 and restored.spilled
  for i in range(6):
    assert_same(restored[f'c{i}'], state(i))


def test_a_new_store_never_reads_the_spills_of_an_earlier_one(tmp_path):
  old = client_states.ClientStateStore(template, directory=str(tmp_path), memory_budget_bytes=50)
  for i in range(3):
    old[f'c{i}'] = state(i)      # c0, c1 spilled
  (tmp_path / 'c2.npz.tmp').write_bytes(b'interrupted spill')
  (tmp_path / 'other.txt').write_text('not a spill')
  # The earlier store is dropped without close() (a killed run).
  new = client_states.ClientStateStore(template, directory=str(tmp_path), memory_budget_bytes=50)
  assert len(new) == 0 and 'c0' not in new and not new.spilled
  with pytest.raises(KeyError):
    new['c0']
  assert sorted(p.name for p in tmp_path.iterdir()) == ['other.txt']


def test_close_deletes_the_spills_and_the_directory_it_created(tmp_path):
  spill = tmp_path / 'spill'
  store = client_states.ClientStateStore(template, directory=str(spill), memory_budget_bytes=50)
  for i in range(4):
    store[f'c{i}'] = state(i)
  assert sorted(p.name for p in spill.iterdir()) == ['c0.npz', 'c1.npz', 'c2.npz']
  store.close()
  store.close()                  # idempotent
  assert not spill.exists() and list(tmp_path.iterdir()) == []
  with pytest.raises(RuntimeError, match='closed'):
    store['c3']


def test_close_keeps_a_directory_it_did_not_create_and_others_files(tmp_path):
  (tmp_path / 'keep.txt').write_text('x')
  store = client_states.ClientStateStore(template, directory=str(tmp_path), memory_budget_bytes=50)
  for i in range(3):
    store[f'c{i}'] = state(i)
  store.close()
  assert sorted(p.name for p in tmp_path.iterdir()) == ['keep.txt']
  empty = tmp_path / 'empty'
  empty.mkdir()
  client_states.ClientStateStore(template, directory=str(empty), memory_budget_bytes=50).close()
  assert empty.is_dir()


def test_leaving_a_with_block_closes_the_store_also_on_interrupt(tmp_path):
  spill = tmp_path / 'spill'
  with pytest.raises(KeyboardInterrupt):
    with client_states.ClientStateStore(template, directory=str(spill), memory_budget_bytes=50) as store:
      for i in range(4):
        store[f'c{i}'] = state(i)
      assert len(list(spill.iterdir())) == 3
      raise KeyboardInterrupt
  assert not spill.exists()


def test_a_failed_spill_loses_no_state(tmp_path, monkeypatch):
  store = client_states.ClientStateStore(template, directory=str(tmp_path), memory_budget_bytes=100)
  store['c0'] = state(0)
  store['c1'] = state(1)

  def full_disk(f, *arrays):
    f.write(b'partial')
    raise OSError('No space left on device')

  monkeypatch.setattr(client_states.np, 'savez', full_disk)
  with pytest.raises(OSError, match='No space left'):
    store['c2'] = state(2)       # 120 bytes > 100: c0 would spill
  monkeypatch.undo()
  assert list(store) == ['c0', 'c1', 'c2'] and not store.spilled
  for i in range(3):
    assert_same(store[f'c{i}'], state(i))
  assert list(tmp_path.iterdir()) == []  # no half-written .tmp


def test_clear_deletes_spills_without_reading_them_back(tmp_path, monkeypatch):
  store = client_states.ClientStateStore(template, directory=str(tmp_path), memory_budget_bytes=50)
  for i in range(4):
    store[f'c{i}'] = state(i)

  def no_reads(*args, **kwargs):
    raise AssertionError('clear() read a spilled state back')

  monkeypatch.setattr(client_states.np, 'load', no_reads)
  store.clear()
  assert len(store) == 0 and store.bytes_in_memory == 0 and list(tmp_path.iterdir()) == []
