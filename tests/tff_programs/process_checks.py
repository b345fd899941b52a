"""Waiting for processes to end, shared by the worker, runtime and pool tests.

A stopped process is not gone the instant its parent returns: the kernel reaps it a
moment later. The tests poll with a deadline instead of sleeping a fixed time, so
they are quick when it is quick and fail (return False) when it never ends.
"""

import time
from typing import Callable, Optional

from tff_programs import worker as worker_lib


def wait_until(condition: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
  """Polls `condition` until it holds (True) or `timeout` seconds pass (False)."""
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline:
    if condition():
      return True
    time.sleep(interval)
  return condition()


def wait_gone(pid: Optional[int], timeout: float = 20.0) -> bool:
  """Whether process `pid` ends (or is a zombie) within `timeout` seconds."""
  return wait_until(lambda: not worker_lib._process_alive(pid), timeout)  # pylint: disable=protected-access
