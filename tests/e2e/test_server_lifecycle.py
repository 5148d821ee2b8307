"""Start, stop and embedding: graceful shutdown, leaks, and the server as a context manager."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
from typing import Union

import pytest
import requests
from helpers import free_port, read_until_closed, refused, wait_listening, wait_until
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from wssync import App, Request, Server, WebSocket


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def make_app() -> App:
    app = App()

    @app.route("/hello")
    def hello(request: Request) -> str:
        return "hello"

    @app.websocket("/ws")
    def echo(ws: WebSocket, message: Union[str, bytes]) -> None:
        ws.send(message)

    return app


def test_context_manager_serves_and_stops() -> None:
    fds = open_fds()
    with Server(make_app(), "127.0.0.1", 0) as server:
        port = server.address[1]
        assert requests.get(f"http://127.0.0.1:{port}/hello", timeout=5).text == "hello"
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1)
    assert open_fds() <= fds


@pytest.mark.parametrize("threads", [0, 4])
def test_stop_closes_websockets_with_1001(threads: int) -> None:
    server = Server(make_app(), "127.0.0.1", 0, threads=threads).start()
    port = server.address[1]
    with contextlib.ExitStack() as stack:
        clients = [stack.enter_context(connect(f"ws://127.0.0.1:{port}/ws", open_timeout=5))
                   for _ in range(10)]
        for client in clients:
            client.send("ping")
            assert client.recv(timeout=5) == "ping"
        server.stop()
        for client in clients:
            with pytest.raises(ConnectionClosed) as info:
                client.recv(timeout=5)
            assert info.value.rcvd is not None and info.value.rcvd.code == 1001


def test_stop_lets_in_flight_response_finish() -> None:
    app = make_app()
    entered, release = threading.Event(), threading.Event()

    @app.route("/slow")
    def slow(request: Request) -> str:
        entered.set()
        release.wait(30)
        return "finished"

    server = Server(app, "127.0.0.1", 0, threads=2).start()
    port = server.address[1]
    result = {}

    def fetch() -> None:
        result["text"] = requests.get(f"http://127.0.0.1:{port}/slow", timeout=30).text

    thread = threading.Thread(target=fetch)
    thread.start()
    stopper = threading.Thread(target=server.stop)
    try:
        assert entered.wait(10)  # the handler is running
        stopper.start()
        assert wait_until(lambda: refused(port))  # the stop has begun
    finally:
        release.set()
        if stopper.ident is None:  # failed before the stop: stop anyway
            stopper.start()
    stopper.join(20)
    thread.join(10)
    assert result.get("text") == "finished"


def test_stop_after_grace_period_closes_everything() -> None:
    app = App()
    release = threading.Event()

    entered = threading.Event()

    @app.route("/stuck")
    def stuck(request: Request) -> str:
        entered.set()
        release.wait(30)
        return "late"

    server = Server(app, "127.0.0.1", 0, threads=1, shutdown_grace=0.5).start()
    port = server.address[1]
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        sock.sendall(b"GET /stuck HTTP/1.1\r\nHost: x\r\n\r\n")
        assert entered.wait(10)
        # The handler stays stuck (for 30 s): only the 0.5 s grace can end the stop
        # before stop() gives up waiting.
        server.stop(timeout=20)
        assert server._stopped.is_set()
        assert sock.recv(4096) == b""  # connection closed, no response
    finally:
        sock.close()
        release.set()


def test_no_fd_or_thread_leak_after_churn() -> None:
    server = Server(make_app(), "127.0.0.1", 0, threads=2).start()
    port = server.address[1]
    # Warm up, then count.
    requests.get(f"http://127.0.0.1:{port}/hello", timeout=5)
    assert wait_until(lambda: server.connections() == [])
    fds, threads = open_fds(), threading.active_count()
    for i in range(200):
        if i % 2:
            with connect(f"ws://127.0.0.1:{port}/ws", open_timeout=5) as ws:
                ws.send("x")
                assert ws.recv(timeout=5) == "x"
        else:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                sock.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                read_until_closed(sock)
        if i % 50 == 0:
            # A client that resets mid-request.
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                sock.sendall(b"GET /hel")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
    try:
        assert wait_until(lambda: server.connections() == [])
        assert wait_until(lambda: open_fds() <= fds), os.listdir("/proc/self/fd")
        # The clients' own background threads end shortly after they close.
        assert wait_until(lambda: threading.active_count() <= threads), threading.enumerate()
    finally:
        server.stop()


def test_handler_can_stop_the_server() -> None:
    app = App()
    stopped = threading.Event()

    @app.route("/quit")
    def quit_(request: Request) -> str:
        assert app.server is not None
        app.server.stop()  # on the reactor thread: must not deadlock
        stopped.set()
        return "bye"

    server = Server(app, "127.0.0.1", 0).start()
    port = server.address[1]
    assert requests.get(f"http://127.0.0.1:{port}/quit", timeout=5).text == "bye"
    assert stopped.wait(5)
    assert server._stopped.wait(5)


@pytest.mark.parametrize("port", [65536, 99999, -5, True, "80"])
def test_port_out_of_range_is_a_value_error(port: object) -> None:
    with pytest.raises(ValueError, match="0 to 65535"):
        Server(App(), port=port)  # type: ignore[arg-type]


SCRIPT = """
from wssync import App, Server

app = App()

@app.route("/hello")
def hello(request):
    return "hello"

@app.websocket("/ws")
def echo(ws, message):
    ws.send(message)

if __name__ == "__main__":
    Server(app, host="127.0.0.1", port={port}, threads={threads}).serve_forever()
"""


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_script_stops_gracefully_on_a_signal(tmp_path, sig: int, threads: int) -> None:
    port = free_port()
    script = tmp_path / "myserver.py"
    script.write_text(SCRIPT.format(port=port, threads=threads))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        wait_listening(port, proc)
        assert requests.get(f"http://127.0.0.1:{port}/hello", timeout=5).text == "hello"
        with connect(f"ws://127.0.0.1:{port}/ws") as ws:
            ws.send("hi")
            assert ws.recv(timeout=5) == "hi"
            proc.send_signal(sig)
            with pytest.raises(ConnectionClosed):
                ws.recv(timeout=10)
            assert ws.close_code == 1001  # a close frame, not a dropped connection
        _, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    # Logging was not configured: the server says where it listens, and logs access.
    assert f"serving on http://127.0.0.1:{port}/ (Ctrl-C to quit): HTTP and WebSocket" in err
    assert '"GET /hello HTTP/1.1" 200' in err
    assert "received, stopping" in err


def test_backgrounded_script_still_stops_on_sigint(tmp_path) -> None:
    # A shell starts background jobs with SIGINT ignored; kill -INT must still stop us.
    port = free_port()
    script = tmp_path / "bg.py"
    script.write_text(SCRIPT.format(port=port, threads=0))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        wait_listening(port, proc)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0 and "SIGINT received, stopping" in err

