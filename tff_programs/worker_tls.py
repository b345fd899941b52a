r"""The worker's network endpoint: a loopback or mutual-TLS relay to its executor.

`python -m tff_programs.worker` serves TFF's executor service through this
relay. The executor (`worker_binary`) speaks plaintext, unauthenticated gRPC
and runs any TensorFlow graph it is sent; it lives in a private network
namespace and is reached only through its launcher's Unix socket
(`executor_sandbox`). The relay accepts TCP connections on HOST:PORT and copies
bytes both ways between each connection and that Unix socket:

* Plaintext: only on a loopback address (the driver runs on this machine),
  and only for connections opened by this process's user (the owner of the
  connecting socket, from /proc/self/net/tcp), like the executor's own 0600
  Unix socket: other users of the machine are refused.
* Mutual TLS (`--worker_tls_dir` holding ca.pem, cert.pem, key.pem): TLS 1.2+,
  the client must present a certificate signed by the CA and made for client
  authentication (OpenSSL checks the extended key usage), ALPN must select
  'h2' (gRPC); the decrypted HTTP/2 bytes go to the executor. Anything else
  (plaintext, no or foreign certificate, a worker's own server certificate) is
  refused during the handshake and logged with the peer's address.

A test CA (not a production PKI) for a cluster:

    python -m tff_programs.worker_tls make-ca --out=certs \
        --hosts=10.0.0.2,10.0.0.3,127.0.0.1
    # certs/worker/  -> every worker machine   (--worker_tls_dir=certs/worker)
    # certs/driver/  -> the driver machine     (--worker_tls_dir=certs/driver)
    # certs/ca-key.pem stays where it was made (it signs new certificates)

Worker certificates carry the listed hosts (IP addresses or DNS names,
wildcards like *.workers.example allowed) as subject alternative names: the
driver checks the address it dials against them. Keys are ECDSA P-256.
Standard library only, except `make-ca`, which needs the `cryptography` package.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import ipaddress
import os
import ssl
import sys
from collections.abc import Callable, Sequence
from typing import Optional

TLS_FILES = ('ca.pem', 'cert.pem', 'key.pem')
HANDSHAKE_TIMEOUT_S = 10.0


class WorkerConfigError(ValueError):
  """A one-line problem with worker flags (addresses, TLS files, hosts)."""


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


def server_context(tls_dir: str) -> ssl.SSLContext:
  """The worker's TLS context: its certificate, client certificates required
  (signed by the CA, for client authentication), ALPN h2, TLS 1.2+."""
  ca, cert, key = check_tls_dir(tls_dir)
  context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
  context.minimum_version = ssl.TLSVersion.TLSv1_2
  context.verify_mode = ssl.CERT_REQUIRED
  try:
    context.load_cert_chain(cert, key)
    context.load_verify_locations(cafile=ca)
  except (ssl.SSLError, OSError, ValueError) as e:
    raise WorkerConfigError(f'--worker_tls_dir={tls_dir}: cannot load the certificates ({e})') from e
  context.set_alpn_protocols(['h2'])
  return context


# ---- the relay -------------------------------------------------------------------------


def _peer(transport: asyncio.BaseTransport) -> str:
  peer = transport.get_extra_info('peername')
  if isinstance(peer, tuple) and len(peer) >= 2:
    host = peer[0]
    return f'[{host}]:{peer[1]}' if ':' in host else f'{host}:{peer[1]}'
  return str(peer)


def _subject(transport: asyncio.BaseTransport) -> str:
  cert = transport.get_extra_info('peercert') or {}
  names = dict(item for rdn in cert.get('subject', ()) for item in rdn)
  return names.get('commonName', '?')


class _Side(asyncio.Protocol):
  """One end of a relayed connection: forwards what it reads to the other end,
  and pauses the other end while its own write buffer is full."""

  def __init__(self, connection: '_Connection'):
    self.connection = connection
    self.transport: Optional[asyncio.BaseTransport] = None

  def connection_made(self, transport):
    self.transport = transport

  def data_received(self, data):
    self.connection.forward(self, data)

  def eof_received(self):
    self.connection.close()
    return False

  def connection_lost(self, exc):
    self.connection.close()

  def pause_writing(self):
    self.connection.other(self).pause()

  def resume_writing(self):
    self.connection.other(self).resume()

  def pause(self):
    if self.transport is not None and not self.transport.is_closing():
      self.transport.pause_reading()

  def resume(self):
    if self.transport is not None and not self.transport.is_closing():
      self.transport.resume_reading()


class _Connection:
  """A client connection relayed to the executor's Unix socket."""

  def __init__(self, relay: 'Relay'):
    self.relay = relay
    self.client = _Side(self)
    self.upstream = _Side(self)
    self._pending: list[bytes] = []
    self._closed = False

  def other(self, side: _Side) -> _Side:
    return self.upstream if side is self.client else self.client

  def forward(self, side: _Side, data: bytes) -> None:
    target = self.other(side)
    if target.transport is None:  # The executor connection is still being opened.
      self._pending.append(data)
      return
    target.transport.write(data)

  def close(self) -> None:
    if self._closed:
      return
    self._closed = True
    for side in (self.client, self.upstream):
      if side.transport is not None:
        side.transport.close()
    self.relay.connections.discard(self)

  async def start(self, raw: asyncio.BaseTransport) -> None:
    """TLS handshake (if configured), then the connection to the executor."""
    loop = asyncio.get_running_loop()
    peer = _peer(raw)
    transport = raw
    who = ''
    if self.relay.ssl_context is not None:
      try:
        transport = await loop.start_tls(
            raw, self.client, self.relay.ssl_context, server_side=True,
            ssl_handshake_timeout=HANDSHAKE_TIMEOUT_S)
      except (ssl.SSLError, OSError, asyncio.TimeoutError, ConnectionError) as e:
        self.relay.log(f'refused {peer}: TLS handshake failed ({_reason(e)})')
        raw.abort()
        self.close()
        return
      transport.pause_reading()  # Until the executor connection is open.
      ssl_object = transport.get_extra_info('ssl_object')
      if ssl_object is None or ssl_object.selected_alpn_protocol() != 'h2':
        self.relay.log(f'refused {peer}: the client did not negotiate ALPN h2 (not gRPC)')
        transport.abort()
        self.close()
        return
      who = f' ({_subject(transport)})'
    self.client.transport = transport
    try:
      await loop.create_unix_connection(lambda: self.upstream, self.relay.upstream_path)
    except OSError as e:
      self.relay.log(f'dropped {peer}: the executor does not answer ({e})')
      self.close()
      return
    for data in self._pending:
      self.upstream.transport.write(data)
    self._pending.clear()
    self.client.resume()
    self.relay.log(f'accepted {peer}{who}')


def _reason(error: BaseException) -> str:
  if isinstance(error, asyncio.TimeoutError):
    return f'no handshake within {HANDSHAKE_TIMEOUT_S:.0f} s'
  text = getattr(error, 'reason', None) or str(error) or type(error).__name__
  detail = getattr(error, 'verify_message', None)  # e.g. 'unsupported certificate purpose'
  return ' '.join(f'{text}: {detail}'.split()) if detail else ' '.join(str(text).split())


def connecting_uid(proc_net_tcp: str, client_port: int, server_port: int) -> Optional[int]:
  """The uid owning the client end (local port `client_port`, remote port
  `server_port`) of a TCP connection in a /proc/net/tcp{,6} text, or None."""
  for line in proc_net_tcp.splitlines()[1:]:
    fields = line.split()
    if len(fields) < 8:
      continue
    local, remote = fields[1].rsplit(':', 1)[1], fields[2].rsplit(':', 1)[1]
    if int(local, 16) == client_port and int(remote, 16) == server_port:
      return int(fields[7])
  return None


def _peer_uid(transport: asyncio.BaseTransport) -> Optional[int]:
  """Who opened this loopback connection (its client socket's owner), or None."""
  peer = transport.get_extra_info('peername')
  ours = transport.get_extra_info('sockname')
  if not (isinstance(peer, tuple) and isinstance(ours, tuple)):
    return None
  for name in ('tcp6', 'tcp') if ':' in peer[0] else ('tcp', 'tcp6'):
    try:
      with open(f'/proc/self/net/{name}') as f:
        uid = connecting_uid(f.read(), peer[1], ours[1])
    except OSError:
      continue
    if uid is not None:
      return uid
  return None


class _Acceptor(asyncio.Protocol):
  """Accepts a TCP connection and hands it to a `_Connection`."""

  def __init__(self, relay: 'Relay'):
    self.relay = relay
    self.connection = _Connection(relay)

  def connection_made(self, transport):
    transport.pause_reading()  # Nothing is read before the handshake / the executor.
    if self.relay.ssl_context is None and self.relay.same_user_only:
      uid = _peer_uid(transport)
      if uid != os.getuid():
        self.relay.log(f'refused {_peer(transport)}: plaintext connections are for this '
                       f"worker's user (uid {os.getuid()}) only, not uid {uid}")
        transport.abort()
        return
    self.relay.connections.add(self.connection)
    if self.relay.ssl_context is None:
      self.connection.client.connection_made(transport)
      transport.set_protocol(self.connection.client)
    task = asyncio.get_running_loop().create_task(self.connection.start(transport))
    self.relay.tasks.add(task)
    task.add_done_callback(self.relay.tasks.discard)

  def connection_lost(self, exc):
    self.connection.close()


class Relay:
  """Serves HOST:PORT, relaying each connection to the Unix socket `upstream_path`."""

  def __init__(self, upstream_path: str, *, ssl_context: Optional[ssl.SSLContext] = None,
               same_user_only: bool = True, log: Callable[[str], None] = lambda line: None):
    """Args:
      upstream_path: the executor's Unix socket.
      ssl_context: mutual TLS (`server_context`); None: plaintext.
      same_user_only: plaintext only: accept a (loopback) connection only from
        a socket of this process's user, as the executor's 0600 Unix socket
        does (the owner is read from /proc/self/net/tcp{,6}).
      log: receives one line per accepted or refused connection.
    """
    self.upstream_path = upstream_path
    self.ssl_context = ssl_context
    self.same_user_only = same_user_only
    self.log = log
    self.connections: set[_Connection] = set()
    self.tasks: set[asyncio.Task] = set()
    self._server: Optional[asyncio.AbstractServer] = None

  async def start(self, host: str, port: int) -> int:
    """Starts listening; returns the port (the chosen one if `port` is 0)."""
    loop = asyncio.get_running_loop()
    self._server = await loop.create_server(lambda: _Acceptor(self), host, port,
                                            reuse_address=True)
    return self._server.sockets[0].getsockname()[1]

  async def close(self) -> None:
    if self._server is not None:
      self._server.close()
      await self._server.wait_closed()
    for connection in list(self.connections):
      connection.close()
    for task in list(self.tasks):
      task.cancel()


# ---- the test CA ----------------------------------------------------------------------------


def _name(common_name: str):
  from cryptography import x509  # pylint: disable=g-import-not-at-top
  from cryptography.x509.oid import NameOID  # pylint: disable=g-import-not-at-top

  return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, 'FedSuite test CA'),
                    x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _san(host: str):
  from cryptography import x509  # pylint: disable=g-import-not-at-top

  try:
    return x509.IPAddress(ipaddress.ip_address(host))
  except ValueError:
    return x509.DNSName(host)


def check_hosts(hosts: Sequence[str]) -> list[str]:
  """Worker host names for certificates; one-line error if empty or malformed."""
  cleaned = [h.strip() for h in hosts if h.strip()]
  if not cleaned:
    raise WorkerConfigError('--hosts: empty; list the addresses the driver dials, e.g. 10.0.0.2,127.0.0.1')
  for host in cleaned:
    try:
      ipaddress.ip_address(host)
      continue
    except ValueError:
      pass
    labels = host.split('.')
    wildcard = labels[0] == '*'
    rest = labels[1:] if wildcard else labels
    ok = all(0 < len(l) <= 63 and l.replace('-', '').isalnum() and not l.startswith('-')
             for l in rest)
    if not ok or (wildcard and len(rest) < 2):
      raise WorkerConfigError(f'--hosts: {host!r} is not an IP address or DNS name')
  return cleaned


def make_test_ca(out_dir: str, hosts: Sequence[str], *, days: int = 30) -> dict[str, str]:
  """Writes a test CA and certificates for the workers and the driver.

  Layout (keys 0600, folders 0700):
    out_dir/ca.pem, out_dir/ca-key.pem          the CA (keep the key here)
    out_dir/worker/{ca,cert,key}.pem            server certificate for `hosts`
    out_dir/driver/{ca,cert,key}.pem            client certificate (CN fedsuite-driver)

  Returns the folders: {'worker': ..., 'driver': ..., 'ca': out_dir/ca.pem}.
  Refuses (WorkerConfigError) to overwrite an existing CA.
  """
  from cryptography import x509  # pylint: disable=g-import-not-at-top
  from cryptography.hazmat.primitives import hashes  # pylint: disable=g-import-not-at-top
  from cryptography.hazmat.primitives import serialization  # pylint: disable=g-import-not-at-top
  from cryptography.hazmat.primitives.asymmetric import ec  # pylint: disable=g-import-not-at-top
  from cryptography.x509.oid import ExtendedKeyUsageOID  # pylint: disable=g-import-not-at-top

  hosts = check_hosts(hosts)
  if days < 1:
    raise WorkerConfigError(f'--days={days}: must be at least 1')
  if os.path.exists(os.path.join(out_dir, 'ca.pem')):
    raise WorkerConfigError(f'--out={out_dir}: already holds a CA (ca.pem); choose another folder')
  now = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=5)
  until = now + datetime.timedelta(days=days)

  def key_pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())

  def cert_pem(cert) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)

  def builder(subject, issuer, public_key):
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
            .public_key(public_key).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(until))

  ca_key = ec.generate_private_key(ec.SECP256R1())
  ca_name = _name('FedSuite test CA')
  ca_cert = (builder(ca_name, ca_name, ca_key.public_key())
             .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
             .add_extension(x509.KeyUsage(
                 digital_signature=False, content_commitment=False, key_encipherment=False,
                 data_encipherment=False, key_agreement=False, key_cert_sign=True,
                 crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
             .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                            critical=False)
             .sign(ca_key, hashes.SHA256()))

  def leaf(common_name: str, usage, sans: Sequence[str]):
    key = ec.generate_private_key(ec.SECP256R1())
    b = (builder(_name(common_name), ca_name, key.public_key())
         .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
         .add_extension(x509.KeyUsage(
             digital_signature=True, content_commitment=False, key_encipherment=False,
             data_encipherment=False, key_agreement=False, key_cert_sign=False,
             crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
         .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
         .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                        critical=False))
    if sans:
      b = b.add_extension(x509.SubjectAlternativeName([_san(h) for h in sans]), critical=False)
    return key, b.sign(ca_key, hashes.SHA256())

  def write(path: str, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, 'wb') as f:
      f.write(data)

  os.makedirs(out_dir, mode=0o700, exist_ok=True)
  write(os.path.join(out_dir, 'ca.pem'), cert_pem(ca_cert), 0o644)
  write(os.path.join(out_dir, 'ca-key.pem'), key_pem(ca_key), 0o600)
  folders = {'ca': os.path.join(out_dir, 'ca.pem')}
  for role, usage, common_name, sans in (
      ('worker', ExtendedKeyUsageOID.SERVER_AUTH, 'fedsuite-worker', hosts),
      ('driver', ExtendedKeyUsageOID.CLIENT_AUTH, 'fedsuite-driver', ())):
    folder = os.path.join(out_dir, role)
    os.makedirs(folder, mode=0o700, exist_ok=True)
    key, cert = leaf(common_name, usage, sans)
    write(os.path.join(folder, 'ca.pem'), cert_pem(ca_cert), 0o644)
    write(os.path.join(folder, 'cert.pem'), cert_pem(cert), 0o644)
    write(os.path.join(folder, 'key.pem'), key_pem(key), 0o600)
    folders[role] = folder
  return folders


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
