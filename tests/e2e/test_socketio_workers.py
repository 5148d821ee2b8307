"""Socket.IO under ``--workers 2``: every request of a session reaches the worker
that owns it (sticky sessions without a proxy), python-socketio's Redis manager
carries emits across workers unchanged, and a killed worker's clients come back."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import signal
import socket
import ssl
import threading
import time
import urllib.request
from typing import Any, Callable, Dict, Iterator, List, Optional, Set

import pytest
import requests
import socketio
from helpers import free_port, settled, wait_until
from test_server_workers import Cluster

APP = '''
import os
from flask import Flask
from flask_socketio import SocketIO

app = Flask(__name__)
socketio = SocketIO(app, message_queue=os.environ.get("SIO_MQ") or None)

@app.route("/pid")
def pid():
    return str(os.getpid())

@app.route("/broadcast")
def broadcast():
    socketio.emit("news", os.getpid())
    return "sent"

@socketio.on("echo")
def echo(data):
    return {"echo": data, "pid": os.getpid()}
'''


def _poll(port: int, method: str, query: str, body: bytes = b"",
          tls: Optional[ssl.SSLContext] = None) -> tuple:
    """One engine.io polling request on a connection of its own (over TLS with ``tls``)."""
    with contextlib.ExitStack() as stack:
        sock = stack.enter_context(socket.create_connection(("127.0.0.1", port), timeout=10))
        if tls is not None:
            sock = stack.enter_context(tls.wrap_socket(sock, server_hostname="localhost"))
        head = (f"{method} /socket.io/?EIO=4&transport=polling{query} HTTP/1.1\r\n"
                f"Host: 127.0.0.1:{port}\r\nContent-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n").encode()
        sock.sendall(head + body)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head_bytes, _, payload = data.partition(b"\r\n\r\n")
    return int(head_bytes.split()[1]), payload


def _metric(port: int, sample: str) -> float:
    """One sample of the supervisor's /metrics (the sum over workers, up to a
    second old: read until it stops changing)."""
    def read() -> float:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
            for line in answer.read().decode().splitlines():
                if line.startswith(sample + " "):
                    return float(line.split()[-1])
        return 0.0
    return float(settled(read, quiet=1.5, timeout=15))


def _some_passed(c: Cluster, request: Callable[[], Any]) -> None:
    """Some of the session's requests were passed to its owner, as the metrics
    count (new connections land on either worker: more requests until one did)."""
    for _ in range(10):
        passed = _metric(c.metrics_port, 'wssync_connections_passed_total{direction="out"}')
        if passed:
            assert passed == _metric(c.metrics_port,
                                     'wssync_connections_passed_total{direction="in"}')
            return
        for _ in range(10):
            assert request() == (200, b"OK")
    raise AssertionError("no request reached the worker that does not own the session")


def _session(port: int, tls: Optional[ssl.SSLContext] = None) -> str:
    status, payload = _poll(port, "GET", "", tls=tls)
    assert status == 200, payload
    sid = json.loads(payload[1:])["sid"]
    assert "." in sid  # the worker that owns it, then engine.io's own id
    return str(sid)


@pytest.fixture
def sio_cluster(tmp_path: Any) -> Iterator[Callable[..., Cluster]]:
    """``start(env)``: the Socket.IO app under ``--workers 2``, once both serve."""
    started: List[Cluster] = []

    def start(env: Optional[Dict[str, str]] = None, *extra: str) -> Cluster:
        env = env or {}
        os.environ.update(env)
        metrics_port = free_port()
        try:
            c = Cluster(tmp_path, 2, "--metrics", f"127.0.0.1:{metrics_port}", *extra, app=APP)
            c.metrics_port = metrics_port  # type: ignore[attr-defined]
        finally:
            for key in env:
                os.environ.pop(key, None)
        started.append(c)
        if "--certfile" not in extra:
            c.pids = _serving_pids(c)  # type: ignore[attr-defined]
        return c

    yield start
    for c in started:
        c.close()


def _serving_pids(c: Cluster, count: int = 2, without: Set[int] = frozenset()) -> Set[int]:  # type: ignore[assignment]
    """The pids of ``count`` serving workers, seen answering on new connections."""
    seen: Set[int] = set()

    def both() -> bool:
        if c.proc.poll() is not None:
            raise AssertionError(f"supervisor exited: {c.log}")
        try:
            pid = int(c.get("/pid", timeout=2))
        except OSError:
            return False
        if pid not in without:
            seen.add(pid)
        return len(seen) == count

    assert wait_until(both, 30, 0.05), (seen, c.log[-4000:])
    return seen


def test_polling_requests_on_new_connections_reach_the_worker_of_their_session(
        sio_cluster: Any) -> None:
    c = sio_cluster()
    sid = _session(c.port)
    statuses = [_poll(c.port, "POST", f"&sid={sid}", b"40")]  # joins the namespace
    for n in range(1, 12):  # each on a new connection: the kernel spreads them
        statuses.append(_poll(c.port, "POST", f"&sid={sid}", f'42{n}["echo",{n}]'.encode()))
    assert statuses == [(200, b"OK")] * 12
    # The answers wait for the session's next polls, wherever they land.
    answers = b""
    while answers.count(b'"echo"') < 11:
        status, payload = _poll(c.port, "GET", f"&sid={sid}")
        assert status == 200, payload
        answers += payload + b"\x1e"
    assert b"\x1e43" + b"11" + b'[{"echo":11' in answers, answers
    assert "Invalid session" not in c.log
    _some_passed(c, lambda: _poll(c.port, "POST", f"&sid={sid}", b"3"))


def test_a_body_that_arrives_after_the_head_is_passed_on_whole(sio_cluster: Any) -> None:
    c = sio_cluster()
    sid = _session(c.port)
    body = b'421["echo","late"]'
    for _ in range(6):
        with socket.create_connection(("127.0.0.1", c.port), timeout=10) as sock:
            sock.sendall((f"POST /socket.io/?EIO=4&transport=polling&sid={sid} HTTP/1.1\r\n"
                          f"Host: x\r\nContent-Length: {len(body)}\r\n"
                          "Connection: close\r\n\r\n").encode())
            time.sleep(0.05)  # the head is read (and passed on) before the body comes
            sock.sendall(body)
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        assert data.startswith(b"HTTP/1.1 200"), data
        assert data.endswith(b"OK"), data


def test_default_transport_clients_all_connect_and_upgrade(sio_cluster: Any) -> None:
    c = sio_cluster()
    results: List[Any] = []

    def client(i: int) -> None:
        sio = socketio.Client(reconnection=False)
        try:
            sio.connect(f"http://127.0.0.1:{c.port}", wait_timeout=10)
            answer = sio.call("echo", i, timeout=10)
            wait_until(lambda: sio.transport() == "websocket", 5)
            results.append((answer["echo"], sio.transport()))
        except Exception as exc:  # counted below
            results.append(repr(exc))
        finally:
            sio.disconnect()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(results, key=str) == sorted(((i, "websocket") for i in range(10)), key=str)
    assert "Invalid session" not in c.log


def _record(news: List[Any], n: int, data: Any) -> None:
    news.append((n, data))


def _clients_on_both(port: int, pids: Set[int], news: List[Any]) -> List[socketio.Client]:
    """Connect clients until each worker has one (websocket transport: no session
    requests to pass on), each recording the ``news`` it receives."""
    clients: List[socketio.Client] = []
    seen: Set[int] = set()
    for _ in range(60):
        sio = socketio.Client(reconnection=False)
        sio.on("news", functools.partial(_record, news, len(clients)))
        sio.connect(f"http://127.0.0.1:{port}", transports=["websocket"], wait_timeout=10)
        pid = sio.call("echo", 0, timeout=10)["pid"]
        if pid in seen:
            sio.disconnect()
            continue
        seen.add(pid)
        clients.append(sio)
        if seen == pids:
            return clients
    raise AssertionError("no client reached every worker")


def test_redis_message_queue_carries_emits_to_every_worker(sio_cluster: Any,
                                                           redis_server: Any) -> None:
    c = sio_cluster({"SIO_MQ": redis_server.url()})
    pids = c.pids
    news: List[Any] = []
    clients = _clients_on_both(c.port, pids, news)
    try:
        c.get("/broadcast")
        assert wait_until(lambda: len(news) == 2, 10), news
        assert {n for n, _ in news} == {0, 1}
    finally:
        for sio in clients:
            sio.disconnect()


def test_without_a_message_queue_an_emit_stays_in_its_worker(sio_cluster: Any) -> None:
    c = sio_cluster()
    news: List[Any] = []
    clients = _clients_on_both(c.port, c.pids, news)
    try:
        c.get("/broadcast")
        assert wait_until(lambda: len(news) >= 1, 10)
        time.sleep(0.5)
        assert len(news) == 1  # the other worker's client is not told: as documented
    finally:
        for sio in clients:
            sio.disconnect()


@pytest.mark.slow
def test_a_killed_worker_s_clients_reconnect_and_the_others_go_on(sio_cluster: Any) -> None:
    c = sio_cluster()
    pids = c.pids
    clients: Dict[int, socketio.Client] = {}
    for _ in range(60):
        sio = socketio.Client(reconnection_delay=0.2, reconnection_delay_max=0.5)
        sio.connect(f"http://127.0.0.1:{c.port}", wait_timeout=10)
        pid = sio.call("echo", 0, timeout=10)["pid"]
        if pid in clients:
            sio.disconnect()
            continue
        clients[pid] = sio
        if set(clients) == pids:
            break
    victim, survivor = sorted(clients)
    try:
        os.kill(victim, signal.SIGKILL)
        # The other worker's client did not notice.
        assert clients[survivor].call("echo", 1, timeout=5)["pid"] == survivor
        # The killed worker's client reconnects (to a worker that serves) and works.
        def answers() -> bool:
            try:
                return bool(clients[victim].call("echo", 2, timeout=2))
            except Exception:
                return False
        assert wait_until(answers, 30, 0.3)
        assert c.proc.poll() is None
        # Its replacement serves (new connections favour it: it has the fewest).
        _serving_pids(c, 1, without={victim, survivor})
    finally:
        for sio in clients.values():
            sio.disconnect()


def test_over_tls_a_request_for_another_worker_s_session_is_relayed_to_it(
        sio_cluster: Any, tls_files: Any) -> None:
    """A TLS connection cannot move (its keys stay where it was accepted): the
    owner gets the clear text over a local pair, relayed both ways."""
    c = sio_cluster(None, "--certfile", str(tls_files.cert), "--keyfile", str(tls_files.key))
    tls = ssl.create_default_context(cafile=str(tls_files.ca))

    def serving() -> bool:
        try:
            return _poll(c.port, "GET", "", tls=tls)[0] == 200
        except OSError:
            return False

    assert wait_until(serving, 30, 0.1), c.log
    sid = _session(c.port, tls)
    statuses = [_poll(c.port, "POST", f"&sid={sid}", b"40", tls)]
    for n in range(1, 10):
        statuses.append(_poll(c.port, "POST", f"&sid={sid}", f'42{n}["echo",{n}]'.encode(),
                              tls))
    assert statuses == [(200, b"OK")] * 10
    answers = b""
    while answers.count(b'"echo"') < 9:
        status, payload = _poll(c.port, "GET", f"&sid={sid}", tls=tls)
        assert status == 200, payload
        answers += payload
    _some_passed(c, lambda: _poll(c.port, "POST", f"&sid={sid}", b"3", tls))
    # Clients with the default transports: polling over TLS, then the upgrade (wss).
    http = requests.Session()
    http.verify = str(tls_files.ca)
    http.trust_env = False  # (REQUESTS_CA_BUNDLE would take the place of our CA)
    for n in range(4):
        sio = socketio.Client(reconnection=False, http_session=http)
        sio.connect(f"https://localhost:{c.port}", wait_timeout=10)
        try:
            assert sio.call("echo", n, timeout=10)["echo"] == n
            assert wait_until(lambda sio=sio: sio.transport() == "websocket", 5)
        finally:
            sio.disconnect()
    assert "Invalid session" not in c.log


def _open_files(supervisor: int) -> int:
    """Descriptors open in the supervisor's workers."""
    with open(f"/proc/{supervisor}/task/{supervisor}/children") as children:
        pids = children.read().split()
    return sum(len(os.listdir(f"/proc/{pid}/fd")) for pid in pids)


def test_a_tls_connection_naming_both_workers_in_turn_is_not_relayed_in_a_chain(
        sio_cluster: Any, tls_files: Any) -> None:
    """Requests on one TLS connection that name each worker in turn: the
    connection relayed to a worker is clear text there and moves on by
    descriptor, so no relay is stacked on a relay (descriptors stay flat)."""
    c = sio_cluster(None, "--certfile", str(tls_files.cert), "--keyfile", str(tls_files.key))
    tls = ssl.create_default_context(cafile=str(tls_files.ca))
    tokens: Set[str] = set()

    def both() -> bool:
        try:
            tokens.add(_session(c.port, tls).split(".")[0])
        except OSError:
            return False
        return len(tokens) == 2

    assert wait_until(both, 30, 0.05)
    first, second = sorted(tokens)
    before = _open_files(c.proc.pid)
    with socket.create_connection(("127.0.0.1", c.port), timeout=10) as raw, \
            tls.wrap_socket(raw, server_hostname="localhost") as sock:
        reader = sock.makefile("rb")
        for n in range(60):
            token = (first, second)[n % 2]
            sock.sendall((f"GET /socket.io/?EIO=4&transport=polling&sid={token}.gone "
                          f"HTTP/1.1\r\nHost: localhost\r\n\r\n").encode())
            status = reader.readline()
            assert status.startswith(b"HTTP/1.1 400"), status  # (no such session)
            length = 0
            while (line := reader.readline()) != b"\r\n":
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            assert b"Invalid session" in reader.read(length)
        during = _open_files(c.proc.pid)
    assert during - before < 10, (before, during)
