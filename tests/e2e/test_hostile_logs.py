"""Clients that cause log lines at will do not fill the log: bad PROXY protocol
headers by the hundred, malformed requests and WebSocket frames, and WebSocket
handshakes past ``max_blocking_websockets``.
Each kind is logged a few times in full, then once per 10 s with a count
(:mod:`wssync.io.ratelog`); every client still gets its answer.  (Stalled TLS
handshakes are in test_server_tls_hostile.py.)"""

from __future__ import annotations

import logging
import socket
import threading
from typing import List

import pytest
from helpers import handshake_bytes, http_exchange, read_until_closed, wait_until

from wssync import App

FLOOD = 200


def lines_with(caplog: pytest.LogCaptureFixture, logger: str, text: str) -> List[str]:
    return [r.getMessage() for r in caplog.records if r.name == logger and text in
            r.getMessage()]


def test_bad_proxy_headers_by_the_hundred_take_a_few_lines(start_server, threads: int,
                                                         caplog) -> None:
    caplog.set_level(logging.INFO, logger="wssync")
    app = App()
    app.route("/")(lambda request: "ok\n")
    server = start_server(app, threads, proxy_protocol=True)
    for _ in range(FLOOD):
        with socket.create_connection(("127.0.0.1", server.address[1]), timeout=10) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # no PROXY header first
            assert read_until_closed(sock, timeout=10) == b""  # closed, nothing said
    full = lines_with(caplog, "wssync.proxy", "; closing")
    # Five at most (fewer if an earlier test in this process began the interval).
    assert len(full) <= 5, full
    assert len(lines_with(caplog, "wssync.proxy", "")) <= 7


def test_blocking_websockets_refused_by_the_hundred_take_a_few_lines(
        start_server, threads: int, caplog) -> None:
    caplog.set_level(logging.INFO, logger="wssync")
    app = App()
    release = threading.Event()

    @app.websocket("/echo", blocking=True)
    def hold(ws) -> None:  # type: ignore[no-untyped-def]
        release.wait(10)

    server = start_server(app, threads, max_blocking_websockets=1)
    port = server.address[1]
    holder = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        holder.sendall(handshake_bytes("/echo"))
        assert holder.recv(12) == b"HTTP/1.1 101"
        statuses = [http_exchange(port, handshake_bytes("/echo"))[0] for _ in range(FLOOD)]
        assert statuses == [503] * FLOOD
    finally:
        release.set()
        holder.close()
    full = lines_with(caplog, "wssync.app", "max_blocking_websockets (1) reached; refusing "
                                            "/echo from ('127.0.0.1', ")
    assert len(full) == 5, full  # the burst; the rest are counted
    assert len(lines_with(caplog, "wssync.app", "max_blocking_websockets")) <= 7
    assert wait_until(lambda: server.connections() == [])


def test_malformed_requests_by_the_hundred_take_a_few_lines(start_server, threads: int,
                                                           caplog) -> None:
    caplog.set_level(logging.INFO, logger="wssync")
    app = App()
    app.route("/")(lambda request: "ok\n")
    server = start_server(app, threads)
    for _ in range(FLOOD):
        with socket.create_connection(("127.0.0.1", server.address[1]), timeout=10) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nBad Header: y\r\n\r\n")
            assert read_until_closed(sock, timeout=10).startswith(b"HTTP/1.1 400 ")
    lines = lines_with(caplog, "wssync.http", "")
    assert len(lines) <= 7, lines  # the burst (if this interval is new), then one summary


def test_websocket_protocol_errors_by_the_hundred_take_a_few_lines(start_server, threads: int,
                                                                  caplog) -> None:
    caplog.set_level(logging.INFO, logger="wssync")
    app = App()
    app.websocket("/echo")(lambda ws, message: ws.send(message))
    server = start_server(app, threads)
    for _ in range(FLOOD):
        with socket.create_connection(("127.0.0.1", server.address[1]), timeout=10) as sock:
            sock.sendall(handshake_bytes("/echo"))
            assert sock.recv(12) == b"HTTP/1.1 101"
            sock.sendall(b"\x81\x05hello")  # an unmasked client frame: 1002
            assert b"\x03\xea" in read_until_closed(sock, timeout=10)  # close 1002
    lines = lines_with(caplog, "wssync.websocket", "")
    assert len(lines) <= 7, lines
