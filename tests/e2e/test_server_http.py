"""End-to-end HTTP/1.1 over real loopback sockets, in reactor and thread-pool mode."""

from __future__ import annotations

import http.client
import socket
import threading
import time
from typing import Iterator

import pytest
import requests
from helpers import raw_exchange, read_until_closed, wait_until

from wssync import App, Request, Response, Server
from wssync.config import SETTINGS


def make_app() -> App:
    app = App()

    @app.route("/hello")
    def hello(request: Request) -> str:
        return "hello"

    @app.route("/echo", methods=["POST", "PUT"])
    def echo(request: Request) -> Response:
        return Response(request.body, headers={"X-Method": request.method},
                        content_type="application/octet-stream")

    @app.route("/info")
    def info(request: Request) -> dict:
        return {
            "path": request.path,
            "query": request.query,
            "x": request.arg("x"),
            "accept": request.headers.get_all("X-Multi"),
            "remote": list(request.remote_addr[:2]),
        }

    @app.route("/users/<user_id>/items/<item>")
    def item(request: Request) -> dict:
        return request.path_params

    @app.route("/stream")
    def stream(request: Request) -> Response:
        def body() -> Iterator[bytes]:
            for i in range(5):
                yield b"part%d;" % i
        return Response(body(), content_type="text/plain")

    @app.route("/boom")
    def boom(request: Request) -> str:
        raise RuntimeError("handler failure")

    @app.route("/none")
    def none(request: Request) -> None:
        return None

    @app.route("/empty")
    def empty(request: Request) -> Response:
        return Response(b"", 204)

    return app


@pytest.fixture
def port(start_server, threads: int) -> int:
    return start_server(make_app(), threads=threads).address[1]


def test_get_and_keep_alive(port: int) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    for _ in range(3):
        conn.request("GET", "/hello")
        response = conn.getresponse()
        assert response.status == 200
        assert response.read() == b"hello"
        assert response.getheader("Content-Length") == "5"
        assert response.getheader("Server", "").startswith("wssync/")
        assert response.getheader("Date")
        assert response.getheader("Connection") is None
    # The same TCP connection served all three.
    assert conn.sock is not None
    conn.close()


def test_request_fields_reach_the_handler(port: int) -> None:
    response = requests.get(f"http://127.0.0.1:{port}/info?x=1&x=2&y=%20z",
                            headers={"X-Multi": "a"}, timeout=5)
    data = response.json()
    assert data["path"] == "/info"
    assert data["query"] == {"x": ["1", "2"], "y": [" z"]}
    assert data["x"] == "1"
    assert data["accept"] == ["a"]
    assert data["remote"][0] == "127.0.0.1"


def test_repeated_headers_are_kept(port: int) -> None:
    reply = raw_exchange(port, b"GET /info HTTP/1.1\r\nHost: x\r\nX-Multi: a\r\nx-multi: b\r\n"
                               b"Connection: close\r\n\r\n")
    assert b'"accept":["a","b"]' in reply


def test_path_parameters(port: int) -> None:
    assert requests.get(f"http://127.0.0.1:{port}/users/42/items/abc", timeout=5).json() == {
        "user_id": "42", "item": "abc"}


def test_post_content_length_and_chunked(port: int) -> None:
    body = bytes(range(256)) * 1000
    response = requests.post(f"http://127.0.0.1:{port}/echo", data=body, timeout=5)
    assert response.status_code == 200
    assert response.content == body
    # A generator body makes requests send Transfer-Encoding: chunked.
    response = requests.put(f"http://127.0.0.1:{port}/echo",
                            data=(b"chunk%d" % i for i in range(50)), timeout=5)
    assert response.content == b"".join(b"chunk%d" % i for i in range(50))
    assert response.headers["X-Method"] == "PUT"


def test_pipelined_requests_answered_in_order(port: int) -> None:
    requests_bytes = b"".join(
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(p), p)
        for p in (b"first", b"second", b"third")
    ) + b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    reply = raw_exchange(port, requests_bytes)
    assert reply.count(b"HTTP/1.1 200 OK") == 4
    assert reply.index(b"first") < reply.index(b"second") < reply.index(b"third") \
        < reply.index(b"hello")


def test_head_has_length_but_no_body(port: int) -> None:
    reply = raw_exchange(port, b"HEAD /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert b"Content-Length: 5" in head
    assert body == b""


def test_http10_keep_alive_rules(port: int) -> None:
    reply = raw_exchange(port, b"GET /hello HTTP/1.0\r\n\r\n")
    assert reply.startswith(b"HTTP/1.0 200")
    assert b"Connection: close" in reply  # and the server closed (raw_exchange returned)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        for _ in range(2):
            sock.sendall(b"GET /hello HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            data = b""
            while not data.endswith(b"hello"):
                data += sock.recv(4096)
            assert b"Connection: keep-alive" in data


def test_connection_close_is_honoured(port: int) -> None:
    reply = raw_exchange(port, b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                               b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
    assert reply.count(b"HTTP/1.1 200") == 1
    assert b"Connection: close" in reply


def test_expect_100_continue(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
                     b"Expect: 100-continue\r\n\r\n")
        assert sock.recv(4096) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b"data")
        reply = b""
        while not reply.endswith(b"data"):
            reply += sock.recv(4096)
        assert reply.startswith(b"HTTP/1.1 200")


def test_streamed_body_is_chunked(port: int) -> None:
    reply = raw_exchange(port, b"GET /stream HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    head, _, body = reply.partition(b"\r\n\r\n")
    assert b"Transfer-Encoding: chunked" in head
    assert body == b"".join(b"%x\r\npart%d;\r\n" % (6, i) for i in range(5)) + b"0\r\n\r\n"
    assert requests.get(f"http://127.0.0.1:{port}/stream", timeout=5).text == \
        "part0;part1;part2;part3;part4;"


def test_streamed_body_http10_ends_with_close(port: int) -> None:
    reply = raw_exchange(port, b"GET /stream HTTP/1.0\r\n\r\n")
    head, _, body = reply.partition(b"\r\n\r\n")
    assert b"Transfer-Encoding" not in head
    assert body == b"part0;part1;part2;part3;part4;"


def test_no_body_statuses(port: int) -> None:
    reply = raw_exchange(port, b"GET /empty HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 204")
    assert b"Content-Length" not in reply


def test_error_statuses(port: int) -> None:
    base = f"http://127.0.0.1:{port}"
    assert requests.get(base + "/missing", timeout=5).status_code == 404
    response = requests.delete(base + "/echo", timeout=5)
    assert response.status_code == 405
    assert response.headers["Allow"] == "POST, PUT"
    assert requests.get(base + "/boom", timeout=5).status_code == 500
    assert requests.get(base + "/none", timeout=5).status_code == 500
    # The server goes on after handler failures.
    assert requests.get(base + "/hello", timeout=5).text == "hello"


@pytest.mark.parametrize("request_bytes, status", [
    (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
    (b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-Big: " + b"a" * 70000 + b"\r\n\r\n", 431),
    (b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999\r\n\r\n", 413),
    (b"GARBAGE\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\n\r\n", 400),  # no Host
    (b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505),
    (b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
     400),
])
def test_bad_requests_get_status_and_close(port: int, request_bytes: bytes, status: int) -> None:
    reply = raw_exchange(port, request_bytes)
    assert reply.startswith(b"HTTP/1.1 %d " % status)
    assert b"Connection: close" in reply


def test_body_over_limit_is_413(start_server, threads: int) -> None:
    server = start_server(make_app(), threads=threads, max_body_size=1000)
    port = server.address[1]
    reply = raw_exchange(port, b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                               b"\r\n800\r\n" + b"a" * 0x800 + b"\r\n0\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 413 ")


def test_idle_keepalive_connection_is_closed(start_server, threads: int) -> None:
    server = start_server(make_app(), threads=threads, keepalive_timeout=0.3)
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", server.address[1]), timeout=10) as sock:
        sock.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while not data.endswith(b"hello"):
            data += sock.recv(4096)
        assert sock.recv(4096) == b""  # closed by the server
    # Timers never fire early: a close this soon came from the 0.3 s setting, not
    # from the default, however slow the machine.
    assert time.monotonic() - started < SETTINGS["keepalive_timeout"].default


def test_slow_request_head_times_out_with_408(start_server, threads: int) -> None:
    server = start_server(make_app(), threads=threads, header_timeout=0.3)
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", server.address[1]), timeout=15) as sock:
        sock.sendall(b"GET /hello HTTP/1.1\r\nHo")
        reply = sock.recv(4096)
        assert reply.startswith(b"HTTP/1.1 408 ")
    # Timers never fire early: this soon, it was the 0.3 s setting, not the default.
    assert time.monotonic() - started < SETTINGS["header_timeout"].default


def test_half_close_after_request_still_gets_response(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
        sock.shutdown(socket.SHUT_WR)
        data = read_until_closed(sock)
    assert data.startswith(b"HTTP/1.1 200") and data.endswith(b"hello")


def test_ipv6_listener(start_server) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this machine")
    try:
        server = start_server(make_app(), host="::1")
    except OSError:
        pytest.skip("cannot bind ::1")
    conn = http.client.HTTPConnection("::1", server.address[1], timeout=5)
    conn.request("GET", "/hello")
    assert conn.getresponse().read() == b"hello"
    conn.close()


def test_blocking_handler_does_not_stall_others_in_thread_mode(start_server) -> None:
    app = make_app()
    entered, release = threading.Event(), threading.Event()

    @app.route("/block")
    def block(request: Request) -> str:
        entered.set()
        release.wait(30)
        return "released"

    server = start_server(app, threads=4)
    port = server.address[1]
    results = {}

    def blocked() -> None:
        results["block"] = requests.get(f"http://127.0.0.1:{port}/block", timeout=30).text

    thread = threading.Thread(target=blocked)
    thread.start()
    try:
        assert entered.wait(10)
        # The handler stays blocked until released below: every answer here
        # arrives while it blocks.
        for _ in range(20):
            assert requests.get(f"http://127.0.0.1:{port}/hello", timeout=10).text == "hello"
        assert "block" not in results
    finally:
        release.set()
    thread.join(15)
    assert results["block"] == "released"


def test_many_concurrent_clients(port: int) -> None:
    errors = []

    def client() -> None:
        try:
            with requests.Session() as session:
                for _ in range(20):
                    assert session.get(f"http://127.0.0.1:{port}/hello", timeout=5).text == "hello"
        except Exception as exc:  # collected and asserted below
            errors.append(exc)

    workers = [threading.Thread(target=client) for _ in range(10)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert not errors


def date_of(reply: bytes) -> bytes:
    return next(line for line in reply.split(b"\r\n") if line.lower().startswith(b"date:"))


def test_max_connections_gets_503(start_server) -> None:
    server: Server = start_server(make_app(), max_connections=2)
    port = server.address[1]
    held = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(2)]
    try:
        assert wait_until(lambda: len(server.connections()) == 2)  # both accepted
        reply = raw_exchange(port, b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
        assert reply.startswith(b"HTTP/1.1 503 ")
        time.sleep(1.1)  # the next second: each refusal says when it was made
        later = raw_exchange(port, b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
        assert later.startswith(b"HTTP/1.1 503 ") and date_of(later) != date_of(reply)
    finally:
        for sock in held:
            sock.close()


def test_peer_that_stops_reading_is_dropped_after_send_timeout(start_server, threads: int) -> None:
    app = make_app()

    @app.route("/big")
    def big(request: Request) -> bytes:
        return b"x" * (32 * 1024 * 1024)

    server = start_server(app, threads=threads, send_timeout=0.5)
    port = server.address[1]
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
        # Dropped, though the client never closed (the default send_timeout is 60 s).
        assert wait_until(lambda: server.connections() == [], 10)
        # Meanwhile and afterwards the server answers others.
        assert requests.get(f"http://127.0.0.1:{port}/hello", timeout=5).text == "hello"
