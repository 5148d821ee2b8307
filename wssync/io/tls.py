"""TLS on the reactor: server contexts and a transport whose socket speaks TLS.

:class:`TlsTransport` is a :class:`~wssync.transport.Transport` over a
non-blocking ``ssl.SSLSocket``: the handshake runs on the reactor (never a
thread, never a blocking call) under its own deadline, and only then does the
protocol hear of the connection, so ``HttpConnection`` and
``WebSocketConnection`` never know their bytes were encrypted.  Reads also
drain what OpenSSL decrypted but the socket no longer signals; a graceful close
says close_notify first.  :func:`server_context` builds the context a careful
operator would: TLS 1.2 or newer, the ssl module's secure defaults, no
compression, renegotiation or session tickets, ALPN ``http/1.1``.  Like the
rest of the transport layer this module knows nothing of HTTP: what to answer
a client that speaks plain text to the TLS port is bytes the server hands in.
"""

from __future__ import annotations

import logging
import socket
import ssl
from typing import Any, Callable, Dict, List, Optional, Union

from .reactor import Reactor, Timer
from .transport import (
    EVENT_READ,
    EVENT_WRITE,
    RECV_SIZE,
    BaseProtocol,
    Buffer,
    Transport,
    WriteLimits,
)

log = logging.getLogger("wssync.tls")

# Bytes joined into one TLS write: records are up to 16 KiB, so a few of them
# per call, without copying a whole large backlog at once.
_WRITE_BATCH = 256 * 1024
_READS_PER_EVENT = 8
_QUICKACK: Optional[int] = getattr(socket, "TCP_QUICKACK", None)  # Linux only
CLIENT_CERT_MODES = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL,
                     "required": ssl.CERT_REQUIRED}


def server_context(certfile: str, keyfile: Optional[str] = None,
                   password: Union[str, Callable[[], str], None] = None,
                   ca_certs: Optional[str] = None,
                   client_cert: str = "none") -> ssl.SSLContext:
    """A server context for ``certfile`` (and ``keyfile``): TLS 1.2+, secure defaults.

    ``client_cert`` is ``"none"``, ``"optional"`` or ``"required"``; client
    certificates are checked against ``ca_certs``.  Errors (a missing file,
    a wrong password, a key that does not match) raise ``ssl.SSLError`` or
    ``OSError`` here, not at the first connection.
    """
    if client_cert not in CLIENT_CERT_MODES:
        raise ValueError(f"client_cert must be none, optional or required, not {client_cert!r}")
    if client_cert != "none" and not ca_certs:
        raise ValueError("checking client certificates needs ca_certs")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    if context.protocol != ssl.PROTOCOL_TLS_SERVER:
        # Python 3.9 makes a generic context (whose num_tickets cannot be set)
        # with the same options, ciphers and flags as a server context.
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    # Renegotiation (TLS 1.2) lets a client make the server redo expensive
    # work on one connection; nothing here needs it.  Compression is off by
    # default in the ssl module (CRIME); say so anyway.
    context.options |= ssl.OP_NO_RENEGOTIATION | ssl.OP_NO_COMPRESSION
    # No session tickets.  OpenSSL makes one ticket key per context and the
    # ssl module cannot rotate it: whoever obtained it could decrypt every TLS
    # 1.2 session that got a ticket during the server's life (Mozilla's
    # guidelines turn tickets off where keys do not rotate).  TLS 1.3 sends
    # its tickets after the handshake, and a client reading on one thread
    # while it writes its first request on another (the websockets library's
    # sync client) can lose that request inside OpenSSL.  TLS 1.2 clients
    # still resume from the server's session cache; TLS 1.3 ones shake hands
    # in full.
    context.options |= ssl.OP_NO_TICKET
    context.num_tickets = 0
    context.set_alpn_protocols(["http/1.1"])
    context.load_cert_chain(certfile, keyfile, password)
    if ca_certs:
        context.load_verify_locations(ca_certs)
    context.verify_mode = CLIENT_CERT_MODES[client_cert]
    return context


class TlsSettings:
    """What every TLS connection of a listener shares."""

    __slots__ = ("context", "handshake_timeout", "plain_answer")

    def __init__(self, context: ssl.SSLContext, handshake_timeout: float,
                 plain_answer: bytes = b"") -> None:
        self.context = context
        self.handshake_timeout = handshake_timeout
        self.plain_answer = plain_answer  # sent in clear to a client that spoke plain text

    def transport(self, reactor: Reactor, sock: socket.socket, peername: Any,
                  protocol: BaseProtocol, registry: Dict[int, Transport],
                  limits: WriteLimits) -> Transport:
        """A :data:`~wssync.transport.TransportFactory` for the listener."""
        tls_sock = self.context.wrap_socket(sock, server_side=True,
                                            do_handshake_on_connect=False)
        return TlsTransport(reactor, tls_sock, peername, protocol, registry, limits, self)


class TlsTransport(Transport):
    """A transport over a non-blocking ``SSLSocket``: handshake first, then as plain."""

    __slots__ = ("_handshake_timer", "_handshaking", "_read_soon", "_settings")

    sock: ssl.SSLSocket
    secure = True
    _use_sendfile = False  # the kernel would send the file unencrypted: read it in chunks
    _would_block = (ssl.SSLWantWriteError, ssl.SSLWantReadError, BlockingIOError,
                    InterruptedError)

    def __init__(self, reactor: Reactor, sock: ssl.SSLSocket, peername: Any,
                 protocol: BaseProtocol, registry: Dict[int, Transport], limits: WriteLimits,
                 settings: TlsSettings) -> None:
        self._settings = settings
        self._handshaking = True
        self._handshake_timer: Optional[Timer] = None
        self._read_soon = False  # a read of already decrypted bytes is scheduled
        super().__init__(reactor, sock, peername, protocol, registry, limits)

    # -- the handshake ----------------------------------------------------------

    def start(self) -> None:
        timeout = self._settings.handshake_timeout
        if timeout:
            self._handshake_timer = self.reactor.call_later(timeout, self._handshake_expired)
        self._handshake()

    def _handshake(self) -> None:
        try:
            self.sock.do_handshake()
        except ssl.SSLWantReadError:
            self._set_events(EVENT_READ)
            return
        except ssl.SSLWantWriteError:
            self._set_events(EVENT_WRITE)
            return
        except ssl.SSLError as exc:
            self._handshake_failed(exc)
            return
        except OSError as exc:
            self._force_close(exc)  # reset or gone: nothing to say
            return
        self._handshaking = False
        if _QUICKACK is not None:
            # With no session ticket to send, the client's Finished is answered
            # by a delayed ACK (40 ms), and a client with Nagle on holds its
            # first request until that ACK arrives: acknowledge now.
            try:
                self.sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)
            except OSError:
                pass  # not TCP (a Unix socket)
        if self._handshake_timer is not None:
            self._handshake_timer.cancel()
            self._handshake_timer = None
        self._update_events()
        super().start()
        self._read_decrypted()

    def _handshake_failed(self, exc: ssl.SSLError) -> None:
        raw = socket.socket  # the socket's own methods, below the TLS layer
        if exc.reason == "HTTP_REQUEST" and self._settings.plain_answer:
            # Plain HTTP on the TLS port: OpenSSL recognised a request line.
            # Answer in clear, as nginx does, rather than with a TLS alert the
            # client cannot read.
            log.info("%s: plain HTTP sent to the TLS port", self.peername)
            try:
                raw.send(self.sock, self._settings.plain_answer)
            except OSError:
                pass
        else:
            log.info("%s: TLS handshake failed: %s", self.peername,
                     exc.reason or exc.strerror or exc)
        # OpenSSL has sent its alert (or we our answer).  Closing with the
        # client's last bytes unread would reset the connection, and the client
        # could lose what we sent: read what has arrived first.
        try:
            for _ in range(16):  # what has arrived, not a stream without end
                if not raw.recv(self.sock, RECV_SIZE):
                    break
        except OSError:
            pass
        self._force_close(None)

    def _handshake_expired(self) -> None:
        self._handshake_timer = None
        if self._handshaking and not self._closed:
            log.info("%s: TLS handshake not done within %g s", self.peername,
                     self._settings.handshake_timeout)
            self.abort()

    # -- reading ------------------------------------------------------------------

    def _on_event(self, mask: int) -> None:
        if self._handshaking:
            self._handshake()
        else:
            super()._on_event(mask)

    def _read(self, _mask: int = EVENT_READ) -> None:
        if self._handshaking:
            self._handshake()
            return
        if self._closed:
            return
        sock = self.sock
        # One recv gives at most one TLS record (16 KiB).  Read again only while
        # OpenSSL holds decrypted bytes (the socket will not signal those): a
        # recv that finds nothing raises SSLWantReadError, and an exception per
        # message is the dearest part of a small echo.  Bytes still in the
        # socket make the selector call again.
        for _ in range(_READS_PER_EVENT):
            try:
                data = sock.recv(RECV_SIZE)
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError,
                    InterruptedError):
                return
            except OSError as exc:  # ssl.SSLError included: a broken record, a bad MAC
                self._force_close(exc)
                return
            if not data:
                self._received_eof()  # close_notify, or the peer's FIN
                return
            self.bytes_in += len(data)
            self.protocol.data_received(data)
            if self._closed or self._reading_paused or self._writing_paused \
                    or not sock.pending():
                return
        if not self._read_soon:  # a bound on one peer's turn; the rest comes next round
            self._read_soon = True
            self.reactor.call_soon(self._read_decrypted)

    def _read_decrypted(self) -> None:
        """Read what OpenSSL already decrypted, if anything (no readiness event comes)."""
        self._read_soon = False
        if not self._closed and self._events & EVENT_READ and self.sock.pending():
            self._read()

    def _update_events(self) -> None:
        super()._update_events()
        if (self._events & EVENT_READ and not self._read_soon and not self._handshaking
                and not self._closed and self.sock.pending()):
            self._read_soon = True
            self.reactor.call_soon(self._read_decrypted)

    # -- writing ------------------------------------------------------------------

    def _send(self, data: Union[Buffer, List[Buffer]]) -> int:
        # OpenSSL writes a whole buffer or reports "would block" (no partial
        # writes), so a large buffer would count no progress until all of it
        # is out: hand it at most _WRITE_BATCH bytes per call, and progress is
        # counted slice by slice.  A retried write must start at the same byte
        # and be no shorter, as OpenSSL requires: the queue's head is unchanged
        # until bytes are taken, so the retry is the same slice (or, if more
        # was queued meanwhile, the same bytes and more).
        if isinstance(data, list):
            # An SSLSocket has no sendmsg: join a batch (each write is encrypted
            # into fresh records anyway), its last buffer cut at the batch size.
            batch: List[Buffer] = []
            size = 0
            for buf in data:
                if size + len(buf) > _WRITE_BATCH:
                    batch.append(memoryview(buf)[:_WRITE_BATCH - size])
                    break
                batch.append(buf)
                size += len(buf)
            data = b"".join(batch)
        elif len(data) > _WRITE_BATCH:
            data = memoryview(data)[:_WRITE_BATCH]
        return super()._send(data)  # TLS's would-block errors are in _would_block

    # -- closing ------------------------------------------------------------------

    def _shutdown_write(self) -> None:
        self._say_close_notify()
        try:
            # The socket's own shutdown: SSLSocket.shutdown would drop the TLS
            # state, and the peer's last records could no longer be read.
            socket.socket.shutdown(self.sock, socket.SHUT_WR)
        except OSError:
            pass

    def _close_socket(self, graceful: bool) -> None:
        if self._handshake_timer is not None:
            self._handshake_timer.cancel()
            self._handshake_timer = None
        if graceful and not self._handshaking:
            self._say_close_notify()
        super()._close_socket(graceful)

    def _say_close_notify(self) -> None:
        """Send close_notify without waiting for the peer's (non-blocking)."""
        try:
            self.sock.unwrap()
        except (ssl.SSLError, OSError, ValueError):
            pass  # sent (the peer's answer would be a WantRead), or the peer is gone
