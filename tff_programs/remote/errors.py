"""The one-line errors of running clients on workers (`--workers`).

Standard library only: the worker process (`python -m tff_programs.worker`)
raises `WorkerConfigError` too, and imports no TFF.
"""

from __future__ import annotations

from typing import Any


class WorkerConfigError(ValueError):
  """A one-line problem with worker flags (addresses, TLS files, hosts)."""


class WorkersLostError(RuntimeError):
  """Every worker is lost: the computation could not finish (one line)."""


class NotSpreadableError(ValueError):
  """A computation with clients that cannot be split over workers (one line)."""


class WorkerLost(Exception):
  """Internal: a worker stopped answering (connection refused, reset, closed).

  Raised by a worker's stub (`workers.CountingStub`); the pool
  (`pool.WorkerPool`) marks the worker lost and moves its clients.
  """

  def __init__(self, worker: Any, reason: str):
    super().__init__(reason)
    self.worker = worker  # The `workers.Worker` that stopped answering.
    self.reason = reason


def one_line(text: Any, limit: int = 200) -> str:
  """`text` on one line (whitespace runs collapsed), cut to `limit` characters."""
  text = ' '.join(str(text).split())
  return text if len(text) <= limit else text[:limit - 3] + '...'
