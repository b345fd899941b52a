"""The one-line errors of worker flags (`--workers`, `--worker_tls_dir`, `make-ca`).

Standard library only: the worker process (`python -m tff_programs.worker`)
raises `WorkerConfigError` too, and imports no TFF.
"""


class WorkerConfigError(ValueError):
  """A one-line problem with worker flags (addresses, TLS files, hosts)."""
