"""The WebSocket opening handshake (RFC 6455 section 4) on plain data (Sans-I/O).

Decides whether a parsed request is a handshake, validates it, and computes
``Sec-WebSocket-Accept``.  It builds no sockets and knows no routes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from typing import List, Optional, Tuple

from .request import Headers, Request

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
SUPPORTED_VERSION = "13"


class HandshakeError(Exception):
    """A handshake to refuse with ``status`` and ``headers``."""

    def __init__(self, status: int, message: str,
                 headers: Optional[List[Tuple[str, str]]] = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or []


def accept_key(key: str) -> str:
    """``Sec-WebSocket-Accept`` for a ``Sec-WebSocket-Key``."""
    digest = hashlib.sha1((key + GUID).encode("ascii")).digest()
    return base64.b64encode(digest).decode("ascii")


def is_handshake(request: Request) -> bool:
    """True when the client asks to switch this connection to WebSocket.

    ``Upgrade: websocket`` alone is not enough: HTTP/1.0 has no upgrade, and
    without the ``upgrade`` token in ``Connection`` a proxy may have forwarded
    a hop-by-hop header it should have dropped.
    """
    headers = request.headers
    return (
        request.version == "HTTP/1.1"
        and "upgrade" in headers
        and "websocket" in headers.tokens("upgrade")
        and "upgrade" in headers.tokens("connection")
    )


def validate_request(request: Request) -> str:
    """Check a handshake request; return its key or raise :class:`HandshakeError`."""
    if request.method != "GET":
        raise HandshakeError(400, "WebSocket handshake must use GET")
    headers = request.headers
    versions = headers.get_all("sec-websocket-version")
    if len(versions) != 1 or versions[0].strip() != SUPPORTED_VERSION:
        raise HandshakeError(
            426, "unsupported WebSocket version",
            [("Sec-WebSocket-Version", SUPPORTED_VERSION)],
        )
    keys = headers.get_all("sec-websocket-key")
    if len(keys) != 1:
        raise HandshakeError(400, "missing or repeated Sec-WebSocket-Key")
    key = keys[0].strip()
    try:
        raw = base64.b64decode(key.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raw = b""
    if len(raw) != 16:
        raise HandshakeError(400, "Sec-WebSocket-Key is not 16 bytes in base64")
    return key


def offered_subprotocols(headers: Headers) -> List[str]:
    """The client's ``Sec-WebSocket-Protocol`` offers, in its order of preference."""
    out = []
    for value in headers.get_all("sec-websocket-protocol"):
        for token in value.split(","):
            token = token.strip()
            if token:
                out.append(token)
    return out


def response_headers(key: str, subprotocol: Optional[str]) -> List[Tuple[str, str]]:
    """Headers of the ``101 Switching Protocols`` answer."""
    headers = [
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Accept", accept_key(key)),
    ]
    if subprotocol:
        headers.append(("Sec-WebSocket-Protocol", subprotocol))
    return headers
