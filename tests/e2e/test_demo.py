"""The demo app without a browser: the /live feed, the favicon, an offline page."""

from __future__ import annotations

import http.client
import json
import re
import threading
import time
from typing import Any, Callable, Dict, List

from helpers import wait_until
from websockets.sync.client import ClientConnection, connect

from wssync.demo import create_app

Snapshot = Dict[str, Any]


def next_snapshot(live: ClientConnection, predicate: Callable[[Snapshot], bool],
                  timeout: float = 10.0) -> Snapshot:
    """The first snapshot pushed on ``live`` that satisfies ``predicate``."""
    deadline = time.monotonic() + timeout
    seen: List[Snapshot] = []
    while time.monotonic() < deadline:
        message = json.loads(live.recv(timeout=max(0.01, deadline - time.monotonic())))
        if message["type"] == "snapshot":
            if predicate(message):
                return message
            seen.append(message)
    raise AssertionError(f"no matching snapshot in {timeout} s; last: {seen[-1:]}")


def websocket_ports(snapshot: Snapshot, path: str) -> List[int]:
    return [c["client_port"] for c in snapshot["connections"]
            if c["protocol"] == "websocket" and c.get("path") == path]


def live_threads() -> List[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "wssync-demo-live"]


def test_live_pushes_this_connection_and_each_new_websocket(start_server, threads: int) -> None:
    server = start_server(create_app(), threads=threads)
    port = server.address[1]
    with connect(f"ws://127.0.0.1:{port}/live", open_timeout=5) as live:
        my_port = live.local_address[1]
        first = next_snapshot(live, lambda s: my_port in websocket_ports(s, "/live"))
        assert first["listening"]["port"] == port
        mine = next(c for c in first["connections"] if c["client_port"] == my_port)
        assert mine["server_port"] == port and mine["transport"] == "tcp"
        assert first["websocket"] >= 1 and first["total"] == len(first["connections"])

        with connect(f"ws://127.0.0.1:{port}/ws", open_timeout=5) as echo:
            echo_port = echo.local_address[1]
            pushed = next_snapshot(live, lambda s: echo_port in websocket_ports(s, "/ws"))
            assert {c["server_port"] for c in pushed["connections"]} == {port}
            echo.send("still a pure echo")
            assert echo.recv(timeout=5) == "still a pure echo"
        next_snapshot(live, lambda s: echo_port not in websocket_ports(s, "/ws"))
    # The last /live client left: the pusher thread ends with the server still up.
    assert wait_until(lambda: not live_threads(), timeout=5)


def test_live_greets_with_the_client_port_and_ends_with_the_server(start_server) -> None:
    server = start_server(create_app())
    port = server.address[1]
    with connect(f"ws://127.0.0.1:{port}/live", open_timeout=5) as live:
        hello = None
        while hello is None:
            message = json.loads(live.recv(timeout=5))
            if message["type"] == "hello":
                hello = message
        assert hello["client_port"] == live.local_address[1]
        assert wait_until(lambda: len(live_threads()) == 1, timeout=5)
        server.stop(timeout=10)
        assert wait_until(lambda: not live_threads(), timeout=5)


def test_favicon_and_an_offline_page(start_server) -> None:
    server = start_server(create_app())
    conn = http.client.HTTPConnection("127.0.0.1", server.address[1], timeout=5)
    try:
        conn.request("GET", "/favicon.ico")
        response = conn.getresponse()
        assert response.status == 200
        assert response.getheader("Content-Type", "").startswith("image/svg+xml")
        assert response.read().startswith(b"<svg")
        conn.request("GET", "/")
        page = conn.getresponse().read().decode()
    finally:
        conn.close()
    # Nothing fetched from elsewhere: every src/href is inline data.
    references = re.findall(r'\b(?:src|href)="([^"]*)"', page)
    assert references and all(ref.startswith("data:") for ref in references)
    assert "<script src" not in page and "@import" not in page
