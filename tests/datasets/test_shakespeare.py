"""Tests for datasets.shakespeare and the parser of datasets.shakespeare_plays, on a
tiny fake of Gutenberg's 1994 layout (the vocabulary and sequences:
test_shakespeare_sequences.py)."""

from __future__ import annotations

import collections

import numpy as np
import pytest

from datasets import base
from datasets import federated
from datasets import registry
from datasets import shakespeare

# Two plays (the usual layout and The Comedy of Errors' unindented one), the
# sonnets, World Library notices, a Gutenberg header and footer; traps that
# look like speeches outside a play's speeches are marked 'TRAP'.
FAKE_TEXT = """\
This is the 100th Etext file presented by Project Gutenberg, and
is presented in cooperation with World Library, Inc.
  HEADER. TRAP: the Gutenberg header is not a play.

<<THIS ELECTRONIC VERSION OF THE COMPLETE WORKS OF WILLIAM
SHAKESPEARE IS COPYRIGHT 1990-1993 BY WORLD LIBRARY, INC., AND IS
WITH PERMISSION.  ELECTRONIC AND MACHINE READABLE COPIES MAY BE
COMMERCIALLY.  PROHIBITED COMMERCIAL DISTRIBUTION INCLUDES BY ANY>>


1609

THE SONNETS

by William Shakespeare


                     1
  From fairest creatures we desire increase,
  WILL. TRAP: the sonnets have no speaking roles.
  That thereby beauty's rose might never die,


THE END


1600

THE TRAGEDY OF FOO

by William Shakespeare


Dramatis Personae

  KING. TRAP: a cast list entry, not a speech.
  QUEEN, his wife
  GHOST


                              SCENE:
                               Foo

ACT I. SCENE 1.
A room in the castle

            Enter KING and QUEEN, with attendants
                and a SERVANT

  KING. King one, whose opening line is long enough to need a second sequence.
    King two, before an exit.                Exit QUEEN
  QUEEN. [Aside] Queen one.
    Queen two. [Kneels]

                       Enter GHOST

    Queen three, after an entrance.
  GHOST. Ghost only.
  KING, QUEEN. TRAP: a joint speech belongs to no one.
    TRAP: nor does its second line.
  KING. King three. [Draws
    his sword] King four.
  1. Serv. Servant one.
    Servant two.                                   Exeunt

ACT II. SCENE 1.
Another room

Enter KING

  KING. King  five.
    King six.
                                                     [Dies]

THE END

<<THIS ELECTRONIC VERSION OF THE COMPLETE WORKS OF WILLIAM
SHAKESPEARE IS COPYRIGHT 1990-1993 BY WORLD LIBRARY, INC., AND IS
WITH PERMISSION.  ELECTRONIC AND MACHINE READABLE COPIES MAY BE
COMMERCIALLY.  PROHIBITED COMMERCIAL DISTRIBUTION INCLUDES BY ANY>>


1593

THE COMEDY OF BAR

by William Shakespeare


DRAMATIS PERSONAE

ANTIPHOLUS, a merchant
LUCE, a servant

SCENE:
Ephesus

ACT I. SCENE 1

A street

Enter ANTIPHOLUS and DROMIO

ANTIPHOLUS. Anti one.
  Anti two.
DROMIO. Dromio only.
<Exit
ANTIPHOLUS. Anti three.
<<THIS ELECTRONIC VERSION OF THE COMPLETE WORKS OF WILLIAM
WITH PERMISSION.  ELECTRONIC AND MACHINE READABLE COPIES MAY BE
COMMERCIALLY.  PROHIBITED COMMERCIAL DISTRIBUTION INCLUDES BY ANY>>
  Anti four.
  Anti five.
KING. Another play's king.
  Same role name, another role.
LUCE. Luce one.

Enter ADRIANA

  Luce two.

THE END


End of this Etext of The Complete Works of William Shakespeare
"""

FOO = 'THE TRAGEDY OF FOO'
BAR = 'THE COMEDY OF BAR'
EXPECTED_ROLES = [
    (FOO, 'KING', [
        'King one, whose opening line is long enough to need a second'
        ' sequence.', 'King two, before an exit.', 'King three.', 'King four.',
        'King five.', 'King six.']),
    (FOO, 'QUEEN', ['Queen one.', 'Queen two.',
                    'Queen three, after an entrance.']),
    (FOO, '1. SERV', ['Servant one.', 'Servant two.']),
    (BAR, 'ANTIPHOLUS', ['Anti one.', 'Anti two.', 'Anti three.', 'Anti four.',
                         'Anti five.']),
    (BAR, 'KING', ["Another play's king.", 'Same role name, another role.']),
    (BAR, 'LUCE', ['Luce one.', 'Luce two.']),
]
# 80/20 split of each role above: 6 -> 4/2, 3 -> 2/1, 2 -> 1/1, 5 -> 4/1.
EXPECTED_SPLITS = [(4, 2), (2, 1), (1, 1), (4, 1), (1, 1), (1, 1)]
GROUP_NAMES = tuple(f'{play}/{role}' for play, role, _ in EXPECTED_ROLES)


@pytest.fixture(name='data_dir')
def fixture_data_dir(tmp_path):
  (tmp_path / '100.txt').write_text(FAKE_TEXT)
  return tmp_path


def one_line(err: pytest.ExceptionInfo) -> str:
  text = str(err.value)
  assert '\n' not in text
  return text


def decode_rows(x: np.ndarray, y: np.ndarray) -> str:
  """The text a run of sequences was cut from: inputs + each last target."""
  vocab = shakespeare.build_vocabulary()
  return ''.join(vocab.decode(np.append(xi, yi[-1])) for xi, yi in zip(x, y))


# ------------------------------------------------------------------ parsing


def test_parse_plays_finds_exactly_the_roles_with_two_lines():
  assert shakespeare.parse_plays(FAKE_TEXT) == EXPECTED_ROLES


def test_parse_plays_drops_one_line_roles_traps_and_directions():
  roles = shakespeare.parse_plays(FAKE_TEXT)
  names = {role for _, role, _ in roles}
  assert not names & {'GHOST', 'DROMIO', 'HEADER', 'WILL'}  # 1 line / traps.
  text = '\n'.join(line for _, _, lines in roles for line in lines)
  for absent in ('TRAP', 'Exit', 'Exeunt', 'Enter', 'Aside', 'Kneels',
                 'sword', 'Dies', 'PERMISSION', 'increase', '<', '[', ']'):
    assert absent not in text


def test_parse_plays_without_a_play_is_empty():
  sonnets_only = FAKE_TEXT.split('1600\n')[0]
  assert shakespeare.parse_plays(sonnets_only) == []
  assert shakespeare.parse_plays('') == []


@pytest.mark.parametrize('min_role_lines, kept', [
    (2, ['KING', 'QUEEN', '1. SERV', 'ANTIPHOLUS', 'KING', 'LUCE']),
    (3, ['KING', 'QUEEN', 'ANTIPHOLUS']),  # The reference's rule: > 2 lines.
    (6, ['KING']),
    (7, []),
])
def test_parse_plays_keeps_roles_with_at_least_min_role_lines(
    min_role_lines, kept
):
  roles = shakespeare.parse_plays(FAKE_TEXT, min_role_lines=min_role_lines)
  assert [role for _, role, _ in roles] == kept
  assert roles == [r for r in EXPECTED_ROLES if len(r[2]) >= min_role_lines]


@pytest.mark.parametrize('bad', [1, 0, -3, 2.5, True, '3', None])
def test_min_role_lines_must_be_an_integer_of_at_least_two(bad, data_dir):
  for call in (
      lambda: shakespeare.parse_plays(FAKE_TEXT, min_role_lines=bad),
      lambda: shakespeare.load_shakespeare(str(data_dir), min_role_lines=bad),
      lambda: shakespeare.paper_comparison(str(data_dir), min_role_lines=bad),
  ):
    with pytest.raises(base.DatasetError) as err:
      call()
    assert one_line(err).startswith(
        f'min_role_lines={bad!r}: must be an integer >= 2'
    )


@pytest.mark.parametrize(
    'n, num_train, num_test',
    [(2, 1, 1), (3, 2, 1), (4, 3, 1), (5, 4, 1), (6, 4, 2), (10, 8, 2),
     (11, 8, 3)],
)
def test_split_role_lines_rounds_the_test_share_up(n, num_train, num_test):
  lines = [f'line {i}' for i in range(n)]
  train, test = shakespeare.split_role_lines(lines)
  assert (len(train), len(test)) == (num_train, num_test)
  assert train + test == lines  # First lines train, last lines test.


def test_split_role_lines_rejects_a_bad_fraction():
  with pytest.raises(base.DatasetError) as err:
    shakespeare.split_role_lines(['a', 'b'], train_fraction=1.0)
  assert 'train_fraction' in one_line(err)


def test_statistics_of_the_fake(data_dir):
  stats = shakespeare.statistics(FAKE_TEXT)
  train_chars = test_chars = 0
  for (_, _, lines), (num_train, _) in zip(EXPECTED_ROLES, EXPECTED_SPLITS):
    train_chars += sum(len(l) + 1 for l in lines[:num_train])
    test_chars += sum(len(l) + 1 for l in lines[num_train:])
  assert stats['num_plays'] == 2
  assert stats['num_clients'] == 6
  assert stats['train_lines'] == sum(a for a, _ in EXPECTED_SPLITS) == 13
  assert stats['test_lines'] == sum(b for _, b in EXPECTED_SPLITS) == 7
  assert (stats['train_chars'], stats['test_chars']) == (train_chars,
                                                         test_chars)
  data = shakespeare.load_shakespeare(str(data_dir))
  assert stats['train_sequences'] == len(data.y_train)
  assert stats['test_sequences'] == len(data.y_test)


def test_statistics_with_the_reference_rule(data_dir):
  stats = shakespeare.statistics(FAKE_TEXT, min_role_lines=3)
  # KING 6 lines -> 4/2, QUEEN 3 -> 2/1, ANTIPHOLUS 5 -> 4/1.
  assert stats['num_clients'] == 3 and stats['num_plays'] == 2
  assert (stats['train_lines'], stats['test_lines']) == (10, 4)
  # Each train line plus its newline: KING's first 4 (70 + 25 + 11 + 10 + 4 = 120),
  # QUEEN's 2 (10 + 10 + 2 = 22), ANTIPHOLUS's 4 (9 + 9 + 11 + 10 + 4 = 43).
  assert stats['train_chars'] == 120 + 22 + 43 == 185


def test_paper_count_describe_hand_computed():
  assert shakespeare.PaperCount('clients', 1215, 1146).describe() == (
      '1,215 clients (paper: 1,146, +6.0%)'  # 1215 / 1146 = 1.0602
  )
  assert shakespeare.PaperCount('test characters', 849_805, 870_014).describe() == (
      '849,805 test characters (paper: 870,014, -2.3%)'  # 0.97677
  )
  assert shakespeare.PaperCount('train lines', 81_965, None).describe() == (
      '81,965 train lines (paper: not given)'
  )


def test_paper_comparison_of_the_fake(data_dir):
  stats = shakespeare.statistics(FAKE_TEXT)
  counts = shakespeare.paper_comparison(str(data_dir))
  assert [(c.quantity, c.ours, c.paper) for c in counts] == [
      ('clients', 6, 1146),
      ('train lines', 13, None),
      ('test lines', 7, None),
      ('train characters', stats['train_chars'], 3_564_579),
      ('test characters', stats['test_chars'], 870_014),
  ]
  counts = shakespeare.paper_comparison(
      str(data_dir / '100.txt'), min_role_lines=3
  )
  assert [c.ours for c in counts[:3]] == [3, 10, 4]


def test_load_notes_give_the_rule_and_the_counts_next_to_the_papers(data_dir):
  stats = shakespeare.statistics(FAKE_TEXT)
  counts = (
      f'6 clients (paper: 1,146, -99.5%); 13 train lines (paper: not given);'
      f' 7 test lines (paper: not given); {stats["train_chars"]} train'
      f' characters (paper: 3,564,579, -100.0%); {stats["test_chars"]} test'
      ' characters (paper: 870,014, -100.0%)'
  )
  data = shakespeare.load_shakespeare(str(data_dir))
  assert data.notes == (
      "shakespeare: one client per role with >= 2 lines (the paper's rule)",
      f'shakespeare vs the paper: {counts}',
  )
  iid = shakespeare.load_shakespeare(
      str(data_dir), variant='iid', min_role_lines=3
  )
  assert iid.notes[0] == (
      'shakespeare_iid: as many clients as roles with >= 3 lines (the'
      " reference preprocessing's rule)"
  )
  assert iid.notes[1].startswith('shakespeare_iid vs the paper: 3 clients')
  assert len(iid.group_names) == 3


def test_load_with_the_reference_rule_keeps_roles_with_three_lines(data_dir):
  data = shakespeare.load_shakespeare(str(data_dir), min_role_lines=3)
  assert data.group_names == (
      f'{FOO}/KING', f'{FOO}/QUEEN', f'{BAR}/ANTIPHOLUS'
  )
  full = shakespeare.load_shakespeare(str(data_dir))
  for g, name in enumerate(data.group_names):
    same = full.group_names.index(name)
    np.testing.assert_array_equal(
        data.x_train[data.train_groups == g],
        full.x_train[full.train_groups == same],
    )
    np.testing.assert_array_equal(
        data.y_test[data.test_groups == g],
        full.y_test[full.test_groups == same],
    )


def test_load_with_too_high_min_role_lines_is_one_line(data_dir):
  with pytest.raises(base.DatasetError) as err:
    shakespeare.load_shakespeare(str(data_dir), min_role_lines=7)
  assert one_line(err) == (
      f'Shakespeare: no role in {data_dir / "100.txt"} has >= 7 lines'
      ' (min_role_lines=7); lower it (2 = the paper)'
  )


# ------------------------------------------------------------------ loading


def test_load_by_role(data_dir):
  data = shakespeare.load_shakespeare(str(data_dir))
  assert data.name == 'shakespeare'
  assert data.num_classes == shakespeare.VOCAB_SIZE
  assert data.input_shape == (80,)
  assert data.x_train.dtype == data.y_train.dtype == np.int32
  assert data.y_test.shape[1:] == (80,)
  assert data.group_names == GROUP_NAMES
  for g, ((_, _, lines), (num_train, _)) in enumerate(
      zip(EXPECTED_ROLES, EXPECTED_SPLITS)
  ):
    rows = data.train_groups == g
    assert decode_rows(data.x_train[rows], data.y_train[rows]) == ''.join(
        l + '\n' for l in lines[:num_train]
    )
    rows = data.test_groups == g
    assert decode_rows(data.x_test[rows], data.y_test[rows]) == ''.join(
        l + '\n' for l in lines[num_train:]
    )
  # KING of Foo trains on 4 lines, 120 characters: 81 + 39, 2 sequences.
  assert len(''.join(l + '\n' for l in EXPECTED_ROLES[0][2][:4])) == 120
  assert (data.train_groups == 0).sum() == 2


def test_load_accepts_the_file_itself_and_pg100(tmp_path, data_dir):
  a = shakespeare.load_shakespeare(str(data_dir / '100.txt'))
  (tmp_path / 'other').mkdir()
  (tmp_path / 'other' / 'pg100.txt').write_text(FAKE_TEXT)
  b = shakespeare.load_shakespeare(str(tmp_path / 'other'))
  np.testing.assert_array_equal(a.x_train, b.x_train)
  assert a.group_names == b.group_names == GROUP_NAMES


def test_load_iid_is_balanced_with_the_same_sequences(data_dir):
  by_role = shakespeare.load_shakespeare(str(data_dir))
  iid = shakespeare.load_shakespeare(str(data_dir), variant='iid', seed=3)
  assert iid.name == 'shakespeare_iid'
  assert len(iid.group_names) == len(by_role.group_names) == 6
  for split in ('train', 'test'):
    x_a, x_b = getattr(by_role, f'x_{split}'), getattr(iid, f'x_{split}')
    y_a, y_b = getattr(by_role, f'y_{split}'), getattr(iid, f'y_{split}')
    assert len(x_b) == len(x_a)

    def rows(x, y):
      return sorted(map(tuple, np.concatenate([x, y], axis=1).tolist()))

    assert rows(x_a, y_a) == rows(x_b, y_b)
    sizes = np.bincount(getattr(iid, f'{split}_groups'), minlength=6)
    assert sizes.sum() == len(x_a) and sizes.max() - sizes.min() <= 1
  again = shakespeare.load_shakespeare(str(data_dir), variant='iid', seed=3)
  np.testing.assert_array_equal(iid.train_groups, again.train_groups)
  others = [
      shakespeare.load_shakespeare(str(data_dir), variant='iid', seed=s)
      for s in range(4)
  ]
  assert any(
      not np.array_equal(o.train_groups, iid.train_groups) for o in others
  )


def test_missing_file_is_one_line(tmp_path):
  with pytest.raises(base.DatasetFileNotFoundError) as err:
    shakespeare.load_shakespeare(str(tmp_path))
  text = one_line(err)
  assert '100.txt' in text and 'Project Gutenberg eBook #100' in text
  assert str(tmp_path) in text


def test_file_without_plays_is_one_line(tmp_path):
  (tmp_path / '100.txt').write_text('THE SONNETS\n\nCOUNTESS.\nHello.\n')
  with pytest.raises(base.DatasetError) as err:
    shakespeare.load_shakespeare(str(tmp_path))
  assert 'no play' in one_line(err)


def test_bad_arguments_are_one_line(data_dir):
  with pytest.raises(base.DatasetError) as err:
    shakespeare.load_shakespeare(str(data_dir), variant='by_play')
  assert "'by_play'" in one_line(err) and 'by_role, iid' in str(err.value)
  with pytest.raises(base.DatasetError) as err:
    shakespeare.load_shakespeare(None)
  assert '--data_dir is required' in one_line(err)


# ------------------------------------------------------ registry, federated


@pytest.mark.parametrize('name', ['shakespeare', 'shakespeare_iid'])
def test_registry(name, data_dir):
  with pytest.raises(base.DatasetError) as err:
    registry.load_dataset(name)
  assert f"'{name}'" in one_line(err) and '--data_dir is required' in str(
      err.value
  )
  data = registry.load_dataset(name, str(data_dir), seed=1)
  assert data.name == name and len(data.group_names) == 6


@pytest.mark.parametrize('name', ['shakespeare', 'shakespeare_iid'])
def test_registry_passes_min_role_lines(name, data_dir):
  options = registry.DatasetOptions(min_role_lines=3)
  data = registry.load_dataset(name, str(data_dir), options=options)
  assert len(data.group_names) == 3
  assert '>= 3 lines' in data.notes[0]
  assert len(registry.load_dataset(name, str(data_dir)).group_names) == 6
  with pytest.raises(base.DatasetError) as err:
    registry.load_dataset(
        name, str(data_dir), options=registry.DatasetOptions(min_role_lines=1)
    )
  assert one_line(err).startswith('min_role_lines=1: must be an integer >= 2')


def test_natural_partition_gives_one_client_per_role(data_dir):
  data = shakespeare.load_shakespeare(str(data_dir))
  fed = federated.build_federated_data(
      data, partition='natural', num_clients=None, seed=0
  )
  assert len(fed.client_ids) == 6
  assert fed.input_shape == (80,)
  assert fed.label_histogram.shape == (6, shakespeare.VOCAB_SIZE)
  for g, cid in enumerate(fed.client_ids):
    x, y = fed.train_arrays[cid]
    np.testing.assert_array_equal(x, data.x_train[data.train_groups == g])
    np.testing.assert_array_equal(y, data.y_train[data.train_groups == g])
    x, y = fed.test_arrays[cid]
    np.testing.assert_array_equal(x, data.x_test[data.test_groups == g])
  counts = collections.Counter(len(fed.train_arrays[c][1]) for c in fed.client_ids)
  assert counts == {2: 1, 1: 5}
  x, y = fed.train_arrays[fed.client_ids[0]]
  assert x.shape[1:] == y.shape[1:] == (80,)
  assert x.dtype.name == y.dtype.name == 'int32'
