"""HandoverPort: a connection and its first bytes pass between processes' ports
(here one process passing to itself over a real abstract Unix socket)."""

from __future__ import annotations

import array
import os
import socket
import threading
from pathlib import Path
from typing import Any, Iterator, List, Tuple

import pytest

from wssync.io.reactor import Reactor
from wssync.scale.handover import MAX_PASSED, HandoverPort, _address, process_token


@pytest.fixture
def reactor() -> Iterator[Reactor]:
    reactor = Reactor()
    yield reactor
    reactor.close()


def run_until(reactor: Reactor, done: Any, timeout: float = 5.0) -> None:
    stop = threading.Timer(timeout, reactor.call_soon_threadsafe, (reactor.stop,))
    stop.start()

    def check() -> None:
        if done():
            reactor.stop()
        else:
            reactor.call_later(0.01, check)

    reactor.call_soon(check)
    reactor.run()
    stop.cancel()


def test_the_token_is_per_process_and_names_the_port() -> None:
    token = process_token()
    assert token == process_token() and token.isalnum() and len(token) == 8
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child's own token
        os.write(write, process_token().encode())
        os._exit(0)
    os.waitpid(pid, 0)
    assert os.read(read, 64).decode() not in ("", token)
    os.close(read)
    os.close(write)


def test_a_passed_socket_arrives_with_its_bytes_and_peer(reactor: Reactor, tmp_path: Path) -> None:
    adopted: List[Tuple[socket.socket, Any, Any, bytes]] = []
    port = HandoverPort(reactor, directory=str(tmp_path), adopt=lambda *a: adopted.append(a))
    ours, theirs = socket.socketpair()
    try:
        assert port.send(process_token(), ours, ("10.0.0.1", 5555), None, b"GET / HTTP/1.1\r\n",
                         secure=True)
        ours.close()  # the sender's copy goes; the connection lives on in the receiver's
        run_until(reactor, lambda: adopted)
        sock, peer, proxy_peer, secure, data = adopted[0]
        assert (peer, proxy_peer, secure, data) == (("10.0.0.1", 5555), None, True,
                                                    b"GET / HTTP/1.1\r\n")
        theirs.sendall(b"more")
        assert sock.recv(16) == b"more"  # the very connection
        sock.sendall(b"answer")
        assert theirs.recv(16) == b"answer"
        assert (port.passed_out, port.passed_in) == (1, 1)
        sock.close()
    finally:
        theirs.close()
        port.close()


def test_nobody_there_or_too_much_is_served_here(reactor: Reactor, tmp_path: Path) -> None:
    port = HandoverPort(reactor, directory=str(tmp_path), adopt=lambda *a: None)
    a, b = socket.socketpair()
    try:
        assert not port.send("deadbeef", a, None, None, b"x")  # no such worker
        assert not port.send(process_token(), a, None, None, b"x" * (MAX_PASSED + 1))
        assert not port.send("../etc", a, None, None, b"x")
        assert port.passed_out == 0
    finally:
        a.close()
        b.close()
        port.close()


def test_a_record_without_exactly_one_socket_is_dropped(reactor: Reactor, tmp_path: Path) -> None:
    adopted: List[Any] = []
    port = HandoverPort(reactor, directory=str(tmp_path), adopt=lambda *a: adopted.append(a))
    address = _address(str(tmp_path), process_token())
    r1, w1 = os.pipe()
    r2, w2 = os.pipe()
    record = b"\x00\x13[null, null, false]GET"
    senders = [socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) for _ in range(3)]
    try:
        senders[0].connect(address)
        senders[0].send(record)  # no descriptor
        senders[1].connect(address)
        senders[1].sendmsg([record], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                       array.array("i", [r1, r2]))])
        senders[2].connect(address)  # and one that never says anything, then leaves
        run_until(reactor, lambda: False, timeout=0.3)
        assert adopted == [] and port.passed_in == 0
    finally:
        for sender in senders:
            sender.close()
        for fd in (r1, w1, r2, w2):
            os.close(fd)
        port.close()


def test_a_burst_larger_than_a_datagram_queue_is_all_taken(reactor: Reactor,
                                                             tmp_path: Path) -> None:
    """40 connections passed while the receiver's reactor does not run (a busy
    worker): all wait in the listen backlog and all arrive."""
    adopted: List[Any] = []
    port = HandoverPort(reactor, directory=str(tmp_path), adopt=lambda *a: adopted.append(a))
    pairs = [socket.socketpair() for _ in range(40)]
    try:
        assert all(port.send(process_token(), a, None, None, b"x") for a, _ in pairs)
        run_until(reactor, lambda: len(adopted) == 40)
        assert len(adopted) == 40
    finally:
        for a, b in pairs:
            a.close()
            b.close()
        for sock, *_ in adopted:
            sock.close()
        port.close()


def test_a_directory_other_users_can_reach_is_refused(reactor: Reactor, tmp_path: Path) -> None:
    os.chmod(tmp_path, 0o755)  # others could list it, and bind names where it is writable
    with pytest.raises(PermissionError):
        HandoverPort(reactor, directory=str(tmp_path), adopt=lambda *a: None)
    os.chmod(tmp_path, 0o700)
    HandoverPort(reactor, directory=str(tmp_path), adopt=lambda *a: None).close()
    assert os.listdir(tmp_path) == []  # its name is gone with it
