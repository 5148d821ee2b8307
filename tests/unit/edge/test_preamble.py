"""``ProxyPreamble`` over a RecordingTransport and a real Reactor: the PROXY header
whole and in pieces, the client it names made the transport's peer, the bytes
after it handed to the next protocol, and the ends without one (timeout,
malformed header, EOF, shutdown), where the next protocol is never made."""

from __future__ import annotations

import struct
import time
from typing import Any, Iterator, List, Optional

import pytest
from helpers import RecordingTransport

from wssync.edge.preamble import ProxyPreamble
from wssync.edge.proxy_protocol import V2_SIGNATURE
from wssync.io.reactor import Reactor

PEER = ("127.0.0.1", 50000)  # RecordingTransport's socket peer: the proxy
V1 = b"PROXY TCP4 198.51.100.7 10.0.0.1 4711 443\r\n"
V2 = V2_SIGNATURE + bytes([0x21, 0x11]) + struct.pack("!H", 12) + \
    bytes([198, 51, 100, 7, 10, 0, 0, 1]) + struct.pack("!HH", 4711, 443)
REQUEST = b"GET / HTTP/1.1\r\nHost: example\r\n\r\n"


class Next:
    """The protocol after the preamble: what it was told."""

    name = "next"

    def __init__(self) -> None:
        self.transport: Any = None
        self.data = bytearray()
        self.calls: List[str] = []

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.calls.append("made")

    def data_received(self, data: bytes) -> None:
        self.calls.append("data")
        self.data += data

    def eof_received(self) -> None:
        self.calls.append("eof")

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        self.calls.append("lost")

    def pause_writing(self) -> None:
        self.calls.append("pause")

    def resume_writing(self) -> None:
        self.calls.append("resume")

    def shutdown(self) -> None:
        self.calls.append("shutdown")


class Setup:
    def __init__(self, reactor: Reactor, timeout: float) -> None:
        self.made: List[Next] = []
        self.preamble = ProxyPreamble(self._make, timeout)
        self.transport = RecordingTransport(reactor, self.preamble)
        self.preamble.connection_made(self.transport)  # type: ignore[arg-type]

    def _make(self) -> Next:
        self.made.append(Next())
        return self.made[-1]

    def feed(self, *pieces: bytes) -> None:
        for piece in pieces:
            self.transport.protocol.data_received(piece)


@pytest.fixture
def reactor() -> Iterator[Reactor]:
    reactor = Reactor()
    yield reactor
    reactor.close()


def setup(reactor: Reactor, timeout: float = 5.0) -> Setup:
    return Setup(reactor, timeout)


@pytest.mark.parametrize("header", [V1, V2], ids=["v1", "v2"])
def test_a_whole_header_hands_the_connection_and_the_rest_on(reactor: Reactor,
                                                             header: bytes) -> None:
    s = setup(reactor)
    s.feed(header + REQUEST)
    assert len(s.made) == 1
    nxt = s.made[0]
    assert nxt.transport is s.transport and s.transport.protocol is nxt
    assert bytes(nxt.data) == REQUEST and nxt.calls == ["made", "data"]
    assert s.transport.peername == ("198.51.100.7", 4711)  # the client the proxy names
    assert s.transport.proxy_peername == PEER  # the socket's own peer: the proxy
    assert s.transport.kinds() == ["set_protocol"]


@pytest.mark.parametrize("header", [V1, V2], ids=["v1", "v2"])
def test_a_header_in_pieces_makes_the_next_protocol_once_it_is_whole(
        reactor: Reactor, header: bytes) -> None:
    s = setup(reactor)
    for i in range(len(header) - 1):
        s.feed(header[i:i + 1])
    assert s.made == [] and s.transport.events == []
    s.feed(header[-1:])
    assert len(s.made) == 1 and s.made[0].calls == ["made"]  # nothing after it yet
    s.feed(REQUEST[:5], REQUEST[5:])  # later bytes go to the next protocol directly
    assert bytes(s.made[0].data) == REQUEST
    assert s.transport.peername == ("198.51.100.7", 4711)


def test_a_header_without_a_client_keeps_the_sockets_own_peer(reactor: Reactor) -> None:
    s = setup(reactor)
    s.feed(b"PROXY UNKNOWN\r\n" + REQUEST)
    assert len(s.made) == 1 and bytes(s.made[0].data) == REQUEST
    assert s.transport.peername == PEER and getattr(s.transport, "proxy_peername", None) is None


@pytest.mark.parametrize("pieces", [
    [b"GET / HTTP/1.1\r\n"],  # no header at all
    [b"PROXY TCP4 198.51.100.7", b" 10.0.0.1 4711 99999\r\n" + REQUEST],  # a bad port
    [b"PROXY TCP4 " + b"1" * 120],  # longer than a v1 header may be
    [V2[:12] + b"\x31" + V2[13:16]],  # version 3
], ids=["http", "port", "long", "version"])
def test_a_malformed_header_closes_without_the_next_protocol(reactor: Reactor,
                                                             pieces: List[bytes]) -> None:
    s = setup(reactor)
    s.feed(*pieces)
    assert s.transport.kinds() == ["abort"] and s.transport.closed
    assert s.made == []


def test_no_header_within_the_timeout_closes(reactor: Reactor) -> None:
    s = setup(reactor, timeout=0.1)
    s.feed(V1[:10])  # a start, never finished
    started = time.monotonic()
    assert s.transport.run_until(lambda: s.transport.closed, timeout=5)
    assert time.monotonic() - started >= 0.09
    assert s.transport.kinds() == ["abort"] and s.made == []


def test_a_header_in_time_stops_the_clock(reactor: Reactor) -> None:
    s = setup(reactor, timeout=0.1)
    s.feed(V1)
    s.transport.run_until(lambda: False, timeout=0.3)
    assert not s.transport.closed and s.transport.kinds() == ["set_protocol"]


def test_an_end_before_the_header_closes_without_the_next_protocol(reactor: Reactor) -> None:
    s = setup(reactor)
    s.feed(V1[:20])
    s.preamble.eof_received()
    assert s.transport.kinds() == ["abort"] and s.made == []


def test_shutdown_before_the_header_closes(reactor: Reactor) -> None:
    s = setup(reactor)
    s.preamble.shutdown()
    assert s.transport.kinds() == ["close"] and s.made == []
