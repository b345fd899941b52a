"""Clients spread over worker processes (`--workers`), one job per module.

Driver side (imports TFF; the public face is `tff_programs.remote_runtime`):
  partitions    a call's clients cut into contiguous partitions and joined back;
  split         a computation split by TFF's compiler passes into before /
                aggregate / after;
  workers       a worker's gRPC channel and its byte-counting stub, `Traffic`;
  pool          `WorkerPool`, the TFF context running the parts on the workers
                (lost workers, shared files), and `workers_runtime`;
  measured      `MeasuredAlgorithm`: a round's bytes per worker in its metrics row.
Worker side and shared (standard library only; the public face is
`tff_programs.worker_tls`):
  errors        the one-line errors;
  addresses     --workers / --worker_tls_dir / concurrency parsing and checks;
  relay         the worker's loopback or mutual-TLS endpoint to its executor;
  certificates  the test CA of `python -m tff_programs.worker_tls make-ca`.

This file imports nothing, so the worker loads no TFF through it.
"""
