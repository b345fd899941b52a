"""The FedAvg Shakespeare character LSTM (McMahan et al. 2017, Sec. 3).

"The model takes a series of characters as input and embeds each of these into
a learned 8 dimensional space. The embedded characters are then processed
through 2 LSTM layers, each with 256 nodes. Finally the output of the second
LSTM layer is sent to a softmax output layer with one node per character. The
full model has 866,578 parameters, and we trained using an unroll length of 80
characters."

Solving for the vocabulary size V (= num_classes, embedding input = softmax
output), with Keras LSTMs (one bias per gate):
  embedding 8V + LSTM1 4*256*(8+256+1) + LSTM2 4*256*(256+256+1) + dense 257V
  = 265V + 271,360 + 525,312 = 265V + 796,672.
866,578 - 796,672 = 69,906 = 265 * 263.8: no integer V works (V=263 gives
866,367, V=264 gives 866,632); neither does a PyTorch-style second bias
(265V = 67,858). With diagonal peephole connections (an option of TF1's
`tf.nn.rnn_cell.LSTMCell(use_peepholes=True)`), each LSTM has 3*256 more
parameters: 265V + 798,208 = 866,578 gives 265V = 68,370, V = 258 exactly
(e.g. 256 byte values + 2 special ids). That the paper used peepholes and
V=258 is our inference from the count; the paper names neither.
So `char_lstm((80,), 258, peepholes=True)` has exactly the paper's 866,578
parameters. The default (`peepholes=False`) is the standard Keras LSTM (fused
kernels, as in TFF's Shakespeare baselines); with TFF's 86 characters + 4
special tokens (V=90) it has 265*90 + 796,672 = 820,522 parameters.
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

from models import common
from models import layers as fs_layers

layers = tf.keras.layers

PAPER_PARAMS = 866_578
PAPER_VOCAB_SIZE = 258  # Reproduces PAPER_PARAMS with peepholes=True.


def char_lstm(input_shape: Sequence[int],
              num_classes: int,
              *,
              embedding_dim: int = 8,
              units: int = 256,
              peepholes: bool = False) -> tf.keras.Model:
  """Embedding(V, 8), LSTM 256, LSTM 256, per-step Dense V logits.

  Args:
    input_shape: (sequence_length,), 80 in the paper; int32 token ids.
    num_classes: Vocabulary size V: the embedding's input dim and the number of
      logits per time step.
    embedding_dim: Embedding width (8 in the paper).
    units: Units of each LSTM layer (256 in the paper).
    peepholes: Use `layers.PeepholeLSTMCell` (adds 3*units parameters per LSTM,
      see the module docstring) instead of `tf.keras.layers.LSTM`.

  Returns:
    An uncompiled `tf.keras.Model` named 'char_lstm' mapping (batch, T) int32
    ids to (batch, T, V) logits. Blocks: embed, lstm1, lstm2, logits.
  """
  shape = common.as_shape(input_shape)
  if len(shape) != 1:
    raise common.ModelError(
        f'char_lstm expects input_shape (sequence_length,), got {shape}')
  num_classes = common.check_num_classes('char_lstm', num_classes)
  tokens = tf.keras.Input(shape, dtype=tf.int32, name='tokens')
  x = layers.Embedding(num_classes, int(embedding_dim), name='embed')(tokens)
  for i in (1, 2):
    if peepholes:
      rnn = layers.RNN(
          fs_layers.PeepholeLSTMCell(int(units), name='peephole_lstm_cell'),
          return_sequences=True, name=f'lstm{i}')
    else:
      rnn = layers.LSTM(int(units), return_sequences=True, name=f'lstm{i}')
    x = rnn(x)
  logits = layers.Dense(num_classes, name='logits')(x)
  return tf.keras.Model(tokens, logits, name='char_lstm')
