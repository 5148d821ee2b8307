"""``wssync.locust`` under real Locust: headless runs read back from their CSV files.

Each run is ``python -m locust --headless ... --csv`` in a subprocess (bounded in
time) against a real server: wssync on port 0, and the ``websockets`` library's
server (not wssync) in a thread.  The same locustfile runs against both.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import subprocess
import sys
import threading
import time
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple, Union

import pytest

# Only looked up, never imported here: importing Locust monkey-patches the whole process
# with gevent (every test after it would run on greenlets).  Locust runs in subprocesses.
if importlib.util.find_spec("locust") is None:
    pytest.skip("Locust is not installed (pip install 'wssync[load]')", allow_module_level=True)

from conftest import TlsFiles
from helpers import free_port
from websockets.http11 import Request as WsRequest
from websockets.http11 import Response as WsResponse
from websockets.sync.server import ServerConnection, serve

from wssync import App, Request, Response, WebSocket

FLAKY_AFTER = 3  # the server closes a /flaky connection instead of answering this message
SESSION = "s3cr3t"

# One locustfile for every server: each user class runs one user (fixed_count).
LOCUSTFILE = '''
import json, os, ssl, time
from locust import FastHttpUser, HttpUser, between, task
from wssync.locust import WebSocketMixin, WebSocketUser

CA = os.environ.get("TEST_CA")
CONTEXT = ssl.create_default_context(cafile=CA) if CA else None
ONLY = os.environ.get("ONLY_USERS", "").split(",")


def wanted(name):
    return ONLY == [""] or name in ONLY


class Echo(WebSocketUser):
    fixed_count = 1 if wanted("Echo") else 0
    wait_time = between(0.02, 0.05)
    ws_ssl_context = CONTEXT

    def on_start(self):
        self.ws = self.connect("/echo")

    @task
    def echo(self):
        assert self.ws.request("hi", name="echo") == "hi"
        self.ws.send("one way", name="send")
        assert self.ws.receive(name="receive") == "one way"
        with self.connect("/echo", name="per task") as ws:  # one per run, closed after
            ws.send("x")
        assert self.websockets == [self.ws]  # closed ones are not kept


class Flaky(WebSocketUser):
    fixed_count = 1 if wanted("Flaky") else 0
    wait_time = between(0.02, 0.05)

    def on_start(self):
        self.ws = self.connect("/flaky", name="flaky connect")

    @task
    def exchange(self):
        self.ws.request("ping", name="flaky")


class Pushed(WebSocketUser):
    fixed_count = 1 if wanted("Pushed") else 0
    wait_time = between(0.05, 0.1)

    def on_start(self):
        self.ws = self.connect("/push")
        self.ws.time_pushes("push", lambda message: json.loads(message).get("t"))

    @task
    def kick(self):
        self.ws.send("start")


class Matched(WebSocketUser):
    fixed_count = 1 if wanted("Matched") else 0
    wait_time = between(0.05, 0.1)

    def on_start(self):
        self.ws = self.connect("/push", name="/push matched")

    @task
    def third(self):
        # The reply wanted is the third message; the first two wait for receive(), in order.
        self.ws.request("start", name="third push",
                        match=lambda message: json.loads(message)["n"] == 2)
        assert [json.loads(self.ws.receive())["n"] for _ in range(2)] == [0, 1]
        assert self.ws.dropped == 0


class Login(WebSocketMixin, HttpUser):
    fixed_count = 1 if wanted("Login") else 0
    wait_time = between(0.02, 0.05)

    def on_start(self):
        self.client.headers["X-Tenant"] = "t1"
        self.client.get("/login")
        self.ws = self.connect("/private")
        # A second connection (both read while the user waits); its own header wins.
        self.other = self.connect("/private", name="/private override",
                                  headers=[("X-Tenant", "mine")])

    @task
    def whoami(self):
        reply = self.ws.request("whoami", name="whoami")
        assert reply == "hello s3cr3t t1 Upgrade", reply
        reply = self.other.request("whoami", name="whoami override")
        assert reply == "hello s3cr3t mine Upgrade", reply


class FastLogin(WebSocketMixin, FastHttpUser):
    fixed_count = 1 if wanted("FastLogin") else 0
    wait_time = between(0.02, 0.05)
    default_headers = {"X-Tenant": "t2"}

    def on_start(self):
        self.client.get("/login")
        self.ws = self.connect("/private", name="/private fast")

    @task
    def whoami(self):
        reply = self.ws.request("whoami", name="whoami fast")
        assert reply == "hello s3cr3t t2 Upgrade", reply


class Idle(WebSocketUser):
    fixed_count = 1 if wanted("Idle") else 0
    wait_time = between(1.5, 1.5)

    def on_start(self):
        self.ws = self.connect("/echo", name="/echo idle")
        self.other = self.connect("/echo", name="/echo idle")  # read in the same waits

    @task
    def now_and_then(self):
        for ws in (self.ws, self.other):
            assert ws.request("still there?", name="now and then") == "still there?"


class Anonymous(WebSocketUser):
    fixed_count = 1 if wanted("Anonymous") else 0
    wait_time = between(0.05, 0.1)

    def on_start(self):
        self.ws = self.connect("/private", name="/private anonymous")

    @task
    def whoami(self):
        self.ws.request("whoami", name="whoami anonymous")
'''

ALL_USERS = ["Echo", "Flaky", "Pushed", "Matched", "Login", "FastLogin", "Anonymous"]


def final_stats(out: Union[str, Path]) -> Dict[Tuple[str, str], Dict[str, str]]:
    """A finished run's rows by (type, name), with the stats CSV's columns, read from
    what ``--json-file <out>`` wrote at exit.  (The CSV is rewritten once a second
    and not again at exit: the last second's requests can be missing from it.)"""
    with open(f"{out}.json", encoding="utf-8") as f:
        entries = json.load(f)
    rows: Dict[Tuple[str, str], Dict[str, str]] = {}
    for entry in entries:
        count = entry["num_requests"]
        average = entry["total_response_time"] / count if count else 0.0
        rows[(entry["method"] or "", entry["name"])] = {
            "Type": entry["method"] or "", "Name": entry["name"],
            "Request Count": str(count), "Failure Count": str(entry["num_failures"]),
            "Average Response Time": str(average)}
    return rows


class Run:
    """What a finished Locust run left: exit status, output, its final rows, and the
    failures and exceptions CSV."""

    def __init__(self, out: Path, proc: subprocess.CompletedProcess[str]) -> None:
        self.returncode = proc.returncode
        self.output = proc.stdout + proc.stderr
        self.stats = final_stats(out)
        with open(f"{out}_failures.csv", newline="") as f:
            self.failures = list(csv.DictReader(f))
        with open(f"{out}_exceptions.csv", newline="") as f:
            self.exceptions = list(csv.DictReader(f))

    def row(self, name: str) -> Dict[str, str]:
        assert ("WS", name) in self.stats, f"no WS row {name!r} in {sorted(self.stats)}\n" \
                                           f"{self.output[-3000:]}"
        return self.stats[("WS", name)]

    def count(self, name: str) -> int:
        return int(self.row(name)["Request Count"])

    def failed(self, name: str) -> int:
        return int(self.row(name)["Failure Count"])

    def average(self, name: str) -> float:
        return float(self.row(name)["Average Response Time"])

    def errors(self, name: str) -> List[str]:
        return [r["Error"] for r in self.failures if r["Name"] == name]


def locust_command(locustfile: Path, host: str, users: int, seconds: int,
                   out: Union[str, Path]) -> List[str]:
    """A headless run that leaves what :class:`Run` reads under the prefix ``out``."""
    return [sys.executable, "-m", "locust", "-f", str(locustfile), "--host", host,
            "--headless", "-u", str(users), "-r", str(users), "-t", f"{seconds}s",
            "--stop-timeout", "2", "--only-summary", "--loglevel", "WARNING",
            "--csv", str(out), "--json-file", str(out)]


def run_locust(tmp_path: Path, host: str, users: List[str], seconds: int = 4,
               env: Optional[Dict[str, str]] = None) -> Run:
    locustfile = tmp_path / "locustfile.py"
    locustfile.write_text(LOCUSTFILE)
    out = tmp_path / "out"
    proc = subprocess.run(
        locust_command(locustfile, host, len(users), seconds, out),
        cwd=tmp_path, capture_output=True, text=True, timeout=seconds + 60,
        env={**_env(), "ONLY_USERS": ",".join(users), **(env or {})})
    return Run(out, proc)


def _env() -> Dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("LOCUST_")}


# -- the servers -----------------------------------------------------------------------


def wssync_app() -> App:
    app = App()

    @app.route("/login")
    def login(request: Request) -> Response:
        return Response("welcome\n", headers=[("Set-Cookie", f"session={SESSION}; Path=/")])

    @app.websocket("/echo")
    def echo(ws: WebSocket, message: Union[str, bytes]) -> None:
        ws.send(message)

    @app.websocket("/flaky")
    def flaky(ws: WebSocket, message: Union[str, bytes]) -> None:
        ws.data["seen"] = seen = ws.data.get("seen", 0) + 1
        if seen >= FLAKY_AFTER:
            ws.close(1011, "going down")
        else:
            ws.send(message)

    @app.websocket("/push")
    def push(ws: WebSocket, message: Union[str, bytes]) -> None:
        for n in range(3):
            ws.send(json.dumps({"t": time.time(), "n": n}))

    def check_session(ws: WebSocket) -> None:
        if session_of(ws.headers.get("cookie")) != SESSION:
            ws.close(4401, "log in first")

    @app.websocket("/private", on_connect=check_session)
    def private(ws: WebSocket, message: Union[str, bytes]) -> None:
        # Only the client's own Connection header (an HTTP session's keep-alive is not carried).
        connection = ",".join(ws.headers.get_all("connection"))
        ws.send(f"hello {session_of(ws.headers.get('cookie'))} {ws.headers.get('x-tenant')} "
                f"{connection}")

    return app


def session_of(header: Optional[str]) -> Optional[str]:
    cookie: SimpleCookie = SimpleCookie()
    cookie.load(header or "")
    morsel = cookie.get("session")
    return morsel.value if morsel is not None else None


@pytest.fixture
def websockets_server() -> Iterator[int]:
    """The websockets library's threaded server with the same routes; its port."""

    def process_request(connection: ServerConnection,
                        request: WsRequest) -> Optional[WsResponse]:
        if request.path == "/login":
            response = connection.respond(200, "welcome\n")
            response.headers["Set-Cookie"] = f"session={SESSION}; Path=/"
            return response
        if request.path == "/private" and \
                session_of(request.headers.get("Cookie")) != SESSION:
            return connection.respond(403, "log in first\n")
        return None

    def handler(ws: ServerConnection) -> None:
        assert ws.request is not None
        path, headers = ws.request.path, ws.request.headers
        for seen, message in enumerate(ws, 1):
            if path == "/flaky" and seen >= FLAKY_AFTER:
                ws.close(1011, "going down")
            elif path == "/push":
                for n in range(3):
                    ws.send(json.dumps({"t": time.time(), "n": n}))
            elif path == "/private":
                ws.send(f"hello {session_of(headers.get('Cookie'))} {headers.get('X-Tenant')} "
                        f"{','.join(headers.get_all('Connection'))}")
            else:
                ws.send(message)

    server = serve(handler, "127.0.0.1", 0, process_request=process_request)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.socket.getsockname()[1]
    finally:
        server.shutdown()
        thread.join(10)


# -- the checks ----------------------------------------------------------------------------


def check_common(run: Run, users: int) -> None:
    """What both servers must show: rows, counts, real times, failures as rows only."""
    assert run.exceptions == [], run.exceptions  # no traceback reached Locust
    assert "Traceback" not in run.output, run.output[run.output.find("Traceback") - 500:]
    # Failures only where the servers make them.
    expected = {"flaky", "whoami anonymous", "/private anonymous"}
    assert {r["Name"] for r in run.failures} <= expected, run.failures
    # Connect rows: one per user at least, with the handshake's time.
    assert run.count("/echo") == 1 and run.failed("/echo") == 0
    assert run.average("/echo") > 0
    for name in ("echo", "send", "receive"):
        assert run.count(name) >= 5 and run.failed(name) == 0, name
        assert run.average(name) > 0, name
    assert run.count("echo") == run.count("receive")
    # The flaky server: failures counted, each followed by a reconnect; the user lives on.
    assert run.failed("flaky") >= 2
    assert run.count("flaky connect") >= run.failed("flaky")  # reconnected each time
    assert run.count("flaky") - run.failed("flaky") >= 2 * (FLAKY_AFTER - 1)
    assert all("going down" in error for error in run.errors("flaky")), run.failures
    # Pushes timed from the timestamp the app put in them.
    assert run.count("push") >= 6 and run.failed("push") == 0 and run.average("push") > 0
    # A reply picked by match; the messages before it kept for receive().
    assert run.count("third push") >= 5 and run.failed("third push") == 0
    # Cookies (and headers) of the HTTP session reached the handshake.
    for name in ("whoami", "whoami fast", "whoami override"):
        assert run.count(name) >= 5 and run.failed(name) == 0, name
        assert run.average(name) > 0


def test_against_wssync(start_server: Callable[..., Any], tmp_path: Path) -> None:
    server = start_server(wssync_app())
    run = run_locust(tmp_path, f"http://127.0.0.1:{server.port}", ALL_USERS)
    check_common(run, len(ALL_USERS))
    # Without the cookie the route closes the connection: each request fails.
    assert run.failed("whoami anonymous") >= 2
    assert all("4401 log in first" in e for e in run.errors("whoami anonymous")), run.failures
    assert run.returncode == 1  # Locust's exit status on failures


def test_against_the_websockets_library(websockets_server: int, tmp_path: Path) -> None:
    run = run_locust(tmp_path, f"http://127.0.0.1:{websockets_server}", ALL_USERS)
    check_common(run, len(ALL_USERS))
    # Without the cookie the handshake is refused: connect rows fail, with the reason.
    assert run.failed("/private anonymous") >= 2
    assert run.count("/private anonymous") == run.failed("/private anonymous")
    assert all("403" in e and "log in first" in e for e in run.errors("/private anonymous")), \
        run.failures


def test_wss_with_a_private_ca(start_server: Callable[..., Any], tmp_path: Path,
                               tls_files: TlsFiles) -> None:
    server = start_server(wssync_app(), ssl_context=tls_files.server_context())
    host = f"https://localhost:{server.port}"
    run = run_locust(tmp_path, host, ["Echo"], env={"TEST_CA": str(tls_files.ca)})
    assert run.returncode == 0, run.output[-3000:]
    assert run.count("/echo") == 1 and run.failed("/echo") == 0
    assert run.count("echo") >= 5 and run.failed("echo") == 0 and run.average("echo") > 0
    # Without the CA: the handshake fails on every task, a failure row, never a traceback.
    (tmp_path / "second").mkdir()
    run = run_locust(tmp_path / "second", host, ["Echo"], seconds=2)
    assert run.exceptions == [] and "Traceback" not in run.output
    assert run.count("/echo") >= 2 and run.failed("/echo") == run.count("/echo")
    assert all("is not trusted" in e for e in run.errors("/echo")), run.failures
    assert ("WS", "echo") not in run.stats  # no exchange was attempted


def test_an_unreachable_server_is_failure_rows(tmp_path: Path) -> None:
    run = run_locust(tmp_path, f"http://127.0.0.1:{free_port()}", ["Echo"], seconds=2)
    assert run.exceptions == [] and "Traceback" not in run.output
    assert run.count("/echo") >= 2 and run.failed("/echo") == run.count("/echo")


def test_an_idle_user_answers_the_servers_pings(start_server: Callable[..., Any],
                                               tmp_path: Path) -> None:
    # The server pings every 0.3 s and closes a connection whose pong is 0.3 s late;
    # the user waits 1.5 s between its tasks, reading (and answering) meanwhile.
    server = start_server(wssync_app(), ping_interval=0.3, ping_timeout=0.3)
    run = run_locust(tmp_path, f"http://127.0.0.1:{server.port}", ["Idle"], seconds=5)
    assert run.returncode == 0, run.output[-3000:]
    assert run.count("/echo idle") == 2  # never closed, never reconnected
    assert run.count("now and then") >= 6 and run.failed("now and then") == 0


def test_the_module_and_what_importing_wssync_leaves_alone() -> None:
    # In subprocesses: importing Locust monkey-patches the whole process with gevent.
    code = "import sys, wssync, wssync.client; assert 'locust' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    code = ("import wssync.locust as m, locust.exception as e; "
            "assert set(m.__all__) == {'LocustWebSocket', 'WebSocketFailure', "
            "'WebSocketMixin', 'WebSocketUser'}; "
            "assert issubclass(m.WebSocketFailure, e.RescheduleTask); "
            "assert m.WebSocketUser.abstract")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


@pytest.mark.slow
def test_distributed_run(start_server: Callable[..., Any], tmp_path: Path) -> None:
    server = start_server(wssync_app())
    locustfile = tmp_path / "locustfile.py"
    locustfile.write_text(LOCUSTFILE)
    port = free_port()
    env = {**_env(), "ONLY_USERS": "Echo,Pushed"}
    out = tmp_path / "dist"
    master = subprocess.Popen(
        [*locust_command(locustfile, f"http://127.0.0.1:{server.port}", 2, 5, out), "--master",
         "--expect-workers", "1", "--master-bind-host", "127.0.0.1",
         "--master-bind-port", str(port)],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    worker = subprocess.Popen(
        [sys.executable, "-m", "locust", "-f", str(locustfile), "--worker",
         "--master-host", "127.0.0.1", "--master-port", str(port), "--loglevel", "WARNING"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        master_out, _ = master.communicate(timeout=90)
        worker_out, _ = worker.communicate(timeout=30)
    finally:
        for proc in (master, worker):
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert master.returncode == 0, master_out[-3000:]
    run = Run(out, subprocess.CompletedProcess([], 0, master_out, ""))
    assert run.exceptions == [] and "Traceback" not in master_out + worker_out
    assert run.count("/echo") == 1 and run.count("/push") == 1
    assert run.count("echo") >= 5 and run.failed("echo") == 0 and run.average("echo") > 0
    assert run.count("push") >= 6 and run.average("push") > 0
