"""``Headers`` and ``Request`` as plain data: look-ups, compaction, query parsing."""

from __future__ import annotations

from wssync.http.request import Headers, Request

FIELDS = [("Host", "example.com"), ("X-Multi", "a"), ("x-multi", "b"),
          ("X-Colon", "value: with: colons"), ("X-Empty", ""), ("Cookie", "a=1; b=2")]


def test_lookups_ignore_case_and_keep_repeats() -> None:
    headers = Headers(list(FIELDS))
    assert headers["HOST"] == "example.com"
    assert headers.get("x-multi") == "a"
    assert headers.get_all("X-MULTI") == ["a", "b"]
    assert headers.get("missing", "d") == "d"
    assert "x-empty" in headers and headers["x-empty"] == ""
    assert list(headers) == [name for name, _ in FIELDS]
    assert len(headers) == len(FIELDS)


def test_compaction_keeps_every_field_exactly() -> None:
    headers = Headers(list(FIELDS))
    headers.get("host")  # build the index first
    headers.compact()
    assert headers._items is None and headers._index is None
    assert headers.items() == FIELDS
    assert headers.get_all("x-multi") == ["a", "b"]
    assert headers["x-colon"] == "value: with: colons"
    headers.compact()
    headers.add("X-Late", "z")
    assert headers.items() == [*FIELDS, ("X-Late", "z")]
    assert headers["x-late"] == "z"


def test_empty_headers_compact() -> None:
    headers = Headers()
    headers.compact()
    assert headers.items() == [] and len(headers) == 0 and "x" not in headers


def test_tokens() -> None:
    headers = Headers([("Connection", "keep-alive, Upgrade"), ("Connection", " close ,")])
    assert headers.tokens("connection") == ["keep-alive", "upgrade", "close"]


def test_request_path_and_query() -> None:
    request = Request("GET", "/a%20b/c?x=1&x=2&y=", "HTTP/1.1", Headers())
    assert request.path == "/a b/c"
    assert request.raw_path == "/a%20b/c"
    assert request.query_string == "x=1&x=2&y="
    assert request.query == {"x": ["1", "2"], "y": [""]}
    assert request.arg("x") == "1" and request.arg("z", "d") == "d"
