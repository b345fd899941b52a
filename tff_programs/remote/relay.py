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

Standard library only.
"""

from __future__ import annotations

import asyncio
import os
import ssl
from collections.abc import Callable
from typing import Optional

from tff_programs.remote.addresses import check_tls_dir  # pylint: disable=g-importing-member
from tff_programs.remote.errors import WorkerConfigError  # pylint: disable=g-importing-member

HANDSHAKE_TIMEOUT_S = 10.0


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
