"""TLS socket operations on their own: a Transport with ``TlsSocket`` on one end of a
real socket pair, a real Reactor run from the test thread, and a real TLS client
(the ssl module, blocking, on a thread) on the other end: the handshake before the
protocol hears of the connection, its deadline, plain HTTP answered in clear, a
failed handshake, ALPN choosing the protocol through the registry, large reads
and writes, a file region, close_notify.  Over TCP (where the kernel can hold a
ClientHello until it is whole) the first record waits in the kernel, unread."""

from __future__ import annotations

import fcntl
import os
import socket
import ssl
import struct
import termios
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Iterator, List, NamedTuple, Optional

import pytest
from conftest import TlsFiles
from test_transport import LIMITS, Recorder, pattern, run_until

from wssync.io.listener import LiveTransports
from wssync.io.reactor import Reactor
from wssync.io.registry import ProtocolRegistry
from wssync.io.tls import TlsSettings, TlsSocket
from wssync.io.transport import Transport

ANSWER = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


class Served(NamedTuple):
    """A TLS transport on our end of a socket pair; the client's end is ``peer``."""

    reactor: Reactor
    transport: Transport
    protocol: Recorder
    live: LiveTransports
    peer: socket.socket


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=2) as executor:
        yield executor


@pytest.fixture
def serve(tls_files: TlsFiles) -> Iterator[Callable[..., Served]]:
    """``serve(timeout=5, protocols=None, context=None)`` -> Served; closed afterwards."""
    made: List[Served] = []

    def make(timeout: float = 5.0, protocols: Optional[ProtocolRegistry] = None,
             context: Optional[ssl.SSLContext] = None,
             protocol: Optional[Recorder] = None, tcp: bool = False,
             settings: Optional[TlsSettings] = None) -> Served:
        reactor = Reactor()
        ours, peer = tcp_pair() if tcp else socket.socketpair()
        ours.setblocking(False)
        peer.settimeout(10)
        protocol = protocol or Recorder("first")
        live = LiveTransports()
        if settings is None:
            settings = TlsSettings(context or tls_files.server_context(), timeout, ANSWER,
                                   protocols)
        transport = settings.transport(reactor, ours, "peer", protocol, live, LIMITS)
        transport.start()
        served = Served(reactor, transport, protocol, live, peer)
        made.append(served)
        return served

    yield make
    for served in made:
        if not served.transport.closed:
            served.transport.abort()
        served.peer.close()
        served.reactor.close()


def tcp_pair() -> tuple[socket.socket, socket.socket]:
    """(server end, client end) of a TCP connection on the loopback."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        peer = socket.create_connection(listener.getsockname())
        ours, _ = listener.accept()
    return ours, peer


def unread(sock: socket.socket) -> int:
    """Bytes the kernel holds for ``sock`` that nobody has read yet."""
    return int(struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0" * 4))[0])


def client(tls_files: TlsFiles, sock: socket.socket,
           alpn: Optional[List[str]] = None) -> ssl.SSLSocket:
    """The client's side of the handshake (blocking: run it on a thread).  An end
    without close_notify raises ``ssl.SSLEOFError`` when it reads."""
    context = tls_files.client_context()
    if alpn is not None:
        context.set_alpn_protocols(alpn)
    return context.wrap_socket(sock, server_hostname="localhost", suppress_ragged_eofs=False)


def read_all(sock: socket.socket, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return bytes(data)


def settle(served: Served, future: Future[Any], timeout: float = 10.0) -> Any:
    """Run the reactor until the client's thread is done; what it returned."""
    assert run_until(served.reactor, future.done, timeout=timeout)
    return future.result()


# -- the handshake ---------------------------------------------------------------


def test_the_protocol_hears_of_the_connection_once_the_handshake_is_done(
        serve: Callable[..., Served], tls_files: TlsFiles, pool: ThreadPoolExecutor) -> None:
    served = serve()
    transport, protocol = served.transport, served.protocol
    assert transport.secure and transport in served.live
    run_until(served.reactor, lambda: False, timeout=0.1)
    assert protocol.events == []  # the client has not said a word: nothing to tell

    tls = settle(served, pool.submit(client, tls_files, served.peer))
    assert run_until(served.reactor, lambda: protocol.count("made") == 1)
    assert protocol.transport is transport
    # Both ways, through the encryption; a graceful close says close_notify.
    tls.sendall(b"hello")
    assert run_until(served.reactor, lambda: bytes(protocol.data) == b"hello")
    transport.write(b"world")
    transport.close()
    assert transport.closed and len(served.live) == 0
    assert read_all(tls, 6) == b"world"  # then a clean end, not a reset or a raw FIN
    assert protocol.kinds() == ["made", "data", "lost"] and protocol.last("lost") is None
    tls.close()


def test_a_handshake_not_done_within_the_deadline_closes_without_the_protocol(
        serve: Callable[..., Served]) -> None:
    served = serve(timeout=0.2)
    started = time.monotonic()
    assert run_until(served.reactor, lambda: served.transport.closed, timeout=5)
    assert time.monotonic() - started >= 0.19
    assert served.protocol.events == [] and len(served.live) == 0
    assert served.peer.recv(100) == b""


def test_the_deadline_ends_with_the_handshake(
        serve: Callable[..., Served], tls_files: TlsFiles, pool: ThreadPoolExecutor) -> None:
    served = serve(timeout=0.3)
    tls = settle(served, pool.submit(client, tls_files, served.peer))
    run_until(served.reactor, lambda: False, timeout=0.6)
    assert not served.transport.closed and served.protocol.kinds() == ["made"]
    tls.close()


def test_plain_http_on_the_tls_port_is_answered_in_clear(serve: Callable[..., Served]) -> None:
    served = serve()
    served.peer.sendall(b"GET / HTTP/1.1\r\nHost: example\r\n\r\n")
    assert run_until(served.reactor, lambda: served.transport.closed)
    assert read_all(served.peer, len(ANSWER) + 1) == ANSWER
    assert served.protocol.events == [] and len(served.live) == 0


def test_a_client_that_is_not_tls_nor_http_gets_an_alert_and_the_end(
        serve: Callable[..., Served]) -> None:
    served = serve()
    served.peer.sendall(b"\x00" * 64)
    assert run_until(served.reactor, lambda: served.transport.closed)
    reply = read_all(served.peer, 1 << 16)
    assert ANSWER not in reply  # no HTTP for a client that did not speak it
    assert served.protocol.events == []


def shake_hands_by_hand(sock: socket.socket, tls: ssl.SSLObject, incoming: ssl.MemoryBIO,
                        outgoing: ssl.MemoryBIO) -> None:
    """The rest of a client's handshake over memory, its bytes through ``sock``."""
    while True:
        try:
            tls.do_handshake()
        except ssl.SSLWantReadError:
            sock.sendall(outgoing.read())
            data = sock.recv(65536)
            assert data, "the server closed during the handshake"
            incoming.write(data)
            continue
        sock.sendall(outgoing.read())
        return


@pytest.mark.parametrize("cut", [3, 200])
def test_a_client_hello_waits_unread_in_the_kernel_until_its_record_is_whole(
        serve: Callable[..., Served], tls_files: TlsFiles, pool: ThreadPoolExecutor,
        cut: int) -> None:
    """OpenSSL's buffers for a handshake are made at its first read: the first
    ``cut`` bytes of a ClientHello (less than a record header, or part of the
    record) stay in the kernel, and the handshake then completes as usual."""
    served = serve(tcp=True)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = tls_files.client_context().wrap_bio(incoming, outgoing, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    hello = outgoing.read()
    served.peer.sendall(hello[:cut])
    run_until(served.reactor, lambda: False, timeout=0.2)
    assert unread(served.transport.sock) == cut
    assert not served.transport.closed and served.protocol.events == []

    def rest() -> None:
        served.peer.sendall(hello[cut:])
        shake_hands_by_hand(served.peer, tls, incoming, outgoing)
        tls.write(b"hello")
        served.peer.sendall(outgoing.read())

    settle(served, pool.submit(rest))
    assert run_until(served.reactor, lambda: bytes(served.protocol.data) == b"hello")
    assert served.protocol.kinds() == ["made", "data"]


def test_a_record_header_of_garbage_goes_to_openssl_at_once(
        serve: Callable[..., Served]) -> None:
    """Five bytes that are no handshake record are OpenSSL's to refuse: no wait
    for more (the deadline is far)."""
    served = serve(timeout=30, tcp=True)
    served.peer.sendall(b"\x00\x01\x02\x03\x04")
    assert run_until(served.reactor, lambda: served.transport.closed, timeout=5)
    assert served.protocol.events == []


def test_past_max_handshakes_the_oldest_unfinished_one_is_dropped(
        serve: Callable[..., Served], tls_files: TlsFiles, pool: ThreadPoolExecutor) -> None:
    """Handshakes in progress are counted from start to end (done, failed or
    dropped); a start past the limit drops the oldest one still in progress."""
    settings = TlsSettings(tls_files.server_context(), 30, ANSWER, max_handshakes=2)
    first, second = serve(settings=settings), serve(settings=settings)
    assert settings.handshaking == 2
    done = settle(second, pool.submit(client, tls_files, second.peer))  # finishes: not counted
    assert run_until(second.reactor, lambda: second.protocol.count("made") == 1)
    assert settings.handshaking == 1 and not first.transport.closed
    third = serve(settings=settings)
    assert settings.handshaking == 2 and not first.transport.closed
    fourth = serve(settings=settings)  # the first is the oldest unfinished one
    assert first.transport.closed and first.peer.recv(100) == b""
    assert not third.transport.closed and not fourth.transport.closed
    assert settings.handshaking == 2
    fourth.transport.abort()
    assert settings.handshaking == 1
    done.close()


# -- ALPN and the registry ------------------------------------------------------------


def toy_registry(made: List[Recorder]) -> ProtocolRegistry:
    registry = ProtocolRegistry()

    def toy() -> Recorder:
        made.append(Recorder("toy"))
        return made[-1]

    registry.add_alpn("toy", toy)
    return registry


def test_a_registered_alpn_name_gives_the_connection_its_protocol(
        serve: Callable[..., Served], tls_files: TlsFiles, pool: ThreadPoolExecutor) -> None:
    toys: List[Recorder] = []
    served = serve(protocols=toy_registry(toys))
    # The server's order decides: its registered names come before http/1.1.
    tls = settle(served, pool.submit(client, tls_files, served.peer, ["http/1.1", "toy"]))
    assert tls.selected_alpn_protocol() == "toy"
    assert run_until(served.reactor, lambda: len(toys) == 1 and toys[0].count("made") == 1)
    assert served.transport.protocol is toys[0]
    assert served.protocol.events == []  # the first protocol never heard of it
    tls.sendall(b"to the toy")
    assert run_until(served.reactor, lambda: bytes(toys[0].data) == b"to the toy")
    tls.close()


def test_a_client_without_the_name_keeps_the_first_protocol(
        serve: Callable[..., Served], tls_files: TlsFiles, pool: ThreadPoolExecutor) -> None:
    toys: List[Recorder] = []
    served = serve(protocols=toy_registry(toys))
    tls = settle(served, pool.submit(client, tls_files, served.peer, ["http/1.1"]))
    assert tls.selected_alpn_protocol() == "http/1.1"
    assert run_until(served.reactor, lambda: served.protocol.count("made") == 1)
    assert toys == [] and served.transport.protocol is served.protocol
    tls.close()


def test_nothing_registered_leaves_the_users_context_alone(
        serve: Callable[..., Served], tls_files: TlsFiles, pool: ThreadPoolExecutor) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)  # the user's own: no ALPN at all
    context.load_cert_chain(str(tls_files.cert), str(tls_files.key))
    served = serve(protocols=ProtocolRegistry(), context=context)
    tls = settle(served, pool.submit(client, tls_files, served.peer, ["http/1.1"]))
    assert tls.selected_alpn_protocol() is None
    assert run_until(served.reactor, lambda: served.protocol.count("made") == 1)
    tls.close()


# -- reading and writing ---------------------------------------------------------------


def test_large_reads_and_writes_arrive_whole_and_in_order(
        serve: Callable[..., Served], tls_files: TlsFiles, pool: ThreadPoolExecutor) -> None:
    served = serve()
    tls = settle(served, pool.submit(client, tls_files, served.peer))
    upload, download = pattern(700 * 1024, seed=1), pattern(3 * 1024 * 1024, seed=2)
    sent = pool.submit(tls.sendall, upload)
    assert run_until(served.reactor, lambda: len(served.protocol.data) == len(upload))
    assert sent.result() is None and bytes(served.protocol.data) == upload

    received = pool.submit(read_all, tls, len(download))
    served.transport.write(download[:-5000])  # more than the socket takes at once
    served.transport.write(download[-5000:-1000])  # queued behind it: sent as a batch
    served.transport.write(download[-1000:])
    assert settle(served, received) == download
    assert served.transport.bytes_out == len(download)
    tls.close()


def test_a_read_takes_what_openssl_already_decrypted(
        tls_files: TlsFiles, pool: ThreadPoolExecutor) -> None:
    # The selector says nothing of bytes OpenSSL holds decrypted: a read that
    # left them there could wait for them for ever.
    reactor = Reactor()
    ours, peer = socket.socketpair()
    ours.setblocking(False)
    settings = TlsSettings(tls_files.server_context(), 5.0)
    tls_sock = settings.context.wrap_socket(ours, server_side=True,
                                            do_handshake_on_connect=False)
    ops = TlsSocket(tls_sock, settings)
    protocol = Recorder()
    transport = Transport(reactor, tls_sock, "peer", protocol, None, LIMITS, ops)
    try:
        transport.start()
        tls = pool.submit(client, tls_files, peer)
        assert run_until(reactor, tls.done) and protocol.count("made") == 1
        transport.pause_reading()  # the transport leaves the socket to this test
        tls.result().sendall(b"x" * 1000)  # one record
        time.sleep(0.1)
        assert ops.io(tls_sock).recv(10) == b"x" * 1000  # asked for 10, got the record
        tls.result().close()
    finally:
        transport.abort()
        peer.close()
        reactor.close()


def test_a_file_region_goes_out_encrypted_in_chunks(
        serve: Callable[..., Served], tls_files: TlsFiles, pool: ThreadPoolExecutor,
        tmp_path: Any) -> None:
    content = pattern(1024 * 1024 + 7, seed=3)
    path = tmp_path / "file.bin"
    path.write_bytes(content)
    fd = os.open(path, os.O_RDONLY)
    try:
        served = serve()
        tls = settle(served, pool.submit(client, tls_files, served.peer))
        run_until(served.reactor, lambda: served.protocol.count("made") == 1)
        done: List[bool] = []
        received = pool.submit(read_all, tls, 5 + len(content))
        served.transport.write(b"head:")
        served.transport.write_file(fd, 0, len(content), lambda: done.append(True))
        assert settle(served, received) == b"head:" + content
        assert run_until(served.reactor, lambda: done == [True])
        assert served.transport.bytes_out == 5 + len(content)
        tls.close()
    finally:
        os.close(fd)


def test_close_write_says_close_notify_and_keeps_reading(
        serve: Callable[..., Served], tls_files: TlsFiles, pool: ThreadPoolExecutor) -> None:
    served = serve()
    tls = settle(served, pool.submit(client, tls_files, served.peer))
    run_until(served.reactor, lambda: served.protocol.count("made") == 1)
    served.transport.write(b"last words")
    served.transport.close_write()
    assert read_all(tls, 1 << 16) == b"last words"  # and the clean TLS end after them
    tls.sendall(b"still heard")
    assert run_until(served.reactor, lambda: bytes(served.protocol.data) == b"still heard")
    assert not served.transport.closed
    tls.close()
