r"""Worker networking: `python -m tff_programs.worker_tls make-ca`, and its public names.

A test CA (not a production PKI) for a cluster:

    python -m tff_programs.worker_tls make-ca --out=certs \
        --hosts=10.0.0.2,10.0.0.3,127.0.0.1
    # certs/worker/  -> every worker machine   (--worker_tls_dir=certs/worker)
    # certs/driver/  -> the driver machine     (--worker_tls_dir=certs/driver)
    # certs/ca-key.pem stays where it was made (it signs new certificates)

The work is done in `tff_programs.remote`, one job per module:
  addresses     --workers / --worker_tls_dir: parsing and checks (one-line errors);
  relay         the worker's endpoint: a loopback or mutual-TLS relay to its
                executor (`Relay`, `server_context`);
  certificates  the test CA (`make_test_ca`; needs the `cryptography` package).
This module is the `make-ca` command line; it re-exports the names its callers
(`tff_programs.worker`, tests, deploy checks) have always imported from here.
Standard library only, except `make-ca`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Optional

# pylint: disable=g-importing-member,unused-import
from tff_programs.remote.addresses import TLS_FILES
from tff_programs.remote.addresses import check_tls_dir
from tff_programs.remote.addresses import check_workers
from tff_programs.remote.addresses import is_loopback_host
from tff_programs.remote.addresses import parse_workers
from tff_programs.remote.addresses import split_address
from tff_programs.remote.certificates import check_hosts
from tff_programs.remote.certificates import make_test_ca
from tff_programs.remote.errors import WorkerConfigError
from tff_programs.remote.relay import HANDSHAKE_TIMEOUT_S
from tff_programs.remote.relay import Relay
from tff_programs.remote.relay import connecting_uid
from tff_programs.remote.relay import server_context
# pylint: enable=g-importing-member,unused-import


def main(argv: Optional[Sequence[str]] = None) -> int:
  parser = argparse.ArgumentParser(
      prog='python -m tff_programs.worker_tls',
      description='Makes a test CA with certificates for FedSuite workers and their driver.')
  commands = parser.add_subparsers(dest='command', required=True)
  make = commands.add_parser('make-ca', help='write OUT/ca.pem, OUT/worker/, OUT/driver/')
  make.add_argument('--out', required=True, help='new folder for the CA and certificates')
  make.add_argument('--hosts', required=True,
                    help='comma-separated addresses or DNS names the driver dials the workers by')
  make.add_argument('--days', type=int, default=30, help='validity in days (default 30)')
  args = parser.parse_args(argv)
  try:
    folders = make_test_ca(args.out, args.hosts.split(','), days=args.days)
  except WorkerConfigError as e:
    print(f'worker_tls: error: {e}', file=sys.stderr)
    return 2
  print(f'test CA: {folders["ca"]} (its key ca-key.pem stays in {args.out})')
  print(f'workers: --worker_tls_dir={folders["worker"]} (valid for {args.hosts})')
  print(f'driver:  --worker_tls_dir={folders["driver"]}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
