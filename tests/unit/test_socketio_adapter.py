"""``wssync.socketio`` without sockets: the outbox of an engine.io socket, where
engine.io's tasks run, the version check, and finding the engine.io servers of
an application (the WebSocket transport itself is tested end to end)."""

from __future__ import annotations

import threading
import time
from importlib import metadata
from typing import Any, Callable, Iterator, List, Optional, Tuple

import pytest

pytest.importorskip("flask_socketio")

import engineio
import socketio as sio
from engineio import packet as eio_packet
from flask import Flask
from flask_socketio import SocketIO
from werkzeug.middleware.proxy_fix import ProxyFix

from wssync import socketio as adapter
from wssync.app import App
from wssync.errors import ConnectionClosed, UnsupportedLibrary
from wssync.http.request import Headers, Request
from wssync.io.lanes import Lane, ThreadPool
from wssync.socketio_polling import Outbox


class FakeWebSocket:
    """What the outbox uses of a WebSocket: its unpaced ``send`` (which may be
    made to wait, as the hand-off to a busy reactor does) and ``close``."""

    def __init__(self) -> None:
        self.sent: List[Any] = []
        self.closed = False
        self.hold: Optional[threading.Event] = None  # set: sends wait for it
        self.waiting = threading.Event()

    def send(self, data: Any) -> None:
        if self.closed:
            raise ConnectionClosed(1000, "")
        if self.hold is not None and threading.current_thread().name == "slow sender":
            self.waiting.set()
            self.hold.wait(10)
        self.sent.append(data)

    def close(self, *args: Any) -> None:
        self.closed = True

    # What the outbox calls: sends that wait for no peer (the hand-off to the
    # reactor still may, which ``hold`` stands for).
    _send_unpaced = send
    buffered_amount = 0
    _close_unpaced = close


def message(text: str) -> eio_packet.Packet:
    return eio_packet.Packet(eio_packet.MESSAGE, text)


# -- Outbox -------------------------------------------------------------------------------


def test_outbox_is_a_queue_until_bound() -> None:
    box = Outbox()
    box.put(message("a"))
    box.put(message("b"))
    assert [box.get(timeout=1).data for _ in range(2)] == ["a", "b"]
    with pytest.raises(adapter.queue.Empty):
        box.get(block=False)


def test_bind_sends_what_was_queued_first_then_later_puts_go_straight_out() -> None:
    box = Outbox()
    for text in ("1", "2", "3"):
        box.put(message(text))
    ws = FakeWebSocket()
    box.bind(ws)  # type: ignore[arg-type]
    box.put(message("4"))
    assert ws.sent == ["41", "42", "43", "44"]
    assert box.empty()


def test_puts_while_bind_flushes_wait_behind_the_flush() -> None:
    box = Outbox()
    box.put(message("queued"))
    ws = FakeWebSocket()
    ws.hold = threading.Event()
    binder = threading.Thread(target=box.bind, args=(ws,), name="slow sender")
    binder.start()
    assert ws.waiting.wait(5)  # bind is sending the queued packet, slowly
    later = threading.Thread(target=box.put, args=(message("later"),))
    later.start()
    later.join(0.2)
    assert later.is_alive()  # not before the queued packet
    ws.hold.set()
    binder.join(5)
    later.join(5)
    assert ws.sent == ["4queued", "4later"]


def test_put_at_once_does_not_wait_behind_a_slow_send() -> None:
    """The reactor's ping: a thread blocked sending to a slow peer holds the
    outbox's order lock; the ping goes out without waiting for it."""
    box = Outbox()
    ws = FakeWebSocket()
    box.bind(ws)  # type: ignore[arg-type]
    ws.hold = threading.Event()
    sender = threading.Thread(target=box.put, args=(message("big"),), name="slow sender")
    sender.start()
    assert ws.waiting.wait(5)
    pinger = threading.Thread(target=box.put_at_once, args=(eio_packet.Packet(eio_packet.PING),))
    pinger.start()
    pinger.join(2)
    assert not pinger.is_alive(), "the ping waited behind a slow send"
    ws.hold.set()
    sender.join(5)
    assert ws.sent == ["2", "4big"]


def test_put_at_once_queues_before_bind() -> None:
    box = Outbox()
    box.put_at_once(eio_packet.Packet(eio_packet.PING))
    assert box.get(timeout=1).packet_type == eio_packet.PING


def test_none_closes_the_websocket_and_sends_after_it_are_dropped() -> None:
    box = Outbox()
    ws = FakeWebSocket()
    box.bind(ws)  # type: ignore[arg-type]
    box.put(None)
    assert ws.closed
    box.put(message("late"))  # ConnectionClosed is swallowed: the socket is ending
    assert ws.sent == []


def test_join_does_not_hang_once_bound() -> None:
    box = Outbox()
    box.put(message("never taken by a poll"))
    box.bind(FakeWebSocket())  # type: ignore[arg-type]
    done, _ = _in_thread(box.join)
    assert done.wait(2), "join waited for packets the WebSocket already sent"
    box.put(None)
    done, _ = _in_thread(box.join)
    assert done.wait(2)


def _in_thread(fn: Callable[[], Any]) -> Tuple[threading.Event, List[Any]]:
    done = threading.Event()
    out: List[Any] = []

    def run() -> None:
        out.append(fn())
        done.set()

    threading.Thread(target=run, daemon=True).start()
    return done, out


# -- _Task: where engine.io's "threads" run ---------------------------------------------


class Owner:
    """What a task uses of its engine server: the engine and the reactor's timers."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.timers: List[Tuple[float, Callable[..., Any], Tuple[Any, ...]]] = []

    def call_later(self, delay: float, fn: Callable[..., None], *args: Any) -> None:
        self.timers.append((delay, fn, args))


@pytest.fixture
def pool() -> Iterator[ThreadPool]:
    pool = ThreadPool(2)
    yield pool
    pool.shutdown()


def test_a_ping_becomes_a_reactor_timer_not_a_thread() -> None:
    engine = engineio.Server(async_mode="threading", ping_interval=7)
    socket = engineio.socket.Socket(engine, "sid1")
    socket.queue = Outbox()
    owner = Owner(engine)
    before = threading.active_count()
    adapter._Task(owner, socket._send_ping, (), {}).start()  # type: ignore[arg-type]
    assert threading.active_count() == before
    assert owner.timers == [(7, adapter._ping, (socket,))]
    _delay, fn, args = owner.timers[0]
    fn(*args)  # the timer fires: a ping is queued (a polling session)
    assert socket.queue.get(timeout=1).packet_type == eio_packet.PING
    assert socket.last_ping


def test_a_socketio_event_runs_on_the_pool_of_the_calling_worker(pool: ThreadPool) -> None:
    server = sio.Server(async_mode="threading")
    owner = Owner(server.eio)
    ran: List[str] = []
    # The event handler's body: where it runs is what is looked at.
    server._trigger_event = lambda *args, **kwargs: ran.append(threading.current_thread().name)
    target = server._handle_event_internal  # as python-socketio starts it
    assert target.__func__ is adapter._HANDLE_EVENT
    tasks: List[adapter._Task] = []
    started = threading.Event()

    def dispatch() -> None:  # on a worker: the client's message being handled
        task = adapter._Task(owner, target, (server, "sid", "eio", ["x"], "/", None),  # type: ignore[arg-type]
                             {})
        tasks.append(task)
        task.start()
        started.set()

    Lane(pool).submit(dispatch)
    assert started.wait(5)
    tasks[0].join(5)
    assert not tasks[0].is_alive()
    assert tasks[0]._thread is None  # no thread of its own
    assert len(ran) == 1 and ran[0].startswith("wssync-worker"), ran
    assert owner.timers == []


def test_other_tasks_get_a_daemon_thread() -> None:
    owner = Owner(engineio.Server(async_mode="threading"))
    release = threading.Event()
    task = adapter._Task(owner, release.wait, (5,), {})  # type: ignore[arg-type]
    task.start()
    assert task.is_alive() and task._thread is not None and task._thread.daemon
    release.set()
    task.join(5)
    assert not task.is_alive()


def test_events_of_one_client_are_bounded() -> None:
    engine = engineio.Server(async_mode="threading")
    socket = engineio.socket.Socket(engine, "sid1")
    engine.sockets["sid1"] = socket
    slots = adapter._event_slots(engine, "sid1")
    assert slots is adapter._event_slots(engine, "sid1")  # one per client
    for _ in range(adapter.EVENTS_PER_CLIENT):
        assert slots.acquire(blocking=False)
    assert not slots.acquire(blocking=False)


# -- versions -------------------------------------------------------------------------------


def test_versions_in_range_pass() -> None:
    adapter._check_versions()  # the installed, supported releases


def test_an_unsupported_version_says_which_ones_are(monkeypatch: pytest.MonkeyPatch) -> None:
    real = metadata.version
    monkeypatch.setattr(adapter.metadata, "version",
                        lambda name: "3.14.0" if name == "python-engineio" else real(name))
    with pytest.raises(UnsupportedLibrary) as raised:
        adapter._check_versions()
    text = str(raised.value)
    assert "\n" not in text
    (low, high) = adapter.SUPPORTED["python-engineio"]
    assert text.startswith("python-engineio 3.14.0 is not supported: wssync serves "
                           f"python-engineio {low[0]}.{low[1]} up to (not including) "
                           f"{high[0]}.{high[1]}")
    assert "pip install 'wssync[socketio]'" in text


def test_python_socketio_is_optional(monkeypatch: pytest.MonkeyPatch) -> None:
    real = metadata.version

    def version(name: str) -> str:
        if name == "python-socketio":
            raise metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(adapter.metadata, "version", version)
    adapter._check_versions()


# -- finding the engine.io servers of an application ----------------------------------------


def handshake(path: str) -> Request:
    return Request("GET", path, "HTTP/1.1", Headers([
        ("Host", "example.com"), ("Upgrade", "websocket"), ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="), ("Sec-WebSocket-Version", "13")]))


def flask_socketio_app(**options: Any) -> Tuple[Flask, SocketIO]:
    app = Flask("sioapp")
    return app, SocketIO(app, **options)


def test_a_flask_socketio_app_behind_proxyfix_is_found() -> None:
    flask_app, _ = flask_socketio_app()
    flask_app.wsgi_app = ProxyFix(flask_app.wsgi_app)  # type: ignore[method-assign]
    app = App()
    assert adapter.attach(app, ProxyFix(flask_app)) == 1
    route = app.match_websocket(handshake("/socket.io/?EIO=4&transport=websocket"))
    assert route is not None and route.pooled
    assert app.match_websocket(handshake("/elsewhere")) is None


def test_a_custom_path_is_served() -> None:
    flask_app, _ = flask_socketio_app(path="live")
    app = App()
    adapter.attach(app, flask_app)
    assert app.match_websocket(handshake("/live/?EIO=4&transport=websocket")) is not None
    assert app.match_websocket(handshake("/socket.io/?EIO=4&transport=websocket")) is None


def test_attach_counts_the_engineio_servers() -> None:
    assert adapter.attach(App(), Flask("plain")) == 0
    flask_app, _ = flask_socketio_app()
    assert adapter.attach(App(), flask_app) == 1


def test_wsgi_app_of_a_flask_socketio_object_is_its_flask_app() -> None:
    flask_app, socketio = flask_socketio_app()
    assert adapter.wsgi_app_of(socketio) is flask_app


def test_wsgi_app_of_a_socketio_without_an_app_says_what_to_name() -> None:
    with pytest.raises(UnsupportedLibrary, match="MODULE:app"):
        adapter.wsgi_app_of(SocketIO())


def test_wsgi_app_of_a_bare_server_wraps_it() -> None:
    server = sio.Server(async_mode="threading")
    wrapped = adapter.wsgi_app_of(server)
    assert isinstance(wrapped, engineio.WSGIApp)
    assert wrapped.engineio_app is server and wrapped.engineio_path == "/socket.io/"
    engine = engineio.Server(async_mode="threading")
    assert adapter.wsgi_app_of(engine).engineio_path == "/engine.io/"


def test_wsgi_app_of_anything_else_is_none() -> None:
    assert adapter.wsgi_app_of(object()) is None
    assert adapter.wsgi_app_of(Flask("plain")) is None


def test_the_socketio_server_is_told_it_runs_threaded() -> None:
    """python-socketio's message-queue managers refuse a gevent mode without a
    patched socket module; the server runs threaded here whatever it picked."""
    flask_app, socketio = flask_socketio_app(async_mode="threading")
    socketio.server.async_mode = socketio.server.eio.async_mode = "gevent"
    adapter.attach(App(), flask_app)
    assert socketio.server.async_mode == "threading" == socketio.server.eio.async_mode


def test_a_client_has_at_most_its_bound_of_events_queued_or_running(pool: ThreadPool) -> None:
    """Past the bound, the dispatch (the client's input, on its lane) waits for
    one of the client's events to end."""
    server = sio.Server(async_mode="threading")
    owner = Owner(server.eio)
    release = threading.Event()
    server._trigger_event = lambda *args, **kwargs: release.wait(10)
    server.eio.sockets["eio"] = engineio.socket.Socket(server.eio, "eio")
    target = server._handle_event_internal
    dispatched: List[int] = []

    def client_input() -> None:
        for n in range(adapter.EVENTS_PER_CLIENT + 5):
            adapter._Task(owner, target, (server, "sid", "eio", ["x"], "/", None),  # type: ignore[arg-type]
                          {}).start()
            dispatched.append(n)

    Lane(pool).submit(client_input)
    try:
        deadline = time.monotonic() + 5
        while len(dispatched) < adapter.EVENTS_PER_CLIENT and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.2)
        assert len(dispatched) == adapter.EVENTS_PER_CLIENT
    finally:
        release.set()
    deadline = time.monotonic() + 5
    while len(dispatched) < adapter.EVENTS_PER_CLIENT + 5 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(dispatched) == adapter.EVENTS_PER_CLIENT + 5
