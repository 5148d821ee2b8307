"""Unit tests for the Sans-I/O request parser (``wssync.http.parser``).

Everything here works on plain bytes: no sockets, no server.  The tests cover
request-line and header parsing, body framing (Content-Length and chunked),
pipelining, keep-alive and ``Expect`` handling, size limits, rejection of
malformed or ambiguous input as RFC 9112 requires, independence from how the
byte stream is split, and that parsing time grows linearly with input size.
"""

from __future__ import annotations

import gc
import string
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wssync.config import Config
from wssync.errors import HttpError
from wssync.http.parser import RequestParser
from wssync.http.request import Headers, Request

HOST = b"Host: example.test"


# -- helpers -------------------------------------------------------------------


def head(*lines: bytes) -> bytes:
    """A request head: ``lines`` joined by CRLF, ended by an empty line."""
    return b"\r\n".join(lines) + b"\r\n\r\n"


def parse_pieces(pieces, limits=None):
    """Feed ``pieces`` one after another, collecting every complete request."""
    parser = RequestParser(limits)
    requests = []
    for piece in pieces:
        parser.feed(piece)
        while True:
            request = parser.next_request()
            if request is None:
                break
            requests.append(request)
    return requests


def parse_all(data, limits=None):
    return parse_pieces([data], limits)


def parse_bytewise(data, limits=None):
    return parse_pieces([data[i:i + 1] for i in range(len(data))], limits)


def split_at(data, cuts):
    """``data`` cut at the given offsets (any order, duplicates allowed)."""
    points = [0, *sorted(set(cuts)), len(data)]
    return [data[a:b] for a, b in zip(points, points[1:])]


def parse_one(data, limits=None):
    requests = parse_all(data, limits)
    assert len(requests) == 1, requests
    return requests[0]


def summary(request):
    """Everything a request carries, as a comparable tuple."""
    return (request.method, request.target, request.version,
            request.headers.items(), request.body, request.keep_alive)


def error_of(data, limits=None):
    """The HttpError that parsing ``data`` (fed whole) raises."""
    parser = RequestParser(limits)
    parser.feed(data)
    with pytest.raises(HttpError) as info:
        while parser.next_request() is not None:
            pass
    return info.value


def status_of(data, limits=None):
    return error_of(data, limits).status


def chunked_post(body_part: bytes) -> bytes:
    return head(b"POST /upload HTTP/1.1", HOST, b"Transfer-Encoding: chunked") + body_part


def length_post(length_value: bytes, body: bytes = b"0123456789") -> bytes:
    return head(b"POST /upload HTTP/1.1", HOST, b"Content-Length: " + length_value) + body


# -- request line, headers, target ---------------------------------------------------


def test_simple_get():
    request = parse_one(head(b"GET /index.html HTTP/1.1", HOST, b"Accept: */*"))
    assert isinstance(request, Request)
    assert request.method == "GET"
    assert request.target == "/index.html"
    assert request.path == "/index.html"
    assert request.raw_path == "/index.html"
    assert request.query_string == ""
    assert request.version == "HTTP/1.1"
    assert request.body == b""
    assert request.keep_alive is True
    assert request.headers.items() == [("Host", "example.test"), ("Accept", "*/*")]


def test_incomplete_head_returns_none_until_complete():
    data = head(b"GET / HTTP/1.1", HOST)
    parser = RequestParser()
    parser.feed(data[:-1])
    assert parser.next_request() is None
    assert parser.next_request() is None  # asking again changes nothing
    assert parser.buffered == len(data) - 1
    assert parser.pending is None
    parser.feed(data[-1:])
    request = parser.next_request()
    assert request is not None and request.target == "/"
    assert parser.buffered == 0
    assert parser.next_request() is None


def test_remote_addr_is_attached_to_requests():
    parser = RequestParser(remote_addr=("192.0.2.7", 4242))
    parser.feed(head(b"GET / HTTP/1.1", HOST))
    assert parser.next_request().remote_addr == ("192.0.2.7", 4242)


def test_lowercase_method_is_a_valid_token():
    request = parse_one(head(b"m-search / HTTP/1.1", HOST))
    assert request.method == "m-search"


def test_header_lookup_is_case_insensitive():
    request = parse_one(head(b"GET / HTTP/1.1", HOST, b"Content-TYPE: text/plain",
                             b"X-Custom-Thing: 42"))
    headers = request.headers
    assert isinstance(headers, Headers)
    assert headers.get("content-type") == "text/plain"
    assert headers.get("CONTENT-TYPE") == "text/plain"
    assert headers["x-custom-thing"] == "42"
    assert "HOST" in headers and "host" in headers
    assert "x-missing" not in headers
    assert headers.get("x-missing") is None
    assert headers.get("x-missing", "dflt") == "dflt"
    with pytest.raises(KeyError):
        headers["x-missing"]
    # items() keeps names as they arrived
    assert [name for name, _ in headers.items()] == ["Host", "Content-TYPE", "X-Custom-Thing"]
    assert list(headers) == ["Host", "Content-TYPE", "X-Custom-Thing"]


def test_repeated_headers_are_all_kept_in_order():
    request = parse_one(head(b"GET / HTTP/1.1", HOST, b"Cookie: a=1", b"X-Other: z",
                             b"cookie: b=2", b"COOKIE: c=3"))
    headers = request.headers
    assert headers.get_all("Cookie") == ["a=1", "b=2", "c=3"]
    assert headers.get("cookie") == "a=1"
    assert headers["COOKIE"] == "a=1"
    assert headers.get_all("x-nothing") == []
    assert len(headers) == 5


def test_tokens_split_lowercase_and_join_repeated_fields():
    request = parse_one(head(b"GET / HTTP/1.1", HOST, b"Connection: Keep-Alive, Upgrade",
                             b"Connection: ,  TE ,", b"Upgrade: websocket"))
    assert request.headers.tokens("connection") == ["keep-alive", "upgrade", "te"]
    assert request.headers.tokens("upgrade") == ["websocket"]
    assert request.headers.tokens("absent") == []


def test_header_values_trimmed_but_inner_whitespace_and_obs_text_kept():
    request = parse_one(head(b"GET / HTTP/1.1", HOST, b"X-A: \t padded value \t ",
                             b"X-Tab: a\tb", b"X-Empty:", b"X-Latin: caf\xe9"))
    headers = request.headers
    assert headers["x-a"] == "padded value"
    assert headers["x-tab"] == "a\tb"
    assert headers["x-empty"] == ""
    assert headers["x-latin"] == "caf\u00e9"  # obs-text decoded as latin-1


def test_query_string_query_and_arg():
    request = parse_one(head(b"GET /search?q=a+b%21&x=1&x=2&empty=&flag HTTP/1.1", HOST))
    assert request.path == "/search"
    assert request.target == "/search?q=a+b%21&x=1&x=2&empty=&flag"
    assert request.query_string == "q=a+b%21&x=1&x=2&empty=&flag"
    assert request.query == {"q": ["a b!"], "x": ["1", "2"], "empty": [""], "flag": [""]}
    assert request.arg("q") == "a b!"
    assert request.arg("x") == "1"
    assert request.arg("empty") == ""
    assert request.arg("missing") is None
    assert request.arg("missing", "fallback") == "fallback"


def test_path_is_percent_decoded_raw_path_is_not():
    request = parse_one(head(b"GET /a%20b/%2Fc/d%25e?k=%20 HTTP/1.1", HOST))
    assert request.path == "/a b//c/d%e"
    assert request.raw_path == "/a%20b/%2Fc/d%25e"
    assert request.target == "/a%20b/%2Fc/d%25e?k=%20"
    assert request.arg("k") == " "


@pytest.mark.parametrize("target, origin", [
    (b"http://example.test/path/x?q=1", "/path/x?q=1"),
    (b"https://example.test:8443/p", "/p"),
    (b"HTTP://Example.Test/Up", "/Up"),
    (b"http://example.test", "/"),
    (b"http://example.test?x=1", "/?x=1"),
    (b"http://user@example.test:80/a", "/a"),
])
def test_absolute_form_target_becomes_origin_form(target, origin):
    request = parse_one(head(b"GET " + target + b" HTTP/1.1", HOST))
    assert request.target == origin
    assert request.path == origin.partition("?")[0]


def test_options_asterisk_form_is_kept():
    assert parse_one(head(b"OPTIONS * HTTP/1.1", HOST)).target == "*"


@pytest.mark.parametrize("target", [b"*", b"example.test/x", b"example.test:443",
                                    b"ftp://example.test/x", b"?x=1"])
def test_targets_neither_origin_nor_absolute_form_are_rejected(target):
    assert status_of(head(b"GET " + target + b" HTTP/1.1", HOST)) == 400


def test_leading_empty_lines_are_skipped():
    data = (b"\r\n\r\n" + head(b"GET /first HTTP/1.1", HOST)
            + b"\r\n" + head(b"GET /second HTTP/1.1", HOST))
    assert [r.target for r in parse_all(data)] == ["/first", "/second"]
    assert [r.target for r in parse_bytewise(data)] == ["/first", "/second"]


def test_http_1_0_without_host_is_accepted():
    request = parse_one(head(b"GET /old HTTP/1.0"))
    assert request.version == "HTTP/1.0"
    assert request.target == "/old"
    assert len(request.headers) == 0


# -- bodies ------------------------------------------------------------------------------


def test_content_length_body():
    data = head(b"POST /form HTTP/1.1", HOST, b"Content-Length: 11") + b"hello world"
    request = parse_one(data)
    assert request.method == "POST"
    assert request.body == b"hello world"
    assert request.text == "hello world"


def test_content_length_zero_gives_empty_body_immediately():
    parser = RequestParser()
    parser.feed(head(b"POST / HTTP/1.1", HOST, b"Content-Length: 0"))
    request = parser.next_request()
    assert request is not None and request.body == b""
    assert parser.pending is None


def test_content_length_body_waits_for_all_bytes():
    parser = RequestParser()
    parser.feed(head(b"POST / HTTP/1.1", HOST, b"Content-Length: 10") + b"01234")
    assert parser.next_request() is None
    assert parser.pending is not None
    assert parser.buffered == 5
    parser.feed(b"5678")
    assert parser.next_request() is None
    parser.feed(b"9GET")  # the start of a pipelined request must not be taken as body
    request = parser.next_request()
    assert request.body == b"0123456789"
    assert parser.pending is None
    assert parser.buffered == 3
    assert parser.next_request() is None


def test_json_body():
    data = head(b"POST /api HTTP/1.1", HOST, b"Content-Length: 17") + b'{"a": [1, 2, 3]}\n'
    assert parse_one(data).json() == {"a": [1, 2, 3]}


CHUNKED_BODY = (b"5;name=value\r\nhello\r\n"
                b"6;a;b=\"quoted;str\"\r\n world\r\n"
                b"00A\r\n, chunked!\r\n"
                b"0;last=1\r\n"
                b"X-Checksum: abc123\r\n"
                b"X-Trailer-Two: \tsecond\r\n"
                b"\r\n")


def test_chunked_body_with_extensions_and_trailers():
    request = parse_one(chunked_post(CHUNKED_BODY))
    assert request.body == b"hello world, chunked!"
    assert request.headers.get("transfer-encoding") == "chunked"


def test_chunked_body_without_trailers():
    request = parse_one(chunked_post(b"3\r\nabc\r\n0\r\n\r\n"))
    assert request.body == b"abc"


def test_chunked_empty_body():
    assert parse_one(chunked_post(b"0\r\n\r\n")).body == b""


def test_chunked_transfer_coding_name_is_case_insensitive():
    data = head(b"POST / HTTP/1.1", HOST, b"Transfer-Encoding: Chunked") + b"1\r\nx\r\n0\r\n\r\n"
    assert parse_one(data).body == b"x"


def test_chunked_body_waits_for_last_chunk_and_trailers():
    parser = RequestParser()
    parser.feed(chunked_post(b"5\r\nhello\r\n"))
    assert parser.next_request() is None
    assert parser.pending is not None
    parser.feed(b"0\r\nX-T: 1\r\n")
    assert parser.next_request() is None  # trailer section not finished yet
    parser.feed(b"\r\n")
    assert parser.next_request().body == b"hello"
    assert parser.pending is None


@pytest.mark.parametrize("data", [
    pytest.param(head(b"GET /a?b=c HTTP/1.1", HOST, b"X-A: 1", b"x-a: 2"), id="get"),
    pytest.param(b"\r\n" + head(b"POST / HTTP/1.1", HOST, b"Content-Length: 5") + b"hello",
                 id="content-length"),
    pytest.param(chunked_post(CHUNKED_BODY), id="chunked"),
])
def test_one_byte_at_a_time_gives_same_result_as_whole(data):
    whole = [summary(r) for r in parse_all(data)]
    assert len(whole) == 1
    assert [summary(r) for r in parse_bytewise(data)] == whole


def test_head_split_three_bytes_after_a_crlf_is_accepted():
    # Asking for a request while the buffered head ends three bytes after a CRLF,
    # then receiving a piece that still does not finish the head, is ordinary
    # TCP segmentation and must not be mistaken for a bare LF.
    pieces = [b"GET / HTTP/1.1\r\nHos", b"t", b": example.test\r\n\r\n"]
    requests = parse_pieces(pieces)
    assert [(r.target, r.headers.get("host")) for r in requests] == [("/", "example.test")]


def test_every_three_piece_split_gives_the_same_requests():
    data = (head(b"POST /p?q=1 HTTP/1.1", HOST, b"Transfer-Encoding: chunked", b"X-A: 1")
            + b"3;e=1\r\nabc\r\n0\r\nT: v\r\n\r\n"
            + head(b"GET /next HTTP/1.1", HOST))
    expected = [summary(r) for r in parse_all(data)]
    assert [s[1] for s in expected] == ["/p?q=1", "/next"]
    failures = []
    for i in range(len(data) + 1):
        for j in range(i, len(data) + 1):
            pieces = [data[:i], data[i:j], data[j:]]
            try:
                got = [summary(r) for r in parse_pieces(pieces)]
            except HttpError as error:
                got = error
            if got != expected:
                failures.append((pieces, got))
    assert not failures, f"{len(failures)} splits differ, first: {failures[0]}"


def test_pipelined_requests_returned_in_order():
    data = (head(b"GET /1 HTTP/1.1", HOST)
            + head(b"POST /2 HTTP/1.1", HOST, b"Content-Length: 3") + b"abc"
            + chunked_post(b"2\r\nde\r\n0\r\n\r\n")
            + head(b"GET /4 HTTP/1.0")
            + head(b"DELETE /5 HTTP/1.1", HOST, b"Connection: close"))
    parser = RequestParser()
    parser.feed(data)
    requests = []
    while True:
        request = parser.next_request()
        if request is None:
            break
        requests.append(request)
    assert [(r.method, r.target, r.body) for r in requests] == [
        ("GET", "/1", b""), ("POST", "/2", b"abc"), ("POST", "/upload", b"de"),
        ("GET", "/4", b""), ("DELETE", "/5", b"")]
    assert [r.keep_alive for r in requests] == [True, True, True, False, False]
    assert parser.buffered == 0
    assert [summary(r) for r in parse_bytewise(data)] == [summary(r) for r in requests]


def test_pipelined_requests_keep_the_rest_buffered():
    first = head(b"GET /1 HTTP/1.1", HOST)
    second = head(b"GET /2 HTTP/1.1", HOST)
    parser = RequestParser()
    parser.feed(first + second[:10])
    assert parser.next_request().target == "/1"
    assert parser.buffered == 10
    assert parser.next_request() is None
    parser.feed(second[10:])
    assert parser.next_request().target == "/2"


def test_take_buffer_returns_bytes_after_request_head():
    upgrade = head(b"GET /ws HTTP/1.1", HOST, b"Connection: Upgrade", b"Upgrade: websocket")
    frame = b"\x81\x85\x01\x02\x03\x04iggkn"
    parser = RequestParser()
    parser.feed(upgrade + frame[:3])
    request = parser.next_request()
    assert request.target == "/ws"
    assert request.headers.tokens("connection") == ["upgrade"]
    parser.feed(frame[3:])
    assert parser.buffered == len(frame)
    assert parser.take_buffer() == frame
    assert parser.buffered == 0
    assert parser.take_buffer() == b""


def test_take_buffer_without_extra_bytes_is_empty():
    parser = RequestParser()
    parser.feed(head(b"GET / HTTP/1.1", HOST))
    assert parser.next_request() is not None
    assert parser.take_buffer() == b""


@pytest.mark.parametrize("field", [b"X-Forwarded-For: 198.51.100.7", b"x-forwarded-proto: https",
                                   b"FORWARDED: for=198.51.100.7"])
def test_forwarded_flags_a_head_with_a_proxy_field_and_only_that_head(field):
    parser = RequestParser()
    assert parser.forwarded is False
    parser.feed(head(b"GET /1 HTTP/1.1", HOST, field) + head(b"GET /2 HTTP/1.1", HOST,
                                                             b"X-Forwarded-Host: a"))
    assert parser.next_request().target == "/1"
    assert parser.forwarded is True
    assert parser.next_request().target == "/2"
    assert parser.forwarded is False


# -- keep-alive and Expect ----------------------------------------------------------


@pytest.mark.parametrize("version, connection, expected", [
    (b"HTTP/1.1", None, True),
    (b"HTTP/1.1", b"keep-alive", True),
    (b"HTTP/1.1", b"close", False),
    (b"HTTP/1.1", b"Close", False),
    (b"HTTP/1.1", b"Upgrade, close", False),
    (b"HTTP/1.0", None, False),
    (b"HTTP/1.0", b"keep-alive", True),
    (b"HTTP/1.0", b"Keep-Alive", True),
    (b"HTTP/1.0", b"close", False),
])
def test_keep_alive_rules(version, connection, expected):
    lines = [b"GET / " + version, HOST]
    if connection is not None:
        lines.append(b"Connection: " + connection)
    request = parse_one(head(*lines))
    assert request.keep_alive is expected
    assert request.version == version.decode()


def test_expect_100_continue_is_flagged_while_body_is_pending():
    parser = RequestParser()
    assert parser.expect_continue is False
    parser.feed(head(b"POST /up HTTP/1.1", HOST, b"Content-Length: 5", b"Expect: 100-continue"))
    assert parser.next_request() is None
    assert parser.expect_continue is True
    assert parser.pending is not None
    parser.feed(b"hel")
    assert parser.next_request() is None
    assert parser.expect_continue is True
    parser.feed(b"lo")
    request = parser.next_request()
    assert request.body == b"hello"
    assert parser.expect_continue is False
    assert parser.pending is None


def test_expect_100_continue_is_case_insensitive_and_works_with_chunked():
    parser = RequestParser()
    parser.feed(head(b"POST / HTTP/1.1", HOST, b"Transfer-Encoding: chunked",
                     b"Expect: 100-Continue"))
    assert parser.next_request() is None
    assert parser.expect_continue is True
    parser.feed(b"1\r\nz\r\n0\r\n\r\n")
    assert parser.next_request().body == b"z"
    assert parser.expect_continue is False


def test_expect_100_continue_not_flagged_without_body():
    parser = RequestParser()
    parser.feed(head(b"POST / HTTP/1.1", HOST, b"Content-Length: 0", b"Expect: 100-continue"))
    assert parser.next_request() is not None
    assert parser.expect_continue is False


def test_expect_100_continue_ignored_in_http_1_0():
    parser = RequestParser()
    parser.feed(head(b"POST / HTTP/1.0", b"Content-Length: 2", b"Expect: 100-continue"))
    assert parser.next_request() is None
    assert parser.pending is not None
    assert parser.expect_continue is False


@pytest.mark.parametrize("value", [b"200-ok", b"100-continue-please", b"", b"foo=bar"])
def test_other_expectations_are_refused_with_417(value):
    assert status_of(head(b"POST / HTTP/1.1", HOST, b"Content-Length: 1",
                          b"Expect: " + value) + b"x") == 417


# -- limits ---------------------------------------------------------------------------


SMALL = Config(max_request_line=64, max_header_size=256, max_headers=4, max_body_size=10)


def test_request_line_too_long_gives_414():
    data = head(b"GET /" + b"a" * 100 + b" HTTP/1.1", HOST)
    assert status_of(data, SMALL) == 414


def test_request_line_at_the_limit_is_accepted():
    line = b"GET /" + b"a" * (64 - len(b"GET / HTTP/1.1")) + b" HTTP/1.1"
    assert len(line) == 64
    assert parse_one(head(line, HOST), SMALL).target.startswith("/aaa")


def test_request_line_too_long_refused_before_crlf_arrives():
    parser = RequestParser(SMALL)
    parser.feed(b"GET /" + b"a" * 59)  # 64 bytes, no CRLF yet: still allowed
    assert parser.next_request() is None
    parser.feed(b"a")  # 65 bytes with no end of line in sight
    with pytest.raises(HttpError) as info:
        parser.next_request()
    assert info.value.status == 414


def test_default_request_line_limit_refuses_endless_line():
    parser = RequestParser()
    parser.feed(b"GET /" + b"a" * 9000)
    with pytest.raises(HttpError) as info:
        parser.next_request()
    assert info.value.status == 414


def test_head_too_large_gives_431():
    data = head(b"GET / HTTP/1.1", HOST, b"X-Big: " + b"v" * 300)
    assert status_of(data, SMALL) == 431


def test_head_too_large_refused_before_it_ends():
    parser = RequestParser(SMALL)
    parser.feed(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"v" * 300)
    with pytest.raises(HttpError) as info:
        parser.next_request()
    assert info.value.status == 431


def test_default_head_limit_is_enforced():
    data = head(b"GET / HTTP/1.1", HOST, *[b"X-Filler-%03d: " % i + b"f" * 1000 for i in range(70)])
    assert status_of(data) == 431


def test_too_many_headers_gives_431():
    ok = head(b"GET / HTTP/1.1", HOST, b"A: 1", b"B: 2", b"C: 3")
    assert len(parse_one(ok, SMALL).headers) == 4
    too_many = head(b"GET / HTTP/1.1", HOST, b"A: 1", b"B: 2", b"C: 3", b"D: 4")
    assert status_of(too_many, SMALL) == 431


def test_content_length_over_max_body_size_gives_413_before_body_arrives():
    parser = RequestParser(SMALL)
    parser.feed(head(b"POST / HTTP/1.1", HOST, b"Content-Length: 11"))
    with pytest.raises(HttpError) as info:
        parser.next_request()
    assert info.value.status == 413


def test_content_length_at_max_body_size_is_accepted():
    data = head(b"POST / HTTP/1.1", HOST, b"Content-Length: 10") + b"0123456789"
    assert parse_one(data, SMALL).body == b"0123456789"


def test_chunked_body_over_limit_gives_413():
    assert status_of(chunked_post(b"6\r\nabcdef\r\n6\r\nghijkl\r\n0\r\n\r\n"), SMALL) == 413


def test_chunked_body_over_limit_refused_before_chunk_data_arrives():
    parser = RequestParser(SMALL)
    parser.feed(chunked_post(b"6\r\nabcdef\r\nffffffffffffffff\r\n"))
    with pytest.raises(HttpError) as info:
        parser.next_request()
    assert info.value.status == 413


def test_chunked_body_at_limit_is_accepted():
    data = chunked_post(b"6\r\nabcdef\r\n4\r\nghij\r\n0\r\n\r\n")
    assert parse_one(data, SMALL).body == b"abcdefghij"


def test_trailer_section_too_large_gives_431():
    data = chunked_post(b"1\r\nx\r\n0\r\nX-Trailer: " + b"t" * 300 + b"\r\n\r\n")
    assert status_of(data, SMALL) == 431


# -- malformed input ------------------------------------------------------------------------


def test_content_length_and_transfer_encoding_together_is_400():
    data = head(b"POST / HTTP/1.1", HOST, b"Content-Length: 5",
                b"Transfer-Encoding: chunked") + b"0\r\n\r\n"
    assert status_of(data) == 400


def test_transfer_encoding_in_http_1_0_is_400():
    data = head(b"POST / HTTP/1.0", b"Transfer-Encoding: chunked") + b"0\r\n\r\n"
    assert status_of(data) == 400


@pytest.mark.parametrize("codings, status", [
    pytest.param([b"gzip"], 400, id="chunked-missing"),
    pytest.param([b"identity"], 400, id="identity-only"),
    pytest.param([b"chunked, gzip"], 400, id="chunked-not-last"),
    pytest.param([b"chunked", b"gzip"], 400, id="chunked-not-last-two-fields"),
    pytest.param([b"chunked, chunked"], 400, id="chunked-twice"),
    pytest.param([b"chunked", b"chunked"], 400, id="chunked-twice-two-fields"),
    pytest.param([b""], 400, id="empty"),
    pytest.param([b"chunked,"], 400, id="empty-member"),
    pytest.param([b"chu nked"], 400, id="not-a-token"),
    pytest.param([b"gzip, chunked"], 501, id="unknown-coding"),
    pytest.param([b"x-custom", b"chunked"], 501, id="unknown-coding-two-fields"),
])
def test_bad_transfer_encodings(codings, status):
    lines = [b"POST / HTTP/1.1", HOST] + [b"Transfer-Encoding: " + c for c in codings]
    assert status_of(head(*lines) + b"0\r\n\r\n") == status


@pytest.mark.parametrize("value", [
    b"+10", b"0x0a", b"1_0", b"-1", b"1" * 30, b"", b"1 0", b"1e1", b"10, 11",
    b"10,", b"ten", b"\xd9\xa1\xd9\xa0", b"\t",
])
def test_malformed_content_length_is_400(value):
    assert status_of(length_post(value)) == 400


def test_two_different_content_length_headers_is_400():
    data = head(b"POST / HTTP/1.1", HOST, b"Content-Length: 10",
                b"Content-Length: 11") + b"0123456789x"
    assert status_of(data) == 400


@pytest.mark.parametrize("lines", [
    [b"Content-Length: 10", b"Content-Length: 10"],
    [b"Content-Length: 10, 10"],
    [b"Content-Length: 10,10", b"content-length: 10"],
])
def test_identical_repeated_content_lengths_are_accepted(lines):
    data = head(b"POST / HTTP/1.1", HOST, *lines) + b"0123456789"
    assert parse_one(data).body == b"0123456789"


@pytest.mark.parametrize("size_line", [
    b"0x5", b"+5", b"-5", b"", b" 5", b"5 ", b"5\t", b"g",
    b"1" + b"0" * 16,  # 2**64: more than 16 hex digits of size
    b"5;" + b"e" * 2000,  # chunk-size line longer than the parser allows
])
def test_malformed_chunk_size_is_400(size_line):
    assert status_of(chunked_post(size_line + b"\r\nhello\r\n0\r\n\r\n")) == 400


@pytest.mark.parametrize("body_part", [
    pytest.param(b"5\r\nhelloX\r\n0\r\n\r\n", id="extra-byte"),
    pytest.param(b"5\r\nhello\n0\r\n\r\n", id="lf-only"),
    pytest.param(b"5\r\nhello\rX0\r\n\r\n", id="cr-only"),
    pytest.param(b"5\r\nhello0\r\n\r\n", id="nothing"),
])
def test_chunk_data_not_followed_by_crlf_is_400(body_part):
    data = chunked_post(body_part)
    assert status_of(data) == 400
    with pytest.raises(HttpError) as info:
        parse_bytewise(data)
    assert info.value.status == 400


def test_chunk_data_without_crlf_refused_as_soon_as_seen():
    parser = RequestParser()
    parser.feed(chunked_post(b"5\r\nhello"))
    assert parser.next_request() is None
    parser.feed(b"X")
    with pytest.raises(HttpError) as info:
        parser.next_request()
    assert info.value.status == 400


@pytest.mark.parametrize("body_part", [
    pytest.param(b"5\nhello\r\n0\r\n\r\n", id="bare-lf-size-line"),
    pytest.param(b"5\rhello\r\n0\r\n\r\n", id="bare-cr-size-line"),
    pytest.param(b"5\r\nhello\r\n0\nX: y\r\n\r\n", id="bare-lf-last-chunk"),
    pytest.param(b"5\r\nhello\r\n0\r\nX: y\n\r\n", id="bare-lf-trailer"),
    pytest.param(b"5\r\nhello\r\n0\r\nX: y\rz\r\n\r\n", id="bare-cr-trailer"),
    pytest.param(b"5\r\nhello\r\n0\r\nnot a field\r\n\r\n", id="trailer-no-colon"),
    pytest.param(b"5\r\nhello\r\n0\r\n: empty-name\r\n\r\n", id="trailer-empty-name"),
    pytest.param(b"5\r\nhello\r\n0\r\nX: a\x00b\r\n\r\n", id="trailer-nul"),
])
def test_malformed_chunk_framing_or_trailers_is_400(body_part):
    assert status_of(chunked_post(body_part)) == 400


@pytest.mark.parametrize("data", [
    pytest.param(b"GET / HTTP/1.1\nHost: x\n\n", id="all-bare-lf"),
    pytest.param(b"GET / HTTP/1.1\nHost: x\r\n\r\n", id="bare-lf-after-request-line"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: x\nX-A: 1\r\n\r\n", id="bare-lf-after-header"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: x\r\n\n", id="bare-lf-end-of-head"),
    pytest.param(b"GET / HTTP/1.1\rHost: x\r\n\r\n", id="bare-cr-after-request-line"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: x\rX-A: 1\r\n\r\n", id="bare-cr-after-header"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n", id="bare-cr-in-value"),
    pytest.param(b"GET / HTTP/1.1\r\r\nHost: x\r\n\r\n", id="cr-cr-lf"),
])
def test_bare_lf_and_bare_cr_line_endings_are_400(data):
    assert status_of(data) == 400


def test_bare_lf_refused_before_head_is_complete():
    parser = RequestParser()
    parser.feed(b"GET / HTTP/1.1\nHost: x\n")
    with pytest.raises(HttpError) as info:
        parser.next_request()
    assert info.value.status == 400


@pytest.mark.parametrize("lines", [
    pytest.param([HOST, b"X-A: one", b" two"], id="obs-fold-space"),
    pytest.param([HOST, b"X-A: one", b"\ttwo"], id="obs-fold-tab"),
    pytest.param([b" Host: example.test"], id="whitespace-before-first-field"),
    pytest.param([HOST, b"X-A : 1"], id="space-before-colon"),
    pytest.param([HOST, b"X-A\t: 1"], id="tab-before-colon"),
    pytest.param([b"Host : example.test"], id="space-before-colon-host"),
    pytest.param([HOST, b"X-A: a\x00b"], id="nul-in-value"),
    pytest.param([HOST, b"X-A: a\x01"], id="soh-in-value"),
    pytest.param([HOST, b"X-A: \x1b[31m"], id="esc-in-value"),
    pytest.param([HOST, b"X-A: a\x7fb"], id="del-in-value"),
    pytest.param([HOST, b"X-A: a\x0bb"], id="vt-in-value"),
    pytest.param([HOST, b": value"], id="empty-name"),
    pytest.param([HOST, b"X(A): 1"], id="paren-in-name"),
    pytest.param([HOST, b"X A: 1"], id="space-in-name"),
    pytest.param([HOST, b"X\xe9: 1"], id="non-ascii-name"),
    pytest.param([HOST, b"[x]: 1"], id="bracket-name"),
    pytest.param([HOST, b"X@Y: 1"], id="at-in-name"),
    pytest.param([HOST, b"NoColonHere"], id="no-colon"),
    pytest.param([], id="missing-host"),
    pytest.param([b"X-A: 1"], id="missing-host-with-other-fields"),
    pytest.param([HOST, b"Host: other.test"], id="two-host-fields"),
    pytest.param([HOST, b"host: example.test"], id="two-identical-host-fields"),
])
def test_malformed_header_section_is_400(lines):
    assert status_of(head(b"GET / HTTP/1.1", *lines)) == 400


@pytest.mark.parametrize("line", [
    b"GET /",
    b"GET",
    b"",
    b"GET / HTTP/1.1 extra",
    b"GET  / HTTP/1.1",
    b"GET /  HTTP/1.1",
    b"GET / HTTP/1.1 ",
    b" GET / HTTP/1.1",
    b"GET\t/\tHTTP/1.1",
    b"GET / http/1.1",
    b"GET / HTTP/1",
    b"GET / HTTP/1.1.1",
    b"GET / HTTP/ 1.1",
    b"/ HTTP/1.1",
    b"GET HTTP/1.1",
    b"GET /a b HTTP/1.1",
])
def test_malformed_request_line_is_400(line):
    # (b"" is skipped as a blank line, so the Host field becomes the request line)
    assert status_of(head(line, HOST)) == 400


@pytest.mark.parametrize("line", [
    pytest.param(b"GET /caf\xc3\xa9 HTTP/1.1", id="utf8-target"),
    pytest.param(b"GET /\xff HTTP/1.1", id="latin1-target"),
    pytest.param(b"GET /\x7f HTTP/1.1", id="del-target"),
    pytest.param(b"GET /a\x01b HTTP/1.1", id="control-target"),
    pytest.param(b"G\xc3\x89T / HTTP/1.1", id="non-ascii-method"),
    pytest.param(b"GE(T / HTTP/1.1", id="non-token-method"),
])
def test_invalid_bytes_in_request_line_are_400_not_505(line):
    assert status_of(head(line, HOST)) == 400


@pytest.mark.parametrize("version", [b"HTTP/2.0", b"HTTP/1.2", b"HTTP/3.0", b"HTTP/0.9"])
def test_unsupported_http_version_is_505(version):
    assert status_of(head(b"GET / " + version, HOST)) == 505


@pytest.mark.parametrize("bad", [
    pytest.param(head(b"GET / HTTP/1.1"), id="missing-host"),
    pytest.param(length_post(b"+1"), id="bad-content-length"),
    pytest.param(head(b"GET / HTTP/2.0", HOST), id="version"),
    pytest.param(chunked_post(b"zz\r\n"), id="bad-chunk-size"),
])
def test_parser_stays_failed_after_an_error(bad):
    parser = RequestParser()
    parser.feed(bad)
    with pytest.raises(HttpError):
        while parser.next_request() is not None:
            pass
    with pytest.raises(HttpError):
        parser.next_request()
    parser.feed(head(b"GET / HTTP/1.1", HOST))  # even a valid request is not parsed now
    with pytest.raises(HttpError):
        parser.next_request()


def test_http_error_carries_status_and_message():
    error = error_of(head(b"GET / HTTP/1.1"))
    assert error.status == 400
    assert isinstance(error.message, str) and error.message
    assert str(error).startswith("400 ")


# -- property tests ------------------------------------------------------------------------

TCHARS = "!#$%&'*+-.^_`|~" + string.ascii_letters + string.digits
FRAMING_FIELDS = {"host", "content-length", "transfer-encoding", "expect", "connection"}

methods = st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "X-CUSTOM"])
paths = st.text(alphabet=string.ascii_letters + string.digits + "-._~/%?=&+!$'()*,;:@",
                max_size=24).map(lambda s: "/" + s)
field_names = st.text(alphabet=TCHARS, min_size=1, max_size=12).filter(
    lambda n: n.lower() not in FRAMING_FIELDS)
field_value_chars = (st.characters(min_codepoint=0x20, max_codepoint=0x7E)
                     | st.sampled_from("\t\xa0\xe9\xff"))  # HTAB and obs-text too
field_values = st.text(alphabet=field_value_chars, max_size=24).map(lambda v: v.strip(" \t"))
optional_ws = st.sampled_from(["", " ", "\t", "  "])
chunk_exts = st.sampled_from([b"", b";a", b";a=b", b';name="q;v"', b";x;y=1"])


@st.composite
def valid_requests(draw):
    """(wire bytes, expected summary) of one valid HTTP/1.1 request."""
    method = draw(methods)
    target = draw(paths)
    fields = draw(st.lists(st.tuples(field_names, field_values), max_size=5))
    framing = draw(st.sampled_from(["none", "length", "chunked"]))
    body = b"" if framing == "none" else draw(st.binary(max_size=80))
    items = [("Host", "example.test")]
    lines = [f"{method} {target} HTTP/1.1".encode(), HOST]
    for name, value in fields:
        lead, trail = draw(optional_ws), draw(optional_ws)
        lines.append(f"{name}:{lead}{value}{trail}".encode("latin-1"))
        items.append((name, value))
    if framing == "length":
        lines.append(b"Content-Length: %d" % len(body))
        items.append(("Content-Length", str(len(body))))
    elif framing == "chunked":
        lines.append(b"Transfer-Encoding: chunked")
        items.append(("Transfer-Encoding", "chunked"))
    wire = b"\r\n" * draw(st.integers(0, 2)) + head(*lines)
    if framing == "length":
        wire += body
    elif framing == "chunked":
        cuts = draw(st.lists(st.integers(0, len(body)), max_size=4))
        for chunk in split_at(body, cuts):
            if chunk:
                size = b"%x" % len(chunk)
                if draw(st.booleans()):
                    size = size.upper()
                wire += b"0" * draw(st.integers(0, 2)) + size + draw(chunk_exts) + b"\r\n"
                wire += chunk + b"\r\n"
        wire += b"0" + draw(chunk_exts) + b"\r\n"
        for name, value in draw(st.lists(st.tuples(field_names, field_values), max_size=2)):
            wire += f"{name}: {value}\r\n".encode("latin-1")
        wire += b"\r\n"
    return wire, (method, target, "HTTP/1.1", items, body, True)


@settings(max_examples=150, deadline=None, database=None, report_multiple_bugs=False,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(valid_requests(), min_size=1, max_size=3), st.data())
def test_property_split_stream_gives_same_requests(generated, data):
    stream = b"".join(wire for wire, _ in generated)
    expected = [summary_ for _, summary_ in generated]
    assert [summary(r) for r in parse_all(stream)] == expected
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=16), label="cuts")
    assert [summary(r) for r in parse_pieces(split_at(stream, cuts))] == expected


@settings(max_examples=30, deadline=None, database=None, report_multiple_bugs=False)
@given(st.lists(valid_requests(), min_size=1, max_size=2))
def test_property_one_byte_at_a_time_gives_same_requests(generated):
    stream = b"".join(wire for wire, _ in generated)
    expected = [summary_ for _, summary_ in generated]
    assert [summary(r) for r in parse_bytewise(stream)] == expected


FRAGMENTS = st.sampled_from([
    b"GET / HTTP/1.1", b"POST /x HTTP/1.0", b"GET http://h/p HTTP/1.1", b"HTTP/2.0",
    b"\r\n", b"\r\n\r\n", b"\r", b"\n", b" ", b"\t", b":", b";", b",",
    b"Host: h", b"Content-Length: 3", b"Content-Length: 99999999999", b"Content-Length: -1",
    b"Transfer-Encoding: chunked", b"Transfer-Encoding: gzip, chunked",
    b"Expect: 100-continue", b"Connection: close",
    b"0", b"5", b"ff", b"ffffffffffffffffff", b";x=1", b"abc", b"\x00", b"\x7f", b"\xff",
])
JUNK = st.one_of(
    st.binary(max_size=300),
    st.lists(st.one_of(FRAGMENTS, st.binary(max_size=3)), max_size=40).map(b"".join),
)
JUNK_LIMITS = st.sampled_from([
    None,
    Config(max_request_line=20, max_header_size=60, max_headers=3, max_body_size=8),
])


def run_parser(pieces, limits):
    """(requests, error) after feeding ``pieces``; error is None if none was raised."""
    parser = RequestParser(limits)
    requests = []
    try:
        for piece in pieces:
            parser.feed(piece)
            assert parser.buffered >= 0
            while True:
                request = parser.next_request()
                if request is None:
                    break
                assert isinstance(request, Request)
                requests.append(request)
    except HttpError as error:
        assert 400 <= error.status <= 599
        with pytest.raises(HttpError):
            parser.next_request()
        return requests, error
    return requests, None


@settings(max_examples=300, deadline=None, database=None, report_multiple_bugs=False)
@given(JUNK, st.data(), JUNK_LIMITS)
def test_property_arbitrary_bytes_only_ever_raise_http_error(blob, data, limits):
    cuts = data.draw(st.lists(st.integers(0, len(blob)), max_size=20), label="cuts")
    # Any exception other than HttpError propagates and fails the test.
    run_parser(split_at(blob, cuts), limits)
    run_parser([blob], limits)


@settings(max_examples=300, deadline=None, database=None, report_multiple_bugs=False)
@given(JUNK, st.data(), JUNK_LIMITS)
def test_property_arbitrary_bytes_outcome_does_not_depend_on_splits(blob, data, limits):
    """Once every byte has been fed, how the stream was split must not matter."""
    cuts = data.draw(st.lists(st.integers(0, len(blob)), max_size=20), label="cuts")
    whole_requests, whole_error = run_parser([blob], limits)
    split_requests, split_error = run_parser(split_at(blob, cuts), limits)
    assert [summary(r) for r in split_requests] == [summary(r) for r in whole_requests]
    assert (split_error is None) == (whole_error is None), (whole_error, split_error)


# -- linear time -------------------------------------------------------------------------


def timed(action):
    gc.collect()
    enabled = gc.isenabled()
    gc.disable()
    try:
        # CPU time of this thread: other processes on a busy machine do not count.
        start = time.thread_time()
        action()
        return time.thread_time() - start
    finally:
        if enabled:
            gc.enable()


def assert_linear(make_action, size, factor=4, max_ratio=10.0, tries=4):
    """``make_action(n)`` for ``factor`` times the input must take < ``max_ratio`` times as long.

    Linear work gives a ratio near ``factor``; quadratic work near ``factor**2``.
    The small size is timed a few times (best kept); the large one is retried
    only if it looks too slow, to ride out a noisy machine.
    """
    small_action = make_action(size)
    large_action = make_action(size * factor)
    small = min(timed(small_action) for _ in range(3))
    large = float("inf")
    for _ in range(tries):
        large = min(large, timed(large_action))
        if large < max_ratio * small:
            return
        small = min(small, timed(small_action))
    pytest.fail(f"{factor}x the input took {large / small:.1f}x the time "
                f"({small * 1e3:.1f} ms -> {large * 1e3:.1f} ms): not linear")


BIG = Config(max_request_line=1 << 22, max_header_size=1 << 22, max_headers=1 << 20,
                   max_body_size=1 << 22)


def many_headers(count):
    return head(b"GET / HTTP/1.1", HOST, *[b"X-H%05d: v" % i for i in range(count)])


def test_ten_thousand_small_headers_parse():
    limits = Config(max_headers=10_001, max_header_size=1 << 20)
    request = parse_one(many_headers(10_000), limits)
    assert len(request.headers) == 10_001
    assert request.headers["x-h09999"] == "v"
    assert status_of(many_headers(10_001), limits) == 431

    def make(count):
        data = many_headers(count)
        return lambda: parse_one(data, limits)
    assert_linear(make, 2_500)


def test_64_kib_header_value_parses():
    limits = Config(max_header_size=1 << 20)
    value = bytes(range(0x21, 0x7F)) * 700
    value = value[:65536]
    request = parse_one(head(b"GET / HTTP/1.1", HOST, b"X-Big: " + value), limits)
    assert request.headers["x-big"] == value.decode("ascii")
    assert len(request.headers["x-big"]) == 65536

    def make(size):
        data = head(b"GET / HTTP/1.1", HOST, b"X-Big: " + b"v" * size)
        return lambda: parse_one(data, limits)
    assert_linear(make, 16384)


def test_64_kib_chunked_body_in_many_chunks_parses():
    chunks = b"".join(b"40\r\n" + b"c" * 64 + b"\r\n" for _ in range(1024))
    request = parse_one(chunked_post(chunks + b"0\r\n\r\n"))
    assert request.body == b"c" * 65536


def _bytewise_case(trickled, head_whole=b""):
    """An action feeding ``head_whole`` at once, then ``trickled`` one byte at a time."""
    def action():
        parser = RequestParser(BIG)
        parser.feed(head_whole)
        assert parser.next_request() is None
        found = []
        for i in range(len(trickled)):
            parser.feed(trickled[i:i + 1])
            request = parser.next_request()
            if request is not None:
                found.append(request)
        assert len(found) == 1
    return action


BYTEWISE_CASES = {
    # name: (size, function of n -> (bytes fed whole first, bytes fed one at a time))
    "many-headers": (8000, lambda n: (b"", many_headers(n // 12))),
    "long-header-value": (8000, lambda n: (b"", head(b"GET / HTTP/1.1", HOST, b"X: " + b"a" * n))),
    "long-request-line": (8000, lambda n: (b"", head(b"GET /" + b"a" * n + b" HTTP/1.0"))),
    "long-trailer-line": (8000, lambda n: (
        head(b"POST / HTTP/1.1", HOST, b"Transfer-Encoding: chunked"),
        b"1\r\nx\r\n0\r\nX-T: " + b"a" * n + b"\r\n\r\n")),
    "chunked-body": (16000, lambda n: (
        head(b"POST / HTTP/1.1", HOST, b"Transfer-Encoding: chunked"),
        b"".join(b"10;e=1\r\n" + b"b" * 16 + b"\r\n" for _ in range(n // 24)) + b"0\r\n\r\n")),
    "content-length-body": (16000, lambda n: (
        head(b"POST / HTTP/1.1", HOST, b"Content-Length: %d" % n), b"b" * n)),
}


@pytest.mark.parametrize("case", list(BYTEWISE_CASES))
def test_feeding_one_byte_at_a_time_is_linear(case):
    size, build = BYTEWISE_CASES[case]

    def make(n):
        whole, bytewise = build(n)
        return _bytewise_case(bytewise, whole)
    assert_linear(make, size)


# -- bodies read as they arrive (read_body) ---------------------------------------------


def stream_pieces(pieces, limit=7, limits=None):
    """Feed ``pieces``; once a head with a body is pending, take its body with
    ``read_body(limit)``.  The body's pieces, and what parses after it."""
    parser = RequestParser(limits)
    taken, after = [], []
    streaming = False
    for piece in pieces:
        parser.feed(piece)
        while True:
            if streaming:
                data = parser.read_body(limit)
                assert len(data) <= limit
                if data:
                    taken.append(data)
                if parser.pending is None:
                    streaming = False
                    continue
                if not data:
                    break
                continue
            request = parser.next_request()
            if request is not None:
                after.append(request)
                continue
            if parser.fresh_body:
                parser.fresh_body = False
                streaming = True
                continue
            break
    return taken, after


def test_content_length_body_is_read_in_pieces_then_the_next_request_parses() -> None:
    first = head(b"POST /up HTTP/1.1", HOST, b"Content-Length: 20") + b"01234"
    rest = b"56789" + b"0123456789" + head(b"GET /next HTTP/1.1", HOST)
    data = first + rest
    for pieces in ([first, rest], [data[i:i + 1] for i in range(len(data))]):
        taken, after = stream_pieces(pieces)
        assert b"".join(taken) == b"0123456789" * 2
        assert [r.target for r in after] == ["/next"]
    # A body complete with its head is returned whole, as before.
    taken, after = stream_pieces([data])
    assert taken == [] and after[0].body == b"0123456789" * 2


def test_chunked_body_is_read_in_pieces_without_framing_or_trailers() -> None:
    data = head(b"POST /up HTTP/1.1", HOST, b"Transfer-Encoding: chunked") \
        + b"a;ext=1\r\n0123456789\r\n3\r\nabc\r\n0\r\nX-Trailer: t\r\n\r\n" \
        + head(b"GET /next HTTP/1.1", HOST)
    for cut in range(1, len(data)):
        taken, after = stream_pieces([data[:cut], data[cut:]], limit=4)
        if after[0].target == "/up":  # all of it came with the head: collected whole
            assert after[0].body == b"0123456789abc" and taken == [], cut
            after = after[1:]
        else:
            assert b"".join(taken) == b"0123456789abc", cut
        assert [r.target for r in after] == ["/next"], cut


def test_chunk_data_collected_before_streaming_is_not_lost() -> None:
    # next_request() collects what chunk data came with the head; read_body
    # hands those pieces over first.
    parser = RequestParser()
    parser.feed(head(b"POST /up HTTP/1.1", HOST, b"Transfer-Encoding: chunked") + b"3\r\nabc\r\n")
    assert parser.next_request() is None and parser.fresh_body
    assert parser.read_body(100) == b"abc"
    assert parser.read_body(100) == b"" and parser.pending is not None
    parser.feed(b"2\r\nde\r\n0\r\n\r\n")
    assert parser.read_body(100) == b"de"
    assert parser.read_body(100) == b"" and parser.pending is None


def test_body_remaining_and_pending() -> None:
    parser = RequestParser()
    parser.feed(head(b"PUT /x HTTP/1.1", HOST, b"Content-Length: 10") + b"abc")
    assert parser.next_request() is None
    pending = parser.pending
    assert pending is not None and pending.target == "/x"
    assert parser.body_remaining == 10
    assert parser.read_body(2) == b"ab" and parser.body_remaining == 8
    parser.feed(b"d" * 7)
    assert parser.read_body(100) == b"cddddddd" and parser.pending is None
    parser.feed(head(b"POST /c HTTP/1.1", HOST, b"Transfer-Encoding: chunked"))
    assert parser.next_request() is None and parser.body_remaining == -1


def test_streamed_chunked_body_over_max_body_size_raises_413_and_fails() -> None:
    parser = RequestParser(SMALL)
    parser.feed(head(b"POST / HTTP/1.1", HOST, b"Transfer-Encoding: chunked"))
    assert parser.next_request() is None
    parser.feed(b"6\r\nabcdef\r\n")
    assert parser.read_body(100) == b"abcdef"
    parser.feed(b"6\r\nghijkl\r\n")
    with pytest.raises(HttpError) as info:
        parser.read_body(100)
    assert info.value.status == 413
    with pytest.raises(HttpError):  # nothing after a failure is parsed
        parser.read_body(100)


@pytest.mark.parametrize("bad", [b"3\r\nabcX", b"zz\r\n", b"3\nabc",
                                 b"3\r\nabc\r\n0\r\nbad\r\n\r\n"])
def test_streamed_chunk_framing_errors_raise_400(bad: bytes) -> None:
    parser = RequestParser()
    parser.feed(head(b"POST / HTTP/1.1", HOST, b"Transfer-Encoding: chunked"))
    assert parser.next_request() is None
    parser.feed(bad)
    with pytest.raises(HttpError) as info:
        while parser.pending is not None:
            assert parser.read_body(2) or parser.pending is None
    assert info.value.status == 400


def test_since_head_is_the_request_as_it_came_until_the_buffer_moves() -> None:
    parser = RequestParser()
    head = b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\n"
    parser.feed(b"\r\n" + head + b"ab")  # (an empty line before a request is skipped)
    assert parser.next_request() is None and parser.pending is not None
    assert parser.since_head() == head + b"ab"
    parser.feed(b"cd" + b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    assert parser.next_request() is not None
    request = parser.next_request()
    assert request is not None and request.target == "/"
    assert parser.since_head() == b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"
    parser.feed(b"G")  # the consumed requests are dropped from the buffer
    assert parser.since_head() is None
    assert parser.take_buffer() == b"G" and parser.since_head() is None
