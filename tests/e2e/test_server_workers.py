"""``--workers N`` end to end: a supervisor and its worker processes, real
clients, real signals (SIGKILL, SIGTERM, SIGHUP)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path
from typing import Any, Dict, Iterator, List, Set, Tuple

import pytest
from helpers import free_port, wait_until
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

APP = '''
import os, time
from wssync import App, Response

app = App()
VERSION = "v1"

@app.route("/pid")
def pid(request):
    return f"{os.getpid()} {VERSION}"

@app.route("/slow")
def slow(request):
    time.sleep(float(request.arg("s") or "1"))
    return "slow done"

@app.route("/stats")
def stats(request):
    return Response.json(app.server.stats())

@app.route("/broadcast")
def broadcast(request):
    for n in range(int(request.arg("n") or "1")):
        app.server.broadcast(f"{request.arg('m')} {n}", path=request.arg("path"))
    return "sent"

@app.websocket("/chat", on_connect=lambda ws: ws.send(f"pid {os.getpid()}"))
def chat(ws, message):
    ws.send(message)

@app.websocket("/other", on_connect=lambda ws: ws.send(f"pid {os.getpid()}"))
def other(ws, message):
    pass
'''


class Cluster:
    """``python -m wssync --workers N`` on a free port, its log in a file."""

    def __init__(self, tmp_path: Path, workers: int, *extra: str, app: str = APP) -> None:
        self.dir = tmp_path
        (tmp_path / "clusterapp.py").write_text(app)
        self.log_path = tmp_path / "server.log"
        self.port = free_port()
        self._stack = contextlib.ExitStack()  # the log file and every client
        self._log = self._stack.enter_context(
            open(self.log_path, "w"))  # noqa: SIM115 (the stack closes it)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "wssync", "--app", "clusterapp:app", "--host", "127.0.0.1",
             "--port", str(self.port), "--workers", str(workers), "--no-access-log", *extra],
            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=self._log,
            start_new_session=True)  # its own process group: teardown kills every worker

    @property
    def log(self) -> str:
        return self.log_path.read_text()

    def get(self, path: str, timeout: float = 10) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}",
                                    timeout=timeout) as response:
            return str(response.read().decode())

    def stats(self) -> Dict[str, Any]:
        return dict(json.loads(self.get("/stats")))

    def serving_pids(self) -> Set[int]:
        """The workers the supervisor counts as serving (its table, via any worker)."""
        cluster = self.stats()["cluster"] or {"workers": []}
        return {w["pid"] for w in cluster["workers"] if w["serving"] and w["ready"]}

    def wait_ready(self, count: int, timeout: float = 20,
                   without: Set[int] = frozenset()) -> Set[int]:  # type: ignore[assignment]
        """Wait until ``count`` workers serve, none of them in ``without`` (the
        supervisor's table is up to a second old)."""
        pids: Set[int] = set()

        def ready() -> bool:
            nonlocal pids
            if self.proc.poll() is not None:
                raise AssertionError(f"supervisor exited: {self.log}")
            try:
                pids = self.serving_pids()
            except OSError:
                return False
            return len(pids) == count and not pids & without

        assert wait_until(ready, timeout, 0.1), self.log
        return pids

    def websocket_on(self, pid: int, path: str = "/chat") -> ClientConnection:
        """A WebSocket served by worker ``pid`` (new connections land where the
        kernel puts them: open until one lands there)."""
        for _ in range(200):
            ws = self._stack.enter_context(connect(f"ws://127.0.0.1:{self.port}{path}",
                                                   open_timeout=10))
            if ws.recv(timeout=10) == f"pid {pid}":
                return ws
            ws.close()
        raise AssertionError(f"no connection reached worker {pid}")

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(10)
        self._stack.close()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Any]:
    started: List[Cluster] = []

    def start(workers: int = 2, *extra: str, app: str = APP) -> Cluster:
        c = Cluster(tmp_path, workers, *extra, app=app)
        started.append(c)
        return c

    yield start
    for c in started:
        c.close()


def test_every_worker_serves_the_one_port_and_stats_say_which(cluster: Any) -> None:
    c = cluster(2)
    pids = c.wait_ready(2)
    seen: Set[int] = set()
    for _ in range(200):  # new connections each: the kernel spreads them
        seen.add(int(c.get("/pid").split()[0]))
        if seen == pids:
            break
    assert seen == pids
    stats = c.stats()
    assert stats["pid"] in pids and stats["worker"] in (0, 1)
    assert stats["connections"] >= 1 and stats["http"] >= 1
    cluster_view = stats["cluster"]
    assert cluster_view["supervisor"] == c.proc.pid
    assert sorted(w["worker"] for w in cluster_view["workers"]) == [0, 1]
    assert all("connections" in w and "websocket" in w for w in cluster_view["workers"])


def test_connections_arriving_one_at_a_time_spread_over_the_workers(cluster: Any) -> None:
    # All workers wait on one socket and an idle machine wakes mostly the same
    # one first: without balancing, nine in ten land there.
    c = cluster(2)
    pids = c.wait_ready(2)
    landed = {pid: 0 for pid in pids}
    with contextlib.ExitStack() as stack:
        for _ in range(100):
            ws = stack.enter_context(connect(f"ws://127.0.0.1:{c.port}/chat"))
            landed[int(ws.recv(timeout=10).split()[1])] += 1
        assert min(landed.values()) >= 25, landed


def test_workers_zero_means_one_per_cpu(cluster: Any) -> None:
    c = cluster(0)
    assert len(c.wait_ready(len(os.sched_getaffinity(0)))) == len(os.sched_getaffinity(0))


def test_a_broadcast_reaches_every_worker_in_order(cluster: Any) -> None:
    c = cluster(2, "--threads", "2")
    a, b = sorted(c.wait_ready(2))
    on_a, on_b = c.websocket_on(a), c.websocket_on(b)
    elsewhere = c.websocket_on(b, "/other")
    try:
        assert c.get("/broadcast?m=chat&n=100&path=/chat") == "sent"
        expected = [f"chat {n}" for n in range(100)]
        assert [on_a.recv(timeout=10) for _ in range(100)] == expected
        assert [on_b.recv(timeout=10) for _ in range(100)] == expected
        # path= filters on every worker: /other got none of them, only the next.
        assert c.get("/broadcast?m=all") == "sent"
        assert elsewhere.recv(timeout=10) == "all 0"
        assert on_a.recv(timeout=10) == on_b.recv(timeout=10) == "all 0"
    finally:
        for ws in (on_a, on_b, elsewhere):
            ws.close()
    # The supervisor's table is at most a second old.
    assert wait_until(lambda: c.stats()["cluster"]["relayed"] >= 101, 10, 0.1)


def test_a_killed_worker_is_restarted_and_the_others_keep_their_connections(
        cluster: Any) -> None:
    c = cluster(2)
    victim, survivor = sorted(c.wait_ready(2))
    doomed = c.websocket_on(victim)
    kept = c.websocket_on(survivor)
    try:
        os.kill(victim, signal.SIGKILL)
        with pytest.raises(ConnectionClosed):
            doomed.recv(timeout=10)
        kept.send("still here")
        assert kept.recv(timeout=10) == "still here"
        pids = c.wait_ready(2, without={victim})
        assert survivor in pids
        kept.send("after the restart")
        assert kept.recv(timeout=10) == "after the restart"
    finally:
        doomed.close()
        kept.close()
    assert re.search(rf"worker \d \(pid {victim}\) killed by SIGKILL", c.log)
    restarted = [w for w in c.stats()["cluster"]["workers"] if w["pid"] not in (victim,
                                                                                 survivor)]
    assert restarted and restarted[0]["restarts"] == 1


CRASHING_APP = APP + '''
import pathlib
if pathlib.Path("crash").exists():
    raise RuntimeError("cannot start today")
'''


def test_a_worker_that_dies_at_start_up_is_restarted_with_a_growing_delay(
        cluster: Any) -> None:
    c = cluster(2, app=CRASHING_APP)
    victim, survivor = sorted(c.wait_ready(2))
    (c.dir / "crash").write_text("")
    os.kill(victim, signal.SIGKILL)
    delays: List[float] = []

    def backing_off() -> bool:
        delays[:] = [float(d) for d in re.findall(r"restarting it in ([0-9.]+) s", c.log)]
        return len(delays) >= 3

    assert wait_until(backing_off, 30, 0.1), c.log
    assert delays[:3] == [0.5, 1.0, 2.0]
    assert "cannot start today" in c.log
    assert c.get("/pid").split()[0] == str(survivor)  # the survivor serves meanwhile
    (c.dir / "crash").unlink()
    assert survivor in c.wait_ready(2, timeout=30)


def test_an_app_that_cannot_load_is_a_readable_error(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "wssync", "--app", "no_such_module:app", "--port", "0",
         "--workers", "2"], cwd=tmp_path, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert "wssync: error: cannot import 'no_such_module'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_sigterm_drains_every_worker(cluster: Any) -> None:
    c = cluster(2, "--threads", "2")
    pids = sorted(c.wait_ready(2))
    sockets = [c.websocket_on(pid) for pid in pids]
    answers: List[str] = []
    slow = [threading.Thread(target=lambda: answers.append(c.get("/slow?s=3")))
            for _ in range(4)]
    for thread in slow:
        thread.start()
    # All four in flight (the table is up to a second old; each takes three).
    assert wait_until(lambda: sum(w["http"] for w in c.stats()["cluster"]["workers"]) >= 4,
                      10, 0.05)
    c.signal(signal.SIGTERM)
    for ws in sockets:
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                ws.recv(timeout=10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
    for thread in slow:
        thread.join(15)
    assert answers == ["slow done"] * 4  # in-flight requests completed
    assert c.proc.wait(30) == 0
    assert "supervisor stopped" in c.log


def test_sighup_restarts_every_worker_without_refusing_anyone(cluster: Any) -> None:
    c = cluster(2, "--threads", "2")
    old = c.wait_ready(2)
    stop = threading.Event()
    results: List[Tuple[str, str]] = []

    def hammer() -> None:
        while not stop.is_set():
            try:
                results.append(("ok", c.get("/pid", timeout=10)))
            except OSError as exc:
                results.append(("error", repr(exc)))

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        assert wait_until(lambda: len(results) > 50, 10)
        # New code goes live with the rolling restart: the workers load the app anew.
        (c.dir / "clusterapp.py").write_text(APP.replace('"v1"', '"v2"'))
        c.signal(signal.SIGHUP)
        assert wait_until(lambda: "rolling restart done" in c.log, 60, 0.1), c.log
        new = c.wait_ready(2, without=old)
        before_end = len(results)
        assert wait_until(lambda: len(results) > before_end + 50, 10)
    finally:
        stop.set()
        for thread in threads:
            thread.join(15)
    errors = [detail for kind, detail in results if kind == "error"]
    assert errors == []
    assert not new & old
    served_by = {answer for kind, answer in results if kind == "ok"}
    assert {f"{pid} v1" for pid in old} <= served_by
    assert {f"{pid} v2" for pid in new} <= served_by


def test_a_rolling_restart_with_broken_code_keeps_the_old_workers(cluster: Any) -> None:
    c = cluster(2)
    old = c.wait_ready(2)
    (c.dir / "clusterapp.py").write_text("this is not python\n")
    for cached in (c.dir / "__pycache__").glob("*"):
        cached.unlink()
    c.signal(signal.SIGHUP)
    assert wait_until(lambda: "rolling restart abandoned" in c.log, 30, 0.1), c.log
    assert c.serving_pids() == old
    assert c.get("/pid").endswith("v1")


def test_the_supervisor_gone_the_workers_stop(cluster: Any) -> None:
    c = cluster(2)
    pids = c.wait_ready(2)
    os.kill(c.proc.pid, signal.SIGKILL)
    c.proc.wait(10)

    def gone(pid: int) -> bool:
        # Exited: no process, or a zombie its new parent has not reaped yet.
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except FileNotFoundError:
            return True
        return "\nState:\tZ" in status

    assert wait_until(lambda: all(gone(pid) for pid in pids), 20, 0.1)


def test_start_refuses_workers() -> None:
    from wssync import App, Server

    with pytest.raises(RuntimeError, match="serve_forever"):
        Server(App(), host="127.0.0.1", port=0, workers=2).start()


def test_negative_workers_are_refused(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "wssync", "--workers", "-1", "--port", "0"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert "wssync: error: workers must be 0 (one per CPU) or more" in proc.stderr


def test_workers_and_another_host_share_broadcasts_through_redis(
        cluster: Any, redis_server: Any, start_server: Any) -> None:
    # Every worker subscribes itself: Redis reaches them all, and the server on
    # "another host" too; the relay then only carries statistics.
    from wssync import App

    c = cluster(2, "--broker", redis_server.url("workers"))
    a, b = sorted(c.wait_ready(2))
    other_app = App()
    other_app.websocket("/chat")(lambda ws, message: None)
    other = start_server(other_app, broker=redis_server.url("workers"))
    with contextlib.ExitStack() as stack:
        on_a, on_b = c.websocket_on(a), c.websocket_on(b)
        far = stack.enter_context(connect(f"ws://127.0.0.1:{other.port}/chat"))
        assert wait_until(lambda: len(other.websockets) == 1)
        assert c.stats()["broker"]["broker"] == "redis"
        # Subscriptions complete asynchronously: probe until every client hears.
        unheard = [on_a, on_b, far]
        assert wait_until(lambda: _probe(c, unheard), 20, 0.2)
        for ws in (on_a, on_b, far):
            _drain(ws)
        assert c.get("/broadcast?m=news&n=50&path=/chat") == "sent"
        expected = [f"news {n}" for n in range(50)]
        for ws in (on_a, on_b, far):
            assert [ws.recv(timeout=10) for _ in range(50)] == expected
        other.broadcast("from afar", path="/chat")
        assert on_a.recv(timeout=10) == on_b.recv(timeout=10) == "from afar"


def _probe(c: Cluster, unheard: List[ClientConnection]) -> bool:
    """Broadcast a probe; drop from ``unheard`` every client that hears one."""
    c.get("/broadcast?m=probe")
    for ws in list(unheard):
        try:
            while not ws.recv(timeout=0.2).startswith("probe"):
                pass
            unheard.remove(ws)
        except TimeoutError:
            pass
    return not unheard


def _drain(ws: ClientConnection) -> None:
    try:
        while True:
            ws.recv(timeout=0.3)
    except TimeoutError:
        pass
