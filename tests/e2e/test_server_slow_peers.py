"""Slow peers end to end: blocking code waits for its peer, and a peer that reads is
never dropped.  Real servers on loopback, real clients (the ``websockets`` library,
curl, ``http.client``, and a raw socket that reads at a set rate), both modes, plain
and TLS.

Memory is asserted on counters (the bytes a connection holds unsent, sampled from
the handler), never on time; rates only make the server's output back up.
"""

from __future__ import annotations

import http.client
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import pytest
from conftest import TlsFiles
from helpers import SlowReader, free_port, wait_listening, wait_until
from websockets.sync.client import connect

from wssync import (
    App,
    BlockingWebSocket,
    ConnectionClosed,
    Request,
    Response,
    SendTimeout,
    Server,
)
from wssync.config import default

KiB = 1024
MiB = 1024 * KiB
HIGH_WATER = default("write_high_water")

slow = pytest.mark.slow  # seconds of real slow reading: left out of the quick passes


def payload(index: int, size: int) -> bytes:
    """Message ``index``: its bytes tell which message it is and where a cut would be."""
    block = bytes((index * 7 + i) % 251 for i in range(251))
    return (block * (size // 251 + 1))[:size]


def ws_url(server: Server, path: str, tls: bool = False) -> str:
    return f"{'wss' if tls else 'ws'}://localhost:{server.address[1]}{path}"


@pytest.fixture(params=[False, True], ids=["plain", "tls"])
def tls(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


def serve(start_server: Callable[..., Server], app: App, threads: int, tls: bool,
          tls_files: Optional[TlsFiles], **settings: Any) -> Server:
    if tls:
        assert tls_files is not None
        settings["ssl_context"] = tls_files.server_context()
    return start_server(app, threads=threads, **settings)


# -- large messages and bodies to readers that read ------------------------------------


def test_two_16_mib_messages_reach_a_fast_reader(start_server, threads: int, tls: bool,
                                                 tls_files: TlsFiles) -> None:
    app = App()
    sizes: List[int] = []

    @app.websocket("/two")
    def two(ws: Any, message: Any) -> None:
        for i in range(2):
            ws.send(payload(i, 16 * MiB))
        ws.send("done")  # a third write behind them, as a keepalive ping would be

    server = serve(start_server, app, threads, tls, tls_files)
    with connect(ws_url(server, "/two", tls), max_size=None, open_timeout=10,
                 ssl=tls_files.client_context() if tls else None) as client:
        client.send("go")
        for i in range(2):
            got = client.recv(timeout=60)
            assert got == payload(i, 16 * MiB)
            sizes.append(len(got))
        assert client.recv(timeout=30) == "done"
    assert sizes == [16 * MiB, 16 * MiB]


@slow
def test_64_mib_over_https_to_curl_reading_at_2_mib_per_s(start_server, threads: int,
                                                          tls_files: TlsFiles) -> None:
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    body = payload(3, 64 * MiB)
    app = App()

    @app.route("/big")
    def big(request: Request) -> bytes:
        return body

    server = start_server(app, threads=threads, ssl_context=tls_files.server_context(),
                          send_timeout=10.0)
    out = subprocess.run(
        ["curl", "-s", "--cacert", str(tls_files.ca), "--limit-rate", "2M",
         "-o", "-", f"https://localhost:{server.address[1]}/big"],
        capture_output=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    assert len(out.stdout) == len(body) and out.stdout == body


@slow
def test_64_mib_of_echoes_over_wss_to_a_reader_at_2_mib_per_s(start_server, threads: int,
                                                              tls_files: TlsFiles) -> None:
    app = App()

    @app.websocket("/echo")
    def echo(ws: Any, message: Any) -> None:
        ws.send(message)

    server = start_server(app, threads=threads, ssl_context=tls_files.server_context(),
                          send_timeout=10.0, max_message_size=32 * MiB, ping_interval=0)
    reader = SlowReader(server.address[1], "/echo", 2 * MiB, tls_files.client_context())
    messages = [payload(i, 16 * MiB) for i in range(4)]
    # The client sends all four at once from a thread, and reads slowly: the server
    # reads the next one only as its echoes drain.
    writer = threading.Thread(
        target=lambda: [reader.send(0x2, message) for message in messages], daemon=True)
    writer.start()
    try:
        for expected in messages:
            opcode, got = reader.message()
            assert opcode == 0x2 and got == expected
    finally:
        writer.join(30)
        reader.close()


def test_a_large_bytes_body_is_sent_without_a_copy(tmp_path: Path, threads: int) -> None:
    # The body costs its own size once: a 64 MiB answer joined to its head
    # would make the server's peak RSS grow by another 64 MiB.
    (tmp_path / "bigbody.py").write_text(
        "from wssync import App\n"
        "app = App()\n"
        "BODY = bytes(range(256)) * (64 * 1024 * 1024 // 256)\n"
        "@app.route('/big')\n"
        "def big(request):\n"
        "    return BODY\n")
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "wssync", "--app", "bigbody:app", "--host", "127.0.0.1",
         "--port", str(port), "--threads", str(threads)], cwd=tmp_path,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(tmp_path)})
    try:
        wait_listening(port, proc)
        status = Path(f"/proc/{proc.pid}/status")

        def kib(field: str) -> int:
            for line in status.read_text().splitlines():
                if line.startswith(field):
                    return int(line.split()[1])
            raise AssertionError(field)

        before = kib("VmRSS:")
        for _ in range(2):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            conn.request("GET", "/big")
            data = conn.getresponse().read()
            conn.close()
            assert len(data) == 64 * MiB
        grew = kib("VmHWM:") - before
        assert grew < 24 * 1024, f"peak RSS grew by {grew} KiB"
    finally:
        proc.terminate()
        proc.communicate(timeout=15)


def test_large_chunks_of_a_streamed_body_arrive_framed_and_whole(start_server,
                                                                threads: int) -> None:
    # Each 1 MiB chunk goes out between its size line and its end, not copied into them.
    chunks = [payload(i, MiB) for i in range(8)] + [b"tail"]
    app = App()

    @app.route("/chunks")
    def streamed(request: Request) -> Response:
        return Response(iter(chunks))

    server = start_server(app, threads=threads)
    conn = http.client.HTTPConnection("127.0.0.1", server.address[1], timeout=30)
    conn.request("GET", "/chunks")
    answer = conn.getresponse()
    assert answer.getheader("Transfer-Encoding") == "chunked"
    assert answer.read() == b"".join(chunks)
    conn.close()


# -- a thread's send waits for its own peer ------------------------------------------


def _stream_and_check(server: Server, path: str, samples: List[int], count: int,
                      size: int) -> None:
    reader = SlowReader(server.address[1], path, 4 * MiB)
    try:
        reader.send(0x1, b"go")
        for i in range(count):
            opcode, got = reader.message()
            assert opcode == 0x2 and len(got) == size, (i, opcode, len(got))
            assert got == payload(i, size), f"message {i} is not the one sent"
        opcode, data = reader.message()
        assert opcode == 0x8 and data[:2] == b"\x03\xe8"  # 1000: the handler returned
    finally:
        reader.close()
    # What the connection held unsent never passed the high-water mark plus the
    # message being written (and what the reactor had not yet taken from the thread).
    assert len(samples) == count
    assert max(samples) <= 2 * HIGH_WATER + size, max(samples)


@slow
def test_a_blocking_handler_streams_64_mib_paced_by_its_peer(start_server,
                                                            threads: int) -> None:
    samples: List[int] = []
    app = App()

    @app.websocket("/stream", blocking=True)
    def stream(ws: BlockingWebSocket) -> None:
        assert ws.receive(timeout=10) == "go"
        for i in range(64):
            ws.send(payload(i, MiB))
            samples.append(ws.buffered_amount)

    server = start_server(app, threads=threads, ping_interval=0)
    _stream_and_check(server, "/stream", samples, 64, MiB)


@slow
def test_a_callback_on_a_pool_thread_streams_64_mib_paced_by_its_peer(start_server) -> None:
    samples: List[int] = []
    app = App()

    @app.websocket("/stream")
    def stream(ws: Any, message: Any) -> None:
        for i in range(64):
            ws.send(payload(i, MiB))
            samples.append(ws.buffered_amount)
        ws.close()

    server = start_server(app, threads=4, ping_interval=0)
    _stream_and_check(server, "/stream", samples, 64, MiB)


@slow
def test_an_application_thread_streams_64_mib_in_reactor_mode(start_server) -> None:
    # Reactor mode: the callback hands the stream to a thread of the application's,
    # whose sends wait as they would on a pool thread.
    samples: List[int] = []
    app = App()

    def produce(ws: Any) -> None:
        for i in range(64):
            ws.send(payload(i, MiB))
            samples.append(ws.buffered_amount)
        ws.close()

    @app.websocket("/stream")
    def stream(ws: Any, message: Any) -> None:
        threading.Thread(target=produce, args=(ws,), daemon=True).start()

    server = start_server(app, threads=0, ping_interval=0)
    _stream_and_check(server, "/stream", samples, 64, MiB)


def _stalled_blocking_server(start_server, threads: int, timeout: Optional[float]
                             ) -> tuple[Server, Dict[str, Any], threading.Event]:
    outcome: Dict[str, Any] = {}
    done = threading.Event()
    app = App()

    @app.websocket("/push", blocking=True)
    def push(ws: BlockingWebSocket) -> None:
        sent = 0
        try:
            while sent < 256:
                ws.send(payload(sent, 256 * KiB), timeout=timeout)
                sent += 1
                outcome["buffered"] = max(outcome.get("buffered", 0), ws.buffered_amount)
        except Exception as exc:
            outcome["error"] = exc
        outcome["sent"] = sent
        done.set()

    server = start_server(app, threads=threads, ping_interval=0)
    return server, outcome, done


def test_a_send_waiting_for_a_peer_that_leaves_raises_connection_closed(start_server,
                                                                       threads: int) -> None:
    server, outcome, done = _stalled_blocking_server(start_server, threads, None)
    reader = SlowReader(server.address[1], "/push", 1)  # reads nothing after the handshake
    # The handler sends until its peer's output is full, then waits in send...
    assert wait_until(lambda: server.connections() and server.connections()[0]["bytes_out"]
                      > 0, timeout=10)
    time.sleep(0.5)
    assert not done.is_set()
    reader.close()  # ...until the peer goes: the waiting thread gets ConnectionClosed.
    assert done.wait(10)
    assert isinstance(outcome["error"], ConnectionClosed)
    assert outcome["sent"] < 256
    assert outcome["buffered"] <= 2 * HIGH_WATER + 256 * KiB


def test_send_with_a_timeout_gives_up_and_keeps_the_connection(start_server,
                                                               threads: int) -> None:
    server, outcome, done = _stalled_blocking_server(start_server, threads, 0.5)
    reader = SlowReader(server.address[1], "/push", 1)
    try:
        assert done.wait(15)
        error = outcome["error"]
        assert isinstance(error, SendTimeout) and isinstance(error, TimeoutError)
        assert "/push" in str(error) and "127.0.0.1" in str(error)
        assert outcome["sent"] < 256
        # The peer was not dropped: it reads now, and gets every message that was sent.
        reader.rate = 64 * MiB
        for i in range(outcome["sent"]):
            opcode, got = reader.message()
            assert opcode == 0x2 and got == payload(i, 256 * KiB)
    finally:
        reader.close()


# -- code on the reactor paces itself -------------------------------------------------


def test_reactor_code_paces_itself_with_buffered_amount_and_on_drain(start_server) -> None:
    state = {"next": 0, "max_buffered": 0, "drains": 0}
    total = 256  # 64 KiB each: 16 MiB
    app = App()

    def pump(ws: Any) -> None:
        while state["next"] < total and ws.buffered_amount < HIGH_WATER:
            ws.send(payload(state["next"], 64 * KiB))
            state["next"] += 1
            state["max_buffered"] = max(state["max_buffered"], ws.buffered_amount)

    def drained(ws: Any) -> None:
        state["drains"] += 1
        pump(ws)

    @app.websocket("/pump", on_drain=drained)
    def start(ws: Any, message: Any) -> None:
        pump(ws)

    server = start_server(app, threads=0, ping_interval=0)
    reader = SlowReader(server.address[1], "/pump", 8 * MiB)
    try:
        reader.send(0x1, b"go")
        for i in range(total):
            opcode, got = reader.message()
            assert opcode == 0x2 and got == payload(i, 64 * KiB)
    finally:
        reader.close()
    assert state["drains"] > 0
    assert state["max_buffered"] <= HIGH_WATER + 64 * KiB + 16


# -- broadcast -------------------------------------------------------------------------


def _feed_server(start_server, threads: int, **settings: Any) -> tuple[Server, App]:
    app = App()

    @app.websocket("/feed")
    def feed(ws: Any, message: Any) -> None:
        pass

    return start_server(app, threads=threads, ping_interval=0, **settings), app


def _read_all(reader: SlowReader, count: int, size: int, into: List[int]) -> None:
    try:
        for i in range(count):
            opcode, got = reader.message()
            assert opcode == 0x2 and got == payload(i, size)
            into.append(i)
    except (AssertionError, OSError) as exc:
        into.append(-1)
        print("reader stopped:", exc)


@slow
def test_broadcast_wait_is_paced_by_the_slowest_reader(start_server, threads: int) -> None:
    server, _ = _feed_server(start_server, threads)
    fast = [SlowReader(server.address[1], "/feed", 32 * MiB) for _ in range(3)]
    slow_readers = [SlowReader(server.address[1], "/feed", 4 * MiB) for _ in range(2)]
    assert wait_until(lambda: len(server.websockets) == 5)
    got: List[List[int]] = [[] for _ in range(5)]
    readers = [threading.Thread(target=_read_all, args=(r, 256, 64 * KiB, got[n]), daemon=True)
               for n, r in enumerate(fast + slow_readers)]
    for t in readers:
        t.start()
    peak = 0
    for i in range(256):  # 16 MiB
        server.broadcast(payload(i, 64 * KiB), wait=True)
        peak = max(peak, max(ws.buffered_amount for ws in server.websockets))
    for t in readers:
        t.join(60)
    for r in fast + slow_readers:
        r.close()
    assert all(g == list(range(256)) for g in got), [len(g) for g in got]
    assert peak <= 2 * HIGH_WATER + 64 * KiB, peak


@slow
def test_a_burst_does_not_drop_a_slow_reader_but_a_stuck_one_goes(start_server,
                                                                 threads: int) -> None:
    # Checks 3 s apart: a reader starved of CPU for a moment still shrinks its backlog.
    server, _ = _feed_server(start_server, threads, slow_peer_timeout=3.0)
    fast = SlowReader(server.address[1], "/feed", 64 * MiB)
    slower = SlowReader(server.address[1], "/feed", 6 * MiB)
    stuck = SlowReader(server.address[1], "/feed", 1)  # takes (next to) nothing
    assert wait_until(lambda: len(server.websockets) == 3)
    got: List[List[int]] = [[], []]
    readers = [threading.Thread(target=_read_all, args=(r, 320, 64 * KiB, got[n]),
                                daemon=True) for n, r in enumerate((fast, slower))]
    for t in readers:
        t.start()
    # One burst of 20 MiB, fire and forget: far past max_write_buffer for the slower
    # reader, whose backlog then shrinks; the stuck one's never does.
    for i in range(320):
        server.broadcast(payload(i, 64 * KiB))
    for t in readers:
        t.join(60)
    assert got[0] == list(range(320))
    assert got[1] == list(range(320))
    assert wait_until(lambda: len(server.websockets) == 2, timeout=15)
    for r in (fast, slower, stuck):
        r.close()


# -- misuse is answered at the call ---------------------------------------------------


def test_wrong_types_raise_type_error_naming_what_is_accepted(start_server,
                                                              threads: int) -> None:
    errors: Dict[str, str] = {}
    ready = threading.Event()
    app = App()

    @app.websocket("/ws")
    def ws_route(ws: Any, message: Any) -> None:
        for name, call in (("none", lambda: ws.send(None)), ("int", lambda: ws.send(42)),
                           ("ping", lambda: ws.ping("text")),
                           ("broadcast", lambda: server.broadcast(object()))):
            try:
                call()
            except TypeError as exc:
                errors[name] = str(exc)
        ws.send("still open")
        ready.set()

    server = start_server(app, threads=threads)
    with connect(ws_url(server, "/ws"), open_timeout=10) as client:
        client.send("go")
        assert client.recv(timeout=10) == "still open"
    assert ready.wait(5)
    assert "not NoneType" in errors["none"] and "str" in errors["none"]
    assert "bytes" in errors["none"]
    assert "not int" in errors["int"]
    assert "not str" in errors["ping"]
    assert "not object" in errors["broadcast"] and "broadcast()" in errors["broadcast"]


def test_a_callback_send_after_the_peer_closed_raises_as_blocking_style_does(
        start_server, threads: int) -> None:
    outcome: Dict[str, Any] = {}
    done = threading.Event()
    app = App()

    def closed(ws: Any, code: int, reason: str) -> None:
        for style, call in (("send", lambda: ws.send("late")), ("ping", lambda: ws.ping())):
            try:
                call()
            except ConnectionClosed as exc:
                outcome[style] = exc.code
        ws.close()  # closing a closed connection is not an error
        done.set()

    @app.websocket("/ws", on_close=closed)
    def ws_route(ws: Any, message: Any) -> None:
        pass

    server = start_server(app, threads=threads)
    with connect(ws_url(server, "/ws"), open_timeout=10) as client:
        client.send("hello")
    assert done.wait(10)
    assert outcome == {"send": 1000, "ping": 1000}


def test_a_handler_whose_send_finds_the_connection_closed_logs_no_error(start_server,
                                                                       caplog) -> None:
    # An echo on a pool thread for a message that came just before the close: the
    # send raises ConnectionClosed, which ends the handler quietly (no traceback).
    returned = threading.Event()
    app = App()

    @app.websocket("/echo")
    def echo(ws: Any, message: Any) -> None:
        assert wait_until(lambda: ws.closed, timeout=10)
        try:
            ws.send(message)
        finally:
            returned.set()

    server = start_server(app, threads=2)
    with caplog.at_level(logging.INFO, logger="wssync"):
        client = SlowReader(server.address[1], "/echo", 64 * MiB)
        client.send(0x1, b"last words")
        client.close()  # gone at once: the handler's answer finds the connection closed
        assert returned.wait(10)
        time.sleep(0.2)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


# -- the reactor says when a handler blocks it -------------------------------------------


def test_a_route_that_blocks_the_reactor_is_named_in_a_warning(start_server, caplog) -> None:
    app = App()

    @app.route("/slow")
    def slow_route(request: Request) -> str:
        time.sleep(1.2)
        return "late"

    @app.route("/fast")
    def fast_route(request: Request) -> str:
        return "quick"

    # A limit well above a busy machine's scheduling hiccups, well below the sleep.
    server = start_server(app, threads=0, slow_callback_warning=0.4)
    with caplog.at_level(logging.WARNING, logger="wssync.server"):
        conn = http.client.HTTPConnection("127.0.0.1", server.address[1], timeout=10)
        for _ in range(20):
            conn.request("GET", "/fast")
            assert conn.getresponse().read() == b"quick"
        time.sleep(0.3)
        assert not [r for r in caplog.records if "held the reactor" in r.getMessage()]
        conn.request("GET", "/slow")
        assert conn.getresponse().read() == b"late"
        conn.close()
        assert wait_until(lambda: any("held the reactor" in r.getMessage()
                                      for r in caplog.records), timeout=5)
    warnings = [r.getMessage() for r in caplog.records if "held the reactor" in r.getMessage()]
    assert len(warnings) == 1
    message = warnings[0]
    called = message.split(" has held the reactor")[0]  # the function the server called
    assert called.startswith("test_server_slow_peers.") and ".slow_route (" in called
    assert "--threads" in message and "blocking=True" in message
    assert "fast_route" not in message


def test_thread_pool_mode_has_no_watchdog(start_server) -> None:
    app = App()

    @app.route("/slow")
    def slow_route(request: Request) -> str:
        time.sleep(0.4)
        return "late"

    server = start_server(app, threads=2, slow_callback_warning=0.1)
    assert not [t for t in threading.enumerate() if t.name == "wssync-watchdog"]
    conn = http.client.HTTPConnection("127.0.0.1", server.address[1], timeout=10)
    conn.request("GET", "/slow")
    assert conn.getresponse().read() == b"late"
    conn.close()


def test_the_start_up_line_says_how_handlers_run(start_server, caplog) -> None:
    with caplog.at_level(logging.INFO, logger="wssync.server"):
        start_server(App(), threads=0)
        start_server(App(), threads=3)
    lines = [r.getMessage() for r in caplog.records if "serving on" in r.getMessage()]
    assert "reactor mode: handlers run on the reactor thread and must not block" in lines[0]
    assert "thread-pool mode: handlers run on 3 worker threads" in lines[1]
