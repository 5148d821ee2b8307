"""``ProxyPreamble``: the protocol object a connection starts with under ``proxy_protocol``.

It reads the PROXY protocol header (:mod:`wssync.edge.proxy_protocol` parses it),
makes the client it names the transport's peer (the socket's own peer, the
proxy, stays in ``transport.proxy_peername``), and hands the connection and the
bytes after the header to the protocol that follows (``HttpConnection``), the
way ``HttpConnection`` hands an upgraded connection to ``WebSocketConnection``.
A malformed header, a connection closed before the header is complete, or a
header that does not arrive within the timeout closes the connection: the
protocol that follows is never made, so no handler runs.  Any client can cause
that, so it is logged a few times, then once per 10 s with a count
(:mod:`wssync.io.ratelog`).  Like the transport, it knows nothing of HTTP.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Callable, Optional

from ..io.ratelog import RateLimitedLog
from .proxy_protocol import ProxyProtocolError, parse

if TYPE_CHECKING:
    from ..io.reactor import Timer
    from ..io.transport import BaseProtocol, Transport

log = logging.getLogger("wssync.proxy")
# One for the process: a preamble lives for one connection.
_REFUSED = RateLimitedLog(log, logging.INFO, "connections closed without a valid PROXY header")


class ProxyPreamble:
    """Reads one PROXY protocol header, then installs ``make_protocol()``."""

    __slots__ = ("_buffer", "_make_protocol", "_timeout", "_timer", "transport")

    name = "proxy"

    def __init__(self, make_protocol: Callable[[], BaseProtocol], timeout: float) -> None:
        self._make_protocol = make_protocol
        self._timeout = timeout
        self._buffer = b""
        self._timer: Optional[Timer] = None
        self.transport: Optional[Transport] = None

    def connection_made(self, transport: Transport) -> None:
        self.transport = transport
        if self._timeout:
            self._timer = transport.reactor.call_later(self._timeout, self._expired)

    def data_received(self, data: bytes) -> None:
        transport = self.transport
        assert transport is not None
        # Bounded: parse() fails past 107 bytes of v1, and a v2 header says its
        # length (at most 16 + 65535 bytes) in its first 16.
        buffer = self._buffer = self._buffer + data if self._buffer else data
        try:
            parsed = parse(buffer)
        except ProxyProtocolError as exc:
            self._fail(str(exc))
            return
        if parsed is None:
            return
        header, length = parsed
        self._cancel_timer()
        self._buffer = b""
        if header.source is not None:
            transport.proxy_peername = transport.peername
            transport.peername = header.source
        transport.set_protocol(self._make_protocol(), buffer[length:])

    def eof_received(self) -> None:
        self._fail("connection closed before its PROXY protocol header")

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        self._cancel_timer()

    def pause_writing(self) -> None:
        pass  # nothing is written before the header

    def resume_writing(self) -> None:
        pass

    def shutdown(self) -> None:
        """The server is stopping: a connection still without its header just ends."""
        if self.transport is not None:
            self.transport.close()

    def _expired(self) -> None:
        self._timer = None
        self._fail(f"no PROXY protocol header within {self._timeout:g} s")

    def _fail(self, why: str) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        _REFUSED.event(transport.reactor, transport.peername, "%s: %s; closing",
                       transport.peername, why)
        self._cancel_timer()
        transport.abort()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
