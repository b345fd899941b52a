"""The client learning-rate schedule (exponential decay from a chosen round)."""

from __future__ import annotations


def decayed_learning_rate(rate: float, decay: float, decay_from: int, round_num: int) -> float:
  """The learning rate of round `round_num` (1-based) under exponential decay.

  Rounds up to `decay_from` use `rate`; round r after it uses
  `rate * decay**(r - decay_from)`. `decay_from=1` is the paper's per-round decay
  (`rate * decay**(r - 1)`); a larger value keeps the rate constant first, e.g. to
  anneal a run that has plateaued (see `run_outputs.schedules_agree`).
  """
  return float(rate * decay ** max(0, round_num - decay_from))
