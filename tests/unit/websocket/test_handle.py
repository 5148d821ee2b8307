"""Unit tests for the application's handle, ``WebSocket`` and ``BlockingWebSocket``.

A real :class:`~wssync.websocket.connection.WebSocketConnection` on a
:class:`helpers.RecordingTransport`, a real reactor (run by the test when the
handed-over calls should go out), a real ``BoundedHandoff`` and ``OutputGate``;
a small application side does what the bridge does for a handle: it marks the
handle closed and closes the gate when the connection ends, and pauses and
resumes the gate as the transport's output fills and drains.  No sockets.
"""

from __future__ import annotations

import time
from functools import partial
from typing import Any, Iterator, List, Optional, Tuple, Union

import pytest
from helpers import RecordingTransport, in_thread

from wssync.config import Config
from wssync.errors import ConnectionClosed, SendTimeout
from wssync.http.request import Headers, Request
from wssync.io.pacing import OutputGate
from wssync.io.reactor import BoundedHandoff, Reactor
from wssync.websocket.connection import WebSocketConnection
from wssync.websocket.frames import (
    CloseCode,
    FrameParser,
    Opcode,
    decode_close_payload,
    encode_close_payload,
    encode_frame,
)
from wssync.websocket.handle import BlockingWebSocket, WebSocket

pytestmark = pytest.mark.timeout(30)

HIGH_WATER = 1000


class HandleSide:
    """The bridge's part for one handle: close marks it, the output paces it."""

    def __init__(self, gate: OutputGate) -> None:
        self.gate = gate
        self.handle: Optional[WebSocket] = None

    def opened(self, conn: WebSocketConnection) -> None:
        pass

    def message(self, data: Union[str, bytes]) -> None:
        pass

    def closed(self, code: int, reason: str) -> None:
        assert self.handle is not None
        self.handle.close_code, self.handle.close_reason = code, reason
        self.gate.close(partial(ConnectionClosed, code, reason))

    def after_pending(self, fn: Any) -> None:
        fn()

    def pause_writing(self) -> None:
        self.gate.pause()

    def resume_writing(self) -> None:
        self.gate.resume()


class BufferingTransport(RecordingTransport):
    """A recording transport whose unsent output the test sets."""

    buffered = 0

    def get_write_buffer_size(self) -> int:
        return self.buffered


class Setup:
    def __init__(self, reactor: Reactor, blocking: bool = False) -> None:
        self.reactor = reactor
        self.gate = OutputGate(HIGH_WATER)
        self.side = HandleSide(self.gate)
        self.conn = WebSocketConnection(Config(ping_interval=0), self.side)
        self.transport = BufferingTransport(reactor, self.conn)
        self.conn.connection_made(self.transport)
        self.handoff = BoundedHandoff(reactor, 1 << 20)
        request = Request("GET", "/chat?room=1", "HTTP/1.1", Headers([("Host", "x")]),
                          remote_addr=("127.0.0.1", 50000))
        self.inbox = FakeInbox()
        if blocking:
            self.handle: WebSocket = BlockingWebSocket(self.handoff, self.conn, request, None,
                                                       self.gate, self.inbox)
        else:
            self.handle = WebSocket(self.handoff, self.conn, request, "chat", self.gate)
        self.side.handle = self.handle

    def run(self) -> None:
        """Let the reactor run what was handed over (a few rounds)."""
        rounds = [0]

        def enough() -> bool:
            rounds[0] += 1
            return rounds[0] > 3

        self.transport.run_until(enough)

    def on_reactor(self, fn: Any) -> Any:
        result: List[Any] = []
        self.reactor.call_soon(lambda: result.append(fn()))
        self.run()
        return result[0]

    def frames(self) -> List[Tuple[int, bytes]]:
        parser = FrameParser(expect_masked=False)
        parser.feed(self.transport.written)
        frames = []
        while True:
            frame = parser.next_frame()
            if frame is None:
                return frames
            frames.append((frame.opcode, frame.payload))

    def peer_closes(self, code: int, reason: str = "") -> None:
        """The client's close frame arrives (the connection answers and ends)."""
        self.conn.data_received(encode_frame(Opcode.CLOSE, encode_close_payload(code, reason),
                                             mask=b"abcd"))


class FakeInbox:
    def __init__(self) -> None:
        self.items: List[Any] = []  # a message, or an exception to raise

    def receive(self, timeout: Optional[float]) -> Union[str, bytes, None]:
        if not self.items:
            return None
        item = self.items.pop(0)
        if isinstance(item, BaseException):
            raise item
        return item  # type: ignore[no-any-return]


@pytest.fixture
def reactor() -> Iterator[Reactor]:
    reactor = Reactor()
    yield reactor
    reactor.close()




# -- arguments ------------------------------------------------------------------------------


def test_send_takes_text_or_bytes_like_only(reactor: Reactor) -> None:
    s = Setup(reactor)
    for wrong in (123, None, ["a"], {"a": 1}):
        with pytest.raises(TypeError, match="takes str"):
            s.handle.send(wrong)  # type: ignore[arg-type]
    for right in ("text", b"bytes", bytearray(b"ba"), memoryview(b"mv")):
        s.handle.send(right)  # type: ignore[arg-type]
    s.run()
    assert s.frames() == [(Opcode.TEXT, b"text"), (Opcode.BINARY, b"bytes"),
                          (Opcode.BINARY, b"ba"), (Opcode.BINARY, b"mv")]


def test_ping_takes_bytes_of_at_most_125(reactor: Reactor) -> None:
    s = Setup(reactor)
    with pytest.raises(TypeError):
        s.handle.ping("text")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="125"):
        s.handle.ping(b"x" * 126)
    s.handle.ping(b"y" * 125)
    s.handle.ping(bytearray(b"ba"))
    s.run()
    assert s.frames() == [(Opcode.PING, b"y" * 125), (Opcode.PING, b"ba")]


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000])
def test_close_refuses_a_code_no_close_frame_may_carry(reactor: Reactor, code: int) -> None:
    s = Setup(reactor)
    with pytest.raises(ValueError, match="close code"):
        s.handle.close(code)
    s.run()
    assert s.frames() == [] and not s.transport.closed
    s.handle.send("still open")  # the refused close changed nothing


def test_close_refuses_a_reason_over_123_bytes(reactor: Reactor) -> None:
    s = Setup(reactor)
    with pytest.raises(ValueError):
        s.handle.close(1000, "é" * 62)  # 124 bytes of UTF-8
    s.handle.close(4000, "r" * 123)
    s.run()
    assert [decode_close_payload(p) for o, p in s.frames() if o == Opcode.CLOSE] == \
        [(4000, "r" * 123)]


def test_only_the_first_close_counts(reactor: Reactor) -> None:
    s = Setup(reactor)
    s.handle.close(4001, "first")
    s.handle.close(4002, "second")  # no error, and no second close frame
    s.run()
    assert s.frames() == [(Opcode.CLOSE, encode_close_payload(4001, "first"))]


# -- after the close -------------------------------------------------------------------------


def test_send_ping_after_the_handles_own_close_raise_connection_closed(reactor: Reactor) -> None:
    s = Setup(reactor)
    s.handle.close(4001, "bye")
    with pytest.raises(ConnectionClosed) as info:
        s.handle.send("late")
    assert info.value.code == CloseCode.NORMAL_CLOSURE  # closing: not closed yet
    with pytest.raises(ConnectionClosed):
        s.handle.ping(b"late")
    s.run()
    assert s.frames() == [(Opcode.CLOSE, encode_close_payload(4001, "bye"))]


def test_send_after_the_peer_closed_raises_with_the_peers_code(reactor: Reactor) -> None:
    s = Setup(reactor)
    s.peer_closes(4100, "gone")
    assert s.handle.closed and s.handle.close_code == 4100
    for send in (lambda: s.handle.send("x"), lambda: s.handle.ping(b"p")):
        with pytest.raises(ConnectionClosed) as info:
            send()
        assert (info.value.code, info.value.reason) == (4100, "gone")
    s.handle.close()  # closing a closed handle is no error


def test_on_the_reactor_thread_a_send_after_close_raises_too(reactor: Reactor) -> None:
    s = Setup(reactor)
    s.peer_closes(1000)

    def send() -> Any:
        try:
            s.handle.send("x")
        except ConnectionClosed as exc:
            return exc
        return None

    assert isinstance(s.on_reactor(send), ConnectionClosed)


def test_a_thread_waiting_in_send_is_woken_by_the_close(reactor: Reactor) -> None:
    s = Setup(reactor)
    s.conn.pause_writing()  # the transport's output is above its mark
    thread, out = in_thread(lambda: s.handle.send("waits"))
    time.sleep(0.2)
    assert thread.is_alive()
    s.peer_closes(1001, "away")
    thread.join(5)
    assert isinstance(out[0], ConnectionClosed) and out[0].code == 1001


# -- pacing ------------------------------------------------------------------------------------


def test_a_send_that_cannot_go_within_its_timeout_raises_send_timeout(reactor: Reactor) -> None:
    s = Setup(reactor)
    s.conn.pause_writing()
    started = time.monotonic()
    with pytest.raises(SendTimeout, match=r"timed out after 0\.2 s"):
        s.handle.send("held", timeout=0.2)
    assert 0.15 < time.monotonic() - started < 3
    with pytest.raises(SendTimeout):
        s.handle.ping(b"held", timeout=0.1)
    assert s.handle.buffered_amount == 0  # a timed-out send counts for nothing
    s.conn.resume_writing()
    s.handle.send("now", timeout=0.2)
    s.run()
    assert s.frames() == [(Opcode.TEXT, b"now")]  # only what was not refused


def test_the_reactor_thread_never_waits_in_send(reactor: Reactor) -> None:
    s = Setup(reactor)
    s.conn.pause_writing()
    s.on_reactor(lambda: s.handle.send("goes at once"))
    assert s.frames() == [(Opcode.TEXT, b"goes at once")]


def test_buffered_amount_counts_handed_over_and_unsent_bytes(reactor: Reactor) -> None:
    s = Setup(reactor)
    assert s.handle.buffered_amount == 0
    s.handle.send(b"x" * 300)  # handed over; the reactor has not run
    assert s.handle.buffered_amount == 300
    s.run()
    assert s.handle.buffered_amount == 0  # written to the transport
    s.transport.buffered = 4321  # and what the transport holds
    assert s.handle.buffered_amount == 4321


def test_a_thread_waits_while_its_own_sends_are_above_the_mark(reactor: Reactor) -> None:
    s = Setup(reactor)
    s.handle.send(b"a" * 800)  # in flight: the reactor has not written it
    thread, out = in_thread(lambda: s.handle.send(b"b" * 800, timeout=5))
    time.sleep(0.2)
    assert thread.is_alive()  # 1600 in flight would pass the mark of 1000
    s.run()
    thread.join(5)
    s.run()
    assert out == [None]
    assert s.frames() == [(Opcode.BINARY, b"a" * 800), (Opcode.BINARY, b"b" * 800)]


def test_drain(reactor: Reactor) -> None:
    s = Setup(reactor)
    assert s.handle.drain(0.1) is True
    s.conn.pause_writing()
    started = time.monotonic()
    assert s.handle.drain(0.2) is False  # waited its timeout
    assert time.monotonic() - started >= 0.15
    assert s.on_reactor(lambda: s.handle.drain(10)) is False  # the reactor only says
    thread, out = in_thread(lambda: s.handle.drain(5))
    time.sleep(0.1)
    assert thread.is_alive()
    s.conn.resume_writing()
    thread.join(5)
    assert out == [True]
    assert s.on_reactor(lambda: s.handle.drain()) is True
    s.peer_closes(1000)
    assert s.handle.drain(0.1) is False
    assert s.on_reactor(lambda: s.handle.drain()) is False


def test_sends_and_pings_from_a_thread_keep_their_order(reactor: Reactor) -> None:
    s = Setup(reactor)
    s.handle.send("1")
    s.handle.ping(b"2")
    s.handle.send(b"3")
    s.handle.close(1000, "4")
    s.run()
    assert s.frames() == [(Opcode.TEXT, b"1"), (Opcode.PING, b"2"), (Opcode.BINARY, b"3"),
                          (Opcode.CLOSE, encode_close_payload(1000, "4"))]


def test_what_a_handler_reads_from_its_handle(reactor: Reactor) -> None:
    s = Setup(reactor)
    ws = s.handle
    assert (ws.path, ws.subprotocol, ws.remote_address) == ("/chat", "chat", ("127.0.0.1", 50000))
    assert ws.headers.get("host") == "x" and ws.request.query_string == "room=1"
    assert ws.data == {} and ws.data is ws.data
    assert not ws.closed and ws.close_code is None and "open" in repr(ws)
    s.peer_closes(1000)
    assert ws.closed and "closed" in repr(ws)


# -- BlockingWebSocket ---------------------------------------------------------------------------


def test_blocking_receive_reads_the_inbox(reactor: Reactor) -> None:
    s = Setup(reactor, blocking=True)
    handle = s.handle
    assert isinstance(handle, BlockingWebSocket)
    s.inbox.items = ["a", b"b", ConnectionClosed(4000, "x")]
    assert handle.receive(1) == "a"
    assert handle.receive(1) == b"b"
    with pytest.raises(ConnectionClosed):
        handle.receive(1)
    assert handle.receive(0.1) is None  # nothing came within the timeout


@pytest.mark.parametrize("code", [1000, 1001, 1005])
def test_iteration_ends_quietly_after_a_normal_close(reactor: Reactor, code: int) -> None:
    s = Setup(reactor, blocking=True)
    assert isinstance(s.handle, BlockingWebSocket)
    s.inbox.items = ["a", None, "b", ConnectionClosed(code)]
    assert list(s.handle) == ["a", "b"]


@pytest.mark.parametrize("code", [1002, 1006, 1009, 1011, 4000])
def test_iteration_raises_after_any_other_close(reactor: Reactor, code: int) -> None:
    s = Setup(reactor, blocking=True)
    assert isinstance(s.handle, BlockingWebSocket)
    s.inbox.items = ["a", ConnectionClosed(code)]
    received = []
    with pytest.raises(ConnectionClosed) as info:
        for message in s.handle:
            received.append(message)
    assert received == ["a"] and info.value.code == code
