"""Unit tests for ``wssync.http.response``: how applications build a ``Response``."""

from __future__ import annotations

import json

import pytest

from wssync.http.response import Response

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


def test_response_repr() -> None:
    assert repr(Response.json({"ok": True})) == "<Response 200>"
