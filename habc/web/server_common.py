"""Shared pieces of the project's web pages: where to bind, access tokens, request checks, and a
uvicorn server running in a background thread.

Rules every page follows:

* **Binding.** 127.0.0.1 by default. Any other address (a LAN interface, 0.0.0.0) needs an access
  token; ``resolve_token`` makes one when none is given. The token travels in the page URL
  (``?token=...``), which the server prints at start.
* **Host and Origin.** A page bound to loopback answers only requests whose ``Host`` is a loopback
  name (no DNS rebinding), and a WebSocket is accepted only from a page of the same origin (no
  cross-site WebSocket hijacking from another tab of the operator's browser).
* Tokens are compared in constant time.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import secrets
import socket
import threading
import time
from typing import Callable
from urllib.parse import quote, urlsplit

LOOPBACK_NAMES = ('localhost', '127.0.0.1', '::1')


class ServerError(RuntimeError):
  """A web server could not start, or stopped without being asked to."""


def is_loopback(host: str) -> bool:
  """True for 127.0.0.0/8, ::1 and 'localhost'."""
  host = str(host).strip('[]').lower()
  if host == 'localhost':
    return True
  try:
    return ipaddress.ip_address(host).is_loopback
  except ValueError:
    return False


def new_token() -> str:
  """A random access token (128 bits, URL-safe)."""
  return secrets.token_urlsafe(16)


def resolve_token(host: str, token: str | None) -> str:
  """The token a server bound to ``host`` uses: the given one; a new one when the address is not
  loopback and none was given; '' (no token) on loopback."""
  token = str(token or '')
  if not token and not is_loopback(host):
    return new_token()
  return token


def token_matches(given: str | None, expected: str) -> bool:
  """Constant-time comparison; False when either is empty."""
  if not given or not expected:
    return False
  return hmac.compare_digest(str(given).encode(), str(expected).encode())


def split_host(value: str) -> tuple[str, str]:
  """'host:port' or '[v6]:port' -> (host, port as text, '' when absent)."""
  value = (value or '').strip().lower()
  if value.startswith('['):
    host, _, rest = value[1:].partition(']')
    return host, rest.lstrip(':')
  if value.count(':') == 1:
    host, _, port = value.partition(':')
    return host, port
  return value, ''


def host_allowed(host_header: str, bound_host: str) -> bool:
  """Whether a request's ``Host`` header may reach a server bound to ``bound_host``.

  Bound to loopback: loopback names only (a DNS-rebinding page in the operator's browser names
  its own host). Bound to a wildcard (0.0.0.0, ::): any. Bound to one address or name: that one,
  or a loopback name.
  """
  name, _ = split_host(host_header)
  if not name:
    return False
  if is_loopback(name):
    return True
  if is_loopback(bound_host):
    return False
  if str(bound_host).strip('[]') in ('0.0.0.0', '::', ''):
    return True
  return name == str(bound_host).strip('[]').lower()


def origin_allowed(origin: str | None, host_header: str) -> bool:
  """A WebSocket's ``Origin`` must be this server's own (scheme http/https, same host:port).
  Clients that send no Origin (not a browser) pass: they cannot ride on the operator's tab."""
  if origin is None:
    return True
  parts = urlsplit(origin)
  if parts.scheme not in ('http', 'https') or not parts.netloc:
    return False
  return split_host(parts.netloc) == split_host(host_header)


def page_url(host: str, port: int, token: str = '', path: str = '/') -> str:
  """The URL to open: a wildcard address is shown as this machine's name."""
  shown = str(host)
  if shown.strip('[]') in ('0.0.0.0', '::', ''):
    shown = socket.gethostname()
  if ':' in shown and not shown.startswith('['):
    shown = f'[{shown}]'
  url = f'http://{shown}:{int(port)}{path}'
  return url + (f'?token={quote(token)}' if token else '')


def bind_socket(host: str, port: int) -> socket.socket:
  """A listening TCP socket on (host, port); port 0 lets the system choose.

  Raises:
    ServerError: the address cannot be bound (in use, not on this machine), naming it.
  """
  try:
    infos = socket.getaddrinfo(host.strip('[]'), int(port), type=socket.SOCK_STREAM,
                               flags=socket.AI_PASSIVE)
  except socket.gaierror as e:
    raise ServerError(f'cannot resolve the address {host!r}: {e}') from None
  family, kind, proto, _, address = infos[0]
  sock = socket.socket(family, kind, proto)
  sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
  try:
    sock.bind(address)
    sock.listen(64)
  except OSError as e:
    sock.close()
    raise ServerError(f'cannot listen on {host}:{port}: {e.strerror or e} (another console or '
                      'program may use that port: choose another with --console_port)') from None
  sock.set_inheritable(True)
  return sock


class ServerThread:
  """A uvicorn server for ``app`` in a daemon thread with its own asyncio loop.

  ``start()`` returns once the server accepts connections (or raises ServerError). ``loop`` is
  the server's event loop, for ``call_soon_threadsafe``. ``alive`` is False once the thread has
  ended; ``failure`` then says why when nobody called ``stop()``.
  """

  def __init__(self, app, host: str, port: int, *, ws_max_size: int = 1 << 16,
               name: str = 'habc-web'):
    self.app, self.host, self.requested_port = app, host, int(port)
    self.ws_max_size = int(ws_max_size)
    self.name = name
    self.port = None
    self.loop: asyncio.AbstractEventLoop | None = None
    self.failure = ''
    self._stopping = False
    self._server = None
    self._thread = None
    self._on_exit: list[Callable[[], None]] = []

  def on_exit(self, fn: Callable[[], None]) -> None:
    """Calls ``fn()`` (in the server thread) when the server ends, asked to or not."""
    self._on_exit.append(fn)

  def start(self, timeout_s: float = 20.0) -> None:
    import uvicorn
    sock = bind_socket(self.host, self.requested_port)
    self.port = sock.getsockname()[1]
    config = uvicorn.Config(self.app, log_level='warning', lifespan='off', access_log=False,
                            ws='websockets-sansio', ws_max_size=self.ws_max_size,
                            ws_ping_interval=5.0, ws_ping_timeout=5.0, loop='asyncio')
    self._server = uvicorn.Server(config)

    def serve():
      try:
        async def main():
          self.loop = asyncio.get_running_loop()
          await self._server.serve(sockets=[sock])
        asyncio.run(main())
        if not self._stopping:
          self.failure = 'the server loop ended'
      except BaseException as e:  # pylint: disable=broad-except
        self.failure = f'{type(e).__name__}: {e}'
      finally:
        sock.close()
        for fn in self._on_exit:
          fn()

    self._thread = threading.Thread(target=serve, name=self.name, daemon=True)
    self._thread.start()
    deadline = time.monotonic() + timeout_s
    while not self._server.started:
      if not self._thread.is_alive():
        raise ServerError(f'the web server did not start: {self.failure or "no reason given"}')
      if time.monotonic() > deadline:
        raise ServerError(f'the web server did not start within {timeout_s:.0f} s')
      time.sleep(0.01)

  @property
  def alive(self) -> bool:
    return self._thread is not None and self._thread.is_alive()

  def call(self, fn, *args) -> None:
    """Runs ``fn(*args)`` in the server's loop (from any thread); a no-op once it has stopped."""
    loop = self.loop
    if loop is not None and not loop.is_closed():
      try:
        loop.call_soon_threadsafe(fn, *args)
      except RuntimeError:  # The loop closed meanwhile.
        pass

  def stop(self, timeout_s: float = 5.0) -> None:
    self._stopping = True
    if self._server is not None:
      self._server.should_exit = True
    if self._thread is not None:
      self._thread.join(timeout_s)
