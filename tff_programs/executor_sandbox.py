r"""Runs TFF's `worker_binary` where only its owner can reach it.

TFF's executor service (`worker_binary`) runs any TensorFlow graph it is sent,
unauthenticated, and binds `[::]:PORT` on every interface. This launcher is
the only process FedSuite starts it through:

    python -m tff_programs.executor_sandbox --socket=DIR/executor.sock \
        --lifeline_fd=N --status_fd=M --log=FILE -- WORKER_BINARY [ARGS...]

1. Isolation. The launcher moves itself into a new network namespace that has
   only a loopback interface (`unshare(CLONE_NEWNET)`, inside a new user
   namespace when not privileged) before starting the worker, so the worker's
   port exists on no interface of the machine. Where namespaces are not
   available (a container that forbids them, a kernel without user
   namespaces) the worker runs in the machine's namespace and the launcher
   says so in its status line (the driver prints it, or refuses to run).
2. Ownership. A port is chosen, the worker is started on it, and the channel is
   trusted only when the socket listening on that port belongs to the worker
   process itself (its inode is among the worker's open files) and the worker
   is still alive. Another process listening on the port (an impostor that
   took it first) is detected; the worker is restarted on a new port.
3. Access. The driver reaches the worker only through a Unix socket (mode
   0600 in a 0700 folder); the launcher relays its bytes to the worker's
   loopback port (one thread per direction; the worker is started from the
   main thread, which lives as long as the launcher). With isolation, nothing
   is listening on the machine's network.
4. Lifetime. The driver holds the write end of a pipe (the lifeline); when the
   driver process dies, for any reason and whatever thread started the
   launcher, the read end reports EOF and the launcher stops the worker and
   exits. A driver that died before the launcher was armed is noticed at once
   (the lifeline is already at EOF). The worker itself gets SIGKILL when the
   launcher dies (PR_SET_PDEATHSIG, armed in this single-threaded launcher,
   never in the multi-threaded driver), and it never inherits the driver's
   stdout/stderr.

The status line (JSON, one line, on `--status_fd`) is
`{"ok": true, "port": P, "isolated": bool, "reason": str, "worker_pid": N}` or
`{"ok": false, "error": "..."}`. Only the Python standard library is used, so
the launcher starts in milliseconds.
"""

from __future__ import annotations

import argparse
import ctypes
import errno
import fcntl
import json
import os
import random
import selectors
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from typing import Optional

_CLONE_NEWUSER = 0x10000000
_CLONE_NEWNET = 0x40000000
_PR_SET_PDEATHSIG = 1
_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1
_TCP_LISTEN = '0A'
_PORT_ATTEMPTS = 5
_START_TIMEOUT_S = 120.0
_RELAY_CHUNK = 1 << 20
# Test hook: behave as on a machine where namespaces are not available.
NO_NAMESPACES_ENV = 'FEDSUITE_SANDBOX_NO_NAMESPACES'

_libc = ctypes.CDLL(None, use_errno=True) if sys.platform == 'linux' else None


# ---- pure helpers (unit-tested) ---------------------------------------------


def listening_sockets(proc_net_tcp: str) -> list[tuple[str, int, int]]:
  """(hex local address, port, inode) of LISTEN sockets in a /proc/net/tcp{,6} text."""
  found = []
  for line in proc_net_tcp.splitlines()[1:]:
    fields = line.split()
    if len(fields) < 10 or fields[3] != _TCP_LISTEN:
      continue
    address, port = fields[1].rsplit(':', 1)
    found.append((address, int(port, 16), int(fields[9])))
  return found


_LOOPBACK_HEX = frozenset({
    '0100007F',  # 127.0.0.1 (little-endian hex in /proc/net/tcp)
    '00000000000000000000000001000000',  # ::1
    '0000000000000000FFFF00000100007F',  # ::ffff:127.0.0.1
})


def is_loopback(hex_address: str) -> bool:
  """Whether a /proc/net/tcp{,6} local address is a loopback address (127/8, ::1)."""
  if len(hex_address) == 8:
    return hex_address.upper().endswith('7F')  # 127.x.y.z, little-endian.
  upper = hex_address.upper()
  return upper in _LOOPBACK_HEX or (upper.startswith('0000000000000000FFFF0000')
                                    and upper.endswith('7F'))


def read_listening(proc_root: str = '/proc/self/net') -> list[tuple[str, int, int]]:
  """LISTEN sockets (address, port, inode) of the network namespace of `proc_root`."""
  found = []
  for name in ('tcp', 'tcp6'):
    try:
      with open(os.path.join(proc_root, name)) as f:
        found += listening_sockets(f.read())
    except OSError:
      continue
  return found


def socket_inodes(pid: int) -> set[int]:
  """Inodes of the sockets process `pid` holds open (empty if it is gone)."""
  inodes = set()
  fd_dir = f'/proc/{pid}/fd'
  try:
    names = os.listdir(fd_dir)
  except OSError:
    return inodes
  for name in names:
    try:
      target = os.readlink(os.path.join(fd_dir, name))
    except OSError:
      continue
    if target.startswith('socket:['):
      inodes.add(int(target[8:-1]))
  return inodes


def listener_owner(port: int, worker_pid: int,
                   listening: Iterable[tuple[str, int, int]]) -> str:
  """'worker' if a socket listening on `port` belongs to `worker_pid`, 'other'
  if only another process's does, 'none' if nothing listens on it."""
  on_port = [inode for _, p, inode in listening if p == port]
  if not on_port:
    return 'none'
  return 'worker' if set(on_port) & socket_inodes(worker_pid) else 'other'


# ---- isolation ---------------------------------------------------------------


def _write(path: str, text: str) -> None:
  with open(path, 'w') as f:
    f.write(text)


def _unshare(flags: int) -> None:
  if _libc is None:
    raise OSError(errno.ENOSYS, 'not Linux')
  if _libc.unshare(flags) != 0:
    err = ctypes.get_errno()
    raise OSError(err, os.strerror(err))


def _loopback_up() -> None:
  """Brings `lo` up in the current network namespace (it starts down)."""
  with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
    ifreq = struct.pack('16sH14s', b'lo', 0, b'\0' * 14)
    flags = struct.unpack('16sH14s', fcntl.ioctl(s.fileno(), _SIOCGIFFLAGS, ifreq))[1]
    fcntl.ioctl(s.fileno(), _SIOCSIFFLAGS, struct.pack('16sH14s', b'lo', flags | _IFF_UP, b'\0' * 14))


def enter_private_network() -> tuple[bool, str]:
  """Moves this process into a new network namespace with only loopback.

  Tries a plain network namespace (root), then a user + network namespace
  (unprivileged users; the caller's uid and gid are mapped to root inside, so
  file access is unchanged). Returns (isolated, reason if not).
  """
  if os.environ.get(NO_NAMESPACES_ENV):
    return False, f'{NO_NAMESPACES_ENV} is set'
  uid, gid = os.getuid(), os.getgid()
  reasons = []
  attempts = ([('network namespace', _CLONE_NEWNET)] if os.geteuid() == 0 else []) + [
      ('user+network namespace', _CLONE_NEWUSER | _CLONE_NEWNET)]
  for label, flags in attempts:
    try:
      _unshare(flags)
    except OSError as e:
      reasons.append(f'{label}: {e.strerror}')
      continue
    try:
      if flags & _CLONE_NEWUSER:
        _write('/proc/self/setgroups', 'deny')
        _write('/proc/self/uid_map', f'{uid} {uid} 1')
        _write('/proc/self/gid_map', f'{gid} {gid} 1')
      _loopback_up()
    except OSError as e:
      # Half-entered: this process can no longer promise isolation or access.
      raise SystemExit(_status_error(f'could not set up the private network: {e}'))
    return True, ''
  return False, '; '.join(reasons)


# ---- the worker ---------------------------------------------------------------


def _arm_pdeathsig() -> None:  # pragma: no cover - runs in the child.
  """preexec_fn (single-threaded launcher): SIGKILL the worker when the launcher dies."""
  _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _free_port(isolated: bool) -> int:
  """A port nobody listens on now (any port is free in a new namespace)."""
  if isolated:
    return random.randint(20000, 60000)
  with socket.socket(socket.AF_INET6 if socket.has_ipv6 else socket.AF_INET) as s:
    s.bind(('', 0))
    return s.getsockname()[1]


def _stop(process: Optional[subprocess.Popen]) -> None:
  if process is None or process.poll() is not None:
    return
  process.send_signal(signal.SIGINT)
  try:
    process.wait(timeout=5)
  except subprocess.TimeoutExpired:
    process.kill()
    process.wait(timeout=5)


def _lifeline_closed(fd: int) -> bool:
  """Whether the driver has gone (its end of the lifeline pipe is closed)."""
  sel = selectors.DefaultSelector()
  sel.register(fd, selectors.EVENT_READ)
  try:
    return bool(sel.select(timeout=0))
  finally:
    sel.close()


def start_worker(command: Sequence[str], *, isolated: bool, log_file, lifeline_fd: int,
                 port_override: Optional[int] = None) -> tuple[subprocess.Popen, int]:
  """Starts the worker on a free port and waits until it, and only it, listens there.

  Retries on a new port when the worker exits (it failed to bind) or another
  process listens on the port. Raises RuntimeError when every attempt failed.
  """
  problems = []
  for _ in range(_PORT_ATTEMPTS):
    port = port_override or _free_port(isolated)
    process = subprocess.Popen(
        [*command, f'--port={port}'], stdin=subprocess.DEVNULL, stdout=log_file,
        stderr=log_file, preexec_fn=_arm_pdeathsig if _libc is not None else None,
        close_fds=True)
    deadline = time.monotonic() + _START_TIMEOUT_S
    while True:
      if _lifeline_closed(lifeline_fd):
        _stop(process)
        raise SystemExit(0)
      owner = listener_owner(port, process.pid, read_listening())
      if owner == 'worker':
        time.sleep(0.05)
        if process.poll() is None:  # Still alive after it bound: trusted.
          return process, port
        problems.append(f'port {port}: worker exited with code {process.returncode} after binding')
        break
      if owner == 'other':
        problems.append(f'port {port}: another process is listening on it')
        _stop(process)
        break
      if process.poll() is not None:
        problems.append(f'port {port}: worker exited with code {process.returncode}')
        break
      if time.monotonic() > deadline:
        problems.append(f'port {port}: worker did not listen within {_START_TIMEOUT_S:.0f} s')
        _stop(process)
        break
      time.sleep(0.05)
    if port_override:
      break
  raise RuntimeError('; '.join(problems))


# ---- the relay -----------------------------------------------------------------


def _pump(source: socket.socket, sink: socket.socket, done: threading.Semaphore) -> None:
  """Copies bytes from `source` to `sink` until EOF, then half-closes `sink`."""
  try:
    while True:
      data = source.recv(_RELAY_CHUNK)
      if not data:
        break
      sink.sendall(data)
  except OSError:
    pass
  finally:
    try:
      sink.shutdown(socket.SHUT_WR)
    except OSError:
      pass
    if not done.acquire(blocking=False):  # The other direction ended first.
      source.close()
      sink.close()


def _serve(listener: socket.socket, port: int) -> None:
  """Accepts driver connections on the Unix socket; relays each to the worker."""
  while True:
    try:
      client, _ = listener.accept()
    except OSError:
      return  # Listener closed: the launcher is stopping.
    try:
      upstream = socket.create_connection(('127.0.0.1', port))
    except OSError:
      client.close()
      continue
    done = threading.Semaphore(1)
    for source, sink in ((client, upstream), (upstream, client)):
      threading.Thread(target=_pump, args=(source, sink, done), daemon=True).start()


def wait_for_end(worker: subprocess.Popen, lifeline_fd: int) -> None:
  """Returns when the driver has gone (lifeline EOF) or the worker has exited."""
  sel = selectors.DefaultSelector()
  sel.register(lifeline_fd, selectors.EVENT_READ)
  while worker.poll() is None:
    if sel.select(timeout=0.5):
      return


# ---- main ------------------------------------------------------------------------


def _exit_on_signal(signum, frame) -> None:
  del signum, frame
  raise SystemExit(0)  # Runs the `finally` that stops the worker.


def _status_error(message: str) -> str:
  return json.dumps({'ok': False, 'error': message})


def _send_status(fd: int, status: dict) -> None:
  os.write(fd, (json.dumps(status) + '\n').encode())
  os.close(fd)


def main(argv: Optional[Sequence[str]] = None) -> int:
  parser = argparse.ArgumentParser(prog='executor_sandbox')
  parser.add_argument('--socket', required=True, help='Unix socket path to serve.')
  parser.add_argument('--lifeline_fd', type=int, required=True)
  parser.add_argument('--status_fd', type=int, required=True)
  parser.add_argument('--log', required=True, help='Worker log file.')
  parser.add_argument('--isolation', choices=('auto', 'off'), default='auto')
  parser.add_argument('--port', type=int, default=0, help='Fixed port (tests only).')
  parser.add_argument('command', nargs=argparse.REMAINDER)
  args = parser.parse_args(argv)
  command = [c for c in args.command if c != '--']
  if _lifeline_closed(args.lifeline_fd):
    return 0  # The driver died before this launcher was armed.
  for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
    signal.signal(sig, _exit_on_signal)
  isolated, reason = (False, 'isolation turned off') if args.isolation == 'off' else (
      enter_private_network())
  worker = None
  listener = None
  try:
    with open(args.log, 'ab') as log:
      try:
        worker, port = start_worker(command, isolated=isolated, log_file=log,
                                    lifeline_fd=args.lifeline_fd, port_override=args.port or None)
      except RuntimeError as e:
        _send_status(args.status_fd, {'ok': False, 'error': str(e)})
        return 1
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(args.socket)
    os.chmod(args.socket, 0o600)
    listener.listen(64)
    _send_status(args.status_fd, {'ok': True, 'port': port, 'isolated': isolated,
                                  'reason': reason, 'worker_pid': worker.pid})
    threading.Thread(target=_serve, args=(listener, port), daemon=True).start()
    wait_for_end(worker, args.lifeline_fd)
    return 0
  finally:
    _stop(worker)
    if listener is not None:
      listener.close()
      try:
        os.unlink(args.socket)
      except OSError:
        pass


if __name__ == '__main__':
  sys.exit(main())
