"""Shared fixtures: quiet TF, seeded tests, and a TFF runtime that is always shut down."""

from __future__ import annotations

import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
os.environ.setdefault('CUDA_VISIBLE_DEVICES', '')

import pytest  # pylint: disable=g-import-not-at-top

# Installs FedSuite's managed TFF context in every test process (replacing the
# stock one, whose worker cleanup runs only in a __del__ at interpreter exit).
from tff_programs import runtime as _runtime  # pylint: disable=g-import-not-at-top,unused-import


@pytest.fixture(scope='session')
def tff_context():
  """A TFF execution context for the whole test session (one worker per xdist worker).

  On teardown the worker is stopped and the fixture asserts it is really gone.
  """
  from tff_programs import runtime  # pylint: disable=g-import-not-at-top

  with runtime.tff_runtime() as worker:
    yield worker
    tag = worker.tag
  assert runtime.tagged_worker_pids(tag) == [], 'worker_binary outlived the test session'
