"""The engine.io upgrade from long-polling to WebSocket, step by step with a raw
client: a failed or abandoned upgrade leaves the session polling, a good one
moves it, and a WebSocket for an unknown session is closed with engine.io's word."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Dict, Iterator, Tuple

import pytest
from helpers import free_port, run_server, wait_listening
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

APP = '''
import os, time
from flask import Flask
from flask_socketio import SocketIO

app = Flask(__name__)
socketio = SocketIO(app, ping_interval=float(os.environ.get("PING", "25")),
                    ping_timeout=float(os.environ.get("PING", "20")),
                    monitor_clients=not os.environ.get("PING"))

@socketio.on("echo")
def echo(data):
    return data

@socketio.on("slow")
def slow(data):
    time.sleep(0.02)
'''


SERVERS: Dict[int, int] = {}  # port -> the pid of the server on it


@pytest.fixture
def port(tmp_path: Path) -> Iterator[int]:
    (tmp_path / "sioapp.py").write_text(APP)
    port = free_port()
    proc = run_server(["--app", "sioapp:app", "--host", "127.0.0.1", "--port", str(port)],
                      cwd=tmp_path)
    SERVERS[port] = proc.pid
    try:
        wait_listening(port, proc)
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


def poll(port: int, sid: str = "", body: bytes = b"") -> Tuple[int, bytes]:
    query = f"&sid={sid}" if sid else ""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall((f"{'POST' if body else 'GET'} /socket.io/?EIO=4&transport=polling{query} "
                      f"HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: {len(body)}\r\n"
                      "Connection: close\r\n\r\n").encode() + body)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, payload = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), payload


def polling_session(port: int) -> str:
    status, payload = poll(port)
    assert status == 200
    sid = str(json.loads(payload[1:])["sid"])
    assert poll(port, sid, b"40") == (200, b"OK")
    status, payload = poll(port, sid)
    assert status == 200 and payload.startswith(b"40{"), payload
    return sid


def ws_url(port: int, sid: str) -> str:
    return f"ws://127.0.0.1:{port}/socket.io/?EIO=4&transport=websocket&sid={sid}"


def still_polls(port: int, sid: str) -> None:
    """The session answers an event over polling (not NOOPs for an upgrade)."""
    assert poll(port, sid, b'421["echo","p"]') == (200, b"OK")
    status, payload = poll(port, sid)
    assert (status, payload) == (200, b'431["p"]'), payload


def test_an_upgrade_moves_the_session_onto_the_websocket(port: int) -> None:
    sid = polling_session(port)
    with connect(ws_url(port, sid)) as ws:
        ws.send("2probe")
        assert ws.recv(timeout=5) == "3probe"
        assert poll(port, sid) == (200, b"6")  # the pending poll ends with a NOOP
        ws.send("5")
        ws.send('422["echo","w"]')
        answer = ws.recv(timeout=5)
        if answer == "6":  # the upgrade's NOOP, if no poll took it (as engine.io's own)
            answer = ws.recv(timeout=5)
        assert answer == '432["w"]'
        status, payload = poll(port, sid)  # polling is over for this session
        assert status == 400, payload


def test_an_upgrade_abandoned_after_the_probe_leaves_the_session_polling(port: int) -> None:
    sid = polling_session(port)
    with connect(ws_url(port, sid)) as ws:
        ws.send("2probe")
        assert ws.recv(timeout=5) == "3probe"
    assert poll(port, sid) == (200, b"6")  # the NOOP sent for the upgrade
    time.sleep(0.2)  # the close reached the transport
    still_polls(port, sid)


def test_a_wrong_probe_closes_the_websocket_and_the_session_goes_on_polling(port: int) -> None:
    sid = polling_session(port)
    with connect(ws_url(port, sid)) as ws:
        ws.send("2hello")
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
    still_polls(port, sid)


def test_a_websocket_for_an_unknown_session_is_closed_with_engine_io_s_reason(port: int) -> None:
    with connect(ws_url(port, "nosuchsession")) as ws, \
            pytest.raises(ConnectionClosed) as closed:
        ws.recv(timeout=5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
    assert "Invalid session" in closed.value.rcvd.reason


def _threads(port: int) -> int:
    """The thread count of the server listening on ``port``."""
    with open(f"/proc/{SERVERS[port]}/status") as status:
        for line in status:
            if line.startswith("Threads:"):
                return int(line.split()[1])
    raise AssertionError("no thread count")


def test_polling_only_clients_wait_without_threads(port: int) -> None:
    """40 clients that never upgrade: each always has a poll waiting, and the
    server's WSGI app has 8 threads. Their waits hold none of them."""
    import socketio

    clients = []
    try:
        for _ in range(40):
            client = socketio.Client(reconnection=False)
            client.connect(f"http://127.0.0.1:{port}", transports=["polling"], wait_timeout=10)
            clients.append(client)
        time.sleep(0.5)  # every client's next poll is waiting now
        for n, client in enumerate(clients):
            assert client.call("echo", n, timeout=10) == n
        assert _threads(port) < 25  # not one per waiting poll
    finally:
        for client in clients:
            client.disconnect()


def test_a_flood_of_events_in_parallel_posts_does_not_wedge_the_threads(port: int) -> None:
    """12 POSTs of 16 events each, at once, for one session (more than the client's
    bound of events in flight, on 8 threads): all are answered, and so is the next
    client, where waiting for a free slot would have deadlocked every thread."""
    from concurrent.futures import ThreadPoolExecutor

    sid = polling_session(port)
    body = "\x1e".join(f'42["slow",{n}]' for n in range(16)).encode()
    with ThreadPoolExecutor(12) as posts:
        answers = list(posts.map(lambda _: poll(port, sid, body), range(12)))
    assert answers == [(200, b"OK")] * 12
    assert polling_session(port)  # a new session is served


def test_a_poll_that_gets_nothing_for_a_ping_cycle_is_refused_and_the_session_ends(
        tmp_path: Path) -> None:
    """Pings each second, and a client that never answers them: its parked poll
    gets the ping, the next poll gets nothing more (no pong, no next ping) and is
    answered 400 after a ping cycle, and the session is gone.  (engine.io's
    service task, which would close the session first, is off here.)"""
    (tmp_path / "sioapp.py").write_text(APP)
    port = free_port()
    proc = run_server(["--app", "sioapp:app", "--host", "127.0.0.1", "--port", str(port)],
                      cwd=tmp_path, env={**os.environ, "PING": "1"})
    try:
        wait_listening(port, proc)
        sid = polling_session(port)
        assert poll(port, sid) == (200, b"2")  # parked, then answered by the ping
        started = time.monotonic()
        status, _ = poll(port, sid)
        assert status == 400 and time.monotonic() - started >= 1.5
        assert poll(port, sid)[0] == 400  # (the session is no more)
    finally:
        proc.terminate()
        proc.wait(10)
