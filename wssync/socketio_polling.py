"""An engine.io socket's outbox, and long-polling requests that wait without a thread.

:class:`Outbox` is the queue engine.io keeps a socket's packets in (its driver's
``queue``).  Until the socket's transport is a WebSocket, long-polling GETs take
the packets; after :meth:`Outbox.bind` every packet goes straight out on the
WebSocket.  :class:`LongPolls` answers a session's polling GET on the reactor:
at once when packets wait, else it parks the request (a
:class:`~wssync.app.Later`) in the outbox, and the next packet put there (an
emit from any thread, the reactor's ping) answers it.  So a client that only
polls holds no thread between its requests or while one waits, where
engine.io's own poll blocks a thread for up to a ping interval.  Everything
else of the session (its POSTs, the first GET, an upgrade, refusals) goes to
engine.io as usual.  This module owns no socket and starts no thread.
"""

from __future__ import annotations

import queue
import threading
import time
from functools import partial
from typing import TYPE_CHECKING, Any, Callable, List, Optional
from urllib.parse import parse_qs

from engineio.packet import NOOP, Packet

from .app import HttpRoute, Later
from .errors import ConnectionClosed
from .http.response import Response
from .http.wsgi import request_environ

if TYPE_CHECKING:
    from .http.request import Request
    from .websocket.handle import WebSocket

Answer = Callable[[List[Any]], None]  # a parked poll, given the packets it returns
BUSY: List[Any] = []  # (a marker: the session has a poll parked already)


class Outbox(queue.Queue):  # type: ignore[type-arg]
    """An engine.io socket's queue of packets: long-polling requests take them,
    and once the socket's transport is a WebSocket, :meth:`bind` sends what is
    queued there and every later packet goes straight out on it.  ``None`` is
    engine.io's end of the socket: the WebSocket closes."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._ws: Optional[WebSocket] = None
        self._order = threading.Lock()  # keeps the queued packets before later ones
        self._parked: Optional[Answer] = None  # a poll waiting for the next packet
        self._far_behind: Optional[int] = None

    def bind(self, ws: WebSocket, far_behind: Optional[int] = None) -> None:
        """Send on ``ws`` from now on; a thread's send waits while the client has
        ``far_behind`` bytes or more unsent (None: never waits)."""
        with self._order:
            with self.mutex:
                pending = list(self.queue)
                self.queue.clear()
                self.unfinished_tasks = 0
                self.all_tasks_done.notify_all()
                self._ws = ws
                self._far_behind = far_behind
            for item in pending:
                self._send(ws, item)

    def put(self, item: Any, block: bool = True, timeout: Optional[float] = None) -> None:
        ws = self._queued(item)
        if ws is not None:
            with self._order:
                self._send(ws, item)

    def put_at_once(self, item: Any) -> None:
        """``put`` for the reactor: never behind ``_order`` (held by a thread that
        hands packets over).  A ping may pass packets being sent."""
        ws = self._queued(item)
        if ws is not None:
            self._send(ws, item)

    def _queued(self, item: Any) -> Optional[WebSocket]:
        """Queue ``item`` for the polls while there is no WebSocket (None), else
        the WebSocket to send it on.  The check and the append under one lock:
        a bind() between them would leave the packet in a queue nobody reads."""
        with self.mutex:
            ws = self._ws
            if ws is None:
                self._put(item)  # (unbounded: never waits)
                self.unfinished_tasks += 1
                self.not_empty.notify()
        if ws is None:
            self._wake()
        return ws

    def join(self) -> None:
        if self._ws is None:
            super().join()

    # -- long-polling ------------------------------------------------------------------

    def take_or_park(self, answer: Answer) -> Optional[List[Any]]:
        """What a poll returns now (as engine.io's ``Socket.poll``, without its
        wait), or None once ``answer`` is parked for the next packet; ``BUSY``
        when another poll is parked already."""
        with self.mutex:
            packets = self._take()
            if packets is None:
                if self._parked is not None:
                    return BUSY
                self._parked = answer
            return packets

    def unpark(self, answer: Answer) -> bool:
        """Take ``answer`` back if it is still waiting (True), as its time is up."""
        with self.mutex:
            if self._parked is not answer:
                return False
            self._parked = None
            return True

    def _wake(self) -> None:
        with self.mutex:
            answer = self._parked
            if answer is None:
                return
            packets = self._take()
            if packets is None:
                return
            self._parked = None
        answer(packets)

    def _take(self) -> Optional[List[Any]]:
        """The packets up to the end marker (under the mutex); [] for the end
        itself (engine.io's "closed"), which stays for the next poll."""
        waiting = self.queue
        if not waiting:
            return None
        packets: List[Any] = []
        if waiting[0] is None:
            waiting.popleft()
            taken = 1
        else:
            while waiting and waiting[0] is not None:
                packets.append(waiting.popleft())
            taken = len(packets)
        self.unfinished_tasks -= taken
        if self.unfinished_tasks <= 0:
            self.unfinished_tasks = 0
            self.all_tasks_done.notify_all()
        return packets


    def _send(self, ws: WebSocket, item: Any) -> None:
        """One packet out.  engine.io's emit only queues, so a client a little
        behind does not hold the emitting thread (one slow reader would hold a
        broadcast loop); a client ``far_behind`` makes it wait, as a blocking
        socket would, so a client that reads is never dropped for it.  One that
        takes nothing is dropped after send_timeout, and the wait ends."""
        try:
            if item is None:
                ws._close_unpaced()
            elif self._far_behind is not None and ws.buffered_amount >= self._far_behind:
                ws.send(item.encode())  # (on the reactor: at once)
            else:
                ws._send_unpaced(item.encode())
        except ConnectionClosed:
            pass  # the socket ends as the close reaches the transport


def origin_allowed(engine: Any, request: Request) -> bool:
    """engine.io's own rule (``cors_allowed_origins``) for the request's
    ``Origin``; a request without one is not checked, as in engine.io."""
    origin = request.headers.get("origin")
    if origin is None or engine.cors_allowed_origins == []:
        return True
    allowed = engine._cors_allowed_origins(request_environ(request))
    return allowed is None or origin in allowed


def forget(engine: Any, socket: Any) -> None:
    """Drop a closed engine.io socket from its server's sessions (if still there)."""
    if engine.sockets.get(socket.sid) is socket:
        del engine.sockets[socket.sid]


class LongPolls:
    """The polling GETs of one engine.io server on ``path``, answered without a
    waiting thread.  ``call_later(delay, fn, *args)`` runs ``fn`` on the reactor."""

    def __init__(self, engine: Any, path: str,
                 call_later: Callable[..., None]) -> None:
        self.engine = engine
        self.path = path
        self.call_later = call_later
        self.route = HttpRoute(self.poll)  # (not blocking: it never waits)

    def match(self, request: Request) -> Optional[HttpRoute]:
        """This route for a plain poll of a session that polls; None for anything
        engine.io must see (a new session, an upgrade, JSONP, a refusal)."""
        if request.method != "GET" or request.path != self.path:
            return None
        socket = self._socket(request)
        if socket is None or "upgrade" in request.headers:
            return None
        if not origin_allowed(self.engine, request):
            return None  # engine.io refuses it, in its words
        return self.route

    def _socket(self, request: Request) -> Any:
        query = parse_qs(request.query_string)
        sid = query.get("sid")
        if sid is None or query.get("transport") != ["polling"] or "j" in query:
            return None
        socket = self.engine.sockets.get(sid[0])
        if socket is None or not socket.connected or socket.upgrading or socket.upgraded \
                or socket.closed or not isinstance(socket.queue, Outbox):
            return None
        return socket

    def poll(self, request: Request) -> Any:
        socket = self._socket(request)
        if socket is None:  # (changed since it was matched)
            sid = parse_qs(request.query_string).get("sid", [""])[0]
            now = self.engine.sockets.get(sid)
            if now is not None and now.upgrading and not now.upgraded:
                # A WebSocket probes meanwhile: engine.io answers such a poll at once.
                return self._response(request, now, [Packet(NOOP)])
            return self._bad_request()
        later = Later()
        answer = partial(self._answer, later, request, socket)
        packets = socket.queue.take_or_park(answer)
        if packets is BUSY:
            return self._bad_request()
        if packets is not None:
            return self._response(request, socket, packets)
        engine = self.engine
        wait = engine.ping_interval + engine.ping_timeout
        # One timer per session at a time, however often its polls park and
        # are answered: it looks at the latest poll's deadline when it fires.
        socket._wssync_poll = (answer, later, time.monotonic() + wait)
        if not getattr(socket, "_wssync_timer", False):
            socket._wssync_timer = True
            self.call_later(wait, self._expired, socket)
        return later

    def _answer(self, later: Later, request: Request, socket: Any, packets: List[Any]) -> None:
        later.answer(self._response(request, socket, packets))

    def _response(self, request: Request, socket: Any, packets: List[Any]) -> Response:
        """engine.io's own answer to a poll that returns ``packets``."""
        engine = self.engine
        environ = request_environ(request)
        answer = engine._ok(packets)
        body = answer["response"]
        headers = list(answer["headers"])
        if engine.http_compression and len(body) >= engine.compression_threshold:
            accepted = [e.split(";")[0].strip()
                        for e in (request.headers.get("accept-encoding") or "").split(",")]
            for encoding in accepted:
                if encoding in engine.compression_methods:
                    body = getattr(engine, "_" + encoding)(body)
                    headers.append(("Content-Encoding", encoding))
                    break
        if socket.closed:
            forget(engine, socket)
        return Response(body, int(answer["status"].split()[0]),
                        headers + engine._cors_headers(environ))

    def _expired(self, socket: Any) -> None:
        """On the reactor: nothing came for a whole ping cycle (not even a ping):
        the client is gone, as engine.io decides it, and the poll gets 400."""
        answer, later, deadline = socket._wssync_poll
        left = deadline - time.monotonic()
        if left > 0:  # a later poll parked since
            self.call_later(left, self._expired, socket)
            return
        socket._wssync_timer = False
        if socket.queue.unpark(answer):
            later.answer(self._bad_request())
            # (disconnect handlers are the application's code: not on the reactor)
            threading.Thread(target=self._close, args=(socket,),
                             name="wssync-socketio-close", daemon=True).start()

    def _close(self, socket: Any) -> None:
        engine = self.engine
        socket.close(wait=False, reason=engine.reason.TRANSPORT_ERROR)
        forget(engine, socket)

    def _bad_request(self) -> Response:
        answer = self.engine._bad_request()
        return Response(answer["response"], 400, answer["headers"])
