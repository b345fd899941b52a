"""FedAvg's Shakespeare: one client per speaking role, next-character targets.

McMahan et al. (2017): "We construct a dataset from The Complete Works of
William Shakespeare ... we define a client for each speaking role in each play
with at least two lines ... For each client we split the data into a set of
training lines (the first 80% of lines for the role), and test lines (the last
20%, rounded up to be at least one line). The resulting dataset has 3,564,579
characters in the training set, and 870,014 characters in the test set."

Source: Project Gutenberg eBook #100 in its January 1994 edition
(`100.txt`, also distributed as `shaks12.txt`, `files/100/old/1994-01-100.zip`)
-- the edition LEAF's preprocessing downloads, and the only one whose layout
this parser reads. Its layout, which the parser relies on:

* Each work starts with its year, its title and a line `by William
  Shakespeare`; the Gutenberg header before the first work and the footer
  after the last one are never read. World Library's `<<THIS ELECTRONIC
  VERSION ...>>` notices, repeated throughout, are removed first.
* A work is a play iff it has an act heading (`ACT I. SCENE 1.`); the Sonnets
  and A Lover's Complaint have none and are skipped.
* A speech starts on a line `  NAME. text` (two spaces; names in capitals, or
  abbreviated as in `  Ham. text`, `  1. Play. text`, `  MRS. PAGE. text`);
  its further lines are indented four spaces. The Comedy of Errors is typeset
  two spaces to the left (`NAME. text`, continuation indented two), so the
  speaker indentation is detected per play.
* Stage directions are dropped: bracketed text (also across lines), lines
  starting with Enter/Exit/Exeunt/Re-enter/Manet/Flourish/Alarum/... outside
  the verse indentation (with the lines that continue them up to the next blank
  line), `<Exit` lines, centred lines (indented 24+ spaces), and directions
  after a run of 3+ spaces at the end of a speech line (`Farewell.   Exit`).
* Speeches by several roles at once (`GRUMIO, BIONDELLO. text`) belong to no
  single role and are dropped; `ALL.` and `BOTH.` are kept as roles, as in
  LEAF.

A "line" is one physical line of a speech in this file (LEAF counts the same
way), cleaned of stage directions, whitespace runs collapsed. Role names are
upper-cased (the file spells a few roles in two casings) and are per play.

Characters (`statistics`): each line's characters plus one newline, i.e. the
length of the text a client trains on (`role_text`); without the newline the
reference's counts fall 2% below the paper's, with it they match (below).

On the real 1994 `100.txt` this module finds 36 plays, 1,215 roles with >= 2
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

Vocabulary: id 0 = padding, id 1 = out-of-vocabulary, ids 2..257 = the
characters U+0000..U+00FF (ASCII + Latin-1) in code-point order: V = 258.
Why: FedAvg's LSTM has 866,578 parameters, which `models.lstm` shows is
reproduced exactly by V = 258 with peephole LSTMs (no integer V works with
standard LSTMs), i.e. 256 byte-sized characters + 2 special ids. The 1994 text
is pure ASCII, so no character of it is out of vocabulary; there are no
beginning/end-of-line markers (a newline ends every line instead).

Sequences (`encode_sequences`): a client's text is cut into consecutive,
non-overlapping chunks of 81 characters; inputs are a chunk's first 80, targets
its last 80 (the next character at every position, unroll 80). The last chunk
is padded with PAD_ID in both x and y, so y is PAD_ID where there is no target
(a loss or accuracy should mask id 0).
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from typing import Mapping, Optional, Sequence

import numpy as np

from datasets import base

SEQUENCE_LENGTH = 80

PAD_ID = 0
OOV_ID = 1
NUM_SPECIAL_IDS = 2
NUM_CHARACTERS = 256  # U+0000..U+00FF.
VOCAB_SIZE = NUM_SPECIAL_IDS + NUM_CHARACTERS  # 258 = models.lstm's V.

# The paper's numbers (McMahan et al. 2017, Sec. 3), to report against.
PAPER_NUM_CLIENTS = 1146
PAPER_TRAIN_CHARS = 3_564_579
PAPER_TEST_CHARS = 870_014

# Which roles become clients: those with at least this many lines. The paper:
# "each speaking role in each play with at least two lines" (2, the default);
# the reference preprocessing (LEAF's, from Google) skips roles with <= 2
# lines, i.e. keeps >= 3. A role needs 2 lines: one to train, one to test.
MIN_ROLE_LINES = 2
REFERENCE_MIN_ROLE_LINES = 3

# Clients this parser finds in the real January 1994 100.txt (sha256
# c5601d266987ac885ca96522b1b4e439feb7eca39f0fe1111f7342b63b6468f3), by
# min_role_lines: the Shakespeare presets' --num_clients must be one of these
# (checked on fake text with these counts by tests/tff_programs/test_configs).
GUTENBERG_1994_CLIENTS = {MIN_ROLE_LINES: 1215, REFERENCE_MIN_ROLE_LINES: 1149}

FILE_NAMES = ('100.txt', 'pg100.txt')
VARIANTS = ('by_role', 'iid')
_SOURCE = (
    'get Project Gutenberg eBook #100, The Complete Works of William'
    ' Shakespeare, in its January 1994 edition'
    ' (gutenberg.org/files/100/old/1994-01-100.zip, as LEAF uses)'
)

# ------------------------------------------------------------------ parsing

_NOTICE_RE = re.compile(r'<<.*?>>', re.DOTALL)
_AUTHOR_LINE = 'by William Shakespeare'
_TITLE_LOOKBACK = 7  # The title is at most this many lines above the author.
_ACT_RE = re.compile(r'^\s*(?:ACT|Act)\s+[IVXL]+\b')
_HEADING_RE = re.compile(
    r'^(?:'
    r'(?:ACT|Act)\s*[IVXLl1]+\b.*'  # ACT I. SCENE 1. (also OCR'd 'ACT Il.')
    r'|(?:SCENE|Scene)(?:\s+[IVXL\d]+\b.*|\s*[.:-].*|)'  # SCENE 2. / SCENE:
    r'|(?:THE )?(?:INDUCTION|PROLOGUE|EPILOGUE)\b[^a-z]*'  # whole-line only
    r'|SC_\d+|[A-Z][A-Z_\d]*\|[A-Z][A-Z_\d]*|-?THE END-?'  # ACT_4|SC_11
    r')$'
)
_NAME_WORD = r"[A-Za-z][A-Za-z'-]*"
# Optional prefixes of two-part names: '1. Play', 'MRS. PAGE', 'Cap. Wife'.
_SPEAKER_RE = re.compile(
    r'(?P<name>(?:\d{1,2}\. |(?:MRS|Mrs)\. |(?:M|Cap)\. (?=Wife\.))?'
    rf'{_NAME_WORD}(?:(?:, | & | ){_NAME_WORD}){{0,5}})'
    r"\.(?: |(?=[A-Z']))(?P<text>.*)$"  # 'KING EDWARD.No more' (typo)
)
# Stage directions. Outside the verse indentation: a line starting with a
# sound cue, or holding an entrance or exit anywhere ('Wind horns. Enter a
# LORD'). At the verse indentation, where 'Enter our gates' is verse: a bare
# 'Exit.', or a line after a blank line starting with one of the words.
_END = r"(?![\w'-])"  # A whole word: not 'Enter'd', not 'Alarum'd'.
_CUES = r'(?:Flourish|Alarum|Alarums|Sennet|Excursions|Hautboys|Cornets)'
_MOVES = r'(?:Enter|Re-enter|Reenter|Exit|Exeunt|Exuent|Manet|Manent)'
_STAGE_RE = re.compile(rf'^\[?{_CUES}{_END}|\b{_MOVES}{_END}')
_VERSE_STAGE_RE = re.compile(rf'^(?:{_CUES}|{_MOVES}){_END}')
_BARE_STAGE_RE = re.compile(rf'^(?:{_CUES}|{_MOVES})\.?$')
_CENTRED_INDENT = 24  # Lines indented this much are centred directions.
_INLINE_DIRECTION_RE = re.compile(r' {3,}')  # 'Farewell.      Exit'
_BRACKETS_RE = re.compile(r'\s*\[[^\]]*\]\s*')
_JOINT = object()  # The speaker of a speech by several roles.


def _indent(line: str) -> int:
  return len(line) - len(line.lstrip(' '))


def _speaker_indent(lines: Sequence[str]) -> int:
  """2 for the usual `  NAME. text` plays, 0 for The Comedy of Errors."""
  counts = {0: 0, 2: 0}
  for line in lines:
    indent = _indent(line)
    if indent in counts and _SPEAKER_RE.match(line, indent):
      counts[indent] += 1
  return 2 if counts[2] >= counts[0] else 0


class _Speech:
  """Cleans the lines of speeches: brackets that may span lines, directions."""

  def __init__(self):
    self.bracket_open = False

  def clean(self, text: str) -> str:
    """The spoken part of `text` ('' if none), whitespace runs collapsed."""
    if self.bracket_open:
      close = text.find(']')
      if close < 0:
        return ''
      text = text[close + 1 :]
      self.bracket_open = False
    text = _BRACKETS_RE.sub(' ', text)
    start = text.find('[')
    if start >= 0:
      text = text[:start]
      self.bracket_open = True
    text = _INLINE_DIRECTION_RE.split(text.strip(), maxsplit=1)[0]
    return ' '.join(text.split())


def _parse_play(lines: Sequence[str]) -> dict[str, list[str]]:
  """Role -> cleaned speech lines, in order of first speech, for one play.

  Reading starts at the play's first heading (the 'SCENE:' line after the
  Dramatis Personae), so the cast list is never taken for speeches.
  """
  start = next(
      (i for i, l in enumerate(lines) if _HEADING_RE.match(l.strip())),
      len(lines),
  )
  lines = lines[start:]
  s = _speaker_indent(lines)
  verse = range(s + 1, s + 4)  # Indentation of a speech's further lines.
  roles: dict[str, list[str]] = {}
  speaker = None  # A role name, _JOINT, or None (no open speech).
  in_direction = False  # Inside a multi-line stage direction...
  direction_in_verse = False  # ...that started at the verse indentation.
  after_blank = True
  speech = _Speech()

  def add(text: str) -> None:
    text = speech.clean(text)
    if text and speaker is not _JOINT:
      roles.setdefault(speaker, []).append(text)

  for line in lines:
    stripped = line.strip()
    if not stripped:
      in_direction = speech.bracket_open = False
      after_blank = True
      continue
    follows_blank, after_blank = after_blank, False
    indent = _indent(line)
    in_verse = indent in verse
    if not in_verse and _HEADING_RE.match(stripped):
      speaker, in_direction, speech.bracket_open = None, False, False
      continue
    match = (
        _SPEAKER_RE.match(line, indent) if s - 1 <= indent <= s else None
    )
    if match:
      name = ' '.join(match.group('name').upper().split())
      speaker = _JOINT if (',' in name or '&' in name) else name
      in_direction = speech.bracket_open = False
      add(match.group('text'))
      continue
    if in_direction and (direction_in_verse or not in_verse):
      continue  # A stage direction goes on up to a blank line.
    if (
        _BARE_STAGE_RE.match(stripped)
        or (in_verse and follows_blank and _VERSE_STAGE_RE.match(stripped))
        or (not in_verse and (_STAGE_RE.search(stripped) or stripped[0] == '<'))
    ):
      in_direction, direction_in_verse = True, in_verse
      continue
    in_direction = False
    if speaker is None or indent >= _CENTRED_INDENT:
      continue
    if indent < s - 1:  # A location line or other text between scenes.
      speaker = None
      continue
    add(line)
  return roles


def _works(text: str) -> list[tuple[str, list[str]]]:
  """(title, lines) of each work: from its author line to the next one's."""
  lines = _NOTICE_RE.sub('', text.replace('\r\n', '\n')).expandtabs().split(
      '\n'
  )
  starts = [i for i, l in enumerate(lines) if l.strip() == _AUTHOR_LINE]
  works = []
  for k, start in enumerate(starts):
    title = next(
        (
            lines[i].strip()
            for i in range(start - 1, max(start - 1 - _TITLE_LOOKBACK, -1), -1)
            if lines[i].strip()
        ),
        f'WORK {k + 1}',
    )
    end = starts[k + 1] if k + 1 < len(starts) else len(lines)
    works.append((title, lines[start + 1 : end]))
  return works


def check_min_role_lines(min_role_lines: int) -> int:
  """Returns `min_role_lines` if valid (an integer >= 2), else one line why."""
  if (
      isinstance(min_role_lines, bool)
      or not isinstance(min_role_lines, (int, np.integer))
      or min_role_lines < 2
  ):
    raise base.DatasetError(
        f'min_role_lines={min_role_lines!r}: must be an integer >= 2 (a role'
        f' needs a train and a test line); {MIN_ROLE_LINES} = the paper,'
        f' {REFERENCE_MIN_ROLE_LINES} = the reference preprocessing'
    )
  return int(min_role_lines)


def parse_plays(
    text: str, *, min_role_lines: int = MIN_ROLE_LINES
) -> list[tuple[str, str, list[str]]]:
  """Every speaking role with >= `min_role_lines` lines, in file order.

  Args:
    text: The whole of the January 1994 `100.txt` (or a file in its layout).
    min_role_lines: Keep roles with at least this many lines: 2 (the paper)
      or 3 (the reference preprocessing); see `MIN_ROLE_LINES`.

  Returns:
    (play title, role name, the role's lines in order) per role with at least
    `min_role_lines` lines; roles are per play (HAMLET of Hamlet is one role),
    ordered by play, then by first speech within the play. Sonnets and poems,
    stage directions, the Gutenberg header/footer and copyright notices are
    excluded (see the module docstring). Empty if no play is found.

  Raises:
    DatasetError: min_role_lines is not an integer >= 2.
  """
  min_role_lines = check_min_role_lines(min_role_lines)
  result = []
  for title, lines in _works(text):
    if not any(_ACT_RE.match(l) for l in lines):
      continue  # The Sonnets, A Lover's Complaint: no speaking roles.
    for role, role_lines in _parse_play(lines).items():
      if len(role_lines) >= min_role_lines:
        result.append((title, role, role_lines))
  return result


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
      stats[f'{split}_sequences'] += _num_sequences(chars)
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
  path = _find_file(base.require_data_dir(data_dir, 'shakespeare'))
  text = _read_text(path)
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


# ----------------------------------------------------------- vocabulary


class Vocabulary:
  """A fixed character vocabulary: PAD 0, OOV 1, then U+0000..U+00FF.

  Attributes:
    size: Number of ids (VOCAB_SIZE = 258).
  """

  size = VOCAB_SIZE

  def encode(self, text: str) -> np.ndarray:
    """int32 ids of `text`'s characters; code points > U+00FF -> OOV_ID."""
    raw = text.encode('utf-32-le', 'surrogatepass')
    codes = np.frombuffer(raw, dtype=np.uint32)
    return np.where(
        codes < NUM_CHARACTERS, codes + NUM_SPECIAL_IDS, OOV_ID
    ).astype(np.int32)

  def decode(self, ids: Sequence[int] | np.ndarray) -> str:
    """The characters of `ids`; PAD_ID is dropped, OOV_ID becomes U+FFFD."""
    ids = np.asarray(ids, dtype=np.int64).reshape(-1)
    if ids.size and (ids.min() < 0 or ids.max() >= self.size):
      raise base.DatasetError(
          f'character ids must be in [0, {self.size}), got'
          f' {int(ids.min())}..{int(ids.max())}'
      )
    return ''.join(
        '\ufffd' if i == OOV_ID else chr(i - NUM_SPECIAL_IDS)
        for i in ids.tolist()
        if i != PAD_ID
    )


def build_vocabulary() -> Vocabulary:
  """The fixed vocabulary of every Shakespeare dataset (V = 258).

  Fixed rather than built from the text so ids mean the same in every run and
  V matches the paper's parameter count (see the module docstring).
  """
  return Vocabulary()


VOCABULARY = build_vocabulary()

# ------------------------------------------------------------ sequences


def _num_sequences(num_chars: int) -> int:
  """Chunks of SEQUENCE_LENGTH + 1 characters that hold a target."""
  chunk = SEQUENCE_LENGTH + 1
  num = -(-num_chars // chunk)
  if num and num_chars - (num - 1) * chunk < 2:
    num -= 1  # A trailing single character: no target.
  return num


def encode_sequences(text: str) -> tuple[np.ndarray, np.ndarray]:
  """Next-character examples: consecutive chunks of 81 characters.

  Chunk k holds characters [81k, 81k + 81); its inputs are the first 80, its
  targets the last 80 (targets[t] = the character after inputs[t]). The last
  chunk is padded with PAD_ID (in x and y); a last chunk of one character has
  no target and is dropped.

  Args:
    text: A client's text.

  Returns:
    (x, y), int32 arrays of shape (num_sequences, SEQUENCE_LENGTH).
  """
  ids = VOCABULARY.encode(text)
  chunk = SEQUENCE_LENGTH + 1
  num = _num_sequences(len(ids))
  ids = ids[: num * chunk]
  padded = np.full(num * chunk, PAD_ID, np.int32)
  padded[: len(ids)] = ids
  chunks = padded.reshape(num, chunk)
  return chunks[:, :-1].copy(), chunks[:, 1:].copy()


# --------------------------------------------------------------- loading


def _find_file(data_dir: str) -> str:
  """The path of 100.txt (or pg100.txt); `data_dir` may be the file itself."""
  if os.path.isfile(data_dir):
    return data_dir
  for name in FILE_NAMES:
    path = os.path.join(data_dir, name)
    if os.path.isfile(path):
      return path
  where = data_dir if os.path.isdir(data_dir) else f'{data_dir} (missing)'
  raise base.DatasetFileNotFoundError(
      f'Shakespeare: expected {FILE_NAMES[0]} (or {FILE_NAMES[1]}) in'
      f' {where}; {_SOURCE}'
  )


def _read_text(path: str) -> str:
  try:
    with open(path, 'rb') as f:
      raw = f.read()
  except OSError as e:
    raise base.DatasetError(
        f'Shakespeare: cannot read {path} ({e.strerror})'
    ) from None
  try:
    return raw.decode('utf-8-sig')
  except UnicodeDecodeError:
    return raw.decode('latin-1')


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
  path = _find_file(base.require_data_dir(data_dir, name))
  text = _read_text(path)
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
        f' {_SOURCE}'
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
