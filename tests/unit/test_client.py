"""The blocking client against our server and an independent one (the websockets library)."""

from __future__ import annotations

import socket
import ssl
import struct
import threading
import time
from typing import Any, Dict, Iterator, List, Tuple, Union

import pytest
from conftest import TlsFiles
from helpers import accept_for, mask_bytes, read_until_closed
from websockets.sync.server import ServerConnection, serve

from wssync import App, WebSocket
from wssync.client import ConnectionClosed, HandshakeRefused, TlsError, connect


def echo_app() -> App:
    app = App()

    @app.websocket("/echo", subprotocols=["chat.v2"])
    def echo(ws: WebSocket, message: Union[str, bytes]) -> None:
        if message == "close-me":
            ws.close(4000, "as asked")
        elif message == "ping-me":
            ws.ping(b"srv")
            ws.send("pinged")
        else:
            ws.send(message)

    @app.websocket("/query")
    def query(ws: WebSocket, message: Union[str, bytes]) -> None:
        ws.send(ws.request.query_string + "|" + (ws.headers.get("X-Token") or ""))

    return app


@pytest.fixture
def wssync_url(start_server) -> str:
    server = start_server(echo_app(), ping_interval=0)
    return f"ws://127.0.0.1:{server.address[1]}"


@pytest.fixture
def websockets_url() -> Iterator[str]:
    """An independent server: the websockets library's threaded echo server."""

    def handler(conn: ServerConnection) -> None:
        for message in conn:
            conn.send(message)

    with serve(handler, "127.0.0.1", 0, compression=None) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        yield f"ws://127.0.0.1:{server.socket.getsockname()[1]}"
        server.shutdown()
        thread.join(5)


@pytest.mark.parametrize("which", ["wssync", "websockets"])
def test_echo_round_trips(which: str, request: pytest.FixtureRequest) -> None:
    base = request.getfixturevalue(f"{which}_url")
    path = "/echo" if which == "wssync" else "/"
    with connect(base + path, timeout=5) as ws:
        for message in ["hello", "", "ü" * 1000, b"\x00\xff" * 40000, b""]:
            ws.send(message)
            assert ws.recv(timeout=5) == message
        ws.ping(b"abc")
        ws.send("after ping")
        assert ws.recv(timeout=5) == "after ping"
        assert ws.pongs == 1
    assert ws.closed and ws.close_code == 1000


def test_subprotocol_query_and_headers(wssync_url: str) -> None:
    with connect(wssync_url + "/echo", subprotocols=["chat.v1", "chat.v2"]) as ws:
        assert ws.subprotocol == "chat.v2"
    with connect(wssync_url + "/query?a=1&b=2", headers=[("X-Token", "secret")]) as ws:
        ws.send("?")
        assert ws.recv(timeout=5) == "a=1&b=2|secret"


def test_server_close_and_ping_are_handled(wssync_url: str) -> None:
    with connect(wssync_url + "/echo") as ws:
        ws.send("ping-me")
        assert ws.recv(timeout=5) == "pinged"  # the server's ping was answered on the way
        ws.send("close-me")
        with pytest.raises(ConnectionClosed) as info:
            ws.recv(timeout=5)
        assert info.value.code == 4000 and info.value.reason == "as asked"
        with pytest.raises(ConnectionClosed):
            ws.send("too late")


def test_iteration_ends_on_normal_close(wssync_url: str) -> None:
    ws = connect(wssync_url + "/echo")
    ws.send("a")
    ws.send("b")
    ws.send("close-me")
    with pytest.raises(ConnectionClosed):
        list(ws)  # 4000 is not a normal close: iteration raises
    ws2 = connect(wssync_url + "/echo")
    for m in ("x", "y"):
        ws2.send(m)
    received = []
    for message in ws2:
        received.append(message)
        if len(received) == 2:
            ws2.close()
    assert received == ["x", "y"]


def test_recv_timeout(wssync_url: str) -> None:
    with connect(wssync_url + "/echo") as ws, pytest.raises(TimeoutError):
        ws.recv(timeout=0.2)


def test_refused_handshakes(wssync_url: str) -> None:
    with pytest.raises(HandshakeRefused) as info:
        connect(wssync_url + "/nowhere")
    assert info.value.status == 404
    with pytest.raises(ValueError):
        connect("http://127.0.0.1:1/")
    with pytest.raises(OSError):
        connect("ws://127.0.0.1:1/", timeout=2)


def test_a_server_with_a_wrong_accept_is_refused() -> None:
    # A real socket server that answers 101 but with an Accept for another key:
    # the client must not take it for a WebSocket.
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve_once() -> None:
        conn, _ = listener.accept()
        with conn:
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                head += chunk
            conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                         b"Connection: Upgrade\r\n"
                         b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n")
            conn.recv(4096)  # until the client gives up

    server = threading.Thread(target=serve_once)
    server.start()
    try:
        with pytest.raises(HandshakeRefused, match="Sec-WebSocket-Accept"):
            connect(f"ws://127.0.0.1:{port}/", timeout=5)
    finally:
        server.join(10)
        listener.close()


def test_send_from_several_threads(wssync_url: str) -> None:
    with connect(wssync_url + "/echo") as ws:
        def sender(n: int) -> None:
            for i in range(200):
                ws.send(f"{n}:{i}")

        threads = [threading.Thread(target=sender, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        received = [ws.recv(timeout=5) for _ in range(800)]
        for n in range(4):
            assert [m for m in received if str(m).startswith(f"{n}:")] == \
                [f"{n}:{i}" for i in range(200)]


def run_gevent(code: str) -> Any:
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)


def test_works_under_gevent_monkey_patching(wssync_url: str) -> None:
    pytest.importorskip("gevent")
    proc = run_gevent(
        "from gevent import monkey; monkey.patch_all()\n"
        "import gevent\n"
        "from wssync.client import connect\n"
        "def one(i):\n"
        f"    with connect('{wssync_url}/echo') as ws:\n"
        "        for j in range(20):\n"
        "            ws.send(f'{i}-{j}')\n"
        "            assert ws.recv(timeout=5) == f'{i}-{j}'\n"
        "    return i\n"
        "jobs = [gevent.spawn(one, i) for i in range(20)]\n"
        "gevent.joinall(jobs, timeout=30)\n"
        "print(sorted(j.value for j in jobs))\n"
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(list(range(20)))


def test_wss_against_the_websockets_library_tls_server(tls_files: TlsFiles) -> None:
    """``wss://`` to an independent TLS server: verified with the test CA, refused without."""

    def handler(conn: ServerConnection) -> None:
        for message in conn:
            conn.send(message)

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(tls_files.cert), str(tls_files.key))
    with serve(handler, "127.0.0.1", 0, ssl=context, compression=None) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            url = f"wss://localhost:{server.socket.getsockname()[1]}/echo"
            with connect(url, ssl_context=tls_files.client_context()) as ws:
                ws.send("over TLS")
                assert ws.recv(timeout=10) == "over TLS"
                ws.send(b"\x00" * 70000)
                assert ws.recv(timeout=10) == b"\x00" * 70000
            with pytest.raises(TlsError, match="not trusted"):
                connect(url, timeout=5)  # the system's trust store does not know the test CA
        finally:
            server.shutdown()
            thread.join(5)


# -- edge cases against a scripted peer ---------------------------------------------------------


def server_frame(opcode: int, payload: bytes = b"") -> bytes:
    """A frame as a server sends it: unmasked, unfragmented."""
    return bytes([0x80 | opcode]) + (
        bytes([len(payload)]) if len(payload) < 126 else b"\x7e" + len(payload).to_bytes(2, "big")
    ) + payload


class ScriptedPeer:
    """A WebSocket server on a real loopback socket that does exactly what a test
    says: a correct 101 for the client's key and, in the same write, the first
    of ``chunks``; the others follow a moment apart.  Then it reads what the
    client sends until the client closes: :meth:`client_frames`."""

    def __init__(self, chunks: List[bytes], hang_up: bool = False) -> None:
        self._hang_up = hang_up  # end TCP after the chunks, without a close frame
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"ws://127.0.0.1:{self._listener.getsockname()[1]}/"
        self._chunks = chunks
        self._received = b""
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        conn, _ = self._listener.accept()
        with conn:
            conn.settimeout(10)
            _line, headers, _ = read_head_of_request(conn)
            key = headers["sec-websocket-key"]
            conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                         b"Connection: Upgrade\r\nSec-WebSocket-Accept: "
                         + accept_for(key).encode() + b"\r\n\r\n" + self._chunks[0])
            for chunk in self._chunks[1:]:
                time.sleep(0.05)
                conn.sendall(chunk)
            if self._hang_up:
                return
            try:
                self._received = read_until_closed(conn)
            except OSError:
                pass

    def client_frames(self) -> List[Tuple[int, bytes]]:
        """Every frame the client sent, unmasked, once it closed the connection."""
        self._thread.join(10)
        self._listener.close()
        data, frames = self._received, []
        while data:
            opcode, length = data[0] & 0x0F, data[1] & 0x7F
            assert data[1] & 0x80, "client frames are masked"
            offset = 2
            if length == 126:
                length, offset = int.from_bytes(data[2:4], "big"), 4
            key = data[offset:offset + 4]
            payload = data[offset + 4:offset + 4 + length]
            frames.append((opcode, mask_bytes(payload, key)))
            data = data[offset + 4 + length:]
        return frames


def read_head_of_request(sock: socket.socket) -> Tuple[str, Dict[str, str], bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(4096)
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {name.strip().lower(): value.strip()
               for name, _, value in (line.partition(":") for line in lines[1:])}
    return lines[0], headers, rest


TEXT, BINARY, CLOSE, PING, PONG = 0x1, 0x2, 0x8, 0x9, 0xA


def test_frames_in_the_same_packet_as_the_101_come_first() -> None:
    peer = ScriptedPeer([server_frame(TEXT, b"first") + server_frame(BINARY, b"second")
                         + server_frame(PING, b"hi")])
    ws = connect(peer.url, timeout=5)
    assert ws.recv(timeout=2) == "first"
    assert ws.recv(timeout=2) == b"second"
    ws.close(timeout=0.5)
    assert peer.client_frames()[0] == (PONG, b"hi")  # the ping was answered at once


def test_a_frame_split_across_the_101_and_the_next_packet() -> None:
    whole = server_frame(TEXT, "ü".encode() * 100)
    peer = ScriptedPeer([whole[:7], whole[7:]])
    ws = connect(peer.url, timeout=5)
    assert ws.recv(timeout=2) == "ü" * 100
    ws.close(timeout=0.5)
    peer.client_frames()


def test_a_close_without_a_code_is_1005_with_no_reason() -> None:
    peer = ScriptedPeer([server_frame(TEXT, b"a") + server_frame(CLOSE)])
    ws = connect(peer.url, timeout=5)
    assert list(ws) == ["a"]  # a close without a code ends iteration quietly
    assert ws.closed and ws.close_code == 1005
    with pytest.raises(ConnectionClosed) as info:
        ws.recv(timeout=1)
    assert (info.value.code, info.value.reason) == (1005, "")
    # The answer carries no code either: 1005 is never sent on the wire.
    assert peer.client_frames() == [(CLOSE, b"")]


def test_a_close_with_a_code_and_reason_is_answered_with_that_code() -> None:
    peer = ScriptedPeer([server_frame(CLOSE, struct.pack("!H", 4001) + b"bye")])
    ws = connect(peer.url, timeout=5)
    with pytest.raises(ConnectionClosed) as info:
        list(ws)  # 4001 is not a normal end: iteration raises
    assert (info.value.code, info.value.reason) == (4001, "bye")
    assert peer.client_frames() == [(CLOSE, struct.pack("!H", 4001))]


@pytest.mark.parametrize("payload, code", [
    (struct.pack("!H", 1005), 1002),  # reserved: never in a frame
    (struct.pack("!H", 1006), 1002),
    (struct.pack("!H", 999), 1002),
    (struct.pack("!H", 1004), 1002),
    (struct.pack("!H", 5000), 1002),
    (b"\x03", 1002),  # one byte: half a code
    (struct.pack("!H", 1000) + b"\xff\xfe", 1007),  # a reason that is not UTF-8
], ids=["1005", "1006", "999", "1004", "5000", "one-byte", "bad-utf8"])
def test_a_close_with_a_bad_code_fails_the_connection(payload: bytes, code: int) -> None:
    peer = ScriptedPeer([server_frame(TEXT, b"before") + server_frame(CLOSE, payload)])
    ws = connect(peer.url, timeout=5)
    assert ws.recv(timeout=2) == "before"
    with pytest.raises(ConnectionClosed) as info:
        ws.recv(timeout=2)
    assert info.value.code == code
    with pytest.raises(ConnectionClosed):
        ws.send("too late")
    frames = peer.client_frames()
    assert [opcode for opcode, _ in frames] == [CLOSE]
    assert struct.unpack("!H", frames[0][1][:2])[0] == code


def test_a_connection_lost_without_a_close_is_1006() -> None:
    peer = ScriptedPeer([server_frame(TEXT, b"last")], hang_up=True)
    ws = connect(peer.url, timeout=5)
    assert ws.recv(timeout=2) == "last"
    with pytest.raises(ConnectionClosed) as info:
        list(ws)
    assert info.value.code == 1006
    peer.client_frames()


# -- a refusal says why, in the server's own words ------------------------------------------


def test_ws_on_the_tls_port_is_told_to_use_wss(start_server, tls_files: TlsFiles) -> None:
    server = start_server(echo_app(), ssl_context=tls_files.server_context())
    with pytest.raises(HandshakeRefused) as info:
        connect(f"ws://127.0.0.1:{server.address[1]}/echo", timeout=5)
    assert info.value.status == 400
    assert str(info.value) == ("server answered 400 instead of 101: Bad Request: this port "
                               "speaks TLS: use https:// or wss://")


def answer_once(response: bytes) -> Tuple[int, threading.Thread, socket.socket]:
    """A real server that reads one request head, sends ``response`` and waits
    for the client to close."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve_once() -> None:
        conn, _ = listener.accept()
        with conn:
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                head += chunk
            conn.sendall(response)
            read_until_closed(conn, timeout=10)

    thread = threading.Thread(target=serve_once)
    thread.start()
    return listener.getsockname()[1], thread, listener


@pytest.mark.parametrize("kind, body, expected", [
    ("text/plain; charset=utf-8", b"x" * 100_000,
     "server answered 403 instead of 101: " + "x" * 197 + "..."),  # bounded
    ("text/html", b"<html><body>Forbidden</body></html>",
     "server answered 403 instead of 101"),  # an error page is not shown
    ("text/plain", b"  origin\r\n  not allowed  ",
     "server answered 403 instead of 101: origin not allowed"),
])
def test_a_refusal_carries_a_short_plain_text_explanation(kind: str, body: bytes,
                                                          expected: str) -> None:
    port, thread, listener = answer_once(
        b"HTTP/1.1 403 Forbidden\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n%s"
        % (kind.encode(), len(body), body))
    try:
        with pytest.raises(HandshakeRefused) as info:
            connect(f"ws://127.0.0.1:{port}/", timeout=5)
        assert str(info.value) == expected
        assert info.value.status == 403
    finally:
        thread.join(10)
        listener.close()


def test_a_refusal_whose_body_never_comes_is_reported_in_bounded_time() -> None:
    port, thread, listener = answer_once(
        b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: 50\r\n\r\n"
        b"partial")
    try:
        started = time.monotonic()
        with pytest.raises(HandshakeRefused) as info:
            connect(f"ws://127.0.0.1:{port}/", timeout=30)
        assert time.monotonic() - started < 10  # about 2 s: not the 30 s timeout
        assert str(info.value) == "server answered 400 instead of 101: partial"
    finally:
        thread.join(10)
        listener.close()
