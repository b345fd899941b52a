"""FedAvg's Shakespeare: one client per speaking role, next-character targets.

McMahan et al. (2017): "We construct a dataset from The Complete Works of
William Shakespeare ... we define a client for each speaking role in each play
with at least two lines ... For each client we split the data into a set of
training lines (the first 80% of lines for the role), and test lines (the last
20%, rounded up to be at least one line). The resulting dataset has 3,564,579
characters in the training set, and 870,014 characters in the test set."

The dataset is built in three steps, one module each:
  shakespeare_plays      the Gutenberg 1994 `100.txt`: found, read and parsed
                         into (play, role, lines) per speaking role;
  this module            the paper's split of each role's lines (first 80%
                         train), the clients (by role, or IID), the counts
                         next to the paper's, and `load_shakespeare`;
  shakespeare_sequences  the character vocabulary (V = 258) and the
                         next-character sequences of 80 a client trains on.
The names of the other two that callers use are re-exported here.

Characters (`statistics`): each line's characters plus one newline, i.e. the
length of the text a client trains on (`role_text`); without the newline the
reference's counts fall 2% below the paper's, with it they match (below).

On the real 1994 `100.txt` the parser finds 36 plays, 1,215 roles with >= 2
lines, 3,361,476 train / 849,805 test characters (42,095 / 11,091 sequences);
the paper has 1,146 / 3,564,579 / 870,014. The gaps are choices where the
paper's words and the reference preprocessing (LEAF's, from Google) differ:
* Clients: the reference skips roles with <= 2 lines, though its comment and
  the paper say "at least two"; with >= 3 lines this parser finds 1,149 roles
  (LEAF's own parse 1,147, plus misparses such as roles 'COMMERCIALLY' and
  'MRS' = Mistress Page and Ford merged, and 'LUCIUS' SERVANT' etc. missing).
  `min_role_lines` chooses: 2 (default, the paper's words: 1,215 clients) or
  3 (the reference's rule: 1,149 clients, 3,359,233 train / 847,720 test
  characters in 81,899 / 21,034 lines). A run's `notes` and
  `paper_comparison` give the counts next to the paper's.
* Characters: the reference keeps stage directions and runs of spaces inside
  role lines ('Enter PAROLLES' lines, '      Exit' tails): emulating it gives
  4,440,389 characters in all (paper 4,434,593, +0.13%); without them, here,
  4,211,281 (-5.0%).
* Split: the reference tests on max(floor(20%), 1) lines (19.6% of the
  characters, as in the paper); the 20% rounded up, as here, gives 20.2%.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Mapping, Optional, Sequence

import numpy as np

from datasets import base
# pylint: disable=g-importing-member,unused-import
from datasets.shakespeare_plays import FILE_NAMES
from datasets.shakespeare_plays import GUTENBERG_1994_CLIENTS
from datasets.shakespeare_plays import MIN_ROLE_LINES
from datasets.shakespeare_plays import REFERENCE_MIN_ROLE_LINES
from datasets.shakespeare_plays import SOURCE
from datasets.shakespeare_plays import check_min_role_lines
from datasets.shakespeare_plays import find_file
from datasets.shakespeare_plays import parse_plays
from datasets.shakespeare_plays import read_text
from datasets.shakespeare_sequences import NUM_CHARACTERS
from datasets.shakespeare_sequences import NUM_SPECIAL_IDS
from datasets.shakespeare_sequences import OOV_ID
from datasets.shakespeare_sequences import PAD_ID
from datasets.shakespeare_sequences import SEQUENCE_LENGTH
from datasets.shakespeare_sequences import VOCAB_SIZE
from datasets.shakespeare_sequences import VOCABULARY
from datasets.shakespeare_sequences import Vocabulary
from datasets.shakespeare_sequences import build_vocabulary
from datasets.shakespeare_sequences import encode_sequences
from datasets.shakespeare_sequences import num_sequences
# pylint: enable=g-importing-member,unused-import

# The paper's numbers (McMahan et al. 2017, Sec. 3), to report against.
PAPER_NUM_CLIENTS = 1146
PAPER_TRAIN_CHARS = 3_564_579
PAPER_TEST_CHARS = 870_014

VARIANTS = ('by_role', 'iid')


def split_role_lines(
    lines: Sequence[str], train_fraction: float = 0.8
) -> tuple[list[str], list[str]]:
  """The paper's split: first 80% of a role's lines train, the rest test.

  The test share, (1 - train_fraction) * n, is rounded up and is at least one
  line: 2 lines -> 1/1, 5 -> 4/1, 6 -> 4/2 (1.2 rounds up to 2), 10 -> 8/2.

  Args:
    lines: A role's lines, in order.
    train_fraction: Share of lines for training, in (0, 1).

  Returns:
    (train lines, test lines).

  Raises:
    DatasetError: train_fraction outside (0, 1).
  """
  if not 0 < train_fraction < 1:
    raise base.DatasetError(
        f'train_fraction must be in (0, 1), got {train_fraction}'
    )
  n = len(lines)
  # round() first: 1 - 0.7 is 0.30000000000000004, which would give 10 lines
  # 4 test lines instead of 3.
  num_test = max(math.ceil(round((1 - train_fraction) * n, 9)), 1)
  num_test = min(num_test, n)
  return list(lines[: n - num_test]), list(lines[n - num_test :])


def role_text(lines: Sequence[str]) -> str:
  """The text a client trains on: each line followed by a newline."""
  return ''.join(line + '\n' for line in lines)


def _statistics(roles: Sequence[tuple[str, str, Sequence[str]]]) -> dict[str, int]:
  """`statistics` of already parsed roles."""
  stats = dict.fromkeys(
      ('train_lines', 'test_lines', 'train_chars', 'test_chars',
       'train_sequences', 'test_sequences'),
      0,
  )
  for _, _, lines in roles:
    for split, part in zip(('train', 'test'), split_role_lines(lines)):
      chars = len(role_text(part))
      stats[f'{split}_lines'] += len(part)
      stats[f'{split}_chars'] += chars
      stats[f'{split}_sequences'] += num_sequences(chars)
  return {
      'num_plays': len({play for play, _, _ in roles}),
      'num_clients': len(roles),
      **stats,
  }


def statistics(
    text: str, *, min_role_lines: int = MIN_ROLE_LINES
) -> dict[str, int]:
  """The dataset's size, to report against the paper's.

  Characters are counted as in `role_text`: a line's characters plus its
  newline (the count that best matches the paper; see the module docstring).

  Args:
    text: The whole `100.txt`.
    min_role_lines: As in `parse_plays`.

  Returns:
    num_plays, num_clients (roles with >= min_role_lines lines), train_lines,
    test_lines, train_chars, test_chars, train_sequences, test_sequences
    (chunks of 81 characters per client, as in `load_shakespeare`).
  """
  return _statistics(parse_plays(text, min_role_lines=min_role_lines))


@dataclasses.dataclass(frozen=True)
class PaperCount:
  """One count of the dataset next to the FedAvg paper's.

  Attributes:
    quantity: 'clients', 'train lines', 'test lines', 'train characters' or
      'test characters'.
    ours: The count in the data read.
    paper: The paper's count, or None where the paper gives none (lines).
  """

  quantity: str
  ours: int
  paper: Optional[int]

  def describe(self) -> str:
    """'1,215 clients (paper: 1,146, +6.0%)'; '(paper: not given)'."""
    if self.paper is None:
      paper = 'not given'
    else:
      paper = f'{self.paper:,}, {self.ours / self.paper - 1:+.1%}'
    return f'{self.ours:,} {self.quantity} (paper: {paper})'


def paper_counts(stats: Mapping[str, int]) -> tuple[PaperCount, ...]:
  """Clients, lines and characters of `stats` next to the paper's numbers.

  Args:
    stats: A `statistics` result.

  Returns:
    PaperCounts of clients, train/test lines (the paper gives none) and
    train/test characters, in this order.
  """
  return (
      PaperCount('clients', stats['num_clients'], PAPER_NUM_CLIENTS),
      PaperCount('train lines', stats['train_lines'], None),
      PaperCount('test lines', stats['test_lines'], None),
      PaperCount('train characters', stats['train_chars'], PAPER_TRAIN_CHARS),
      PaperCount('test characters', stats['test_chars'], PAPER_TEST_CHARS),
  )


def paper_comparison(
    data_dir: str, *, min_role_lines: int = MIN_ROLE_LINES
) -> tuple[PaperCount, ...]:
  """Reads `100.txt` and returns its counts next to the paper's.

  For an entry point to print (`count.describe()` per line); a loaded
  dataset's `notes` carry the same numbers on one line.

  Args:
    data_dir: Directory holding `100.txt` (or `pg100.txt`), or that file.
    min_role_lines: As in `parse_plays`.

  Returns:
    `paper_counts` of the file. On the real 1994 file with min_role_lines=2:
    1,215 clients (paper 1,146), 81,965 / 21,100 lines, 3,361,476 / 849,805
    characters (paper 3,564,579 / 870,014).

  Raises:
    DatasetError, DatasetFileNotFoundError: as `load_shakespeare`.
  """
  min_role_lines = check_min_role_lines(min_role_lines)
  path = find_file(base.require_data_dir(data_dir, 'shakespeare'))
  text = read_text(path)
  return paper_counts(statistics(text, min_role_lines=min_role_lines))


def _notes(
    name: str, min_role_lines: int, counts: Sequence[PaperCount]
) -> tuple[str, ...]:
  """The dataset's notes: which roles count, the counts vs the paper."""
  if min_role_lines == MIN_ROLE_LINES:
    rule = "the paper's rule"
  elif min_role_lines == REFERENCE_MIN_ROLE_LINES:
    rule = "the reference preprocessing's rule"
  else:
    rule = (
        f'the paper: >= {MIN_ROLE_LINES}, the reference preprocessing:'
        f' >= {REFERENCE_MIN_ROLE_LINES}'
    )
  clients = (
      'one client per role' if name == 'shakespeare'
      else 'as many clients as roles'
  )
  return (
      f'{name}: {clients} with >= {min_role_lines} lines ({rule})',
      f'{name} vs the paper: ' + '; '.join(c.describe() for c in counts),
  )


# --------------------------------------------------------------- loading


def _stack(
    pairs: list[tuple[np.ndarray, np.ndarray]],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Concatenated x, y and the group id of each row."""
  empty = np.zeros((0, SEQUENCE_LENGTH), np.int32)
  xs = [x for x, _ in pairs] or [empty]
  ys = [y for _, y in pairs] or [empty]
  groups = np.repeat(
      np.arange(len(pairs), dtype=np.int64), [len(x) for x, _ in pairs]
  )
  return np.concatenate(xs), np.concatenate(ys), groups


def _deal(num: int, num_clients: int, rng: np.random.Generator) -> np.ndarray:
  """Group ids of `num` rows after a seeded shuffle, dealt round-robin."""
  groups = np.empty(num, np.int64)
  groups[rng.permutation(num)] = np.arange(num) % num_clients
  return groups


def load_shakespeare(
    data_dir: Optional[str],
    *,
    variant: str = 'by_role',
    seed: int = 0,
    min_role_lines: int = MIN_ROLE_LINES,
) -> base.ArrayDataset:
  """Loads FedAvg's Shakespeare from the Gutenberg text.

  Args:
    data_dir: Directory holding `100.txt` (or `pg100.txt`), or that file.
    variant: 'by_role' (one group per role with >= min_role_lines lines: its
      first 80% of lines train, the rest test) or 'iid' (as many groups, the
      same train and test sequences shuffled with `seed` and dealt out
      equally).
    seed: Seed of the 'iid' shuffle; unused by 'by_role'.
    min_role_lines: Roles with fewer lines are dropped: 2 (the paper's words,
      1,215 clients on the real file) or 3 (the reference preprocessing's
      rule, 1,149 clients; the paper reports 1,146).

  Returns:
    ArrayDataset 'shakespeare' / 'shakespeare_iid': x and y int32 (N, 80),
    num_classes VOCAB_SIZE, train_groups / test_groups (int64 group ids),
    group_names ('PLAY/ROLE' for 'by_role', 'iid_0000', ... for 'iid') and
    two notes: the role rule, and the clients, lines and characters next to
    the paper's (`paper_counts`).

  Raises:
    DatasetError: data_dir is None, unknown variant, bad min_role_lines, or
      no role with enough lines in the file.
    DatasetFileNotFoundError: no 100.txt / pg100.txt in data_dir.
  """
  if variant not in VARIANTS:
    raise base.DatasetError(
        f'unknown Shakespeare variant {variant!r}; allowed:'
        f' {", ".join(VARIANTS)}'
    )
  min_role_lines = check_min_role_lines(min_role_lines)
  name = 'shakespeare' if variant == 'by_role' else 'shakespeare_iid'
  path = find_file(base.require_data_dir(data_dir, name))
  text = read_text(path)
  roles = parse_plays(text, min_role_lines=min_role_lines)
  if not roles and parse_plays(text):
    raise base.DatasetError(
        f'Shakespeare: no role in {path} has >= {min_role_lines} lines'
        f' (min_role_lines={min_role_lines}); lower it'
        f' ({MIN_ROLE_LINES} = the paper)'
    )
  if not roles:
    raise base.DatasetError(
        f'Shakespeare: found no play with speaking roles in {path}; expected'
        " the 1994 layout ('by William Shakespeare' under each title, speeches"
        " as '  NAME. text'): newer editions are laid out differently;"
        f' {SOURCE}'
    )
  train, test = [], []
  for _, _, lines in roles:
    train_lines, test_lines = split_role_lines(lines)
    train.append(encode_sequences(role_text(train_lines)))
    test.append(encode_sequences(role_text(test_lines)))
  x_train, y_train, train_groups = _stack(train)
  x_test, y_test, test_groups = _stack(test)
  if variant == 'by_role':
    group_names = tuple(f'{play}/{role}' for play, role, _ in roles)
  else:
    rng = np.random.default_rng(seed)
    train_groups = _deal(len(x_train), len(roles), rng)
    test_groups = _deal(len(x_test), len(roles), rng)
    width = max(4, len(str(len(roles) - 1)))
    group_names = tuple(f'iid_{i:0{width}d}' for i in range(len(roles)))
  return base.ArrayDataset(
      name=name,
      x_train=x_train,
      y_train=y_train,
      x_test=x_test,
      y_test=y_test,
      num_classes=VOCAB_SIZE,
      train_groups=train_groups,
      test_groups=test_groups,
      group_names=group_names,
      notes=_notes(name, min_role_lines, paper_counts(_statistics(roles))),
  )
