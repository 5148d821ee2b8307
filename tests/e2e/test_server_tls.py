"""HTTPS and WSS on one port, end to end with independent clients, in both modes.

The server speaks TLS through ``wssync.tls``; the clients are the ``ssl``
module's own sockets, ``http.client``, the ``websockets`` library and
``wssync.client``, all verifying against the test CA of ``tls_files``.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import threading
import time
from typing import Any, Callable, List

import pytest
import websockets.exceptions
from conftest import TlsFiles
from helpers import frame, read_until_closed, settled, wait_until
from websockets.sync.client import connect as ws_connect

from wssync import App, Request, Response, Server, TlsError, WebSocket
from wssync.client import connect
from wssync.websocket.frames import FrameParser, Opcode, decode_close_payload

MiB = 1024 * 1024


def make_app() -> App:
    app = App()
    seen: List[str] = []

    @app.route("/hello")
    def hello(request: Request) -> str:
        return f"hello over {request.scheme}"

    @app.route("/big")
    def big(request: Request) -> Response:
        return Response(b"z" * (4 * MiB))

    @app.route("/stream")
    def stream(request: Request) -> Response:
        return Response(iter([b"a" * 70000, b"b" * 70000, b"end"]))

    @app.websocket("/echo")
    def echo(ws: WebSocket, message: Any) -> None:
        if message == "close-4001":
            ws.close(4001, "as asked")
            return
        seen.append(ws.request.scheme)
        ws.send(message)

    app.seen = seen  # type: ignore[attr-defined]
    return app


@pytest.fixture
def tls_server(start_server: Callable[..., Server], tls_files: TlsFiles,
               threads: int) -> Server:
    return start_server(make_app(), threads, ssl_context=tls_files.server_context(),
                        max_message_size=17 * MiB)


def https(server: Server, tls_files: TlsFiles) -> http.client.HTTPSConnection:
    return http.client.HTTPSConnection("localhost", server.address[1], timeout=10,
                                       context=tls_files.client_context())


def test_https_keep_alive_requests_on_one_connection(tls_server: Server,
                                                     tls_files: TlsFiles) -> None:
    conn = https(tls_server, tls_files)
    ports = set()
    for _ in range(3):
        conn.request("GET", "/hello")
        response = conn.getresponse()
        assert response.status == 200
        assert response.read() == b"hello over https"
        assert conn.sock is not None
        ports.add(conn.sock.getsockname()[1])
    assert len(ports) == 1  # one TLS connection served all three
    conn.request("GET", "/big")
    assert len(conn.getresponse().read()) == 4 * MiB
    conn.request("GET", "/stream")
    response = conn.getresponse()
    assert response.getheader("Transfer-Encoding") == "chunked"
    assert response.read() == b"a" * 70000 + b"b" * 70000 + b"end"
    assert [c["transport"] for c in tls_server.connections()] == ["tls"]
    conn.close()


def test_wss_echo_big_messages_pings_and_close_codes(tls_server: Server,
                                                     tls_files: TlsFiles) -> None:
    url = f"wss://localhost:{tls_server.address[1]}/echo"
    with ws_connect(url, ssl=tls_files.client_context(), max_size=None,
                    compression=None) as ws:
        ws.send("hello")
        assert ws.recv(timeout=10) == "hello"
        payload = bytes(range(256)) * (16 * MiB // 256)
        ws.send(payload)
        assert ws.recv(timeout=30) == payload
        for i in range(500):
            ws.send(str(i))
        assert [ws.recv(timeout=10) for _ in range(500)] == [str(i) for i in range(500)]
        ws.ping(b"are you there").wait(10)
        connections = tls_server.connections()
        assert [c["transport"] for c in connections if c["protocol"] == "websocket"] == ["tls"]
        ws.send("close-4001")
        with pytest.raises(websockets.exceptions.ConnectionClosed) as closed:
            ws.recv(timeout=10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4001
    assert set(tls_server.app.seen) == {"https"}  # type: ignore[attr-defined]


def test_no_session_tickets_and_tls12_resumes_from_the_session_cache(
        tls_server: Server, tls_files: TlsFiles) -> None:
    """No client ever gets a ticket: TLS 1.3 sends them after the handshake,
    where a client writing its request while another thread reads (the
    ``websockets`` sync client) can lose it, and the ticket key never rotates.
    A TLS 1.2 client still resumes, from the server's session cache."""

    def fetch(context: ssl.SSLContext, session: Any = None) -> ssl.SSLSocket:
        sock = context.wrap_socket(
            socket.create_connection(("127.0.0.1", tls_server.address[1]), timeout=10),
            server_hostname="localhost", session=session)
        sock.sendall(b"GET /hello HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        # The answer comes after any ticket would have: the client has read them.
        assert read_until_closed(sock).endswith(b"hello over https")
        return sock

    for version in ("TLSv1.3", "TLSv1.2"):
        context = tls_files.client_context()
        context.maximum_version = ssl.TLSVersion[version.replace(".", "_")]
        first = fetch(context)
        assert first.version() == version
        assert first.session is not None and not first.session.has_ticket
        again = fetch(context, first.session)
        assert again.session_reused == (version == "TLSv1.2")
        first.close()
        again.close()


def test_wssync_client_over_tls_and_its_errors(tls_server: Server, tls_files: TlsFiles,
                                               start_server: Callable[..., Server],
                                               threads: int) -> None:
    port = tls_server.address[1]
    with connect(f"wss://localhost:{port}/echo", ssl_context=tls_files.client_context()) as ws:
        ws.send(b"\x00binary")
        assert ws.recv(timeout=10) == b"\x00binary"
    # The system trust store does not know the test CA: a clear error, no traceback maze.
    with pytest.raises(TlsError, match="not trusted"):
        connect(f"wss://localhost:{port}/echo")
    # A certificate for another name.
    other = start_server(make_app(), threads, ssl_context=_context(tls_files.other_cert,
                                                                   tls_files.other_key))
    with pytest.raises(TlsError, match=r"not trusted|match"):
        connect(f"wss://localhost:{other.address[1]}/echo",
                ssl_context=tls_files.client_context())
    # wss:// to a plain server: TLS fails, and says so.
    plain = start_server(make_app(), threads)
    with pytest.raises(TlsError):
        connect(f"wss://127.0.0.1:{plain.address[1]}/echo",
                ssl_context=tls_files.client_context(), timeout=5)


def _context(cert: Any, key: Any) -> ssl.SSLContext:
    from wssync.io.tls import server_context

    return server_context(str(cert), str(key))


def tls_socket(server: Server, tls_files: TlsFiles) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", server.address[1]), timeout=10)
    # suppress_ragged_eofs=False: an end without close_notify raises instead of b"".
    return tls_files.client_context().wrap_socket(raw, server_hostname="localhost",
                                                  suppress_ragged_eofs=False)


def upgraded_tls_socket(server: Server, tls_files: TlsFiles) -> ssl.SSLSocket:
    """A raw TLS socket that has switched ``/echo`` to WebSocket (101 read, nothing more)."""
    sock = tls_socket(server, tls_files)
    sock.sendall(b"GET /echo HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
                 b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                 b"Sec-WebSocket-Version: 13\r\n\r\n")
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101 ")
    return sock


def test_graceful_close_sends_close_notify(tls_server: Server, tls_files: TlsFiles) -> None:
    sock = tls_socket(tls_server, tls_files)
    sock.sendall(b"GET /hello HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
    data = read_until_closed(sock)  # raises SSLEOFError if the server just dropped TCP
    assert data.startswith(b"HTTP/1.1 200 OK\r\n") and data.endswith(b"hello over https")
    sock.close()


def test_pipelined_requests_in_one_tls_write_are_all_answered(tls_server: Server,
                                                             tls_files: TlsFiles) -> None:
    # Many requests in one write arrive as a few records; every one must be read
    # even though the socket signals readiness only once for them.
    sock = tls_socket(tls_server, tls_files)
    sock.sendall(b"GET /hello HTTP/1.1\r\nHost: localhost\r\n\r\n" * 200
                 + b"GET /hello HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
    data = read_until_closed(sock)
    assert data.count(b"HTTP/1.1 200 OK") == 201
    sock.close()


def test_plain_http_on_the_tls_port_gets_a_plain_400(tls_server: Server) -> None:
    with socket.create_connection(("127.0.0.1", tls_server.address[1]), timeout=10) as sock:
        sock.sendall(b"GET /hello HTTP/1.1\r\nHost: localhost\r\n\r\n")
        data = read_until_closed(sock)
    assert data.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert b"Connection: close" in data
    assert b"speaks TLS" in data


def test_a_non_reading_wss_peer_is_no_longer_read(start_server: Callable[..., Server],
                                                  tls_files: TlsFiles, threads: int) -> None:
    # Back-pressure through TLS: the echoes pile up unread, so the server stops
    # reading this peer; what it has read (bytes_in) then stays put.
    server = start_server(make_app(), threads, ssl_context=tls_files.server_context(),
                          write_high_water=64 * 1024, max_write_buffer=64 * MiB,
                          send_timeout=0)
    sock = upgraded_tls_socket(server, tls_files)
    message = frame(0x2, b"m" * 32 * 1024)
    sock.setblocking(False)
    sent = 0
    stuck_since = None
    while sent < 64 * MiB:  # push until both sides' buffers are full for a while
        try:
            sock.send(message)
            sent += len(message)
            stuck_since = None
        except (ssl.SSLWantWriteError, ssl.SSLWantReadError, BlockingIOError):
            stuck_since = stuck_since or time.monotonic()
            if time.monotonic() - stuck_since > 2:
                break
            time.sleep(0.01)

    def bytes_read() -> List[int]:
        return [c["bytes_in"] for c in server.connections() if c["protocol"] == "websocket"]

    read = bytes_read()
    assert read and read[0] < sent < 64 * MiB  # the server stopped taking our bytes
    assert settled(bytes_read, quiet=1.0) == read  # and does not read on
    sock.close()


def test_reload_certificates_serves_the_new_one_to_new_connections(
        start_server: Callable[..., Server], tls_files: TlsFiles, threads: int) -> None:
    server = start_server(make_app(), threads, ssl_context=tls_files.server_context())
    old = tls_socket(server, tls_files)
    first = old.getpeercert(binary_form=True)
    server.reload_certificates(str(tls_files.renewed_cert), str(tls_files.renewed_key))

    def new_cert() -> Any:
        sock = tls_socket(server, tls_files)
        cert = sock.getpeercert(binary_form=True)
        sock.close()
        return cert

    assert wait_until(lambda: new_cert() != first, 10)
    # The open connection keeps its session and is still served.
    old.sendall(b"GET /hello HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
    assert read_until_closed(old).endswith(b"hello over https")
    old.close()
    # A broken file is refused at once and the renewed certificate stays.
    with pytest.raises((ssl.SSLError, OSError)):
        server.reload_certificates(str(tls_files.ca), str(tls_files.key))


def test_many_clients_at_once(tls_server: Server, tls_files: TlsFiles) -> None:
    errors: List[BaseException] = []

    def client() -> None:
        try:
            conn = https(tls_server, tls_files)
            for _ in range(5):
                conn.request("GET", "/hello")
                assert conn.getresponse().read() == b"hello over https"
            conn.close()
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=client) for _ in range(20)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(30)
    assert not errors


def test_protocol_error_over_tls_half_closes_cleanly(tls_server: Server,
                                                     tls_files: TlsFiles) -> None:
    # An unmasked frame: the server answers 1002, then says close_notify and
    # sends FIN (half-close), while still reading until the client closes too.
    sock = upgraded_tls_socket(tls_server, tls_files)
    sock.sendall(frame(0x1, b"unmasked", mask=False))
    rest = read_until_closed(sock)  # raises if the end came without close_notify
    parser = FrameParser(expect_masked=False)
    parser.feed(rest)
    close = parser.next_frame()
    assert close is not None and close.opcode == Opcode.CLOSE
    assert decode_close_payload(close.payload)[0] == 1002
    sock.sendall(frame(0x8, (1002).to_bytes(2, "big")))  # our side still works
    sock.close()
