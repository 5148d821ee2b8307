"""``WebSocket``: the application's handle on one WebSocket connection.

Every method is safe from any thread: calls from outside the reactor thread
are handed to it, and sends from one thread keep their order.  A thread that
sends faster than the reactor can take waits (``max_send_queue``).  The handle
never writes to a socket itself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, Optional, Union

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
