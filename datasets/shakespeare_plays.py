"""Shakespeare's plays from Gutenberg's 1994 text: (play, role, lines) per speaking role.

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
Which roles count (`min_role_lines`) and how the counts compare with the
paper's: `datasets.shakespeare`.
"""

from __future__ import annotations

import os
import re
from typing import Sequence

import numpy as np

from datasets import base

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
SOURCE = (
    'get Project Gutenberg eBook #100, The Complete Works of William'
    ' Shakespeare, in its January 1994 edition'
    ' (gutenberg.org/files/100/old/1994-01-100.zip, as LEAF uses)'
)

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


def find_file(data_dir: str) -> str:
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
      f' {where}; {SOURCE}'
  )


def read_text(path: str) -> str:
  """The text of `path`: UTF-8 (with or without BOM), else Latin-1; one-line error."""
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
