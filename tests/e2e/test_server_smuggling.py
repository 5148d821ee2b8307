"""Request smuggling over real sockets: ambiguous framing is refused, nothing behind it runs."""

from __future__ import annotations

import socket
from typing import Any, Callable, Dict, List

import pytest
from helpers import raw_exchange, read_until_closed, wait_until

from wssync import App, Request

BAD_REQUESTS = {
    "cl-and-te": b"POST /count HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\n"
                 b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "te-in-http10": b"POST /count HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "chunked-not-last": b"POST /count HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n"
                        b"\r\n0\r\n\r\n",
    "chunked-twice": b"POST /count HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "te-vertical-tab": b"POST /count HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: \x0bchunked\r\n"
                       b"\r\n0\r\n\r\n",
    "te-comma-junk": b"POST /count HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, \r\n"
                     b"\r\n0\r\n\r\n",
    "cl-plus": b"POST /count HTTP/1.1\r\nHost: x\r\nContent-Length: +3\r\n\r\nabc",
    "cl-hex": b"POST /count HTTP/1.1\r\nHost: x\r\nContent-Length: 0x3\r\n\r\nabc",
    "cl-two-values": b"POST /count HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
                     b"Content-Length: 4\r\n\r\nabcd",
    "cl-list": b"POST /count HTTP/1.1\r\nHost: x\r\nContent-Length: 3, 4\r\n\r\nabcd",
    "cl-30-digits": b"POST /count HTTP/1.1\r\nHost: x\r\nContent-Length: " + b"1" * 30
                    + b"\r\n\r\n",
    "chunk-size-0x": b"POST /count HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"0x3\r\nabc\r\n0\r\n\r\n",
    "chunk-ext-lf": b"POST /count HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                    b"3;a\nb\r\nabc\r\n0\r\n\r\n",
    "chunk-no-crlf": b"POST /count HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"3\r\nabcX\r\n0\r\n\r\n",
    "bare-lf": b"GET /count HTTP/1.1\nHost: x\n\n",
    "obs-fold": b"GET /count HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n",
    "space-before-colon": b"GET /count HTTP/1.1\r\nHost : x\r\n\r\n",
    "space-before-first-header": b"GET /count HTTP/1.1\r\n Host: x\r\n\r\n",
    "two-hosts": b"GET /count HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    "no-host": b"GET /count HTTP/1.1\r\n\r\n",
    "nul-in-value": b"GET /count HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n",
}
NEXT = b"GET /count HTTP/1.1\r\nHost: x\r\n\r\n"


@pytest.fixture
def counted(start_server, threads: int):
    calls: List[str] = []
    app = App()

    @app.route("/count", methods=["GET", "POST"])
    def count(request: Request) -> str:
        calls.append(request.method)
        return "counted"

    server = start_server(app, threads=threads)
    return server.address[1], calls


@pytest.mark.parametrize("name", sorted(BAD_REQUESTS))
def test_ambiguous_request_is_refused_and_nothing_after_it_runs(counted, name: str) -> None:
    port, calls = counted
    reply = raw_exchange(port, BAD_REQUESTS[name] + NEXT)
    status = int(reply.split(b" ", 2)[1])
    assert status in (400, 501), reply[:80]
    assert reply.count(b"HTTP/1.1 ") == 1  # the pipelined request was never answered
    assert b"Connection: close" in reply
    assert calls == []  # no handler ran, neither for the bad request nor after it


def test_body_cut_off_after_last_chunk_runs_nothing(counted) -> None:
    port, calls = counted
    reply = raw_exchange(port, b"POST /count HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                           b"\r\n3\r\nabc\r\n0\r\n", half_close=True)
    assert b"200" not in reply
    assert calls == []


def test_unknown_transfer_coding_is_501(counted) -> None:
    port, calls = counted
    reply = raw_exchange(port, b"POST /count HTTP/1.1\r\nHost: x\r\n"
                               b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 501 ")
    assert calls == []


def test_bad_framing_inside_a_streamed_wsgi_body_runs_nothing_after_it(start_server,
                                                                       threads: int) -> None:
    # A WSGI application reads its body as it arrives, so it runs before the body's
    # framing is known to be sound; a broken chunk still ends the connection
    # there: the request hidden behind it is never parsed.
    paths: List[str] = []

    def wsgi(environ: Dict[str, Any], start_response: Callable[..., Any]) -> List[bytes]:
        paths.append(environ["PATH_INFO"])
        try:
            environ["wsgi.input"].read()
        except OSError:
            pass
        start_response("200 OK", [])
        return [b"read"]

    app = App()
    app.mount_wsgi(wsgi)
    port = start_server(app, threads=threads).address[1]
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"POST /first HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        assert wait_until(lambda: paths == ["/first"])  # it reads, and waits for the body
        sock.sendall(b"3\r\nabcX\r\n0\r\n\r\n" + NEXT.replace(b"/count", b"/hidden"))
        reply = read_until_closed(sock)
    assert reply.startswith(b"HTTP/1.1 400 ") and reply.count(b"HTTP/1.1 ") == 1
    assert b"Connection: close" in reply
    assert paths == ["/first"]
