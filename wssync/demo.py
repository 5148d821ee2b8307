"""The demo app served by ``python -m wssync`` when no ``--app`` is given.

It shows the point of the project: one listening port carries every
connection.  The page at ``/`` (``demo_page.html``) draws that port with a
line to each open connection, HTTP or WebSocket, from snapshots of
:meth:`Server.connections` that a background thread pushes over the page's own
WebSocket at ``/live``.  ``/ws`` echoes every message unchanged, ``/stats``
returns the connection list as JSON, ``/health`` answers ``ok`` and
``/favicon.ico`` is a small SVG icon.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from importlib.resources import files
from typing import TYPE_CHECKING, Any, Dict, FrozenSet, List, Optional, Tuple, Union

from .app import App
from .http.request import Request
from .http.response import Response
from .websocket.handle import WebSocket

if TYPE_CHECKING:
    from .app import ServerHandle

log = logging.getLogger("wssync.demo")

LIVE_PATH = "/live"
SAMPLE_INTERVAL = 0.25  # seconds between looks at the connection list
REFRESH_INTERVAL = 2.0  # push at least this often: bytes and ages move without any change
MIN_GAP = 0.05  # a burst of connects pokes the thread often; this caps its pace
MAX_SHOWN = 100  # connections per snapshot, so a busy server cannot make pushes huge

# A dot with three lines: the picture in small.  Served as /favicon.ico (the
# page itself links a data: URL, so it never asks).
FAVICON = ('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16">'
           '<path d="M8 8 1 2M8 8 1 14M8 8h7" stroke="#2563eb" stroke-width="2"/>'
           '<circle cx="8" cy="8" r="4" fill="#1e293b"/></svg>')

Key = Tuple[FrozenSet[Tuple[Any, ...]], int, int, int]


def count_protocols(connections: List[Dict[str, Any]]) -> Dict[str, int]:
    counts = {"http": 0, "websocket": 0}
    for conn in connections:
        counts[conn["protocol"]] = counts.get(conn["protocol"], 0) + 1
    return counts


def snapshot(server: ServerHandle) -> Tuple[Dict[str, Any], Key]:
    """What ``/live`` pushes, and a key that changes only when a connection
    comes, goes or changes protocol (not when its bytes or age move)."""
    connections = server.connections()
    counts = count_protocols(connections)
    total = len(connections)
    if total > MAX_SHOWN:
        # The youngest connections are where things happen.
        connections = sorted(connections, key=lambda c: c["age"])[:MAX_SHOWN]
    identity = frozenset((c["peer_addr"], c["peer_port"], c["protocol"], c.get("path"))
                         for c in connections)
    data = {
        "type": "snapshot",
        "listening": {"host": server.host, "port": server.port},
        "connections": connections,
        "total": total,
        **counts,
    }
    return data, (identity, total, counts["http"], counts["websocket"])


class LiveFeed:
    """Pushes connection snapshots to every WebSocket on ``/live``.

    One daemon thread samples every ``SAMPLE_INTERVAL`` seconds and
    broadcasts when the set of connections changed, when poked (a WebSocket
    came or went), and at least every ``REFRESH_INTERVAL`` seconds.  Pushing
    on every change of bytes would push on every sample: each push changes
    the ``/live`` connections' own ``bytes_out``.

    The thread starts with the first ``/live`` client and ends once none is
    left, which also covers a stopped server (stopping closes every
    WebSocket).  It reads the server's registry rather than keeping its own,
    so a missed ``on_close`` cannot keep it alive.
    """

    def __init__(self, app: App) -> None:
        self.app = app
        # Guards _thread: "no client left, so end" and "a client came, so make
        # sure a thread runs" must not interleave, or a client could be left
        # without a pusher.
        self._lock = threading.Lock()
        self._thread: Optional[threading.Thread] = None
        self._server: Optional[ServerHandle] = None  # the one _thread serves
        self._wake = threading.Event()

    def client_connected(self, ws: WebSocket) -> None:
        """``on_connect`` of ``/live``: greet the page, then make sure a thread runs."""
        addr = ws.remote_address
        if isinstance(addr, tuple):
            ws.send(json.dumps({"type": "hello", "client_addr": addr[0], "client_port": addr[1]}))
        self.poke()
        server = self.app.server
        if server is None:
            return
        with self._lock:
            # A thread left from an earlier server of this app is on its way
            # out (the app has a new server): this server gets its own.
            if self._thread is None or self._server is not server:
                self._server = server
                self._thread = threading.Thread(target=self._run, args=(server,),
                                                name="wssync-demo-live", daemon=True)
                self._thread.start()

    def poke(self, *_args: Any) -> None:
        """Sample now rather than at the next tick (any thread; any callback's arguments)."""
        self._wake.set()

    def _has_clients(self, server: ServerHandle) -> bool:
        return self.app.server is server and any(ws.path == LIVE_PATH
                                                 for ws in server.websockets)

    def _run(self, server: ServerHandle) -> None:
        last_key: Optional[Key] = None
        last_push = 0.0
        try:
            while True:
                self._wake.wait(SAMPLE_INTERVAL)
                poked = self._wake.is_set()
                self._wake.clear()
                with self._lock:
                    if not self._has_clients(server):
                        self._forget()
                        return
                data, key = snapshot(server)
                now = time.monotonic()
                if poked or key != last_key or now - last_push >= REFRESH_INTERVAL:
                    # Encoded once for every client; a client that falls too far
                    # behind is dropped by the server, not waited for.
                    server.broadcast(json.dumps(data), path=LIVE_PATH)
                    last_key, last_push = key, now
                time.sleep(MIN_GAP)
        except Exception:
            log.exception("demo live feed failed")
            with self._lock:
                self._forget()

    def _forget(self) -> None:
        """The calling thread ends (lock held); a newer thread stays registered."""
        if self._thread is threading.current_thread():
            self._thread = self._server = None


def create_app() -> App:
    app = App()
    page = files("wssync").joinpath("demo_page.html").read_text(encoding="utf-8")
    feed = LiveFeed(app)

    @app.route("/")
    def index(request: Request) -> Response:
        return Response.html(page)

    @app.route("/favicon.ico")
    def favicon(request: Request) -> Response:
        return Response(FAVICON, headers=[("Cache-Control", "max-age=86400")],
                        content_type="image/svg+xml")

    @app.route("/health")
    def health(request: Request) -> Response:
        return Response("ok\n")

    @app.route("/stats")
    def stats(request: Request) -> Response:
        if app.server is None:
            return Response.json({"connections": [], **count_protocols([])})
        # Which process answered (its pid, its worker index), its broker's
        # counters and, under a supervisor, every worker's counts; then this
        # process's connections in full.
        data = app.server.stats()
        data["connections"] = app.server.connections()
        data.update(count_protocols(data["connections"]))
        return Response.json(data)

    # The hooks only wake the live feed: /ws itself stays a pure echo.
    @app.websocket("/ws", on_connect=feed.poke, on_close=feed.poke)
    def echo(ws: WebSocket, message: Union[str, bytes]) -> None:
        ws.send(message)

    @app.websocket(LIVE_PATH, on_connect=feed.client_connected, on_close=feed.poke)
    def live(ws: WebSocket, message: Union[str, bytes]) -> None:
        pass  # the page only listens here

    return app
