"""Unit tests for ``wssync.websocket.upgrade``: the WebSocket handshake through the upgrade door.

An :class:`HttpConnection` on a recording transport gets the handler that
``websocket_upgrade`` returns as its ``websocket`` upgrade; a recording
application decides the handshakes.  No sockets.
"""

from __future__ import annotations

import base64
from typing import Any, Callable, Iterator, List, Optional, Tuple, Union

import pytest
from helpers import RecordingTransport

from wssync import Response
from wssync.config import Config
from wssync.contract import ChunkCallback
from wssync.http.body import BodyStream
from wssync.http.connection import HttpConnection
from wssync.http.request import Request
from wssync.io.reactor import Reactor
from wssync.websocket.connection import WebSocketConnection
from wssync.websocket.frames import Opcode, encode_frame
from wssync.websocket.handshake import accept_key
from wssync.websocket.upgrade import WebSocketAccept, websocket_upgrade


class RecordingApp:
    """The application side: records requests and handshakes, answers
    handshakes with :attr:`decision`."""

    def __init__(self, decision: Union[Response, WebSocketAccept, None] = None) -> None:
        self.requests: List[Request] = []
        self.handshakes: List[Request] = []
        self.decision = decision

    hand_over = None  # no other process to pass a connection to

    def handle_request(self, conn: HttpConnection, request: Request) -> None:
        self.requests.append(request)

    def accept_websocket(self, conn: HttpConnection,
                         request: Request) -> Union[Response, WebSocketAccept]:
        self.handshakes.append(request)
        assert self.decision is not None
        return self.decision

    def next_chunk(self, conn: HttpConnection, body: Iterator[bytes],
                   callback: ChunkCallback) -> None:
        raise AssertionError("no streamed bodies here")

    def close_body(self, conn: HttpConnection, close: Callable[[], None]) -> None:
        close()

    def stream_body(self, conn: HttpConnection, request: Request) -> Optional[BodyStream]:
        return None


class RecordingWebSocketApp:
    """The application side of the WebSocket connection an upgrade creates."""

    def __init__(self) -> None:
        self.events: List[Tuple[Any, ...]] = []

    def opened(self, conn: WebSocketConnection) -> None:
        self.events.append(("opened", conn))

    def message(self, data: Union[str, bytes]) -> None:
        self.events.append(("message", data))

    def closed(self, code: int, reason: str) -> None:
        self.events.append(("closed", code, reason))

    def after_pending(self, fn: Callable[[], None]) -> None:
        fn()

    def pause_writing(self) -> None:
        self.events.append(("pause_writing",))

    def resume_writing(self) -> None:
        self.events.append(("resume_writing",))


@pytest.fixture
def reactor() -> Iterator[Reactor]:
    reactor = Reactor()
    yield reactor
    reactor.close()


def connect(reactor: Reactor, app: RecordingApp) -> Tuple[HttpConnection, RecordingTransport]:
    config = Config()
    conn = HttpConnection(config, app, {"websocket": websocket_upgrade(config, app)})
    transport = RecordingTransport(reactor, conn)
    conn.connection_made(transport)
    return conn, transport


KEY = base64.b64encode(b"0123456789abcdef").decode("ascii")


def handshake_request(target: str = "/ws", version: str = "HTTP/1.1",
                      *extra: str) -> bytes:
    lines = [f"GET {target} {version}", "Host: example.test", "Upgrade: websocket",
             "Connection: Upgrade", f"Sec-WebSocket-Key: {KEY}",
             "Sec-WebSocket-Version: 13", *extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def test_handshake_switches_protocol_and_hands_over_the_following_bytes(
        reactor: Reactor) -> None:
    ws_app = RecordingWebSocketApp()
    app = RecordingApp(WebSocketAccept(ws_app))
    conn, transport = connect(reactor, app)
    first_frame = encode_frame(Opcode.TEXT, b"early bird", mask=b"abcd")
    conn.data_received(handshake_request() + first_frame)

    assert [request.target for request in app.handshakes] == ["/ws"]
    assert app.requests == []
    written = transport.written
    assert written.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    assert f"Sec-WebSocket-Accept: {accept_key(KEY)}\r\n".encode() in written
    swaps = [data for kind, data in transport.events if kind == "set_protocol"]
    assert len(swaps) == 1
    ws, leftover = swaps[0]
    assert isinstance(ws, WebSocketConnection)
    assert transport.protocol is ws
    assert leftover == first_frame
    assert transport.kinds().index("write") < transport.kinds().index("set_protocol")
    assert ws_app.events == [("opened", ws), ("message", "early bird")]
    assert not transport.is_closing()


def test_accepted_subprotocol_and_headers_are_in_the_101(reactor: Reactor) -> None:
    ws_app = RecordingWebSocketApp()
    app = RecordingApp(WebSocketAccept(ws_app, "chat", [("X-Room", "1")]))
    conn, transport = connect(reactor, app)
    conn.data_received(handshake_request("/ws", "HTTP/1.1",
                                         "Sec-WebSocket-Protocol: chat, superchat"))

    head = transport.written
    assert b"Sec-WebSocket-Protocol: chat\r\n" in head
    assert b"X-Room: 1\r\n" in head
    assert isinstance(transport.protocol, WebSocketConnection)
    assert transport.protocol.subprotocol == "chat"


def test_handshake_refused_by_the_app_is_answered_and_closed(reactor: Reactor) -> None:
    app = RecordingApp(Response(b"not here", 403))
    conn, transport = connect(reactor, app)
    conn.data_received(handshake_request("/private"))

    assert [request.target for request in app.handshakes] == ["/private"]
    assert transport.written.startswith(b"HTTP/1.1 403 Forbidden\r\n")
    assert transport.written.endswith(b"not here")
    assert b"Connection: close\r\n" in transport.written
    assert "set_protocol" not in transport.kinds()
    assert transport.kinds()[-1] == "close"
    assert transport.protocol is conn


def test_invalid_handshake_is_refused_before_the_app_is_asked(reactor: Reactor) -> None:
    app = RecordingApp(WebSocketAccept(RecordingWebSocketApp()))
    conn, transport = connect(reactor, app)
    conn.data_received(handshake_request().replace(b"Version: 13", b"Version: 8"))

    assert app.handshakes == []
    assert transport.written.startswith(b"HTTP/1.1 426 Upgrade Required\r\n")
    assert b"Sec-WebSocket-Version: 13\r\n" in transport.written
    assert transport.kinds()[-1] == "close"


def test_http_1_0_upgrade_is_a_plain_request(reactor: Reactor) -> None:
    app = RecordingApp(WebSocketAccept(RecordingWebSocketApp()))
    conn, _transport = connect(reactor, app)
    conn.data_received(handshake_request("/ws", "HTTP/1.0"))

    assert app.handshakes == []
    assert [request.target for request in app.requests] == ["/ws"]
