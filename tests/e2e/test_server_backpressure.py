"""Bounded memory end to end: every queue between a peer and a handler has a limit.

Bounds are checked with counts (bytes the server read, chunks pulled, calls
that returned, connections accepted) and generous margins, never with time.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import socket
import threading
import time
from typing import Any, Iterator, List

import pytest
from helpers import refused, settled, wait_until
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from wssync import App, Request, Response, Server, WebSocket

KiB = 1024
MiB = 1024 * KiB


def _only_connection(server: Server, protocol: str) -> dict:  # type: ignore[type-arg]
    conns = [c for c in server.connections() if c["protocol"] == protocol]
    assert len(conns) == 1, conns
    return conns[0]


@contextlib.contextmanager
def _releasing(event: threading.Event) -> Iterator[None]:
    """Set ``event`` on the way out, so a failing test leaves no thread blocked."""
    try:
        yield
    finally:
        event.set()


# -- 1. a busy handler stops the reading of its peer (thread-pool mode) ---------------


def test_busy_handler_pauses_reading_and_resumes_in_order(start_server) -> None:
    release = threading.Event()
    received: List[bytes] = []

    app = App()

    @app.websocket("/ws")
    def slow(ws: WebSocket, message: bytes) -> None:
        release.wait(30)
        received.append(message)
        if len(received) == total:
            ws.send("all")

    total = 3000
    server = start_server(app, threads=4, ping_interval=0.2, ping_timeout=0.3)
    port = server.address[1]
    with connect(f"ws://127.0.0.1:{port}/ws", compression=None, max_queue=None) as ws, \
            _releasing(release):
        for i in range(total):
            ws.send(i.to_bytes(4, "big") + bytes(1020))  # 1 KiB messages, ~3 MiB in all
        read = settled(lambda: _only_connection(server, "websocket")["bytes_in"])
        # The handler is stuck in its first message: the server must have stopped
        # reading after max_queue (16) messages, one read (64 KiB) at most past it.
        assert read < 16 * KiB + 2 * 64 * KiB + 4 * KiB, read
        # Far longer than ping_timeout, yet the connection lives: the pong is
        # unread because we are not reading, which is not the peer's fault.
        time.sleep(1.0)
        assert _only_connection(server, "websocket")["bytes_in"] == read
        release.set()
        assert ws.recv(timeout=30) == "all"
    assert [int.from_bytes(m[:4], "big") for m in received] == list(range(total))


def test_backlog_in_bytes_pauses_too(start_server) -> None:
    release = threading.Event()
    count = []
    app = App()

    @app.websocket("/ws")
    def slow(ws: WebSocket, message: bytes) -> None:
        release.wait(30)
        count.append(len(message))

    server = start_server(app, threads=2, max_queue=1000, max_queue_bytes=256 * KiB)
    port = server.address[1]
    with connect(f"ws://127.0.0.1:{port}/ws", compression=None, max_queue=None) as ws, \
            _releasing(release):
        for _ in range(40):
            ws.send(bytes(64 * KiB))  # 2.5 MiB
        read = settled(lambda: _only_connection(server, "websocket")["bytes_in"])
        assert read < 256 * KiB + 3 * 64 * KiB, read
        release.set()
        assert wait_until(lambda: len(count) == 40, timeout=30)


def test_close_while_paused_completes_the_handshake(start_server) -> None:
    release = threading.Event()
    app = App()
    handles: List[WebSocket] = []

    @app.websocket("/ws", on_connect=handles.append)
    def slow(ws: WebSocket, message: bytes) -> None:
        release.wait(30)

    server = start_server(app, threads=2)
    port = server.address[1]
    try:
        with connect(f"ws://127.0.0.1:{port}/ws", compression=None, max_queue=None) as ws:
            for _ in range(200):
                ws.send(bytes(1024))
            settled(lambda: _only_connection(server, "websocket")["bytes_in"])
            assert wait_until(lambda: bool(handles))
            handles[0].close(1001, "going away")
            # The client's close answer sits behind unread messages: the server
            # must read past them to finish the close handshake.
            with pytest.raises(ConnectionClosed):
                while True:
                    ws.recv(timeout=10)
            assert ws.close_code == 1001
    finally:
        release.set()
    assert wait_until(lambda: not server.connections())


def test_pool_backlog_stops_accepting_connections(start_server) -> None:
    release = threading.Event()
    app = App()

    @app.route("/")
    def stuck(request: Request) -> str:
        release.wait(30)
        return "done"

    server = start_server(app, threads=1, max_queued_tasks=5)
    port = server.address[1]
    clients = []
    try:
        for _ in range(20):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            conn.request("GET", "/")
            clients.append(conn)
            # Clients arriving over time (not in one accept batch).
            accepted = settled(lambda: len(server.connections()), quiet=0.1)
        # 1 running + 5 queued fill the pool; the rest wait in the kernel backlog.
        assert accepted <= 8, accepted
    finally:
        release.set()
    for conn in clients:
        resp = conn.getresponse()
        assert resp.status == 200 and resp.read() == b"done"
        conn.close()


def test_streamed_body_is_pulled_only_as_the_peer_reads(start_server) -> None:
    pulled = [0]
    app = App()

    @app.route("/stream")
    def stream(request: Request) -> Response:
        def chunks() -> Iterator[bytes]:
            while True:
                pulled[0] += 1
                yield bytes(64 * KiB)

        return Response(chunks())

    server = start_server(app, threads=2)
    port = server.address[1]
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * KiB)
        sock.connect(("127.0.0.1", port))
        sock.sendall(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
        chunks = settled(lambda: pulled[0])
        # Socket buffers (a few MiB at most here) plus write_high_water: not the
        # endless body.
        assert chunks < 200, chunks


# -- 2. one broadcast frame, shared by every receiver ---------------------------------


def _peak_rss_reset() -> int:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return _status_kib("VmRSS")


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="needs Linux /proc")
def test_broadcast_frames_are_shared_not_copied_per_receiver(start_server, threads: int) -> None:
    readers, count, size = 20, 200, 64 * KiB  # 12.5 MiB per receiver, 250 MiB in all
    app = App()
    app.websocket("/ws")(lambda ws, message: None)
    server = start_server(app, threads=threads, max_write_buffer=64 * MiB,
                          ping_interval=0)
    port = server.address[1]
    socks = []
    for _ in range(readers):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * KiB)
        sock.connect(("127.0.0.1", port))
        sock.sendall(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                     b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                     b"Sec-WebSocket-Version: 13\r\n\r\n")
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(1)
        assert head.startswith(b"HTTP/1.1 101")
        socks.append(sock)
    assert wait_until(lambda: len(server.websockets) == readers)
    got = [0] * readers
    rss0 = _peak_rss_reset()

    def read(i: int) -> None:
        # Slow readers: the server holds most of the stream, and flushes often.
        sock = socks[i]
        want = count * (size + 10)
        while got[i] < want:
            data = sock.recv(16 * KiB)
            if not data:
                break
            got[i] += len(data)
            time.sleep(0.0005)

    threads_ = [threading.Thread(target=read, args=(i,)) for i in range(readers)]
    for t in threads_:
        t.start()
    payload = bytes(size)
    for _ in range(count):
        server.broadcast(payload, path="/ws")
    for t in threads_:
        t.join(120)
    growth_mib = (_status_kib("VmHWM") - rss0) / 1024
    for sock in socks:
        sock.close()
    assert got == [count * (size + 10)] * readers  # 10-byte header per 64 KiB frame
    # Shared, the stream costs its 12.5 MiB once; copied per receiver it would
    # cost up to 20 times that.
    assert growth_mib < 60, growth_mib


def test_broadcast_from_a_thread_waits_for_a_blocked_reactor(start_server) -> None:
    app = App()
    reactor_free = threading.Event()
    reactor_blocked = threading.Event()

    @app.route("/block")
    def block(request: Request) -> str:
        reactor_blocked.set()
        reactor_free.wait(30)  # a reactor-mode handler that blocks: the reactor stops
        return "ok"

    app.websocket("/ws")(lambda ws, message: None)
    server = start_server(app, threads=0, max_send_queue=1 * MiB)
    port = server.address[1]
    calls = [0]

    def produce() -> None:
        payload = bytes(64 * KiB)
        for _ in range(200):  # 12.5 MiB
            server.broadcast(payload)
            calls[0] += 1

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", "/block")
    with _releasing(reactor_free):
        # A reactor still running would fan out broadcasts before it blocks.
        assert reactor_blocked.wait(10)
        producer = threading.Thread(target=produce)
        producer.start()
        returned = settled(lambda: calls[0])
    producer.join(30)
    assert conn.getresponse().status == 200
    conn.close()
    # 1 MiB of 64 KiB broadcasts may wait for the reactor: 16, and one more past it.
    assert returned <= 17, returned
    assert calls[0] == 200


# -- 3. a graceful stop tells keep-alive clients it is closing ------------------------


def test_responses_during_stop_say_connection_close(start_server, threads: int) -> None:
    release = threading.Event()
    started = threading.Semaphore(0)

    def slow(environ: Any, start_response: Any) -> List[bytes]:
        # WSGI runs on worker threads in both modes, so it may block.
        started.release()
        release.wait(30)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"late"]

    app = App()
    app.mount_wsgi(slow)
    server = start_server(app, threads=threads)
    port = server.address[1]
    clients = [http.client.HTTPConnection("127.0.0.1", port, timeout=30) for _ in range(4)]
    for conn in clients:
        conn.request("GET", "/slow")
    for _ in clients:
        assert started.acquire(timeout=10)
    stopper = threading.Thread(target=server.stop)
    stopper.start()
    assert wait_until(lambda: refused(port))  # the stop has begun: no more accepting
    release.set()
    for conn in clients:
        resp = conn.getresponse()
        assert resp.read() == b"late"
        # The client learns it must not reuse the connection, so no request is lost.
        assert resp.getheader("Connection") == "close"
        assert resp.will_close
        conn.close()
    stopper.join(15)
