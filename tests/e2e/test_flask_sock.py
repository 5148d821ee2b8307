"""``wssync.flask.Sock`` end to end: an application written for flask-sock, its import
line changed, served embedded (``Server``, both modes) and by ``python -m wssync --app``,
against real clients (the ``websockets`` library, ``websocket-client``, ``requests``).
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import sys
import textwrap
from pathlib import Path
from typing import Iterator

import pytest

pytest.importorskip("flask")

import requests
import websocket as wsclient
from helpers import free_port, run_server, wait_listening, wait_until
from websockets.exceptions import ConnectionClosed, ConnectionClosedOK, InvalidStatus
from websockets.sync.client import connect

from wssync import App, Server

# A flask-sock application as its users write it; only the import line is wssync's.
FLASK_APP = textwrap.dedent('''
    import json
    import time

    from flask import Blueprint, Flask, current_app, g, request
    from wssync.flask import ConnectionClosed, Sock

    app = Flask(__name__)
    sock = Sock(app)
    closes = []

    @app.route("/hello")
    def hello():
        return "hello from flask"

    @app.route("/closes")
    def last_closes():
        return json.dumps(closes)

    @sock.route("/echo")
    def echo(ws):
        while True:
            data = ws.receive()
            ws.send(data)

    @sock.route("/push")
    def push(ws):
        n = 0
        while True:
            ws.send(f"push {n}")
            n += 1
            time.sleep(0.01)

    @sock.route("/once")
    def once(ws):
        ws.send("just once")

    @sock.route("/timeout")
    def timeout(ws):
        ws.send(repr(ws.receive(timeout=0.05)))
        ws.send("got " + ws.receive())

    @sock.route("/rooms/<room>/<int:n>")
    def rooms(ws, room, n):
        g.room = room
        ws.send(json.dumps({"room": room, "n": n, "user": request.args.get("user"),
                            "app": current_app.name, "g": g.room, "path": request.path,
                            "connected": ws.connected}))

    @sock.route("/policy")
    def policy(ws):
        ws.close(reason=1008, message="not allowed")

    @sock.route("/watch")
    def watch(ws):
        try:
            while True:
                ws.receive()
        except ConnectionClosed as exc:
            closes.append([exc.reason, exc.message])
            raise

    # Sock() first, routes (its own and a blueprint's) before init_app, as in app factories.
    late = Sock()
    bp = Blueprint("live", __name__)

    @late.route("/late")
    def late_route(ws):
        ws.send("late")

    @late.route("/bp", bp=bp)
    def bp_route(ws):
        ws.send("from a blueprint")

    app.register_blueprint(bp, url_prefix="/live")
    late.init_app(app)
''')


def _load(tmp_path: Path) -> object:
    path = tmp_path / "flaskapp.py"
    path.write_text(FLASK_APP)
    spec = importlib.util.spec_from_file_location("flaskapp", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["flaskapp"] = module  # Flask(__name__) looks itself up there
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules["flaskapp"]
    return module.app  # type: ignore[attr-defined]


@pytest.fixture(params=["reactor", "threads", "cli"])
def base(request: pytest.FixtureRequest, tmp_path: Path, start_server) -> Iterator[str]:
    """``host:port`` of the flask-sock app, served embedded in either mode, or by the CLI."""
    if request.param == "cli":
        port = free_port()
        path = tmp_path / "flaskapp.py"
        path.write_text(FLASK_APP)
        env = dict(os.environ)
        # The subprocess imports this checkout of wssync, whatever the cwd.
        env["PYTHONPATH"] = os.pathsep.join(
            [str(Path(__file__).resolve().parents[2]), env.get("PYTHONPATH", "")])
        proc = run_server(["--app", "flaskapp:app", "--host", "127.0.0.1", "--port", str(port)],
                          cwd=tmp_path, env=env)
        try:
            wait_listening(port, proc)
            yield f"127.0.0.1:{port}"
        finally:
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=20)
            assert proc.returncode == 0, err
            assert "Traceback" not in err, err
        return
    app = App()
    app.mount_wsgi(_load(tmp_path))  # type: ignore[arg-type]
    server: Server = start_server(app, threads=4 if request.param == "threads" else 0)
    yield f"127.0.0.1:{server.address[1]}"


def test_echo(base: str) -> None:
    with connect(f"ws://{base}/echo") as ws:
        for message in ("one", b"\x00two", "three"):
            ws.send(message)
            assert ws.recv(timeout=10) == message


def test_a_loop_that_pushes_ends_with_the_client(base: str) -> None:
    with connect(f"ws://{base}/push") as ws:
        assert [ws.recv(timeout=10) for _ in range(3)] == ["push 0", "push 1", "push 2"]
    # The server goes on (the pushing thread saw ConnectionClosed and ended).
    with connect(f"ws://{base}/echo") as ws:
        ws.send("still")
        assert ws.recv(timeout=10) == "still"


def test_a_handler_that_returns_closes_normally(base: str) -> None:
    with connect(f"ws://{base}/once") as ws:
        assert ws.recv(timeout=10) == "just once"
        with pytest.raises(ConnectionClosedOK):
            ws.recv(timeout=10)
        assert ws.close_code == 1000


def test_receive_timeout(base: str) -> None:
    ws = wsclient.create_connection(f"ws://{base}/timeout", timeout=10)
    try:
        assert ws.recv() == "None"
        ws.send("late message")
        assert ws.recv() == "got late message"
    finally:
        ws.close()


def test_url_variables_and_flask_request_context(base: str) -> None:
    with connect(f"ws://{base}/rooms/blue/7?user=ann") as ws:
        info = json.loads(ws.recv(timeout=10))
    assert info == {"room": "blue", "n": 7, "user": "ann", "app": "flaskapp", "g": "blue",
                    "path": "/rooms/blue/7", "connected": True}


def test_close_with_reason_and_message(base: str) -> None:
    with connect(f"ws://{base}/policy") as ws:
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=10)
        assert (ws.close_code, ws.close_reason) == (1008, "not allowed")


def test_connection_closed_carries_reason_and_message(base: str) -> None:
    with connect(f"ws://{base}/watch") as ws:
        ws.send("hi")
        ws.close(1001, "leaving")

    def closes() -> object:
        return requests.get(f"http://{base}/closes", timeout=5).json()

    assert wait_until(lambda: bool(closes()))
    assert closes() == [[1001, "leaving"]]


def test_routes_declared_before_init_app_and_on_a_blueprint(base: str) -> None:
    with connect(f"ws://{base}/late") as ws:
        assert ws.recv(timeout=10) == "late"
    with connect(f"ws://{base}/live/bp") as ws:
        assert ws.recv(timeout=10) == "from a blueprint"


def test_http_views_share_the_port_and_a_plain_get_to_a_ws_route_is_400(base: str) -> None:
    assert requests.get(f"http://{base}/hello", timeout=5).text == "hello from flask"
    assert requests.get(f"http://{base}/echo", timeout=5).status_code == 400  # as flask-sock
    assert requests.get(f"http://{base}/nowhere", timeout=5).status_code == 404
    # A handshake to a path Flask serves only as a page.
    with pytest.raises(InvalidStatus) as refused, connect(f"ws://{base}/hello"):
        pass
    assert refused.value.response.status_code == 404
