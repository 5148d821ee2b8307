"""TLS on the reactor: server contexts and the socket operations of a TLS connection.

:class:`TlsSocket` is the TLS implementation of
:class:`~wssync.io.sockops.SocketOps`: a :class:`~wssync.io.transport.Transport`
over a non-blocking ``ssl.SSLSocket`` reads and writes through it.  The
handshake runs on the reactor (never a thread, never a blocking call) under its
own deadline, and only then does the protocol hear of the connection, so
``HttpConnection`` and ``WebSocketConnection`` never know their bytes were
encrypted; the ALPN name the client chose may give the connection another
protocol first (:meth:`ProtocolRegistry.after_tls`).  A handshake costs memory
while it waits for its client: OpenSSL is handed the bytes only once the
client's whole first record is in the kernel's buffer, and at most
``max_tls_handshakes`` run at once (past that the oldest one is dropped); what
hostile or broken clients cause is logged a few times, then once per 10 s per
kind with a count (:mod:`wssync.io.ratelog`).  Reads also take what
OpenSSL decrypted but the socket no longer signals; a graceful close says
close_notify first.  :func:`server_context` builds the context a careful
operator would: TLS 1.2 or newer, the ssl module's secure defaults, no
compression, renegotiation or session tickets, ALPN ``http/1.1``.  Like the
rest of the transport layer this module knows nothing of HTTP: what to answer
a client that speaks plain text to the TLS port is bytes the server hands in.
"""

from __future__ import annotations

import logging
import socket
import ssl
import sys
import time
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Tuple, Type, Union

from .ratelog import RateLimitedLog
from .reactor import Reactor, Timer
from .sockops import Buffer
from .transport import EVENT_READ, EVENT_WRITE, RECV_SIZE, BaseProtocol, Transport, WriteLimits

if TYPE_CHECKING:
    from .listener import LiveTransports
    from .registry import ProtocolRegistry

log = logging.getLogger("wssync.tls")

# Bytes joined into one TLS write: records are up to 16 KiB, so a few of them
# per call, without copying a whole large backlog at once.
_WRITE_BATCH = 256 * 1024
_QUICKACK: Optional[int] = getattr(socket, "TCP_QUICKACK", None)  # Linux only
CLIENT_CERT_MODES = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL,
                     "required": ssl.CERT_REQUIRED}

# Waiting for the client's first record without reading it: the socket becomes
# readable only once that many bytes are there (SO_RCVLOWAT).  Linux honours it
# in poll and epoll for TCP (not for Unix sockets); elsewhere OpenSSL reads at once.
_RCVLOWAT: Optional[int] = (getattr(socket, "SO_RCVLOWAT", None)
                            if sys.platform.startswith("linux") else None)
_RECORD_HEADER = 5  # content type, version (2 bytes), length (2 bytes)
_HANDSHAKE_RECORD = 0x16
# Past max_tls_handshakes, one waiting this long for its first record goes first.
FIRST_RECORD_PATIENCE = 1.0
_MAX_RECORD = 16384 + 2048  # the largest record body TLS allows (TLSCiphertext)


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
    """What every TLS connection of a listener shares.

    With ``protocols``, the ALPN names registered there are offered before
    ``http/1.1`` (the context is changed only when there are any), and a
    client that picks one gets that protocol instead of the first.

    It also counts the handshakes in progress: past ``max_handshakes`` (0: no
    limit) a new connection drops the oldest unfinished one.  A client that
    is shaking hands finishes within a round trip or two, so the oldest is
    nearly always one that stalled; leaving new connections in the backlog
    instead would let a few thousand stalled ones shut every client out until
    their deadline, and then the next batch of them would come first.
    """

    __slots__ = ("_handshakes", "context", "dropped", "failed", "handshake_timeout",
                 "max_handshakes", "plain_answer", "plain_sent", "protocols", "timed_out")

    def __init__(self, context: ssl.SSLContext, handshake_timeout: float,
                 plain_answer: bytes = b"",
                 protocols: Optional[ProtocolRegistry] = None,
                 max_handshakes: int = 0) -> None:
        self.context = context
        self.handshake_timeout = handshake_timeout
        self.plain_answer = plain_answer  # sent in clear to a client that spoke plain text
        self.protocols = protocols
        self.max_handshakes = max_handshakes
        # Handshakes in progress, oldest first (a dict keeps the order they came in).
        self._handshakes: Dict[TlsSocket, None] = {}
        # What clients cause at will: a few lines, then one per 10 s per kind.
        self.timed_out = RateLimitedLog(log, logging.INFO, "TLS handshakes not done in time")
        self.failed = RateLimitedLog(log, logging.INFO, "TLS handshakes failed")
        self.plain_sent = RateLimitedLog(log, logging.INFO, "plain HTTP requests to the TLS port")
        self.dropped = RateLimitedLog(log, logging.WARNING,
                                      "unfinished TLS handshakes dropped at max_tls_handshakes")
        names = protocols.alpn_protocols() if protocols is not None else []
        if names:
            context.set_alpn_protocols(names + [n for n in ("http/1.1",) if n not in names])

    def transport(self, reactor: Reactor, sock: socket.socket, peername: Any,
                  protocol: BaseProtocol, live: Optional[LiveTransports],
                  limits: WriteLimits) -> Transport:
        """A :data:`~wssync.io.listener.TransportFactory` for the listener."""
        tls_sock = self.context.wrap_socket(sock, server_side=True,
                                            do_handshake_on_connect=False)
        return Transport(reactor, tls_sock, peername, protocol, live, limits,
                         TlsSocket(tls_sock, self))

    @property
    def handshaking(self) -> int:
        """Handshakes in progress."""
        return len(self._handshakes)

    def _began(self, tls: TlsSocket) -> None:
        handshakes = self._handshakes
        if self.max_handshakes and len(handshakes) >= self.max_handshakes:
            self._victim()._drop(self.max_handshakes)
        handshakes[tls] = None

    def _victim(self) -> TlsSocket:
        """The handshake to drop for a new one: the oldest that has waited more than
        FIRST_RECORD_PATIENCE for the client's first record (it cost nothing yet and
        is the likeliest stalled; a real client sends its hello within a round
        trip), else the oldest.  So a storm of real clients, whose handshakes are
        past the server's hello, is not undone by the bound.  (Oldest first: the
        scan ends at the first one younger than the patience.)"""
        patience = time.monotonic() - FIRST_RECORD_PATIENCE
        for tls in self._handshakes:
            if tls._since > patience:
                break
            if tls._need:
                return tls
        return next(iter(self._handshakes))

    def _ended(self, tls: TlsSocket) -> None:
        self._handshakes.pop(tls, None)


class TlsSocket:
    """Socket operations of one TLS connection: the handshake, then reads and
    writes through OpenSSL (see :class:`~wssync.io.sockops.SocketOps`)."""

    __slots__ = ("_handshaking", "_need", "_settings", "_since", "_timer", "_transport",
                 "sock")

    secure = True
    sendfile = False  # the kernel would send the file unencrypted: read it in chunks
    would_block: Tuple[Type[BaseException], ...] = (
        ssl.SSLWantWriteError, ssl.SSLWantReadError, BlockingIOError, InterruptedError)

    def __init__(self, sock: ssl.SSLSocket, settings: TlsSettings) -> None:
        self.sock = sock
        self._settings = settings
        self._handshaking = True
        self._since = 0.0  # when the handshake began
        self._need = 0  # bytes of the first record waited for in the kernel (0: not waiting)
        self._timer: Optional[Timer] = None
        # The transport while the handshake runs (its reactor callbacks are ours).
        self._transport: Optional[Transport] = None

    def io(self, sock: socket.socket) -> TlsSocket:
        return self

    # -- the handshake ----------------------------------------------------------

    def start(self, transport: Transport) -> None:
        self._transport = transport
        self._since = time.monotonic()
        settings = self._settings
        settings._began(self)
        timeout = settings.handshake_timeout
        if timeout:
            self._timer = transport.reactor.call_later(timeout, self._expired)
        # OpenSSL's buffers for a handshake (about 37 KiB) are made at its first
        # read: until the client's first record has arrived whole it waits in
        # the kernel, so a client that says nothing or stops half-way holds
        # about 11 KiB here instead of 48.
        if (_RCVLOWAT is None or self.sock.family not in (socket.AF_INET, socket.AF_INET6)
                or not self._await_bytes(transport, _RECORD_HEADER)):
            self._handshake()

    def _await_bytes(self, transport: Transport, need: int) -> bool:
        """Be called when ``need`` bytes are in the socket (False: cannot wait so)."""
        assert _RCVLOWAT is not None
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, _RCVLOWAT, need)
        except OSError:
            return False
        self._need = need
        transport.wait_socket(EVENT_READ, self._arrived)
        return True

    def _arrived(self, _mask: int) -> None:
        transport = self._transport
        if transport is None:
            return  # closed meanwhile
        need = self._need
        try:
            # The socket's own recv: peeking leaves the bytes for OpenSSL.
            head = socket.socket.recv(self.sock, need, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            log.debug("connection %s closed during the TLS handshake: %r", transport.peername,
                      exc)
            transport.abort()
            return
        if need == _RECORD_HEADER and len(head) == need and head[0] == _HANDSHAKE_RECORD:
            length = int.from_bytes(head[3:5], "big")
            if 0 < length <= _MAX_RECORD and self._await_bytes(transport, need + length):
                return
        # The first record is here, or never will be whole (the client closed,
        # sent something else, or the kernel woke us early): OpenSSL decides.
        self._need = 0
        assert _RCVLOWAT is not None
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, _RCVLOWAT, 1)
        except OSError:
            pass  # the connection is gone: the handshake will say so
        self._handshake()

    def _handshake(self, _mask: int = 0) -> None:
        transport = self._transport
        if transport is None:
            return  # closed meanwhile
        try:
            self.sock.do_handshake()
        except ssl.SSLWantReadError:
            transport.wait_socket(EVENT_READ, self._handshake)
            return
        except ssl.SSLWantWriteError:
            transport.wait_socket(EVENT_WRITE, self._handshake)
            return
        except ssl.SSLError as exc:
            self._failed(transport, exc)
            return
        except OSError as exc:
            # Reset or gone: nothing to say.
            log.debug("connection %s closed during the TLS handshake: %r", transport.peername,
                      exc)
            transport.abort()
            return
        self._handshaking = False
        self._transport = None
        self._cancel_timer()
        self._settings._ended(self)
        if _QUICKACK is not None:
            # With no session ticket to send, the client's Finished is answered
            # by a delayed ACK (40 ms), and a client with Nagle on holds its
            # first request until that ACK arrives: acknowledge now.
            try:
                self.sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)
            except OSError:
                pass  # not TCP (a Unix socket)
        protocols = self._settings.protocols
        if protocols is not None:
            chosen = protocols.after_tls(self.sock.selected_alpn_protocol())
            if chosen is not None:
                transport.protocol = chosen  # the first one never heard of the connection
        transport.connection_ready()
        if self.sock.pending():
            transport.read_buffered()

    def _failed(self, transport: Transport, exc: ssl.SSLError) -> None:
        raw = socket.socket  # the socket's own methods, below the TLS layer
        if exc.reason == "HTTP_REQUEST" and self._settings.plain_answer:
            # Plain HTTP on the TLS port: OpenSSL recognised a request line.
            # Answer in clear, as nginx does, rather than with a TLS alert the
            # client cannot read.
            transport.metrics.tls_failures["plaintext"] += 1
            self._settings.plain_sent.event(transport.reactor, transport.peername,
                         "%s: plain HTTP sent to the TLS port", transport.peername)
            try:
                raw.send(self.sock, self._settings.plain_answer)
            except OSError:
                pass
        else:
            transport.metrics.tls_failures["error"] += 1
            self._settings.failed.event(
                transport.reactor, transport.peername, "%s: TLS handshake failed: %s",
                transport.peername, exc.reason or exc.strerror or exc)
        # OpenSSL has sent its alert (or we our answer).  Closing with the
        # client's last bytes unread would reset the connection, and the client
        # could lose what we sent: read what has arrived first.
        try:
            for _ in range(16):  # what has arrived, not a stream without end
                if not raw.recv(self.sock, RECV_SIZE):
                    break
        except OSError:
            pass
        transport.abort()

    def _expired(self) -> None:
        self._timer = None
        transport = self._transport
        if self._handshaking and transport is not None and not transport.closed:
            transport.metrics.tls_failures["timeout"] += 1
            self._settings.timed_out.event(transport.reactor, transport.peername,
                             "%s: TLS handshake not done within %g s", transport.peername,
                             self._settings.handshake_timeout)
            transport.abort()

    def _drop(self, limit: int) -> None:
        """A new connection needs the place of this, the oldest unfinished handshake."""
        self._settings._ended(self)
        transport = self._transport
        if transport is not None and not transport.closed:
            transport.metrics.tls_failures["max_tls_handshakes"] += 1
            self._settings.dropped.event(transport.reactor, transport.peername,
                           "max_tls_handshakes (%d) reached: dropping the oldest unfinished "
                           "handshake (%s, %.1f s old)", limit, transport.peername,
                           time.monotonic() - self._since)
            transport.abort()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # -- reading and writing ------------------------------------------------------

    def recv(self, size: int) -> bytes:
        sock = self.sock
        # One recv gives at most one TLS record (16 KiB).  What OpenSSL still
        # holds decrypted is taken now, since the socket will not signal it;
        # asking again without it would raise SSLWantReadError, and an exception
        # per message is the dearest part of a small echo.
        data = sock.recv(size)
        if data and sock.pending():
            chunks = [data]
            while sock.pending():
                chunks.append(sock.recv(size))
            data = b"".join(chunks)
        return data

    def send(self, data: Buffer) -> int:
        # OpenSSL writes a whole buffer or reports "would block" (no partial
        # writes), so a large buffer would count no progress until all of it
        # is out: hand it at most _WRITE_BATCH bytes per call, and progress is
        # counted slice by slice.  A retried write must start at the same byte
        # and be no shorter, as OpenSSL requires: the queue's head is unchanged
        # until bytes are taken, so the retry is the same slice (or, if more
        # was queued meanwhile, the same bytes and more).
        if len(data) > _WRITE_BATCH:
            data = memoryview(data)[:_WRITE_BATCH]
        return self.sock.send(data)

    def sendmsg(self, buffers: List[Buffer]) -> int:
        # An SSLSocket has no sendmsg: join a batch (each write is encrypted
        # into fresh records anyway), its last buffer cut at the batch size.
        batch: List[Buffer] = []
        size = 0
        for buf in buffers:
            if size + len(buf) > _WRITE_BATCH:
                batch.append(memoryview(buf)[:_WRITE_BATCH - size])
                break
            batch.append(buf)
            size += len(buf)
        return self.sock.send(b"".join(batch))

    # -- closing ------------------------------------------------------------------

    def shutdown_write(self, transport: Transport) -> None:
        self._say_close_notify()
        try:
            # The socket's own shutdown: SSLSocket.shutdown would drop the TLS
            # state, and the peer's last records could no longer be read.
            socket.socket.shutdown(self.sock, socket.SHUT_WR)
        except OSError:
            pass

    def close(self, transport: Transport, graceful: bool) -> None:
        self._transport = None
        self._cancel_timer()
        self._settings._ended(self)
        if graceful and not self._handshaking:
            self._say_close_notify()
        try:
            self.sock.close()
        except OSError:
            pass

    def _say_close_notify(self) -> None:
        """Send close_notify without waiting for the peer's (non-blocking)."""
        try:
            self.sock.unwrap()
        except (ssl.SSLError, OSError, ValueError):
            pass  # sent (the peer's answer would be a WantRead), or the peer is gone
