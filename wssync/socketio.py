"""Socket.IO and engine.io applications, unchanged, with their WebSocket transport on the reactor.

A Flask-SocketIO app (``SocketIO(app)``, threading mode) or a python-socketio
``WSGIApp`` served by wssync keeps its engine.io server for what it decides:
sessions, long-polling, origins, protocol versions, events.  :func:`attach`
takes over what engine.io's threading driver runs on threads of its own:

- the WebSocket transport: wssync answers the handshake on the engine.io path;
  the reactor reads the connection and hands its packets, in order, to the
  engine.io socket on a worker thread.  No thread waits on an idle client.
- the output: the socket's queue (:mod:`wssync.socketio_polling`) sends on the
  WebSocket once the transport is WebSocket, and a thread's send waits for a
  slow peer there as any wssync send does; a long-polling request waits for
  its packets without a thread.
- pings: timers on the reactor, not a sleeping thread per client and cycle.
- Socket.IO's event handlers: tasks on the same worker threads (at most
  :data:`EVENTS_PER_CLIENT` queued or running per client), not a thread per event.

Background tasks the application starts (``start_background_task``) still get a
thread each, as they may run forever.  This module owns no socket and no thread:
the bridge runs its callbacks and the server its timers.  It imports engine.io,
so the app layer imports it only when the application's process already has.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from importlib import metadata
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Dict,
    Iterator,
    List,
    Optional,
    Set,
    Tuple,
    Union,
)
from urllib.parse import parse_qs

import engineio
from engineio import packet as eio_packet
from engineio.socket import Socket as EioSocket

from .app import WebSocketRoute
from .errors import ConnectionClosed, UnsupportedLibrary
from .http.request import Request
from .http.wsgi import request_environ
from .io.lanes import Lane, current_pool
from .scale.handover import process_token
from .socketio_polling import LongPolls, Outbox, forget, origin_allowed
from .websocket.frames import CloseCode

if TYPE_CHECKING:
    from .app import App
    from .websocket.handle import WebSocket

__all__ = ["EVENTS_PER_CLIENT", "SUPPORTED", "attach", "wsgi_app_of"]

log = logging.getLogger("wssync.socketio")

# The releases this adapter is tested with (the ``socketio`` extra pins them).
SUPPORTED = {"python-engineio": ((4, 11), (5, 0)), "python-socketio": ((5, 12), (6, 0))}
# Socket.IO events of one client queued or running at once; past it the client's
# next message waits, and behind it the reactor stops reading that client.
EVENTS_PER_CLIENT = 64
ENVIRON_KEY = "wssync.engineio_transport"  # the handshake's transport, for the driver

_SEND_PING = EioSocket._send_ping
_WEBSOCKET_HANDLER = EioSocket._websocket_handler


def _check_versions() -> None:
    for name, (low, high) in SUPPORTED.items():
        try:
            version = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue  # python-socketio is optional: a bare engine.io app works
        numbers = tuple(int(part) for part in version.split(".")[:2] if part.isdigit())
        if not low <= numbers < high:
            raise UnsupportedLibrary(
                f"{name} {version} is not supported: wssync serves {name} "
                f"{'.'.join(map(str, low))} up to (not including) "
                f"{'.'.join(map(str, high))}; pip install 'wssync[socketio]'")


def _handle_event_function() -> Optional[Callable[..., Any]]:
    try:
        from socketio import Server
    except ImportError:
        return None
    return getattr(Server, "_handle_event_internal", None)


def wsgi_app_of(obj: Any) -> Optional[Any]:
    """The WSGI application behind a Socket.IO object named as the app: a
    Flask-SocketIO ``SocketIO`` (its Flask app) or a bare ``socketio.Server``
    (wrapped as ``socketio.WSGIApp`` would); None for anything else."""
    module = type(obj).__module__ or ""
    if module.startswith("flask_socketio"):
        # SocketIO(app) keeps the app only in the middleware it puts on it.
        app = getattr(getattr(obj, "sockio_mw", None), "flask_app", None)
        if app is None:
            raise UnsupportedLibrary(
                "this SocketIO object has no Flask app (SocketIO() with init_app later): "
                "name the Flask app instead, as MODULE:app")
        return app
    if module.startswith(("socketio", "engineio")) and hasattr(obj, "handle_request"):
        return engineio.WSGIApp(obj, engineio_path=_server_path(obj))
    return None


def _server_path(server: Any) -> str:
    return "socket.io" if hasattr(server, "eio") else "engine.io"


def _engineio_apps(wsgi_app: Any) -> Iterator[engineio.WSGIApp]:
    """The engine.io middlewares along ``wsgi_app``'s chain of wrapped apps
    (Flask's ``wsgi_app``, a middleware's ``app``)."""
    seen: Set[int] = set()
    obj = wsgi_app
    while obj is not None and id(obj) not in seen and len(seen) < 32:
        seen.add(id(obj))
        if isinstance(obj, engineio.WSGIApp):
            yield obj
            obj = obj.wsgi_app
            continue
        attributes = getattr(obj, "__dict__", {})
        wrapped = attributes.get("wsgi_app")
        obj = wrapped if wrapped is not None else attributes.get("app")


def attach(app: App, wsgi_app: Any) -> int:
    """Serve the engine.io servers in ``wsgi_app`` with wssync's transport: a
    WebSocket route on each one's path; how many were found."""
    count = 0
    for middleware in _engineio_apps(wsgi_app):
        if count == 0:
            _check_versions()
        server = middleware.engineio_app
        engine = getattr(server, "eio", server)
        if getattr(engine, "_wssync_app", None) is not app:  # once per app
            engine._wssync_app = app
            _EngineServer(app, wsgi_app, engine, middleware.engineio_path)
        # Socket.IO's message-queue managers check the mode its server was made with (a
        # gevent one, picked where gevent is installed, refuses an unpatched socket module).
        server.async_mode = engine.async_mode
        count += 1
    return count


class _EngineServer:
    """One engine.io server as wssync serves it: its driver table and its route."""

    def __init__(self, app: App, wsgi_app: Any, engine: Any, path: str) -> None:
        self.app = app
        self.wsgi_app = wsgi_app
        self.engine = engine
        log.info("Socket.IO on %s: WebSockets on the reactor, events on worker threads%s",
                 path, "" if engine.async_mode == "threading" else
                 f" (engine.io's async_mode {engine.async_mode!r} is not used)")
        engine.async_mode = "threading"
        # Every engine.io server of a driver shares the driver module's table: this
        # server gets a table of its own.
        engine._async = {
            "thread": self._task,
            "queue": Outbox,
            "queue_empty": queue.Empty,
            "event": threading.Event,
            "websocket": _WebSocketDriver,
            "sleep": time.sleep,
        }
        # A session id names the worker that made it, so that with --workers its
        # requests can be passed there (wssync.sticky).
        if "generate_id" not in engine.__dict__:  # (not wrapped for an earlier App)
            make_id = engine.generate_id
            engine.generate_id = lambda: f"{process_token()}.{make_id()}"
        app._declare_sessions(self.owner_of)
        self.path = path
        # Which pages may open the WebSocket is engine.io's decision (its
        # cors_allowed_origins, asked in match_websocket): the routes only carry it.
        self.route = WebSocketRoute(path, self.message, self.connect, self.closed, (), "*",
                                    pooled=True)
        self.refused = WebSocketRoute(path, None, None, None, (), frozenset(), pooled=True)
        app._declare_websockets(self)
        app._declare_http(LongPolls(engine, path, self.call_later).match)

    def match_websocket(self, request: Request) -> Optional[WebSocketRoute]:
        if request.path != self.path:
            return None
        return self.route if origin_allowed(self.engine, request) else self.refused

    def owner_of(self, request: Request) -> Optional[str]:
        """The worker named in the request's session id (``sid=<worker>.<id>``)."""
        if request.path != self.path:
            return None
        sid = parse_qs(request.query_string).get("sid")
        if sid is None:
            return None
        owner, dot, _ = sid[0].partition(".")
        return owner if dot and owner.isalnum() else None

    # -- the route's callbacks, on the connection's lane -------------------------------

    def connect(self, ws: WebSocket) -> None:
        """The handshake was answered: engine.io handles it as its own request
        (a new session, or the upgrade of a polling one), and its driver binds
        the socket to this transport."""
        transport = _Transport(self, ws)
        ws.data[ENVIRON_KEY] = transport
        environ = request_environ(ws.request)
        environ[ENVIRON_KEY] = transport
        answer: List[str] = []

        def start_response(status: str, headers: Any, exc_info: Any = None) -> None:
            answer.append(status)

        # Through the application's own middlewares, as any request of it.
        body = self.wsgi_app(environ, start_response)
        if transport.socket is None:
            text = b"".join(body).decode("utf-8", "replace") if isinstance(body, list) else ""
            reason = (text or (answer[0] if answer else "refused")).strip()[:120]
            ws.close(CloseCode.POLICY_VIOLATION, reason)

    def message(self, ws: WebSocket, data: Union[str, bytes]) -> None:
        transport: Optional[_Transport] = ws.data.get(ENVIRON_KEY)
        if transport is not None:
            transport.received(data)

    def closed(self, ws: WebSocket, code: int, reason: str) -> None:
        transport: Optional[_Transport] = ws.data.get(ENVIRON_KEY)
        if transport is not None:
            transport.lost()

    # -- engine.io's "thread" ------------------------------------------------------------

    def _task(self, target: Callable[..., Any], args: Tuple[Any, ...] = (),
              kwargs: Optional[Dict[str, Any]] = None, **_: Any) -> _Task:
        return _Task(self, target, args, kwargs or {})

    def far_behind(self) -> Optional[int]:
        """Unsent bytes past which a thread's emit to a client waits: half the
        soft limit of a peer's output, so that a client that reads, however
        slowly, never reaches it (only one that takes nothing for send_timeout
        is dropped)."""
        server = self.app.server
        return server.config.max_write_buffer // 2 if server is not None else None

    def call_later(self, delay: float, fn: Callable[..., None], *args: Any) -> None:
        server = self.app.server
        if server is None:
            raise RuntimeError("no server serves this app")
        server._call_later(delay, fn, *args)


class _Task:
    """What engine.io's ``start_background_task`` returns: a ping becomes a reactor
    timer, a Socket.IO event a task on the worker threads, anything else (the
    application's own background tasks) a daemon thread."""

    def __init__(self, owner: _EngineServer, target: Callable[..., Any], args: Tuple[Any, ...],
                 kwargs: Dict[str, Any]) -> None:
        self.owner = owner
        self.target = target
        self.args = args
        self.kwargs = kwargs
        self._thread: Optional[threading.Thread] = None
        self._done: Optional[threading.Event] = None

    def start(self) -> None:
        function = getattr(self.target, "__func__", None)
        if function is _SEND_PING:
            socket = self.target.__self__  # type: ignore[attr-defined]
            self.owner.call_later(self.owner.engine.ping_interval, _ping, socket)
            return
        pool = current_pool()
        if pool is not None and function is not None and function is _HANDLE_EVENT:
            # _handle_event_internal(server, sid, eio_sid, data, namespace, id)
            slots = _event_slots(self.owner.engine, self.args[2])
            self._done = threading.Event()
            if slots.acquire(blocking=False):
                Lane(pool).submit(self._run_event, slots)
                return
            # The client has its bound of events queued or running: this one runs
            # here and now, on the thread that read it (the client's lane, or its
            # POST), which holds that client's input meanwhile.  Waiting for a
            # slot instead could deadlock: the events that would free it may be
            # queued behind this very thread on the same pool.
            self._run_event(None)
            return
        self._thread = threading.Thread(target=self.target, args=self.args, kwargs=self.kwargs,
                                        name="wssync-socketio-task", daemon=True)
        self._thread.start()

    def _run_event(self, slots: Optional[threading.BoundedSemaphore]) -> None:
        try:
            self.target(*self.args, **self.kwargs)
        finally:
            if slots is not None:
                slots.release()
            assert self._done is not None
            self._done.set()

    def join(self, timeout: Optional[float] = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)
        elif self._done is not None:
            self._done.wait(timeout)

    def is_alive(self) -> bool:
        if self._thread is not None:
            return self._thread.is_alive()
        return self._done is not None and not self._done.is_set()


_HANDLE_EVENT = _handle_event_function()
_slots_lock = threading.Lock()


def _event_slots(engine: Any, eio_sid: str) -> threading.BoundedSemaphore:
    socket = engine.sockets.get(eio_sid)
    holder = socket.__dict__ if socket is not None else {}
    slots: Optional[threading.BoundedSemaphore] = holder.get("_wssync_events")
    if slots is None:
        with _slots_lock:
            slots = holder.get("_wssync_events")
            if slots is None:
                slots = holder["_wssync_events"] = threading.BoundedSemaphore(EVENTS_PER_CLIENT)
    return slots


def _ping(socket: Any) -> None:
    """On the reactor, a ping interval after the last pong: engine.io's ping
    (a send that cannot wait here; the service task finds clients that never answer)."""
    if not socket.closing and not socket.closed:
        socket.last_ping = time.time()
        socket.queue.put_at_once(eio_packet.Packet(eio_packet.PING))


# The transport's states: a polling session's upgrade is two messages long.
_PROBE, _UPGRADE, _OPEN, _DONE = range(4)


class _Transport:
    """One engine.io WebSocket transport: the packets of one connection, in order."""

    def __init__(self, owner: _EngineServer, ws: WebSocket) -> None:
        self.owner = owner
        self.ws = ws
        self.socket: Optional[Any] = None
        self.state = _OPEN

    def bind(self, socket: Any) -> None:
        """engine.io chose this transport for ``socket`` (its driver, below)."""
        self.socket = socket
        if socket.connected:  # a polling session: the client probes first
            socket.upgrading = True  # engine.io holds polling output meanwhile
            self.state = _PROBE
        else:
            socket.connected = socket.upgraded = True
            socket.queue.bind(self.ws, self.owner.far_behind())

    def received(self, data: Union[str, bytes]) -> None:
        socket = self.socket
        if socket is None or self.state == _DONE:
            return
        engine = self.owner.engine
        if len(data) > engine.max_http_buffer_size:
            self._fail(CloseCode.MESSAGE_TOO_BIG, "packet is too large")
            return
        if self.state == _PROBE:
            if data != "2probe":
                self._fail(CloseCode.POLICY_VIOLATION, "expected the upgrade probe")
                return
            self.ws.send("3probe")
            socket.queue.put(eio_packet.Packet(eio_packet.NOOP))  # ends the pending poll
            self.state = _UPGRADE
            return
        if self.state == _UPGRADE:
            if data != "5":
                self._fail(CloseCode.POLICY_VIOLATION, "expected the upgrade packet")
                return
            socket.upgraded = True
            socket.upgrading = False
            socket.queue.bind(self.ws, self.owner.far_behind())
            self.state = _OPEN
            return
        try:
            socket.receive(eio_packet.Packet(encoded_packet=data))
        except engineio.exceptions.UnknownPacketError:
            pass  # as engine.io's own transport: ignored
        except engineio.exceptions.SocketIsClosedError:
            self._fail(CloseCode.NORMAL_CLOSURE, "")
        except Exception:
            log.exception("engine.io packet handler error")
            self._fail(CloseCode.INTERNAL_ERROR, "")

    def _fail(self, code: int, reason: str) -> None:
        socket = self.socket
        if socket is not None and self.state in (_PROBE, _UPGRADE):
            socket.upgrading = False  # the session goes on polling
            self.socket = None
        self.state = _DONE
        try:
            self.ws.close(code, reason)
        except ConnectionClosed:
            pass

    def lost(self) -> None:
        """The WebSocket is closed: so is a session that had moved onto it."""
        socket = self.socket
        state, self.state = self.state, _DONE
        if socket is None:
            return
        if state in (_PROBE, _UPGRADE):
            socket.upgrading = False  # the upgrade failed: the session goes on polling
            return
        engine = self.owner.engine
        socket.close(wait=False, abort=True, reason=engine.reason.TRANSPORT_CLOSE)
        forget(engine, socket)


class _WebSocketDriver:
    """engine.io's ``websocket`` driver entry: called with the engine.io socket's
    handler when engine.io accepts a WebSocket request, it binds that socket to
    the transport wssync already opened for the request, and returns at once."""

    def __init__(self, handler: Callable[..., Any], server: Any, **_: Any) -> None:
        self.handler = handler

    def __call__(self, environ: Dict[str, Any], start_response: Any) -> List[bytes]:
        transport: Optional[_Transport] = environ.get(ENVIRON_KEY)
        socket = getattr(self.handler, "__self__", None)
        if transport is None or getattr(self.handler, "__func__", None) is not _WEBSOCKET_HANDLER:
            # Not a handshake wssync answered (a WSGI request with Upgrade headers
            # reached engine.io over plain HTTP): no WebSocket to speak on.
            start_response("400 BAD REQUEST", [("Content-Type", "text/plain")])
            return [b"WebSocket handshakes are answered by wssync on this path"]
        transport.bind(socket)
        return []
