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
  store['a'] = state(7)          # a back in RAM with a new value; its file is gone
  assert_same(store['a'], state(7)) and store.spilled == {'b'}
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
