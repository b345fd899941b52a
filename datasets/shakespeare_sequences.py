"""Shakespeare text as model inputs: the character vocabulary and next-character sequences.

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

from typing import Sequence

import numpy as np

from datasets import base

SEQUENCE_LENGTH = 80

PAD_ID = 0
OOV_ID = 1
NUM_SPECIAL_IDS = 2
NUM_CHARACTERS = 256  # U+0000..U+00FF.
VOCAB_SIZE = NUM_SPECIAL_IDS + NUM_CHARACTERS  # 258 = models.lstm's V.


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


def num_sequences(num_chars: int) -> int:
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
  num = num_sequences(len(ids))
  ids = ids[: num * chunk]
  padded = np.full(num * chunk, PAD_ID, np.int32)
  padded[: len(ids)] = ids
  chunks = padded.reshape(num, chunk)
  return chunks[:, :-1].copy(), chunks[:, 1:].copy()
