"""``WebSocket``: the application's handle on one WebSocket connection.

Every method is safe from any thread: calls from outside the reactor thread
are handed to it, and sends from one thread keep their order.  A thread's send
behaves as on a blocking socket: it waits while *this* connection's unsent
output is above ``write_high_water`` (its :class:`~wssync.io.pacing.OutputGate`),
so a producer is paced by its own peer.  Code on the reactor thread cannot
wait: its sends go out at once, and it looks at :attr:`WebSocket.buffered_amount`
(or a route's ``on_drain``) instead.  The handle never writes to a socket
itself.  :class:`BlockingWebSocket` adds the blocking reads of a handler that
has a thread of its own; the inbox it reads belongs to the bridge.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterator, Optional, Protocol, Union

from ..errors import ConnectionClosed, SendTimeout
from ..http.request import Headers, Request
from .frames import CloseCode, encode_close_payload, is_valid_close_code

if TYPE_CHECKING:
    from ..io.pacing import OutputGate
    from ..io.reactor import BoundedHandoff
    from .connection import WebSocketConnection

_BYTES_LIKE = (bytes, bytearray, memoryview)
_MESSAGE_TYPES = (str, bytes, bytearray, memoryview)
_get_ident = threading.get_ident


class WebSocket:
    """One open (or closed) WebSocket connection, as handlers see it."""

    __slots__ = (
        "_closing", "_conn", "_data", "_gate", "_handoff", "close_code", "close_reason",
        "request", "subprotocol",
    )

    def __init__(self, handoff: BoundedHandoff, conn: WebSocketConnection, request: Request,
                 subprotocol: Optional[str], gate: OutputGate) -> None:
        self._handoff = handoff
        self._conn = conn
        self._gate = gate
        self._closing = False  # this handle started the close
        self.request = request
        self.subprotocol = subprotocol
        self.close_code: Optional[int] = None  # set once closed; 1006 if no close frame came
        self.close_reason = ""
        self._data: Optional[Dict[str, Any]] = None

    @property
    def data(self) -> Dict[str, Any]:
        """A dict free for the application's per-connection state (made on first use)."""
        if self._data is None:
            self._data = {}
        return self._data

    @property
    def path(self) -> str:
        return self.request.path

    @property
    def headers(self) -> Headers:
        """The handshake request's headers."""
        return self.request.headers

    @property
    def remote_address(self) -> Any:
        return self.request.remote_addr

    @property
    def closed(self) -> bool:
        return self.close_code is not None

    @property
    def buffered_amount(self) -> int:
        """Bytes sent on this connection and not yet taken by the peer's kernel
        (what a browser's ``WebSocket.bufferedAmount`` says).  Code on the
        reactor thread, which cannot wait in ``send``, paces itself with it."""
        return self._conn.buffered_amount + self._gate.in_flight

    def send(self, message: Union[str, bytes], timeout: Optional[float] = None) -> None:
        """Send a text (``str``) or binary (bytes-like) message.

        From any thread but the reactor's, this waits as a blocking socket
        would while the connection's unsent output is above
        ``write_high_water``; ``timeout`` bounds the wait (None: until the peer
        takes it, or is dropped for taking nothing for ``send_timeout``), and
        :class:`~wssync.errors.SendTimeout` then says so (the message is not
        sent).  Raises :class:`~wssync.errors.ConnectionClosed` once the
        connection is closing or closed, also in a thread waiting here.
        """
        if not isinstance(message, _MESSAGE_TYPES):
            raise TypeError("WebSocket.send() takes str (text) or bytes, bytearray or "
                            f"memoryview (binary), not {type(message).__name__}")
        if self._closing or self.close_code is not None:
            raise ConnectionClosed(self.close_code or CloseCode.NORMAL_CLOSURE,
                                   self.close_reason)
        # _hand's steps, inline: this runs per message (as the bridge's _deliver).
        if _get_ident() == self._handoff.reactor.thread_id:
            self._conn.send(message)  # the reactor cannot wait for itself
            return
        size = len(message)
        self._gate.enter(size, timeout, self._timed_out)
        self._handoff.call(size, self._send_now, message, size)

    def _send_now(self, message: Union[str, bytes], size: int) -> None:
        """On the reactor: a handed-over send goes out (``_written``, inline)."""
        try:
            self._conn.send(message)
        finally:
            self._gate.written(size)

    def ping(self, payload: bytes = b"", timeout: Optional[float] = None) -> None:
        """Send a ping (at most 125 bytes); waits and raises as :meth:`send`."""
        if not isinstance(payload, _BYTES_LIKE):
            raise TypeError(f"WebSocket.ping() takes bytes, not {type(payload).__name__}")
        if len(payload) > 125:
            raise ValueError("ping payload over 125 bytes")
        self._hand(len(payload), timeout, self._conn.ping, bytes(payload))

    def close(self, code: int = CloseCode.NORMAL_CLOSURE, reason: str = "") -> None:
        """Start the close handshake with ``code`` and ``reason`` (at most 123
        bytes).  Only the first close counts; from a thread it waits, as
        :meth:`send` does, for the close frame to fit the output."""
        if not is_valid_close_code(code):
            raise ValueError(f"invalid close code {code}")
        encode_close_payload(code, reason)  # raises on a reason that does not fit
        try:
            self._hand(0, None, self._conn.close, code, reason)
        except ConnectionClosed:
            return  # closed already: nothing to do
        self._closing = True

    def drain(self, timeout: Optional[float] = None) -> bool:
        """Wait until this connection's unsent output is below
        ``write_high_water``, as ``send`` does before it sends; whether it is
        (False once ``timeout`` passed or the connection is closed).  On the
        reactor thread it cannot wait and only says."""
        if self._handoff.reactor.in_reactor_thread():
            return self.close_code is None and not self._gate.paused
        deadline = None if timeout is None else time.monotonic() + timeout
        return self._gate.wait_writable(deadline)

    def _send_unpaced(self, message: Union[str, bytes]) -> None:
        """Send without waiting for *this* peer, as a broadcast does (for adapters
        whose library promises that, Socket.IO's emit): the output buffers, and
        the slow-peer rules drop a peer that falls far behind.  Only the hand-off
        to the reactor, which all threads share, may make the caller wait."""
        if self._closing or self.close_code is not None:
            raise ConnectionClosed(self.close_code or CloseCode.NORMAL_CLOSURE,
                                   self.close_reason)
        size = len(message)
        self._gate.count(size)  # (so buffered_amount counts it until it is written)
        self._handoff.call(size, self._send_now, message, size)

    def _close_unpaced(self) -> None:
        """:meth:`close` (1000) without waiting for room in a slow peer's output."""
        if self._closing or self.close_code is not None:
            return
        self._closing = True
        self._handoff.call(0, self._conn.close, CloseCode.NORMAL_CLOSURE, "")

    def _hand(self, size: int, timeout: Optional[float], fn: Callable[..., None],
              *args: Any) -> None:
        """Run ``fn(*args)`` on the reactor, ``size`` bytes paced by the gate."""
        if self._closing or self.close_code is not None:
            raise ConnectionClosed(self.close_code or CloseCode.NORMAL_CLOSURE,
                                   self.close_reason)
        handoff = self._handoff
        if _get_ident() == handoff.reactor.thread_id:
            fn(*args)  # the reactor cannot wait for itself
            return
        self._gate.enter(size, timeout, self._timed_out)
        handoff.call(size, self._written, size, fn, args)

    def _written(self, size: int, fn: Callable[..., None], args: Any) -> None:
        try:
            fn(*args)
        finally:
            self._gate.written(size)

    def _timed_out(self, timeout: float) -> SendTimeout:
        return SendTimeout(f"send to {self.remote_address} on {self.path} timed out after "
                           f"{timeout:g} s: the peer takes its data slower than it is sent")

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<WebSocket {self.path} {self.remote_address} {state}>"


class Inbox(Protocol):
    """Where a blocking handler's messages wait (the bridge keeps it bounded)."""

    def receive(self, timeout: Optional[float]) -> Union[str, bytes, None]: ...


# Close codes after which iteration simply ends: a normal close, going away, or a
# close frame without a code.
_CLEAN_CLOSE = frozenset((CloseCode.NORMAL_CLOSURE, CloseCode.GOING_AWAY,
                          CloseCode.NO_STATUS_RCVD))


class BlockingWebSocket(WebSocket):
    """The handle a blocking-style handler (``handler(ws)``) gets: a
    :class:`WebSocket` that also reads, from the handler's own thread.

    ``receive`` and iteration take messages in the order they came; ``send``
    waits for a slow peer and raises :class:`~wssync.errors.ConnectionClosed`
    once the connection is closing, so a loop that only pushes ends when the
    peer goes away.
    """

    __slots__ = ("_inbox",)

    def __init__(self, handoff: BoundedHandoff, conn: WebSocketConnection, request: Request,
                 subprotocol: Optional[str], gate: OutputGate, inbox: Inbox) -> None:
        super().__init__(handoff, conn, request, subprotocol, gate)
        self._inbox = inbox

    def receive(self, timeout: Optional[float] = None) -> Union[str, bytes, None]:
        """The next message (``str`` or ``bytes``); None if none came within
        ``timeout`` seconds (None: wait as long as the connection lives).  Raises
        :class:`~wssync.errors.ConnectionClosed` once the connection is closed and
        every message before the close was taken."""
        return self._inbox.receive(timeout)

    def __iter__(self) -> Iterator[Union[str, bytes]]:
        """Every message until the connection closes: the loop ends after a normal
        close (1000, 1001, or no code) and raises ``ConnectionClosed`` after others."""
        while True:
            try:
                message = self._inbox.receive(None)
            except ConnectionClosed as exc:
                if exc.code in _CLEAN_CLOSE:
                    return
                raise
            if message is not None:
                yield message
