"""What the transport layer counts for the metrics: accepted connections, peers
dropped for not taking their output (by reason), and busy pool threads, on real
sockets and a real reactor."""

from __future__ import annotations

import socket
import threading
import time
from typing import Callable, List

from wssync.io.lanes import ThreadPool
from wssync.io.listener import Listener, LiveTransports
from wssync.io.reactor import Reactor
from wssync.io.transport import Transport, WriteLimits
from wssync.metrics import Metrics

KB = 1024


class Quiet:
    """A protocol that takes whatever comes and says nothing."""

    name = "quiet"

    def connection_made(self, transport: Transport) -> None: ...
    def data_received(self, data: bytes) -> None: ...
    def eof_received(self) -> None: ...
    def connection_lost(self, exc: object) -> None: ...
    def pause_writing(self) -> None: ...
    def resume_writing(self) -> None: ...
    def shutdown(self) -> None: ...


def run_until(reactor: Reactor, predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        reactor.call_later(0.01, reactor.stop)
        reactor.run()
        if predicate():
            return True
    return False


def dropped_peer(limits: WriteLimits, chunk: int) -> Metrics:
    """A peer that reads nothing, written to until it is dropped: the run's counts."""
    reactor = Reactor()
    ours, peer = socket.socketpair()
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    ours.setblocking(False)
    metrics = Metrics()
    live = LiveTransports(metrics)
    transport = Transport(reactor, ours, "peer", Quiet(), live, limits)
    assert transport.metrics is metrics  # at hand for every layer above
    transport.start()
    try:
        for _ in range(100):
            transport.write(b"x" * chunk)
            if transport.closed:
                break
        assert run_until(reactor, lambda: transport.closed)
        return metrics
    finally:
        transport.abort()
        peer.close()
        reactor.close()


def test_a_peer_dropped_past_the_hard_limit_is_counted() -> None:
    metrics = dropped_peer(WriteLimits(high_water=16 * KB, max_buffer=32 * KB, send_timeout=0.0,
                                       hard_limit=64 * KB), 16 * KB)
    assert metrics.slow_drops == {"hard_limit": 1, "not_catching_up": 0, "send_timeout": 0}


def test_a_peer_not_catching_up_is_counted() -> None:
    metrics = dropped_peer(WriteLimits(high_water=16 * KB, max_buffer=32 * KB, send_timeout=0.0,
                                       hard_limit=64 * 1024 * KB, slow_timeout=0.05), 16 * KB)
    assert metrics.slow_drops == {"hard_limit": 0, "not_catching_up": 1, "send_timeout": 0}


def test_a_peer_taking_nothing_for_send_timeout_is_counted() -> None:
    metrics = dropped_peer(WriteLimits(high_water=1024 * KB, max_buffer=4096 * KB,
                                       send_timeout=0.05), 64 * KB)
    assert metrics.slow_drops == {"hard_limit": 0, "not_catching_up": 0, "send_timeout": 1}


def test_the_listener_counts_every_connection_it_accepts() -> None:
    reactor = Reactor()
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    metrics = Metrics()
    live = LiveTransports(metrics)
    refused: List[socket.socket] = []

    def refuse(sock: socket.socket) -> None:
        refused.append(sock)
        sock.close()

    listener = Listener(reactor, server, Quiet, live,
                        WriteLimits(64 * KB, 256 * KB, 0.0), 2, refuse)
    clients = [socket.create_connection(server.getsockname()) for _ in range(3)]
    try:
        assert run_until(reactor, lambda: metrics.accepted == 3)
        assert len(live) == 2 and len(refused) == 1  # (refused ones were accepted too)
        assert all(transport.metrics is metrics for transport in live)
    finally:
        for client in clients:
            client.close()
        for transport in live:
            transport.abort()
        listener.close()
        reactor.close()


def test_a_pool_counts_its_busy_threads_and_what_waits() -> None:
    pool = ThreadPool(2, name="wssync-test-busy")
    release = threading.Event()
    started = threading.Semaphore(0)

    def task() -> None:
        started.release()
        release.wait(10)

    try:
        for _ in range(3):  # three lanes: two run, one waits for a thread
            pool.lane().submit(task)
        assert started.acquire(timeout=5) and started.acquire(timeout=5)
        assert pool.busy == 2 and pool.queued == 3
        release.set()
        deadline = time.monotonic() + 5
        while (pool.busy or pool.queued) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert pool.busy == 0 and pool.queued == 0
    finally:
        release.set()
        pool.shutdown()
