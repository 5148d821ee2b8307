"""A protocol of its own through the server's protocol registry, over real loopback sockets.

A toy line-echo protocol is registered for ``Upgrade: echo`` with
``server.protocols.add_upgrade`` (no HTTP code changes): it takes over the
connection after its ``101``, bytes that came with the request included,
while plain HTTP and WebSocket keep working on the same port.
"""

from __future__ import annotations

import logging
import socket
from typing import Iterator, Optional, Union

import pytest
from helpers import read_until_closed

from wssync import App, HandshakeRefused, Request, Response, Server
from wssync.client import connect
from wssync.http.connection import HttpConnection
from wssync.http.upgrade import Switch
from wssync.io.transport import Transport

SWITCHED = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n"


class LineEcho:
    """Sends every complete line back; closes when the client does."""

    name = "echo"

    def __init__(self) -> None:
        self.transport: Optional[Transport] = None
        self._partial = b""

    def connection_made(self, transport: Transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        *lines, self._partial = (self._partial + data).split(b"\n")
        for line in lines:
            self.transport.write(b"echo: " + line + b"\n")

    def eof_received(self) -> None:
        assert self.transport is not None
        self.transport.close()

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        pass

    def pause_writing(self) -> None:
        pass

    def resume_writing(self) -> None:
        pass

    def shutdown(self) -> None:
        assert self.transport is not None
        self.transport.close()


def echo_upgrade(conn: HttpConnection, request: Request) -> Union[Response, Switch]:
    if request.path != "/echo":
        return Response(b"no echo here\n", 404)
    return Switch(SWITCHED, LineEcho())


def make_app() -> App:
    app = App()

    @app.route("/hello")
    def hello(request: Request) -> str:
        return "hello"

    @app.websocket("/ws")
    def on_message(ws: object, message: Union[str, bytes]) -> None:
        ws.send(message)  # type: ignore[attr-defined]

    return app


def failing_upgrade(conn: HttpConnection, request: Request) -> Union[Response, Switch]:
    raise RuntimeError("the protocol's handler failed")


def serve(register: bool) -> Iterator[Server]:
    server = Server(make_app(), "127.0.0.1", 0)
    if register:
        server.protocols.add_upgrade("echo", echo_upgrade)
        server.protocols.add_upgrade("broken", failing_upgrade)
    server.start()
    try:
        yield server
    finally:
        server.stop(timeout=10)


@pytest.fixture
def server() -> Iterator[Server]:
    yield from serve(register=True)


@pytest.fixture
def plain_server() -> Iterator[Server]:
    yield from serve(register=False)


def echo_request(path: str = "/echo") -> bytes:
    return (f"GET {path} HTTP/1.1\r\nHost: test\r\nUpgrade: echo\r\n"
            "Connection: Upgrade\r\n\r\n").encode("ascii")


def read_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            break
        data += chunk
    return data


def test_registered_protocol_takes_the_connection_over(server: Server) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        # The first line comes in the same packet as the request.
        sock.sendall(echo_request() + b"first\n")
        expected = SWITCHED + b"echo: first\n"
        assert read_exactly(sock, len(expected)) == expected
        sock.sendall(b"sec")
        sock.sendall(b"ond\nthird\n")
        expected = b"echo: second\necho: third\n"
        assert read_exactly(sock, len(expected)) == expected
        sock.shutdown(socket.SHUT_WR)
        assert read_until_closed(sock) == b""


def test_handler_refusal_is_sent_and_closes(server: Server) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(echo_request("/elsewhere"))
        answer = read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 404 Not Found\r\n")
    assert answer.endswith(b"no echo here\n")


def test_failing_handler_answers_500_and_the_server_goes_on(
        server: Server, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="wssync.http"), \
            socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(echo_request().replace(b"Upgrade: echo", b"Upgrade: broken"))
        answer = read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 500 Internal Server Error\r\n")
    assert b"Connection: close\r\n" in answer
    assert [str(record.exc_info[1]) for record in caplog.records
            if record.name == "wssync.http" and record.exc_info] == [
        "the protocol's handler failed"]
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(echo_request() + b"still here\n")
        expected = SWITCHED + b"echo: still here\n"
        assert read_exactly(sock, len(expected)) == expected


def test_http_and_websocket_share_the_port(server: Server) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"GET /hello HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        answer = read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
    assert answer.endswith(b"hello")
    with connect(f"ws://127.0.0.1:{server.port}/ws") as ws:
        ws.send("over websocket")
        assert ws.recv(timeout=5) == "over websocket"


def test_unregistered_upgrade_is_plain_http(plain_server: Server) -> None:
    with socket.create_connection(("127.0.0.1", plain_server.port), timeout=5) as sock:
        sock.sendall(echo_request("/hello") + b"GET /hello HTTP/1.1\r\nHost: test\r\n"
                     b"Connection: close\r\n\r\n")
        answer = read_until_closed(sock)
    # Both requests are answered as HTTP: the first did not switch anything.
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
    assert answer.count(b"HTTP/1.1 200 OK\r\n") == 2
    assert b"101" not in answer.split(b"\r\n")[0]


def test_a_websocket_upgrade_registered_by_the_user_is_kept() -> None:
    def own(conn: HttpConnection, request: Request) -> Union[Response, Switch]:
        return Response(b"our own websocket\n", 418)

    server = Server(make_app(), "127.0.0.1", 0)
    server.protocols.add_upgrade("websocket", own)
    with server, pytest.raises(HandshakeRefused) as refused:
        connect(f"ws://127.0.0.1:{server.address[1]}/ws", timeout=5)
    assert refused.value.status == 418

