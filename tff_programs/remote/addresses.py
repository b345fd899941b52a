"""Worker addresses, TLS folders and executor concurrency: parsing and checks (one-line errors).

`--workers=HOST:PORT,...` (IPv6 as [ADDR]:PORT) names the executor services a
driver spreads its clients over; `--worker_tls_dir` the folder with ca.pem,
cert.pem and key.pem for mutual TLS. Without TLS only loopback workers are
allowed: the executor's plaintext, unauthenticated traffic never leaves the
machine. The driver (`remote_runtime`) and the worker (`tff_programs.worker`)
both check their flags here, before anything starts. Standard library only.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Sequence
from typing import Optional

from tff_programs.remote.errors import WorkerConfigError  # pylint: disable=g-importing-member

TLS_FILES = ('ca.pem', 'cert.pem', 'key.pem')


def split_address(address: str, *, flag: str = '--workers') -> tuple[str, int]:
  """'host:port' or '[v6]:port' -> (host, port); WorkerConfigError if malformed."""
  text = address.strip()
  if text.startswith('['):
    host, sep, rest = text[1:].partition(']')
    port_text = rest[1:]
    ok = bool(sep) and rest.startswith(':')
  else:
    host, sep, port_text = text.rpartition(':')
    ok = bool(sep) and ':' not in host
  if not ok or not host:
    raise WorkerConfigError(f'{flag}: {address!r} is not HOST:PORT (IPv6: [ADDR]:PORT)')
  if not port_text.isdigit() or not 0 < int(port_text) < 65536:
    raise WorkerConfigError(f'{flag}: {address!r}: the port must be 1-65535')
  return host, int(port_text)


def parse_workers(spec: str) -> tuple[str, ...]:
  """'HOST:PORT,HOST:PORT' (IPv6 as [ADDR]:PORT) -> normalized addresses.

  One-line WorkerConfigError on an empty list, a malformed address or port, or
  an address listed twice.
  """
  items = [s.strip() for s in spec.split(',') if s.strip()]
  if not items:
    raise WorkerConfigError('--workers: empty; expected HOST:PORT[,HOST:PORT...]')
  seen: list[str] = []
  for item in items:
    host, port = split_address(item)
    address = f'[{host}]:{port}' if ':' in host else f'{host}:{port}'
    if address in seen:
      raise WorkerConfigError(f'--workers: {address} is listed twice')
    seen.append(address)
  return tuple(seen)


def is_loopback_host(host: str) -> bool:
  """Whether `host` names this machine's loopback (127.0.0.0/8, ::1, localhost)."""
  if host.lower() == 'localhost':
    return True
  try:
    return ipaddress.ip_address(host).is_loopback
  except ValueError:
    return False


def check_workers(addresses: Sequence[str], *, tls_dir: Optional[str]) -> None:
  """One-line WorkerConfigError unless the driver may talk to these workers so.

  Without TLS only loopback workers are allowed (the executor's plaintext,
  unauthenticated traffic never leaves the machine); with TLS the folder must
  hold ca.pem, cert.pem and key.pem.
  """
  for address in addresses:
    split_address(address)
  if tls_dir is None:
    remote = [a for a in addresses if not is_loopback_host(split_address(a)[0])]
    if remote:
      raise WorkerConfigError(
          f'--workers: {remote[0]} is not on this machine; workers on other machines need '
          '--worker_tls_dir (mutual TLS; python -m tff_programs.worker_tls make-ca makes a test CA)')
    return
  check_tls_dir(tls_dir)


def check_tls_dir(tls_dir: str, *, flag: str = '--worker_tls_dir') -> tuple[str, str, str]:
  """Paths of ca.pem, cert.pem and key.pem in `tls_dir`; one-line error if one is missing."""
  if not os.path.isdir(tls_dir):
    raise WorkerConfigError(f'{flag}={tls_dir}: no such folder')
  paths = tuple(os.path.join(tls_dir, name) for name in TLS_FILES)
  missing = [os.path.basename(p) for p in paths if not os.path.isfile(p)]
  if missing:
    raise WorkerConfigError(
        f'{flag}={tls_dir}: missing {", ".join(missing)} (expected {", ".join(TLS_FILES)}; '
        'python -m tff_programs.worker_tls make-ca writes them)')
  return paths  # type: ignore[return-value]


def concurrency_problem(value) -> Optional[str]:
  """None if `value` is a valid executor concurrency, else what is allowed.

  The values of TFF's max_concurrent_computation_calls (-1: all at once, or
  an integer >= 1), plus 0: as many as the CPU cores this process may use
  (`concurrent_calls` resolves it when the worker starts). Shared by
  the driver's --worker_concurrency and the worker's --concurrency."""
  if isinstance(value, bool) or not isinstance(value, int) or value < -1:
    return 'must be -1 (all at once), 0 (one per CPU core) or an integer >= 1'
  return None


def usable_cores() -> int:
  """The CPU cores this process may run on (its affinity mask, else all)."""
  try:
    return len(os.sched_getaffinity(0))
  except (AttributeError, OSError):
    return os.cpu_count() or 1


def concurrent_calls(concurrency: int) -> int:
  """worker_binary's --max_concurrent_computation_calls for a FedSuite
  concurrency: 0 (the default of --worker_concurrency) is one client
  computation per usable core; -1 (all at once) and N >= 1 pass unchanged.

  Why one per core: a client's steps alone keep a 2-core machine ~1.75 cores
  busy (small batches leave gaps between ops); two clients at a time fill the
  gaps (~1.9 busy cores) while the number of clients in flight, and so the
  worker's memory, stays bounded (benchmarks/round_speed.py --parts concurrency).
  """
  return usable_cores() if concurrency == 0 else concurrency
