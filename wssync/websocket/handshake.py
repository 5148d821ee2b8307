"""The WebSocket opening handshake (RFC 6455 section 4) on plain data (Sans-I/O).

Decides whether a parsed request is a handshake, validates it, builds the
``101`` answer (``Sec-WebSocket-Accept``, subprotocol, permessage-deflate) and,
for the client, the request and the check of the server's answer.  It builds
no sockets and knows no routes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from typing import List, Optional, Tuple

from ..errors import HandshakeRefused, HttpError
from ..http.request import Headers, Request
from ..http.writer import render_head
from .deflate import DeflateSettings, PerMessageDeflate, negotiate

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
SUPPORTED_VERSION = "13"


def accept_key(key: str) -> str:
    """``Sec-WebSocket-Accept`` for a ``Sec-WebSocket-Key``."""
    digest = hashlib.sha1((key + GUID).encode("ascii")).digest()
    return base64.b64encode(digest).decode("ascii")


def validate_request(request: Request) -> str:
    """Check a handshake request; return its key or raise :class:`HandshakeError`."""
    if request.method != "GET":
        raise HttpError(400, "WebSocket handshake must use GET")
    headers = request.headers
    versions = headers.get_all("sec-websocket-version")
    if len(versions) != 1 or versions[0].strip() != SUPPORTED_VERSION:
        raise HttpError(
            426, "unsupported WebSocket version",
            [("Sec-WebSocket-Version", SUPPORTED_VERSION)],
        )
    keys = headers.get_all("sec-websocket-key")
    if len(keys) != 1:
        raise HttpError(400, "missing or repeated Sec-WebSocket-Key")
    key = keys[0].strip()
    try:
        raw = base64.b64decode(key.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raw = b""
    if len(raw) != 16:
        raise HttpError(400, "Sec-WebSocket-Key is not 16 bytes in base64")
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


def switching_protocols(
    request: Request, key: str, subprotocol: Optional[str], extra_headers: List[Tuple[str, str]],
    deflate_settings: DeflateSettings,
) -> Tuple[bytes, Optional[PerMessageDeflate]]:
    """The bytes of the ``101`` answer to a valid handshake, and the
    permessage-deflate extension it agreed to (None: messages go uncompressed)."""
    headers = response_headers(key, subprotocol) + extra_headers
    deflate = negotiate(request.headers.get_all("sec-websocket-extensions"), deflate_settings)
    if deflate is not None:
        headers.append(("Sec-WebSocket-Extensions", deflate.response_value()))
    return render_head("HTTP/1.1", 101, headers), deflate


# -- the client side ------------------------------------------------------------------


def client_request(host: str, target: str, key: str, subprotocols: Optional[List[str]] = None,
                   headers: Optional[List[Tuple[str, str]]] = None) -> bytes:
    """The bytes of a handshake request for ``target`` on ``host`` (``host[:port]``)."""
    lines = [
        f"GET {target} HTTP/1.1",
        f"Host: {host}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        f"Sec-WebSocket-Version: {SUPPORTED_VERSION}",
    ]
    if subprotocols:
        lines.append("Sec-WebSocket-Protocol: " + ", ".join(subprotocols))
    for name, value in headers or []:
        if any(c in name + value for c in "\r\n"):
            raise ValueError(f"header {name!r} contains a line break")
        lines.append(f"{name}: {value}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def parse_response_head(head: bytes) -> Tuple[int, Headers]:
    """Status and headers of a response head (the bytes before the blank line)."""
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        raise HandshakeRefused(None, f"malformed status line {lines[0][:80]!r}")
    headers = Headers()
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep or not name or name != name.strip():
            raise HandshakeRefused(None, f"malformed header line {line[:80]!r}")
        headers.add(name.decode("latin-1"), value.strip(b" \t").decode("latin-1"))
    return int(parts[1]), headers


def check_response(status: int, headers: Headers, key: str,
                   subprotocols: Optional[List[str]] = None) -> Optional[str]:
    """Validate the server's answer; return the subprotocol it chose, if any."""
    if status != 101:
        raise HandshakeRefused(status, f"server answered {status} instead of 101")
    if "websocket" not in headers.tokens("upgrade"):
        raise HandshakeRefused(status, "response has no 'Upgrade: websocket'")
    if "upgrade" not in headers.tokens("connection"):
        raise HandshakeRefused(status, "response has no 'Connection: upgrade'")
    if headers.get_all("sec-websocket-accept") != [accept_key(key)]:
        raise HandshakeRefused(status, "wrong Sec-WebSocket-Accept")
    if headers.get_all("sec-websocket-extensions"):
        raise HandshakeRefused(status, "server chose an extension that was not offered")
    chosen = headers.get_all("sec-websocket-protocol")
    if not chosen:
        return None
    if len(chosen) > 1 or chosen[0] not in (subprotocols or []):
        raise HandshakeRefused(status,
                               f"server chose a subprotocol that was not offered: {chosen}")
    return chosen[0]
