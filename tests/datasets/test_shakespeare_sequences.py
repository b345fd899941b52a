"""Tests for datasets.shakespeare_sequences: the vocabulary and next-character sequences."""

from __future__ import annotations

import numpy as np
import pytest

from datasets import base
from datasets import shakespeare_sequences
from models import lstm


def one_line(err: pytest.ExceptionInfo) -> str:
  text = str(err.value)
  assert '\n' not in text
  return text


def decode_rows(x: np.ndarray, y: np.ndarray) -> str:
  """The text a run of sequences was cut from: inputs + each last target."""
  vocab = shakespeare_sequences.build_vocabulary()
  return ''.join(vocab.decode(np.append(xi, yi[-1])) for xi, yi in zip(x, y))


# --------------------------------------------------------------- vocabulary


def test_vocabulary_ids_and_round_trip():
  vocab = shakespeare_sequences.build_vocabulary()
  assert vocab.size == shakespeare_sequences.VOCAB_SIZE == 258
  assert shakespeare_sequences.PAD_ID == 0 and shakespeare_sequences.OOV_ID == 1
  ids = vocab.encode('A\n\xe9')
  assert ids.dtype == np.int32
  np.testing.assert_array_equal(ids, [ord('A') + 2, ord('\n') + 2, 0xE9 + 2])
  text = "O Romeo, Romeo! wherefore art thou Romeo?\n\tCafé ~\x00\xff"
  assert vocab.decode(vocab.encode(text)) == text
  assert vocab.decode([0, 67, 0]) == 'A'  # PAD decodes to nothing.


def test_vocabulary_out_of_vocabulary():
  vocab = shakespeare_sequences.build_vocabulary()
  np.testing.assert_array_equal(vocab.encode('a\u2019\u20ac'),
                                [ord('a') + 2, 1, 1])
  assert vocab.decode([1]) == '\ufffd'
  with pytest.raises(base.DatasetError) as err:
    vocab.decode([258])
  assert '[0, 258)' in one_line(err)


def test_vocab_size_is_the_one_that_gives_the_papers_parameter_count():
  # char_lstm((80,), 258, peepholes=True) has the paper's 866,578 parameters.
  assert shakespeare_sequences.VOCAB_SIZE == lstm.PAPER_VOCAB_SIZE


# ---------------------------------------------------------------- sequences


def test_encode_sequences_exact_chunks_and_shift():
  text = ''.join(chr(ord('a') + i % 26) for i in range(2 * 81))
  ids = shakespeare_sequences.build_vocabulary().encode(text)
  x, y = shakespeare_sequences.encode_sequences(text)
  assert x.shape == y.shape == (2, shakespeare_sequences.SEQUENCE_LENGTH)
  assert x.dtype == y.dtype == np.int32
  np.testing.assert_array_equal(x[0], ids[0:80])
  np.testing.assert_array_equal(y[0], ids[1:81])  # The next character.
  np.testing.assert_array_equal(x[1], ids[81:161])
  np.testing.assert_array_equal(y[1], ids[82:162])
  np.testing.assert_array_equal(y[:, :-1], x[:, 1:])


def test_encode_sequences_pads_the_last_chunk():
  text = 'x' * 81 + '0123456789'  # 91 characters: a chunk of 81, then 10.
  ids = shakespeare_sequences.build_vocabulary().encode(text)
  x, y = shakespeare_sequences.encode_sequences(text)
  assert x.shape == (2, 80)
  np.testing.assert_array_equal(x[1, :10], ids[81:91])
  np.testing.assert_array_equal(y[1, :9], ids[82:91])
  assert (x[1, 10:] == shakespeare_sequences.PAD_ID).all()
  assert (y[1, 9:] == shakespeare_sequences.PAD_ID).all()  # No target after the text.
  assert decode_rows(x, y) == text


@pytest.mark.parametrize(
    'n, num', [(0, 0), (1, 0), (2, 1), (81, 1), (82, 1), (83, 2), (162, 2),
               (163, 2), (164, 3)],
)
def test_encode_sequences_count(n, num):
  x, y = shakespeare_sequences.encode_sequences('q' * n)
  assert len(x) == len(y) == num


def test_encode_sequences_drops_a_last_chunk_without_target():
  x, y = shakespeare_sequences.encode_sequences('y' * 82)  # The 82nd char: no target.
  assert x.shape == y.shape == (1, 80)
  x, y = shakespeare_sequences.encode_sequences('ab')
  np.testing.assert_array_equal(x[0, :3], [ord('a') + 2, ord('b') + 2, 0])
  np.testing.assert_array_equal(y[0, :2], [ord('b') + 2, 0])
  for text in ('', 'z'):
    x, y = shakespeare_sequences.encode_sequences(text)
    assert x.shape == y.shape == (0, 80) and x.dtype == np.int32
