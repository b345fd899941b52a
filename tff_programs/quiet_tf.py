"""Quiet TensorFlow's C++ start-up logging in FedSuite's entry points.

Importing TF 2.14 prints "Unable to register cuDNN/cuFFT/cuBLAS factory" errors
(and oneDNN notices) from C++ before any flag is parsed, even for `--help`.
Those lines are noise on every machine FedSuite runs on, so the entry points
call `silence_cpp_logs(sys.argv)` before TensorFlow is imported: it sets
TF_CPP_MIN_LOG_LEVEL=3 unless the user asked for logs, by setting that
variable themselves or by passing absl's `--verbosity`/`-v`.
Standard library only: it must run before TensorFlow is imported.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

TF_CPP_ENV = 'TF_CPP_MIN_LOG_LEVEL'


def wants_logs(argv: Sequence[str]) -> bool:
  """Whether the command line asks for more logging (--verbosity=N, -v N, ...)."""
  return any(a == '-v' or a.startswith(('--verbosity', '-v=')) for a in argv[1:])


def silence_cpp_logs(argv: Sequence[str]) -> None:
  """Sets TF_CPP_MIN_LOG_LEVEL=3 unless it is set or `argv` asks for logs."""
  if TF_CPP_ENV not in os.environ and not wants_logs(argv):
    os.environ[TF_CPP_ENV] = '3'
