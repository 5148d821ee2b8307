"""The ``/metrics`` listener: a small HTTP/1.1 answerer for Prometheus scrapes.

:class:`MetricsEndpoint` listens on a socket of its own, on whatever reactor it
is given (a serving process's, or a supervisor's), and answers ``GET`` and
``HEAD /metrics`` with what its ``snapshot()`` callable returns, in the text
format 0.0.4 (:func:`wssync.metrics.render`); other paths get 404, other
methods 405.  Requests go through the server's own :class:`RequestParser`
under small limits (no request body is taken), answers through
:func:`frame_response`; connections are capped, and idle ones closed.  It
counts nothing and runs no application code; its connections are not the
server's (they are neither counted nor drained with them).
"""

from __future__ import annotations

import logging
import socket
import time
from typing import Callable, List, Optional, Tuple

from ..config import host_port
from ..errors import BindError, HttpError
from ..io.listener import Listener, LiveTransports, create_listening_socket
from ..io.protocol import WriteLimits
from ..io.reactor import Reactor, Timer
from ..io.transport import Transport
from ..metrics import CONTENT_TYPE, Snapshot, render
from .parser import RequestParser
from .writer import error_response, frame_response

log = logging.getLogger("wssync.metrics")

PATH = "/metrics"
MAX_CONNECTIONS = 64  # scrapers are few; more are closed at once
IDLE_TIMEOUT = 60.0  # longer than the scrape intervals in use, shorter than forever
_ALLOWED = [("Allow", "GET, HEAD")]
# Output a scraper may leave unread (a few snapshots), and for how long.
_WRITE_LIMITS = WriteLimits(high_water=256 * 1024, max_buffer=1024 * 1024, send_timeout=30.0,
                            hard_limit=4 * 1024 * 1024, slow_timeout=10.0)


class _Limits:
    """What a scrape request may be: a small head, no body."""

    max_request_line = 4096
    max_header_size = 16 * 1024
    max_headers = 64
    max_body_size = 0


_LIMITS = _Limits()


def listen(address: str, backlog: int = 64) -> socket.socket:
    """A listening socket for ``HOST:PORT``; a ``BindError`` names the address."""
    host, port = host_port(address)
    try:
        return create_listening_socket(host, port, backlog)
    except OSError as exc:
        raise BindError.of(exc, f"cannot listen for metrics on {address}: "
                                f"{exc.strerror or exc}; choose another metrics address "
                                f"(--metrics HOST:PORT)") from None


class MetricsEndpoint:
    """Serves ``snapshot()`` at ``/metrics`` from ``sock`` on ``reactor``."""

    def __init__(self, reactor: Reactor, sock: socket.socket,
                 snapshot: Callable[[], Snapshot]) -> None:
        self.sock = sock
        self._snapshot = snapshot
        self._live = LiveTransports()  # the scrapers' connections (not the server's)
        self._listener = Listener(reactor, sock, lambda: _Scrape(self._answer), self._live,
                                  _WRITE_LIMITS, MAX_CONNECTIONS, _refuse)

    @property
    def address(self) -> Tuple[str, int]:
        return self.sock.getsockname()[:2]  # type: ignore[no-any-return]

    def _answer(self) -> bytes:
        return render(self._snapshot())

    def close(self) -> None:
        """Stop listening and close every scraper's connection (on the reactor)."""
        self._listener.close()
        for transport in self._live:
            transport.abort()

    def forget_in_child(self) -> None:
        """In a forked worker: close this process's copies of the sockets without
        touching the selector (the parent's, shared across the fork)."""
        self.sock.close()
        for transport in self._live:
            transport.sock.close()


def _refuse(sock: socket.socket) -> None:
    sock.close()


class _Scrape:
    """One scraper's connection: requests in, one answer each, in order."""

    name = "metrics"

    def __init__(self, answer: Callable[[], bytes]) -> None:
        self._answer = answer
        self.transport: Optional[Transport] = None
        self._parser = RequestParser(_LIMITS)
        self._paused = False  # the scraper is not reading: answer no more for now
        self._idle_until = 0.0
        self._timer: Optional[Timer] = None

    def connection_made(self, transport: Transport) -> None:
        self.transport = transport
        self._idle_until = time.monotonic() + IDLE_TIMEOUT
        self._timer = transport.reactor.call_later(IDLE_TIMEOUT, self._check_idle)

    def data_received(self, data: bytes) -> None:
        self._parser.feed(data)
        self._process()

    def _process(self) -> None:
        transport = self.transport
        assert transport is not None
        while not self._paused and not transport.is_closing():
            try:
                request = self._parser.next_request()
            except HttpError as exc:
                transport.write(error_response(exc.status, exc.message))
                transport.close()
                return
            if request is None:
                return  # (a body that follows is refused as it arrives: none is allowed)
            self._idle_until = time.monotonic() + IDLE_TIMEOUT
            status, headers, body = self._respond(request.method, request.path)
            data, large, _framer, keep_alive, _size = frame_response(
                request, status, headers, body, False)
            transport.write(data)
            if large:
                transport.write(large)
            if not keep_alive:
                transport.close()

    def _respond(self, method: str, path: str) -> Tuple[int, List[Tuple[str, str]], bytes]:
        plain = [("Content-Type", "text/plain; charset=utf-8")]
        if path != PATH:
            return 404, plain, b"404 Not Found: metrics are at /metrics\n"
        if method not in ("GET", "HEAD"):
            return 405, plain + _ALLOWED, b"405 Method Not Allowed\n"
        try:
            body = self._answer()
        except Exception:
            log.exception("error collecting metrics")
            return 500, plain, b"500 Internal Server Error\n"
        return 200, [("Content-Type", CONTENT_TYPE)], body

    def _check_idle(self) -> None:
        self._timer = None
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        left = self._idle_until - time.monotonic()
        if left <= 0:
            transport.close()
            return
        self._timer = transport.reactor.call_later(left, self._check_idle)

    def eof_received(self) -> None:
        assert self.transport is not None
        self.transport.close()

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.transport = None

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        if self.transport is not None:
            self._process()

    def shutdown(self) -> None:
        if self.transport is not None:
            self.transport.close()
