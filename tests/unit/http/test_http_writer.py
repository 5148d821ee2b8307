"""Unit tests for ``wssync.http.writer``: response framing decided on plain data.

Heads are checked byte for byte and every framing decision (length, chunked,
close-delimited, bodiless answers, ``Connection``, keep-alive) on its own,
without sockets or a server.
"""

from __future__ import annotations

import time
from email.utils import parsedate_to_datetime
from typing import Dict, Iterator, List, Optional, Tuple

import pytest

from wssync import __version__
from wssync.http.request import Headers, Request
from wssync.http.response import FileBody, Response
from wssync.http.writer import (
    CONTINUE,
    JOIN_LIMIT,
    SERVER_HEADER,
    byte_range,
    error_response,
    frame_file,
    frame_response,
    reason_phrase,
    render_head,
    status_line,
)


def head_lines(head: bytes) -> List[bytes]:
    """The lines of a rendered head, without the final empty line."""
    assert head.endswith(b"\r\n\r\n")
    return head[:-4].split(b"\r\n")


def request(method: str = "GET", version: str = "HTTP/1.1",
            connection: Optional[str] = None) -> Request:
    fields = [("Host", "x")] + ([("Connection", connection)] if connection else [])
    return Request(method, "/", version, Headers(fields))


def split(data: bytes) -> Tuple[List[bytes], bytes]:
    """(head lines after Date and Server, body) of a framed response."""
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[1].startswith(b"Date: ") and lines[2].startswith(b"Server: ")
    return [lines[0], *lines[3:]], body


# -- status_line / reason_phrase ------------------------------------------------------


@pytest.mark.parametrize("version, status, expected", [
    ("HTTP/1.1", 200, b"HTTP/1.1 200 OK\r\n"),
    ("HTTP/1.1", 404, b"HTTP/1.1 404 Not Found\r\n"),
    ("HTTP/1.0", 500, b"HTTP/1.0 500 Internal Server Error\r\n"),
    ("HTTP/1.1", 101, b"HTTP/1.1 101 Switching Protocols\r\n"),
    ("HTTP/1.1", 431, b"HTTP/1.1 431 Request Header Fields Too Large\r\n"),
    ("HTTP/1.1", 599, b"HTTP/1.1 599 Unknown\r\n"),
])
def test_status_line(version, status, expected):
    assert status_line(version, status) == expected
    assert status_line(version, status) == expected  # second call (cached) is identical


def test_reason_phrase():
    assert reason_phrase(200) == "OK"
    assert reason_phrase(417) == "Expectation Failed"
    assert reason_phrase(799) == "Unknown"


# -- render_head ------------------------------------------------------------------------


def test_render_head_layout():
    head = render_head("HTTP/1.1", 201, [("Content-Type", "text/plain"), ("Content-Length", "5")])
    assert head.startswith(b"HTTP/1.1 201 Created\r\n")
    assert head.endswith(b"\r\n\r\n")
    assert head.count(b"\r\n\r\n") == 1  # the only empty line is the last one
    lines = head_lines(head)
    assert lines[0] == b"HTTP/1.1 201 Created"
    assert lines[1].startswith(b"Date: ")
    assert lines[2] == b"Server: wssync/" + __version__.encode()
    assert lines[3:] == [b"Content-Type: text/plain", b"Content-Length: 5"]
    assert b"\n" not in head.replace(b"\r\n", b"")  # every line ends in CRLF
    assert b"\r" not in head.replace(b"\r\n", b"")


def test_render_head_date_is_current_imf_fixdate():
    before = time.time()
    date = head_lines(render_head("HTTP/1.1", 200, []))[1][len(b"Date: "):].decode("ascii")
    after = time.time()
    assert date.endswith(" GMT")
    # IMF-fixdate, e.g. "Sun, 06 Nov 1994 08:49:37 GMT"
    assert len(date) == 29 and date[3:5] == ", "
    stamp = parsedate_to_datetime(date).timestamp()
    assert int(before) - 1 <= stamp <= after + 1


def test_render_head_date_follows_the_clock_second_by_second(monkeypatch) -> None:
    from wssync.http import writer
    clock = [1_000_000_000.25]
    monkeypatch.setattr(writer, "_time", lambda: clock[0])
    monkeypatch.setattr(writer, "_date", writer._DateCache())  # nothing formatted yet

    def date() -> bytes:
        return head_lines(render_head("HTTP/1.1", 200, []))[1]

    assert date() == b"Date: Sun, 09 Sep 2001 01:46:40 GMT"
    clock[0] = 1_000_000_000.99
    assert date() == b"Date: Sun, 09 Sep 2001 01:46:40 GMT"
    clock[0] = 1_000_000_001.0
    assert date() == b"Date: Sun, 09 Sep 2001 01:46:41 GMT"
    clock[0] = 1_000_000_061.5
    assert date() == b"Date: Sun, 09 Sep 2001 01:47:41 GMT"


def test_render_head_server_header_constant():
    assert f"wssync/{__version__}" == SERVER_HEADER
    assert b"\r\nServer: " + SERVER_HEADER.encode() + b"\r\n" in render_head("HTTP/1.0", 200, [])


def test_render_head_without_headers():
    lines = head_lines(render_head("HTTP/1.0", 204, []))
    assert lines[0] == b"HTTP/1.0 204 No Content"
    assert len(lines) == 3  # status, Date, Server


def test_render_head_keeps_repeated_headers_and_order():
    headers = [("Set-Cookie", "a=1"), ("X-B", "2"), ("Set-Cookie", "c=3")]
    head = render_head("HTTP/1.1", 200, headers)
    assert head_lines(head)[3:] == [b"Set-Cookie: a=1", b"X-B: 2", b"Set-Cookie: c=3"]


def test_render_head_encodes_values_as_latin_1():
    head = render_head("HTTP/1.1", 200, [("X-Name", "caf\u00e9")])
    assert b"X-Name: caf\xe9\r\n" in head


@pytest.mark.parametrize("name, value", [
    ("X-Evil", "a\r\nSet-Cookie: session=stolen"),
    ("X-Evil", "a\nb"),
    ("X-Evil", "a\rb"),
    ("X-Evil", "\r\n"),
    ("X-Evil\r\nSet-Cookie", "x"),
    ("X-Evil\n", "x"),
])
def test_render_head_refuses_line_breaks_in_headers(name, value):
    with pytest.raises(ValueError):
        render_head("HTTP/1.1", 200, [("Content-Length", "0"), (name, value)])


# -- framing decisions ------------------------------------------------------------------

def test_bytes_body_gets_content_length_and_stays_open() -> None:
    data, _, framer, keep_alive, size = frame_response(request(), 200, [], b"hello", False)
    assert split(data) == ([b"HTTP/1.1 200 OK", b"Content-Length: 5"], b"hello")
    assert framer is None and keep_alive and size == 5


def test_content_length_is_each_body_s_own_size() -> None:
    for body in (b"hello", b"x" * 70, b"hello", b"", b"x" * 70, b"x" * 1000):
        data, _, _, _, size = frame_response(request(), 200, [], body, False)
        assert split(data) == ([b"HTTP/1.1 200 OK", b"Content-Length: %d" % len(body)], body)
        assert size == len(body)


def test_must_close_says_close() -> None:
    data, _, _, keep_alive, _ = frame_response(request(), 200, [], b"x", True)
    assert b"Connection: close" in split(data)[0]
    assert not keep_alive


def test_client_close_is_honoured() -> None:
    data, _, _, keep_alive, _ = frame_response(request(connection="close"), 200, [], b"", False)
    assert split(data)[0] == [b"HTTP/1.1 200 OK", b"Connection: close", b"Content-Length: 0"]
    assert not keep_alive


@pytest.mark.parametrize("connection, keep_alive, line", [
    (None, False, b"Connection: close"),
    ("keep-alive", True, b"Connection: keep-alive"),
])
def test_http10_keeps_alive_only_when_asked_and_says_so(connection: Optional[str],
                                                        keep_alive: bool, line: bytes) -> None:
    data, _, _, kept, _ = frame_response(request(version="HTTP/1.0", connection=connection),
                                      200, [], b"x", False)
    assert line in split(data)[0]
    assert kept is keep_alive
    assert split(data)[0][0] == b"HTTP/1.0 200 OK"


def test_head_says_the_length_but_sends_no_body() -> None:
    data, _, framer, keep_alive, size = frame_response(request("HEAD"), 200, [], b"hello", False)
    assert split(data) == ([b"HTTP/1.1 200 OK", b"Content-Length: 5"], b"")
    assert framer is None and keep_alive and size == 0


@pytest.mark.parametrize("status", [204, 304, 101, 103])
def test_bodiless_statuses_have_no_length_and_no_body(status: int) -> None:
    data, _, framer, _, size = frame_response(request(), status, [], b"ignored", False)
    lines, body = split(data)
    assert body == b"" and size == 0 and framer is None
    assert not any(line.startswith(b"Content-Length") for line in lines)


def chunks() -> Iterator[bytes]:
    yield b"a"


def test_iterable_body_is_chunked_in_http11() -> None:
    data, _, framer, keep_alive, size = frame_response(request(), 200, [], chunks(), False)
    assert split(data) == ([b"HTTP/1.1 200 OK", b"Transfer-Encoding: chunked"], b"")
    assert framer is not None and keep_alive and size == -1
    assert framer.data(b"hello") == (b"5\r\nhello\r\n",)
    assert framer.data("é") == (b"2\r\n\xc3\xa9\r\n",)
    assert framer.data(b"") == ()  # an empty chunk would end the body early
    big = bytes(JOIN_LIMIT + 1)
    head, body, end = framer.data(big)
    assert head == b"%x\r\n" % len(big) and body is big and end == b"\r\n"  # not copied
    assert framer.end() == b"0\r\n\r\n"


def test_iterable_body_with_its_own_length_is_sent_as_is() -> None:
    data, _, framer, keep_alive, _ = frame_response(request(), 200, [("content-length", "3")],
                                                 chunks(), False)
    assert split(data)[0] == [b"HTTP/1.1 200 OK", b"content-length: 3"]
    assert framer is not None and keep_alive
    assert framer.data(b"abc") == (b"abc",) and framer.end() == b""


def test_iterable_body_in_http10_ends_with_the_connection() -> None:
    data, _, framer, keep_alive, _ = frame_response(
        request(version="HTTP/1.0", connection="keep-alive"), 200, [], chunks(), False)
    assert split(data)[0] == [b"HTTP/1.0 200 OK", b"Connection: close"]
    assert framer is not None and not keep_alive
    assert framer.data(b"abc") == (b"abc",) and framer.end() == b""


def test_iterable_body_of_a_head_request_is_not_streamed() -> None:
    data, _, framer, keep_alive, size = frame_response(request("HEAD"), 200, [], chunks(), False)
    assert split(data) == ([b"HTTP/1.1 200 OK"], b"")
    assert framer is None and keep_alive and size == 0


def test_header_with_line_break_is_refused() -> None:
    with pytest.raises(ValueError):
        frame_response(request(), 200, [("X", "a\r\nSet-Cookie: evil")], b"", False)


def test_response_headers_come_before_the_framing_lines() -> None:
    response = Response.json({"ok": True})
    data, _, _, _, _ = frame_response(request(), response.status, response.headers,
                                   response.body, False)
    assert split(data) == ([b"HTTP/1.1 200 OK", b"Content-Type: application/json",
                            b"Content-Length: 11"], b'{"ok":true}')


def test_error_response_closes_and_explains() -> None:
    data = error_response(431, "too big", [("X-A", "1")])
    lines, body = split(data)
    assert lines == [b"HTTP/1.1 431 Request Header Fields Too Large",
                     b"Content-Type: text/plain; charset=utf-8", b"X-A: 1",
                     b"Content-Length: %d" % len(body), b"Connection: close"]
    assert body == b"431 Request Header Fields Too Large: too big\n"


def test_continue_is_a_complete_interim_response() -> None:
    assert CONTINUE == b"HTTP/1.1 100 Continue\r\n\r\n"


# -- file bodies --------------------------------------------------------------------------


@pytest.mark.parametrize("value, expected", [
    ("bytes=0-99", (0, 99)),
    ("bytes=100-", (100, 999)),
    ("bytes=-10", (990, 999)),
    ("bytes=-5000", (0, 999)),  # a suffix longer than the file: all of it
    ("bytes=990-5000", (990, 999)),  # a last byte past the end: up to the end
    ("BYTES = 5-5 ", (5, 5)),  # the unit is case-insensitive
    ("bytes=1000-", (-1, -1)),  # starts at the end: unsatisfiable
    ("bytes=1000-1001", (-1, -1)),
    ("bytes=-0", (-1, -1)),
    ("bytes=5-4", None),  # invalid: ignored
    ("bytes=-", None),
    ("bytes=0-1,5-6", None),  # several ranges: the whole file is allowed
    ("bytes=\u0661-2", None),  # digits are ASCII only
    ("items=0-1", None),
    ("bytes=0x10-20", None),
    ("bytes=1234567890123456789-", None),  # absurd numbers are not parsed
])
def test_byte_range(value: str, expected: Optional[Tuple[int, int]]) -> None:
    assert byte_range(value, 1000) == expected


def test_byte_range_of_an_empty_file_is_unsatisfiable() -> None:
    assert byte_range("bytes=0-", 0) == (-1, -1)
    assert byte_range("bytes=-1", 0) == (-1, -1)


def file_request(method: str = "GET", **fields: str) -> Request:
    headers = [("Host", "x")] + [(k.replace("_", "-"), v) for k, v in fields.items()]
    return Request(method, "/", "HTTP/1.1", Headers(headers))


def body(ranged: bool = True, offset: int = 0, size: int = 1000) -> FileBody:
    return FileBody(3, offset, size, lambda: None, ranged=ranged, mtime=1_000_000_000.5,
                    etag='"abc"')


def test_file_body_whole_with_validators() -> None:
    data, status, region, keep_alive, size = frame_file(
        file_request(), 200, [("Content-Type", "text/plain"), ("Content-Length", "7")],
        body(), False)
    lines, rest = split(data)
    assert lines == [b"HTTP/1.1 200 OK", b"Content-Type: text/plain", b"Accept-Ranges: bytes",
                     b"Last-Modified: Sun, 09 Sep 2001 01:46:40 GMT", b'ETag: "abc"',
                     b"Content-Length: 1000"]  # the application's length is replaced
    assert rest == b"" and status == 200 and region == (0, 1000) and keep_alive
    assert size == 1000


def test_file_body_range_is_206_from_the_body_offset() -> None:
    data, status, region, _, size = frame_file(file_request(Range="bytes=10-19"), 200, [],
                                               body(offset=500), False)
    lines, _ = split(data)
    assert status == 206 and region == (510, 10) and size == 10
    assert b"Content-Range: bytes 10-19/1000" in lines and b"Content-Length: 10" in lines


def test_file_body_unsatisfiable_range_is_416() -> None:
    data, status, region, keep_alive, _ = frame_file(file_request(Range="bytes=1000-"), 200,
                                                     [], body(), False)
    lines, _ = split(data)
    assert status == 416 and region is None and keep_alive
    assert b"Content-Range: bytes */1000" in lines and b"Content-Length: 0" in lines


@pytest.mark.parametrize("fields, status", [
    ({"If_None_Match": '"abc"'}, 304),
    ({"If_None_Match": 'W/"abc"'}, 304),  # weak comparison
    ({"If_None_Match": '"x", "abc"'}, 304),
    ({"If_None_Match": "*"}, 304),
    ({"If_None_Match": '"x"'}, 200),
    # If-None-Match wins over If-Modified-Since.
    ({"If_None_Match": '"x"', "If_Modified_Since": "Sun, 09 Sep 2001 01:46:40 GMT"}, 200),
    ({"If_Modified_Since": "Sun, 09 Sep 2001 01:46:40 GMT"}, 304),
    ({"If_Modified_Since": "Sun, 09 Sep 2001 01:46:39 GMT"}, 200),
    ({"If_Modified_Since": "yesterday"}, 200),  # not a date: ignored
    ({"Range": "bytes=0-9", "If_Range": '"abc"'}, 206),
    ({"Range": "bytes=0-9", "If_Range": 'W/"abc"'}, 200),  # If-Range compares strongly
    ({"Range": "bytes=0-9", "If_Range": '"old"'}, 200),
    ({"Range": "bytes=0-9", "If_Range": "Sun, 09 Sep 2001 01:46:40 GMT"}, 206),
    ({"Range": "bytes=0-9", "If_Range": "Sun, 09 Sep 2001 01:46:41 GMT"}, 200),
])
def test_file_body_conditional_requests(fields: Dict[str, str], status: int) -> None:
    data, sent, region, _, _ = frame_file(file_request(**fields), 200, [], body(), False)
    assert sent == status
    if status == 304:
        lines, _ = split(data)
        assert region is None and not any(line.startswith(b"Content-Length") for line in lines)


def test_file_body_head_and_post_and_other_statuses() -> None:
    data, status, region, _, size = frame_file(file_request("HEAD", Range="bytes=0-9"), 200,
                                               [], body(), False)
    assert status == 200 and region is None and size == 0  # HEAD ignores Range
    assert b"Content-Length: 1000" in split(data)[0]
    _, status, region, _, _ = frame_file(file_request("POST", Range="bytes=0-9"), 200, [],
                                         body(), False)
    assert status == 200 and region == (0, 1000)
    _, status, region, _, _ = frame_file(file_request(Range="bytes=0-9"), 404, [], body(),
                                         False)
    assert status == 404 and region == (0, 1000)  # only a 200 is ranged


def test_file_body_not_ranged_is_sent_as_it_is() -> None:
    data, status, region, _, _ = frame_file(
        file_request(Range="bytes=0-9", If_None_Match="*"), 200, [], body(ranged=False,
                                                                          offset=7), False)
    lines, _ = split(data)
    assert status == 200 and region == (7, 1000)
    assert lines == [b"HTTP/1.1 200 OK", b"Content-Length: 1000"]


def test_file_body_framing_follows_the_connection() -> None:
    data, _, _, keep_alive, _ = frame_file(file_request(), 200, [], body(), True)
    assert not keep_alive and b"Connection: close" in split(data)[0]
