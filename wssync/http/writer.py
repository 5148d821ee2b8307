"""What goes on the wire for an HTTP response, decided on plain data (Sans-I/O).

Owns every framing decision of the response side: ``Content-Length``, chunked
or close-delimited bodies; the responses that carry no body (HEAD, 1xx, 204,
304); the ``Connection`` header and whether the connection stays open
afterwards; the ``Date`` and ``Server`` fields; the error answers the server
sends on its own; for a file body, which part of the file goes out (``Range``:
206 or 416) and whether it goes out at all (conditional requests: 304).
h11's ``_writers`` is the model.  It returns bytes and decisions and never
touches a socket, a timer, a file or the application.
"""

from __future__ import annotations

import re
import time
from email.utils import formatdate, parsedate_to_datetime
from http import HTTPStatus
from typing import Dict, Iterable, List, Optional, Tuple, Union

from .._version import __version__
from ..errors import HttpError
from .request import Request
from .response import FileBody, Response

SERVER_HEADER = f"wssync/{__version__}"

Fields = List[Tuple[str, str]]

_REASONS: Dict[int, bytes] = {s.value: s.phrase.encode("ascii") for s in HTTPStatus}
_STATUS_LINES: Dict[Tuple[str, int], bytes] = {}
_HEADER_LINES: Dict[Tuple[str, str], bytes] = {}
_SERVER_LINE = f"\r\nServer: {SERVER_HEADER}\r\n".encode("ascii")
_NO_BODY_STATUSES = frozenset((204, 304))
_CLOSE_LINE = b"Connection: close\r\n"
_KEEP_ALIVE_LINE = b"Connection: keep-alive\r\n"
_CHUNKED_LINE = b"Transfer-Encoding: chunked\r\n"

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class _DateCache:
    """The ``Date`` and ``Server`` lines, formatted once per second."""

    __slots__ = ("lines", "until")

    def __init__(self) -> None:
        self.until = 0.0  # when ``lines`` goes stale (the next whole second)
        self.lines = b""

    def refresh(self, now: float) -> bytes:
        second = int(now)
        self.until = second + 1.0
        self.lines = b"Date: " + formatdate(second, usegmt=True).encode("ascii") + _SERVER_LINE
        return self.lines


_date = _DateCache()
_time = time.time


def reason_phrase(status: int) -> str:
    return _REASONS.get(status, b"Unknown").decode("ascii")


def status_line(version: str, status: int) -> bytes:
    key = (version, status)
    line = _STATUS_LINES.get(key)
    if line is None:
        reason = _REASONS.get(status, b"Unknown")
        line = b"%s %d %s\r\n" % (version.encode("ascii"), status, reason)
        if len(_STATUS_LINES) < 1024:
            _STATUS_LINES[key] = line
    return line


def render_head(version: str, status: int, headers: Fields, framing: bytes = b"") -> bytes:
    """A response head: status line, ``Date`` and ``Server``, ``headers``, then
    ``framing``, the server's own already encoded lines (``Content-Length``,
    ``Connection``, ``Transfer-Encoding``).  A line break in a header raises
    ``ValueError``: application data must not split a response."""
    # The clock is read per head, but compared as a float: no call to format
    # or to round it until the second changes.
    date = _date
    parts = [_STATUS_LINES.get((version, status)) or status_line(version, status),
             date.lines if _time() < date.until else date.refresh(_time())]
    lines = _HEADER_LINES
    for field in headers:
        line = lines.get(field)
        if line is None:
            name, value = field
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


def error_text(status: int, message: str) -> str:
    """The plain-text body of an error answer: status, reason and why."""
    return f"{status} {reason_phrase(status)}: {message}\n"


def error_answer(error: HttpError) -> Response:
    """The plain-text answer to a refused request, as a :class:`Response` (its
    framing then decided like any other)."""
    return Response(error_text(error.status, error.message), error.status, error.headers)


def error_response(status: int, message: str, headers: Optional[Fields] = None) -> bytes:
    """A complete plain-text error answer that closes the connection (for
    requests that could not be parsed, so no request decides the framing)."""
    body = error_text(status, message).encode()
    return render_head("HTTP/1.1", status, [
        ("Content-Type", "text/plain; charset=utf-8"),
        *(headers or []),
    ], b"Content-Length: %d\r\n%s" % (len(body), _CLOSE_LINE)) + body


class BodyFramer:
    """How the chunks of a streamed body go on the wire."""

    __slots__ = ("chunked",)

    def __init__(self, chunked: bool) -> None:
        self.chunked = chunked

    def data(self, chunk: Union[bytes, str]) -> Tuple[bytes, ...]:
        """The buffers to write for ``chunk``, in order: a large chunk is not
        copied to frame it (its size line and end go around it)."""
        if isinstance(chunk, str):
            chunk = chunk.encode("utf-8")
        if not chunk:
            return ()  # an empty chunk would end a chunked body early
        if not self.chunked:
            return (chunk,)
        if len(chunk) > JOIN_LIMIT:
            return b"%x\r\n" % len(chunk), chunk, b"\r\n"
        return (b"%x\r\n%s\r\n" % (len(chunk), chunk),)

    def end(self) -> bytes:
        return b"0\r\n\r\n" if self.chunked else b""


_CHUNKED = BodyFramer(True)
_AS_IS = BodyFramer(False)

# A body up to this size goes out joined to its head (one buffer, one send);
# a larger one is written after the head as it is, never copied.
JOIN_LIMIT = 64 * 1024

Body = Union[bytes, bytearray, memoryview]
# (bytes to write, a large body to write after them as it is (b"" if none or
# joined), how to frame a streamed body (None: the response is complete),
# whether the connection stays open afterwards, body bytes for the access log
# (-1: streamed))
Framed = Tuple[bytes, Body, Optional[BodyFramer], bool, int]


def frame_response(request: Request, status: int, headers: Fields,
                   body: Union[bytes, bytearray, memoryview, Iterable[bytes]],
                   must_close: bool) -> Framed:
    """Frame a response to ``request``.

    A bytes-like body is sent whole with ``Content-Length`` (joined to the
    head up to ``JOIN_LIMIT``, else returned to be written as it is); an iterable one
    is streamed: as is when the application set ``Content-Length``, chunked
    in HTTP/1.1, or delimited by closing the connection in HTTP/1.0.  A HEAD
    request, 1xx, 204 and 304 get no body.  The connection stays open only if
    the client asked for it, ``must_close`` is false and the body's end can
    be told without closing.  Raises ``ValueError`` for a header with a line
    break.
    """
    version = request.version
    keep_alive = not must_close and request.keep_alive
    if type(body) is bytes or isinstance(body, (bytearray, memoryview)):
        # A whole body, nearly always: its decisions first, each made once.
        if status < 200 or status in _NO_BODY_STATUSES:
            length = b""
        else:
            # HEAD still says how long the body would be.
            size = len(body)
            length = _LENGTH_LINES.get(size) or _length_line(size)
        head = render_head(version, status, headers, length if keep_alive and version != "HTTP/1.0"
                           else _connection_line(keep_alive, version) + length)
        if not length or request.method == "HEAD":
            return head, b"", None, keep_alive, 0
        if size > JOIN_LIMIT:
            return head, body, None, keep_alive, size
        return head + body, b"", None, keep_alive, size
    streamer: Optional[BodyFramer] = None
    if request.method == "HEAD" or status < 200 or status in _NO_BODY_STATUSES:
        length = b""
    elif any(name.lower() == "content-length" for name, _ in headers):
        length, streamer = b"", _AS_IS  # the application knows the length
    elif version == "HTTP/1.1":
        length, streamer = _CHUNKED_LINE, _CHUNKED
    else:
        # HTTP/1.0 has no chunking: the end of the body is the end of the connection.
        length, streamer, keep_alive = b"", _AS_IS, False
    head = render_head(version, status, headers, length if keep_alive and version != "HTTP/1.0"
                       else _connection_line(keep_alive, version) + length)
    if streamer is not None:
        return head, b"", streamer, keep_alive, -1
    return head, b"", None, keep_alive, 0


def without_length(headers: Fields) -> Fields:
    """``headers`` less any ``Content-Length``, for a body whose length the writer
    counts itself (an application's own copy would be sent beside it)."""
    return [field for field in headers if field[0].lower() != "content-length"]


def _connection_line(keep_alive: bool, version: str) -> bytes:
    """Say close when closing; echo keep-alive to HTTP/1.0 clients that asked for it."""
    if not keep_alive:
        return _CLOSE_LINE
    return _KEEP_ALIVE_LINE if version == "HTTP/1.0" else b""


# Content-Length lines of the sizes seen, encoded once (bodies of a few sizes are
# the rule; a full cache takes no more).
_LENGTH_LINES: Dict[int, bytes] = {}


def _length_line(size: int) -> bytes:
    line = b"Content-Length: %d\r\n" % size
    if len(_LENGTH_LINES) < 1024:
        _LENGTH_LINES[size] = line
    return line


# (bytes to write, the status sent, the part of the file to send after them as
# (offset, count) or None for no file bytes, whether the connection stays open
# afterwards, body bytes for the access log)
FramedFile = Tuple[bytes, int, Optional[Tuple[int, int]], bool, int]

_RANGE = re.compile(r"bytes[ \t]*=[ \t]*([0-9]{0,18})-([0-9]{0,18})[ \t]*", re.ASCII | re.I)
_UNSATISFIABLE = (-1, -1)


def byte_range(value: str, size: int) -> Optional[Tuple[int, int]]:
    """The one range of a ``Range`` header over ``size`` bytes as (first, last),
    :data:`_UNSATISFIABLE` (-1, -1), or None to ignore the header (not one
    ``bytes`` range we understand: the whole file is sent)."""
    match = _RANGE.fullmatch(value)
    if match is None:
        return None  # several ranges, another unit, or nonsense: a full answer is allowed
    first, last = match.group(1), match.group(2)
    if first:
        start = int(first)
        end = int(last) if last else size - 1
        if last and end < start:
            return None  # invalid: ignored, as RFC 9110 says
        if start >= size:
            return _UNSATISFIABLE
        return start, min(end, size - 1)
    if not last:
        return None  # "bytes=-"
    suffix = int(last)
    if not suffix or not size:
        return _UNSATISFIABLE
    return max(0, size - suffix), size - 1


def _http_date(value: Optional[str]) -> Optional[float]:
    if not value:
        return None
    try:
        return parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def _etag_listed(etag: str, value: str) -> bool:
    """Whether ``If-None-Match``'s list names ``etag`` (weak comparison)."""
    if value.strip() == "*":
        return True
    bare = etag[2:] if etag.startswith("W/") else etag
    for tag in value.split(","):
        tag = tag.strip()
        if (tag[2:] if tag.startswith("W/") else tag) == bare:
            return True
    return False


def _not_modified(request: Request, body: FileBody) -> bool:
    """A GET or HEAD whose copy is still good (If-None-Match, else If-Modified-Since)."""
    if request.method not in ("GET", "HEAD"):
        return False
    headers = request.headers
    none_match = headers.get("if-none-match")
    if none_match is not None:
        return body.etag is not None and _etag_listed(body.etag, none_match)
    since = _http_date(headers.get("if-modified-since"))
    return since is not None and body.mtime is not None and int(body.mtime) <= since


def _if_range_holds(request: Request, body: FileBody, last_modified: Optional[str]) -> bool:
    """``If-Range`` absent, or naming the file as it is (strong ETag or exact date)."""
    value = request.headers.get("if-range")
    if value is None:
        return True
    value = value.strip()
    if value.startswith(('"', "W/")):
        return body.etag is not None and value == body.etag  # weak tags never match
    return last_modified is not None and value == last_modified


def frame_file(request: Request, status: int, headers: Fields, body: FileBody,
               must_close: bool) -> FramedFile:
    """Frame a response whose body is (a part of) a file.

    The file's length goes in ``Content-Length`` (any the application set is
    dropped).  A ``ranged`` body with status 200 also gets ``Accept-Ranges``,
    ``Last-Modified`` and its ``ETag``, answers 304 to a GET or HEAD whose
    ``If-None-Match`` or ``If-Modified-Since`` still holds, and answers a GET
    with one ``Range`` (``a-b``, ``a-``, ``-n``; under a matching
    ``If-Range``) with 206 and ``Content-Range``, or with 416 and
    ``Content-Range: bytes */size`` when the range starts past the end.
    Several ranges get the whole file (200).  Raises ``ValueError`` for a
    header with a line break.
    """
    offset, count = body.offset, body.size
    fields = without_length(headers)
    if body.ranged and status == 200:
        last_modified = formatdate(body.mtime, usegmt=True) if body.mtime is not None else None
        fields.append(("Accept-Ranges", "bytes"))
        if last_modified is not None:
            fields.append(("Last-Modified", last_modified))
        if body.etag is not None:
            fields.append(("ETag", body.etag))
        wanted = request.headers.get("range") if request.method == "GET" else None
        if _not_modified(request, body):
            status = 304
        elif wanted is not None and _if_range_holds(request, body, last_modified):
            span = byte_range(wanted, count)
            if span == _UNSATISFIABLE:
                status, count = 416, 0
                fields.append(("Content-Range", f"bytes */{body.size}"))
            elif span is not None:
                first, last = span
                status, offset, count = 206, offset + first, last - first + 1
                fields.append(("Content-Range", f"bytes {first}-{last}/{body.size}"))
    if status < 200 or status in _NO_BODY_STATUSES:
        head, _, _, keep_alive, _ = frame_response(request, status, fields, b"", must_close)
        return head, status, None, keep_alive, 0
    # The length, and an empty stream: the head frame_response gives any body
    # whose length the application set (HEAD included).
    fields.append(("Content-Length", str(count)))
    head, _, _, keep_alive, _ = frame_response(request, status, fields, (), must_close)
    if request.method == "HEAD" or not count:
        return head, status, None, keep_alive, 0
    return head, status, (offset, count), keep_alive, count
