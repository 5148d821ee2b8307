"""Unit tests for ``wssync.http.connection.HttpConnection`` on a recording transport.

No sockets: the connection is driven through ``data_received`` and friends,
a :class:`helpers.RecordingTransport` records what it writes and asks for, a
recording application stands in for the bridge, and a real reactor runs the
deadline timers when a test needs one to fire.
"""

from __future__ import annotations

import logging
import re
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import pytest
from helpers import RecordingTransport

from wssync import Response
from wssync.config import Config
from wssync.contract import ChunkCallback
from wssync.errors import RequestBodyError
from wssync.http import state as st
from wssync.http.body import BodyStream
from wssync.http.connection import HttpConnection
from wssync.http.request import Request
from wssync.http.upgrade import Switch
from wssync.http.writer import CONTINUE
from wssync.io.reactor import Reactor


class RecordingApp:
    """The application side of an HTTP connection: records every call.

    Requests are answered by the test (``conn.send_response``); streamed
    chunks wait in :attr:`chunk_requests` until the test calls :meth:`give_chunk`.
    """

    def __init__(self) -> None:
        self.requests: List[Request] = []
        self.chunk_requests: List[Tuple[Iterator[bytes], ChunkCallback]] = []
        self.streams = 0  # capacity of the streams bodies go to; 0: collect bodies whole
        self.wanted: List[BodyStream] = []

    hand_over = None  # no other process to pass a connection to

    def handle_request(self, conn: HttpConnection, request: Request) -> None:
        self.requests.append(request)

    def next_chunk(self, conn: HttpConnection, body: Iterator[bytes],
                   callback: ChunkCallback) -> None:
        self.chunk_requests.append((body, callback))

    def close_body(self, conn: HttpConnection, close: Callable[[], None]) -> None:
        close()

    def stream_body(self, conn: HttpConnection, request: Request) -> Optional[BodyStream]:
        """Bodies are collected whole unless the test set :attr:`streams` (a
        stream's notifications go to :attr:`wanted`)."""
        if not self.streams:
            return None
        stream = BodyStream(self.streams, 5.0, self.wanted.append)  # 5 s: fail, not hang
        request.body_stream = stream
        return stream

    def give_chunk(self) -> None:
        """Answer the oldest chunk request with the body's next chunk (None at its end)."""
        body, callback = self.chunk_requests.pop(0)
        callback(next(body, None), None)

    @property
    def targets(self) -> List[str]:
        return [request.target for request in self.requests]


@pytest.fixture
def reactor() -> Iterator[Reactor]:
    reactor = Reactor()
    yield reactor
    reactor.close()


def connect(reactor: Reactor, app: RecordingApp,
            **settings: Any) -> Tuple[HttpConnection, RecordingTransport]:
    conn = HttpConnection(Config(**settings), app)
    transport = RecordingTransport(reactor, conn)
    conn.connection_made(transport)
    return conn, transport


def get(target: str, *headers: str) -> bytes:
    lines = [f"GET {target} HTTP/1.1", "Host: example.test", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def responses(written: bytes) -> List[bytes]:
    """The status lines in ``written``, in order (no test body looks like one)."""
    return re.findall(rb"HTTP/1\.1 \d{3} [^\r]*", written)


# -- requests, keep-alive, pipelining -----------------------------------------------


def test_pipelined_requests_are_handled_one_at_a_time_and_answered_in_order(
        reactor: Reactor) -> None:
    app = RecordingApp()
    conn, transport = connect(reactor, app)
    conn.data_received(get("/a") + get("/b") + get("/c"))
    assert app.targets == ["/a"]  # /b waits for /a's response
    assert transport.written == b""

    conn.send_response(Response(b"first"))
    assert app.targets == ["/a", "/b"]
    conn.send_response(Response(b"second", 201))
    assert app.targets == ["/a", "/b", "/c"]
    conn.send_response(Response(b"third", 202))

    written = transport.written
    assert responses(written) == [b"HTTP/1.1 200 OK", b"HTTP/1.1 201 Created",
                                  b"HTTP/1.1 202 Accepted"]
    assert written.index(b"first") < written.index(b"second") < written.index(b"third")
    assert not transport.is_closing()


def test_keep_alive_goes_on_to_the_next_request(reactor: Reactor) -> None:
    app = RecordingApp()
    conn, transport = connect(reactor, app)
    conn.data_received(get("/one"))
    conn.send_response(Response(b"1"))
    assert not transport.is_closing()
    assert b"Connection: close" not in transport.written

    conn.data_received(get("/two"))
    assert app.targets == ["/one", "/two"]
    conn.send_response(Response(b"2"))
    assert len(responses(transport.written)) == 2
    assert not transport.is_closing()


def test_connection_close_closes_after_the_response(reactor: Reactor) -> None:
    app = RecordingApp()
    conn, transport = connect(reactor, app)
    conn.data_received(get("/", "Connection: close") + get("/never"))
    assert app.targets == ["/"]
    assert not transport.is_closing()

    conn.send_response(Response(b"bye"))
    assert transport.kinds()[-2:] == ["write", "close"]
    assert transport.written.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"Connection: close\r\n" in transport.written
    assert transport.written.endswith(b"\r\n\r\nbye")
    assert app.targets == ["/"]  # the pipelined request after it is not handled


def test_parse_error_writes_a_4xx_and_closes(reactor: Reactor) -> None:
    app = RecordingApp()
    conn, transport = connect(reactor, app)
    conn.data_received(b"GET / HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n")
    assert app.requests == []
    assert transport.written.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert b"Connection: close\r\n" in transport.written
    assert transport.kinds() == ["write", "close"]
    assert transport.closed


def test_expect_100_continue_is_answered_before_the_body_arrives(reactor: Reactor) -> None:
    app = RecordingApp()
    conn, transport = connect(reactor, app)
    conn.data_received(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                       b"Expect: 100-continue\r\n\r\n")
    assert transport.written == CONTINUE
    assert app.requests == []

    conn.data_received(b"hel")
    assert transport.written == CONTINUE  # once only
    conn.data_received(b"lo")
    assert [request.body for request in app.requests] == [b"hello"]
    conn.send_response(Response(b"stored"))
    assert transport.written.startswith(CONTINUE + b"HTTP/1.1 200 OK\r\n")


def test_pipelined_bytes_beyond_max_header_size_pause_reading(reactor: Reactor) -> None:
    app = RecordingApp()
    conn, transport = connect(reactor, app, max_header_size=200)
    conn.data_received(get("/first"))
    assert app.targets == ["/first"]

    conn.data_received(get("/p0"))  # a little pipelined input is fine
    assert not transport.reading_paused
    more = b"".join(get(f"/p{i}") for i in range(1, 8))
    assert len(get("/p0") + more) > 200
    conn.data_received(more)
    assert transport.reading_paused
    assert app.targets == ["/first"]

    for _ in range(9):
        conn.send_response(Response(b"ok"))
    assert app.targets == ["/first"] + [f"/p{i}" for i in range(8)]
    assert not transport.reading_paused  # all answered: reading again
    assert len(responses(transport.written)) == 9


def test_eof_after_a_complete_request_still_answers_it_then_closes(
        reactor: Reactor) -> None:
    app = RecordingApp()
    conn, transport = connect(reactor, app)
    conn.data_received(get("/a") + get("/b"))
    conn.eof_received()
    assert not transport.is_closing()

    conn.send_response(Response(b"A"))
    assert app.targets == ["/a", "/b"]  # complete before the half-close: answered too
    assert not transport.is_closing()
    conn.send_response(Response(b"B"))
    assert responses(transport.written) == [b"HTTP/1.1 200 OK", b"HTTP/1.1 200 OK"]
    assert transport.kinds()[-1] == "close"


# -- streamed bodies -----------------------------------------------------------------


def test_streamed_body_is_pulled_chunk_by_chunk_and_sent_chunked(reactor: Reactor) -> None:
    app = RecordingApp()
    conn, transport = connect(reactor, app)
    conn.data_received(get("/stream") + get("/next"))
    conn.send_response(Response(iter([b"ab", b"", b"cde"])))
    head = transport.written
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"Transfer-Encoding: chunked\r\n" in head
    assert head.endswith(b"\r\n\r\n")
    assert len(app.chunk_requests) == 1

    app.give_chunk()
    assert transport.written == head + b"2\r\nab\r\n"
    app.give_chunk()  # an empty chunk must not end the body
    assert transport.written == head + b"2\r\nab\r\n"
    app.give_chunk()
    assert transport.written == head + b"2\r\nab\r\n3\r\ncde\r\n"
    assert app.targets == ["/stream"]  # the next request waits for the body's end

    app.give_chunk()  # the iterator is exhausted
    assert transport.written == head + b"2\r\nab\r\n3\r\ncde\r\n0\r\n\r\n"
    assert app.chunk_requests == []
    assert app.targets == ["/stream", "/next"]
    assert not transport.is_closing()


# -- deadlines ------------------------------------------------------------------------


def test_incomplete_head_gets_408_after_header_timeout(reactor: Reactor) -> None:
    app = RecordingApp()
    conn, transport = connect(reactor, app, header_timeout=0.05, keepalive_timeout=30)
    conn.data_received(b"GET /slow HTTP/1.1\r\nHost: x\r\n")

    # Bytes trickling in do not extend the deadline.
    def trickle() -> None:
        if not transport.is_closing():
            conn.data_received(b"X-Pad: 1\r\n")
            reactor.call_later(0.01, trickle)

    reactor.call_later(0.01, trickle)
    assert transport.run_until(lambda: transport.closed)
    assert transport.written.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
    assert transport.kinds() == ["write", "close"]
    assert app.requests == []


def test_idle_keep_alive_connection_closes_without_output(reactor: Reactor) -> None:
    app = RecordingApp()
    conn, transport = connect(reactor, app, keepalive_timeout=0.05)
    conn.data_received(get("/"))
    conn.send_response(Response(b"ok"))
    answered = transport.written
    assert not transport.is_closing()

    assert transport.run_until(lambda: transport.closed)
    assert transport.written == answered  # no 408 for an idle connection
    assert transport.kinds()[-1] == "close"


def test_slow_body_gets_408_after_body_timeout(reactor: Reactor) -> None:
    app = RecordingApp()
    conn, transport = connect(reactor, app, body_timeout=0.05, keepalive_timeout=30)
    conn.data_received(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n")

    def trickle() -> None:
        if not transport.is_closing():
            conn.data_received(b"x")
            reactor.call_later(0.01, trickle)

    reactor.call_later(0.01, trickle)
    assert transport.run_until(lambda: transport.closed)
    assert transport.written.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
    assert app.requests == []


def test_request_in_flight_has_no_deadline(reactor: Reactor) -> None:
    app = RecordingApp()
    conn, transport = connect(reactor, app, keepalive_timeout=0.02, header_timeout=0.02)
    conn.data_received(get("/slow-handler"))
    # Run well past both deadlines while the handler works.
    ticks: List[int] = []

    def tick() -> None:
        ticks.append(1)
        if len(ticks) < 10:
            reactor.call_later(0.02, tick)

    tick()
    transport.run_until(lambda: len(ticks) >= 10)
    assert not transport.is_closing()
    conn.send_response(Response(b"done"))
    answered = transport.written
    assert answered.startswith(b"HTTP/1.1 200 OK\r\n")
    # The deadline that passed while the handler worked is re-armed for the idle wait.
    assert transport.run_until(lambda: transport.closed)
    assert transport.written == answered


# -- shutdown ---------------------------------------------------------------------


def test_shutdown_keeps_an_idle_keep_alive_connection_for_its_next_request(
        reactor: Reactor) -> None:
    # Its client may have sent the next request as the stop came: it is served.
    app = RecordingApp()
    conn, transport = connect(reactor, app)
    conn.data_received(get("/first"))
    conn.send_response(Response(b"one"))
    conn.shutdown()
    assert not transport.is_closing()
    conn.data_received(get("/next"))
    assert app.targets == ["/first", "/next"]
    conn.send_response(Response(b"two"))
    last = transport.written.split(b"HTTP/1.1 ")[-1]
    assert b"Connection: close\r\n" in last and last.endswith(b"two")
    assert transport.kinds()[-1] == "close"


def test_shutdown_serves_a_request_that_came_with_the_stop(reactor: Reactor) -> None:
    app = RecordingApp()
    conn, transport = connect(reactor, app)
    conn.shutdown()
    assert not transport.is_closing()  # accepted just now: its request is on its way
    conn.data_received(get("/arrived"))
    conn.send_response(Response(b"served"))
    assert b"Connection: close\r\n" in transport.written
    assert transport.written.endswith(b"served") and transport.kinds()[-1] == "close"


def test_shutdown_closes_an_idle_connection_at_its_keep_alive_deadline(
        reactor: Reactor) -> None:
    app = RecordingApp()
    conn, transport = connect(reactor, app, keepalive_timeout=0.05, shutdown_grace=600)
    conn.data_received(get("/first"))
    conn.send_response(Response(b"one"))
    answered = transport.written
    conn.shutdown()
    assert transport.run_until(lambda: transport.closed, timeout=10)
    assert transport.written == answered  # closed as an idle connection is: no output


@pytest.mark.parametrize("keepalive", [600.0, 0.0], ids=["long", "none"])
def test_shutdown_closes_an_idle_connection_within_half_the_grace(
        reactor: Reactor, keepalive: float) -> None:
    # Half of shutdown_grace at most: the rest is for answering a late request.
    app = RecordingApp()
    conn, transport = connect(reactor, app, keepalive_timeout=keepalive, shutdown_grace=0.1)
    conn.data_received(get("/first"))
    conn.send_response(Response(b"one"))
    conn.shutdown()
    assert not transport.is_closing()
    assert transport.run_until(lambda: transport.closed, timeout=10)
    assert app.targets == ["/first"]


def test_shutdown_closes_a_new_connection_that_sends_nothing(reactor: Reactor) -> None:
    app = RecordingApp()
    conn, transport = connect(reactor, app, keepalive_timeout=60, shutdown_grace=0.2)
    conn.shutdown()
    assert transport.run_until(lambda: transport.is_closing(), timeout=10)
    assert transport.written == b"" and app.targets == []


def test_shutdown_with_a_request_in_flight_closes_after_its_response(
        reactor: Reactor) -> None:
    app = RecordingApp()
    conn, transport = connect(reactor, app)
    conn.data_received(get("/busy") + get("/pipelined"))
    conn.shutdown()
    assert not transport.is_closing()

    conn.send_response(Response(b"finished"))
    assert transport.written.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"Connection: close\r\n" in transport.written
    assert transport.written.endswith(b"finished")
    assert transport.kinds()[-1] == "close"
    assert app.targets == ["/busy"]


def test_connection_lost_mid_request_drops_the_late_response(reactor: Reactor) -> None:
    app = RecordingApp()
    conn, transport = connect(reactor, app)
    conn.data_received(get("/"))
    transport.abort()
    conn.send_response(Response(b"too late"))
    assert transport.written == b""
    assert transport.kinds() == ["abort"]



# -- bodies read as they arrive ---------------------------------------------------------


def post_head(length: int, *headers: str, target: str = "/up") -> bytes:
    lines = [f"POST {target} HTTP/1.1", "Host: example.test", f"Content-Length: {length}",
             *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def chunked_head(*headers: str) -> bytes:
    return post_head(0, *headers).replace(b"Content-Length: 0", b"Transfer-Encoding: chunked")


def streamed(app: RecordingApp) -> BodyStream:
    stream = app.requests[-1].body_stream
    assert isinstance(stream, BodyStream)
    return stream


def test_body_goes_to_the_stream_and_reading_pauses_while_it_is_full(reactor: Reactor) -> None:
    app = RecordingApp()
    app.streams = 10
    conn, transport = connect(reactor, app)
    conn.data_received(post_head(30) + b"0123")
    assert app.targets == ["/up"]  # handled before its body is complete
    stream = streamed(app)
    conn.data_received(b"456789abcdef")
    assert transport.reading_paused  # 10 bytes held: the client is not read
    assert stream.read(6) == b"012345"
    assert app.wanted == [stream]  # room again: the reactor is asked back
    conn.upload_wanted(stream)  # "abcdef" waited in the parser: full again
    assert transport.reading_paused
    assert stream.read(6) == b"6789ab"
    assert app.wanted == [stream, stream]
    conn.upload_wanted(stream)
    assert not transport.reading_paused  # nothing left in the parser: read the client
    conn.data_received(b"g" * 14)
    assert stream.read(10) == b"cdef" + b"g" * 6
    conn.upload_wanted(stream)
    assert stream.read() == b"g" * 8  # to the end of the body
    assert stream.read(5) == b""
    conn.send_response(Response(b"stored"))
    assert transport.written.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"Connection: close" not in transport.written
    conn.data_received(get("/next"))  # the connection goes on
    assert app.targets == ["/up", "/next"]


def test_reading_paused_for_a_full_stream_resumes_after_the_answer(reactor: Reactor) -> None:
    app = RecordingApp()
    app.streams = 10
    conn, transport = connect(reactor, app)
    conn.data_received(post_head(20) + b"0123")
    conn.data_received(b"456789abcdefghij")
    assert transport.reading_paused  # the stream is full
    stream = streamed(app)
    assert stream.read(10) == b"0123456789"
    conn.upload_wanted(stream)  # the rest was in the parser: the body ends, still paused
    assert stream.read() == b"abcdefghij"
    conn.send_response(Response(b"stored"))
    assert not transport.reading_paused  # waiting for the next request: read the client
    conn.data_received(get("/next"))
    assert app.targets == ["/up", "/next"]


def test_100_continue_is_sent_when_the_handler_reads(reactor: Reactor) -> None:
    app = RecordingApp()
    app.streams = 1024
    conn, transport = connect(reactor, app)
    conn.data_received(post_head(5, "Expect: 100-continue"))
    assert app.targets == ["/up"] and transport.written == b""
    conn.upload_wanted(streamed(app))  # what the stream asks on the first read
    assert transport.written == CONTINUE
    conn.data_received(b"hello")
    assert streamed(app).read() == b"hello"


def test_no_100_continue_after_an_answer_and_the_connection_closes(reactor: Reactor) -> None:
    app = RecordingApp()
    app.streams = 1024
    conn, transport = connect(reactor, app)
    conn.data_received(post_head(5, "Expect: 100-continue"))
    conn.send_response(Response(b"no thanks", 401))
    conn.upload_wanted(streamed(app))
    assert CONTINUE not in transport.written
    assert b"Connection: close" in transport.written  # the body may come or not
    assert "set_protocol" in transport.kinds() and transport.write_eof  # lingering


def test_small_unread_rest_is_drained_and_the_next_request_parses(reactor: Reactor) -> None:
    app = RecordingApp()
    app.streams = 1024
    conn, transport = connect(reactor, app, max_unread_body=100)
    conn.data_received(post_head(50) + b"x" * 10)
    stream = streamed(app)
    conn.send_response(Response(b"ignored your body"))
    assert b"Connection: close" not in transport.written
    conn.data_received(b"y" * 40 + get("/next"))  # the rest, discarded, then a request
    assert app.targets == ["/up", "/next"]
    assert stream.read() == b""  # the handler's stream was dropped
    assert not transport.closed


def test_large_unread_rest_closes_after_the_answer_and_lingers(reactor: Reactor) -> None:
    app = RecordingApp()
    app.streams = 1024
    conn, transport = connect(reactor, app, max_unread_body=100)
    conn.data_received(post_head(5000) + b"x" * 10)
    conn.send_response(Response(b"ignored your body"))
    assert b"Connection: close" in transport.written
    kinds = transport.kinds()
    assert kinds[-2:] == ["close_write", "set_protocol"] or "set_protocol" in kinds
    lingering = transport.protocol
    lingering.data_received(b"x" * 4000 + get("/never"))  # read and dropped
    assert app.targets == ["/up"] and not transport.closed
    lingering.eof_received()
    assert transport.closed


def test_unended_chunked_body_closes_after_the_answer(reactor: Reactor) -> None:
    app = RecordingApp()
    app.streams = 1024
    conn, transport = connect(reactor, app)
    conn.data_received(chunked_head() + b"3\r\nabc\r\n")
    assert streamed(app).read(3) == b"abc"
    conn.send_response(Response(b"done"))
    assert b"Connection: close" in transport.written


def test_chunked_body_over_the_limit_fails_the_read_and_answers_413(reactor: Reactor) -> None:
    app = RecordingApp()
    app.streams = 1024
    conn, transport = connect(reactor, app, max_body_size=8)
    conn.data_received(chunked_head() + b"5\r\nabcde\r\n")
    stream = streamed(app)
    conn.data_received(b"5\r\nfghij\r\n")
    with pytest.raises(RequestBodyError) as info:
        stream.read()
    assert info.value.status == 413 and isinstance(info.value, ConnectionError)
    closed: List[bool] = []

    class Body:
        def __iter__(self) -> Iterator[bytes]:
            yield b"the app's own 500"

        def close(self) -> None:
            closed.append(True)

    conn.send_response(Response(Body(), 500))  # replaced: the body failed
    assert closed == [True]  # the answer never sent is still closed (PEP 3333)
    assert transport.written.startswith(b"HTTP/1.1 413 ")
    assert b"Connection: close" in transport.written


def test_client_gone_mid_body_makes_the_read_raise(reactor: Reactor) -> None:
    app = RecordingApp()
    app.streams = 1024
    conn, _transport = connect(reactor, app)
    conn.data_received(post_head(100) + b"partial")
    stream = streamed(app)
    conn.eof_received()
    with pytest.raises(RequestBodyError) as info:
        stream.read()
    assert info.value.status == 400
    conn.connection_lost(None)
    with pytest.raises(RequestBodyError):
        stream.read(1)


def test_body_timeout_fails_a_stalled_body_with_408(reactor: Reactor) -> None:
    app = RecordingApp()
    app.streams = 1024
    conn, transport = connect(reactor, app, body_timeout=0.05)
    conn.data_received(post_head(100) + b"partial")
    stream = streamed(app)
    assert not transport.reading_paused
    # The deadline fails the body: reading stops, and the reader's wait ends.
    assert transport.run_until(lambda: transport.reading_paused)
    with pytest.raises(RequestBodyError) as info:
        stream.read(100)
    assert info.value.status == 408
    conn.send_response(Response(b"late"))
    assert transport.written.startswith(b"HTTP/1.1 408 ")


def test_pipelined_request_after_a_streamed_body(reactor: Reactor) -> None:
    app = RecordingApp()
    app.streams = 1024
    conn, _transport = connect(reactor, app)
    conn.data_received(post_head(6) + b"abc")
    conn.data_received(b"def" + get("/next"))
    assert streamed(app).read() == b"abcdef"
    assert app.targets == ["/up"]
    conn.send_response(Response(b"ok"))
    assert app.targets == ["/up", "/next"]


def test_a_cr_then_its_lf_before_a_request_is_still_idle(reactor: Reactor) -> None:
    app = RecordingApp()
    conn, transport = connect(reactor, app)
    conn.data_received(b"\r")
    conn.data_received(b"\n")
    conn.data_received(get("/after-empty-line"))
    assert app.targets == ["/after-empty-line"]
    assert not transport.is_closing()


# -- a stop and the client's half-close, whatever the connection is doing ------------------


class BufferingTransport(RecordingTransport):
    """A transport with output still queued when the connection closes it: ``close``
    leaves it closing, and only :meth:`flush` ends it (as a real transport
    whose buffer the client reads slowly)."""

    def close(self) -> None:
        if self.is_closing():
            return
        self._closing = True
        self.events.append(("close", None))

    def flush(self) -> None:
        if self._closing and not self.closed:
            self._lose()


class Other:
    """The protocol an upgrade switches to: takes the connection and does nothing."""

    name = "other"
    transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        pass

    def eof_received(self) -> None:
        self.transport.close()

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        pass

    def pause_writing(self) -> None:
        pass

    def resume_writing(self) -> None:
        pass

    def shutdown(self) -> None:
        self.transport.close()


# Ways from a new connection to each state it can be in.

def _new(conn: HttpConnection, transport: BufferingTransport, app: RecordingApp) -> None:
    pass


def _idle(conn: HttpConnection, transport: BufferingTransport, app: RecordingApp) -> None:
    conn.data_received(get("/a"))
    conn.send_response(Response(b"A"))


def _head(conn: HttpConnection, transport: BufferingTransport, app: RecordingApp) -> None:
    conn.data_received(b"GET / HTTP/1.1\r\n")


def _body_head(conn: HttpConnection, transport: BufferingTransport, app: RecordingApp) -> None:
    conn.data_received(post_head(10))


def _body(conn: HttpConnection, transport: BufferingTransport, app: RecordingApp) -> None:
    conn.data_received(post_head(10) + b"abc")


def _handling(conn: HttpConnection, transport: BufferingTransport, app: RecordingApp) -> None:
    conn.data_received(get("/busy"))


def _uploading(conn: HttpConnection, transport: BufferingTransport, app: RecordingApp) -> None:
    app.streams = 1024
    conn.data_received(post_head(10) + b"abc")


def _sending(conn: HttpConnection, transport: BufferingTransport, app: RecordingApp) -> None:
    conn.data_received(get("/stream"))
    conn.send_response(Response(iter([b"one", b"two"])))


def _draining(conn: HttpConnection, transport: BufferingTransport, app: RecordingApp) -> None:
    app.streams = 1024
    conn.data_received(post_head(50) + b"x")
    conn.send_response(Response(b"unread"))


def _closing(conn: HttpConnection, transport: BufferingTransport, app: RecordingApp) -> None:
    conn.data_received(get("/", "Connection: close"))
    conn.send_response(Response(b"A"))  # still going out


def _refused_after_half_close(conn: HttpConnection, transport: BufferingTransport,
                              app: RecordingApp) -> None:
    # A pipelined request is refused (413) after the client half-closed: the
    # connection closes with the refusal still going out.
    conn.data_received(get("/a") + post_head(10_000))
    conn.eof_received()
    conn.send_response(Response(b"A"))


def _refused(conn: HttpConnection, transport: BufferingTransport, app: RecordingApp) -> None:
    conn.data_received(post_head(10_000))  # 413: its body is read and dropped


def _switched(conn: HttpConnection, transport: BufferingTransport, app: RecordingApp) -> None:
    conn.upgrades["other"] = lambda conn, request: Switch(b"HTTP/1.1 101 Switching\r\n\r\n",
                                                         Other())
    conn.data_received(get("/", "Upgrade: other", "Connection: upgrade"))


def _lost(conn: HttpConnection, transport: BufferingTransport, app: RecordingApp) -> None:
    transport.abort()


STATES: Dict[str, Tuple[int, Callable[[HttpConnection, BufferingTransport, RecordingApp],
                                      None]]] = {
    "idle, new": (st.IDLE, _new),
    "idle": (st.IDLE, _idle),
    "head": (st.HEAD, _head),
    "body, none of it yet": (st.BODY, _body_head),
    "body": (st.BODY, _body),
    "handling": (st.HANDLING, _handling),
    "handling, the body streamed": (st.HANDLING, _uploading),
    "sending": (st.SENDING, _sending),
    "draining": (st.DRAINING, _draining),
    "must close": (st.MUST_CLOSE, _closing),
    "lingering, the client done": (st.LINGERING, _refused_after_half_close),
    "lingering": (st.LINGERING, _refused),
    "switched": (st.SWITCHED, _switched),
    "closed": (st.CLOSED, _lost),
}


@pytest.mark.parametrize("ending", ["stop, then half-close", "half-close, then stop",
                                    "stop, then deadlines"])
@pytest.mark.parametrize("state", list(STATES))
def test_stop_and_half_close_in_every_state_end_the_connection(
        reactor: Reactor, caplog: pytest.LogCaptureFixture, state: str, ending: str) -> None:
    """A server stop (and the client's half-close, or the deadlines) in any state
    ends the connection without an error: a stop of a connection that is closing
    already changes nothing."""
    app = RecordingApp()
    conn = HttpConnection(Config(max_body_size=1000, keepalive_timeout=0.05,
                                 header_timeout=0.05, body_timeout=0.05), app)
    transport = BufferingTransport(reactor, conn)
    conn.connection_made(transport)
    expected, setup = STATES[state]
    setup(conn, transport, app)
    assert conn._state.state == expected, st.STATE_NAMES[conn._state.state]
    if ending == "half-close, then stop":
        transport.protocol.eof_received()
    transport.protocol.shutdown()  # what the server asks of every connection
    if ending == "stop, then half-close":
        transport.protocol.eof_received()
    # The work in flight finishes.
    if len(app.requests) > len(responses(transport.written)):
        conn.send_response(Response(b"done"))
    while app.chunk_requests:
        app.give_chunk()
    assert transport.run_until(transport.is_closing, timeout=5)
    transport.flush()
    assert transport.closed
    assert not [record for record in caplog.records if record.levelno >= logging.WARNING]


def test_a_deadline_while_the_last_answer_goes_out_does_nothing(
        reactor: Reactor, caplog: pytest.LogCaptureFixture) -> None:
    app = RecordingApp()
    conn = HttpConnection(Config(keepalive_timeout=0.02), app)
    transport = BufferingTransport(reactor, conn)
    conn.connection_made(transport)
    _closing(conn, transport, app)  # the idle deadline's timer is still armed
    caplog.set_level(logging.INFO, logger="wssync.http")
    transport.run_until(lambda: False, timeout=0.1)
    assert transport.kinds() == ["write", "close"]
    assert caplog.records == []  # no "408 request not received in time"


@pytest.mark.parametrize("head, first, rest", [
    (post_head(5, target="/second"), b"", b"hello"),  # none of the body yet
    (chunked_head().replace(b"/up", b"/second"), b"2\r\nhe\r\n",  # chunks taken as they come
     b"3\r\nllo\r\n0\r\n\r\n"),
], ids=["length", "chunked"])
def test_stop_waits_for_the_body_of_a_request_whose_head_has_arrived(
        reactor: Reactor, head: bytes, first: bytes, rest: bytes) -> None:
    app = RecordingApp()
    conn, transport = connect(reactor, app)
    conn.data_received(get("/first"))
    conn.send_response(Response(b"one"))
    conn.data_received(head + first)
    conn.shutdown()
    assert not transport.is_closing()
    for byte in range(len(rest)):  # nothing of it buffered between the pieces
        conn.data_received(rest[byte:byte + 1])
        assert not transport.is_closing()
    assert app.targets == ["/first", "/second"] and app.requests[-1].body == b"hello"
    conn.send_response(Response(b"two"))
    assert transport.written.endswith(b"two") and transport.closed
    assert b"Connection: close\r\n" in transport.written


def test_a_request_after_a_streamed_upload_gets_its_100_continue(reactor: Reactor) -> None:
    app = RecordingApp()
    app.streams = 1024
    conn, transport = connect(reactor, app)
    conn.data_received(post_head(5, "Expect: 100-continue"))
    conn.upload_wanted(streamed(app))
    assert transport.written == CONTINUE
    conn.data_received(b"hello")
    assert streamed(app).read() == b"hello"
    conn.send_response(Response(b"stored"))

    app.streams = 0  # the next body is collected whole
    conn.data_received(post_head(5, "Expect: 100-continue", target="/again"))
    assert transport.written.endswith(CONTINUE)  # or the client waits, the body never sent
    conn.data_received(b"again")
    assert app.requests[-1].body == b"again"


# -- passing a connection to another process ------------------------------------------


class PassingApp(RecordingApp):
    """Passes requests for ``/elsewhere`` on, with the bytes from their head on."""

    def __init__(self) -> None:
        super().__init__()
        self.passed: List[Tuple[str, Optional[bytes]]] = []

    def hand_over(self, conn: HttpConnection, request: Request) -> bool:  # type: ignore[override]
        if request.path != "/elsewhere":
            return False
        assert conn.parser is not None and conn.transport is not None
        self.passed.append((request.target, conn.parser.since_head()))
        conn.transport.abort()
        return True


def test_a_request_passed_on_is_not_handled_here_and_goes_with_what_followed_it(
        reactor: Reactor) -> None:
    app = PassingApp()
    conn, transport = connect(reactor, app)
    conn.data_received(get("/here"))
    conn.send_response(Response(b"1"))
    conn.data_received(get("/elsewhere") + get("/after"))
    assert app.targets == ["/here"]  # neither /elsewhere nor what followed it
    assert app.passed == [("/elsewhere", get("/elsewhere") + get("/after"))]
    assert transport.is_closing()


@pytest.mark.parametrize("streams", [0, 64 * 1024])  # body collected whole, or read as it comes
def test_a_body_still_coming_is_passed_on_at_its_head(reactor: Reactor, streams: int) -> None:
    app = PassingApp()
    app.streams = streams
    conn, transport = connect(reactor, app)
    head = b"POST /elsewhere HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n"
    conn.data_received(head + b"abc")
    assert app.passed == [("/elsewhere", head + b"abc")]
    assert app.targets == [] and transport.is_closing()
