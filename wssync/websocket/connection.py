"""``WebSocketConnection``: the protocol object a connection holds after ``101``.

It binds the Sans-I/O :class:`~wssync.websocket.protocol.WebSocketProtocol`
to a transport and the reactor's timers: keepalive pings, pong and close
timeouts, and the close handshake.  Application events go to a
:class:`~wssync.contract.WebSocketApplication` (the application layer's side of this one
connection), which decides on which thread they run.
Runs on the reactor thread only; it never registers or reads a socket itself.
"""

from __future__ import annotations

import logging
import struct
from functools import partial
from typing import TYPE_CHECKING, Optional

from ..io.ratelog import RateLimitedLog
from ..io.reactor import Timer
from .deflate import PerMessageDeflate
from .frames import CloseCode
from .protocol import (
    CloseReceived,
    Data,
    Failure,
    Message,
    Ping,
    Pong,
    State,
    WebSocketProtocol,
)

if TYPE_CHECKING:
    from ..config import Config
    from ..contract import WebSocketApplication
    from ..io.transport import Transport
    from ..metrics import Metrics

log = logging.getLogger("wssync.websocket")
# What a peer can do at will is logged a few times, then counted.
_FAILED = RateLimitedLog(log, logging.INFO, "WebSockets closed for breaking the protocol")
_SILENT = RateLimitedLog(log, logging.INFO, "WebSockets closed for not answering a ping")

_OPEN = State.OPEN  # compared for every receiver of a broadcast


class WebSocketConnection:
    """RFC 6455 over one transport, with keepalive and close timeouts."""

    __slots__ = (
        "_close_timer", "_counted", "_input_paused", "_lost", "_ping_count", "_ping_timer",
        "_pong_timer",
        "app", "close_code", "close_reason", "config", "metrics", "proto", "subprotocol",
        "transport",
    )

    name = "websocket"

    def __init__(self, config: Config, app: WebSocketApplication,
                 subprotocol: Optional[str] = None,
                 deflate: Optional[PerMessageDeflate] = None) -> None:
        self.config = config
        self.app = app
        self.subprotocol = subprotocol
        self.proto = WebSocketProtocol(client=False, max_message_size=config.max_message_size,
                                       deflate=deflate)
        self.transport: Optional[Transport] = None
        self.close_code: int = CloseCode.ABNORMAL_CLOSURE  # until a close frame says otherwise
        self.close_reason = ""
        self._ping_timer: Optional[Timer] = None
        self._pong_timer: Optional[Timer] = None
        self._close_timer: Optional[Timer] = None
        self._ping_count = 0
        self._input_paused = False  # the application asked for no more messages for now
        self._lost = False
        self.metrics: Metrics  # the serving run's counters, from the transport
        # The transport's byte counts up to which this connection's traffic is in
        # the metrics: counted from the transport's own, at no cost per frame.
        self._counted = (0, 0)

    # -- transport callbacks -----------------------------------------------------

    def connection_made(self, transport: Transport) -> None:
        self.transport = transport
        self.metrics = transport.metrics
        self._counted = (transport.bytes_in, transport.bytes_out)
        if self.config.ping_interval:
            self._ping_timer = transport.reactor.call_later(self.config.ping_interval, self._ping)
        self.app.opened(self)

    def data_received(self, data: bytes) -> None:
        """Handle what ``data`` completes, until it runs out or the application is full.

        While input is paused, unparsed bytes stay in the protocol's buffer
        (at most one read) and the transport stops reading; ``resume_input``
        carries on with ``data_received(b"")``.  Once our close frame is out,
        parsing goes on so the peer's answer is seen; messages the application
        can no longer take are dropped then.
        """
        transport = self.transport
        assert transport is not None
        proto = self.proto
        proto.feed(data)
        metrics = self.metrics
        if self._input_paused and not proto.close_sent:
            return
        next_event = proto.next_event
        frames = proto.frames
        while True:
            event = next_event()
            if event is None:
                return
            if type(event) is Message:
                metrics.ws_in += 1
                if self._input_paused:
                    continue  # closing, and the application takes no more
                self.app.message(event.data)
                if frames.empty:
                    return  # the read held this one message: nothing left to ask for
                if self._input_paused and not proto.close_sent:
                    return  # full: the rest waits, unparsed, for resume_input
            elif type(event) is Ping:
                # Answered at once, so pongs keep their place among our replies.
                self._control(proto.send_pong(event.payload))
            elif type(event) is Pong:
                # Any pong proves the peer alive; RFC 6455 allows unsolicited ones.
                if self._pong_timer is not None:
                    self._pong_timer.cancel()
                    self._pong_timer = None
            elif type(event) is CloseReceived:
                self.close_code, self.close_reason = event.code, event.reason
                metrics.close_received(event.code)
                self.app.after_pending(self._answer_close)
            elif type(event) is Failure:
                _FAILED.event(transport.reactor, transport.peername, "closing %s: %d %s",
                              transport.peername, event.code, event.reason)
                self.app.after_pending(partial(self._fail, event.code, event.reason))
                return

    # -- flow control from the application (reactor thread) -------------------------

    def pause_input(self) -> None:
        """The application has enough messages waiting: stop reading this peer."""
        if not self._input_paused:
            self._input_paused = True
            if self.transport is not None:
                self.transport.pause_reading()

    def resume_input(self) -> None:
        """The application caught up: deliver what is parsed and read again."""
        if not self._input_paused:
            return
        self._input_paused = False
        transport = self.transport
        if transport is None or self._lost:
            return
        transport.resume_reading()
        self.data_received(b"")

    def eof_received(self) -> None:
        assert self.transport is not None
        # The peer will send nothing more; what we still owe it goes out first.
        self.transport.close()

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        if self._lost:
            return
        self._lost = True
        self.count_traffic()  # before the hub forgets it (app.closed): no byte is lost
        for timer in (self._ping_timer, self._pong_timer, self._close_timer):
            if timer is not None:
                timer.cancel()
        self.proto.connection_lost()
        self.app.closed(self.close_code, self.close_reason)

    def pause_writing(self) -> None:
        # The transport already stops reading this peer; the application's
        # threads wait in their sends, and code on the reactor can look.
        self.app.pause_writing()

    def resume_writing(self) -> None:
        self.app.resume_writing()

    def shutdown(self, restart: bool = False) -> None:
        """Server is stopping: start the close handshake with 1001 (GOING_AWAY),
        or with 1012 (SERVICE_RESTART) when this process is replaced by
        another (the client may reconnect, after a randomized delay)."""
        if restart:
            self.close(CloseCode.SERVICE_RESTART, "server restarting")
        else:
            self.close(CloseCode.GOING_AWAY, "server shutting down")

    # -- actions (reactor thread) --------------------------------------------------

    @property
    def is_open(self) -> bool:
        return self.proto.state == _OPEN and not self._lost

    @property
    def buffered_amount(self) -> int:
        """Bytes written and not yet taken by the kernel (any thread may read it)."""
        transport = self.transport
        return transport.get_write_buffer_size() if transport is not None else 0

    def send(self, data: Data) -> None:
        if self.transport is not None and not self._lost:
            frame = self.proto.send_message(data)
            if frame:  # (nothing once closing)
                self.metrics.ws_out += 1
            self.transport.write(frame)

    def broadcast(self, data: Data, frame: bytes) -> None:
        """Send ``data``, using ``frame`` (its plain encoding, shared by many
        receivers) unless this connection compresses its messages."""
        if self.transport is not None and self.is_open:
            if self.proto.compressed:
                frame = self.proto.send_message(data)
            self.metrics.ws_out += 1
            self.transport.write(frame)

    def ping(self, payload: bytes = b"") -> None:
        if self.transport is not None and not self._lost:
            self._control(self.proto.send_ping(payload))

    def count_traffic(self) -> None:
        """Add the bytes this connection moved since it last did to the metrics
        (its frames as on the wire; the transport counts them anyway)."""
        transport = self.transport
        if transport is None:
            return
        was_in, was_out = self._counted
        now_in, now_out = self._counted = (transport.bytes_in, transport.bytes_out)
        metrics = self.metrics
        metrics.ws_bytes_in += now_in - was_in
        metrics.ws_bytes_out += now_out - was_out

    def _control(self, frame: bytes) -> None:
        """Write a control frame; b"" (once closing) writes nothing."""
        if frame and self.transport is not None:
            self.transport.write_control(frame)

    def _send_close(self, code: int, reason: str = "") -> None:
        """Write our close frame (once; counted by its code)."""
        frame = self.proto.send_close(code, reason)
        if frame:
            self.metrics.close_sent(code)
        self._control(frame)

    def close(self, code: int = CloseCode.NORMAL_CLOSURE, reason: str = "") -> None:
        """Start the close handshake; the TCP connection ends when the peer answers."""
        transport = self.transport
        if transport is None or self._lost or self.proto.close_sent:
            return
        self._send_close(code, reason)
        if self.proto.close_received:
            transport.close()
            return
        self._start_close_timer()
        if self._input_paused:
            # The peer's close answer may sit behind messages nobody takes now.
            transport.resume_reading()
            self.data_received(b"")

    def _answer_close(self) -> None:
        transport = self.transport
        if transport is None or self._lost:
            return
        code = self.close_code
        # Echo the peer's code (RFC 6455 5.5.1); a code-less close gets a code-less answer.
        self._send_close(code)  # 1005 answers with no code
        # The server closes TCP first, so the TIME_WAIT state lands on our side.
        transport.close()

    def _fail(self, code: int, reason: str) -> None:
        transport = self.transport
        if transport is None or self._lost:
            return
        self.close_code, self.close_reason = code, reason
        self._send_close(code, reason)
        # Input after the error cannot be parsed, so the peer's close reply
        # cannot be recognised: send FIN, discard input until the peer closes
        # too (eof_received), and drop it if it never does.
        transport.close_write()
        self._start_close_timer()

    def _start_close_timer(self) -> None:
        assert self.transport is not None
        if self._close_timer is None:
            self._close_timer = self.transport.reactor.call_later(
                self.config.close_timeout, self._close_timeout)

    def _close_timeout(self) -> None:
        self._close_timer = None
        if self.transport is not None:
            self.transport.abort()

    # -- keepalive ---------------------------------------------------------------

    def _ping(self) -> None:
        transport = self.transport
        if transport is None or not self.is_open:
            self._ping_timer = None
            return
        config = self.config
        self._ping_count += 1
        self._control(self.proto.send_ping(struct.pack("!I", self._ping_count & 0xFFFFFFFF)))
        if self._pong_timer is None:
            self._pong_timer = transport.reactor.call_later(config.ping_timeout, self._pong_missing)
        self._ping_timer = transport.reactor.call_later(config.ping_interval, self._ping)

    def _pong_missing(self) -> None:
        self._pong_timer = None
        if self.transport is not None and not self._lost:
            if self._input_paused and not self.proto.close_sent \
                    and self.transport.get_write_buffer_size() < self.config.write_high_water:
                # We are not reading, so the pong may well be waiting unread:
                # a busy handler must not look like a dead peer.  Unless the
                # peer is not reading what we send either: then the handler is
                # busy waiting for that peer (a send), and the missing pong
                # counts, as it does in reactor mode.
                self._pong_timer = self.transport.reactor.call_later(
                    self.config.ping_timeout, self._pong_missing)
                return
            _SILENT.event(self.transport.reactor, self.transport.peername,
                          "closing %s: no pong within %.1f s", self.transport.peername,
                          self.config.ping_timeout)
            self.close_code, self.close_reason = CloseCode.INTERNAL_ERROR, "keepalive ping timeout"
            self._send_close(self.close_code, self.close_reason)
            # Armed first: a close that completes at once (nothing left to send)
            # cancels it in connection_lost instead of leaving it behind.
            self._start_close_timer()  # a peer that reads nothing never drains the buffer
            self.transport.close()
