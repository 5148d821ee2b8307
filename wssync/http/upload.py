"""A request body read as it arrives, and the close that waits for the client to stop sending.

:class:`Upload` moves a request's body from the parser to the bounded
:class:`~wssync.http.body.BodyStream` its handler reads (a WSGI application's
``wsgi.input``), pausing the transport while the stream is full, failing it
when the body is malformed, cut off or late, and, once the answer is out,
dropping what the handler left unread (or letting the connection close).
:class:`Lingering` is the last protocol of a connection that closes with input
unread.  Both run on the reactor thread for one :class:`HttpConnection`; the
connection's :class:`~wssync.http.state.ServerState` decides when each applies.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Optional, Tuple

from ..errors import HttpError, RequestBodyError
from ..io.ratelog import RateLimitedLog
from .state import CLOSE
from .writer import error_answer

if TYPE_CHECKING:
    from ..io.reactor import Timer
    from ..io.transport import Transport
    from .body import BodyStream
    from .connection import HttpConnection
    from .response import Response

log = logging.getLogger("wssync.http")
# Requests refused as malformed, too large or too slow (this module's and the
# connection's): a client can send them at will, so a few lines, then counts.
refused_log = RateLimitedLog(log, logging.INFO, "requests refused with an error status")

# How much of an unread body is taken per read while it is dropped.
_DRAIN_CHUNK = 1 << 20


class Upload:
    """One request body on its way to the handler that reads it."""

    __slots__ = ("conn", "draining", "error", "stream", "timer")

    def __init__(self, conn: HttpConnection, stream: BodyStream) -> None:
        self.conn = conn
        self.stream = stream
        self.error: Optional[RequestBodyError] = None
        self.timer: Optional[Timer] = None
        self.draining = False  # the answer is out: the rest is dropped

    def start(self) -> None:
        conn = self.conn
        assert conn.transport is not None
        # The body's deadline counts from its head, as for a collected body; the
        # connection's own timer is idle while the handler runs.
        if conn.config.body_timeout:
            self.timer = conn.transport.reactor.call_later(
                conn.config.body_timeout, self._expired)
        self.pump()  # the bytes that came with the head

    def pump(self) -> None:
        """Move body bytes from the parser to the handler's stream while it has
        room (or drop them once the answer is out)."""
        conn = self.conn
        stream = self.stream
        parser = conn.parser
        transport = conn.transport
        assert parser is not None and transport is not None
        if self.error is not None:
            return
        while True:
            if self.draining:
                room = _DRAIN_CHUNK
            else:
                room = stream.room()
                if room <= 0:
                    if stream.stop_filling():
                        # The handler's upload_wanted resumes us once it has read.
                        conn._held = True
                        transport.pause_reading()
                        return
                    continue
            try:
                data = parser.read_body(room)
            except HttpError as exc:
                self.fail(exc.status, exc.message)
                return
            if data and not self.draining:
                stream.feed(data)
            if parser.pending is None:
                self._ended()
                return
            if not data:
                transport.resume_reading()
                return

    def _ended(self) -> None:
        conn = self.conn
        conn._upload = None
        self.cancel_timer()
        conn._state.body_ended()
        if self.draining:
            conn._reuse()  # the answer was out already
        else:
            self.stream.end()

    def fail(self, status: int, message: str) -> None:
        """The body cannot be completed: the handler's reads raise, and its
        answer, if it has not started, becomes this error."""
        conn = self.conn
        transport = conn.transport
        assert transport is not None
        error = self.error = RequestBodyError(status, message)
        self.cancel_timer()
        self.stream.fail(error)
        refused_log.event(transport.reactor, transport.peername, "%s: %d %s", transport.peername,
                          status, message)
        if self.draining:
            conn._upload = None
            conn._current = None
            conn._state.fire(CLOSE)
            transport.close()
        else:
            conn._held = True
            transport.pause_reading()  # nothing more is parsed; the answer will linger

    def _expired(self) -> None:
        self.timer = None
        if self.conn._upload is self and self.error is None:
            self.fail(408, "request body not received in time")

    def cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def settle(self, response: Response, close: bool) -> Tuple[Response, bool]:
        """An answer starts while the body has not ended: the answer to a
        failed body, or whether the connection can stay open."""
        conn = self.conn
        parser = conn.parser
        assert parser is not None
        error = self.error
        if error is not None:
            # The request failed under the handler: its answer is never sent.
            conn._close_body(response.body)
            return error_answer(HttpError(error.status, error.message)), True
        if conn._state.answer_closes(parser.body_remaining, conn.config.max_unread_body):
            close = True
        return response, close

    def answered(self, reuse: bool) -> None:
        """The answer is out and the body has not ended: drop its rest and go
        on (``reuse``), or close once the client stops sending."""
        conn = self.conn
        self.stream.discard()
        if reuse:
            self.draining = True
            self.pump()
            return
        conn._upload = None
        self.cancel_timer()
        conn._current = None
        conn._linger()

    def lost(self) -> None:
        self.cancel_timer()
        self.stream.fail(RequestBodyError(400, "the client went away"))


class Lingering:
    """The last protocol of a connection that closes with part of a request
    body unread: the answer goes out followed by FIN, and what the client still
    sends is dropped until it closes too, or ``timeout`` seconds pass."""

    name = "http"

    def __init__(self, timeout: float) -> None:
        self._timeout = timeout
        self._timer: Optional[Timer] = None
        self.transport: Optional[Transport] = None

    def connection_made(self, transport: Transport) -> None:
        self.transport = transport
        if not self._timeout:
            transport.close()
            return
        transport.close_write()
        transport.resume_reading()
        self._timer = transport.reactor.call_later(self._timeout, transport.close)

    def data_received(self, data: bytes) -> None:
        pass

    def eof_received(self) -> None:
        assert self.transport is not None
        self.transport.close()

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def pause_writing(self) -> None:
        pass

    def resume_writing(self) -> None:
        pass

    def shutdown(self) -> None:
        assert self.transport is not None
        self.transport.close()
