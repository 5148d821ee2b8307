"""Transport and Listener on their own: real socket pairs and a real Reactor run
from the test thread; write-first, back-pressure, the drop rules, the send
timeout, protocol swap, close/close_write/abort, peer EOF and reset, reading
pauses, and the listener's accept, refuse and backlog behaviour."""

from __future__ import annotations

import os
import selectors
import socket
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, List, Optional, Tuple

import pytest

from wssync.errors import WssyncError
from wssync.io.listener import Listener, LiveTransports, create_listening_socket
from wssync.io.reactor import Reactor
from wssync.io.sockops import PlainSocket
from wssync.io.transport import BaseProtocol, FileEndedEarly, Transport, WriteLimits

KB = 1024
LIMITS = WriteLimits(high_water=64 * KB, max_buffer=16 * 1024 * KB, send_timeout=0.0)


def run_until(reactor: Reactor, predicate: Callable[[], bool], timeout: float = 10.0,
              step: float = 0.005) -> bool:
    """Run the reactor on this thread until ``predicate()`` holds or ``timeout`` passes.

    The predicate runs on the reactor thread (from a timer), so it may touch the
    transport and the peer socket.  Returns whether it held.
    """
    deadline = time.monotonic() + timeout
    held = [False]

    def check() -> None:
        if predicate():
            held[0] = True
            reactor.stop()
        elif time.monotonic() >= deadline:
            reactor.stop()
        else:
            reactor.call_later(step, check)

    reactor.call_soon(check)
    reactor.run()
    return held[0]


def run_for(reactor: Reactor, seconds: float, tick: Optional[Callable[[], Any]] = None) -> None:
    """Run the reactor for ``seconds``, calling ``tick`` every few milliseconds."""

    def never() -> bool:
        if tick is not None:
            tick()
        return False

    run_until(reactor, never, timeout=seconds)


def pattern(size: int, seed: int = 0) -> bytes:
    """Bytes whose order matters: a shifted or dropped chunk shows."""
    block = bytes((seed + i) % 251 for i in range(251))
    return (block * (size // len(block) + 1))[:size]


class Recorder:
    """A protocol that records every call the transport makes on it."""

    def __init__(self, name: str = "recorder",
                 on_data: Optional[Callable[[Recorder, bytes], None]] = None) -> None:
        self.name = name
        self.transport: Optional[Transport] = None
        self.events: List[Tuple[str, Any]] = []
        self.data = bytearray()
        self._on_data = on_data

    def connection_made(self, transport: Transport) -> None:
        self.transport = transport
        self.events.append(("made", transport))

    def data_received(self, data: bytes) -> None:
        self.events.append(("data", bytes(data)))
        self.data += data
        if self._on_data is not None:
            self._on_data(self, data)

    def eof_received(self) -> None:
        self.events.append(("eof", None))

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        self.events.append(("lost", exc))

    def pause_writing(self) -> None:
        # Note what the kernel had taken so far: the buffered amount follows.
        assert self.transport is not None
        self.events.append(("pause", self.transport.bytes_out))

    def resume_writing(self) -> None:
        assert self.transport is not None
        self.events.append(("resume", self.transport.bytes_out))

    def shutdown(self) -> None:
        self.events.append(("shutdown", None))

    def kinds(self) -> List[str]:
        return [kind for kind, _ in self.events]

    def count(self, kind: str) -> int:
        return self.kinds().count(kind)

    def last(self, kind: str) -> Any:
        return [value for k, value in self.events if k == kind][-1]


def as_protocol(protocol: BaseProtocol) -> BaseProtocol:
    return protocol


as_protocol(Recorder())  # type-checked: the recorder offers all a transport calls


@dataclass
class Conn:
    """A Transport on one end of a socket pair; the test plays the peer on the other."""

    reactor: Reactor
    transport: Transport
    protocol: Recorder
    peer: socket.socket
    registry: LiveTransports
    written: bytearray = field(default_factory=bytearray)  # handed to transport.write()
    received: bytearray = field(default_factory=bytearray)  # what the peer read
    peer_eof: bool = False

    def write(self, data: bytes) -> None:
        self.transport.write(data)
        self.written += data

    def buffered(self) -> int:
        """Bytes written but not yet taken by the kernel (exact between runs)."""
        return len(self.written) - self.transport.bytes_out

    def read_peer(self, limit: int = 1 << 20) -> int:
        """Read what the peer has (up to ``limit`` bytes) without blocking."""
        got = 0
        while got < limit and not self.peer_eof:
            try:
                chunk = self.peer.recv(min(65536, limit - got))
            except BlockingIOError:
                break
            if not chunk:
                self.peer_eof = True
                break
            self.received += chunk
            got += len(chunk)
        return got

    def drain_peer(self, limit: int = 1 << 20) -> Callable[[], bool]:
        """A run_until predicate: the peer reads, until it has seen EOF."""

        def drained() -> bool:
            self.read_peer(limit)
            return self.peer_eof

        return drained


@pytest.fixture
def connect() -> Iterator[Callable[..., Conn]]:
    """``connect(limits)`` -> a Conn on a fresh reactor; all of it closed after the test."""
    conns: List[Conn] = []

    def make(limits: WriteLimits = LIMITS, protocol: Optional[Recorder] = None) -> Conn:
        reactor = Reactor()
        ours, peer = socket.socketpair()
        # Small buffers: a few kilobytes fill them, so output has to wait.
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        ours.setblocking(False)
        peer.setblocking(False)
        protocol = protocol or Recorder()
        registry = LiveTransports()
        transport = Transport(reactor, ours, "peer", protocol, registry, limits)
        transport.start()
        conn = Conn(reactor, transport, protocol, peer, registry)
        conns.append(conn)
        return conn

    yield make
    for conn in conns:
        if not conn.transport.closed:
            conn.transport.abort()
        conn.peer.close()
        conn.reactor.close()


def fill_until_paused(conn: Conn, chunk: int = 16 * KB) -> None:
    """Write while the peer reads nothing, until the protocol is asked to pause."""
    for i in range(1000):
        conn.write(pattern(chunk, seed=i))
        if conn.protocol.count("pause"):
            return
    raise AssertionError("pause_writing never came")


def selector_events(conn: Conn) -> int:
    try:
        return conn.reactor.selector.get_key(conn.transport.sock).events
    except KeyError:
        return 0


# -- writing and back-pressure ---------------------------------------------------


def test_a_small_write_goes_out_at_once_with_nothing_buffered(
        connect: Callable[..., Conn]) -> None:
    conn = connect()
    conn.write(b"hello")
    # No reactor round yet: the kernel already has it.
    assert conn.transport.bytes_out == 5 and conn.buffered() == 0
    assert selector_events(conn) == selectors.EVENT_READ  # not waiting to write
    conn.read_peer()
    assert bytes(conn.received) == b"hello"
    assert conn.protocol.kinds() == ["made"]


def test_output_above_high_water_pauses_the_writer_and_reading_until_drained(
        connect: Callable[..., Conn]) -> None:
    conn = connect()
    transport, protocol, reactor = conn.transport, conn.protocol, conn.reactor
    high_water = LIMITS.high_water

    conn.peer.sendall(b"ping")  # reading works before any back-pressure
    assert run_until(reactor, lambda: transport.bytes_in == 4)

    fill_until_paused(conn)
    assert conn.buffered() > high_water
    assert len(conn.written) - protocol.last("pause") > high_water
    conn.write(b"more")  # already paused: no second pause_writing
    assert protocol.kinds() == ["made", "data", "pause"]

    # Reading stops as soon as the writer is paused, with nothing else happening.
    conn.peer.sendall(b"early")
    run_for(reactor, 0.1)
    assert transport.bytes_in == 4

    # The peer keeps sending but reads nothing: we stop reading it.  The
    # protocol's own resume_reading does not override the back-pressure.
    transport.pause_reading()
    transport.resume_reading()
    for _ in range(5):
        conn.peer.sendall(b"while-paused")
        run_for(reactor, 0.05)
    assert transport.bytes_in == 4
    assert protocol.count("resume") == 0

    # The peer drains a little at a time: resume comes below a quarter of high_water.
    assert run_until(reactor, lambda: conn.read_peer(4 * KB) >= 0 and protocol.count("resume") > 0)
    assert len(conn.written) - protocol.last("resume") <= high_water // 4
    assert protocol.count("resume") == 1

    # Reading resumed: what the peer sent during the pause arrives.
    assert run_until(reactor,
                     lambda: transport.bytes_in == 4 + 5 + 5 * len(b"while-paused"))
    assert bytes(protocol.data) == b"ping" + b"early" + 5 * b"while-paused"

    # Everything written arrives, in order, and the connection stays up.
    assert run_until(reactor, lambda: conn.read_peer() >= 0 and conn.received == conn.written)
    assert not transport.closed and protocol.count("lost") == 0
    assert selector_events(conn) == selectors.EVENT_READ


def test_a_peer_already_behind_is_dropped_past_the_hard_limit(
        connect: Callable[..., Conn]) -> None:
    limits = WriteLimits(high_water=64 * KB, max_buffer=128 * KB, send_timeout=0.0,
                         hard_limit=256 * KB)
    conn = connect(limits)
    transport, protocol = conn.transport, conn.protocol
    chunk = 32 * KB
    for i in range(100):
        before = conn.buffered()
        conn.write(pattern(chunk, seed=i))
        if transport.closed:
            # Dropped on the write that took a peer already above high_water past
            # the hard limit, not earlier (the soft limit alone drops nobody at once).
            assert before > limits.high_water
            assert before + chunk > limits.hard_limit
            break
        assert conn.buffered() <= limits.hard_limit
    assert transport.closed
    assert protocol.count("lost") == 1 and protocol.last("lost") is None
    assert len(conn.registry) == 0
    assert transport.sock.fileno() == -1
    # The peer gets what the kernel had taken, then EOF: the rest was discarded.
    assert run_until(conn.reactor, conn.drain_peer())
    assert len(conn.received) == transport.bytes_out < len(conn.written)
    assert conn.received == conn.written[:transport.bytes_out]
    transport.write(b"late")  # writes after the drop are ignored
    assert protocol.count("lost") == 1


def test_the_hard_limit_is_never_below_the_soft_one(connect: Callable[..., Conn]) -> None:
    limits = WriteLimits(high_water=64 * KB, max_buffer=512 * KB, send_timeout=0.0,
                         hard_limit=128 * KB)
    conn = connect(limits)
    for i in range(14):  # 448 KiB: past the hard limit given, within the soft one
        conn.write(pattern(32 * KB, seed=i))
    assert not conn.transport.closed
    for i in range(4):
        conn.write(pattern(32 * KB, seed=i))
    assert conn.transport.closed


def test_a_peer_that_had_caught_up_may_take_one_large_write(
        connect: Callable[..., Conn]) -> None:
    limits = WriteLimits(high_water=64 * KB, max_buffer=256 * KB, send_timeout=0.0,
                         hard_limit=256 * KB)
    conn = connect(limits)
    transport, protocol, reactor = conn.transport, conn.protocol, conn.reactor

    conn.write(pattern(32 * KB, seed=1))
    assert 0 < conn.buffered() <= limits.high_water  # output waits, but not behind
    big = pattern(1024 * KB, seed=2)
    conn.write(big)  # far past the hard limit, in one message
    assert not transport.closed and protocol.count("lost") == 0
    assert conn.buffered() > limits.hard_limit
    assert transport.get_write_buffer_size() == conn.buffered()
    assert protocol.count("pause") == 1

    assert run_until(reactor, lambda: conn.read_peer() >= 0 and conn.received == conn.written)
    assert protocol.count("resume") == 1
    assert not transport.closed and protocol.count("lost") == 0
    assert transport.get_write_buffer_size() == 0

    # Caught up again: a second large write from an empty buffer is fine too.
    conn.write(pattern(512 * KB, seed=3))
    assert not transport.closed
    assert run_until(reactor, lambda: conn.read_peer() >= 0 and conn.received == conn.written)


def behind_after_one_large_write(connect: Callable[..., Conn]) -> Conn:
    """A peer that took one write far past the hard limit (allowed: it had caught up)."""
    conn = connect(WriteLimits(high_water=64 * KB, max_buffer=256 * KB, send_timeout=0.0,
                               hard_limit=256 * KB))
    conn.write(pattern(32 * KB))
    conn.write(pattern(1024 * KB))
    assert not conn.transport.closed
    return conn


def test_a_large_write_leaves_the_peer_behind_so_more_data_drops_it(
        connect: Callable[..., Conn]) -> None:
    conn = behind_after_one_large_write(connect)
    conn.write(b"x")
    assert conn.transport.closed and conn.protocol.count("lost") == 1


def test_control_writes_never_drop_a_peer_and_keep_their_place(
        connect: Callable[..., Conn]) -> None:
    # A keepalive ping behind one large message must not cut the peer reading it.
    conn = behind_after_one_large_write(connect)
    for _ in range(3):
        conn.transport.write_control(b"\x89\x00")
        conn.written += b"\x89\x00"
    assert not conn.transport.closed
    assert run_until(conn.reactor,
                     lambda: conn.read_peer() >= 0 and conn.received == conn.written)
    assert conn.received.endswith(3 * b"\x89\x00")
    # With nothing buffered a control write goes out at once, as any write.
    conn.transport.write_control(b"\x8a\x00")
    conn.written += b"\x8a\x00"
    assert conn.transport.get_write_buffer_size() == 0
    assert run_until(conn.reactor, lambda: conn.read_peer() >= 0 and conn.received == conn.written)


def test_a_backlog_above_the_soft_limit_that_does_not_shrink_drops_the_peer(
        connect: Callable[..., Conn]) -> None:
    limits = WriteLimits(high_water=64 * KB, max_buffer=256 * KB, send_timeout=0.0,
                         hard_limit=64 * 1024 * KB, slow_timeout=0.2)
    conn = connect(limits)
    for i in range(12):
        conn.write(pattern(32 * KB, seed=i))  # 384 KiB: above the soft limit
    started = time.monotonic()
    # The peer reads a little, but is sent more than it takes: the backlog grows.
    grew = [conn.buffered()]

    def tick() -> None:
        if conn.transport.closed:
            return
        conn.read_peer(2 * KB)
        conn.write(pattern(8 * KB))
        grew.append(conn.buffered())

    assert run_until(conn.reactor, lambda: tick() or conn.transport.closed, timeout=10)
    # Not at the first check (it only notes the backlog): after two periods at least.
    assert time.monotonic() - started >= 2 * limits.slow_timeout
    assert conn.protocol.count("lost") == 1
    assert max(grew) < 4 * 1024 * KB


def test_a_reading_peer_above_the_soft_limit_is_kept_however_slow(
        connect: Callable[..., Conn]) -> None:
    limits = WriteLimits(high_water=64 * KB, max_buffer=256 * KB, send_timeout=0.0,
                         hard_limit=512 * KB, slow_timeout=0.1)
    conn = connect(limits)
    conn.write(pattern(32 * KB))
    conn.write(pattern(2048 * KB, seed=5))  # one message, far above both limits
    # Ten checks long, the peer takes a few kilobytes now and then: its
    # backlog shrinks, slowly, and it stays above the soft limit all along.
    run_for(conn.reactor, 1.0, tick=lambda: conn.read_peer(4 * KB))
    assert not conn.transport.closed and conn.protocol.count("lost") == 0
    assert conn.buffered() > limits.max_buffer
    assert run_until(conn.reactor, lambda: conn.read_peer() >= 0 and conn.received == conn.written)


def test_a_peer_taking_no_bytes_for_send_timeout_is_dropped(
        connect: Callable[..., Conn]) -> None:
    limits = WriteLimits(high_water=64 * KB, max_buffer=16 * 1024 * KB, send_timeout=0.3)
    conn = connect(limits)
    conn.write(pattern(256 * KB))
    assert conn.buffered() > 0
    assert run_until(conn.reactor, lambda: conn.transport.closed, timeout=10)
    assert conn.protocol.count("lost") == 1 and conn.protocol.last("lost") is None
    assert len(conn.registry) == 0
    assert run_until(conn.reactor, conn.drain_peer())
    assert len(conn.received) == conn.transport.bytes_out < len(conn.written)


def test_a_slow_peer_that_keeps_taking_bytes_is_not_timed_out(
        connect: Callable[..., Conn]) -> None:
    limits = WriteLimits(high_water=64 * KB, max_buffer=16 * 1024 * KB, send_timeout=0.5)
    conn = connect(limits)
    conn.write(pattern(4096 * KB))
    # Three timeouts long, the peer reads a little every few milliseconds.
    run_for(conn.reactor, 1.5, tick=lambda: conn.read_peer(512))
    assert not conn.transport.closed and conn.protocol.count("lost") == 0
    assert conn.buffered() > 0  # output was still waiting all along
    assert len(conn.received) > 0


def test_without_send_timeout_an_idle_peer_is_kept(connect: Callable[..., Conn]) -> None:
    conn = connect(LIMITS)
    conn.write(pattern(256 * KB))
    run_for(conn.reactor, 0.5)
    assert not conn.transport.closed and conn.protocol.count("lost") == 0


# -- protocol swap -----------------------------------------------------------------


@pytest.fixture
def data_file(tmp_path: Any) -> Iterator[Tuple[int, bytes]]:
    """An open regular file (descriptor, contents) of 1 MiB + 7 bytes."""
    data = pattern(1024 * KB + 7, seed=3)
    path = tmp_path / "data.bin"
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    yield fd, data
    os.close(fd)


@pytest.mark.parametrize("use_sendfile", [True, False], ids=["sendfile", "read"])
def test_a_file_region_goes_out_in_order_between_buffers(
        connect: Callable[..., Conn], data_file: Tuple[int, bytes], use_sendfile: bool,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Far more than max_buffer, to a peer far behind: a region is not memory,
    # so nobody is dropped.  Reading instead of sendfile is the TLS way.
    limits = WriteLimits(high_water=4 * KB, max_buffer=16 * KB, send_timeout=0.0)
    conn = connect(limits)
    monkeypatch.setattr(PlainSocket, "sendfile", use_sendfile)
    fd, data = data_file
    done: List[int] = []
    conn.write(b"head")
    conn.transport.write_file(fd, 100, len(data) - 100, lambda: done.append(1))
    conn.write(b"tail")  # queued behind the region, whatever is buffered
    conn.transport.write_file(fd, 0, 10, lambda: done.append(-1))
    assert not done and not conn.transport.closed
    assert run_until(conn.reactor, lambda: conn.read_peer() >= 0 and len(done) == 2)
    assert run_until(conn.reactor, lambda: conn.read_peer() >= 0
                     and len(conn.received) == len(data) - 100 + 8 + 10)
    assert bytes(conn.received) == b"head" + data[100:] + b"tail" + data[:10]
    assert conn.transport.bytes_out == len(conn.received)
    assert not conn.transport.closed and conn.protocol.count("pause") == 0
    conn.transport.close()
    assert run_until(conn.reactor, conn.drain_peer())


def test_a_file_region_written_first_completes_at_once(
        connect: Callable[..., Conn], data_file: Tuple[int, bytes]) -> None:
    conn = connect()
    fd, _ = data_file
    done: List[bool] = []
    conn.transport.write_file(fd, 0, 1000, lambda: done.append(True))
    assert done == [True]  # the kernel took it all in the call: no selector round
    assert selector_events(conn) == selectors.EVENT_READ
    conn.transport.write_file(fd, 0, 0, lambda: done.append(True))  # nothing to send
    assert done == [True, True]


@pytest.mark.parametrize("use_sendfile", [True, False], ids=["sendfile", "read"])
def test_a_file_shorter_than_its_region_drops_the_connection(
        connect: Callable[..., Conn], data_file: Tuple[int, bytes], use_sendfile: bool,
        monkeypatch: pytest.MonkeyPatch) -> None:
    conn = connect()
    monkeypatch.setattr(PlainSocket, "sendfile", use_sendfile)
    fd, data = data_file
    done: List[bool] = []
    conn.transport.write_file(fd, 0, len(data) + 1, lambda: done.append(True))
    assert run_until(conn.reactor, lambda: conn.read_peer() >= 0 and conn.transport.closed)
    assert not done
    lost = conn.protocol.last("lost")
    assert isinstance(lost, FileEndedEarly)
    assert isinstance(lost, OSError) and isinstance(lost, WssyncError)  # both families
    assert run_until(conn.reactor, conn.drain_peer())
    assert bytes(conn.received) == data  # all the file had, then the end


def test_abort_discards_a_pending_region_without_calling_done(
        connect: Callable[..., Conn], data_file: Tuple[int, bytes]) -> None:
    conn = connect()
    fd, data = data_file
    done: List[bool] = []
    conn.transport.write_file(fd, 0, len(data), lambda: done.append(True))
    assert not conn.transport.closed and not done
    conn.transport.abort()
    assert conn.protocol.count("lost") == 1 and not done
    run_for(conn.reactor, 0.05)
    assert not done


def test_set_protocol_hands_over_leftover_before_later_bytes(
        connect: Callable[..., Conn]) -> None:
    new = Recorder("new")

    def upgrade(old: Recorder, data: bytes) -> None:
        _head, sep, rest = bytes(old.data).partition(b"|")
        if sep:
            assert old.transport is not None
            old.transport.set_protocol(new, rest)

    conn = connect(protocol=Recorder("old", on_data=upgrade))
    transport, old, reactor = conn.transport, conn.protocol, conn.reactor
    conn.peer.sendall(b"HEAD|rest")
    assert run_until(reactor, lambda: new.count("made") == 1)
    conn.peer.sendall(b"more")
    assert run_until(reactor, lambda: bytes(new.data) == b"restmore")

    assert transport.protocol is new and new.transport is transport
    assert new.events[0] == ("made", transport)
    assert new.events[1] == ("data", b"rest")  # leftover first, before what came later
    assert b"".join(d for k, d in new.events if k == "data") == b"restmore"
    assert bytes(old.data) == b"HEAD|rest"  # the old protocol got nothing more

    conn.peer.close()  # and the end of the connection reaches the new protocol only
    assert run_until(reactor, lambda: new.count("eof") == 1)
    transport.close()
    assert new.count("lost") == 1 and old.count("lost") == 0 and old.count("eof") == 0


def test_set_protocol_passes_on_a_paused_writer(connect: Callable[..., Conn]) -> None:
    conn = connect()
    old, reactor = conn.protocol, conn.reactor
    fill_until_paused(conn)
    new = Recorder("new")
    conn.transport.set_protocol(new, b"left")
    assert new.kinds() == ["made", "pause", "data"]
    assert new.events[2] == ("data", b"left")

    assert run_until(reactor, lambda: conn.read_peer(8 * KB) >= 0 and new.count("resume") > 0)
    assert old.count("resume") == 0  # the resume goes to the protocol now in place
    assert run_until(reactor, lambda: conn.read_peer() >= 0 and conn.received == conn.written)


def test_set_protocol_without_paused_writer_does_not_pause(
        connect: Callable[..., Conn]) -> None:
    conn = connect()
    new = Recorder("new")
    conn.transport.set_protocol(new)
    assert new.kinds() == ["made"]  # no pause, and no empty data_received


# -- closing -----------------------------------------------------------------------


def test_close_sends_everything_buffered_then_closes(connect: Callable[..., Conn]) -> None:
    conn = connect()
    transport, protocol = conn.transport, conn.protocol
    conn.write(pattern(512 * KB))
    assert conn.buffered() > 0
    transport.close()
    assert transport.is_closing() and not transport.closed
    assert protocol.count("lost") == 0 and conn.registry  # not yet: output waits
    transport.write(b"after close")  # ignored
    assert run_until(conn.reactor, conn.drain_peer())
    assert conn.received == pattern(512 * KB)  # every byte, then EOF
    assert transport.closed and len(conn.registry) == 0
    assert protocol.count("lost") == 1 and protocol.last("lost") is None
    transport.close()
    transport.abort()
    assert protocol.count("lost") == 1


def test_close_with_nothing_buffered_closes_at_once(connect: Callable[..., Conn]) -> None:
    conn = connect()
    conn.write(b"bye")
    conn.transport.close()
    assert conn.transport.closed and conn.protocol.count("lost") == 1
    conn.read_peer()
    assert bytes(conn.received) == b"bye" and conn.peer_eof


def test_close_write_sends_fin_after_the_buffer_and_keeps_reading(
        connect: Callable[..., Conn]) -> None:
    conn = connect()
    transport, protocol, reactor = conn.transport, conn.protocol, conn.reactor
    conn.write(pattern(256 * KB))
    assert conn.buffered() > 0
    transport.close_write()
    transport.write(b"after FIN")  # ignored
    assert run_until(reactor, conn.drain_peer())
    assert conn.received == pattern(256 * KB)  # the whole buffer came before the FIN

    # Still reading: the peer's late bytes and its own EOF arrive.
    conn.peer.sendall(b"late words")
    conn.peer.shutdown(socket.SHUT_WR)
    assert run_until(reactor, lambda: protocol.count("eof") == 1)
    assert bytes(protocol.data) == b"late words"
    assert not transport.closed and protocol.count("lost") == 0
    transport.close()
    assert protocol.count("lost") == 1


def test_close_write_with_nothing_buffered_sends_fin_at_once(
        connect: Callable[..., Conn]) -> None:
    conn = connect()
    conn.transport.close_write()
    conn.read_peer()
    assert conn.peer_eof and not conn.transport.closed
    conn.peer.sendall(b"still")
    assert run_until(conn.reactor, lambda: bytes(conn.protocol.data) == b"still")


def test_abort_discards_unsent_output(connect: Callable[..., Conn]) -> None:
    conn = connect()
    transport, protocol = conn.transport, conn.protocol
    conn.write(pattern(512 * KB))
    taken = transport.bytes_out
    assert conn.buffered() > 0
    transport.abort()
    assert transport.closed and len(conn.registry) == 0
    assert protocol.count("lost") == 1 and protocol.last("lost") is None
    assert run_until(conn.reactor, conn.drain_peer())
    assert len(conn.received) == taken < 512 * KB  # only what the kernel had
    assert transport.bytes_out == taken
    transport.abort()
    assert protocol.count("lost") == 1


# -- the peer's end -------------------------------------------------------------------


def test_peer_half_close_gives_eof_received_and_writing_goes_on(
        connect: Callable[..., Conn]) -> None:
    conn = connect()
    transport, protocol, reactor = conn.transport, conn.protocol, conn.reactor
    conn.peer.sendall(b"request")
    conn.peer.shutdown(socket.SHUT_WR)
    assert run_until(reactor, lambda: protocol.count("eof") == 1)
    assert protocol.kinds() == ["made", "data", "eof"]
    run_for(reactor, 0.1)
    assert protocol.count("eof") == 1 and not transport.closed  # once; the protocol decides
    transport.write(b"response")
    transport.close()
    assert run_until(reactor, conn.drain_peer())
    assert bytes(conn.received) == b"response"
    assert protocol.kinds() == ["made", "data", "eof", "lost"]


def test_peer_reset_gives_connection_lost_once(connect: Callable[..., Conn]) -> None:
    conn = connect()
    transport, protocol = conn.transport, conn.protocol
    conn.write(b"never read")
    conn.peer.close()  # with unread input: the kernel resets the connection
    assert run_until(conn.reactor, lambda: protocol.count("lost") > 0)
    assert isinstance(protocol.last("lost"), ConnectionResetError)
    assert transport.closed and len(conn.registry) == 0
    transport.write(b"too late")
    transport.close()
    transport.abort()
    run_for(conn.reactor, 0.1)
    assert protocol.count("lost") == 1


def test_writing_to_a_closed_peer_gives_connection_lost_once(
        connect: Callable[..., Conn]) -> None:
    conn = connect()
    protocol = conn.protocol
    conn.peer.close()
    assert run_until(conn.reactor, lambda: protocol.count("eof") == 1)
    conn.transport.write(b"anyone there?")
    assert protocol.count("lost") == 1
    assert isinstance(protocol.last("lost"), BrokenPipeError)
    assert conn.transport.closed and len(conn.registry) == 0
    conn.transport.write(b"again")
    conn.transport.close()
    assert protocol.count("lost") == 1


def test_pause_reading_holds_input_until_resume_reading(
        connect: Callable[..., Conn]) -> None:
    conn = connect()
    transport, protocol, reactor = conn.transport, conn.protocol, conn.reactor
    conn.peer.sendall(b"one")
    assert run_until(reactor, lambda: transport.bytes_in == 3)
    transport.pause_reading()
    transport.pause_reading()  # idempotent
    conn.peer.sendall(b"two")
    run_for(reactor, 0.2)
    assert transport.bytes_in == 3 and bytes(protocol.data) == b"one"
    transport.resume_reading()
    assert run_until(reactor, lambda: transport.bytes_in == 6)
    assert bytes(protocol.data) == b"onetwo"


# -- the listener ----------------------------------------------------------------------


@dataclass
class Served:
    """A Listener on 127.0.0.1 port 0 and what it made."""

    reactor: Reactor
    listener: Listener
    port: int
    registry: LiveTransports
    protocols: List[Recorder]
    refused: List[socket.socket]
    clients: List[socket.socket] = field(default_factory=list)

    def connect(self) -> socket.socket:
        client = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        self.clients.append(client)
        return client


@pytest.fixture
def serve() -> Iterator[Callable[..., Served]]:
    """``serve(max_connections=0, accepting=None)`` -> a Served; all closed afterwards."""
    made: List[Served] = []

    def make(max_connections: int = 0,
             accepting: Optional[Callable[[], float]] = None) -> Served:
        reactor = Reactor()
        sock = create_listening_socket("127.0.0.1", 0)
        registry = LiveTransports()
        protocols: List[Recorder] = []
        refused: List[socket.socket] = []

        def factory() -> Recorder:
            protocol = Recorder(f"conn{len(protocols)}")
            protocols.append(protocol)
            return protocol

        listener = Listener(reactor, sock, factory, registry, LIMITS, max_connections,
                            refused.append, accepting)
        served = Served(reactor, listener, sock.getsockname()[1], registry, protocols, refused)
        made.append(served)
        return served

    yield make
    for served in made:
        for transport in served.registry:
            transport.abort()
        for sock in served.refused + served.clients:
            sock.close()
        served.listener.close()
        served.reactor.close()


def test_listener_wraps_each_connection_in_a_registered_transport(
        serve: Callable[..., Served]) -> None:
    served = serve()
    first, second = served.connect(), served.connect()
    assert run_until(served.reactor, lambda: len(served.registry) == 2)
    assert len(served.protocols) == 2
    by_peer = {}
    for protocol in served.protocols:
        assert protocol.kinds() == ["made"]
        transport = protocol.transport
        assert transport is not None and transport.protocol is protocol
        assert transport in served.registry
        assert transport.sock.getblocking() is False
        assert transport.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        by_peer[transport.peername] = protocol
    assert set(by_peer) == {first.getsockname(), second.getsockname()}

    # Bytes from each client reach its own protocol, and replies go back.
    first.sendall(b"from first")
    second.sendall(b"from second")
    one, two = by_peer[first.getsockname()], by_peer[second.getsockname()]
    assert run_until(served.reactor,
                     lambda: bytes(one.data) == b"from first" and bytes(two.data) == b"from second")
    assert one.transport is not None
    one.transport.write(b"reply")
    assert first.recv(100) == b"reply"
    one.transport.close()
    assert two.transport is not None
    assert list(served.registry) == [two.transport]


def test_listener_refuses_past_max_connections(serve: Callable[..., Served]) -> None:
    served = serve(max_connections=1)
    served.connect()
    assert run_until(served.reactor, lambda: len(served.registry) == 1)
    second = served.connect()
    assert run_until(served.reactor, lambda: len(served.refused) == 1)
    refused = served.refused[0]
    assert refused.getpeername() == second.getsockname()
    assert len(served.registry) == 1 and len(served.protocols) == 1  # no protocol for it
    refused.close()  # what the server's on_refused would do, after a 503
    assert second.recv(100) == b""

    # A free slot lets the next client in.
    transport = served.protocols[0].transport
    assert transport is not None
    transport.close()
    assert len(served.registry) == 0
    served.connect()
    assert run_until(served.reactor, lambda: len(served.registry) == 1)
    assert len(served.refused) == 1 and len(served.protocols) == 2


def test_listener_leaves_clients_in_the_backlog_while_not_accepting(
        serve: Callable[..., Served]) -> None:
    open_ = [False]
    asked = [0]

    def accepting() -> float:
        asked[0] += 1
        return 0.0 if open_[0] else 0.05

    served = serve(accepting=accepting)
    client = served.connect()  # the kernel completes the handshake on its own
    client.sendall(b"waiting")
    run_for(served.reactor, 0.3)
    assert asked[0] > 0  # the listener did look, and said no
    assert served.protocols == [] and len(served.registry) == 0

    open_[0] = True
    assert run_until(served.reactor, lambda: len(served.registry) == 1)
    protocol = served.protocols[0]
    assert run_until(served.reactor, lambda: bytes(protocol.data) == b"waiting")


def test_listener_close_while_paused_stops_accepting(serve: Callable[..., Served]) -> None:
    served = serve(accepting=lambda: 0.05)
    served.connect()
    run_for(served.reactor, 0.1)  # the listener is paused, its resume timer pending
    served.listener.close()
    served.listener.close()  # idempotent
    assert served.listener.sock.fileno() == -1
    run_for(served.reactor, 0.2)  # the cancelled resume does not re-register it
    assert len(served.registry) == 0
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", served.port), timeout=2).close()
