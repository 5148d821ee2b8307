"""Unit tests for ``wssync.response``: ``Response`` construction and response-head bytes.

``render_head`` and ``status_line`` are pure functions returning bytes, so they
are checked byte for byte; no sockets or server are involved.
"""

from __future__ import annotations

import json
import time
from email.utils import parsedate_to_datetime

import pytest

from wssync import __version__
from wssync.response import SERVER_HEADER, Response, reason_phrase, render_head, status_line


def head_lines(head: bytes):
    """The lines of a rendered head, without the final empty line."""
    assert head.endswith(b"\r\n\r\n")
    return head[:-4].split(b"\r\n")


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


# -- Response ---------------------------------------------------------------------------


def test_response_defaults():
    response = Response()
    assert response.status == 200
    assert response.body == b""
    assert response.headers == []


def test_response_from_str_is_utf8_text():
    response = Response("h\u00e9llo \u2603")
    assert response.body == "h\u00e9llo \u2603".encode("utf-8")
    assert isinstance(response.body, bytes)
    assert response.headers == [("Content-Type", "text/plain; charset=utf-8")]
    assert response.status == 200


def test_response_from_str_keeps_given_content_type():
    response = Response("<p>x</p>", content_type="text/html; charset=utf-8")
    assert response.body == b"<p>x</p>"
    assert response.headers == [("Content-Type", "text/html; charset=utf-8")]


def test_response_from_bytes_has_no_implicit_content_type():
    response = Response(b"\x00\x01", status=202)
    assert response.body == b"\x00\x01"
    assert response.status == 202
    assert response.headers == []


def test_response_headers_from_dict_or_list():
    from_dict = Response(b"x", headers={"X-A": "1", "X-B": "2"})
    assert from_dict.headers == [("X-A", "1"), ("X-B", "2")]
    given = [("X-A", "1"), ("X-A", "2")]
    from_list = Response("x", headers=given)
    assert from_list.headers == [("X-A", "1"), ("X-A", "2"),
                                 ("Content-Type", "text/plain; charset=utf-8")]
    assert given == [("X-A", "1"), ("X-A", "2")]  # caller's list not modified


def test_response_iterable_body_is_kept_for_streaming():
    chunks = [b"a", b"b"]
    response = Response(iter(chunks))
    assert list(response.body) == chunks
    assert response.headers == []


def test_response_json():
    response = Response.json({"b": [1, 2], "a": None, "s": "\u00e9"}, status=201,
                             headers={"X-Id": "7"})
    assert response.status == 201
    assert response.body == b'{"b":[1,2],"a":null,"s":"\\u00e9"}'  # compact, ASCII-safe
    assert json.loads(response.body) == {"b": [1, 2], "a": None, "s": "\u00e9"}
    assert response.headers == [("X-Id", "7"), ("Content-Type", "application/json")]


def test_response_json_defaults():
    response = Response.json([1, "two"])
    assert response.status == 200
    assert response.body == b'[1,"two"]'
    assert response.headers == [("Content-Type", "application/json")]


def test_response_json_rejects_unserialisable_data():
    with pytest.raises(TypeError):
        Response.json({"x": object()})


def test_response_html():
    response = Response.html("<h1>\u00e9</h1>", status=404)
    assert response.status == 404
    assert response.body == "<h1>\u00e9</h1>".encode("utf-8")
    assert response.headers == [("Content-Type", "text/html; charset=utf-8")]


def test_response_headers_render_into_a_head():
    response = Response.json({"ok": True})
    head = render_head("HTTP/1.1", response.status,
                       [*response.headers, ("Content-Length", str(len(response.body)))])
    assert head_lines(head)[3:] == [b"Content-Type: application/json", b"Content-Length: 11"]
    assert repr(response) == "<Response 200>"
