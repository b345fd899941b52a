"""Progress reporting: a tqdm bar on a terminal, one log line per eval otherwise."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any, Optional, TextIO


def quiet_tf_logs() -> None:
  """Warnings and errors only: TF/Keras INFO lines would bury the progress."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from absl import logging  # pylint: disable=g-import-not-at-top

  logging.set_verbosity(logging.WARNING)
  tf.get_logger().setLevel('ERROR')


class Progress:
  """Shows round, loss, accuracy and ETA.

  Interactive (stderr is a terminal): a tqdm bar updated every round.
  Non-interactive (CI logs, pipes): a single line per evaluated round, so logs
  stay short.
  """

  def __init__(
      self,
      total_rounds: int,
      start_round: int,
      *,
      enabled: Optional[bool] = None,
      stream: TextIO = sys.stderr,
  ):
    self._stream = stream
    interactive = stream.isatty() if enabled is None else enabled
    self._bar = None
    if interactive:
      from tqdm import tqdm  # pylint: disable=g-import-not-at-top

      self._bar = tqdm(
          total=total_rounds, initial=start_round, unit='round', file=stream,
          dynamic_ncols=True,
      )
    self._total = total_rounds

  def update(self, round_num: int, row: Mapping[str, Any]) -> None:
    fields = {'loss': row.get('train_loss'), 'acc': row.get('train_accuracy')}
    if row.get('eval_accuracy') is not None:
      fields['eval_acc'] = row['eval_accuracy']
    text = {k: f'{v:.4f}' for k, v in fields.items() if v is not None}
    if self._bar is not None:
      self._bar.set_postfix(text, refresh=False)
      self._bar.update(1)
    elif row.get('eval_accuracy') is not None or round_num == self._total:
      parts = ' '.join(f'{k}={v}' for k, v in text.items())
      print(f'round {round_num}/{self._total} {parts}', file=self._stream, flush=True)

  def close(self) -> None:
    if self._bar is not None:
      self._bar.close()
