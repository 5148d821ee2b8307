"""The exchange between the application layer and the protocol objects: Protocols only.

An HTTP connection hands requests to an :class:`HttpApplication`; the WebSocket
upgrade asks a :class:`WebSocketAcceptor` whether to accept a handshake; a
WebSocket connection delivers its events to a :class:`WebSocketApplication`.
The bridge implements all three; tests implement them with recorders.
This module holds no code and imports nothing of wssync at run time (the names
in annotations are imported for type checkers only), so any layer may use it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Iterator, Optional, Protocol, Union

if TYPE_CHECKING:
    from .http.body import BodyStream
    from .http.connection import HttpConnection
    from .http.request import Request
    from .http.response import Response
    from .websocket.connection import WebSocketConnection
    from .websocket.protocol import Data
    from .websocket.upgrade import WebSocketAccept

# A streamed response body's next chunk (None at its end), or the error that ended it.
ChunkCallback = Callable[[Optional[bytes], Optional[BaseException]], None]


class HttpApplication(Protocol):
    """What the application layer offers an HTTP connection.

    ``hand_over``, when set, is asked at each request head, before anything
    else, whether another process serves the connection from that request on
    (a session it owns): True once the connection has gone there.
    """

    hand_over: Optional[Callable[[HttpConnection, Request], bool]]

    def handle_request(self, conn: HttpConnection, request: Request) -> None:
        """Answer ``request``: call ``conn.send_response`` on the reactor thread, once."""

    def next_chunk(self, conn: HttpConnection, body: Iterator[bytes],
                   callback: ChunkCallback) -> None:
        """Take the next chunk of a streamed body (None at its end) and call back
        on the reactor thread; a handler's iterator may block, so the application
        layer decides where it runs."""

    def close_body(self, conn: HttpConnection, close: Callable[[], None]) -> None:
        """Close a response body that has been sent (or will never be): where
        its handler ran, since a WSGI ``close()`` may block or expect that
        thread (Django ends its request there)."""

    def stream_body(self, conn: HttpConnection, request: Request) -> Optional[BodyStream]:
        """The head of ``request`` arrived and its body has not: a stream its
        handler will read the body from as it arrives (the handler then runs
        right away), or None to collect the whole body first."""


class WebSocketAcceptor(Protocol):
    """What the application layer offers the WebSocket upgrade."""

    def accept_websocket(self, conn: HttpConnection,
                         request: Request) -> Union[Response, WebSocketAccept]:
        """A valid handshake arrived: accept it or answer with a response."""


class WebSocketApplication(Protocol):
    """What the application layer offers one WebSocket connection."""

    def opened(self, conn: WebSocketConnection) -> None: ...
    def message(self, data: Data) -> None: ...
    def closed(self, code: int, reason: str) -> None: ...
    def after_pending(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the reactor once every event delivered so far is handled."""
    def pause_writing(self) -> None:
        """The connection's unsent output went above ``write_high_water``."""
    def resume_writing(self) -> None:
        """The connection's unsent output drained below a quarter of it."""
