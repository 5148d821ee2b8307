"""Every error wssync raises on purpose: one family under :class:`WssyncError`.

Each protocol error carries a hint for the answer, first among its arguments:
:class:`HttpError` the HTTP status the connection answers with,
:class:`ProtocolError` the WebSocket close code.  The connection objects turn
the hint into bytes; the code that raises never writes anything.  This module
imports nothing of the package.
"""

from __future__ import annotations

from typing import List, Optional, Tuple


class WssyncError(Exception):
    """Base of every error wssync raises on purpose."""


class HttpError(WssyncError):
    """Refuse an HTTP request with ``status`` (and extra ``headers``).

    Raised by the request parser or the WebSocket handshake, the answer is
    sent and the connection closes.  A handler may raise it too: the client
    then gets that status as a plain-text answer.
    """

    def __init__(self, status: int, message: str,
                 headers: Optional[List[Tuple[str, str]]] = None) -> None:
        super().__init__(f"{status} {message}")
        self.status = status
        self.message = message
        self.headers = headers or []


class RequestBodyError(WssyncError, ConnectionError):
    """A request body read as it arrives (``wsgi.input``) cannot be read to its
    end: the client went away or stalled, broke the chunked framing, or sent
    more than ``max_body_size``.  ``status`` is what the server answers with
    when no response has started (400, 408 or 413).  An ``OSError``, as a
    broken socket would raise, so frameworks treat it as a broken upload.
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status} {message}")
        self.status = status
        self.message = message


class ProtocolError(WssyncError):
    """The WebSocket peer broke RFC 6455; close the connection with ``code``."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"{code} {reason}")
        self.code = code
        self.reason = reason


class HandshakeRefused(WssyncError):
    """The server did not switch to WebSocket, or answered the handshake wrongly
    (``status`` is its HTTP status, None when the answer was not even that)."""

    def __init__(self, status: Optional[int], message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class TlsError(WssyncError, ConnectionError):
    """The client could not set up TLS with the server: an untrusted or wrong
    certificate, no common protocol version, or a server that does not speak TLS."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConnectionClosed(WssyncError):
    """The WebSocket is closed; ``code`` and ``reason`` tell how (1006: no close frame)."""

    def __init__(self, code: int, reason: str = "") -> None:
        super().__init__(f"connection closed: {code} {reason}".rstrip())
        self.code = code
        self.reason = reason


class ServingWhileImported(WssyncError, RuntimeError):
    """A module started a server while being imported as ``--app``."""


class UnsupportedLibrary(WssyncError, RuntimeError):
    """A library the application uses (engine.io, ...) is of a version wssync does
    not serve; the message names the versions it does and the extra to install."""


class SendTimeout(WssyncError, TimeoutError):
    """A send from a thread waited its ``timeout`` for a slow peer; nothing was sent."""


class FileEndedEarly(WssyncError, OSError):
    """A file sent as a region ended before the count promised to the peer was sent;
    the connection is cut (``connection_lost`` gets this error)."""


class ProxyProtocolError(WssyncError, ValueError):
    """The bytes are not a valid PROXY protocol header."""


class BindError(WssyncError, OSError):
    """The server could not listen where it was told.  The message names the
    address and what to do; ``errno`` is the failure's.  Made by :meth:`of`,
    it is also the ``OSError`` subclass the failure was (``PermissionError``,
    ``FileExistsError`` ...), so callers catching those keep working."""

    def __init__(self, errno: Optional[int], message: str) -> None:
        super().__init__(errno, message)
        self.message = message

    def __str__(self) -> str:
        return self.message

    @staticmethod
    def of(exc: OSError, message: str) -> BindError:
        for kind in (_PermissionBindError, _ExistsBindError, _MissingBindError):
            if isinstance(exc, kind.__bases__[1]):
                return kind(exc.errno, message)
        return BindError(exc.errno, message)


class _PermissionBindError(BindError, PermissionError):
    pass


class _ExistsBindError(BindError, FileExistsError):
    pass


class _MissingBindError(BindError, FileNotFoundError):
    pass


# A traceback names them as the user knows them.
for _kind in (_PermissionBindError, _ExistsBindError, _MissingBindError):
    _kind.__name__ = _kind.__qualname__ = "BindError"
