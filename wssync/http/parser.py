"""Incremental, strict HTTP/1.1 request parser working on plain bytes (Sans-I/O).

Feed it bytes with :meth:`RequestParser.feed` and take complete requests with
:meth:`RequestParser.next_request`; malformed input raises :class:`HttpError`
carrying the status to answer with.  It never touches a socket and knows
nothing of routing or responses.  Rules are ASCII-only and reject rather than
repair: anything ambiguous about where a message ends is an error, because a
lenient parser behind a strict proxy is how requests get smuggled.
"""

from __future__ import annotations

import re
from enum import IntEnum
from typing import List, Optional, Protocol, Tuple

from ..config import Config
from ..errors import HttpError
from .request import Headers, Request, client_keep_alive

# Heads are decoded as latin-1 once, so every pattern here works on str.
_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_FIELD_NAME = re.compile(_TOKEN + r"\Z")
# Field values: visible ASCII, SP, HTAB and obs-text; no other control bytes.
_BAD_VALUE_CHAR = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
# Request lines, on the decoded head; any other HTTP version is a 505, not a 400.
_REQUEST_LINE = re.compile(r"(" + _TOKEN + r") ([\x21-\x7e]+) HTTP/1\.([01])\Z")
_HTTP_VERSION_ANY = re.compile(_TOKEN + r" [\x21-\x7e]+ HTTP/[0-9]+\.[0-9]+\Z")
# One field line of a decoded block: name, colon, value without surrounding
# whitespace (it starts and ends with a visible byte, so no lazy matching and
# no backtracking).  Anchored at line starts, so junk inside a line never
# matches, and a line with a control byte in its value does not match at all.
_FIELD_LINE = re.compile(
    r"^(" + _TOKEN + r"):[ \t]*"
    r"([\x21-\x7e\x80-\xff](?:[\t\x20-\x7e\x80-\xff]*[\x21-\x7e\x80-\xff])?|)"
    r"[ \t]*\r$", re.MULTILINE)
_DIGITS = re.compile(r"[0-9]{1,18}\Z")
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,16})(;[^\r\n]*)?\Z")
_ABSOLUTE_FORM = re.compile(r"https?://[^/?#]*", re.IGNORECASE)
# The fields a proxy names the client and scheme in (wssync.edge.forwarded).
_FORWARDED_FIELDS = frozenset(("x-forwarded-for", "x-forwarded-proto", "forwarded"))



class _Reading(IntEnum):
    """What the parser reads next."""

    HEAD = 0  # a request head (or the empty lines before one)
    BODY_LENGTH = 1  # a Content-Length body
    CHUNK_SIZE_LINE = 2
    CHUNK_DATA = 3
    CHUNK_CRLF = 4
    TRAILERS = 5
    FAILED = 6  # an error was raised: nothing more is parsed


# Compared for every request: a global is cheaper than an enum attribute on 3.9-3.11.
_AT_HEAD, _FAILED = _Reading.HEAD, _Reading.FAILED


def _diagnose_fields(block: str) -> None:
    """Raise the precise error for the first header line that is not ``name: value``."""
    for raw in block.split("\r\n")[:-1]:
        name, colon, _ = raw.partition(":")
        if raw[:1] in (" ", "\t"):
            raise HttpError(400, "obsolete line folding")
        if not colon or not name:
            raise HttpError(400, "malformed header field")
        if _FIELD_NAME.match(name) is None:
            raise HttpError(400, "invalid header field name")
        if _BAD_VALUE_CHAR.search(raw) is not None:
            raise HttpError(400, "invalid header field value")
    raise HttpError(400, "malformed header field")


class ParserLimits(Protocol):
    """Size limits for one request; :class:`wssync.config.Config` is one."""

    max_request_line: int
    max_header_size: int
    max_headers: int
    max_body_size: int


class RequestParser:
    """Turns a byte stream into :class:`Request` objects, one at a time."""

    def __init__(self, limits: Optional[ParserLimits] = None, remote_addr: object = None) -> None:
        self.limits: ParserLimits = limits if limits is not None else Config()
        self.remote_addr = remote_addr
        self._buf = bytearray()
        self._pos = 0  # start of unconsumed bytes in _buf
        self._scan = 0  # where to resume looking for the end of the head (or a trailer line)
        self._line_seen = False  # the request line's CRLF has arrived
        self._state = _Reading.HEAD
        # The request whose head has arrived and whose body has not ended
        # (read it, do not set it: plain data, as a property call costs more).
        self.pending: Optional[Request] = None
        self._remaining = 0
        self._body_parts: List[bytes] = []
        self._body_size = 0
        self._trailer_size = 0
        self.expect_continue = False  # the pending request asked for 100-continue
        # A head whose body follows has been parsed and the caller has not yet
        # said how it takes that body (whole, or with read_body): it clears this.
        self.fresh_body = False
        # The last head parsed (the request just returned, or the pending one)
        # has an Upgrade field: the caller decides whether it switches protocols.
        self.upgrade = False
        # ... has X-Forwarded-For, X-Forwarded-Proto or Forwarded: only then
        # does the caller look for a proxy's word on who the client is.
        self.forwarded = False
        self._head_at = -1  # where the last head starts in _buf (-1: gone from it)

    # -- input ---------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        buf = self._buf
        if self._pos and self._pos >= len(buf) // 2:
            del buf[: self._pos]
            self._scan -= self._pos
            self._pos = 0
            self._head_at = -1
        buf += data

    @property
    def buffered(self) -> int:
        """Bytes received and not yet consumed by a returned request."""
        return len(self._buf) - self._pos

    def take_buffer(self) -> bytes:
        """Remove and return unconsumed bytes (what follows an Upgrade request)."""
        data = bytes(self._buf[self._pos:])
        self._buf = bytearray()
        self._pos = self._scan = 0
        self._head_at = -1
        return data

    def since_head(self) -> Optional[bytes]:
        """The bytes received from the start of the last head on (that head, the
        body so far, what follows): the request as it came, to pass it on whole;
        None once they are no longer all kept."""
        if self._head_at < 0:
            return None
        return bytes(self._buf[self._head_at:])

    # -- output --------------------------------------------------------------

    def next_request(self) -> Optional[Request]:
        """The next complete request, or None until more bytes arrive."""
        if self._state == _FAILED:
            raise HttpError(400, "connection already failed")
        if self._state == _AT_HEAD and self._pos == len(self._buf):
            return None  # the common case after each request: nothing buffered
        try:
            if self._state == _AT_HEAD:
                request = self._parse_head()
                if request is not None or self._state == _AT_HEAD:
                    return request  # complete without a body, or the head is incomplete
            if self._state == _Reading.BODY_LENGTH:
                return self._read_fixed_body()
            return self._read_chunked_body()
        except HttpError:
            self._state = _FAILED
            raise

    # -- head ----------------------------------------------------------------

    def _parse_head(self) -> Optional[Request]:
        """The request if its head is complete and it has no body; else None,
        with the state telling whether a body follows or the head is incomplete."""
        buf = self._buf
        pos = self._pos
        limits = self.limits
        # Skip empty lines before a request (RFC 9112 2.2 allows them).
        while buf.startswith(b"\r\n", pos):
            pos += 2
        self._pos = pos
        if self._scan < pos:
            self._scan = pos
        end = buf.find(b"\r\n\r\n", self._scan)
        if end < 0:
            # Only bytes not examined before are scanned, so a head trickling
            # in one byte at a time costs linear time, not quadratic.
            available = len(buf) - pos
            start = max(pos, self._scan - 1)
            if not self._line_seen:
                line_end = buf.find(b"\r\n", start)
                self._line_seen = line_end >= 0
                line_length = line_end - pos if self._line_seen else available
                if line_length > limits.max_request_line:
                    raise HttpError(414, "request line too long")
            if available > limits.max_header_size:
                raise HttpError(431, "request header fields too large")
            # A bare LF can never end a head we accept: refuse it now rather
            # than wait for a CRLF that a lenient client will never send.
            if buf.count(b"\n", start) != buf.count(b"\r\n", max(pos, start - 1)):
                raise HttpError(400, "bare LF in request head")
            self._scan = max(pos, len(buf) - 3)
            return None
        if end - pos > limits.max_header_size:
            raise HttpError(431, "request header fields too large")
        # Decoded once, with the CRLF that ends the last field line; the
        # regexes below then run on positions in it instead of on copies.
        head = buf[pos:end + 2].decode("latin-1")
        self._head_at = pos
        self._pos = end + 4
        self._scan = self._pos
        self._line_seen = False
        return self._start_request(head)

    def _start_request(self, head: str) -> Optional[Request]:
        limits = self.limits
        line_end = head.find("\r\n")
        if line_end > limits.max_request_line:
            raise HttpError(414, "request line too long")
        lines = head.count("\r\n")
        if head.count("\n") != lines:
            # A bare LF would start a line the field pattern could match; a
            # bare CR needs no count: no pattern here matches one.
            raise HttpError(400, "bare LF in request head")
        match = _REQUEST_LINE.match(head, 0, line_end)
        if match is None:
            if _HTTP_VERSION_ANY.match(head, 0, line_end):
                raise HttpError(505, "HTTP version not supported")
            raise HttpError(400, "malformed request line")
        method, target, minor = match.groups()
        version = "HTTP/1.1" if minor == "1" else "HTTP/1.0"
        if target[0] != "/":
            target = self._origin_form(method, target)

        # Field lines: one regex pass; a line it does not match leaves the
        # count short, and is then diagnosed.
        count = lines - 1
        items: List[Tuple[str, str]] = []
        if count:
            if count > limits.max_headers:
                raise HttpError(431, "too many header fields")
            items = _FIELD_LINE.findall(head, line_end + 2)
            if len(items) != count:
                _diagnose_fields(head[line_end + 2:])
        return self._frame(method, target, version, Headers(items))

    @staticmethod
    def _origin_form(method: str, target: str) -> str:
        if target == "*" and method == "OPTIONS":
            return target
        match = _ABSOLUTE_FORM.match(target)
        if match is None:
            raise HttpError(400, "malformed request target")
        rest = target[match.end():]
        return rest if rest.startswith("/") else "/" + rest

    def _frame(self, method: str, target: str, version: str,
               headers: Headers) -> Optional[Request]:
        """Decide where the body ends, or refuse a request whose end is ambiguous.

        A request without a body is returned complete; otherwise the state
        moves on to reading its body.
        """
        index = headers.by_name()  # one look-up table for every field below
        hosts = index.get("host", ())
        if len(hosts) > 1:
            raise HttpError(400, "more than one Host header")
        if not hosts and version == "HTTP/1.1":
            raise HttpError(400, "missing Host header")

        connection = index.get("connection")
        self.upgrade = "upgrade" in index
        self.forwarded = not _FORWARDED_FIELDS.isdisjoint(index)
        request = Request(method, target, version, headers, b"", self.remote_addr,
                          client_keep_alive(version, connection) if connection
                          else version == "HTTP/1.1")
        expects = index.get("expect")
        expect = expects[0] if expects else None
        if expect is not None and expect.lower() != "100-continue":
            raise HttpError(417, "unsupported expectation")
        transfer_encoding = index.get("transfer-encoding")
        content_length = index.get("content-length")
        if not transfer_encoding and not content_length:
            return request
        self._body_parts = []
        self._body_size = 0

        if transfer_encoding:
            if content_length:
                raise HttpError(400, "both Content-Length and Transfer-Encoding")
            if version != "HTTP/1.1":
                raise HttpError(400, "Transfer-Encoding in HTTP/1.0")
            codings = [c.strip(" \t").lower() for v in transfer_encoding for c in v.split(",")]
            for coding in codings:
                if _FIELD_NAME.match(coding) is None:
                    raise HttpError(400, "malformed Transfer-Encoding")
            if codings.count("chunked") > 1 or codings[-1] != "chunked":
                raise HttpError(400, "chunked must be the last coding, once")
            if len(codings) > 1:
                raise HttpError(501, "unsupported transfer coding")
            self.pending = request
            self.fresh_body = True
            self._trailer_size = 0
            self._state = _Reading.CHUNK_SIZE_LINE
            self.expect_continue = expect is not None and version == "HTTP/1.1"
            return None

        length = 0
        if content_length:
            values = {v.strip(" \t") for field in content_length for v in field.split(",")}
            if len(values) != 1:
                raise HttpError(400, "conflicting Content-Length values")
            value = values.pop()
            if _DIGITS.match(value) is None:
                raise HttpError(400, "malformed Content-Length")
            length = int(value)
            if length > self.limits.max_body_size:
                raise HttpError(413, "request body too large")
        self.pending = request
        self.fresh_body = True
        self._remaining = length
        self._state = _Reading.BODY_LENGTH
        self.expect_continue = expect is not None and version == "HTTP/1.1" and length > 0
        return None

    # -- bodies ----------------------------------------------------------------

    def _finish(self, body: bytes) -> Request:
        request = self.pending
        assert request is not None
        request.body = body
        self.pending = None
        self._body_parts = []
        self._state = _AT_HEAD
        self.expect_continue = self.fresh_body = False
        return request

    def _read_fixed_body(self) -> Optional[Request]:
        need = self._remaining
        if need == 0:
            return self._finish(b"")
        pos = self._pos
        if len(self._buf) - pos < need:
            return None
        body = bytes(self._buf[pos:pos + need])
        self._pos = self._scan = pos + need
        return self._finish(body)

    def _read_chunked_body(self) -> Optional[Request]:
        parts = self._body_parts
        while True:
            data = self._chunk_data(1 << 62)
            if data:
                parts.append(data)
            elif self._state == _AT_HEAD:
                return self._finish(b"".join(parts))
            else:
                return None

    # -- streamed bodies -------------------------------------------------------------

    @property
    def body_remaining(self) -> int:
        """Bytes of a Content-Length body not yet taken (-1: a chunked body)."""
        return self._remaining if self._state == _Reading.BODY_LENGTH else -1

    def read_body(self, limit: int) -> bytes:
        """Up to ``limit`` bytes of the pending request's body, as far as they
        have arrived (b"" until more are fed), for a body its handler reads as
        it arrives instead of waiting for :meth:`next_request`.

        Once the body has ended, :attr:`pending` is None again and the next
        request can be parsed.  The limits and framing checks are those of a
        whole body: a chunked body crossing ``max_body_size`` raises 413.
        """
        if self._state == _FAILED:
            raise HttpError(400, "connection already failed")
        if self.pending is None:
            return b""
        parts = self._body_parts
        if parts:
            # Collected by next_request before the caller chose to stream.
            data = parts[0]
            if len(data) > limit:
                parts[0] = data[limit:]
                return data[:limit]
            del parts[0]
            return data
        try:
            if self._state != _Reading.BODY_LENGTH:
                data = self._chunk_data(limit)
                if self._state == _AT_HEAD:
                    self._finish(b"")
                return data
            pos = self._pos
            take = min(self._remaining, len(self._buf) - pos, limit)
            data = bytes(self._buf[pos:pos + take])
            self._pos = self._scan = pos + take
            self._remaining -= take
            if not self._remaining:
                self._finish(b"")
            return data
        except HttpError:
            self._state = _FAILED
            raise

    def _chunk_data(self, limit: int) -> bytes:
        """The next piece (at most ``limit`` bytes) of chunk data that has
        arrived; b"" when more input is needed or the body has ended (the
        state is then back at the head)."""
        buf = self._buf
        limits = self.limits
        while True:
            pos = self._pos
            state = self._state
            if state == _Reading.CHUNK_SIZE_LINE:
                end = buf.find(b"\r\n", pos, pos + 1026)
                if end < 0:
                    if len(buf) - pos > 1024:
                        raise HttpError(400, "chunk size line too long")
                    if b"\n" in buf[pos:] or b"\r" in buf[pos:-1]:
                        raise HttpError(400, "bare CR or LF in chunk size line")
                    return b""
                line = bytes(buf[pos:end])
                match = _CHUNK_SIZE.match(line)
                if match is None or b"\r" in line or b"\n" in line:
                    raise HttpError(400, "malformed chunk size")
                size = int(match.group(1), 16)
                self._pos = end + 2
                if size == 0:
                    self._state = _Reading.TRAILERS
                    continue
                self._body_size += size
                if self._body_size > limits.max_body_size:
                    raise HttpError(413, "request body too large")
                self._remaining = size
                self._state = _Reading.CHUNK_DATA
            elif state == _Reading.CHUNK_DATA:
                take = min(self._remaining, len(buf) - pos, limit)
                if take <= 0:
                    return b""
                data = bytes(buf[pos:pos + take])
                self._pos = pos + take
                self._remaining -= take
                if self._remaining == 0:
                    self._state = _Reading.CHUNK_CRLF
                return data
            elif state == _Reading.CHUNK_CRLF:
                if len(buf) - pos < 2:
                    if len(buf) - pos == 1 and buf[pos] != 13:
                        raise HttpError(400, "chunk data not followed by CRLF")
                    return b""
                if buf[pos:pos + 2] != b"\r\n":
                    raise HttpError(400, "chunk data not followed by CRLF")
                self._pos = pos + 2
                self._state = _Reading.CHUNK_SIZE_LINE
            else:  # TRAILERS: header-like lines up to an empty line, then discarded
                start = max(pos, self._scan - 1)  # resume where the last look ended
                end = buf.find(b"\r\n", start)
                if end < 0:
                    if len(buf) - pos + self._trailer_size > limits.max_header_size:
                        raise HttpError(431, "trailer section too large")
                    if buf.find(b"\n", start) >= 0:
                        raise HttpError(400, "bare LF in trailer section")
                    self._scan = len(buf)
                    return b""
                line = bytes(buf[pos:end])
                self._pos = end + 2
                if not line:
                    self._scan = self._pos
                    self._state = _AT_HEAD  # the caller finishes the request
                    return b""
                self._trailer_size += len(line) + 2
                if self._trailer_size > limits.max_header_size:
                    raise HttpError(431, "trailer section too large")
                field = line.decode("latin-1")
                colon = field.find(":")
                if (colon <= 0 or _FIELD_NAME.match(field, 0, colon) is None
                        or _BAD_VALUE_CHAR.search(field, colon + 1) is not None):
                    raise HttpError(400, "malformed trailer field")
