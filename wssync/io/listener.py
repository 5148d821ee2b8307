"""Listening sockets: the ``Listener`` that accepts connections on the reactor, and
the two ways to make a listening socket (a TCP address, a Unix socket file).

The listener accepts in bounded batches, pauses when the layer above says so or
the process runs out of descriptors, refuses past ``max_connections``, and wraps
each accepted socket in a transport (plain, or TLS through ``TlsSettings``) that
joins the set of live transports.  It never reads a byte of a connection.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
import stat
from typing import Any, Callable, Dict, Iterator, Optional, Tuple

from ..metrics import Metrics
from .protocol import BaseProtocol, ProtocolFactory, WriteLimits
from .reactor import Reactor, Timer
from .transport import EVENT_READ, Transport

log = logging.getLogger("wssync.transport")

# accept() errors that mean "out of resources": pause the listener, do not spin.
_ACCEPT_EXHAUSTED = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}


class LiveTransports:
    """The open transports of a server: each joins when it is made and leaves when
    it closes; the server counts them, and walks them to stop.  ``metrics`` are
    the serving run's counters, which each transport takes at hand from here."""

    __slots__ = ("_open", "metrics")

    def __init__(self, metrics: Optional[Metrics] = None) -> None:
        self._open: Dict[Transport, None] = {}  # a dict keeps the order they came in
        self.metrics = metrics if metrics is not None else Metrics()

    def add(self, transport: Transport) -> None:
        self._open[transport] = None

    def remove(self, transport: Transport) -> None:
        self._open.pop(transport, None)

    def __len__(self) -> int:
        return len(self._open)

    def __iter__(self) -> Iterator[Transport]:
        # A snapshot: walking them to close them changes the set.
        return iter(list(self._open))


# Makes the transport of an accepted socket: plain by default, TLS from wssync.io.tls.
TransportFactory = Callable[
    [Reactor, socket.socket, Any, BaseProtocol, Optional[LiveTransports], WriteLimits], Transport]


class Listener:
    """The listening socket: accepts in batches and wraps each socket in a Transport."""

    def __init__(
        self,
        reactor: Reactor,
        sock: socket.socket,
        protocol_factory: ProtocolFactory,
        live: LiveTransports,
        limits: WriteLimits,
        max_connections: int,
        on_refused: Callable[[socket.socket], None],
        accepting: Optional[Callable[[], float]] = None,
        transport_factory: TransportFactory = Transport,
    ) -> None:
        self.reactor = reactor
        self._transport_factory = transport_factory
        self.sock = sock
        self._factory = protocol_factory
        self._live = live
        self._metrics = live.metrics
        self._limits = limits
        self._max_connections = max_connections
        self._on_refused = on_refused
        # Seconds to leave new connections in the backlog for now (0: accept).
        self._accepting = accepting
        self._resume_timer: Optional[Timer] = None
        self._closed = False
        sock.setblocking(False)
        reactor.selector.register(sock, EVENT_READ, self._on_readable)

    def _on_readable(self, _mask: int) -> None:
        if self._accepting is not None:
            # The layer above is saturated, or another process sharing this
            # socket should take the connection: the kernel's backlog holds new
            # clients (and finally refuses them) instead of our memory.
            wait = self._accepting()
            if wait:
                self._pause(wait)
                return
        # Accept a batch: one selector round per connection is too slow under a
        # connection storm, an unbounded loop would starve everyone else.
        for _ in range(64):
            try:
                sock, peer = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in _ACCEPT_EXHAUSTED:
                    log.warning("accept failed (%s); pausing the listener for 0.5 s", exc)
                    self._pause(0.5)
                elif exc.errno not in (errno.ECONNABORTED, errno.EPROTO):
                    log.warning("accept failed: %s", exc)
                return
            self._metrics.accepted += 1
            sock.setblocking(False)
            if sock.family in (socket.AF_INET, socket.AF_INET6):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._max_connections and len(self._live) >= self._max_connections:
                self._on_refused(sock)
                continue
            try:
                protocol = self._factory()
                transport = self._transport_factory(self.reactor, sock, peer, protocol,
                                                    self._live, self._limits)
            except OSError:
                sock.close()  # the peer reset before we could register it
                continue
            transport.start()

    def adopt(self, sock: socket.socket, peername: Any, proxy_peername: Any, secure: bool,
              protocol: BaseProtocol, data: bytes) -> None:
        """Serve a connection another process accepted and passed on, whose
        first bytes (``data``) it read: clear text, past any preamble, so
        ``protocol`` is the one that follows them.  ``secure``: the client's
        connection is TLS, which that process keeps and relays."""
        sock.setblocking(False)
        # (Also once closed to new connections: a draining process still
        # serves the sessions it holds.)
        if self._max_connections and len(self._live) >= self._max_connections:
            self._on_refused(sock)  # told, as a connection accepted here would be
            return
        try:
            transport = Transport(self.reactor, sock, peername, protocol, self._live,
                                  self._limits)
        except OSError:
            sock.close()
            return
        transport.proxy_peername = proxy_peername
        transport.secure = secure
        transport.start()
        if data and not transport.is_closing():
            protocol.data_received(data)

    def _pause(self, delay: float) -> None:
        if self._resume_timer is None:
            self.reactor.selector.unregister(self.sock)
            self._resume_timer = self.reactor.call_later(delay, self._resume)

    def _resume(self) -> None:
        self._resume_timer = None
        if not self._closed:
            self.reactor.selector.register(self.sock, EVENT_READ, self._on_readable)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._resume_timer is not None:
            self._resume_timer.cancel()
            self._resume_timer = None
        else:
            try:
                self.reactor.selector.unregister(self.sock)
            except (KeyError, ValueError):
                pass
        self.sock.close()


def create_listening_socket(host: str, port: int, backlog: int = 1024) -> socket.socket:
    """Bind a listening socket for ``host`` (IPv4 or IPv6 literal or name)."""
    infos = socket.getaddrinfo(host or None, port, socket.AF_UNSPEC, socket.SOCK_STREAM,
                               0, socket.AI_PASSIVE)
    last_exc: Optional[OSError] = None
    for family, socktype, proto, _canon, addr in infos:
        sock = socket.socket(family, socktype, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6 and host in ("::", ""):
                # "::" means every address, IPv4-mapped ones included.
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            sock.bind(addr)
            sock.listen(backlog)
        except OSError as exc:
            sock.close()
            last_exc = exc
            continue
        return sock
    assert last_exc is not None
    raise last_exc


class UnixSocketFile:
    """A listening Unix domain socket at ``path`` with file mode ``mode``.

    A socket file left by a server that is gone (nothing accepts on it) is
    replaced; one that a live server still listens on is ``EADDRINUSE``, and a
    file that is not a socket is never touched (``FileExistsError``).
    :meth:`remove` deletes the file, if it is still the one made here.
    """

    def __init__(self, path: str, mode: int) -> None:
        self.path = path
        self.mode = mode
        self._identity: Optional[Tuple[int, int]] = None  # (st_dev, st_ino) once bound

    def listen(self, backlog: int) -> socket.socket:
        self._remove_stale()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(self.path)
            info = os.stat(self.path)
            self._identity = (info.st_dev, info.st_ino)
            # Before listen(): no client can connect with the umask's mode.
            os.chmod(self.path, self.mode)
            sock.listen(backlog)
        except BaseException:
            sock.close()
            self.remove()
            raise
        return sock

    def _remove_stale(self) -> None:
        try:
            info = os.stat(self.path)
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(info.st_mode):
            raise FileExistsError(errno.EEXIST, "exists and is not a socket", self.path)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            probe.settimeout(1.0)
            try:
                probe.connect(self.path)
            except (ConnectionRefusedError, FileNotFoundError):
                pass  # nobody listens: a stale file from an earlier run
            except OSError:
                raise OSError(errno.EADDRINUSE, "a server may still listen on it",
                              self.path) from None
            else:
                raise OSError(errno.EADDRINUSE, "another server listens on it", self.path)
        log.info("removing the stale socket file %s", self.path)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    def remove(self) -> None:
        """Delete the socket file if it is still the one this object bound."""
        identity, self._identity = self._identity, None
        if identity is None:
            return
        try:
            info = os.stat(self.path)
            if (info.st_dev, info.st_ino) == identity:
                os.unlink(self.path)
        except OSError:
            pass
