"""The bridge between the protocol objects and the application's code.

``HttpBridge`` answers ``HttpConnection`` (route, call the handler, turn its
return value into a ``Response`` and an exception into 500, or into the status
of an :class:`~wssync.errors.HttpError`) and accepts WebSocket handshakes;
``WebSocketBridge`` delivers one WebSocket's events to its route's callbacks
(an exception closes with 1011) and keeps its backlog of undelivered messages
within ``max_queue`` and ``max_queue_bytes`` by pausing the connection's input.
Code runs on the connection's lane (:mod:`wssync.io.lanes`); results go back to
the protocol objects through the one hand-off to the reactor,
:class:`~wssync.io.reactor.BoundedHandoff`.  ``BlockingWebSocketBridge`` runs a
blocking-style route's ``handler(ws)`` on a thread of its own instead, which
takes messages from an inbox bounded by the same backlog rule.  No bytes are
parsed here.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from functools import partial
from typing import TYPE_CHECKING, Any, Callable, Deque, Iterator, Optional, Union

from .app import App, Later, WebSocketRoute
from .config import Config
from .contract import ChunkCallback
from .errors import ConnectionClosed, HttpError, RequestBodyError
from .http.body import BodyStream
from .http.connection import HttpConnection
from .http.request import Request
from .http.response import Response
from .http.writer import error_answer
from .io.lanes import INLINE, Lane, OwnThreads, ThreadPool
from .io.pacing import OutputGate
from .io.ratelog import RateLimitedLog
from .io.reactor import BoundedHandoff
from .websocket.frames import CloseCode
from .websocket.handle import BlockingWebSocket, WebSocket
from .websocket.handshake import offered_subprotocols
from .websocket.upgrade import WebSocketAccept

if TYPE_CHECKING:
    from .hub import Hub
    from .websocket.connection import WebSocketConnection

log = logging.getLogger("wssync.app")


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


class HttpBridge:
    """The application side of every ``HttpConnection`` of one server."""

    def __init__(self, app: App, config: Config, handoff: BoundedHandoff,
                 pool: Optional[ThreadPool], hub: Hub,
                 blocking_pool: Optional[ThreadPool] = None,
                 own_threads: Optional[OwnThreads] = None) -> None:
        self.app = app
        self.config = config
        self.handoff = handoff
        self.pool = pool
        self.blocking_pool = blocking_pool
        self.hub = hub  # where open WebSockets are registered
        # Passes a request for another worker's session there (StickySessions).
        self.hand_over: Optional[Callable[[HttpConnection, Request], bool]] = None
        # Blocking-style WebSocket handlers, a thread each (max_blocking_websockets).
        self.own_threads = own_threads or OwnThreads(config.max_blocking_websockets)
        # A client can open handshakes at will: a few lines, then one per 10 s.
        self._refused_blocking = RateLimitedLog(
            log, logging.WARNING, "blocking WebSocket handshakes refused at "
                                  "max_blocking_websockets")

    def _lane(self, conn: HttpConnection, blocking: bool = False) -> Lane:
        """The connection's lane; handlers marked ``blocking`` (WSGI) go to the blocking
        pool in reactor mode (the server makes one when a WSGI app is mounted)."""
        pool = self.pool
        if pool is None:
            if not blocking or self.blocking_pool is None:
                return INLINE
            pool = self.blocking_pool
        lane: Optional[Lane] = conn.lane
        if lane is None:
            lane = conn.lane = pool.lane()
        return lane

    # -- HttpApplication ---------------------------------------------------------------

    def handle_request(self, conn: HttpConnection, request: Request) -> None:
        route = self.app.match_http(request)
        if isinstance(route, Response):
            conn.send_response(route)
            return
        if self.pool is None and not route.blocking:
            # Reactor mode: the handler runs here and now (no lane to keep order
            # on) and its answer goes straight to the connection (no hand-off).
            answer = self._respond(route.handler, request, conn)
            if answer is not None:
                conn.send_response(answer)
            return
        self._lane(conn, route.blocking).submit(self._run_handler, conn, route.handler, request)

    def _run_handler(self, conn: HttpConnection, handler: Callable[[Request], Any],
                     request: Request) -> None:
        """On the connection's lane: the handler's answer goes back to the reactor;
        what the answer leaves for later (``_after``) runs here once it is on its way."""
        answer = self._respond(handler, request, conn)
        if answer is not None:
            after = answer._after
            self.handoff.call(0, conn.send_response, answer)
            if after is not None:
                after()

    def _respond(self, handler: Callable[[Request], Any], request: Request,
                 conn: HttpConnection) -> Optional[Response]:
        """The handler's answer to ``request`` (its exceptions answered too);
        None when it is a :class:`~wssync.app.Later`, which sends it when it comes."""
        try:
            result = handler(request)
            if type(result) is Response:
                return result
            if type(result) is Later:
                result.bind(partial(self.handoff.call, 0, conn.send_response))
                return None
            return to_response(result)
        except HttpError as exc:
            return error_answer(exc)
        except RequestBodyError as exc:
            # The connection answers for the body (or the client is gone): no traceback.
            return error_answer(HttpError(exc.status, exc.message))
        except Exception:
            log.exception("error in handler for %s %s", request.method, request.target)
            return Response("500 Internal Server Error\n", 500)

    def stream_body(self, conn: HttpConnection, request: Request) -> Optional[BodyStream]:
        # Handlers that read their input as a file (WSGI) get the body as it arrives.
        route = self.app.match_http(request)
        if isinstance(route, Response) or not route.streams_body:
            return None
        config = self.config
        stream = BodyStream(config.body_buffer_size, config.body_timeout,
                            partial(self.handoff.call, 0, conn.upload_wanted))
        request.body_stream = stream
        return stream

    def next_chunk(self, conn: HttpConnection, body: Iterator[bytes],
                   callback: ChunkCallback) -> None:
        # A body from a blocking handler (WSGI) may block too: keep it on its lane.
        lane = conn.lane if conn.lane is not None else INLINE
        lane.submit(self._run_next_chunk, body, callback)

    def _run_next_chunk(self, body: Iterator[bytes], callback: ChunkCallback) -> None:
        chunk: Optional[bytes] = None
        error: Optional[BaseException] = None
        try:
            chunk = next(body)
        except StopIteration:
            pass
        except Exception as exc:
            error = exc
        self.handoff.call(0, callback, chunk, error)

    def close_body(self, conn: HttpConnection, close: Callable[[], None]) -> None:
        lane = conn.lane if conn.lane is not None else INLINE
        lane.submit(self._run_close, close)

    @staticmethod
    def _run_close(close: Callable[[], None]) -> None:
        try:
            close()
        except Exception:
            log.exception("error closing a response body")

    def accept_websocket(self, conn: HttpConnection,
                         request: Request) -> Union[Response, WebSocketAccept]:
        route = self.app.match_websocket(request)
        if route is None:
            return Response("404 Not Found: no WebSocket endpoint here\n", 404)
        refusal = route.origin_refusal(request)
        if refusal is not None:
            return Response(f"403 Forbidden: {refusal}\n", 403)
        subprotocol = route.select_subprotocol(offered_subprotocols(request.headers))
        if route.handler is not None:
            if not self.own_threads.reserve():
                transport = conn.transport
                self._refused_blocking.event(
                    transport.reactor if transport is not None else None, request.remote_addr,
                    "max_blocking_websockets (%d) reached; refusing %s from %s",
                    self.own_threads.limit, request.path, request.remote_addr)
                return Response("503 Service Unavailable: too many WebSocket handlers\n", 503,
                                [("Retry-After", "1")])
            return WebSocketAccept(BlockingWebSocketBridge(self, route, request, subprotocol),
                                   subprotocol)
        bridge = WebSocketBridge(self, route, request, subprotocol,
                                 self._lane(conn, route.pooled))
        return WebSocketAccept(bridge, subprotocol)


class WebSocketBridge:
    """Delivers one WebSocket connection's events to its route, in order.

    Messages wait on the connection's lane for the handler; the reactor counts
    what it queued and the lane what it delivered (each counter has one
    writer, so no lock), and the connection's input pauses while the
    difference is over ``max_queue`` messages or ``max_queue_bytes``.  It
    resumes once the backlog is down to a quarter of both.  On the inline
    lane every message is delivered as it is queued, so input never pauses.
    """

    __slots__ = ("_delivered", "_delivered_bytes", "_max_bytes", "_max_count", "_paused",
                 "_queued", "_queued_bytes", "bridge", "conn", "gate", "handle", "lane",
                 "request", "route", "subprotocol")

    handle: WebSocket  # made once the connection exists (opened)
    conn: WebSocketConnection

    def __init__(self, bridge: HttpBridge, route: WebSocketRoute, request: Request,
                 subprotocol: Optional[str], lane: Lane) -> None:
        self.bridge = bridge
        self.route = route
        self.request = request
        self.subprotocol = subprotocol
        self.lane = lane
        self._queued = self._queued_bytes = 0  # written by the reactor thread only
        self._delivered = self._delivered_bytes = 0  # written by the lane only
        self._paused = False
        self._max_count = bridge.config.max_queue  # read per message: kept at hand
        self._max_bytes = bridge.config.max_queue_bytes
        # Threads sending on this connection wait here for its output to drain.
        self.gate = OutputGate(bridge.config.write_high_water)

    # -- WebSocketApplication ------------------------------------------------------------

    def opened(self, conn: WebSocketConnection) -> None:
        self.conn = conn
        self.request.headers.compact()  # kept as long as the connection lives
        self.handle = WebSocket(self.bridge.handoff, conn, self.request, self.subprotocol,
                                self.gate)
        self.bridge.hub.add(conn, self.handle)
        if self.route.on_connect is not None:
            self.lane.submit(self._call, self.route.on_connect, self.handle)

    def message(self, data: Union[str, bytes]) -> None:
        on_message = self.route.on_message
        if on_message is None:
            return
        if self.lane is INLINE:
            # On the reactor's own lane the message is delivered as it comes: no
            # backlog can build up to count or pause for.
            try:
                on_message(self.handle, data)
            except ConnectionClosed:
                pass  # as in _deliver
            except Exception:
                self._failed()
            return
        size = len(data)
        self._queued += 1
        self._queued_bytes += size
        self.lane.submit(self._deliver, on_message, data, size)
        self._check_backlog()

    def _check_backlog(self) -> None:
        """After queueing a message (reactor): pause the input if it is too far behind."""
        if not self._paused and (self._queued - self._delivered >= self._max_count
                                 or self._queued_bytes - self._delivered_bytes
                                 >= self._max_bytes):
            self._paused = True
            # The consumer may have emptied the backlog before it could see the
            # flag: look again now that the flag is set.
            if self._drained():
                self._paused = False
            else:
                self.conn.pause_input()

    def closed(self, code: int, reason: str) -> None:
        self.bridge.hub.remove(self.conn)
        handle = self.handle
        handle.close_code, handle.close_reason = code, reason
        self.gate.close(partial(ConnectionClosed, code, reason))
        if self.route.on_close is not None:
            self.lane.submit(self._call, self.route.on_close, handle, code, reason)

    def after_pending(self, fn: Callable[[], None]) -> None:
        self.lane.submit(self.bridge.handoff.call, 0, fn)

    def pause_writing(self) -> None:
        self.gate.pause()

    def resume_writing(self) -> None:
        self.gate.resume()
        on_drain = self.route.on_drain
        if on_drain is not None and not self.handle.closed:
            self.lane.submit(self._call, on_drain, self.handle)

    # -- the backlog ---------------------------------------------------------------------

    def _drained(self) -> bool:
        return (self._queued - self._delivered <= self._max_count // 4
                and self._queued_bytes - self._delivered_bytes <= self._max_bytes // 4)

    def _deliver(self, on_message: Callable[..., Any], data: Union[str, bytes],
                 size: int) -> None:
        """The lane runs the handler for one queued message (as ``_call`` would:
        this runs per message, so without the extra call)."""
        try:
            on_message(self.handle, data)
        except ConnectionClosed:
            pass  # a send found the connection closed under the handler: not a bug
        except Exception:
            self._failed()
        self._delivered_bytes += size
        self._delivered += 1
        if self._paused and self._drained():
            self.bridge.handoff.call(0, self._resume)

    def _taken(self, size: int) -> None:
        """The consumer took one message of ``size`` (consumer side only)."""
        self._delivered_bytes += size
        self._delivered += 1
        if self._paused and self._drained():
            self.bridge.handoff.call(0, self._resume)

    def _resume(self) -> None:
        if self._paused and self._drained():
            self._paused = False
            self.conn.resume_input()

    def _call(self, callback: Callable[..., Any], *args: Any) -> None:
        try:
            callback(*args)
        except ConnectionClosed:
            pass  # as in _deliver
        except Exception:
            self._failed()

    def _failed(self) -> None:
        """A callback raised (in its except block): log it and close with 1011."""
        log.exception("error in WebSocket handler for %s", self.request.path)
        if not self.handle.closed:
            self.handle.close(CloseCode.INTERNAL_ERROR, "internal error")


class BlockingWebSocketBridge(WebSocketBridge):
    """A blocking-style route's connection: ``handler(ws)`` runs on a thread of
    its own (a place in ``HttpBridge.own_threads``, reserved at the handshake)
    as long as the connection lives, and reads messages from an inbox.

    The reactor appends to the inbox and the handler's thread takes from it;
    the backlog between them is bounded exactly as a lane's (``max_queue``,
    ``max_queue_bytes``: the peer is no longer read until the handler has
    taken it down to a quarter).  When the handler returns the connection is
    closed with 1000 (1011 if it raised), unless it was closed already.
    """

    __slots__ = ("_closed", "_cond", "_done", "_inbox")

    def __init__(self, bridge: HttpBridge, route: WebSocketRoute, request: Request,
                 subprotocol: Optional[str]) -> None:
        super().__init__(bridge, route, request, subprotocol, INLINE)
        self._inbox: Deque[Union[str, bytes]] = collections.deque()
        self._cond = threading.Condition(threading.Lock())
        self._closed: Optional[ConnectionClosed] = None  # set once the connection is gone
        self._done = False  # the handler returned: nobody takes messages any more

    # -- WebSocketApplication (reactor thread) -----------------------------------------

    def opened(self, conn: WebSocketConnection) -> None:
        self.conn = conn
        self.request.headers.compact()
        handle = self.handle = BlockingWebSocket(self.bridge.handoff, conn, self.request,
                                                 self.subprotocol, self.gate, self)
        self.bridge.hub.add(conn, handle)
        try:
            self.bridge.own_threads.start(self._run, handle)
        except RuntimeError:
            log.error("no thread for the WebSocket handler of %s", self.request.path)
            with self._cond:
                self._done = True
            conn.close(CloseCode.TRY_AGAIN_LATER, "no thread for the handler")

    def message(self, data: Union[str, bytes]) -> None:
        size = len(data)
        with self._cond:
            if self._done:
                return
            self._inbox.append(data)
            self._cond.notify()
        self._queued += 1
        self._queued_bytes += size
        self._check_backlog()

    def closed(self, code: int, reason: str) -> None:
        self.bridge.hub.remove(self.conn)
        handle = self.handle
        handle.close_code, handle.close_reason = code, reason
        self.gate.close(partial(ConnectionClosed, code, reason))
        with self._cond:
            self._closed = ConnectionClosed(code, reason)
            self._cond.notify_all()

    # -- the handler's thread ------------------------------------------------------------

    def receive(self, timeout: Optional[float]) -> Union[str, bytes, None]:
        with self._cond:
            if not self._inbox and self._closed is None:
                if timeout is None:
                    while not self._inbox and self._closed is None:
                        self._cond.wait()
                else:
                    deadline = time.monotonic() + timeout
                    while not self._inbox and self._closed is None:
                        left = deadline - time.monotonic()
                        if left <= 0:
                            break
                        self._cond.wait(left)
            if not self._inbox:
                if self._closed is not None:
                    raise ConnectionClosed(self._closed.code, self._closed.reason)
                return None
            data = self._inbox.popleft()
        self._taken(len(data))
        return data

    def _run(self, handle: BlockingWebSocket) -> None:
        handler = self.route.handler
        assert handler is not None
        try:
            handler(handle)
        except ConnectionClosed:
            pass  # the connection ended under the handler: nothing left to do
        except Exception:
            self._failed()
        finally:
            with self._cond:
                self._done = True
                self._inbox.clear()
            handle.close()  # 1000, unless the handler or the peer closed it already
