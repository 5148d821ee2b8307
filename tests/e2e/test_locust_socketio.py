"""``wssync.locust_socketio`` under real Locust, against an unchanged Flask-SocketIO app.

Each run is ``python -m locust --headless ... --csv`` in a subprocess (bounded in
time), read back from its CSV files.  The app is served by wssync
(``python -m wssync --app``) and, as a server that is not wssync, by Flask-SocketIO's
own ``socketio.run`` (werkzeug with simple-websocket, threading mode).
"""

from __future__ import annotations

import contextlib
import importlib.util
import subprocess
import sys
from pathlib import Path
from typing import Iterator, List, Optional

import pytest

if importlib.util.find_spec("locust") is None or importlib.util.find_spec("flask_socketio") is None:
    pytest.skip("needs Locust and Flask-SocketIO (pip install 'wssync[load,test]')",
                allow_module_level=True)

from helpers import free_port, run_server, wait_listening
from test_locust import Run, _env, locust_command

# The application, as its authors write it: nothing of wssync in it.
APP = '''
import os
from flask import Flask, make_response, request
from flask_socketio import ConnectionRefusedError, SocketIO, disconnect, emit

app = Flask(__name__)
PING = float(os.environ.get("SIO_PING", "25"))
socketio = SocketIO(app, ping_interval=PING, ping_timeout=PING)


@app.route("/login")
def login():
    response = make_response("welcome\\n")
    response.set_cookie("session", "s3cr3t")
    return response


@socketio.on("connect")
def connect(auth):
    if (auth or {}).get("token") != "good":
        raise ConnectionRefusedError("bad token")


@socketio.on("echo")
def echo(*args):
    return args


@socketio.on("whoami")
def whoami():
    return [request.cookies.get("session"), request.headers.get("X-Tenant")]


@socketio.on("push")
def push(count):
    for n in range(count):
        emit("pushed", n)


@socketio.on("slow")
def slow():
    socketio.sleep(0.4)
    return "late"  # after the client gave up: an ack no call may take for its own


@socketio.on("blob")
def blob():
    emit("blob", b"\\x00\\x01")  # binary attachments, both ways
    return b"\\x02"


@socketio.on("kick")
def kick():
    disconnect()


@socketio.on("ask")
def ask(number):
    # A call to the client while this event's ack waits: the client's handler answers.
    return socketio.call("question", number, to=request.sid, timeout=5)


@socketio.on("connect", namespace="/chat")
def chat_connect(auth):
    pass


@socketio.on("echo", namespace="/chat")
def chat_echo(*args):
    return ("chat", *args)
'''

# Each user class runs one user (fixed_count) when ONLY_USERS names it.
LOCUSTFILE = '''
import os
from locust import HttpUser, between, task
from wssync.locust_socketio import BinaryNotSupported, SocketIOMixin, SocketIOUser

ONLY = os.environ.get("ONLY_USERS", "").split(",")


def wanted(name):
    return name in ONLY


class Chatter(SocketIOUser):
    fixed_count = 1 if wanted("Chatter") else 0
    wait_time = between(0.02, 0.05)

    def on_start(self):
        self.sio = self.connect_socketio(auth={"token": "good"})
        self.sio.connect_namespace("/chat")
        self.sio.on("question", lambda number: number * 2)

    @task
    def talk(self):
        assert self.sio.call("echo", 1, "two", name="echo") == (1, "two")
        assert self.sio.call("echo", {"x": 1}, name="one") == {"x": 1}
        assert self.sio.call("echo", namespace="/chat", name="chat echo") == "chat"
        self.sio.emit("push", 3, name="push")
        assert [self.sio.receive_event("pushed", name="pushed") for _ in range(3)] == [0, 1, 2]
        assert self.sio.call("ask", 20, name="ask") == 40
        assert self.sio.sid and self.sio.sids["/chat"] and self.sio.dropped == 0


class Refused(SocketIOUser):
    fixed_count = 1 if wanted("Refused") else 0
    wait_time = between(0.05, 0.1)

    def on_start(self):
        self.sio = self.connect_socketio(auth={"token": "wrong"}, name="refused")

    @task
    def talk(self):
        self.sio.call("echo", 1, name="echo refused")  # connects first: refused again


class Timeout(SocketIOUser):
    fixed_count = 1 if wanted("Timeout") else 0
    wait_time = between(0.02, 0.05)

    def on_start(self):
        self.sio = self.connect_socketio(auth={"token": "good"}, name="socket.io timeout")
        self.turn = 0

    @task
    def talk(self):
        assert self.sio.call("echo", 5, name="echo 5") == 5
        self.turn += 1
        if self.turn % 2:
            self.sio.call("slow", timeout=0.1, name="slow")
        else:
            self.sio.call("nobody listens", timeout=0.3, name="nobody")


class Kicked(SocketIOUser):
    fixed_count = 1 if wanted("Kicked") else 0
    wait_time = between(0.02, 0.05)

    def on_start(self):
        self.sio = self.connect_socketio(auth={"token": "good"}, name="socket.io kicked")

    @task
    def talk(self):
        assert self.sio.call("echo", 1, name="echo kicked") == 1  # connects again first
        self.sio.call("kick", name="kick")


class Binary(SocketIOUser):
    fixed_count = 1 if wanted("Binary") else 0
    wait_time = between(0.02, 0.05)

    def on_start(self):
        self.sio = self.connect_socketio(auth={"token": "good"}, name="socket.io binary")

    @task
    def talk(self):
        try:
            self.sio.emit("echo", {"file": b"x"})
        except BinaryNotSupported:
            pass
        else:
            raise AssertionError("bytes were sent")
        # The attachments that follow are skipped: the connection goes on.
        assert self.sio.call("echo", "text", name="echo binary") == "text"
        self.sio.call("blob", name="blob call")


class Login(SocketIOMixin, HttpUser):
    fixed_count = 1 if wanted("Login") else 0
    wait_time = between(0.02, 0.05)

    def on_start(self):
        self.client.headers["X-Tenant"] = "t1"
        self.client.get("/login")
        self.sio = self.connect_socketio(auth={"token": "good"}, name="socket.io login")

    @task
    def whoami(self):
        assert self.sio.call("whoami", name="whoami") == ["s3cr3t", "t1"]


class Idle(SocketIOUser):
    fixed_count = 1 if wanted("Idle") else 0
    wait_time = between(1.5, 1.5)

    def on_start(self):
        self.sio = self.connect_socketio(auth={"token": "good"}, name="socket.io idle")

    @task
    def now_and_then(self):
        assert self.sio.call("echo", "still there?", name="now and then") == "still there?"
'''

USERS = ["Chatter", "Refused", "Timeout", "Kicked", "Binary", "Login"]


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    (tmp_path / "sioapp.py").write_text(APP)
    return tmp_path


@contextlib.contextmanager
def serve(kind: str, app_dir: Path, ping: Optional[float] = None,
          port: Optional[int] = None) -> Iterator[str]:
    port = port or free_port()
    env = {**_env(), **({"SIO_PING": str(ping)} if ping else {})}
    if kind == "wssync":
        proc = run_server(["--app", "sioapp:app", "--host", "127.0.0.1", "--port", str(port),
                           "--no-access-log"], cwd=app_dir, env=env)
    else:  # Flask-SocketIO's own development server: werkzeug and simple-websocket
        code = ("import sioapp; sioapp.socketio.run(sioapp.app, host='127.0.0.1', "
                f"port={port}, allow_unsafe_werkzeug=True, log_output=False)")
        proc = subprocess.Popen([sys.executable, "-c", code], cwd=app_dir, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_listening(port, proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


def run_locust(app_dir: Path, host: str, users: List[str], seconds: int = 4) -> Run:
    locustfile = app_dir / "locustfile.py"
    locustfile.write_text(LOCUSTFILE)
    out = app_dir / f"out_{'_'.join(users)}"
    proc = subprocess.run(
        locust_command(locustfile, host, len(users), seconds, out),
        cwd=app_dir, capture_output=True, text=True, timeout=seconds + 60,
        env={**_env(), "ONLY_USERS": ",".join(users)})
    return Run(out, proc)


def check(run: Run) -> None:
    """What every server must show: rows, counts, real times, failures as rows only."""
    assert run.exceptions == [], run.exceptions
    assert "Traceback" not in run.output, run.output[run.output.find("Traceback") - 500:]
    assert {r["Name"] for r in run.failures} == {"refused", "nobody", "slow", "kick", "blob",
                                                "blob call"}, run.failures
    # Connect rows: the handshake, engine.io's open and the namespace connects, timed.
    for name in ("socket.io /", "socket.io /chat", "socket.io timeout", "socket.io login",
                 "socket.io binary"):
        # (once each: a timeout or an ack for another call does not end a connection)
        assert run.count(name) == 1 and run.failed(name) == 0, name
        assert run.average(name) > 0, name
    # Acks timed emit to ack, with the arguments matched by id and namespace.
    for name in ("echo", "one", "chat echo", "ask", "pushed", "whoami", "echo 5"):
        assert run.count(name) >= 5 and run.failed(name) == 0, name
        assert run.average(name) > 0, name
    # (the run may stop a task between its emit and the last event it waits for)
    assert 3 * (run.count("push") - 1) <= run.count("pushed") <= 3 * run.count("push")
    # A refused connect: a failure row per attempt, with the server's reason; no exchange.
    assert run.failed("refused") >= 3 and run.count("refused") == run.failed("refused")
    assert all("connect to '/' refused: bad token" in e for e in run.errors("refused")), \
        run.failures
    assert ("WS", "echo refused") not in run.stats
    # An ack that never comes, or too late: a failure per call; the connection lives on
    # (one connect row), and a late ack is not taken for a later call's ("echo 5").
    assert run.failed("nobody") >= 2 and run.count("nobody") == run.failed("nobody")
    assert all("no ack for 'nobody listens' within 0.3 s" in e for e in run.errors("nobody"))
    assert run.failed("slow") >= 2 and run.count("slow") == run.failed("slow")
    assert all("no ack for 'slow' within 0.1 s" in e for e in run.errors("slow"))
    assert run.count("echo 5") >= run.count("nobody") + run.count("slow")
    # The server disconnects while a call waits: a failure; the next call connects again.
    assert run.failed("kick") >= 3 and run.count("kick") == run.failed("kick")
    assert all("the server disconnected '/'" in e for e in run.errors("kick")), run.failures
    assert run.count("socket.io kicked") >= run.count("kick")  # one connect after each
    assert run.failed("socket.io kicked") == run.failed("echo kicked") == 0
    # Binary attachments: refused by name, both the event's and the ack's.
    assert run.count("echo binary") >= 3 and run.failed("echo binary") == 0
    assert run.failed("blob") >= 2 and run.failed("blob call") >= 2
    assert all("has binary attachments" in e for e in run.errors("blob") +
               run.errors("blob call")), run.failures
    assert run.returncode == 1  # Locust's exit status on failures


def run_readme_example(code: str, tmp_path: Path, port: int) -> None:
    """README's Socket.IO locustfile against this module's app under wssync."""
    (tmp_path / "sioapp.py").write_text(APP)
    with serve("wssync", tmp_path, port=port) as host:
        (tmp_path / "locustfile.py").write_text(code)
        proc = subprocess.run(
            locust_command(tmp_path / "locustfile.py", host, 2, 4, "out"),
            cwd=tmp_path, capture_output=True, text=True, timeout=60, env=_env())
        run = Run(tmp_path / "out", proc)
    assert run.returncode == 0, run.output[-3000:]
    assert run.exceptions == [] and run.failures == []
    assert run.count("socket.io /") == 2
    for name in ("echo", "push", "pushed"):
        assert run.count(name) >= 1 and run.average(name) > 0, name


def test_against_wssync(app_dir: Path) -> None:
    with serve("wssync", app_dir) as host:
        check(run_locust(app_dir, host, USERS))


def test_against_flask_socketio_s_own_server(app_dir: Path) -> None:
    with serve("werkzeug", app_dir) as host:
        check(run_locust(app_dir, host, USERS))


@pytest.mark.parametrize("kind", ["wssync", "werkzeug"])
def test_an_idle_user_answers_engine_io_pings(app_dir: Path, kind: str) -> None:
    # The server pings every 0.3 s and drops a client whose pong is 0.3 s late; the
    # user waits 1.5 s between tasks, reading (and answering) meanwhile.
    with serve(kind, app_dir, ping=0.3) as host:
        run = run_locust(app_dir, host, ["Idle"], seconds=5)
        assert run.returncode == 0, run.output[-3000:]
        assert run.count("socket.io idle") == 1  # never dropped, never reconnected
        assert run.count("now and then") >= 2 and run.failed("now and then") == 0


def test_the_module_and_what_importing_wssync_leaves_alone() -> None:
    code = ("import sys, wssync, wssync.socketio_protocol; "
            "assert 'locust' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    code = ("import wssync.locust_socketio as m; "
            "assert set(m.__all__) == {'BinaryNotSupported', 'LocustSocketIO', 'SocketIOMixin', "
            "'SocketIOUser'}; "
            "assert m.SocketIOUser.abstract")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
