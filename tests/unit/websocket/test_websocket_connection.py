"""Unit tests for ``wssync.websocket.connection.WebSocketConnection`` on a recording transport.

No sockets: client frames go in through ``data_received``, a
:class:`helpers.RecordingTransport` records the server's frames and what the
connection asks of its transport, a recording application stands in for the
bridge, and a real reactor runs the keepalive and close timers when a test
needs them to fire.
"""

from __future__ import annotations

import struct
from typing import Any, Callable, Iterator, List, Optional, Tuple, Union

import pytest
from helpers import RecordingTransport

from wssync.config import Config
from wssync.io.reactor import Reactor
from wssync.websocket.connection import WebSocketConnection
from wssync.websocket.frames import (
    CloseCode,
    Frame,
    FrameParser,
    Opcode,
    decode_close_payload,
    encode_close_payload,
    encode_frame,
)


class RecordingApp:
    """The application side of one WebSocket connection: records every event.

    ``on_message`` (if set) runs after a message is recorded, to let a test
    act from inside the delivery (pause input, for one).
    """

    def __init__(self) -> None:
        self.events: List[Tuple[Any, ...]] = []
        self.on_message: Optional[Callable[[Union[str, bytes]], None]] = None

    def opened(self, conn: WebSocketConnection) -> None:
        self.events.append(("opened", conn))

    def message(self, data: Union[str, bytes]) -> None:
        self.events.append(("message", data))
        if self.on_message is not None:
            self.on_message(data)

    def closed(self, code: int, reason: str) -> None:
        self.events.append(("closed", code, reason))

    def after_pending(self, fn: Callable[[], None]) -> None:
        fn()  # nothing is ever pending here

    def pause_writing(self) -> None:
        self.events.append(("pause_writing",))

    def resume_writing(self) -> None:
        self.events.append(("resume_writing",))

    @property
    def messages(self) -> List[Union[str, bytes]]:
        return [event[1] for event in self.events if event[0] == "message"]

    @property
    def closes(self) -> List[Tuple[Any, ...]]:
        return [event[1:] for event in self.events if event[0] == "closed"]


@pytest.fixture
def reactor() -> Iterator[Reactor]:
    reactor = Reactor()
    yield reactor
    reactor.close()


def connect(reactor: Reactor, **settings: Any
            ) -> Tuple[WebSocketConnection, RecordingTransport, RecordingApp]:
    """A connection that has just been made; no keepalive unless asked for."""
    settings.setdefault("ping_interval", 0)
    app = RecordingApp()
    conn = WebSocketConnection(Config(**settings), app)
    transport = RecordingTransport(reactor, conn)
    conn.connection_made(transport)
    return conn, transport, app


def client(opcode: int, payload: bytes = b"") -> bytes:
    """A frame as a client sends it (masked)."""
    return encode_frame(opcode, payload, mask=b"abcd")


def text(message: str) -> bytes:
    return client(Opcode.TEXT, message.encode("utf-8"))


def server_frames(transport: RecordingTransport) -> List[Frame]:
    """The frames the server wrote, parsed (they must be unmasked)."""
    parser = FrameParser(expect_masked=False)
    parser.feed(transport.written)
    frames = []
    while True:
        frame = parser.next_frame()
        if frame is None:
            break
        frames.append(frame)
    assert parser.buffered == 0, "a partial frame was written"
    return frames


def close_codes(transport: RecordingTransport) -> List[Tuple[int, str]]:
    return [decode_close_payload(frame.payload) for frame in server_frames(transport)
            if frame.opcode == Opcode.CLOSE]


# -- messages and control frames ------------------------------------------------------


def test_connection_made_calls_opened(reactor: Reactor) -> None:
    conn, transport, app = connect(reactor)
    assert app.events == [("opened", conn)]
    assert conn.transport is transport
    assert conn.is_open
    assert transport.events == []


def test_masked_text_frame_is_delivered_as_a_message(reactor: Reactor) -> None:
    conn, transport, app = connect(reactor)
    frame = text("héllo")
    conn.data_received(frame[:3])  # split frames are reassembled
    assert app.messages == []
    conn.data_received(frame[3:] + client(Opcode.BINARY, b"\x00\x01"))
    assert app.messages == ["héllo", b"\x00\x01"]
    assert transport.events == []


def test_ping_is_answered_with_a_pong_of_the_same_payload(reactor: Reactor) -> None:
    conn, transport, app = connect(reactor)
    conn.data_received(client(Opcode.PING, b"are you there?"))
    frames = server_frames(transport)
    assert [(f.opcode, f.payload) for f in frames] == [(Opcode.PONG, b"are you there?")]
    assert app.messages == []
    assert not transport.is_closing()


def test_peer_close_is_echoed_then_the_transport_closes(reactor: Reactor) -> None:
    conn, transport, app = connect(reactor)
    conn.data_received(client(Opcode.CLOSE, encode_close_payload(1001, "leaving")))
    assert close_codes(transport) == [(1001, "")]
    assert transport.kinds() == ["write", "close"]
    assert app.closes == [(1001, "leaving")]


def test_protocol_error_closes_with_1002_and_ignores_later_input(reactor: Reactor) -> None:
    conn, transport, app = connect(reactor)
    conn.data_received(text("fine") + encode_frame(Opcode.TEXT, b"unmasked"))
    assert app.messages == ["fine"]
    assert [code for code, _ in close_codes(transport)] == [CloseCode.PROTOCOL_ERROR]
    assert transport.kinds() == ["write", "close_write"]
    assert not transport.closed  # still reading until the peer closes too

    conn.data_received(text("after the error") + client(Opcode.PING, b"x"))
    assert app.messages == ["fine"]
    assert transport.kinds() == ["write", "close_write"]

    conn.eof_received()
    assert transport.closed
    assert app.closes == [(CloseCode.PROTOCOL_ERROR, "frame masking is wrong for this direction")]


# -- flow control ----------------------------------------------------------------------


def test_pause_input_stops_delivery_of_buffered_messages(reactor: Reactor) -> None:
    conn, transport, app = connect(reactor)
    app.on_message = lambda data: conn.pause_input()
    conn.data_received(text("one") + text("two") + text("three"))
    assert app.messages == ["one"]
    assert transport.reading_paused
    assert transport.kinds() == ["pause_reading"]

    conn.data_received(text("four"))  # what was read before the pause took hold
    assert app.messages == ["one"]

    app.on_message = None
    conn.resume_input()
    assert app.messages == ["one", "two", "three", "four"]
    assert not transport.reading_paused
    assert transport.kinds() == ["pause_reading", "resume_reading"]


def test_paused_before_data_arrives_delivers_nothing_until_resumed(reactor: Reactor) -> None:
    conn, transport, app = connect(reactor)
    conn.pause_input()
    assert transport.reading_paused
    conn.data_received(text("a") + text("b"))
    assert app.messages == []
    conn.resume_input()
    assert app.messages == ["a", "b"]
    assert not transport.reading_paused


# -- closing ---------------------------------------------------------------------------


def test_close_without_an_answer_aborts_after_close_timeout(reactor: Reactor) -> None:
    conn, transport, app = connect(reactor, close_timeout=0.05)
    conn.close(1000, "done")
    assert close_codes(transport) == [(1000, "done")]
    assert transport.kinds() == ["write"]
    assert not conn.is_open

    assert transport.run_until(lambda: transport.closed)
    assert transport.kinds() == ["write", "abort"]
    assert app.closes == [(CloseCode.ABNORMAL_CLOSURE, "")]  # the peer never closed


def test_close_answered_by_the_peer_closes_the_transport(reactor: Reactor) -> None:
    conn, transport, app = connect(reactor, close_timeout=0.05)
    conn.close(1000)
    conn.data_received(client(Opcode.CLOSE, encode_close_payload(1000, "ok")))
    assert close_codes(transport) == [(1000, "")]  # ours only: no second close frame
    assert transport.kinds() == ["write", "close"]
    assert app.closes == [(1000, "ok")]
    # The close timer is gone with the connection: nothing aborts later.
    fired: List[bool] = []
    reactor.call_later(0.15, fired.append, True)
    transport.run_until(lambda: bool(fired))
    assert "abort" not in transport.kinds()


def test_connection_lost_reports_1006_once_without_a_close_frame(reactor: Reactor) -> None:
    conn, transport, app = connect(reactor)
    conn.data_received(text("last words"))
    transport.abort()
    conn.connection_lost(None)  # a second report changes nothing
    assert app.closes == [(CloseCode.ABNORMAL_CLOSURE, "")]
    assert app.events[-1] == ("closed", CloseCode.ABNORMAL_CLOSURE, "")
    assert not conn.is_open
    conn.send("into the void")
    assert transport.written == b""


# -- keepalive -------------------------------------------------------------------------


def pings(transport: RecordingTransport) -> List[Frame]:
    return [frame for frame in server_frames(transport) if frame.opcode == Opcode.PING]


def test_keepalive_ping_without_pong_closes_with_1011(reactor: Reactor) -> None:
    _conn, transport, app = connect(reactor, ping_interval=0.02, ping_timeout=0.1,
                                    close_timeout=5)
    assert transport.run_until(lambda: bool(pings(transport)))
    assert pings(transport)[0].payload == struct.pack("!I", 1)
    assert not transport.is_closing()

    assert transport.run_until(lambda: transport.closed)
    assert [code for code, _ in close_codes(transport)] == [CloseCode.INTERNAL_ERROR]
    assert transport.kinds()[-2:] == ["write", "close"]
    assert app.closes == [(CloseCode.INTERNAL_ERROR, "keepalive ping timeout")]


def test_keepalive_pong_keeps_the_connection_open(reactor: Reactor) -> None:
    conn, transport, _app = connect(reactor, ping_interval=0.02, ping_timeout=0.06)

    def answer_pings() -> None:
        for frame in pings(transport)[answered[0]:]:
            conn.data_received(client(Opcode.PONG, frame.payload))
            answered[0] += 1
        reactor.call_later(0.005, answer_pings)

    answered = [0]
    reactor.call_soon(answer_pings)
    # Many ping_timeouts pass, each ping answered.
    transport.run_until(lambda: len(pings(transport)) >= 15 or transport.is_closing())
    assert not transport.is_closing()
    assert close_codes(transport) == []


class BackedUpTransport(RecordingTransport):
    """A peer that reads nothing: what was written stays above write_high_water."""

    def get_write_buffer_size(self) -> int:
        return 1 << 20


def test_missing_pong_closes_while_input_is_paused_if_the_peer_reads_nothing(
        reactor: Reactor) -> None:
    """The handler is busy because it waits for this very peer (a send to it):
    the peer's missing pong counts, as it does in reactor mode."""
    app = RecordingApp()
    conn = WebSocketConnection(Config(ping_interval=0.02, ping_timeout=0.05,
                                      write_high_water=64 * 1024, close_timeout=5), app)
    transport = BackedUpTransport(reactor, conn)
    conn.connection_made(transport)
    conn.pause_input()
    assert transport.run_until(lambda: transport.is_closing())
    assert [code for code, _ in close_codes(transport)] == [CloseCode.INTERNAL_ERROR]


def test_missing_pong_does_not_close_while_input_is_paused(reactor: Reactor) -> None:
    conn, transport, app = connect(reactor, ping_interval=0.02, ping_timeout=0.05)
    conn.pause_input()
    # Pings go on every 20 ms: 15 of them span several ping_timeouts.
    transport.run_until(lambda: len(pings(transport)) >= 15 or transport.is_closing())
    assert len(pings(transport)) >= 15
    assert not transport.is_closing()
    assert close_codes(transport) == []

    # Reading again, a pong that still does not come is a dead peer.
    conn.resume_input()
    assert transport.run_until(lambda: transport.closed)
    assert [code for code, _ in close_codes(transport)] == [CloseCode.INTERNAL_ERROR]
    assert app.closes == [(CloseCode.INTERNAL_ERROR, "keepalive ping timeout")]


@pytest.mark.parametrize(("restart", "expected"), [
    (False, (CloseCode.GOING_AWAY, "server shutting down")),
    (True, (CloseCode.SERVICE_RESTART, "server restarting")),
], ids=["stop", "replaced"])
def test_shutdown_closes_with_1001_or_with_1012_when_replaced(
        reactor: Reactor, restart: bool, expected: Tuple[int, str]) -> None:
    conn, transport, _ = connect(reactor)
    if restart:
        conn.shutdown(restart=True)
    else:
        conn.shutdown()
    assert close_codes(transport) == [expected]
    assert not transport.is_closing()  # the peer's close answer ends it
