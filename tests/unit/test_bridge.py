"""``HttpBridge`` and ``WebSocketBridge`` without sockets.

A real reactor runs on a background thread and the bridges are called on it,
as the protocol objects call them; stub connections record what the bridges
call back, and on which thread.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple, Union

import pytest

from wssync.app import App
from wssync.bridge import HttpBridge, WebSocketBridge, to_response
from wssync.config import Config
from wssync.errors import HttpError
from wssync.http.request import Headers, Request
from wssync.http.response import Response
from wssync.hub import Hub
from wssync.io.lanes import INLINE, Lane, ThreadPool
from wssync.io.reactor import BoundedHandoff, Reactor
from wssync.websocket.handle import WebSocket
from wssync.websocket.upgrade import WebSocketAccept

TIMEOUT = 10.0  # generous: only reached when something is broken

UPGRADE = [("Host", "example.com"), ("Upgrade", "websocket"), ("Connection", "Upgrade"),
           ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="), ("Sec-WebSocket-Version", "13")]


# -- the reactor, the hand-off and the pools ----------------------------------------------


@pytest.fixture
def reactor() -> Iterator[Reactor]:
    """A reactor running on its own thread, stopped after the test."""
    reactor = Reactor()
    thread = threading.Thread(target=reactor.run, name="wssync-test-reactor")
    thread.start()
    yield reactor
    reactor.stop()
    thread.join(TIMEOUT)
    assert not thread.is_alive()
    reactor.close()


@pytest.fixture
def handoff(reactor: Reactor) -> Iterator[BoundedHandoff]:
    handoff = BoundedHandoff(reactor, Config().max_send_queue)
    yield handoff
    handoff.close()


@pytest.fixture
def pool() -> Iterator[ThreadPool]:
    pool = ThreadPool(2, name="wssync-test-worker")
    yield pool
    pool.shutdown(TIMEOUT)


def on_reactor(reactor: Reactor, fn: Callable[..., Any], *args: Any) -> Any:
    """Run ``fn(*args)`` on the reactor thread, wait for it and return its result.

    Calls handed over this way run in order, after any call other threads
    handed the reactor before (so it doubles as a barrier)."""
    done = threading.Event()
    box: Dict[str, Any] = {}

    def task() -> None:
        try:
            box["result"] = fn(*args)
        except BaseException as exc:
            box["error"] = exc
        finally:
            done.set()

    reactor.call_soon_threadsafe(task)
    assert done.wait(TIMEOUT), "the reactor did not run the call"
    if "error" in box:
        raise box["error"]
    return box.get("result")


def make_bridge(app: App, handoff: BoundedHandoff, pool: Optional[ThreadPool] = None,
                blocking_pool: Optional[ThreadPool] = None,
                hub: Optional[Hub] = None, **settings: Any) -> HttpBridge:
    return HttpBridge(app, Config(**settings), handoff, pool,
                      hub if hub is not None else Hub(), blocking_pool)


def make_request(method: str, target: str,
                 headers: Optional[List[Tuple[str, str]]] = None) -> Request:
    fields = list(headers) if headers is not None else [("Host", "example.com")]
    return Request(method, target, "HTTP/1.1", Headers(fields))


def ws_request(target: str = "/ws", extra: Optional[List[Tuple[str, str]]] = None) -> Request:
    return make_request("GET", target, UPGRADE + list(extra or []))


# -- stub connections ---------------------------------------------------------------------


class StubHttpConnection:
    """The ``HttpConnection`` side: records each response and whether it came on
    the reactor thread."""

    def __init__(self, reactor: Reactor) -> None:
        self.reactor = reactor
        self.lane: Optional[Lane] = None
        self.responses: List[Response] = []
        self.on_reactor_thread: List[bool] = []
        self.answered = threading.Event()

    def send_response(self, response: Response) -> None:
        self.on_reactor_thread.append(self.reactor.in_reactor_thread())
        self.responses.append(response)
        self.answered.set()

    def response(self) -> Response:
        """The one response sent (waits for it)."""
        assert self.answered.wait(TIMEOUT), "no response was sent"
        assert len(self.responses) == 1
        return self.responses[0]


Call = Tuple[str, Tuple[Any, ...], bool]  # method, arguments, called on the reactor thread


class StubWebSocketConnection:
    """The ``WebSocketConnection`` side: records every call the bridge or the
    handle makes on it."""

    def __init__(self, reactor: Reactor) -> None:
        self.reactor = reactor
        self.calls: List[Call] = []
        self._changed = threading.Condition()

    def _record(self, name: str, *args: Any) -> None:
        with self._changed:
            self.calls.append((name, args, self.reactor.in_reactor_thread()))
            self._changed.notify_all()

    def send(self, message: Union[str, bytes]) -> None:
        self._record("send", message)

    def ping(self, payload: bytes) -> None:
        self._record("ping", payload)

    def close(self, code: int, reason: str) -> None:
        self._record("close", code, reason)

    def pause_input(self) -> None:
        self._record("pause_input")

    def resume_input(self) -> None:
        self._record("resume_input")

    def named(self, name: str) -> List[Call]:
        with self._changed:
            return [call for call in self.calls if call[0] == name]

    def wait_for(self, name: str, count: int = 1) -> List[Call]:
        with self._changed:
            assert self._changed.wait_for(lambda: len(self.named(name)) >= count, TIMEOUT), \
                f"{name} was not called {count} time(s): {self.calls}"
        return self.named(name)


def open_websocket(reactor: Reactor, bridge: HttpBridge,
                   request: Optional[Request] = None,
                   ) -> Tuple[WebSocketBridge, StubWebSocketConnection]:
    """Accept a handshake on a fresh HTTP connection and open the WebSocket."""
    http_conn = StubHttpConnection(reactor)
    accept = on_reactor(reactor, bridge.accept_websocket, http_conn, request or ws_request())
    assert isinstance(accept, WebSocketAccept)
    ws_bridge = accept.app
    assert isinstance(ws_bridge, WebSocketBridge)
    conn = StubWebSocketConnection(reactor)
    on_reactor(reactor, ws_bridge.opened, conn)
    return ws_bridge, conn


# -- to_response ----------------------------------------------------------------------------


def test_to_response_passes_a_response_through() -> None:
    response = Response("x", 201)
    assert to_response(response) is response


@pytest.mark.parametrize("result, body", [("héllo", "héllo".encode()), (b"\x00\xff", b"\x00\xff")])
def test_to_response_wraps_str_and_bytes(result: Union[str, bytes], body: bytes) -> None:
    response = to_response(result)
    assert response.status == 200
    assert response.body == body


@pytest.mark.parametrize("result, body", [({"a": [1, 2]}, b'{"a":[1,2]}'), ([1, "x"], b'[1,"x"]')])
def test_to_response_sends_dict_and_list_as_json(result: Any, body: bytes) -> None:
    response = to_response(result)
    assert response.status == 200
    assert response.body == body
    assert ("Content-Type", "application/json") in response.headers


@pytest.mark.parametrize("result", [None, 42, ("a", "b"), bytearray(b"x"), object()])
def test_to_response_refuses_other_types(result: Any) -> None:
    with pytest.raises(TypeError, match=type(result).__name__):
        to_response(result)


# -- HttpBridge: handlers -------------------------------------------------------------------


def test_reactor_mode_runs_the_handler_inline(reactor: Reactor,
                                              handoff: BoundedHandoff) -> None:
    app = App()
    threads: List[bool] = []

    @app.route("/data")
    def data(request: Request) -> Dict[str, int]:
        threads.append(reactor.in_reactor_thread())
        return {"n": 1}

    bridge = make_bridge(app, handoff)
    conn = StubHttpConnection(reactor)

    def handle() -> List[Response]:
        bridge.handle_request(conn, make_request("GET", "/data"))
        return list(conn.responses)  # what was sent before handle_request returned

    answered_at_once = on_reactor(reactor, handle)
    assert threads == [True]
    assert len(answered_at_once) == 1
    assert answered_at_once[0].body == b'{"n":1}'
    assert conn.on_reactor_thread == [True]
    assert conn.lane is None  # no lane was made


def test_a_routing_answer_is_sent_without_a_handler(reactor: Reactor, handoff: BoundedHandoff,
                                                    pool: ThreadPool) -> None:
    bridge = make_bridge(App(), handoff, pool)
    conn = StubHttpConnection(reactor)
    on_reactor(reactor, bridge.handle_request, conn, make_request("GET", "/nowhere"))
    assert conn.responses[0].status == 404  # sent at once, even in pool mode
    assert conn.lane is None


def test_handler_exception_becomes_500(reactor: Reactor, handoff: BoundedHandoff,
                                       caplog: pytest.LogCaptureFixture) -> None:
    app = App()

    @app.route("/boom")
    def boom(request: Request) -> str:
        raise RuntimeError("handler failure")

    bridge = make_bridge(app, handoff)
    conn = StubHttpConnection(reactor)
    with caplog.at_level(logging.ERROR, logger="wssync.app"):
        on_reactor(reactor, bridge.handle_request, conn, make_request("GET", "/boom"))
    response = conn.response()
    assert response.status == 500
    assert b"handler failure" not in response.body  # nothing of the error leaks
    assert any("GET /boom" in record.getMessage() for record in caplog.records)


def test_unsupported_return_value_becomes_500(reactor: Reactor,
                                              handoff: BoundedHandoff) -> None:
    app = App()

    @app.route("/int")
    def number(request: Request) -> int:
        return 42

    bridge = make_bridge(app, handoff)
    conn = StubHttpConnection(reactor)
    on_reactor(reactor, bridge.handle_request, conn, make_request("GET", "/int"))
    assert conn.response().status == 500


def test_http_error_from_handler_becomes_its_status(reactor: Reactor,
                                                    handoff: BoundedHandoff) -> None:
    app = App()

    @app.route("/missing")
    def missing(request: Request) -> str:
        raise HttpError(404, "x", [("X-Why", "gone")])

    bridge = make_bridge(app, handoff)
    conn = StubHttpConnection(reactor)
    on_reactor(reactor, bridge.handle_request, conn, make_request("GET", "/missing"))
    response = conn.response()
    assert response.status == 404
    assert response.body == b"404 Not Found: x\n"
    assert ("X-Why", "gone") in response.headers


def test_pool_mode_runs_the_handler_on_a_worker(reactor: Reactor, handoff: BoundedHandoff,
                                                pool: ThreadPool) -> None:
    app = App()
    release = threading.Event()
    handler_threads: List[str] = []

    @app.route("/slow")
    def slow(request: Request) -> str:
        handler_threads.append(threading.current_thread().name)
        assert release.wait(TIMEOUT)
        return "done"

    bridge = make_bridge(app, handoff, pool)
    conn = StubHttpConnection(reactor)
    try:
        on_reactor(reactor, bridge.handle_request, conn, make_request("GET", "/slow"))
        assert not conn.answered.is_set()  # handle_request returned; the handler waits
        lane = conn.lane
        assert isinstance(lane, Lane) and lane.pool is pool
    finally:
        release.set()
    assert conn.response().body == b"done"
    assert handler_threads and handler_threads[0].startswith("wssync-test-worker")
    assert conn.on_reactor_thread == [True]

    # The connection keeps its lane for its next request.
    conn.answered.clear()
    conn.responses.clear()
    on_reactor(reactor, bridge.handle_request, conn, make_request("GET", "/slow"))
    assert conn.response().body == b"done"
    assert conn.lane is lane


def test_blocking_handler_gets_the_blocking_pool_in_reactor_mode(
        reactor: Reactor, handoff: BoundedHandoff) -> None:
    app = App()
    seen: Dict[str, str] = {}

    def blocking(request: Request) -> str:
        seen["blocking"] = threading.current_thread().name
        return "blocking"

    blocking.blocking = True  # type: ignore[attr-defined]
    app.route("/blocking")(blocking)

    @app.route("/plain")
    def plain(request: Request) -> str:
        seen["plain"] = threading.current_thread().name
        return "plain"

    blocking_pool = ThreadPool(1, name="wssync-test-blocking")
    try:
        bridge = make_bridge(app, handoff, None, blocking_pool)
        conn = StubHttpConnection(reactor)
        on_reactor(reactor, bridge.handle_request, conn, make_request("GET", "/blocking"))
        assert conn.response().body == b"blocking"
        assert seen["blocking"].startswith("wssync-test-blocking")
        assert conn.on_reactor_thread == [True]
        assert isinstance(conn.lane, Lane) and conn.lane.pool is blocking_pool

        other = StubHttpConnection(reactor)
        on_reactor(reactor, bridge.handle_request, other, make_request("GET", "/plain"))
        assert other.response().body == b"plain"
        assert seen["plain"] == "wssync-test-reactor"  # unmarked handlers stay inline
    finally:
        blocking_pool.shutdown(TIMEOUT)


def test_wsgi_app_runs_on_the_blocking_pool(reactor: Reactor, handoff: BoundedHandoff) -> None:
    app = App()
    seen: List[str] = []

    def wsgi_app(environ: Dict[str, Any], start_response: Callable[..., Any]) -> List[bytes]:
        seen.append(threading.current_thread().name)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"from wsgi"]

    app.mount_wsgi(wsgi_app)
    blocking_pool = ThreadPool(1, name="wssync-test-blocking")
    try:
        bridge = make_bridge(app, handoff, None, blocking_pool)
        conn = StubHttpConnection(reactor)
        on_reactor(reactor, bridge.handle_request, conn, make_request("GET", "/anything"))
        assert conn.response().body == b"from wsgi"
        assert seen and seen[0].startswith("wssync-test-blocking")
        assert conn.on_reactor_thread == [True]
    finally:
        blocking_pool.shutdown(TIMEOUT)


def test_next_chunk_calls_back_with_each_chunk_then_none(reactor: Reactor,
                                                         handoff: BoundedHandoff) -> None:
    bridge = make_bridge(App(), handoff)
    conn = StubHttpConnection(reactor)
    got: List[Tuple[Optional[bytes], Optional[BaseException], bool]] = []

    def callback(chunk: Optional[bytes], error: Optional[BaseException]) -> None:
        got.append((chunk, error, reactor.in_reactor_thread()))

    body = iter([b"a", b"b"])
    for _ in range(3):
        on_reactor(reactor, bridge.next_chunk, conn, body, callback)
    assert got == [(b"a", None, True), (b"b", None, True), (None, None, True)]

    def failing() -> Iterator[bytes]:
        raise OSError("disk gone")
        yield b""  # a generator

    got.clear()
    on_reactor(reactor, bridge.next_chunk, conn, failing(), callback)
    assert len(got) == 1 and got[0][0] is None and isinstance(got[0][1], OSError)


# -- HttpBridge: WebSocket handshakes -------------------------------------------------------


def test_accept_websocket_without_a_route_is_404(reactor: Reactor,
                                                 handoff: BoundedHandoff) -> None:
    bridge = make_bridge(App(), handoff)
    result = bridge.accept_websocket(StubHttpConnection(reactor), ws_request("/nope"))
    assert isinstance(result, Response) and result.status == 404


def test_accept_websocket_refuses_a_disallowed_origin(reactor: Reactor,
                                                      handoff: BoundedHandoff) -> None:
    app = App()
    app.websocket("/ws", origins={"https://good.example"})(lambda ws, message: None)
    bridge = make_bridge(app, handoff)
    conn = StubHttpConnection(reactor)
    refused = bridge.accept_websocket(conn, ws_request(extra=[("Origin", "https://evil.example")]))
    assert isinstance(refused, Response) and refused.status == 403
    accepted = bridge.accept_websocket(conn, ws_request(extra=[("Origin", "https://good.example")]))
    assert isinstance(accepted, WebSocketAccept)


@pytest.mark.parametrize("offered, chosen", [
    ("superchat, chat", "superchat"),  # the client's preference wins
    ("mqtt, chat", "chat"),
    ("mqtt", None),
    (None, None),
])
def test_accept_websocket_chooses_the_subprotocol(reactor: Reactor, handoff: BoundedHandoff,
                                                  offered: Optional[str],
                                                  chosen: Optional[str]) -> None:
    app = App()
    app.websocket("/ws", subprotocols=["chat", "superchat"])(lambda ws, message: None)
    bridge = make_bridge(app, handoff)
    extra = [("Sec-WebSocket-Protocol", offered)] if offered is not None else []
    accept = bridge.accept_websocket(StubHttpConnection(reactor), ws_request(extra=extra))
    assert isinstance(accept, WebSocketAccept)
    assert accept.subprotocol == chosen
    assert isinstance(accept.app, WebSocketBridge)
    assert accept.app.subprotocol == chosen
    assert accept.app.lane is INLINE


def test_accepted_websocket_keeps_the_connection_lane(reactor: Reactor, handoff: BoundedHandoff,
                                                      pool: ThreadPool) -> None:
    app = App()
    app.websocket("/ws")(lambda ws, message: None)
    bridge = make_bridge(app, handoff, pool)
    conn = StubHttpConnection(reactor)
    accept = bridge.accept_websocket(conn, ws_request())
    assert isinstance(accept, WebSocketAccept) and isinstance(accept.app, WebSocketBridge)
    assert accept.app.lane is conn.lane
    assert accept.app.lane.pool is pool


# -- WebSocketBridge: events ----------------------------------------------------------------


def test_opened_makes_the_handle_and_calls_on_connect(reactor: Reactor,
                                                      handoff: BoundedHandoff) -> None:
    app = App()
    connected: List[WebSocket] = []

    def on_connect(ws: WebSocket) -> None:
        connected.append(ws)
        ws.send("welcome")

    app.websocket("/ws", on_connect=on_connect, subprotocols=["chat"])(lambda ws, message: None)
    hub = Hub()
    bridge = make_bridge(app, handoff, hub=hub)
    request = ws_request(extra=[("Sec-WebSocket-Protocol", "chat")])
    ws_bridge, conn = open_websocket(reactor, bridge, request)

    [handle] = hub.websockets  # registered with the hub
    assert isinstance(handle, WebSocket)
    assert ws_bridge.handle is handle and ws_bridge.conn is conn
    assert connected == [handle]
    assert handle.request is request and handle.subprotocol == "chat"
    assert handle.headers.get("sec-websocket-protocol") == "chat"  # kept, compacted
    assert not handle.closed
    assert conn.calls == [("send", ("welcome",), True)]  # the handle talks to its connection


@pytest.mark.parametrize("lane", ["inline", "pool"])
def test_messages_reach_on_message_in_order(reactor: Reactor, handoff: BoundedHandoff,
                                            pool: ThreadPool, lane: str) -> None:
    app = App()
    events: List[Any] = []
    closed = threading.Event()

    def on_close(ws: WebSocket, code: int, reason: str) -> None:
        events.append(("close", code, reason))
        closed.set()

    def on_message(ws: WebSocket, message: Union[str, bytes]) -> None:
        events.append(message)

    app.websocket("/ws", on_connect=lambda ws: events.append("connect"),
                  on_close=on_close)(on_message)
    bridge = make_bridge(app, handoff, pool if lane == "pool" else None)
    ws_bridge, _ = open_websocket(reactor, bridge)
    messages: List[Union[str, bytes]] = [f"m{i}" if i % 2 else b"b%d" % i for i in range(200)]

    def feed() -> None:
        for message in messages:
            ws_bridge.message(message)
        ws_bridge.closed(1000, "bye")

    on_reactor(reactor, feed)
    assert closed.wait(TIMEOUT)
    assert events == ["connect", *messages, ("close", 1000, "bye")]


@pytest.mark.parametrize("lane", ["inline", "pool"])
def test_an_exception_in_on_message_closes_with_1011(reactor: Reactor, handoff: BoundedHandoff,
                                                     pool: ThreadPool, lane: str,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    app = App()

    @app.websocket("/ws")
    def on_message(ws: WebSocket, message: Union[str, bytes]) -> None:
        raise ValueError("bad message")

    bridge = make_bridge(app, handoff, pool if lane == "pool" else None)
    ws_bridge, conn = open_websocket(reactor, bridge)
    with caplog.at_level(logging.ERROR, logger="wssync.app"):
        on_reactor(reactor, ws_bridge.message, "hello")
        closes = conn.wait_for("close")
    assert closes == [("close", (1011, "internal error"), True)]
    assert any("/ws" in record.getMessage() for record in caplog.records)


def test_an_exception_after_close_does_not_close_again(reactor: Reactor,
                                                       handoff: BoundedHandoff) -> None:
    app = App()

    def on_close(ws: WebSocket, code: int, reason: str) -> None:
        raise RuntimeError("cleanup failure")

    app.websocket("/ws", on_close=on_close)(lambda ws, message: None)
    bridge = make_bridge(app, handoff)
    ws_bridge, conn = open_websocket(reactor, bridge)
    on_reactor(reactor, ws_bridge.closed, 1001, "going away")
    assert conn.named("close") == []  # the handle is closed already


def test_closed_unregisters_and_calls_on_close(reactor: Reactor, handoff: BoundedHandoff,
                                               pool: ThreadPool) -> None:
    app = App()
    seen: List[Tuple[WebSocket, int, str, Optional[int]]] = []
    closed = threading.Event()

    def on_close(ws: WebSocket, code: int, reason: str) -> None:
        seen.append((ws, code, reason, ws.close_code))
        closed.set()

    app.websocket("/ws", on_close=on_close)(lambda ws, message: None)
    hub = Hub()
    bridge = make_bridge(app, handoff, pool, hub=hub)
    ws_bridge, _conn = open_websocket(reactor, bridge)
    [handle] = hub.websockets

    on_reactor(reactor, ws_bridge.closed, 4000, "done here")
    assert not hub.websockets and len(hub) == 0  # gone from the registry at once
    assert handle.closed and handle.close_code == 4000 and handle.close_reason == "done here"
    assert closed.wait(TIMEOUT)
    assert seen == [(handle, 4000, "done here", 4000)]


# -- WebSocketBridge: the backlog -----------------------------------------------------------


@pytest.mark.parametrize("max_queue, max_queue_bytes, size, pause_at, resume_at", [
    # By count: paused at 4 waiting messages, resumed at 4 // 4 = 1.
    (4, 1024 * 1024, 10, 4, 1),
    # By bytes: paused at 10 * 100 >= 1000 bytes, resumed at <= 250 bytes (2 messages).
    (100, 1000, 100, 10, 2),
], ids=["count", "bytes"])
def test_a_backlog_pauses_input_and_resumes_at_a_quarter(
        reactor: Reactor, handoff: BoundedHandoff, pool: ThreadPool, max_queue: int,
        max_queue_bytes: int, size: int, pause_at: int, resume_at: int) -> None:
    total = pause_at + 1  # one more arrives while paused
    started = [threading.Event() for _ in range(total)]
    release = [threading.Event() for _ in range(total)]
    delivered: List[int] = []
    app = App()

    @app.websocket("/ws")
    def on_message(ws: WebSocket, message: Union[str, bytes]) -> None:
        index = len(delivered)
        started[index].set()
        assert release[index].wait(TIMEOUT)
        delivered.append(index)

    bridge = make_bridge(app, handoff, pool, max_queue=max_queue,
                         max_queue_bytes=max_queue_bytes)
    ws_bridge, conn = open_websocket(reactor, bridge)
    try:
        for i in range(total):
            on_reactor(reactor, ws_bridge.message, b"x" * size)
            waiting = i + 1  # the first message is held by its handler: none delivered
            assert len(conn.named("pause_input")) == (1 if waiting >= pause_at else 0), waiting
        assert started[0].wait(TIMEOUT)

        finished = threading.Event()
        on_reactor(reactor, ws_bridge.after_pending, finished.set)
        for i in range(total):
            release[i].set()
            if i + 1 < total:
                # The next handler started, so the lane is done with message i...
                assert started[i + 1].wait(TIMEOUT)
            else:
                assert finished.wait(TIMEOUT)
            # ...and the reactor has run what the lane handed it since.
            on_reactor(reactor, lambda: None)
            left = total - (i + 1)
            expected = 1 if left <= resume_at else 0
            assert len(conn.named("resume_input")) == expected, left
    finally:
        for event in release:
            event.set()
    assert delivered == list(range(total))
    assert conn.named("pause_input") == [("pause_input", (), True)]
    assert conn.named("resume_input") == [("resume_input", (), True)]


def test_input_pauses_again_after_resuming(reactor: Reactor, handoff: BoundedHandoff,
                                           pool: ThreadPool) -> None:
    gate = threading.Semaphore(0)
    app = App()
    app.websocket("/ws")(lambda ws, message: gate.acquire(timeout=TIMEOUT))
    bridge = make_bridge(app, handoff, pool, max_queue=2)
    ws_bridge, conn = open_websocket(reactor, bridge)
    try:
        for _ in range(2):
            on_reactor(reactor, ws_bridge.message, "a")
        conn.wait_for("pause_input")
        gate.release()
        gate.release()
        conn.wait_for("resume_input")
        for _ in range(2):
            on_reactor(reactor, ws_bridge.message, "b")
        conn.wait_for("pause_input", 2)
    finally:
        for _ in range(4):
            gate.release()
    conn.wait_for("resume_input", 2)
    assert [call[0] for call in conn.calls] == ["pause_input", "resume_input"] * 2


def test_the_inline_lane_never_pauses_input(reactor: Reactor, handoff: BoundedHandoff) -> None:
    received: List[Union[str, bytes]] = []
    app = App()
    app.websocket("/ws")(lambda ws, message: received.append(message))
    bridge = make_bridge(app, handoff, max_queue=1, max_queue_bytes=1)
    ws_bridge, conn = open_websocket(reactor, bridge)

    def feed() -> None:
        for i in range(50):
            ws_bridge.message(b"y" * (i + 10))

    on_reactor(reactor, feed)
    assert len(received) == 50
    assert conn.calls == []


def test_after_pending_waits_for_earlier_events(reactor: Reactor, handoff: BoundedHandoff,
                                                pool: ThreadPool) -> None:
    release = threading.Event()
    order: List[str] = []
    after_ran = threading.Event()
    app = App()

    @app.websocket("/ws")
    def on_message(ws: WebSocket, message: Union[str, bytes]) -> None:
        assert release.wait(TIMEOUT)
        order.append(str(message))

    def after() -> None:
        order.append("after" if reactor.in_reactor_thread() else "after, off the reactor")
        after_ran.set()

    bridge = make_bridge(app, handoff, pool)
    ws_bridge, _ = open_websocket(reactor, bridge)
    try:
        on_reactor(reactor, ws_bridge.message, "one")
        on_reactor(reactor, ws_bridge.message, "two")
        on_reactor(reactor, ws_bridge.after_pending, after)
        on_reactor(reactor, lambda: None)
        assert not after_ran.is_set()  # the messages are still being handled
    finally:
        release.set()
    assert after_ran.wait(TIMEOUT)
    assert order == ["one", "two", "after"]


def test_after_pending_on_the_inline_lane_runs_at_once(reactor: Reactor,
                                                       handoff: BoundedHandoff) -> None:
    app = App()
    app.websocket("/ws")(lambda ws, message: None)
    ws_bridge, _ = open_websocket(reactor, make_bridge(app, handoff))
    ran: List[bool] = []

    def call() -> List[bool]:
        ws_bridge.after_pending(lambda: ran.append(reactor.in_reactor_thread()))
        return list(ran)

    assert on_reactor(reactor, call) == [True]
