"""Worker networking, one job per module (standard library only; the public face is
`tff_programs.worker_tls`):
  errors        the one-line errors;
  addresses     --workers / --worker_tls_dir parsing and checks;
  relay         the worker's loopback or mutual-TLS endpoint to its executor;
  certificates  the test CA of `python -m tff_programs.worker_tls make-ca`.

This file imports nothing, so the worker loads nothing through it.
"""
