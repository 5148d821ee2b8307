"""A blocking WebSocket client for legacy code, scripts, tests and Locust.

``connect(url)`` performs the handshake and returns a :class:`ClientConnection`
with ``send``, ``recv``, iteration, ``ping`` and ``close``.  It reuses the
project's Sans-I/O handshake and protocol code and plain blocking sockets, so
it works unchanged under gevent's monkey-patching.  It serves no one and
never touches the reactor.
"""

from __future__ import annotations

import base64
import os
import socket
import ssl
import threading
import time
from collections import deque
from typing import Any, Deque, Iterator, List, NoReturn, Optional, Tuple, Union
from urllib.parse import urlsplit

from .config import default
from .errors import ConnectionClosed, HandshakeRefused, TlsError
from .websocket.frames import CloseCode
from .websocket.handshake import check_response, client_request, parse_response_head
from .websocket.protocol import (
    CloseReceived,
    Data,
    Failure,
    Message,
    Ping,
    Pong,
    WebSocketProtocol,
)

__all__ = ["ClientConnection", "ConnectionClosed", "HandshakeRefused", "TlsError", "connect"]

# Closes that end iteration quietly; others raise ConnectionClosed.
_NORMAL_ENDS = (CloseCode.NORMAL_CLOSURE, CloseCode.GOING_AWAY, CloseCode.NO_STATUS_RCVD)
def _start_tls(sock: socket.socket, host: str, port: int,
               context: Optional[ssl.SSLContext]) -> ssl.SSLSocket:
    if context is None:
        context = ssl.create_default_context()
        context.set_alpn_protocols(["http/1.1"])
    try:
        return context.wrap_socket(sock, server_hostname=host)
    except ssl.SSLCertVerificationError as exc:
        raise TlsError(f"the certificate of {host}:{port} is not trusted: "
                       f"{exc.verify_message}") from None
    except ssl.SSLError as exc:
        raise TlsError(f"TLS with {host}:{port} failed: {exc.reason or exc}") from None


_MAX_HEAD = default("max_header_size")  # the server's own limit on a head
_MAX_EXPLANATION = 200  # characters of a refusal's plain-text body shown in the error
_EXPLANATION_WAIT = 2.0  # seconds at most spent reading that body


def _refuse(sock: socket.socket, status: int, headers: Any, body: bytes,
            deadline: float) -> NoReturn:
    """Raise HandshakeRefused for a status other than 101, with the server's own
    words when its answer is short plain text (an error page is not shown)."""
    message = f"server answered {status} instead of 101"
    kind = (headers.get("content-type") or "text/plain").split(";")[0].strip().lower()
    length = headers.get("content-length") or ""
    if kind == "text/plain" and length.isdigit():
        want = min(int(length), 4 * _MAX_EXPLANATION)
        stop = min(deadline, time.monotonic() + _EXPLANATION_WAIT)
        try:
            while len(body) < want and time.monotonic() < stop:
                sock.settimeout(max(0.01, stop - time.monotonic()))
                chunk = sock.recv(want - len(body))
                if not chunk:
                    break
                body += chunk
        except OSError:
            pass  # what arrived is shown
        text = " ".join(body[:want].decode("utf-8", "replace").split())
        text = text[len(f"{status} "):] if text.startswith(f"{status} ") else text
        if len(text) > _MAX_EXPLANATION:
            text = text[:_MAX_EXPLANATION - 3] + "..."
        if text:
            message += f": {text}"
    raise HandshakeRefused(status, message)


class ClientConnection:
    """One client-side WebSocket connection over a blocking socket.

    ``send``/``ping``/``close`` may be called from any thread; ``recv`` from
    one thread at a time.
    """

    def __init__(self, sock: socket.socket, proto: WebSocketProtocol, leftover: bytes,
                 subprotocol: Optional[str], response_headers: Any) -> None:
        self.sock = sock
        self.subprotocol = subprotocol
        self.response_headers = response_headers
        self._proto = proto
        self._send_lock = threading.Lock()
        self._messages: Deque[Data] = deque()
        self._closed: Optional[ConnectionClosed] = None
        self.pongs = 0  # pongs received, for keepalive checks
        if leftover:
            self._handle(proto.receive_data(leftover))

    # -- sending ------------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        if not data:
            return
        with self._send_lock:
            try:
                self.sock.sendall(data)
            except OSError as exc:
                self._lost(exc)
                assert self._closed is not None
                raise self._closed from exc

    def send(self, message: Union[str, bytes]) -> None:
        """Send a text (``str``) or binary (bytes-like) message."""
        if self._closed is not None:
            raise self._closed
        self._write(self._proto.send_message(message))

    def ping(self, payload: bytes = b"") -> None:
        if self._closed is not None:
            raise self._closed
        self._write(self._proto.send_ping(payload))

    # -- receiving ----------------------------------------------------------------

    def recv(self, timeout: Optional[float] = None) -> Data:
        """The next message; ``TimeoutError`` after ``timeout`` seconds, or
        :class:`ConnectionClosed` once the connection has ended."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._messages:
            if self._closed is not None:
                raise self._closed
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError("no message within the timeout")
                self.sock.settimeout(remaining)
            else:
                self.sock.settimeout(None)
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            except OSError as exc:
                self._lost(exc)
                continue
            if not data:
                self._lost(None)
                continue
            self._handle(self._proto.receive_data(data))
        return self._messages.popleft()

    def __iter__(self) -> Iterator[Data]:
        """Messages until the connection closes normally."""
        while True:
            try:
                yield self.recv()
            except ConnectionClosed as exc:
                if exc.code in _NORMAL_ENDS:
                    return
                raise

    def _handle(self, events: List[Any]) -> None:
        for event in events:
            if type(event) is Message:
                self._messages.append(event.data)
            elif type(event) is Ping:
                try:
                    self._write(self._proto.send_pong(event.payload))
                except ConnectionClosed:
                    return
            elif type(event) is Pong:
                self.pongs += 1
            elif type(event) is CloseReceived:
                try:
                    self._write(self._proto.send_close(event.code))  # 1005: no code
                except ConnectionClosed:
                    pass
                self._finish(event.code, event.reason)
            elif type(event) is Failure:
                try:
                    self._write(self._proto.send_close(event.code, event.reason))
                except ConnectionClosed:
                    pass
                self._finish(event.code, event.reason)

    # -- closing ------------------------------------------------------------------

    def close(self, code: int = CloseCode.NORMAL_CLOSURE, reason: str = "",
              timeout: float = 5.0) -> None:
        """Close handshake: send our close frame, wait for the server's, then close TCP."""
        if self._closed is None:
            try:
                self._write(self._proto.send_close(code, reason))
            except ConnectionClosed:
                return
            deadline = time.monotonic() + timeout
            try:
                while self._closed is None and time.monotonic() < deadline:
                    self.recv(deadline - time.monotonic())
            except (ConnectionClosed, TimeoutError):
                pass
        self._finish(self._closed.code if self._closed else code,
                     self._closed.reason if self._closed else reason)

    def _finish(self, code: int, reason: str) -> None:
        if self._closed is None:
            self._closed = ConnectionClosed(code, reason)
        try:
            self.sock.close()
        except OSError:
            pass

    def _lost(self, exc: Optional[BaseException]) -> None:
        self._finish(CloseCode.ABNORMAL_CLOSURE,
                     "connection lost" if exc is None else f"connection lost: {exc}")

    @property
    def closed(self) -> bool:
        return self._closed is not None

    @property
    def close_code(self) -> Optional[int]:
        return self._closed.code if self._closed else None

    def __enter__(self) -> ClientConnection:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


def _parse_url(url: str) -> Tuple[bool, str, int, str, str]:
    """(secure, host, port, target, Host header) of a ``ws://`` or ``wss://`` URL."""
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss"):
        raise ValueError(f"only ws:// and wss:// URLs are supported, not {url!r}")
    if not parts.hostname:
        raise ValueError(f"no host in {url!r}")
    secure = parts.scheme == "wss"
    default_port = 443 if secure else 80
    port = parts.port or default_port
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    host = parts.hostname
    host_header = f"[{host}]" if ":" in host else host
    if port != default_port:
        host_header += f":{port}"
    return secure, host, port, target, host_header


def connect(url: str, subprotocols: Optional[List[str]] = None,
            headers: Optional[List[Tuple[str, str]]] = None, timeout: float = 10.0,
            max_message_size: int = default("max_message_size"),
            ssl_context: Optional[ssl.SSLContext] = None) -> ClientConnection:
    """Open a WebSocket to ``ws://`` or ``wss://host[:port]/path[?query]``.

    For ``wss://`` the server's certificate and host name are verified
    against the system's trust store, or against ``ssl_context`` (for a
    private CA: ``ssl.create_default_context(cafile=...)``).  Raises
    :class:`TlsError` if TLS cannot be set up, :class:`HandshakeRefused` if
    the server does not switch protocols correctly, ``OSError`` if it cannot
    be reached, ``TimeoutError`` if the handshake takes longer than ``timeout``.
    """
    secure, host, port, target, host_header = _parse_url(url)
    key = base64.b64encode(os.urandom(16)).decode("ascii")
    sock = socket.create_connection((host, port), timeout=timeout)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if secure:
            sock = _start_tls(sock, host, port, ssl_context)
        sock.sendall(client_request(host_header, target, key, subprotocols, headers))
        buf = b""
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("handshake timed out")
            sock.settimeout(remaining)
            chunk = sock.recv(65536)
            if not chunk:
                raise HandshakeRefused(None, "connection closed during the handshake")
            buf += chunk
            if len(buf) > _MAX_HEAD and b"\r\n\r\n" not in buf:
                raise HandshakeRefused(None, "response head too large")
        head, _, leftover = buf.partition(b"\r\n\r\n")
        status, response_headers = parse_response_head(head)
        if status != 101:
            _refuse(sock, status, response_headers, leftover, deadline)
        chosen = check_response(status, response_headers, key, subprotocols)
        sock.settimeout(None)
        proto = WebSocketProtocol(client=True, max_message_size=max_message_size)
        return ClientConnection(sock, proto, leftover, chosen, response_headers)
    except BaseException:
        sock.close()
        raise
