"""Blocking-style WebSocket handlers end to end: ``handler(ws)`` on a thread of its own,
against the ``websockets`` library's sync client and ``websocket-client``, in both modes.

No wall-clock asserts: waits are on events and conditions with generous bounds.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, List, Union

import pytest
import websocket as wsclient  # websocket-client
from helpers import settled, wait_until
from websockets.exceptions import ConnectionClosed, ConnectionClosedOK, InvalidStatus
from websockets.sync.client import connect

from wssync import App, BlockingWebSocket, Server
from wssync import ConnectionClosed as WssyncClosed

KiB = 1024
MiB = 1024 * KiB


def _url(server: Server, path: str = "/ws") -> str:
    return f"ws://127.0.0.1:{server.address[1]}{path}"


def _handler_threads() -> List[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("wssync-ws")]


def _bytes_in(server: Server) -> int:
    conns = [c for c in server.connections() if c["protocol"] == "websocket"]
    assert len(conns) == 1, conns
    return int(conns[0]["bytes_in"])


def test_messages_arrive_in_order_and_iteration_ends_on_close(start_server, threads) -> None:
    ended = threading.Event()
    app = App()

    @app.websocket("/ws", blocking=True)
    def echo(ws: BlockingWebSocket) -> None:
        ws.send("ready")
        for message in ws:
            ws.send(message)
        ended.set()  # the loop ended by itself: the client closed normally

    server = start_server(app, threads=threads)
    sent: List[Union[str, bytes]] = [f"text {i}" if i % 2 else f"{i}".encode()
                                     for i in range(300)]
    with connect(_url(server)) as client:
        assert client.recv(timeout=10) == "ready"
        for message in sent:
            client.send(message)
        assert [client.recv(timeout=10) for _ in sent] == sent
    assert ended.wait(10)
    assert wait_until(lambda: not _handler_threads())


def test_receive_timeout_returns_none_then_the_message(start_server, threads) -> None:
    app = App()

    @app.websocket("/ws", blocking=True)
    def waits(ws: BlockingWebSocket) -> None:
        ws.send(repr(ws.receive(timeout=0.05)))  # nothing sent yet
        ws.send("then " + str(ws.receive(timeout=30)))

    server = start_server(app, threads=threads)
    with connect(_url(server)) as client:
        assert client.recv(timeout=10) == "None"
        client.send("hello")
        assert client.recv(timeout=10) == "then hello"


def test_handler_ping_reaches_the_client(start_server, threads) -> None:
    app = App()

    @app.websocket("/ws", blocking=True)
    def pings(ws: BlockingWebSocket) -> None:
        ws.ping(b"are you there")
        ws.receive(timeout=30)

    server = start_server(app, threads=threads, ping_interval=0)
    client = wsclient.create_connection(_url(server), timeout=10)
    try:
        opcode, frame = client.recv_data_frame(True)
        assert opcode == wsclient.ABNF.OPCODE_PING
        assert frame.data == b"are you there"
    finally:
        client.close()


def test_handler_return_closes_with_1000(start_server, threads) -> None:
    app = App()

    @app.websocket("/ws", blocking=True)
    def once(ws: BlockingWebSocket) -> None:
        ws.send("bye")

    server = start_server(app, threads=threads)
    with connect(_url(server)) as client:
        assert client.recv(timeout=10) == "bye"
        with pytest.raises(ConnectionClosedOK):
            client.recv(timeout=10)
        assert client.close_code == 1000
    assert wait_until(lambda: not _handler_threads())


def test_handler_that_raises_closes_with_1011_and_is_logged(start_server, threads,
                                                           caplog) -> None:
    app = App()

    @app.websocket("/ws", blocking=True)
    def broken(ws: BlockingWebSocket) -> None:
        ws.receive(timeout=30)
        raise RuntimeError("handler bug")

    server = start_server(app, threads=threads)
    with caplog.at_level(logging.ERROR, logger="wssync.app"), connect(_url(server)) as client:
        client.send("boom")
        with pytest.raises(ConnectionClosed):
            client.recv(timeout=10)
        assert client.close_code == 1011
    assert any("handler bug" in (r.exc_text or "") or
               (r.exc_info and "handler bug" in str(r.exc_info[1])) for r in caplog.records)
    # The server goes on.
    with connect(_url(server)) as client:
        client.send("again")
        with pytest.raises(ConnectionClosed):
            client.recv(timeout=10)


def test_push_loop_ends_when_the_client_goes_away(start_server, threads) -> None:
    ended = threading.Event()
    app = App()

    @app.websocket("/ws", blocking=True)
    def push(ws: BlockingWebSocket) -> None:
        try:
            n = 0
            while True:  # never receives: send raises once the connection is closed
                ws.send(f"tick {n}")
                n += 1
                time.sleep(0.01)
        finally:
            ended.set()

    server = start_server(app, threads=threads)
    with connect(_url(server)) as client:
        assert client.recv(timeout=10) == "tick 0"
    assert ended.wait(10)
    assert wait_until(lambda: not _handler_threads())


def test_send_from_another_thread_and_broadcast_reach_a_blocking_handler(start_server,
                                                                         threads) -> None:
    app = App()

    @app.websocket("/ws", blocking=True)
    def listen(ws: BlockingWebSocket) -> None:
        for _ in ws:
            pass

    server = start_server(app, threads=threads)
    with connect(_url(server)) as client:
        assert wait_until(lambda: len(server.websockets) == 1)
        server.websockets[0].send("direct")
        server.broadcast("to all", path="/ws")
        assert client.recv(timeout=10) == "direct"
        assert client.recv(timeout=10) == "to all"


def test_stop_closes_with_1001_and_the_thread_ends(start_server, threads) -> None:
    ended = threading.Event()
    app = App()

    @app.websocket("/ws", blocking=True)
    def loop(ws: BlockingWebSocket) -> None:
        for _ in ws:
            pass
        ended.set()  # iteration ended cleanly on the server's 1001

    server = start_server(app, threads=threads)
    with connect(_url(server)) as client:
        assert wait_until(lambda: len(_handler_threads()) == 1)
        server.stop(timeout=20)
        with pytest.raises(ConnectionClosed):
            client.recv(timeout=10)
        assert client.close_code == 1001
    assert ended.is_set()  # stop waited for the handler
    assert not _handler_threads()


def test_receive_raises_connection_closed_on_stop(start_server, threads) -> None:
    raised: List[Any] = []
    app = App()

    @app.websocket("/ws", blocking=True)
    def reads(ws: BlockingWebSocket) -> None:
        try:
            ws.receive()
        except Exception as exc:
            raised.append(exc)

    server = start_server(app, threads=threads)
    with connect(_url(server)):
        assert wait_until(lambda: len(_handler_threads()) == 1)
        server.stop(timeout=20)
    assert len(raised) == 1
    assert isinstance(raised[0], WssyncClosed) and raised[0].code == 1001


def test_stop_does_not_wait_past_shutdown_grace_for_a_handler_that_ignores_it(
        start_server, threads) -> None:
    release = threading.Event()
    app = App()

    @app.websocket("/ws", blocking=True)
    def stubborn(ws: BlockingWebSocket) -> None:
        release.wait(60)  # neither receives nor sends

    server = start_server(app, threads=threads, shutdown_grace=0.5)
    try:
        with connect(_url(server)):
            assert wait_until(lambda: len(_handler_threads()) == 1)
            stopper = threading.Thread(target=server.stop, kwargs={"timeout": 30})
            stopper.start()
            stopper.join(20)
            assert not stopper.is_alive(), "stop() hung on a handler that ignores it"
            assert len(_handler_threads()) == 1  # left running, not waited for
    finally:
        release.set()
    assert wait_until(lambda: not _handler_threads())


def test_max_blocking_websockets_answers_503_with_retry_after(start_server, threads) -> None:
    app = App()

    @app.websocket("/ws", blocking=True)
    def hold(ws: BlockingWebSocket) -> None:
        for _ in ws:
            pass

    @app.websocket("/callback")
    def callback(ws: Any, message: Any) -> None:
        ws.send(message)

    server = start_server(app, threads=threads, max_blocking_websockets=2)
    with connect(_url(server)), connect(_url(server)) as second:
        with pytest.raises(InvalidStatus) as refused, connect(_url(server)):
            pass
        assert refused.value.response.status_code == 503
        assert refused.value.response.headers["Retry-After"] == "1"
        with connect(_url(server, "/callback")) as other:  # the callback style is not capped
            other.send("still here")
            assert other.recv(timeout=10) == "still here"
        second.close()
        assert wait_until(lambda: len(_handler_threads()) == 1)
        with connect(_url(server)) as third:  # a place is free again
            third.send("x")


def test_a_handler_that_does_not_receive_stops_the_reading_of_its_peer(start_server,
                                                                       threads) -> None:
    release = threading.Event()
    total = 32 * 1024  # 32 MiB in 1 KiB messages: more than the kernel buffers hold
    received: List[int] = []
    app = App()

    @app.websocket("/ws", blocking=True)
    def late(ws: BlockingWebSocket) -> None:
        release.wait(60)
        for _ in range(total):
            message = ws.receive(timeout=30)
            assert isinstance(message, bytes)
            received.append(int.from_bytes(message[:4], "big"))
        ws.send(f"got {len(received)}")
        ws.receive(timeout=30)

    server = start_server(app, threads=threads, ping_interval=0.2, ping_timeout=0.3)
    with connect(_url(server), compression=None, max_queue=None) as client:
        payload = bytes(1020)

        def send_all() -> None:
            for i in range(total):
                client.send(i.to_bytes(4, "big") + payload)

        sender = threading.Thread(target=send_all, daemon=True)
        sender.start()
        try:
            read = settled(lambda: _bytes_in(server), quiet=0.5, timeout=30)
            # The server stopped reading after max_queue (16) messages, at most one
            # read (64 KiB) past it, so the client's kernel buffers filled and its
            # sends block.
            assert read < 16 * KiB + 2 * 64 * KiB + 4 * KiB, read
            assert sender.is_alive()
            time.sleep(1.0)  # far past ping_timeout: a busy handler is not a dead peer
            assert _bytes_in(server) == read
        finally:
            release.set()
        sender.join(60)
        assert not sender.is_alive()
        assert client.recv(timeout=60) == f"got {total}"
    assert received == list(range(total))


def test_keepalive_goes_on_while_the_handler_blocks_elsewhere(start_server, threads) -> None:
    release = threading.Event()
    app = App()

    @app.websocket("/ws", blocking=True)
    def busy(ws: BlockingWebSocket) -> None:
        release.wait(60)  # e.g. a slow database call
        ws.send("alive")

    server = start_server(app, threads=threads, ping_interval=0.2, ping_timeout=0.5)
    client = wsclient.create_connection(_url(server), timeout=10)
    try:
        pings = 0
        while pings < 3:  # the server's keepalive pings, answered by websocket-client
            opcode, _ = client.recv_data_frame(True)
            assert opcode == wsclient.ABNF.OPCODE_PING
            pings += 1
        client.ping(b"mine")
        opcode, frame = client.recv_data_frame(True)
        while opcode == wsclient.ABNF.OPCODE_PING:
            opcode, frame = client.recv_data_frame(True)
        assert (opcode, frame.data) == (wsclient.ABNF.OPCODE_PONG, b"mine")
        release.set()
        assert client.recv() == "alive"
    finally:
        release.set()
        client.close()


def test_callback_route_keywords_are_refused_with_blocking() -> None:
    app = App()
    with pytest.raises(TypeError):
        app.websocket("/ws", blocking=True, on_connect=lambda ws: None)
