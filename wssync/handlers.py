"""Runs application code for the protocol objects, inline or on worker threads.

``HttpBridge`` answers ``HttpConnection`` (route, call the handler, turn its
return value into a ``Response``, turn an exception into 500) and accepts
WebSocket handshakes; ``Session`` delivers one WebSocket's events to its
route's callbacks (an exception closes with 1011) and, in thread-pool mode,
keeps its backlog of undelivered messages within ``max_queue`` and
``max_queue_bytes`` by pausing the connection's input.  Results always go back
to the protocol objects on the reactor thread.  No bytes are parsed here.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterator, Optional, Tuple, Union

from .app import App, WebSocketRoute
from .config import Config
from .dispatch import Lane, ThreadPool
from .handshake import offered_subprotocols
from .http_connection import ChunkCallback, HttpConnection, WebSocketAccept
from .reactor import BoundedHandoff, Reactor
from .request import Request
from .response import Response
from .websocket import WebSocket
from .websocket_frames import CloseCode

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

    def __init__(self, app: App, config: Config, reactor: Reactor, handoff: BoundedHandoff,
                 pool: Optional[ThreadPool], registry: Dict[WebSocketConnection, WebSocket],
                 blocking_pool: Optional[ThreadPool] = None) -> None:
        self.app = app
        self.config = config
        self.reactor = reactor
        self.handoff = handoff
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
        handle = WebSocket(self.handoff, request, subprotocol)
        lane = self._lane(conn)
        return WebSocketAccept(Session(self, route, handle, lane), subprotocol)


class Session:
    """Delivers one WebSocket connection's events to its route, in order.

    On a worker lane, messages wait for the handler; the reactor counts what
    it queued and the worker what it delivered (each counter has one writer,
    so no lock), and the connection's input pauses while the difference is
    over ``max_queue`` messages or ``max_queue_bytes``.  It resumes once the
    backlog is down to a quarter of both.
    """

    __slots__ = ("_delivered", "_delivered_bytes", "_paused", "_queued", "_queued_bytes",
                 "bridge", "conn", "handle", "lane", "route")

    def __init__(self, bridge: HttpBridge, route: WebSocketRoute, handle: WebSocket,
                 lane: Lane) -> None:
        self.bridge = bridge
        self.route = route
        self.handle = handle
        self.lane = lane
        self.conn: Optional[WebSocketConnection] = None
        self._queued = self._queued_bytes = 0  # written by the reactor thread only
        self._delivered = self._delivered_bytes = 0  # written by the lane's worker only
        self._paused = False

    def opened(self, conn: WebSocketConnection) -> None:
        self.conn = conn
        self.handle.request.headers.compact()  # kept as long as the connection lives
        self.handle._conn = conn
        self.bridge.websockets[conn] = self.handle
        if self.route.on_connect is not None:
            self.lane.submit(self._call, self.route.on_connect, self.handle)

    def message(self, data: Union[str, bytes]) -> None:
        on_message = self.route.on_message
        if on_message is not None:
            if self.lane is _INLINE:
                self._call(on_message, self.handle, data)  # reactor mode: no queue
                return
            size = len(data)
            self._queued += 1
            self._queued_bytes += size
            self.lane.submit(self._deliver, on_message, data, size)
            if not self._paused and self._over_limit():
                self._paused = True
                # The worker may have emptied the backlog before it could see
                # the flag: look again now that the flag is set.
                if self._drained():
                    self._paused = False
                else:
                    assert self.conn is not None
                    self.conn.pause_input()

    def _backlog(self) -> Tuple[int, int]:
        return self._queued - self._delivered, self._queued_bytes - self._delivered_bytes

    def _over_limit(self) -> bool:
        count, size = self._backlog()
        config = self.bridge.config
        return count >= config.max_queue or size >= config.max_queue_bytes

    def _drained(self) -> bool:
        count, size = self._backlog()
        config = self.bridge.config
        return count <= config.max_queue // 4 and size <= config.max_queue_bytes // 4

    def _deliver(self, on_message: Callable[..., Any], data: Union[str, bytes],
                 size: int) -> None:
        """A worker runs the handler for one queued message."""
        self._call(on_message, self.handle, data)
        self._delivered_bytes += size
        self._delivered += 1
        if self._paused and self._drained():
            self.bridge.reactor.call_soon_threadsafe(self._resume)

    def _resume(self) -> None:
        if self._paused and self._drained():
            self._paused = False
            if self.conn is not None:
                self.conn.resume_input()

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
                self.handle.close(CloseCode.INTERNAL_ERROR, "internal error")
