"""The HTTP response as applications build it, and its serialisation to bytes.

``Response`` is plain data; :func:`render_head` turns a status and header list
into the bytes of a response head.  No I/O happens here.
"""

from __future__ import annotations

import json
import time
from email.utils import formatdate
from http import HTTPStatus
from typing import Any, Dict, Iterable, List, Optional, Tuple, Union

from ._version import __version__

SERVER_HEADER = f"wssync/{__version__}"

Body = Union[bytes, str, Iterable[bytes]]

_REASONS: Dict[int, bytes] = {s.value: s.phrase.encode("ascii") for s in HTTPStatus}
_STATUS_LINES: Dict[Tuple[str, int], bytes] = {}
_HEADER_LINES: Dict[Tuple[str, str], bytes] = {}
_SERVER_LINE = f"\r\nServer: {SERVER_HEADER}\r\n".encode("ascii")


class Response:
    """Status, headers and a body: ``bytes``, ``str`` (sent as UTF-8) or an iterable of bytes.

    An iterable body is streamed: chunked in HTTP/1.1, until close in HTTP/1.0.
    ``Content-Length`` is set from a ``bytes``/``str`` body automatically.
    """

    __slots__ = ("body", "headers", "status")

    def __init__(
        self,
        body: Body = b"",
        status: int = 200,
        headers: Optional[Union[Dict[str, str], List[Tuple[str, str]]]] = None,
        content_type: Optional[str] = None,
    ) -> None:
        if isinstance(body, str):
            body = body.encode("utf-8")
            if content_type is None:
                content_type = "text/plain; charset=utf-8"
        self.status = status
        if headers is None:
            self.headers: List[Tuple[str, str]] = []
        elif isinstance(headers, dict):
            self.headers = list(headers.items())
        else:
            self.headers = list(headers)
        if content_type is not None:
            self.headers.append(("Content-Type", content_type))
        self.body = body

    @classmethod
    def json(cls, data: Any, status: int = 200,
             headers: Optional[Dict[str, str]] = None) -> Response:
        body = json.dumps(data, separators=(",", ":")).encode("utf-8")
        return cls(body, status, headers, "application/json")

    @classmethod
    def html(cls, text: str, status: int = 200) -> Response:
        return cls(text.encode("utf-8"), status, None, "text/html; charset=utf-8")

    def __repr__(self) -> str:
        return f"<Response {self.status}>"


class _DateCache:
    """The ``Date`` header value, formatted once per second."""

    def __init__(self) -> None:
        self._second = 0
        self._value = b""

    def get(self) -> bytes:
        now = int(time.time())
        if now != self._second:
            self._second = now
            self._value = formatdate(now, usegmt=True).encode("ascii")
        return self._value


_date = _DateCache()


def status_line(version: str, status: int) -> bytes:
    key = (version, status)
    line = _STATUS_LINES.get(key)
    if line is None:
        reason = _REASONS.get(status, b"Unknown")
        line = b"%s %d %s\r\n" % (version.encode("ascii"), status, reason)
        if len(_STATUS_LINES) < 1024:
            _STATUS_LINES[key] = line
    return line


def render_head(version: str, status: int, headers: List[Tuple[str, str]],
                framing: bytes = b"") -> bytes:
    """A response head: status line, ``Date`` and ``Server``, ``headers``, then
    ``framing``, the server's own already encoded lines (``Content-Length``,
    ``Connection``, ``Transfer-Encoding``)."""
    parts = [_STATUS_LINES.get((version, status)) or status_line(version, status),
             b"Date: ", _date.get(), _SERVER_LINE]
    lines = _HEADER_LINES
    for field in headers:
        line = lines.get(field)
        if line is None:
            name, value = field
            # Refuse to let a CR or LF in application data split the response.
            if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
                raise ValueError(f"header {name!r} contains a line break")
            line = f"{name}: {value}\r\n".encode("latin-1")
            # Most responses repeat a few fields: keep them encoded.  Unique values
            # (every handshake's Sec-WebSocket-Accept, cookies) would fill the cache
            # for good, so a full cache starts over and the common fields come back.
            if len(lines) >= 4096:
                lines.clear()
            lines[field] = line
        parts.append(line)
    parts.append(framing)
    parts.append(b"\r\n")
    return b"".join(parts)


def error_response(status: int, message: str,
                   headers: Optional[List[Tuple[str, str]]] = None) -> bytes:
    """A complete plain-text error response that closes the connection."""
    body = f"{status} {reason_phrase(status)}: {message}\n".encode()
    return render_head("HTTP/1.1", status, [
        ("Content-Type", "text/plain; charset=utf-8"),
        *(headers or []),
    ], b"Content-Length: %d\r\nConnection: close\r\n" % len(body)) + body


def reason_phrase(status: int) -> str:
    return _REASONS.get(status, b"Unknown").decode("ascii")
