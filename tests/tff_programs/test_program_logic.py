"""The training loop with a fake algorithm (no TFF computation): rows, resume, interrupts."""

import collections
import json
import csv

import numpy as np
import pytest
import tensorflow as tf

from tff_programs import checkpointing
from tff_programs import program_logic
from tff_programs import run_outputs
from tff_programs import sampling
from tff_programs.algorithms import base

IDS = [f'c{i}' for i in range(6)]


class FakeAlgorithm(base.FederatedAlgorithm):
  """State = a vector; each round adds the mean of the clients' first batch."""

  name = 'fake'

  def __init__(self, *, with_client_states=False, fail_at=None, nan_at=None, nan_in='loss',
               initial_download_cost=None):
    self.uses_client_states = with_client_states
    self.fail_at = fail_at
    self.nan_at = nan_at
    self.nan_in = nan_in
    self.initial_download_cost = initial_download_cost
    self.sampled = []  # client_ids of each next() call

  def initialize(self, seed):
    return collections.OrderedDict(w=np.full([3], float(seed), np.float32))

  def next(self, state, round_num, client_ids, client_datasets, client_states):
    if self.fail_at == round_num:
      raise KeyboardInterrupt('simulated Ctrl-C')
    self.sampled.append(list(client_ids))
    batches = [next(iter(ds))['x'].numpy().mean() for ds in client_datasets]
    w = state['w'] + np.float32(np.mean(batches))
    new_client_states = {}
    if self.uses_client_states:
      new_client_states = {c: {'visits': client_states[c]['visits'] + 1,
                               'head': client_states[c]['head'] + 1.0} for c in client_ids}
    metrics = {'train_loss': float(w.sum()), 'clients': len(client_ids),
               'learning_rate': 0.5, 'download_bytes': 100 * len(client_ids)}
    if self.nan_at == round_num:
      if self.nan_in == 'loss':
        metrics['train_loss'] = float('nan')
      elif self.nan_in == 'weights':
        w = w * np.float32('inf')
      elif self.nan_in == 'client_state':
        new_client_states[client_ids[-1]]['head'] = np.float32('nan')
      elif self.nan_in == 'all_dropped':
        metrics['non_finite_clients'] = len(client_ids)
    return base.RoundOutput(collections.OrderedDict(w=w), new_client_states, metrics)

  def model_weights(self, state):
    return [state['w']]

  def client_datasets(self, client_ids, round_num):
    return [dataset_fn(cid, round_num) for cid in client_ids]

  def initial_client_state(self, client_id, seed):
    return {'visits': np.int64(0), 'head': np.float32(0.0)}


def dataset_fn(client_id, round_num):
  rng = np.random.default_rng([int(client_id[1:]), round_num])
  x = rng.normal(size=(8, 2)).astype(np.float32)
  return tf.data.Dataset.from_tensor_slices({'x': x}).shuffle(8, seed=round_num).batch(4)


def evaluate(state, client_states):
  return {'eval_accuracy': float(1 - 1 / (1 + abs(state['w'][0])))}


def run(tmp_path, *, rounds, algorithm, resume=False, checkpoint_every=2, evaluate=evaluate,
        outputs=None, seed=1):
  outputs = outputs or run_outputs.RunOutputs(str(tmp_path))
  config = program_logic.LoopConfig(
      rounds=rounds, clients_per_round=3, eval_every=2, checkpoint_every=checkpoint_every,
      seed=seed, target_accuracy=0.5,
  )
  return program_logic.run_training(
      algorithm=algorithm, client_ids=IDS, evaluate=evaluate,
      config=config, outputs=outputs,
      checkpoints=checkpointing.CheckpointManager(outputs.checkpoint_dir),
      resume=resume, show_progress=False,
  )


def read_rows(path, drop=('seconds', 'train_seconds')):
  with open(path / 'metrics.csv') as f:
    return [{k: v for k, v in r.items() if k not in drop} for r in csv.DictReader(f)]


def test_one_row_per_round_and_eval_every(tmp_path):
  result = run(tmp_path, rounds=5, algorithm=FakeAlgorithm())
  rows = read_rows(tmp_path)
  assert [int(r['round']) for r in rows] == [1, 2, 3, 4, 5]
  assert [bool(r['eval_accuracy']) for r in rows] == [False, True, False, True, True]
  assert result.summary['rounds_completed'] == 5
  assert result.last_round == 5
  assert checkpointing.CheckpointManager(str(tmp_path / 'checkpoints')).latest_round() == 5


def test_identical_seeds_identical_runs(tmp_path):
  algorithms = [FakeAlgorithm() for _ in range(3)]
  a = run(tmp_path / 'a', rounds=4, algorithm=algorithms[0])
  b = run(tmp_path / 'b', rounds=4, algorithm=algorithms[1])
  np.testing.assert_array_equal(a.state['w'], b.state['w'])
  assert read_rows(tmp_path / 'a') == read_rows(tmp_path / 'b')
  # Another seed: another sequence of sampled clients, and another start (w = seed).
  c = run(tmp_path / 'c', rounds=4, algorithm=algorithms[2], seed=2)
  for algorithm, seed in ((algorithms[0], 1), (algorithms[2], 2)):
    assert algorithm.sampled == [sampling.sample_clients(IDS, 3, seed=seed, round_num=r)
                                 for r in range(1, 5)]
  assert algorithms[0].sampled != algorithms[2].sampled
  assert not np.array_equal(c.state['w'], a.state['w'])


@pytest.mark.parametrize('with_client_states', [False, True])
def test_interrupt_then_resume_equals_uninterrupted(tmp_path, with_client_states):
  full = run(tmp_path / 'full', rounds=7, algorithm=FakeAlgorithm(with_client_states=with_client_states))
  with pytest.raises(KeyboardInterrupt):
    # Checkpoints at 2 and 4; interrupted during round 6, so round 5 is saved on exit.
    run(tmp_path / 'cut', rounds=7, algorithm=FakeAlgorithm(with_client_states=with_client_states, fail_at=6))
  ckpts = checkpointing.CheckpointManager(str(tmp_path / 'cut' / 'checkpoints'))
  assert ckpts.latest_round() == 5, 'the last finished round must be saved on exit'
  assert [int(r['round']) for r in read_rows(tmp_path / 'cut')] == [1, 2, 3, 4, 5]
  # summary.json describes the rows on disk and says the run was cut short.
  cut_summary = json.loads((tmp_path / 'cut' / 'summary.json').read_text())
  assert (cut_summary['rounds_completed'], cut_summary['interrupted']) == (5, True)
  resumed = run(tmp_path / 'cut', rounds=7, resume=True,
                algorithm=FakeAlgorithm(with_client_states=with_client_states))
  np.testing.assert_array_equal(full.state['w'], resumed.state['w'])
  assert read_rows(tmp_path / 'full') == read_rows(tmp_path / 'cut')
  untimed = lambda summary: {k: v for k, v in summary.items() if 'seconds' not in k}
  assert untimed(resumed.summary) == untimed(full.summary)
  assert resumed.summary['interrupted'] is False
  if with_client_states:
    assert full.client_states.keys() == resumed.client_states.keys()
    for cid in full.client_states:
      assert int(full.client_states[cid]['visits']) == int(resumed.client_states[cid]['visits'])
    assert sum(int(s['visits']) for s in resumed.client_states.values()) == 7 * 3


def test_resume_from_older_checkpoint_replaces_later_rows(tmp_path):
  run(tmp_path, rounds=3, algorithm=FakeAlgorithm(), checkpoint_every=2)
  # Simulate a crash that lost the round-3 checkpoint but not its metrics row.
  (tmp_path / 'checkpoints' / 'server_state_3.npz').unlink()
  run(tmp_path, rounds=4, algorithm=FakeAlgorithm(), resume=True)
  assert [int(r['round']) for r in read_rows(tmp_path)] == [1, 2, 3, 4]
  full = run(tmp_path / 'ref', rounds=4, algorithm=FakeAlgorithm())
  assert read_rows(tmp_path) == read_rows(tmp_path / 'ref')
  del full


def test_checkpoint_keeps_client_states_of_each_version(tmp_path):
  manager = checkpointing.CheckpointManager(str(tmp_path), keep_total=2)
  template = lambda cid: {'a': np.zeros([2], np.float32), 'b': np.int64(0)}
  for r in (1, 2, 3):
    manager.save(r, {'w': np.float32(r)}, seed=5,
                 client_states={'x': {'a': np.full([2], r, np.float32), 'b': np.int64(r)}})
  assert manager.versions() == [2, 3]
  assert sorted(p.name for p in tmp_path.glob('client_states_*.npz')) == [
      'client_states_2.npz', 'client_states_3.npz']
  state, clients, seed = manager.load(2, {'w': np.float32(0)}, template)
  assert float(state['w']) == 2.0 and seed == 5
  np.testing.assert_array_equal(clients['x']['a'], [2.0, 2.0])
  assert int(clients['x']['b']) == 2


def test_stop_at_target_ends_the_run_and_says_so(tmp_path):
  outputs = run_outputs.RunOutputs(str(tmp_path))
  config = program_logic.LoopConfig(rounds=50, clients_per_round=3, eval_every=1,
                                    checkpoint_every=10, seed=1, target_accuracy=0.5,
                                    stop_at_target=True)
  result = program_logic.run_training(
      algorithm=FakeAlgorithm(), client_ids=IDS,
      evaluate=evaluate, config=config, outputs=outputs,
      checkpoints=checkpointing.CheckpointManager(outputs.checkpoint_dir), show_progress=False)
  rows = read_rows(tmp_path)
  accuracies = [float(r['eval_accuracy']) for r in rows]
  assert accuracies[-1] >= 0.5 and all(a < 0.5 for a in accuracies[:-1])
  assert result.summary['stopped_at_target'] and result.last_round == len(rows) < 50
  assert checkpointing.CheckpointManager(outputs.checkpoint_dir).latest_round() == len(rows)


def test_resume_accepts_new_flags_at_their_defaults_and_rejects_changed_ones(tmp_path):
  outputs = run_outputs.RunOutputs(str(tmp_path))
  outputs.prepare({'model': 'a', 'rounds': 2}, resume=False)
  outputs.prepare({'model': 'a', 'rounds': 5, 'new_flag': 0}, resume=True, defaults={'new_flag': 0})
  with pytest.raises(run_outputs.RunDirError, match='--model'):
    outputs.prepare({'model': 'b', 'rounds': 5, 'new_flag': 0}, resume=True, defaults={'new_flag': 0})
  with pytest.raises(run_outputs.RunDirError, match='--new_flag'):
    outputs.prepare({'model': 'a', 'rounds': 5, 'new_flag': 1}, resume=True, defaults={'new_flag': 0})


class InterruptingEvaluate:
  """Evaluates like `evaluate`, but raises KeyboardInterrupt at one round."""

  def __init__(self, at_call):
    self.calls = 0
    self.at_call = at_call

  def __call__(self, state, client_states):
    self.calls += 1
    if self.calls == self.at_call:
      raise KeyboardInterrupt('Ctrl-C during evaluation')
    return evaluate(state, client_states)


@pytest.mark.parametrize('with_client_states', [False, True])
def test_interrupt_during_evaluation_then_resume_equals_uninterrupted(tmp_path, with_client_states):
  make = lambda: FakeAlgorithm(with_client_states=with_client_states)
  full = run(tmp_path / 'full', rounds=7, algorithm=make(), checkpoint_every=10)
  with pytest.raises(KeyboardInterrupt):
    # Evaluations at rounds 2, 4, 6: the third one (round 6) is interrupted.
    run(tmp_path / 'cut', rounds=7, algorithm=make(), checkpoint_every=10,
        evaluate=InterruptingEvaluate(at_call=3))
  ckpts = checkpointing.CheckpointManager(str(tmp_path / 'cut' / 'checkpoints'))
  # Round 6 trained but has no row: the checkpoint is round 5's, never 6's.
  assert ckpts.latest_round() == 5
  assert [int(r['round']) for r in read_rows(tmp_path / 'cut')] == [1, 2, 3, 4, 5]
  if with_client_states:
    restored = ckpts.load_latest(make().initialize(1), lambda c: make().initial_client_state(c, 1))
    assert sum(int(s['visits']) for s in restored.client_states.values()) == 5 * 3
  resumed = run(tmp_path / 'cut', rounds=7, resume=True, algorithm=make(), checkpoint_every=10)
  np.testing.assert_array_equal(full.state['w'], resumed.state['w'])
  assert read_rows(tmp_path / 'full') == read_rows(tmp_path / 'cut')
  if with_client_states:
    assert {c: int(s['visits']) for c, s in full.client_states.items()} == {
        c: int(s['visits']) for c, s in resumed.client_states.items()}


class InterruptingOutputs(run_outputs.RunOutputs):
  """Writes metrics.csv for round `at`, then is interrupted before TensorBoard."""

  def __init__(self, path, at):
    super().__init__(path)
    self.at = at

  def release_metrics(self, round_num, row):
    if round_num == self.at:
      import csv as csv_lib
      with open(self.metrics_path, 'a', newline='') as f:  # A half-written release.
        csv_lib.writer(f).writerow([round_num])
      raise KeyboardInterrupt('Ctrl-C while writing the row')
    super().release_metrics(round_num, row)


def test_interrupt_while_writing_a_row_then_resume_equals_uninterrupted(tmp_path):
  full = run(tmp_path / 'full', rounds=5, algorithm=FakeAlgorithm(), checkpoint_every=10)
  with pytest.raises(KeyboardInterrupt):
    run(tmp_path / 'cut', rounds=5, algorithm=FakeAlgorithm(), checkpoint_every=10,
        outputs=InterruptingOutputs(str(tmp_path / 'cut'), at=4))
  assert checkpointing.CheckpointManager(str(tmp_path / 'cut' / 'checkpoints')).latest_round() == 3
  resumed = run(tmp_path / 'cut', rounds=5, resume=True, algorithm=FakeAlgorithm(),
                checkpoint_every=10)
  np.testing.assert_array_equal(full.state['w'], resumed.state['w'])
  assert read_rows(tmp_path / 'full') == read_rows(tmp_path / 'cut')


@pytest.mark.parametrize('nan_in, what', [
    ('loss', 'training loss nan'),
    ('weights', 'non-finite model weights'),
    ('client_state', 'non-finite state of 1 client(s)'),
    ('all_dropped', 'all 3 clients dropped as non-finite'),
])
def test_divergence_stops_at_the_first_bad_round_keeping_the_last_good_one(tmp_path, nan_in, what):
  algorithm = FakeAlgorithm(with_client_states=True, nan_at=4, nan_in=nan_in)
  with pytest.raises(program_logic.DivergenceError) as raised:
    run(tmp_path, rounds=8, algorithm=algorithm, checkpoint_every=10)
  message = str(raised.value)
  assert '\n' not in message
  assert message.startswith(f'round 4 diverged ({what}')
  assert 'at learning rate 0.5: the run stopped' in message
  assert [int(r['round']) for r in read_rows(tmp_path)] == [1, 2, 3]
  ckpts = checkpointing.CheckpointManager(str(tmp_path / 'checkpoints'))
  assert ckpts.versions() == [3]
  reference = run(tmp_path / 'ref', rounds=3, algorithm=FakeAlgorithm(with_client_states=True))
  restored = ckpts.load_latest(FakeAlgorithm().initialize(1),
                               lambda c: FakeAlgorithm().initial_client_state(c, 1))
  np.testing.assert_array_equal(restored.server_state['w'], reference.state['w'])
  assert all(np.isfinite(float(s['head'])) for s in restored.client_states.values())
  summary = json.loads((tmp_path / 'summary.json').read_text())
  assert (summary['rounds_completed'], summary['interrupted']) == (3, True)


def test_some_clients_dropped_are_counted_not_fatal(tmp_path):
  class Dropping(FakeAlgorithm):
    def next(self, *args):
      out = super().next(*args)
      return base.RoundOutput(out.state, out.client_states,
                              dict(out.metrics, non_finite_clients=1))
  run(tmp_path, rounds=3, algorithm=Dropping())
  assert [r['non_finite_clients'] for r in read_rows(tmp_path)] == ['1', '1', '1']


def test_first_downloads_are_counted_once_per_client_and_after_resume(tmp_path):
  cost = collections.namedtuple('Cost', 'params bytes')(10, 40)
  make = lambda: FakeAlgorithm(initial_download_cost=cost)
  run(tmp_path / 'full', rounds=6, algorithm=make())
  rows = read_rows(tmp_path / 'full')
  seen, expected = set(), []
  from tff_programs import sampling
  for r in range(1, 7):
    ids = sampling.sample_clients(IDS, 3, seed=1, round_num=r)
    expected.append(len(set(ids) - seen))
    seen |= set(ids)
  assert [int(r['first_round_clients']) for r in rows] == expected
  assert sum(expected) == len(seen) and expected[0] == 3
  assert [int(r['initial_download_bytes']) for r in rows] == [40 * n for n in expected]
  assert [int(r['download_bytes']) for r in rows] == [300 + 40 * n for n in expected]
  with pytest.raises(KeyboardInterrupt):
    run(tmp_path / 'cut', rounds=6, algorithm=FakeAlgorithm(initial_download_cost=cost, fail_at=4))
  run(tmp_path / 'cut', rounds=6, algorithm=make(), resume=True)
  assert read_rows(tmp_path / 'cut') == rows


@pytest.mark.parametrize('with_client_states', [False, True])
def test_resume_skips_a_corrupted_newest_checkpoint(tmp_path, with_client_states):
  full = run(tmp_path / 'full', rounds=6, algorithm=FakeAlgorithm(with_client_states=with_client_states))
  run(tmp_path / 'cut', rounds=5, algorithm=FakeAlgorithm(with_client_states=with_client_states))
  data = tmp_path / 'cut' / 'checkpoints' / 'server_state_5.npz'
  with open(data, 'r+b') as f:
    f.truncate(data.stat().st_size // 2)
  resumed = run(tmp_path / 'cut', rounds=6, resume=True,
                algorithm=FakeAlgorithm(with_client_states=with_client_states))
  np.testing.assert_array_equal(full.state['w'], resumed.state['w'])
  assert read_rows(tmp_path / 'full') == read_rows(tmp_path / 'cut')
  ckpts = checkpointing.CheckpointManager(str(tmp_path / 'cut' / 'checkpoints'))
  assert ckpts.load_latest(full.state).round_num == 6


def test_target_metric_selects_the_column_for_rounds_to_target(tmp_path):
  outputs = run_outputs.RunOutputs(str(tmp_path))
  personalized = lambda state, cs: {'eval_accuracy': 0.1, 'personalized_accuracy_mean': 0.9}
  config = program_logic.LoopConfig(rounds=3, clients_per_round=3, eval_every=1, seed=1,
                                    target_accuracy=0.5, stop_at_target=True,
                                    target_metric='personalized_accuracy_mean')
  result = program_logic.run_training(
      algorithm=FakeAlgorithm(), client_ids=IDS,
      evaluate=personalized, config=config, outputs=outputs,
      checkpoints=checkpointing.CheckpointManager(outputs.checkpoint_dir), show_progress=False)
  assert result.last_round == 1 and result.summary['stopped_at_target']
  assert result.summary['rounds_to_target'] == 1.0
  assert result.summary['target_metric'] == 'personalized_accuracy_mean'


@pytest.fixture
def sigint_handler():
  """Sets SIGINT's handler for one test and restores it: a shell starts
  background jobs with SIGINT ignored, and the tests must not depend on it."""
  import signal
  original = signal.getsignal(signal.SIGINT)
  yield lambda handler: signal.signal(signal.SIGINT, handler)
  signal.signal(signal.SIGINT, original)


def test_interrupts_are_deferred_to_the_end_of_a_commit(sigint_handler):
  import signal
  sigint_handler(signal.default_int_handler)
  events = []
  with pytest.raises(KeyboardInterrupt):
    with program_logic.interrupts_deferred():
      signal.raise_signal(signal.SIGINT)  # Arrives mid-commit...
      events.append('commit finished')   # ...but the commit completes first.
  assert events == ['commit finished']
  with program_logic.interrupts_deferred():
    events.append('quiet')
  assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_an_ignored_interrupt_stays_ignored_after_a_commit(sigint_handler):
  import signal
  sigint_handler(signal.SIG_IGN)  # As in a background job of a shell.
  events = []
  with program_logic.interrupts_deferred():
    signal.raise_signal(signal.SIGINT)
    events.append('commit finished')
  assert events == ['commit finished']
  assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN


def test_next_rounds_datasets_are_built_while_this_round_runs(tmp_path):
  events = []

  class Recording(FakeAlgorithm):
    def client_datasets(self, client_ids, round_num):
      events.extend(('dataset', round_num) for _ in client_ids)
      return super().client_datasets(client_ids, round_num)

    def next(self, state, round_num, *args):
      import time as time_lib
      time_lib.sleep(0.2)  # The round "runs in the worker".
      events.append(('next done', round_num))
      return super().next(state, round_num, *args)

  outputs = run_outputs.RunOutputs(str(tmp_path))
  program_logic.run_training(
      algorithm=Recording(), client_ids=IDS,
      evaluate=None, config=program_logic.LoopConfig(rounds=3, clients_per_round=3, seed=1),
      outputs=outputs, checkpoints=checkpointing.CheckpointManager(outputs.checkpoint_dir),
      show_progress=False)
  # Round 2's datasets (all three) exist before round 1's next() returned, and
  # nothing is built for a round 4 that does not exist.
  assert events.index(('next done', 1)) > max(i for i, e in enumerate(events) if e == ('dataset', 2))
  assert events.count(('dataset', 2)) == 3 and ('dataset', 4) not in events
  reference = run(tmp_path / 'ref', rounds=3, algorithm=FakeAlgorithm())
  assert read_rows(tmp_path)[-1]['train_loss'] == read_rows(tmp_path / 'ref')[-1]['train_loss']
  del reference
