"""Runs application code for the protocol objects, inline or on worker threads.

``HttpBridge`` answers ``HttpConnection`` (route, call the handler, turn its
return value into a ``Response``, turn an exception into 500) and accepts
WebSocket handshakes; ``Session`` delivers one WebSocket's events to its
route's callbacks (an exception closes with 1011).  Results always go back to
the protocol objects on the reactor thread.  No bytes are parsed here.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterator, Optional, Union

from .app import App, WebSocketRoute
from .dispatch import Lane, ThreadPool
from .handshake import offered_subprotocols
from .http_connection import ChunkCallback, HttpConnection, WebSocketAccept
from .reactor import Reactor
from .request import Request
from .response import Response
from .websocket import WebSocket

if TYPE_CHECKING:
    from .websocket_connection import WebSocketConnection

log = logging.getLogger("wssync.app")

_INLINE = Lane(None)


def to_response(result: Any) -> Response:
    """A handler's return value as a :class:`Response`."""
    if isinstance(result, Response):
        return result
    if isinstance(result, (str, bytes)):
        return Response(result)
    if isinstance(result, (dict, list)):
        return Response.json(result)
    raise TypeError(f"handler returned {type(result).__name__}, not a Response, str, bytes, "
                    "dict or list")


def _server_error() -> Response:
    return Response("500 Internal Server Error\n", 500)


class HttpBridge:
    """The application side of every ``HttpConnection`` of one server."""

    def __init__(self, app: App, reactor: Reactor, pool: Optional[ThreadPool],
                 registry: Dict[WebSocketConnection, WebSocket],
                 blocking_pool: Optional[ThreadPool] = None) -> None:
        self.app = app
        self.reactor = reactor
        self.pool = pool
        self.blocking_pool = blocking_pool
        self.websockets = registry

    def _lane(self, conn: HttpConnection, blocking: bool = False) -> Lane:
        """The connection's lane; handlers marked ``blocking`` never run inline."""
        pool = self.pool
        if pool is None:
            if not blocking or self.blocking_pool is None:
                return _INLINE
            pool = self.blocking_pool
        lane: Optional[Lane] = conn.app_state
        if lane is None:
            lane = conn.app_state = pool.lane()
        return lane

    # -- HttpApplication ---------------------------------------------------------------

    def handle_request(self, conn: HttpConnection, request: Request) -> None:
        target = self.app.match_http(request)
        if isinstance(target, Response):
            conn.send_response(target)
            return
        lane = self._lane(conn, getattr(target, "blocking", False))
        if lane is _INLINE:
            self._run_handler(conn, target, request, False)  # reactor mode: no queue
        else:
            lane.submit(self._run_handler, conn, target, request, lane.threaded)

    def _run_handler(self, conn: HttpConnection, handler: Callable[[Request], Any],
                     request: Request, threaded: bool) -> None:
        try:
            result = handler(request)
            response = result if type(result) is Response else to_response(result)
        except Exception:
            log.exception("error in handler for %s %s", request.method, request.target)
            response = _server_error()
        if threaded:
            self.reactor.call_soon_threadsafe(conn.send_response, response)
        else:
            conn.send_response(response)

    def next_chunk(self, conn: HttpConnection, body: Iterator[bytes],
                   callback: ChunkCallback) -> None:
        # A body from a blocking handler (WSGI) may block too: keep it on its lane.
        lane = conn.app_state if conn.app_state is not None else _INLINE
        lane.submit(self._run_next_chunk, body, callback, lane.threaded)

    def _run_next_chunk(self, body: Iterator[bytes], callback: ChunkCallback,
                        threaded: bool) -> None:
        chunk: Optional[bytes] = None
        error: Optional[BaseException] = None
        try:
            chunk = next(body)
        except StopIteration:
            pass
        except Exception as exc:
            error = exc
        if threaded:
            self.reactor.call_soon_threadsafe(callback, chunk, error)
        else:
            callback(chunk, error)

    def accept_websocket(self, conn: HttpConnection,
                         request: Request) -> Union[Response, WebSocketAccept]:
        route = self.app.match_websocket(request)
        if route is None:
            return Response("404 Not Found: no WebSocket endpoint here\n", 404)
        if not route.origin_allowed(request.headers.get("origin")):
            return Response("403 Forbidden: origin not allowed\n", 403)
        subprotocol = route.select_subprotocol(offered_subprotocols(request.headers))
        handle = WebSocket(self.reactor, request, subprotocol)
        lane = self._lane(conn)
        return WebSocketAccept(Session(self, route, handle, lane), subprotocol)


class Session:
    """Delivers one WebSocket connection's events to its route, in order."""

    __slots__ = ("bridge", "conn", "handle", "lane", "route")

    def __init__(self, bridge: HttpBridge, route: WebSocketRoute, handle: WebSocket,
                 lane: Lane) -> None:
        self.bridge = bridge
        self.route = route
        self.handle = handle
        self.lane = lane
        self.conn: Optional[WebSocketConnection] = None

    def opened(self, conn: WebSocketConnection) -> None:
        self.conn = conn
        self.handle.request.headers._compact()  # kept as long as the connection lives
        self.handle._conn = conn
        self.bridge.websockets[conn] = self.handle
        if self.route.on_connect is not None:
            self.lane.submit(self._call, self.route.on_connect, self.handle)

    def message(self, data: Union[str, bytes]) -> None:
        on_message = self.route.on_message
        if on_message is not None:
            if self.lane is _INLINE:
                self._call(on_message, self.handle, data)  # reactor mode: no queue
            else:
                self.lane.submit(self._call, on_message, self.handle, data)

    def closed(self, code: int, reason: str) -> None:
        if self.conn is not None:
            self.bridge.websockets.pop(self.conn, None)
        handle = self.handle
        handle.close_code, handle.close_reason = code, reason
        if self.route.on_close is not None:
            self.lane.submit(self._call, self.route.on_close, handle, code, reason)

    def after_pending(self, fn: Callable[[], None]) -> None:
        if self.lane.threaded:
            self.lane.submit(self.bridge.reactor.call_soon_threadsafe, fn)
        else:
            fn()

    def _call(self, callback: Callable[..., Any], *args: Any) -> None:
        try:
            callback(*args)
        except Exception:
            log.exception("error in WebSocket handler for %s", self.handle.path)
            if not self.handle.closed:
                self.handle.close(1011, "internal error")
