"""``SocketIOUser``: Locust users that speak Socket.IO, with real response times.

``self.connect_socketio(namespace="/", auth=None)`` opens a Socket.IO v5 connection
over engine.io v4's WebSocket transport (no long-polling) to the user's ``host``
and returns a :class:`LocustSocketIO`: ``emit``, ``call`` (emit with an ack, timed
from the emit to the ack), ``on`` (handlers for the server's events) and
``receive_event`` (wait for one).  Rows are of type ``"WS"``, as those of
:mod:`wssync.locust`, on whose connections this is built: the connect row times
the WebSocket handshake, engine.io's open packet and the namespace connects, and
a refused connect is a failure row with the server's message.  A failure ends
the task (:class:`wssync.locust.WebSocketFailure`), and the next operation
connects again.

An idle user costs what a :mod:`wssync.locust` user costs: while it waits
between tasks its own greenlet reads its connections, answers engine.io's pings
("2" with "3") and runs the ``on`` handlers.  Packets are encoded and decoded by
:mod:`wssync.socketio_protocol`; binary attachments are refused.

This module imports Locust; ``import wssync`` never imports it.  It owns no
thread and runs no server.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any, Callable, Deque, Dict, List, Optional, Sequence, Tuple

from locust import User

from .client import ClientConnection, ConnectionClosed
from .locust import BACKLOG, LocustWebSocket, WebSocketMixin
from .socketio_protocol import (
    PONG,
    QUERY,
    BinaryNotSupported,
    Decoder,
    Packet,
    ack_packet,
    connect_packet,
    disconnect_packet,
    event_packet,
    unpack_args,
)
from .websocket.frames import CloseCode

__all__ = ["BinaryNotSupported", "LocustSocketIO", "SocketIOMixin", "SocketIOUser"]

Handler = Callable[..., Any]
# An event nobody handles, kept for receive_event: namespace, event, arguments, size.
_Kept = Tuple[str, str, List[Any], int]


class _Transport(LocustWebSocket):
    """The WebSocket under one Socket.IO connection: the mixin reads it while
    the user waits, and hands every message to the Socket.IO side."""

    __slots__ = ("sio",)
    sio: LocustSocketIO

    def _greet(self, conn: ClientConnection) -> None:
        self.sio._greet(conn)

    def _push(self, message: Any) -> None:
        assert self._conn is not None
        packet = self.sio._decode(self._conn, message)
        if packet is not None:
            self.sio._handle(self._conn, packet)

    def close(self, code: int = 1000, reason: str = "") -> None:
        conn = self._conn
        if conn is not None and not conn.closed:
            try:
                for namespace in self.sio.namespaces:
                    conn.send(disconnect_packet(namespace))
            except ConnectionClosed:
                pass
        super().close(code, reason)


class LocustSocketIO:
    """One Socket.IO connection of a Locust user (``self.connect_socketio()``).

    Operations on a connection that is not open first connect again (a new
    connect row), to every namespace connected so far.
    """

    __slots__ = ("_backlog", "_decoder", "_handlers", "_last_id", "_transport", "dropped",
                 "namespaces", "sids")

    def __init__(self, user: WebSocketMixin, url: str, name: str,
                 headers: List[Tuple[str, str]], namespace: str, auth: Any) -> None:
        connect_packet(namespace, auth)  # a wrong auth fails here, not as a row per retry
        self.namespaces: Dict[str, Any] = {namespace: auth}  # connected on every (re)connect
        self.sids: Dict[str, Optional[str]] = {}  # of the namespaces, given by the server
        self.dropped = 0  # unhandled events dropped past BACKLOG
        self._handlers: Dict[Tuple[str, str], Handler] = {}
        self._backlog: Deque[_Kept] = deque()
        self._decoder = Decoder()
        self._last_id = 0
        self._transport = _Transport(user, url, name, headers, None)
        self._transport.sio = self

    @property
    def open(self) -> bool:
        return self._transport.open

    @property
    def sid(self) -> Optional[str]:
        """The Socket.IO session id of the first namespace (``request.sid`` on the server)."""
        return self.sids.get(next(iter(self.namespaces)))

    # -- what the user does ----------------------------------------------------------

    def emit(self, event: str, *args: Any, namespace: str = "/",
             name: Optional[str] = None) -> None:
        """Send ``event`` with ``args``.  With ``name``, a row timing the hand-over
        to the socket; a failure is always a row."""
        self._check(namespace)
        packet = event_packet(namespace, event, args)
        transport = self._transport
        conn = transport._ready()
        started = time.perf_counter()
        try:
            conn.send(packet)
        except ConnectionClosed as exc:
            transport._fail(name or event, started, exc)
        if name is not None:
            transport._fire(name, started, len(packet))

    def call(self, event: str, *args: Any, namespace: str = "/",
             timeout: Optional[float] = None, name: Optional[str] = None) -> Any:
        """Emit ``event`` asking for an ack and wait for it: a row ``name`` (default:
        the event) timing emit to ack.  Returns the ack's arguments as
        python-socketio's ``Client.call`` does (None, the value, or a tuple).  No
        ack within ``timeout`` (the user's ``ws_timeout``) or a close is a failure."""
        self._check(namespace)
        self._last_id += 1
        ack_id = self._last_id
        packet = event_packet(namespace, event, args, ack_id)
        transport = self._transport
        conn = transport._ready()
        row = name or event
        wait = transport._timeout(timeout)
        started = time.perf_counter()
        try:
            conn.send(packet)
            reply = self._until(conn, time.monotonic() + wait, lambda p: (
                p.id == ack_id and p.namespace == namespace and p.kind in ("ack", "binary")))
        except ConnectionClosed as exc:
            transport._fail(row, started, exc)
        except TimeoutError:
            transport._fail(row, started, TimeoutError(f"no ack for {event!r} within {wait:g} s"))
        if reply.kind == "binary":
            transport._fail(row, started, _binary(f"the ack for {event!r}"))
        transport._fire(row, started, reply.size)
        return unpack_args(reply.data if isinstance(reply.data, list) else [])

    def on(self, event: str, handler: Handler, namespace: str = "/") -> None:
        """Call ``handler(*args)`` for each ``event`` from the server (in the user's
        greenlet, while it waits or reads); if the server asked for an ack, what
        the handler returns is the ack (a tuple: several arguments)."""
        self._handlers[(namespace, event)] = handler

    def receive_event(self, event: str, namespace: str = "/", timeout: Optional[float] = None,
                      name: Optional[str] = None) -> Any:
        """The arguments of the next ``event`` not handled by an ``on`` handler
        (None, the value, or a tuple), kept or awaited.  With ``name``, a row
        timing the wait; none within ``timeout`` or a close is a failure."""
        self._check(namespace)
        transport = self._transport
        started = time.perf_counter()
        found = self._take(namespace, event)
        if found is None:
            conn = transport._ready()
            wait = transport._timeout(timeout)
            row = name or f"receive {event}"
            try:
                packet = self._until(conn, time.monotonic() + wait, lambda p: (
                    p.kind == "event" and p.namespace == namespace and
                    _event_of(p) == event and (namespace, event) not in self._handlers))
            except ConnectionClosed as exc:
                transport._fail(row, started, exc)
            except TimeoutError:
                transport._fail(row, started,
                                TimeoutError(f"no {event!r} event within {wait:g} s"))
            found = (packet.data[1:], packet.size)
        args, size = found
        if name is not None:
            transport._fire(name, started, size)
        return unpack_args(args)

    def connect_namespace(self, namespace: str, auth: Any = None,
                          name: Optional[str] = None) -> None:
        """Connect to one more namespace on this connection: a row ``name``
        (default ``"socket.io <namespace>"``); a refusal is a failure row."""
        connect_packet(namespace, auth)
        transport = self._transport
        conn = transport._ready()  # (connects every namespace known so far)
        if namespace in self.namespaces:
            return
        row = name or f"socket.io {namespace}"
        started = time.perf_counter()
        try:
            self._join(conn, namespace, auth, time.monotonic() + transport.user.ws_timeout)
        except (ConnectionClosed, ConnectionRefusedError, TimeoutError) as exc:
            transport._fail(row, started, exc)
        self.namespaces[namespace] = auth
        transport._fire(row, started, 0)

    def close(self) -> None:
        """Disconnect every namespace and close; no row.  The next operation
        connects again."""
        self._transport.close()

    def __enter__(self) -> LocustSocketIO:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    # -- the protocol ---------------------------------------------------------------

    def _check(self, namespace: str) -> None:
        if namespace not in self.namespaces:
            raise ValueError(f"namespace {namespace!r} is not connected: "
                             f"connect_namespace({namespace!r}) first")

    def _greet(self, conn: ClientConnection) -> None:
        """engine.io's open packet, then a connect to each namespace."""
        user = self._transport.user
        self._decoder = Decoder()
        self.sids.clear()
        deadline = time.monotonic() + user.ws_timeout
        try:
            try:
                self._until(conn, deadline, lambda p: p.kind == "open")
            except TimeoutError:
                raise TimeoutError(
                    f"no engine.io open packet within {user.ws_timeout:g} s") from None
            for namespace, auth in self.namespaces.items():
                self._join(conn, namespace, auth, deadline)
        except BaseException:
            conn.close(CloseCode.NORMAL_CLOSURE, "", timeout=user.ws_close_timeout)
            raise

    def _join(self, conn: ClientConnection, namespace: str, auth: Any, deadline: float) -> None:
        conn.send(connect_packet(namespace, auth))
        try:
            answer = self._until(conn, deadline, lambda p: (
                p.namespace == namespace and p.kind in ("connect", "connect_error")))
        except TimeoutError:
            raise TimeoutError(f"no answer to the connect to {namespace!r}") from None
        if answer.kind == "connect_error":
            data = answer.data
            reason = data.get("message") if isinstance(data, dict) else data
            raise ConnectionRefusedError(f"connect to {namespace!r} refused: {reason}")
        sid = answer.data.get("sid") if isinstance(answer.data, dict) else None
        self.sids[namespace] = sid

    def _until(self, conn: ClientConnection, deadline: float,
               wanted: Callable[[Packet], bool]) -> Packet:
        """Read until a packet ``wanted`` takes; the others are handled meanwhile."""
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no message within the timeout")
            packet = self._decode(conn, conn.recv(remaining))
            if packet is None:
                continue
            if wanted(packet):
                return packet
            self._handle(conn, packet)

    def _decode(self, conn: ClientConnection, message: Any) -> Optional[Packet]:
        try:
            return self._decoder.decode(message)
        except ValueError as exc:
            reason = f"not Socket.IO v5 over engine.io v4: {exc}"[:120]
            conn.close(CloseCode.PROTOCOL_ERROR, reason,
                       timeout=self._transport.user.ws_close_timeout)
            raise ConnectionClosed(CloseCode.PROTOCOL_ERROR, reason) from None

    def _handle(self, conn: ClientConnection, packet: Packet) -> None:
        """A packet nobody waits for: pings answered, events to their handlers or
        kept; a server's disconnect or close ends the connection."""
        kind = packet.kind
        if kind == "ping":
            conn.send(PONG)
        elif kind == "event":
            event = _event_of(packet)
            if event is None:
                return
            args = packet.data[1:]
            handler = self._handlers.get((packet.namespace, event))
            if handler is None:
                self._keep((packet.namespace, event, args, packet.size))
                return
            result = handler(*args)
            if packet.id is not None:
                answer = [] if result is None else \
                    list(result) if isinstance(result, tuple) else [result]
                conn.send(ack_packet(packet.namespace, packet.id, answer))
        elif kind == "binary":
            event = _event_of(packet)
            self._transport._fire(event or "binary", time.perf_counter(), 0,
                                  _binary(f"the {event!r} event" if event else "a packet"))
        elif (kind == "disconnect" and packet.namespace in self.namespaces) or kind == "close":
            reason = "engine.io closed the session" if kind == "close" else \
                f"the server disconnected {packet.namespace!r}"
            conn.close(CloseCode.NORMAL_CLOSURE, "", timeout=self._transport.user.ws_close_timeout)
            raise ConnectionClosed(CloseCode.NORMAL_CLOSURE, reason)
        # pong, noop, a late ack or connect: nothing to do

    def _keep(self, kept: _Kept) -> None:
        if len(self._backlog) >= BACKLOG:
            self._backlog.popleft()
            self.dropped += 1
        self._backlog.append(kept)

    def _take(self, namespace: str, event: str) -> Optional[Tuple[List[Any], int]]:
        for index, (space, name, args, size) in enumerate(self._backlog):
            if space == namespace and name == event:
                del self._backlog[index]
                return args, size
        return None


def _event_of(packet: Packet) -> Optional[str]:
    data = packet.data
    if isinstance(data, list) and data and isinstance(data[0], str):
        return data[0]
    return None


def _binary(what: str) -> BinaryNotSupported:
    return BinaryNotSupported(f"{what} has binary attachments, which "
                              "wssync.locust_socketio does not support")


class SocketIOMixin(WebSocketMixin):
    """Adds ``connect_socketio`` (and ``connect``) to a Locust user class; put it
    first: ``class Player(SocketIOMixin, HttpUser)``.  The handshake carries the
    HTTP session's cookies and default headers, as ``connect``'s does."""

    def connect_socketio(self, namespace: str = "/", auth: Optional[Dict[str, Any]] = None,
                         path: str = "/socket.io/", name: Optional[str] = None,
                         headers: Optional[Sequence[Tuple[str, str]]] = None) -> LocustSocketIO:
        """Connect to ``namespace`` (with ``auth``) at ``path`` on the user's host:
        a connect row ``name`` (default ``"socket.io <namespace>"``).  Never raises
        for a failed connect: that is a failure row, and the next operation tries
        again."""
        url = self._ws_url(path)
        url += ("&" if "?" in url else "?") + QUERY
        sio = LocustSocketIO(self, url, name or f"socket.io {namespace}", list(headers or ()),
                             namespace, auth)
        sio._transport._connect()
        return sio


class SocketIOUser(SocketIOMixin, User):
    """A Locust user whose tasks use Socket.IO (``self.connect_socketio()``)."""

    abstract = True
