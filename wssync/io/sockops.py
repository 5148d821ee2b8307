"""How a transport's bytes reach its socket: the ``SocketOps`` extension point and
the plain implementation.

A :class:`~wssync.io.transport.Transport` keeps buffers, back-pressure and the
protocol; everything it asks of the socket below goes through one
``SocketOps``: the object it calls ``recv``, ``send`` and ``sendmsg`` on
(:meth:`SocketOps.io`), whether file regions may use ``sendfile``, which errors
mean "not now", how the connection becomes ready for its protocol (at once, or
after a handshake of its own), and how the write side and the socket close.

A plain socket needs no layer: its ``io`` is the socket itself, so the
transport's reads and writes reach the kernel with nothing in between, and one
stateless :data:`PLAIN` serves every plain connection.  TLS
(:class:`wssync.io.tls.TlsSocket`) is the other implementation.  Socket
operations never buffer output or call the protocol: that is the transport's.
"""

from __future__ import annotations

import os
import socket
from typing import TYPE_CHECKING, List, Protocol, Tuple, Type, Union

if TYPE_CHECKING:
    from .transport import Transport

Buffer = Union[bytes, bytearray, memoryview]


class SocketIO(Protocol):
    """What a transport reads and writes through (a socket, or a TLS layer over one)."""

    def recv(self, size: int, /) -> bytes: ...
    def send(self, data: Buffer, /) -> int: ...
    def sendmsg(self, buffers: List[Buffer], /) -> int: ...


class SocketOps(Protocol):
    """The socket operations of a transport (see the module's docstring)."""

    secure: bool  # the bytes are encrypted on the wire
    sendfile: bool  # file regions may go out with os.sendfile (the kernel sends them as they are)
    # What recv and send raise when the socket cannot go on now.
    would_block: Tuple[Type[BaseException], ...]

    def io(self, sock: socket.socket) -> SocketIO:
        """The object whose recv, send and sendmsg the transport of ``sock`` calls."""

    def start(self, transport: Transport) -> None:
        """Make ``transport`` ready, then call its ``connection_ready()`` (a handshake
        first waits on the reactor through ``transport.wait_socket``)."""

    def shutdown_write(self, transport: Transport) -> None:
        """Say "no more bytes" to the peer (FIN), keeping the read side open."""

    def close(self, transport: Transport, graceful: bool) -> None:
        """Close the socket; ``graceful`` when all output went out."""


class PlainSocket:
    """Socket operations of a clear-text connection: the socket itself, no layer."""

    __slots__ = ()

    secure = False
    sendfile = hasattr(os, "sendfile")
    would_block: Tuple[Type[BaseException], ...] = (BlockingIOError, InterruptedError)

    def io(self, sock: socket.socket) -> SocketIO:
        return sock

    def start(self, transport: Transport) -> None:
        transport.connection_ready()

    def shutdown_write(self, transport: Transport) -> None:
        try:
            transport.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def close(self, transport: Transport, graceful: bool) -> None:
        try:
            transport.sock.close()
        except OSError:
            pass


PLAIN = PlainSocket()
