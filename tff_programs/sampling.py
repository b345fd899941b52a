"""Seeded, stateless client sampling.

The clients of round r are a pure function of (seed, r): `default_rng([seed, r])`
draws m of the K clients without replacement. The sampler therefore has no
mutable random state to lose: a run resumed at round k samples exactly the clients
an uninterrupted run would, and the checkpoint only records (seed, round).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


class SamplingError(ValueError):
  """A one-line error about client fraction / counts."""


def clients_per_round(num_clients: int, client_fraction: float) -> int:
  """m = max(round(C * K), 1), the FedAvg paper's number of clients per round.

  Raises:
    SamplingError: if C is outside (0, 1] or K < 1.
  """
  if not 0.0 < client_fraction <= 1.0:
    raise SamplingError(
        f'--client_fraction={client_fraction}: must be in (0, 1] '
        '(C=0 in the paper means one client per round: use a small C)'
    )
  if num_clients < 1:
    raise SamplingError(f'--num_clients={num_clients}: must be >= 1')
  return max(int(round(client_fraction * num_clients)), 1)


def sample_clients(
    client_ids: Sequence[str], m: int, *, seed: int, round_num: int
) -> list[str]:
  """The m clients of round `round_num`, identical for identical (seed, round)."""
  if not 1 <= m <= len(client_ids):
    raise SamplingError(f'cannot sample {m} of {len(client_ids)} clients')
  if m == len(client_ids):
    return list(client_ids)
  rng = np.random.default_rng([seed, round_num])
  chosen = rng.choice(len(client_ids), size=m, replace=False)
  return [client_ids[i] for i in chosen]
