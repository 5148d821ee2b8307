"""``WebSocket``: the application's handle on one WebSocket connection.

Every method is safe from any thread: calls from outside the reactor thread
are handed to it, and sends from one thread keep their order.  A thread that
sends faster than the reactor can take waits (``max_send_queue``).  The handle
never writes to a socket itself.  :class:`BlockingWebSocket` adds the
blocking reads of a handler that has a thread of its own; the inbox it reads
belongs to the bridge.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, Iterator, Optional, Protocol, Union

from .errors import ConnectionClosed
from .request import Headers, Request
from .websocket_frames import CloseCode, encode_close_payload, is_valid_close_code

if TYPE_CHECKING:
    from .reactor import BoundedHandoff
    from .websocket_connection import WebSocketConnection


class WebSocket:
    """One open (or closed) WebSocket connection, as handlers see it."""

    __slots__ = (
        "_conn", "_data", "_handoff", "close_code", "close_reason", "request", "subprotocol",
    )

    def __init__(self, handoff: BoundedHandoff, conn: WebSocketConnection, request: Request,
                 subprotocol: Optional[str]) -> None:
        self._handoff = handoff
        self._conn = conn
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

    def send(self, message: Union[str, bytes]) -> None:
        """Send a text (``str``) or binary (bytes-like) message; dropped once closed."""
        if not isinstance(message, (str, bytes, bytearray, memoryview)):
            raise TypeError(f"WebSocket messages are str or bytes, not {type(message).__name__}")
        self._handoff.call(len(message), self._conn.send, message)

    def ping(self, payload: bytes = b"") -> None:
        if len(payload) > 125:
            raise ValueError("ping payload over 125 bytes")
        self._handoff.call(len(payload), self._conn.ping, bytes(payload))

    def close(self, code: int = CloseCode.NORMAL_CLOSURE, reason: str = "") -> None:
        """Start the close handshake with ``code`` and ``reason`` (at most 123 bytes)."""
        if not is_valid_close_code(code):
            raise ValueError(f"invalid close code {code}")
        encode_close_payload(code, reason)  # raises on a reason that does not fit
        self._handoff.call(0, self._conn.close, code, reason)

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
    raises :class:`~wssync.errors.ConnectionClosed` once the connection is
    closing, so a loop that only pushes ends when the peer goes away.
    """

    __slots__ = ("_closing", "_inbox")

    def __init__(self, handoff: BoundedHandoff, conn: WebSocketConnection, request: Request,
                 subprotocol: Optional[str], inbox: Inbox) -> None:
        super().__init__(handoff, conn, request, subprotocol)
        self._inbox = inbox
        self._closing = False  # this handle started the close

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

    def send(self, message: Union[str, bytes]) -> None:
        """As :meth:`WebSocket.send`; raises ``ConnectionClosed`` once closing."""
        if self._closing or self.close_code is not None:
            raise ConnectionClosed(self.close_code or CloseCode.NORMAL_CLOSURE,
                                   self.close_reason)
        super().send(message)

    def close(self, code: int = CloseCode.NORMAL_CLOSURE, reason: str = "") -> None:
        """As :meth:`WebSocket.close`; only the first close counts."""
        if self._closing or self.close_code is not None:
            return
        super().close(code, reason)
        self._closing = True
