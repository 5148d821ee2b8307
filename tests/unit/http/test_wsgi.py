"""WSGI (PEP 3333) applications on the same port as WebSocket routes."""

from __future__ import annotations

import signal
import socket
import sys
import threading
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Union

import pytest
import requests
from flask import Flask, abort, jsonify
from flask import Response as FlaskResponse
from flask import request as flask_request
from helpers import (
    finish,
    free_port,
    read_until_closed,
    run_server,
    wait_listening,
    wait_until,
)

from wssync import App, WebSocket
from wssync.client import connect

Environ = Dict[str, Any]
StartResponse = Callable[..., Any]


def flask_app() -> Flask:
    app = Flask(__name__)

    @app.route("/")
    def index() -> str:
        return "flask index"

    @app.route("/api/items", methods=["POST"])
    def create() -> Any:
        return jsonify(received=flask_request.get_json(), method=flask_request.method), 201

    @app.route("/stream")
    def stream() -> FlaskResponse:
        def generate() -> Iterator[str]:
            for i in range(3):
                yield f"row{i}\n"
        return FlaskResponse(generate(), mimetype="text/plain")

    @app.route("/missing")
    def missing() -> None:
        abort(404)

    @app.route("/crash")
    def crash() -> None:
        raise RuntimeError("view failure")

    return app


def combined_app(wsgi: Any) -> App:
    app = App()
    app.mount_wsgi(wsgi)

    @app.websocket("/ws")
    def echo(ws: WebSocket, message: Union[str, bytes]) -> None:
        ws.send(message)

    @app.route("/native")
    def native(request: Any) -> str:
        return "native route"

    return app


@pytest.fixture
def flask_port(start_server, threads: int) -> int:
    return start_server(combined_app(flask_app()), threads=threads).address[1]


def test_flask_and_websocket_on_one_port(flask_port: int) -> None:
    base = f"http://127.0.0.1:{flask_port}"
    assert requests.get(base + "/", timeout=5).text == "flask index"
    response = requests.post(base + "/api/items", json={"a": 1}, timeout=5)
    assert response.status_code == 201
    assert response.json() == {"received": {"a": 1}, "method": "POST"}
    assert requests.get(base + "/native", timeout=5).text == "native route"
    with connect(f"ws://127.0.0.1:{flask_port}/ws") as ws:
        ws.send("over websocket")
        assert ws.recv(timeout=5) == "over websocket"
        assert requests.get(base + "/", timeout=5).text == "flask index"


def test_flask_streaming_errors_and_404(flask_port: int) -> None:
    base = f"http://127.0.0.1:{flask_port}"
    response = requests.get(base + "/stream", timeout=5)
    assert response.text == "row0\nrow1\nrow2\n"
    assert response.headers.get("Transfer-Encoding") == "chunked"
    assert requests.get(base + "/missing", timeout=5).status_code == 404
    assert requests.get(base + "/crash", timeout=5).status_code == 500
    assert requests.get(base + "/", timeout=5).text == "flask index"  # still serving


def test_plain_get_to_a_websocket_route_is_426_even_with_wsgi(flask_port: int) -> None:
    # The WebSocket route is ours: a client that forgot to upgrade is told so,
    # rather than getting the WSGI app's 404.
    response = requests.get(f"http://127.0.0.1:{flask_port}/ws", timeout=5)
    assert response.status_code == 426
    assert response.headers["Upgrade"] == "websocket"


def test_wsgi_runs_on_workers_even_in_reactor_mode(start_server) -> None:
    flask = flask_app()
    entered, release = threading.Event(), threading.Event()

    @flask.route("/block")
    def block() -> str:
        entered.set()
        release.wait(30)
        return "released"

    server = start_server(combined_app(flask), threads=0)
    port = server.address[1]
    done: List[str] = []
    thread = threading.Thread(
        target=lambda: done.append(requests.get(f"http://127.0.0.1:{port}/block",
                                                timeout=30).text))
    thread.start()
    try:
        assert entered.wait(10)
        # The view blocks until released below: on the reactor thread it would
        # stall these.
        with connect(f"ws://127.0.0.1:{port}/ws") as ws:
            ws.send("x")
            assert ws.recv(timeout=10) == "x"
        assert requests.get(f"http://127.0.0.1:{port}/native", timeout=10).text == \
            "native route"
    finally:
        release.set()
    thread.join(15)
    assert done == ["released"]


def test_environ(start_server) -> None:
    seen: Dict[str, Any] = {}

    def app(environ: Environ, start_response: StartResponse) -> List[bytes]:
        seen.update(environ)
        seen["body"] = environ["wsgi.input"].read()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    server = start_server(combined_app(app), threads=2)
    port = server.address[1]
    response = requests.post(f"http://127.0.0.1:{port}/some%20path/x?q=1&r=2",
                             data=(b"part%d" % i for i in range(3)),
                             headers={"X-Custom": "v", "Content-Type": "application/x-test",
                                      "X_Spoofed": "no"}, timeout=5)
    assert response.text == "ok"
    assert seen["REQUEST_METHOD"] == "POST"
    assert seen["PATH_INFO"] == "/some path/x"
    assert seen["SCRIPT_NAME"] == ""
    assert seen["QUERY_STRING"] == "q=1&r=2"
    assert seen["SERVER_NAME"] == "127.0.0.1"
    assert seen["SERVER_PORT"] == str(port)
    assert seen["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert seen["REMOTE_ADDR"] == "127.0.0.1"
    assert seen["wsgi.url_scheme"] == "http"
    assert seen["wsgi.version"] == (1, 0)
    assert seen["wsgi.multithread"] is True
    assert seen["HTTP_X_CUSTOM"] == "v"
    assert seen["CONTENT_TYPE"] == "application/x-test"
    # The body came chunked: no length, and the input ends where the body ends.
    assert "CONTENT_LENGTH" not in seen and seen["wsgi.input_terminated"] is True
    assert seen["body"] == b"part0part1part2"
    assert "HTTP_X_SPOOFED" not in seen and "HTTP_X_Spoofed" not in seen


def test_write_callable_and_close(start_server) -> None:
    closed = threading.Event()

    class Body:
        def __iter__(self) -> Iterator[bytes]:
            yield b""
            yield b"-body1"
            yield b"-body2"

        def close(self) -> None:
            closed.set()

    def app(environ: Environ, start_response: StartResponse) -> Body:
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"written")
        return Body()

    port = start_server(combined_app(app), threads=2).address[1]
    assert requests.get(f"http://127.0.0.1:{port}/", timeout=5).text == "written-body1-body2"
    assert closed.wait(10)


@pytest.mark.parametrize("threads", [0, 4])
def test_a_streamed_body_never_sent_is_closed_all_the_same(start_server, threads: int) -> None:
    # A HEAD answer sends no body, so the server never iterates it past the first
    # chunk; PEP 3333 still asks for the application's close().
    closed = threading.Event()

    class Streamed:
        def __iter__(self) -> Iterator[bytes]:
            yield b"first"
            yield b"second"

        def close(self) -> None:
            closed.set()

    def app(environ: Environ, start_response: StartResponse) -> Streamed:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return Streamed()

    port = start_server(combined_app(app), threads=threads).address[1]
    answer = requests.head(f"http://127.0.0.1:{port}/", timeout=5)
    assert answer.status_code == 200 and answer.content == b""
    assert closed.wait(10)
    closed.clear()
    assert requests.get(f"http://127.0.0.1:{port}/", timeout=5).text == "firstsecond"
    assert closed.wait(10)


@pytest.mark.parametrize("threads", [0, 4])
def test_a_body_in_memory_is_closed_on_the_thread_that_ran_the_app(start_server,
                                                                    threads: int) -> None:
    # As Django's HttpResponse: an object iterating a list, whose close() ends the
    # request for the thread (Django closes that thread's database connections).
    ran: List[int] = []
    closed: List[int] = []

    class DjangoLike:
        def __init__(self, parts: List[bytes]) -> None:
            self.parts = parts

        def __iter__(self) -> Iterator[bytes]:
            return iter(self.parts)

        def close(self) -> None:
            closed.append(threading.get_ident())

    def app(environ: Environ, start_response: StartResponse) -> DjangoLike:
        ran.append(threading.get_ident())
        start_response("200 OK", [("Content-Type", "text/plain")])
        return DjangoLike([b"part one, ", b"part two"])

    port = start_server(combined_app(app), threads=threads).address[1]
    with requests.Session() as session:
        for _ in range(20):  # on a pool, a later task would land on another thread
            answer = session.get(f"http://127.0.0.1:{port}/", timeout=5)
            assert answer.text == "part one, part two"
            assert answer.headers["Content-Length"] == "18"
    assert len(closed) == 20 and closed == ran


def test_exc_info_replaces_headers_before_body(start_server) -> None:
    def app(environ: Environ, start_response: StartResponse) -> List[bytes]:
        start_response("200 OK", [("X-First", "1")])
        try:
            raise ValueError("late failure")
        except ValueError:
            start_response("500 Internal Server Error", [("X-Second", "2")], sys.exc_info())
        return [b"error page"]

    port = start_server(combined_app(app), threads=2).address[1]
    response = requests.get(f"http://127.0.0.1:{port}/", timeout=5)
    assert response.status_code == 500
    assert response.headers.get("X-Second") == "2" and "X-First" not in response.headers
    assert response.text == "error page"


def test_application_errors_give_500(start_server) -> None:
    def raises(environ: Environ, start_response: StartResponse) -> List[bytes]:
        raise RuntimeError("app failure")

    def no_start(environ: Environ, start_response: StartResponse) -> List[bytes]:
        return [b"forgot start_response"]

    for app in (raises, no_start):
        port = start_server(combined_app(app), threads=2).address[1]
        assert requests.get(f"http://127.0.0.1:{port}/", timeout=5).status_code == 500


def test_app_content_length_streams_without_chunking(start_server) -> None:
    def app(environ: Environ, start_response: StartResponse) -> Iterator[bytes]:
        start_response("200 OK", [("Content-Length", "10")])
        yield b"01234"
        yield b"56789"

    port = start_server(combined_app(app), threads=2).address[1]
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = read_until_closed(sock)
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"Content-Length: 10" in head and b"Transfer-Encoding" not in head
    assert body == b"0123456789"


def test_a_body_complete_at_its_declared_length_ends_on_the_apps_thread(
        start_server, threads: int) -> None:
    # A Flask answer: its length declared, its one chunk behind an iterator.  The
    # iterator runs to its end (the code after its last yield included) and is
    # closed on the thread that ran the app, as a list would be.
    ran: List[int] = []
    iterated: List[int] = []
    closed: List[int] = []

    def body() -> Iterator[bytes]:
        yield b"all of it"
        iterated.append(threading.get_ident())  # after the last yield

    class Answer:
        def __init__(self) -> None:
            self.chunks = body()

        def __iter__(self) -> Iterator[bytes]:
            return self.chunks

        def close(self) -> None:
            closed.append(threading.get_ident())

    def app(environ: Environ, start_response: StartResponse) -> Answer:
        ran.append(threading.get_ident())
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "9")])
        return Answer()

    port = start_server(combined_app(app), threads=threads).address[1]
    with requests.Session() as session:
        for _ in range(20):  # on a pool, a later task would land on another thread
            answer = session.get(f"http://127.0.0.1:{port}/", timeout=5)
            assert answer.text == "all of it" and answer.headers["Content-Length"] == "9"
    assert wait_until(lambda: len(closed) == 20)
    assert closed == ran and iterated == ran


def test_what_follows_a_complete_body_runs_after_the_client_has_it(
        start_server, threads: int, caplog: pytest.LogCaptureFixture) -> None:
    # The code after the last yield, and a close() that takes its time (Flask's
    # call_on_close), run once the answer is on its way; a chunk past the declared
    # length is not sent (nor the iterator asked again), and an error after the
    # whole body is logged, the answer already complete.
    release = threading.Event()
    events: List[str] = []

    def body(kind: str) -> Iterator[bytes]:
        yield b"0123456789"
        if kind == "slow":
            assert release.wait(10)
        elif kind == "more":
            yield b"x" * (1 << 20)
            events.append("asked again")  # never: the first extra chunk stops it
            yield b"y" * (1 << 20)
        elif kind == "fails":
            raise RuntimeError("after the body")
        events.append(f"{kind} tail")

    class Answer:
        def __init__(self, kind: str) -> None:
            self.kind = kind
            self.chunks = body(kind)

        def __iter__(self) -> Iterator[bytes]:
            return self.chunks

        def close(self) -> None:
            events.append(f"{self.kind} closed")

    def app(environ: Environ, start_response: StartResponse) -> Answer:
        start_response("200 OK", [("Content-Length", "10")])
        return Answer(environ["PATH_INFO"].strip("/"))

    port = start_server(combined_app(app), threads=threads).address[1]
    base = f"http://127.0.0.1:{port}"
    answer = requests.get(base + "/slow", timeout=5)  # before the tail is let go
    assert answer.status_code == 200 and answer.content == b"0123456789"
    assert events == []
    release.set()
    assert wait_until(lambda: events == ["slow tail", "slow closed"]), events
    for kind in ("more", "fails"):
        answer = requests.get(f"{base}/{kind}", timeout=5)
        assert answer.status_code == 200 and answer.content == b"0123456789"
        assert answer.headers["Content-Length"] == "10"
        assert wait_until(lambda kind=kind: events[-1] == f"{kind} closed"), events
    assert "asked again" not in events and "fails tail" not in events
    assert "WSGI application sent more than its Content-Length" in caplog.text
    assert "RuntimeError: after the body" in caplog.text


def test_cli_detects_a_wsgi_app(tmp_path: Path) -> None:
    (tmp_path / "legacy.py").write_text(
        "from flask import Flask\n"
        "app = Flask(__name__)\n"
        "@app.route('/')\n"
        "def index():\n"
        "    return 'legacy flask'\n"
    )
    port = free_port()
    proc = run_server(["--app", "legacy:app", "--host", "127.0.0.1", "--port", str(port)],
                      cwd=tmp_path)
    try:
        wait_listening(port, proc)
        assert requests.get(f"http://127.0.0.1:{port}/", timeout=5).text == "legacy flask"
    finally:
        proc.send_signal(signal.SIGTERM)
        finish(proc)
    assert proc.returncode == 0


def test_cli_serves_flask_and_a_websocket_on_one_port(tmp_path: Path) -> None:
    """The README's recipe under ``python -m wssync``: Flask pages plus a live WebSocket."""
    (tmp_path / "livesite.py").write_text(
        "from flask import Flask\n"
        "from wssync import App\n"
        "flask_app = Flask(__name__)\n"
        "@flask_app.route('/')\n"
        "def index():\n"
        "    app.server.broadcast('page viewed', path='/live')\n"
        "    return 'flask page'\n"
        "app = App()\n"
        "app.mount_wsgi(flask_app)\n"
        "app.websocket('/live')(lambda ws, message: ws.send('echo ' + message))\n"
    )
    port = free_port()
    proc = run_server(["--app", "livesite:app", "--host", "127.0.0.1", "--port", str(port)],
                      cwd=tmp_path)
    try:
        wait_listening(port, proc)
        with connect(f"ws://127.0.0.1:{port}/live") as ws:
            ws.send("hi")
            assert ws.recv(timeout=5) == "echo hi"
            assert requests.get(f"http://127.0.0.1:{port}/", timeout=5).text == "flask page"
            assert ws.recv(timeout=5) == "page viewed"  # pushed from the Flask view's thread
    finally:
        proc.send_signal(signal.SIGTERM)
        finish(proc)
    assert proc.returncode == 0

