"""splice: two real transports joined; bytes both ways in order, back-pressure
from a side that does not read, and the ends passed on (the client's half-close
half-closes the server side; the server side's end closes the client's)."""

from __future__ import annotations

import socket
from typing import Iterator, List, Tuple

import pytest
from test_io_metrics import Quiet  # (the protocol a client has before the splice)
from test_transport import LIMITS, pattern, run_for, run_until

from wssync.io.protocol import BaseProtocol
from wssync.io.reactor import Reactor
from wssync.io.splice import splice
from wssync.io.transport import Transport


@pytest.fixture
def joined() -> Iterator[Tuple[Reactor, socket.socket, socket.socket, List[Transport]]]:
    """(reactor, the client's socket, the server side's socket, [client, pair] transports)."""
    reactor = Reactor()
    client_end, ours = socket.socketpair()
    near, server_end = socket.socketpair()
    for sock in (client_end, ours, near, server_end):
        sock.setblocking(False)
    client = Transport(reactor, ours, ("10.0.0.9", 4000), Quiet(), None, LIMITS)  # type: ignore[arg-type]
    client.start()
    made: List[Transport] = [client]

    def make_pair(protocol: BaseProtocol) -> Transport:
        pair = Transport(reactor, near, ("10.0.0.9", 4000), protocol, None, LIMITS)
        pair.start()
        made.append(pair)
        return pair

    splice(client, make_pair)
    yield reactor, client_end, server_end, made
    for sock in (client_end, server_end):
        sock.close()
    for transport in made:
        transport.abort()
    reactor.close()


def _read(sock: socket.socket, into: bytearray) -> None:
    try:
        while chunk := sock.recv(65536):
            into += chunk
    except BlockingIOError:
        pass


def test_bytes_go_both_ways_in_order(joined) -> None:  # type: ignore[no-untyped-def]
    reactor, client, server, _ = joined
    to_server, to_client = pattern(300_000, 1), pattern(200_000, 2)
    got_server, got_client = bytearray(), bytearray()
    client.sendall(to_server[:1000])
    server.sendall(to_client[:1000])

    def done() -> bool:
        _read(server, got_server)
        _read(client, got_client)
        return len(got_server) >= 1000 and len(got_client) >= 1000

    assert run_until(reactor, done)
    assert bytes(got_server) == to_server[:1000] and bytes(got_client) == to_client[:1000]


def test_a_side_that_does_not_read_pauses_the_other(joined) -> None:  # type: ignore[no-untyped-def]
    reactor, client, server, made = joined
    data = pattern(8 * 1024 * 1024)
    sent = [0]

    def push() -> None:
        try:
            while sent[0] < len(data):
                sent[0] += client.send(data[sent[0]:sent[0] + 65536])
        except BlockingIOError:
            pass

    run_for(reactor, 0.5, push)  # the server side reads nothing meanwhile
    pair = made[1]
    assert sent[0] < len(data)  # the client was stopped: kernel buffers and one high-water mark
    assert pair.get_write_buffer_size() < 4 * LIMITS.high_water
    got = bytearray()

    def drained() -> bool:
        push()
        _read(server, got)
        return len(got) == len(data)

    assert run_until(reactor, drained, timeout=20)
    assert bytes(got) == data


def test_the_client_s_half_close_reaches_the_server_side_and_its_answer_comes_back(
        joined) -> None:  # type: ignore[no-untyped-def]
    reactor, client, server, made = joined
    client.sendall(b"request")
    client.shutdown(socket.SHUT_WR)
    got = bytearray()
    eof = [False]

    def server_saw_eof() -> bool:
        try:
            while True:
                chunk = server.recv(65536)
                if not chunk:
                    eof[0] = True
                    break
                got.extend(chunk)
        except BlockingIOError:
            pass
        return eof[0]

    assert run_until(reactor, server_saw_eof)
    assert bytes(got) == b"request"
    server.sendall(b"answer")
    server.close()  # the server side is done: the client's connection ends after the answer
    answer = bytearray()

    def client_closed() -> bool:
        try:
            while True:
                chunk = client.recv(65536)
                if not chunk:
                    return True
                answer.extend(chunk)
        except BlockingIOError:
            return False

    assert run_until(reactor, client_closed)
    assert bytes(answer) == b"answer" and made[0].closed
