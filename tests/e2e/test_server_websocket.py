"""End-to-end WebSocket tests over real loopback sockets, in reactor and thread-pool mode.

Every test talks to a real ``wssync.Server`` through independent clients: the
``websockets`` sync client, ``websocket-client``, ``http.client``/``requests``
and raw sockets speaking hand-built RFC 6455 frames (for what well-behaved
clients refuse to send).  Nothing is mocked.
"""

from __future__ import annotations

import base64
import http.client
import os
import queue
import random
import socket
import struct
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

import pytest
import requests
import websocket  # websocket-client
from helpers import (
    WS_KEY,
    RawWS,
    Recorder,
    accept_for,
    close_payload,
    frame,
    handshake_bytes,
    http_exchange,
    http_get,
    parse_close,
    port_of,
    raw,
    read_head,
    read_until_closed,
    settled,
    wait_until,
)
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from wssync import App, Request, Server, WebSocket
from wssync import ConnectionClosed as WssyncClosed
from wssync.websocket.frames import Opcode

HOST = "127.0.0.1"
TIMEOUT = 5.0
KEY = WS_KEY


pytestmark = pytest.mark.timeout(30)


# -- the application under test ------------------------------------------------------------


class Fixture:
    def __init__(self) -> None:
        self.closes = Recorder()  # (path, code, reason, remote port)
        self.connects: queue.Queue[WebSocket] = queue.Queue()
        self.release = threading.Event()
        self.blocked = threading.Event()  # a "block" message reached the handler


def make_app() -> Tuple[App, Fixture]:
    app = App()
    fx = Fixture()

    def on_connect(ws: WebSocket) -> None:
        fx.connects.put(ws)

    def on_close(ws: WebSocket, code: int, reason: str) -> None:
        fx.closes.add((ws.path, code, reason, ws.remote_address[1]))

    @app.route("/health")
    def health(request: Request) -> str:
        return "ok"

    @app.websocket("/echo", on_connect=on_connect, on_close=on_close)
    def echo(ws: WebSocket, message: Any) -> None:
        ws.send(message)

    @app.websocket("/cmd", on_connect=on_connect, on_close=on_close)
    def cmd(ws: WebSocket, message: Any) -> None:
        if message == "raise":
            raise RuntimeError("handler failure (expected by the test)")
        if message == "block":
            fx.blocked.set()
            fx.release.wait(30)
            ws.send("unblocked")
        elif message.startswith("close:"):
            _, code, reason = message.split(":", 2)
            ws.close(int(code), reason)
        elif message.startswith("ping:"):
            ws.ping(message[5:].encode())
        elif message == "whoami":
            ws.send(f"{ws.path}|{ws.subprotocol}|{ws.remote_address[1]}|"
                    f"{ws.headers.get('x-test', '')}")
        elif message.startswith("jitter:"):
            time.sleep(random.uniform(0, 0.004))
            ws.send(message)
        else:
            ws.send(message)

    @app.websocket("/proto", subprotocols=["superchat"], on_close=on_close)
    def proto(ws: WebSocket, message: Any) -> None:
        ws.send(f"subprotocol={ws.subprotocol}")

    @app.websocket("/origin", origins=["https://good.example"], on_close=on_close)
    def origin(ws: WebSocket, message: Any) -> None:
        ws.send(message)

    @app.websocket("/room/<name>", on_connect=on_connect, on_close=on_close)
    def room(ws: WebSocket, message: Any) -> None:
        ws.send(message)

    return app, fx


@pytest.fixture
def serve(start_server: Callable[..., Server]) -> Callable[..., Tuple[Server, Fixture]]:
    def serve(threads: int = 0, **settings: Any) -> Tuple[Server, Fixture]:
        app, fx = make_app()
        settings.setdefault("shutdown_grace", 3.0)
        server = start_server(app, threads, **settings)
        return server, fx
    return serve


def ws_connect(server: Server, path: str = "/echo", **kwargs: Any) -> ClientConnection:
    kwargs.setdefault("open_timeout", TIMEOUT)
    kwargs.setdefault("close_timeout", TIMEOUT)
    kwargs.setdefault("proxy", None)
    kwargs.setdefault("compression", None)
    kwargs.setdefault("max_size", 4 * 1024 * 1024)
    return connect(f"ws://{HOST}:{port_of(server)}{path}", **kwargs)


def wsc_connect(server: Server, path: str = "/echo", **kwargs: Any) -> websocket.WebSocket:
    return websocket.create_connection(f"ws://{HOST}:{port_of(server)}{path}",
                                       timeout=TIMEOUT, **kwargs)


SIZES = [0, 1, 125, 126, 127, 65535, 65536, 65537, 1024 * 1024 + 3]


def payload_of(n: int) -> bytes:
    return (bytes(range(256)) * (n // 256 + 1))[:n]


# -- echo ----------------------------------------------------------------------------------


def test_echo_websockets_client(serve, clients, threads):
    server, _ = serve(threads)
    ws = clients.enter_context(ws_connect(server))
    for n in SIZES:
        text = ("abcdefghij" * (n // 10 + 1))[:n]
        ws.send(text)
        got = ws.recv(timeout=TIMEOUT)
        assert isinstance(got, str) and got == text, f"text echo of {n} bytes"
        data = payload_of(n)
        ws.send(data)
        got = ws.recv(timeout=TIMEOUT)
        assert isinstance(got, bytes) and got == data, f"binary echo of {n} bytes"
    unicode = "héllo wörld ✓ 😀 " * 1000
    ws.send(unicode)
    assert ws.recv(timeout=TIMEOUT) == unicode


def test_echo_websocket_client(serve, clients, threads):
    server, _ = serve(threads)
    ws = wsc_connect(server)
    clients.callback(ws.close)
    for n in SIZES:
        text = ("0123456789" * (n // 10 + 1))[:n]
        ws.send(text)
        opcode, data = ws.recv_data()
        assert opcode == websocket.ABNF.OPCODE_TEXT
        assert (data.decode() if isinstance(data, bytes) else data) == text, n
        blob = payload_of(n)[::-1]
        ws.send_binary(blob)
        opcode, data = ws.recv_data()
        assert opcode == websocket.ABNF.OPCODE_BINARY
        assert data == blob, n


def test_many_small_messages_pipelined_stay_in_order(serve, clients, threads):
    server, _ = serve(threads)
    conn = raw(server, clients)
    conn.sock.sendall(b"".join(frame(Opcode.TEXT, b"m%d" % i) for i in range(500)))
    for i in range(500):
        assert conn.recv_data() == (Opcode.TEXT, b"m%d" % i)


# -- handshake -----------------------------------------------------------------------------


def test_handshake_and_first_frames_in_one_packet(serve, clients, threads):
    server, fx = serve(threads)
    sock = socket.create_connection((HOST, port_of(server)), timeout=TIMEOUT)
    clients.callback(sock.close)
    sock.sendall(handshake_bytes("/echo") + frame(Opcode.TEXT, "first ✓".encode())
                 + frame(Opcode.BINARY, b"\x00\x01\x02") + frame(Opcode.PING, b"p"))
    status, headers, rest = read_head(sock)
    assert status == 101
    assert headers["upgrade"].lower() == "websocket"
    assert "upgrade" in headers["connection"].lower()
    assert headers["sec-websocket-accept"] == accept_for(KEY)
    conn = RawWS(sock, rest)
    frames = [conn.recv_frame() for _ in range(3)]
    assert (True, Opcode.PONG, b"p") in frames
    data = [f for f in frames if f[1] != Opcode.PONG]
    assert data == [(True, Opcode.TEXT, "first ✓".encode()), (True, Opcode.BINARY, b"\x00\x01\x02")]
    assert fx.connects.get(timeout=TIMEOUT).path == "/echo"


def test_handshake_exposes_request_to_handler(serve, clients, threads):
    server, _ = serve(threads)
    conn = raw(server, clients, "/cmd", headers={"X-Test": "hello"})
    conn.send_text("whoami")
    opcode, data = conn.recv_data()
    assert opcode == Opcode.TEXT
    path, subprotocol, port, header = data.decode().split("|")
    assert (path, subprotocol, header) == ("/cmd", "None", "hello")
    assert int(port) == conn.sock.getsockname()[1]


@pytest.mark.parametrize("version", ["8", "12", "14", "13, 8"])
def test_wrong_version_gets_426(serve, version):
    server, _ = serve()
    status, headers, _ = http_exchange(
        port_of(server), handshake_bytes(headers={"Sec-WebSocket-Version": version}))
    assert status == 426
    assert headers.get("sec-websocket-version") == "13"


@pytest.mark.parametrize("key", [
    None,  # missing
    base64.b64encode(b"12345678").decode(),  # 8 bytes, not 16
    base64.b64encode(b"0123456789abcdefg").decode(),  # 17 bytes
    "not base64 at all!!",
    "",
])
def test_bad_key_gets_400(serve, key):
    server, _ = serve()
    status, _, _ = http_exchange(port_of(server),
                                 handshake_bytes(headers={"Sec-WebSocket-Key": key}))
    assert status == 400


def test_post_with_upgrade_headers_gets_400(serve):
    server, _ = serve()
    request = handshake_bytes(method="POST", headers={"Content-Length": "0"})
    status, _, _ = http_exchange(port_of(server), request)
    assert status == 400


def test_upgrade_to_unknown_path_gets_404(serve, threads):
    server, _ = serve(threads)
    status, _, _ = http_exchange(port_of(server), handshake_bytes("/nowhere"))
    assert status == 404
    with pytest.raises(websocket.WebSocketBadStatusException) as info:
        wsc_connect(server, "/nowhere")
    assert info.value.status_code == 404


def test_plain_get_to_websocket_route_gets_426(serve, threads):
    server, _ = serve(threads)
    conn = http.client.HTTPConnection(HOST, port_of(server), timeout=TIMEOUT)
    try:
        conn.request("GET", "/echo")
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 426
        assert resp.getheader("Upgrade", "").lower() == "websocket"
        assert resp.getheader("Sec-WebSocket-Version") == "13"
    finally:
        conn.close()
    assert requests.get(f"http://{HOST}:{port_of(server)}/echo", timeout=TIMEOUT).status_code == 426


def test_upgrade_without_connection_upgrade_is_plain_http(serve):
    server, _ = serve()
    port = port_of(server)
    # To an HTTP route: served as an ordinary request.
    status, _, body = http_exchange(
        port, handshake_bytes("/health", headers={"Connection": "keep-alive"}))
    assert (status, body) == (200, b"ok")
    # To a WebSocket route: not switched (no 101), the plain-GET answer instead.
    status, headers, _ = http_exchange(port, handshake_bytes("/echo", headers={"Connection": None}))
    assert status == 426
    assert "sec-websocket-accept" not in headers


def test_disallowed_origin_gets_403(serve, clients):
    server, _ = serve()
    port = port_of(server)
    status, _, _ = http_exchange(port, handshake_bytes(
        "/origin", headers={"Origin": "https://evil.example"}))
    assert status == 403
    with pytest.raises(websocket.WebSocketBadStatusException) as info:
        wsc_connect(server, "/origin", origin="https://evil.example")
    assert info.value.status_code == 403
    # The allowed origin is accepted.
    conn = raw(server, clients, "/origin", headers={"Origin": "https://good.example"})
    conn.send_text("hi")
    assert conn.recv_data() == (Opcode.TEXT, b"hi")
    ws = clients.enter_context(ws_connect(server, "/origin", origin="https://good.example"))
    ws.send("ok")
    assert ws.recv(timeout=TIMEOUT) == "ok"


def test_subprotocol_negotiation(serve, clients, threads):
    server, _ = serve(threads)
    # Client offers two, the server supports the second: chosen and echoed.
    ws = clients.enter_context(ws_connect(server, "/proto", subprotocols=["chat", "superchat"]))
    assert ws.subprotocol == "superchat"
    ws.send("?")
    assert ws.recv(timeout=TIMEOUT) == "subprotocol=superchat"
    conn = raw(server, clients, "/proto",
               headers={"Sec-WebSocket-Protocol": "chat, superchat"})
    assert conn.headers.get("sec-websocket-protocol") == "superchat"
    # Nothing matches: no header, and the handler sees no subprotocol.
    conn = raw(server, clients, "/proto", headers={"Sec-WebSocket-Protocol": "chat, v2.chat"})
    assert "sec-websocket-protocol" not in conn.headers
    conn.send_text("?")
    assert conn.recv_data() == (Opcode.TEXT, b"subprotocol=None")
    # A route without subprotocols never picks one.
    conn = raw(server, clients, "/echo", headers={"Sec-WebSocket-Protocol": "superchat"})
    assert "sec-websocket-protocol" not in conn.headers


# -- fragmentation and control frames ----------------------------------------------------


def test_fragmented_text_with_interleaved_ping(serve, clients, threads):
    server, _ = serve(threads)
    conn = raw(server, clients)
    message = "Hello, wörld — fragmented ✓ 😀"
    data = message.encode()
    cut1 = data.index("ö".encode()) + 1  # inside a two-byte character
    cut2 = data.index("😀".encode()) + 2  # inside a four-byte character
    conn.send(Opcode.TEXT, data[:cut1], fin=False)
    conn.send(Opcode.PING, b"mid-message")
    conn.send(Opcode.CONTINUATION, data[cut1:cut2], fin=False)
    conn.send(Opcode.CONTINUATION, b"", fin=False)
    conn.send(Opcode.CONTINUATION, data[cut2:], fin=True)
    frames = [conn.recv_frame(), conn.recv_frame()]
    assert (True, Opcode.PONG, b"mid-message") in frames
    assert (True, Opcode.TEXT, data) in frames
    # The connection is still fine afterwards.
    conn.send_text("after")
    assert conn.recv_data() == (Opcode.TEXT, b"after")


def test_fragmented_binary_with_websocket_client(serve, clients, threads):
    server, _ = serve(threads)
    ws = wsc_connect(server)
    clients.callback(ws.close)
    abnf = websocket.ABNF
    parts = [os.urandom(1000), os.urandom(70000), b"", os.urandom(5)]
    ws.send_frame(abnf.create_frame(parts[0], abnf.OPCODE_BINARY, fin=0))
    ws.ping("in-between")
    for part in parts[1:-1]:
        ws.send_frame(abnf.create_frame(part, abnf.OPCODE_CONT, fin=0))
    ws.send_frame(abnf.create_frame(parts[-1], abnf.OPCODE_CONT, fin=1))
    opcode, pong = ws.recv_data_frame(control_frame=True)
    assert opcode == abnf.OPCODE_PONG and pong.data == b"in-between"
    opcode, data = ws.recv_data()
    assert opcode == abnf.OPCODE_BINARY and data == b"".join(parts)


def test_client_ping_gets_pong_with_same_payload(serve, clients, threads):
    server, _ = serve(threads)
    conn = raw(server, clients)
    for payload in (b"", b"\x00\xffhello", os.urandom(125)):
        conn.send(Opcode.PING, payload)
        assert conn.recv_frame() == (True, Opcode.PONG, payload)
    # An unsolicited pong is ignored, not answered or treated as an error.
    conn.send(Opcode.PONG, b"unsolicited")
    conn.send_text("still here")
    assert conn.recv_frame() == (True, Opcode.TEXT, b"still here")


def test_server_ping_reaches_client(serve, clients, threads):
    server, _ = serve(threads)
    conn = raw(server, clients, "/cmd")
    conn.send_text("ping:from-server")
    assert conn.recv_frame() == (True, Opcode.PING, b"from-server")
    conn.send(Opcode.PONG, b"from-server")
    conn.send_text("echo")
    assert conn.recv_frame() == (True, Opcode.TEXT, b"echo")


# -- close codes ---------------------------------------------------------------------------


def test_client_close_1000_with_reason(serve, clients, threads):
    server, fx = serve(threads)
    # websockets client: on_close sees the client's code and reason.
    ws = clients.enter_context(ws_connect(server))
    port = ws.socket.getsockname()[1]
    ws.send("x")
    assert ws.recv(timeout=TIMEOUT) == "x"
    ws.close(1000, "client done")
    assert ws.protocol.close_rcvd is not None and ws.protocol.close_rcvd.code == 1000
    calls = fx.closes.wait(where=lambda c: c[3] == port)
    assert [c[:3] for c in calls] == [("/echo", 1000, "client done")]
    # Raw client: the close is echoed with the same code, then the server ends TCP.
    conn = raw(server, clients)
    port = conn.sock.getsockname()[1]
    conn.send(Opcode.CLOSE, close_payload(1000, "bye now"))
    code, _reason = conn.recv_close()
    assert code == 1000
    assert read_until_closed(conn.sock, TIMEOUT) == b""
    calls = fx.closes.wait(where=lambda c: c[3] == port)
    assert [c[:3] for c in calls] == [("/echo", 1000, "bye now")]


def test_client_close_without_code(serve, clients, threads):
    server, fx = serve(threads)
    conn = raw(server, clients)
    port = conn.sock.getsockname()[1]
    conn.send(Opcode.CLOSE, b"")
    assert conn.recv_close() == (None, "")
    assert read_until_closed(conn.sock, TIMEOUT) == b""
    calls = fx.closes.wait(where=lambda c: c[3] == port)
    assert [c[1] for c in calls] == [1005]


def test_handler_close_with_code_and_reason(serve, clients, threads):
    server, fx = serve(threads)
    ws = clients.enter_context(ws_connect(server, "/cmd"))
    ws.send("close:4001:bye")
    with pytest.raises(ConnectionClosed) as info:
        ws.recv(timeout=TIMEOUT)
    assert info.value.rcvd is not None
    assert (info.value.rcvd.code, info.value.rcvd.reason) == (4001, "bye")
    conn = raw(server, clients, "/cmd")
    port = conn.sock.getsockname()[1]
    conn.send_text("close:4002:raw bye")
    assert conn.recv_close() == (4002, "raw bye")
    conn.send(Opcode.CLOSE, close_payload(4002))
    assert read_until_closed(conn.sock, TIMEOUT) == b""
    calls = fx.closes.wait(where=lambda c: c[3] == port)
    assert [c[1] for c in calls] == [4002]


def fail_and_check(conn: RawWS, fx: Fixture, expected: int) -> None:
    port = conn.sock.getsockname()[1]
    code, _reason = conn.recv_close()
    assert code == expected
    # Complete the close handshake from our side, then hang up.
    conn.send(Opcode.CLOSE, close_payload(expected))
    conn.close()
    calls = fx.closes.wait(where=lambda c: c[3] == port)
    assert [c[1] for c in calls] == [expected]


def test_unmasked_frame_closes_1002(serve, clients, threads):
    server, fx = serve(threads)
    conn = raw(server, clients)
    conn.send(Opcode.TEXT, b"not masked", mask=False)
    fail_and_check(conn, fx, 1002)


@pytest.mark.parametrize("opcode", [0x3, 0x7, 0xB, 0xF])
def test_reserved_opcode_closes_1002(serve, clients, opcode):
    server, fx = serve()
    conn = raw(server, clients)
    conn.send(opcode, b"x")
    fail_and_check(conn, fx, 1002)


@pytest.mark.parametrize("frames", [
    pytest.param([frame(Opcode.TEXT, b"x", rsv=0x40)], id="rsv1-without-extension"),
    pytest.param([frame(Opcode.CONTINUATION, b"orphan")], id="continuation-without-start"),
    pytest.param([frame(Opcode.TEXT, b"a", fin=False), frame(Opcode.TEXT, b"b")],
                 id="new-msg-in-fragmented"),
    pytest.param([frame(Opcode.PING, b"x", fin=False)], id="fragmented-ping"),
    pytest.param([frame(Opcode.PING, b"x" * 126)], id="ping-over-125"),
    pytest.param([frame(Opcode.CLOSE, b"\x03")], id="close-1-byte-payload"),
    pytest.param([frame(Opcode.CLOSE, close_payload(1005))], id="close-code-1005"),
])
def test_protocol_violations_close_1002(serve, clients, frames):
    server, fx = serve()
    conn = raw(server, clients)
    conn.sock.sendall(b"".join(frames))
    fail_and_check(conn, fx, 1002)


@pytest.mark.parametrize("frames", [
    pytest.param([frame(Opcode.TEXT, b"\xff\xfe")], id="single-frame"),
    pytest.param([frame(Opcode.TEXT, b"ok \xe2\x82", fin=False), frame(Opcode.CONTINUATION, b"(")],
                 id="fragmented"),
    pytest.param([frame(Opcode.TEXT, b"\xed\xa0\x80")], id="surrogate"),
    pytest.param([frame(Opcode.TEXT, b"\xe2\x82")], id="truncated"),
])
def test_invalid_utf8_closes_1007(serve, clients, threads, frames):
    server, fx = serve(threads)
    conn = raw(server, clients)
    conn.sock.sendall(b"".join(frames))
    fail_and_check(conn, fx, 1007)


def test_message_over_max_message_size_closes_1009(serve, clients, threads):
    server, fx = serve(threads, max_message_size=1000)
    conn = raw(server, clients)
    conn.send(Opcode.BINARY, b"a" * 1000)  # exactly the limit: fine
    assert conn.recv_data() == (Opcode.BINARY, b"a" * 1000)
    conn.send(Opcode.BINARY, b"b" * 1001)
    fail_and_check(conn, fx, 1009)
    # Over the limit only when the fragments are put together.
    conn = raw(server, clients)
    conn.send(Opcode.TEXT, b"c" * 600, fin=False)
    conn.send(Opcode.CONTINUATION, b"d" * 600, fin=True)
    fail_and_check(conn, fx, 1009)


def test_websockets_client_sees_failure_close_promptly(serve, clients):
    """A well-behaved client answers the server's 1009 close; the connection must
    then end at once, not after the server's close_timeout."""
    server, fx = serve(max_message_size=1000, close_timeout=20.0)
    ws = clients.enter_context(ws_connect(server, close_timeout=20.0))
    port = ws.socket.getsockname()[1]
    ws.send("z" * 2000)
    # recv() ends when TCP does: waiting for either close_timeout would take 20 s.
    with pytest.raises(ConnectionClosed) as info:
        ws.recv(timeout=10)
    assert info.value.rcvd is not None and info.value.rcvd.code == 1009
    calls = fx.closes.wait(where=lambda c: c[3] == port)
    assert [c[1] for c in calls] == [1009]


def test_server_ends_tcp_promptly_after_failing_and_client_close_reply(serve, clients, threads):
    """After a protocol failure and the client's close reply, TCP must end well
    before close_timeout: the server is waiting for exactly that reply."""
    server, _ = serve(threads, close_timeout=20.0)
    conn = raw(server, clients)
    conn.send(Opcode.TEXT, b"not masked", mask=False)
    code, _ = conn.recv_close()
    assert code == 1002
    conn.send(Opcode.CLOSE, close_payload(1002))
    # Waiting out close_timeout (20 s) would raise socket.timeout here.
    assert read_until_closed(conn.sock, 10) == b""


def test_handler_exception_closes_1011_and_server_keeps_serving(serve, clients, threads):
    server, fx = serve(threads)
    bystander = clients.enter_context(ws_connect(server, "/cmd"))
    bystander.send("before")
    assert bystander.recv(timeout=TIMEOUT) == "before"
    ws = clients.enter_context(ws_connect(server, "/cmd"))
    port = ws.socket.getsockname()[1]
    ws.send("raise")
    with pytest.raises(ConnectionClosed) as info:
        ws.recv(timeout=TIMEOUT)
    assert info.value.rcvd is not None and info.value.rcvd.code == 1011
    calls = fx.closes.wait(where=lambda c: c[3] == port)
    assert [c[1] for c in calls] == [1011]
    bystander.send("after")
    assert bystander.recv(timeout=TIMEOUT) == "after"
    fresh = clients.enter_context(ws_connect(server, "/cmd"))
    fresh.send("fresh")
    assert fresh.recv(timeout=TIMEOUT) == "fresh"
    assert http_get(port_of(server)) == (200, b"ok")


@pytest.mark.parametrize("how", ["fin", "rst"])
def test_tcp_drop_calls_on_close_once_with_1006(serve, clients, threads, how):
    server, fx = serve(threads)
    conn = raw(server, clients)
    port = conn.sock.getsockname()[1]
    conn.send_text("hello")
    assert conn.recv_data() == (Opcode.TEXT, b"hello")
    if how == "rst":
        conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.sock.close()
    calls = fx.closes.wait(where=lambda c: c[3] == port)
    assert [c[:3] for c in calls] == [("/echo", 1006, "")]
    assert wait_until(lambda: not server.websockets)
    # And no second call comes later.
    assert settled(lambda: len(fx.closes.wait(where=lambda c: c[3] == port))) == 1


# -- keepalive -------------------------------------------------------------------------------


def test_keepalive_closes_silent_client_and_keeps_live_one(serve, clients, threads):
    server, fx = serve(threads, ping_interval=0.2, ping_timeout=0.3)
    live = clients.enter_context(ws_connect(server, ping_interval=None))
    silent = raw(server, clients)
    silent_port = silent.sock.getsockname()[1]
    started = time.monotonic()
    pings, close_code, ended = 0, None, False
    # The defaults (20 s interval, 20 s timeout) would take far longer than this.
    while not ended and time.monotonic() - started < 15.0:
        try:
            _fin, opcode, payload = silent.recv_frame(timeout=10.0)
        except (EOFError, ConnectionResetError):
            ended = True  # dropped without a close frame
            break
        if opcode == Opcode.PING:
            pings += 1  # and never answered
        elif opcode == Opcode.CLOSE:
            close_code = parse_close(payload)[0]
            ended = True
    elapsed = time.monotonic() - started
    assert pings >= 1
    assert ended
    assert close_code in (1011, None)
    calls = fx.closes.wait(where=lambda c: c[3] == silent_port)
    assert [c[1] for c in calls] == [1011]
    # The answering client survives several intervals.
    time.sleep(max(0.0, 1.2 - elapsed))
    live.send("still alive")
    assert live.recv(timeout=TIMEOUT) == "still alive"
    assert len(server.websockets) == 1


# -- back-pressure ------------------------------------------------------------------------


class Flooder(threading.Thread):
    """Sends binary messages to the echo endpoint and never reads."""

    def __init__(self, port: int, message_size: int, total: int) -> None:
        super().__init__(name="test-flooder", daemon=True)
        self.conn = RawWS.connect(port, "/echo", rcvbuf=4096)
        self.message = frame(Opcode.BINARY, b"F" * message_size)
        self.total = total
        self.sent = 0
        self.error: Optional[BaseException] = None
        self.stop = threading.Event()

    def run(self) -> None:
        self.conn.sock.settimeout(0.5)
        try:
            while self.sent < self.total and not self.stop.is_set():
                try:
                    self.conn.sock.sendall(self.message)
                except socket.timeout:
                    continue  # the server stopped reading us: keep pushing
                self.sent += len(self.message)
        except OSError as exc:
            self.error = exc


def test_nonreading_client_does_not_stall_others(serve, clients, threads):
    server, _ = serve(threads)
    port = port_of(server)
    flooder = Flooder(port, 16 * 1024, 64 * 1024 * 1024)
    clients.callback(flooder.conn.close)
    clients.callback(flooder.stop.set)
    other = clients.enter_context(ws_connect(server))
    flooder_port = flooder.conn.sock.getsockname()[1]

    def flooder_read() -> int:
        return next(c["bytes_in"] for c in server.connections()
                    if c["client_port"] == flooder_port)

    flooder.start()
    read = settled(flooder_read)  # the server has stopped reading the flooder
    for i in range(5):
        assert http_get(port, timeout=TIMEOUT) == (200, b"ok")
        other.send(f"echo {i}")
        assert other.recv(timeout=TIMEOUT) == f"echo {i}"
    # Back-pressure, counted in bytes the server read: it stopped reading the
    # flooder once its echoes backed up (write_high_water plus what the kernel
    # took) instead of buffering all 64 MiB, and it still holds the connection.
    assert flooder.error is None
    assert read < 8 * 1024 * 1024, read
    assert flooder_read() == read
    flooder.stop.set()
    flooder.join(2.0)


def test_nonreading_client_eventually_dropped(serve, clients, threads):
    """A client that floods an echo endpoint and never reads must not hold its
    connection forever.  Reading stops at write_high_water, so the echo alone can
    never push the buffer past max_write_buffer; the keepalive (its pings go
    unanswered because the server no longer reads the pongs) has to end it."""
    server, fx = serve(threads, max_write_buffer=1024 * 1024, ping_interval=0.3,
                       ping_timeout=0.5, close_timeout=0.5)
    port = port_of(server)
    reader = clients.enter_context(ws_connect(server))
    reader.send("hi")
    assert reader.recv(timeout=TIMEOUT) == "hi"
    flooder = Flooder(port, 64 * 1024, 256 * 1024 * 1024)
    clients.callback(flooder.conn.close)
    clients.callback(flooder.stop.set)
    flooder_port = flooder.conn.sock.getsockname()[1]
    flooder.start()

    def flooder_gone() -> bool:
        return all(c["client_port"] != flooder_port for c in server.connections())

    dropped = wait_until(flooder_gone, 15.0, 0.05)  # well before the 20 s default ping_interval
    flooder.stop.set()
    flooder.join(2.0)
    assert dropped, "the non-reading client was never dropped"
    calls = fx.closes.wait(where=lambda c: c[3] == flooder_port)
    assert len(calls) == 1 and calls[0][1] in (1006, 1011)
    reader.send("still served")
    assert reader.recv(timeout=TIMEOUT) == "still served"
    assert http_get(port) == (200, b"ok")


def test_broadcast_drops_only_the_nonreading_receiver(serve, clients, threads):
    # The stuck receiver's backlog passes max_write_buffer and never shrinks: it is
    # dropped at the second check, slow_peer_timeout later.
    server, _ = serve(threads, max_write_buffer=1024 * 1024, slow_peer_timeout=0.5)
    reader = clients.enter_context(ws_connect(server, "/room/a"))
    stuck = raw(server, clients, "/room/a", rcvbuf=4096)
    stuck_port = stuck.sock.getsockname()[1]
    assert wait_until(lambda: len(server.websockets) == 2)
    chunk = b"B" * (64 * 1024)
    received: List[bytes] = []
    # Broadcast from this (foreign) thread, paced so the reading client never has
    # more than ~512 KiB in flight, while the stuck one accumulates everything.
    for i in range(64):
        server.broadcast(chunk, path="/room/a")
        if i >= 8:
            received.append(reader.recv(timeout=TIMEOUT))
    while len(received) < 64:
        received.append(reader.recv(timeout=TIMEOUT))
    assert all(m == chunk for m in received)
    assert wait_until(lambda: all(c["client_port"] != stuck_port
                                  for c in server.connections()))
    assert [ws.path for ws in server.websockets] == ["/room/a"]
    reader.send("still here")
    assert reader.recv(timeout=TIMEOUT) == "still here"


# -- sending from other threads ----------------------------------------------------------


def test_broadcast_from_foreign_thread(serve, clients, threads):
    server, _ = serve(threads)
    room_a = [clients.enter_context(ws_connect(server, "/room/a")) for _ in range(10)]
    room_b = [clients.enter_context(ws_connect(server, "/room/b")) for _ in range(10)]
    assert wait_until(lambda: len(server.websockets) == 20)

    def push() -> None:
        server.broadcast("hello everyone")
        server.broadcast(b"\x00\x01binary")
        server.broadcast("only room a", path="/room/a")
        server.broadcast("end")

    thread = threading.Thread(target=push, name="test-broadcaster")
    thread.start()
    thread.join(TIMEOUT)
    for ws in room_a:
        got = [ws.recv(timeout=TIMEOUT) for _ in range(4)]
        assert got == ["hello everyone", b"\x00\x01binary", "only room a", "end"]
    for ws in room_b:
        got = [ws.recv(timeout=TIMEOUT) for _ in range(3)]
        assert got == ["hello everyone", b"\x00\x01binary", "end"]


def test_send_from_foreign_thread_keeps_order(serve, clients, threads):
    server, fx = serve(threads)
    ws = clients.enter_context(ws_connect(server))
    handle = fx.connects.get(timeout=TIMEOUT)

    def produce() -> None:
        for i in range(1000):
            handle.send(f"msg {i}" if i % 2 else b"bin %d" % i)

    thread = threading.Thread(target=produce, name="test-producer")
    thread.start()
    for i in range(1000):
        assert ws.recv(timeout=TIMEOUT) == (f"msg {i}" if i % 2 else b"bin %d" % i)
    thread.join(TIMEOUT)


def test_close_from_foreign_thread(serve, clients, threads):
    server, fx = serve(threads)
    ws = clients.enter_context(ws_connect(server))
    handle = fx.connects.get(timeout=TIMEOUT)
    thread = threading.Thread(target=handle.close, args=(4100, "from elsewhere"),
                              name="test-closer")
    thread.start()
    thread.join(TIMEOUT)
    with pytest.raises(ConnectionClosed) as info:
        ws.recv(timeout=TIMEOUT)
    assert info.value.rcvd is not None
    assert (info.value.rcvd.code, info.value.rcvd.reason) == (4100, "from elsewhere")
    assert wait_until(lambda: handle.closed)
    # A send on a closed connection raises, in callback style as in blocking style.
    with pytest.raises(WssyncClosed) as closed:
        handle.send("too late")
    assert closed.value.code == 4100


# -- thread-pool mode --------------------------------------------------------------------------


def test_thread_pool_keeps_per_connection_order(serve, clients):
    server, _ = serve(4)
    conns = [clients.enter_context(ws_connect(server, "/cmd")) for _ in range(4)]
    results: Dict[int, List[Any]] = {}

    def talk(index: int, ws: ClientConnection) -> None:
        for i in range(150):
            ws.send(f"jitter:{index}:{i}")
        results[index] = [ws.recv(timeout=TIMEOUT) for _ in range(150)]

    workers = [threading.Thread(target=talk, args=(i, ws), name=f"test-talker-{i}")
               for i, ws in enumerate(conns)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(20)
    for index in range(4):
        assert results.get(index) == [f"jitter:{index}:{i}" for i in range(150)]


def test_blocked_handler_does_not_stall_other_connections(serve, clients):
    server, fx = serve(4)
    blocked = clients.enter_context(ws_connect(server, "/cmd"))
    other = clients.enter_context(ws_connect(server, "/cmd"))
    clients.callback(fx.release.set)
    blocked.send("block")
    blocked.send("queued behind the block")
    assert fx.blocked.wait(TIMEOUT)
    # The handler stays blocked until released below: these are served meanwhile.
    for i in range(3):
        other.send(f"quick {i}")
        assert other.recv(timeout=TIMEOUT) == f"quick {i}"
    assert http_get(port_of(server)) == (200, b"ok")
    with pytest.raises(TimeoutError):
        blocked.recv(timeout=0.2)
    fx.release.set()
    assert blocked.recv(timeout=TIMEOUT) == "unblocked"
    assert blocked.recv(timeout=TIMEOUT) == "queued behind the block"


# -- HTTP and WebSocket on one port ----------------------------------------------------------


def test_http_and_websocket_share_the_port(serve, clients, threads):
    server, _ = serve(threads)
    port = port_of(server)
    sockets = [clients.enter_context(ws_connect(server)) for _ in range(3)]
    for i, ws in enumerate(sockets):
        ws.send(f"open {i}")
        assert ws.recv(timeout=TIMEOUT) == f"open {i}"
    http_conn = http.client.HTTPConnection(HOST, port, timeout=TIMEOUT)
    clients.callback(http_conn.close)
    for _ in range(3):
        http_conn.request("GET", "/health")
        resp = http_conn.getresponse()
        assert (resp.status, resp.read()) == (200, b"ok")
    with requests.Session() as session:
        for _ in range(3):
            reply = session.get(f"http://{HOST}:{port}/health", timeout=TIMEOUT)
            assert (reply.status_code, reply.text) == (200, "ok")
    http_port = http_conn.sock.getsockname()[1]
    ws_ports = {ws.socket.getsockname()[1] for ws in sockets}
    snapshot = server.connections()
    by_port = {c["client_port"]: c for c in snapshot}
    assert by_port[http_port]["protocol"] == "http"
    for ws_port in ws_ports:
        assert by_port[ws_port]["protocol"] == "websocket"
        assert by_port[ws_port]["path"] == "/echo"
    assert {c["protocol"] for c in snapshot} == {"http", "websocket"}
    assert all(c["server_port"] == port for c in snapshot)
    assert all(c["transport"] == "tcp" and c["client_addr"] == HOST for c in snapshot)
    # And the WebSockets still work after the HTTP traffic.
    for ws in sockets:
        ws.send("again")
        assert ws.recv(timeout=TIMEOUT) == "again"


# -- shutdown ----------------------------------------------------------------------------------


def test_stop_closes_websockets_with_1001(serve, clients, threads):
    server, fx = serve(threads, shutdown_grace=20.0, close_timeout=20.0)
    sockets = [clients.enter_context(ws_connect(server)) for _ in range(3)]
    conn = raw(server, clients)
    for ws in sockets:
        ws.send("up")
        assert ws.recv(timeout=TIMEOUT) == "up"
    assert wait_until(lambda: len(server.websockets) == 4)
    stopper = threading.Thread(target=server.stop, name="test-stopper")
    stopper.start()
    code, _reason = conn.recv_close()
    assert code == 1001
    conn.send(Opcode.CLOSE, close_payload(1001))
    for ws in sockets:
        with pytest.raises(ConnectionClosed) as info:
            ws.recv(timeout=TIMEOUT)
        assert info.value.rcvd is not None and info.value.rcvd.code == 1001
    # Every peer answered: the stop ends at once, not after the grace or
    # close_timeout (20 s).
    stopper.join(10)
    assert not stopper.is_alive()
    calls = fx.closes.wait(4)
    assert sorted(c[1] for c in calls) == [1001] * 4
