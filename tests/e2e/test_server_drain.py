"""Drains that lose nothing, end to end: rolling restarts and stops under
keep-alive load, worker recycling (``--max-requests``), and the close codes
and spread of WebSockets when a worker is replaced.

The clients are real and independent (http.client, requests, the
``websockets`` library); the server is ``python -m wssync`` in its own
process, sent real signals.
"""

from __future__ import annotations

import http.client
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Set, Tuple

import pytest
import requests
from helpers import free_port, wait_until
from test_server_workers import APP, Cluster
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from wssync import App


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Callable[..., Cluster]]:
    """``python -m wssync --workers N ...``, stopped after the test."""
    started: List[Cluster] = []

    def start(workers: int, *extra: str) -> Cluster:
        c = Cluster(tmp_path, workers, *extra)
        started.append(c)
        return c

    yield start
    for c in started:
        c.close()


class KeepAliveLoad:
    """Clients that each send GETs one after another on one keep-alive
    connection (reconnecting only when an answer says ``Connection: close``),
    counting what they got: answers by the pid that served them, and every
    failure (a reset, a connection closed under a request, anything)."""

    def __init__(self, port: int, clients: int = 6, sessions: int = 1,
                 path: str = "/pid") -> None:
        self.port = port
        self.path = path
        self.served: List[Tuple[float, str]] = []  # (when, body)
        self.failures: List[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._http_client, daemon=True)
                         for _ in range(clients)]
        self._threads += [threading.Thread(target=self._session, daemon=True)
                          for _ in range(sessions)]

    def __enter__(self) -> KeepAliveLoad:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)

    def count(self) -> int:
        with self._lock:
            return len(self.served)

    def pids(self) -> Set[int]:
        with self._lock:
            return {int(body.split()[0]) for _, body in self.served}

    def _record(self, body: Optional[str], failure: Optional[str]) -> None:
        with self._lock:
            if failure is None:
                assert body is not None
                self.served.append((time.monotonic(), body))
            else:
                self.failures.append(failure)

    def _http_client(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=15)
        while not self._stop.is_set():
            try:
                conn.request("GET", self.path)
                response = conn.getresponse()
                body = response.read().decode()
                if response.status != 200:
                    self._record(None, f"status {response.status}")
                else:
                    self._record(body, None)
            except Exception as exc:  # every kind counts: the point is that none come
                self._record(None, repr(exc))
                conn.close()
        conn.close()

    def _session(self) -> None:
        with requests.Session() as session:
            url = f"http://127.0.0.1:{self.port}{self.path}"
            while not self._stop.is_set():
                try:
                    response = session.get(url, timeout=15)
                    if response.status_code != 200:
                        self._record(None, f"status {response.status_code}")
                    else:
                        self._record(response.text, None)
                except Exception as exc:
                    self._record(None, repr(exc))


@pytest.mark.slow
def test_rolling_restarts_under_keep_alive_load_lose_no_request(cluster: Any) -> None:
    """Five SIGHUPs of two workers while six http.client clients and a
    requests.Session send request after request on their connections: an idle
    connection of a retiring worker is kept for its next request, which is
    answered (with ``Connection: close``) before the worker goes."""
    c = cluster(2)
    c.wait_ready(2)
    with KeepAliveLoad(c.port) as load:
        assert wait_until(lambda: load.count() > 200, 20)
        for n in range(1, 6):
            before, seen = load.count(), load.pids()
            c.signal(signal.SIGHUP)
            assert wait_until(lambda n=n: c.log.count("rolling restart done") == n,
                              60, 0.05), c.log
            # Served throughout: during the restart and right after it.
            assert load.count() > before
            after = load.count()
            assert wait_until(lambda after=after: load.count() > after + 100, 20)
            # The round's new workers serve the connections the old ones closed.
            # (Not always both of them: the seven keep-alive clients reconnect
            # only when told to, and may all land on the same new worker.)
            assert load.pids() - seen, n
    assert load.failures == []
    assert load.count() > 1000


@pytest.mark.slow
def test_a_stop_answers_requests_in_flight_and_on_idle_keep_alive_connections(
        tmp_path: Path) -> None:
    """One process, SIGTERM: a request in flight is finished, and idle
    keep-alive connections that send a request during the drain are answered
    with ``Connection: close``; nothing is reset."""
    (tmp_path / "drainapp.py").write_text(APP)
    port = free_port()
    log = tmp_path / "server.log"
    with open(log, "w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "wssync", "--app", "drainapp:app", "--host", "127.0.0.1",
             "--port", str(port), "--threads", "4", "--no-access-log"],
            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=err)
    try:
        assert wait_until(lambda: _answers(port), 20, 0.05), log.read_text()
        idle = []
        for _ in range(3):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
            conn.request("GET", "/pid")
            assert conn.getresponse().read().decode().split()[0] == str(proc.pid)
            idle.append(conn)
        slow: List[str] = []
        in_flight = threading.Thread(target=lambda: slow.append(_get(port, "/slow?s=2")))
        in_flight.start()
        time.sleep(0.3)  # the slow request has reached its handler
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)  # draining now: the listener is closed
        answers = []
        for conn in idle:
            conn.request("GET", "/pid")
            response = conn.getresponse()
            answers.append((response.status, response.getheader("Connection"),
                            response.read().decode()))
        in_flight.join(15)
        assert slow == ["slow done"]
        assert answers == [(200, "close", f"{proc.pid} v1")] * 3
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def _get(port: int, path: str) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    try:
        conn.request("GET", path)
        return conn.getresponse().read().decode()
    finally:
        conn.close()


def _answers(port: int) -> bool:
    try:
        _get(port, "/pid")
    except OSError:
        return False
    return True


@pytest.mark.slow
def test_max_requests_recycles_workers_under_load_without_a_failed_request(
        cluster: Any) -> None:
    c = cluster(2, "--max-requests", "50", "--max-requests-jitter", "10")
    first = c.wait_ready(2)
    with KeepAliveLoad(c.port, clients=3) as load:
        # Each recycle starts the new worker first; watch the pids change.
        assert wait_until(lambda: len(load.pids() - first) >= 4, 90, 0.1), c.log
        assert wait_until(lambda: len(c.serving_pids()) == 2, 20, 0.1)
    assert load.failures == []
    assert "(max_requests" in c.log
    # One at a time: never more than one worker replaced at once.
    lines = [line for line in c.log.splitlines()
             if "replacing it" in line or ") stopped" in line]
    replacing = 0
    for line in lines:
        replacing += 1 if "replacing it" in line else -1
        assert replacing <= 1, lines


def _closes(sockets: List[ClientConnection]) -> List[Tuple[int, float]]:
    """Each socket's close code and when its close frame came."""
    out: List[Tuple[int, float]] = [(0, 0.0)] * len(sockets)

    def wait(n: int, ws: ClientConnection) -> None:
        try:
            while True:
                ws.recv(timeout=30)
        except ConnectionClosed as closed:
            code = closed.rcvd.code if closed.rcvd is not None else -1
            out[n] = (code, time.monotonic())
        except TimeoutError:
            out[n] = (-2, time.monotonic())

    threads = [threading.Thread(target=wait, args=(n, ws)) for n, ws in enumerate(sockets)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(40)
    return out


def _websockets(c: Any, count: int) -> Dict[int, List[ClientConnection]]:
    """``count`` WebSockets, by the pid of the worker that took each."""
    by_pid: Dict[int, List[ClientConnection]] = {}
    for _ in range(count):
        ws = c._stack.enter_context(connect(f"ws://127.0.0.1:{c.port}/chat",
                                            open_timeout=10))
        by_pid.setdefault(int(ws.recv(timeout=10).split()[1]), []).append(ws)
    return by_pid


@pytest.mark.slow
def test_a_rolling_restart_closes_websockets_with_1012_spread_over_the_window(
        cluster: Any) -> None:
    spread = 3.0
    c = cluster(2, "--close-spread", str(spread), "--shutdown-grace", "10")
    c.wait_ready(2)
    by_pid = _websockets(c, 40)
    sockets = [ws for group in by_pid.values() for ws in group]
    c.signal(signal.SIGHUP)
    closes = _closes(sockets)
    assert {code for code, _ in closes} == {1012}, closes
    # Per worker, the closes are spread over the window, not all in one moment.
    for group in by_pid.values():
        if len(group) < 8:
            continue
        when = sorted(t for (_, t), ws in zip(closes, sockets) if ws in group)
        assert when[-1] - when[0] >= spread / 3, when
        assert when[-1] - when[0] <= spread + 2, when
        buckets = {int((t - when[0]) / (spread / 6)) for t in when}
        assert len(buckets) >= 3, when
    assert wait_until(lambda: "rolling restart done" in c.log, 60, 0.1), c.log


def test_sighup_closes_websockets_with_1012_and_sigterm_with_1001(cluster: Any) -> None:
    c = cluster(2, "--close-spread", "0.5")
    old = sorted(c.wait_ready(2))
    sockets = [c.websocket_on(pid) for pid in old]
    c.signal(signal.SIGHUP)
    assert [code for code, _ in _closes(sockets)] == [1012, 1012]
    assert wait_until(lambda: "rolling restart done" in c.log, 60, 0.1), c.log
    new = sorted(c.wait_ready(2, without=set(old)))
    sockets = [c.websocket_on(pid) for pid in new]
    c.signal(signal.SIGTERM)
    assert [code for code, _ in _closes(sockets)] == [1001, 1001]
    assert c.proc.wait(30) == 0
    assert ("stopping 2 workers: waiting up to 10 s for their connections to finish; "
            "SIGTERM again to stop now") in c.log


def test_max_requests_without_workers_is_refused(tmp_path: Path) -> None:
    (tmp_path / "oneapp.py").write_text(APP)
    proc = subprocess.run(
        [sys.executable, "-m", "wssync", "--app", "oneapp:app", "--port", "0",
         "--max-requests", "100"], cwd=tmp_path, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert proc.stderr.startswith("wssync: error: max_requests replaces worker processes")


def test_a_websocket_opened_during_a_drain_is_closed_with_the_others(
        start_server: Any) -> None:
    """A WebSocket handshake on a keep-alive connection kept for the drain opens a
    WebSocket after the stop began: it is closed with 1001 too, not left open
    until ``shutdown_grace`` runs out."""
    app = App()
    release = threading.Event()

    @app.route("/hi")
    def hi(request: Any) -> str:
        return "hi"

    @app.route("/hold")
    def hold(request: Any) -> str:
        release.wait(30)  # keeps the drain going
        return "held"

    @app.websocket("/ws")
    def ws(sock: Any, message: Any) -> None:
        sock.send(message)

    server = start_server(app, threads=4, shutdown_grace=60)
    port = server.address[1]
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    raw.sendall(b"GET /hi HTTP/1.1\r\nHost: x\r\n\r\n")
    answer = b""
    while not answer.endswith(b"hi"):
        answer += raw.recv(4096)
    holding = threading.Thread(target=lambda: _get(port, "/hold"))
    holding.start()
    stopping = threading.Thread(target=server.stop)
    try:
        time.sleep(0.2)  # the hold request has reached its handler
        stopping.start()
        time.sleep(0.2)  # draining: the idle connection is kept
        with connect(f"ws://127.0.0.1:{port}/ws", sock=raw, open_timeout=10) as late, \
                pytest.raises(ConnectionClosed) as closed:
            late.recv(timeout=10)  # (the drain lasts up to 60 s)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
    finally:
        release.set()
        holding.join(15)
        stopping.join(15)


@pytest.mark.slow
def test_websocket_handshakes_count_toward_max_requests(cluster: Any) -> None:
    # A worker that only ever takes WebSockets is replaced too: each handshake
    # is a request, and an open WebSocket does not hold the replacement back.
    c = cluster(2, "--max-requests", "10", "--close-spread", "0.5")
    first = c.wait_ready(2)
    kept: List[ClientConnection] = []
    closes: List[int] = []
    for _ in range(30):  # 15 each, or near: more than 10 on at least one
        ws = c._stack.enter_context(connect(f"ws://127.0.0.1:{c.port}/chat",
                                            open_timeout=10))
        ws.recv(timeout=10)
        kept.append(ws)
    # (the supervisor reads the counts every second)
    assert wait_until(lambda: "replacing it" in c.log, 10, 0.1), c.log
    assert wait_until(lambda: c.serving_pids() - first, 30, 0.1)
    assert wait_until(lambda: ") stopped" in c.log, 30, 0.1), c.log  # the old one is gone
    for ws in kept:
        try:
            ws.recv(timeout=0.01)
        except ConnectionClosed as closed:
            closes.append(closed.rcvd.code if closed.rcvd is not None else -1)
        except TimeoutError:
            pass
    assert closes and set(closes) == {1012}, closes
