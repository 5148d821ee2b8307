"""A worker's admission of new connections: the refusal past ``max_connections``
and its log lines, on real sockets."""

from __future__ import annotations

import logging
import socket
from typing import List

import pytest

from wssync.io.ratelog import RateLimitedLog
from wssync.scale import worker
from wssync.scale.worker import Admission


def test_a_flood_over_max_connections_logs_a_few_lines_then_a_count(
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    caplog.set_level(logging.WARNING, logger="wssync.server")
    # A log of its own, fresh (no earlier test's events), one interval for the flood.
    refused = RateLimitedLog(logging.getLogger("wssync.server"), logging.WARNING,
                             "connections refused at max_connections", interval=3600)
    monkeypatch.setattr(worker, "_REFUSED", refused)
    admission = Admission([], 10, lambda: 1, 1, lambda: b"HTTP/1.1 503 busy\r\n\r\n")
    listener = socket.create_server(("127.0.0.1", 0))
    clients: List[socket.socket] = []
    try:
        for _ in range(200):
            client = socket.create_connection(listener.getsockname())
            clients.append(client)
            accepted, _ = listener.accept()
            admission.refuse(accepted)
            assert client.recv(100) == b"HTTP/1.1 503 busy\r\n\r\n"
    finally:
        for client in clients:
            client.close()
        listener.close()
    lines = [r.getMessage() for r in caplog.records if "max_connections (1)" in r.getMessage()]
    assert len(lines) == refused.burst, lines  # then only counted, for the summary
    assert all("refusing ('127.0.0.1', " in line for line in lines)
