"""Flask-SocketIO served unchanged, end to end, against clients no one here wrote:
python-socketio's client (threaded), the npm ``socket.io-client`` in Node and in
headless Chromium, websocket-client for many idle connections, and a raw socket
for a reader that stops reading.  Servers run embedded in both modes, or by
``python -m wssync`` (thread counts, Redis across two servers, the CLI)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import pytest

pytest.importorskip("flask_socketio")

import requests
import socketio as sio
import websocket as wsclient
from helpers import RawWS, free_port, required_program, run_server, wait_listening, wait_until

from wssync import App, Server

TESTS = Path(__file__).resolve().parents[1]
ROOT = TESTS.parent
NODE_CLIENT = TESTS / "e2e" / "socketio_node" / "client.js"
EIO_WS = "/socket.io/?EIO=4&transport=websocket"

# -- servers -------------------------------------------------------------------------------


class Served:
    """One Flask-SocketIO app served by an embedded wssync server."""

    def __init__(self, server: Server, flask_app: Any, socketio: Any) -> None:
        self.server = server
        self.app = flask_app
        self.socketio = socketio
        self.url = f"http://127.0.0.1:{server.address[1]}"

    @property
    def state(self) -> Dict[str, List[Any]]:
        return self.app.config["state"]  # type: ignore[no-any-return]

    def get(self, path: str) -> str:
        response = requests.get(self.url + path, timeout=10)
        assert response.status_code == 200, (path, response.status_code, response.text)
        return response.text


@pytest.fixture
def serve(start_server: Callable[..., Server], threads: int) -> Iterator[Callable[..., Served]]:
    """``serve(**create_options)``: a fresh app from tests/socketio_app.py, served
    in the mode of ``threads``; engine.io's own service task is stopped afterwards."""
    from socketio_app import create

    made: List[Any] = []

    def start(**options: Any) -> Served:
        flask_app, socketio = create(**options)
        made.append(socketio)
        app = App()
        app.mount_wsgi(flask_app)
        return Served(start_server(app, threads=threads), flask_app, socketio)

    yield start
    for socketio in made:
        socketio.server.shutdown()


@pytest.fixture
def client() -> Iterator[Callable[..., sio.Client]]:
    """``client(url, **connect_options)``: a connected python-socketio client
    (no reconnection), disconnected afterwards."""
    made: List[sio.Client] = []

    def connect(url: str, handlers: Optional[Dict[str, Callable[..., Any]]] = None,
                **options: Any) -> sio.Client:
        c = sio.Client(reconnection=False)
        made.append(c)
        for event, handler in (handlers or {}).items():
            c.on(event, handler)
        c.connect(url, wait_timeout=10, **options)
        return c

    yield connect
    for c in made:
        c.disconnect()


def collect(c: sio.Client, event: str, namespace: str = "/") -> List[Any]:
    """What ``event`` brings ``c``, in order (the list grows as it arrives)."""
    got: List[Any] = []
    c.on(event, lambda *args: got.append(args[0] if len(args) == 1 else list(args)),
         namespace=namespace)
    return got


def cli_env(**extra: str) -> Dict[str, str]:
    env = dict(os.environ)
    # The subprocess imports this checkout of wssync and the test app, whatever the cwd.
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(TESTS), env.get("PYTHONPATH", "")])
    env.update(extra)
    return env


def cli_server(tmp_path: Path, spec: str = "socketio_app:socketio", args: Tuple[str, ...] = (),
               **env: str) -> Tuple[int, subprocess.Popen[str]]:
    port = free_port()
    proc = run_server([spec, "--host", "127.0.0.1", "--port", str(port), *args], cwd=tmp_path,
                      env=cli_env(**env))
    wait_listening(port, proc, timeout=20)
    return port, proc


def stop(proc: subprocess.Popen[str]) -> str:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        raise AssertionError(f"the server did not stop: {err}") from None
    assert proc.returncode == 0, err
    assert "Traceback" not in err, err
    return err


# -- python-socketio's client --------------------------------------------------------------


def test_default_transports_upgrade_to_websocket_and_keep_the_session(serve, client) -> None:
    served = serve()
    c = client(served.url)
    eio_sid, sid = c.eio.sid, c.get_sid()
    assert wait_until(lambda: c.transport() == "websocket"), c.transport()
    assert c.call("echo", {"n": 1}, timeout=10) == {"n": 1}
    assert (c.eio.sid, c.get_sid()) == (eio_sid, sid)
    assert c.call("whoami", timeout=10) == sid  # the server's session is the same one


@pytest.mark.parametrize("transport", ["websocket", "polling"])
def test_one_transport_only(serve, client, transport: str) -> None:
    served = serve()
    c = client(served.url, transports=[transport])
    assert c.transport() == transport
    for n in range(20):
        assert c.call("echo", n, timeout=10) == n
    assert c.transport() == transport


def test_rooms_reach_their_members_only(serve, client) -> None:
    served = serve()
    members = [client(served.url), client(served.url, transports=["polling"])]
    outsider = client(served.url, transports=["websocket"])
    heard = [collect(c, "said") for c in (*members, outsider)]
    for c in members:
        assert c.call("join", "blue", timeout=10) == "blue"
    members[0].emit("say", ("blue", "from a member"))
    served.get("/room/blue?text=from+a+view")
    assert wait_until(lambda: all(len(got) == 2 for got in heard[:2])), heard
    assert all(sorted(got) == ["from a member", "from a view"] for got in heard[:2])
    # The outsider's own next ack comes after anything sent to it before.
    assert outsider.call("echo", "x", timeout=10) == "x"
    assert heard[2] == []
    members[1].call("leave", "blue", timeout=10)
    served.get("/room/blue?text=second")
    assert wait_until(lambda: heard[0][-1:] == ["second"])
    assert members[1].call("echo", "y", timeout=10) == "y"
    assert sorted(heard[1]) == ["from a member", "from a view"]


def test_namespaces(serve, client) -> None:
    served = serve()
    c = client(served.url, namespaces=["/", "/chat"])
    assert c.call("echo", "root", timeout=10) == "root"
    assert c.call("echo", "room", namespace="/chat", timeout=10) == \
        {"namespace": "/chat", "data": "room"}


def test_broadcast_from_a_view_reaches_every_client(serve, client) -> None:
    served = serve()
    clients = [client(served.url), client(served.url, transports=["polling"]),
               client(served.url, transports=["websocket"])]
    news = [collect(c, "news") for c in clients]
    assert served.get("/news?text=extra") == "sent"
    assert wait_until(lambda: all(got == ["extra"] for got in news)), news


def test_emit_from_a_background_task(serve, client) -> None:
    served = serve()
    c = client(served.url, transports=["websocket"])
    ticks = collect(c, "tick")
    served.get("/background?n=5")
    assert wait_until(lambda: len(ticks) == 5), ticks
    assert ticks == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("transports", [None, ["websocket"]], ids=["default", "websocket"])
def test_connect_auth(serve, client, transports: Optional[List[str]]) -> None:
    served = serve()
    refusals: List[Any] = []
    with pytest.raises(sio.exceptions.ConnectionError):
        client(served.url, transports=transports, auth={"token": "wrong"},
               handlers={"connect_error": refusals.append})
    assert refusals == [{"message": "bad token"}]
    c = client(served.url, transports=transports, auth={"token": "right"})
    assert c.call("echo", "in", timeout=10) == "in"
    assert served.state["auth"] == ["right"]


def test_disconnect_handler_runs_for_a_client_and_a_server_disconnect(serve, client) -> None:
    served = serve()
    leaving = client(served.url)
    sid = leaving.get_sid()
    leaving.disconnect()
    assert wait_until(lambda: sid in served.state["disconnects"]), served.state
    kicked = client(served.url, transports=["websocket"])
    ended: List[Any] = []
    kicked.on("disconnect", lambda *reason: ended.append(reason))
    sid = kicked.get_sid()
    kicked.emit("kick")
    assert wait_until(lambda: bool(ended) and sid in served.state["disconnects"]), \
        (ended, served.state)
    assert not kicked.connected


def test_max_http_buffer_size_closes_that_client_only(serve, client) -> None:
    served = serve(max_http_buffer_size=10_000)
    big = client(served.url, transports=["websocket"])
    other = client(served.url, transports=["websocket"])
    ended: List[Any] = []
    big.on("disconnect", lambda *reason: ended.append(reason))
    assert big.call("echo", "x" * 5_000, timeout=10) == "x" * 5_000  # under the limit
    big.emit("echo", "x" * 20_000)
    assert wait_until(lambda: bool(ended)), "the client over the limit stayed connected"
    assert other.call("echo", "still here", timeout=10) == "still here"
    assert other.connected


def test_binary_payloads(serve, client) -> None:
    served = serve()
    data = bytes(range(256)) * 40
    for transports in (["websocket"], ["polling"]):
        c = client(served.url, transports=transports)
        answer = c.call("bin", data, timeout=10)
        assert answer == {"reversed": bytes(reversed(data)), "length": len(data)}


def test_server_calls_a_client_from_a_background_task(serve, client) -> None:
    served = serve()
    c = client(served.url, handlers={"question": lambda text: f"{text} 42"})
    served.get(f"/ask/{c.get_sid()}")
    assert wait_until(lambda: bool(served.state["answers"])), served.state
    assert served.state["answers"] == ["6 * 7? 42"]


@pytest.mark.parametrize("transport", ["websocket", "polling"])
def test_a_handler_may_wait_for_its_own_client(serve, client, transport: str) -> None:
    """An event handler that calls the client that sent the event: the answer is
    read from the connection while the handler waits on it."""
    served = serve()
    c = client(served.url, transports=[transport],
               handlers={"question": lambda text: f"{text} 42"})
    assert c.call("ask_me", "6 * 7?", timeout=15) == "6 * 7? 42"
    assert c.call("echo", "after", timeout=10) == "after"


def test_a_slow_handler_does_not_hold_its_clients_other_events(serve, client) -> None:
    """As in threading mode, a client's events run side by side: an echo sent
    after a slow event is answered before the slow one ends."""
    served = serve()
    c = client(served.url, transports=["websocket"])
    done: List[Any] = []
    c.emit("slow", 3.0, callback=done.append)
    started = time.monotonic()
    assert c.call("echo", "quick", timeout=10) == "quick"
    assert time.monotonic() - started < 2.0 and not done
    assert wait_until(lambda: done == ["slept"], timeout=10), done


def test_many_acks_in_flight_keep_their_order(serve, client) -> None:
    served = serve()
    c = client(served.url, transports=["websocket"])
    answers: List[Any] = []
    for n in range(300):
        c.emit("echo", n, callback=answers.append)
    assert wait_until(lambda: len(answers) == 300), len(answers)
    assert sorted(answers) == list(range(300))


def test_a_poll_pending_at_the_upgrade_ends_with_the_probe(serve) -> None:
    """The upgrade by hand, as engine.io clients do it: a long-poll waits while
    the WebSocket probes; the probe's answer must end that poll (else the client,
    which pauses polling before it switches, waits out a whole ping interval)."""
    served = serve()
    polling = served.url + "/socket.io/?EIO=4&transport=polling"
    opening = requests.get(polling, timeout=10).text
    assert opening.startswith("0{"), opening
    sid = json.loads(opening[1:])["sid"]
    session = f"{polling}&sid={sid}"
    assert requests.post(session, data="40", timeout=10).text == "OK"
    assert requests.get(session, timeout=10).text.startswith("40{")
    pending: List[str] = []
    poller = threading.Thread(
        target=lambda: pending.append(requests.get(session, timeout=30).text), daemon=True)
    poller.start()
    time.sleep(0.3)  # the poll waits on the server
    assert poller.is_alive()
    ws = wsclient.create_connection(
        f"ws://127.0.0.1:{served.server.address[1]}{EIO_WS}&sid={sid}", timeout=10)
    try:
        ws.send("2probe")
        assert ws.recv() == "3probe"
        poller.join(5)
        assert pending == ["6"], "the pending poll did not end at the probe"
        ws.send("5")
        ws.send('421["echo","upgraded"]')
        assert ws.recv() == '431["upgraded"]'
        # Polling is over for this session (engine.io refuses it once upgraded).
        assert requests.get(session, timeout=10).status_code == 400
    finally:
        ws.close()


# -- a reader that stops reading ----------------------------------------------------------


class EioRaw:
    """engine.io v4 and Socket.IO v5 spoken by hand over :class:`RawWS`."""

    def __init__(self, port: int, rcvbuf: Optional[int] = None) -> None:
        self.ws = RawWS.connect(port, EIO_WS, rcvbuf=rcvbuf)
        opening = self.text(timeout=10)
        assert opening.startswith("0{"), opening
        self.ws.send_text("40")
        connected = self.text(timeout=10)
        assert connected.startswith("40{"), connected
        self.sid = json.loads(connected[2:])["sid"]

    def text(self, timeout: float = 10) -> str:
        """The next engine.io packet that is not a ping (pings are answered)."""
        while True:
            opcode, payload = self.ws.recv_data(timeout)
            assert opcode == 0x1, (opcode, payload[:40])
            packet = payload.decode()
            if packet == "2":
                self.ws.send_text("3")
                continue
            return packet


@pytest.mark.slow
def test_a_reader_that_stops_reading_gets_everything_later(serve) -> None:
    """8 MiB for one client from a thread while the client reads nothing: the
    thread waits once the client is far behind (the session is not dropped), a
    short ping interval puts the reactor's pings in the middle of it, and once
    the client reads it gets every message, in order."""
    served = serve(ping_interval=1, max_http_buffer_size=1_000_000)
    reader = EioRaw(served.server.address[1], rcvbuf=32 * 1024)
    try:
        n, size = 128, 64 * 1024
        served.get(f"/flood/{reader.sid}?n={n}&size={size}")
        time.sleep(3)  # reading nothing, through a few ping intervals
        assert served.state["floods"] == []  # the sending thread waits for this reader
        # Another client is served meanwhile: the reactor is not stuck.
        other = EioRaw(served.server.address[1])
        other.ws.send_text('421["echo","alive"]')
        assert other.text() == '431["alive"]'
        other.ws.close()
        for i in range(n):
            event, payload = json.loads(reader.text(timeout=30)[2:])
            assert (event, payload["i"], len(payload["data"])) == ("chunk", i, size)
        assert wait_until(lambda: served.state["floods"] == [n])
    finally:
        reader.ws.close()


def test_a_client_a_little_behind_does_not_hold_a_broadcast(serve) -> None:
    """1 MiB waits for a client that reads nothing (under the point where an emit
    waits): the thread that sent it is done at once, and a broadcast reaches
    another client meanwhile (engine.io's emit only queues)."""
    served = serve()
    reader = EioRaw(served.server.address[1], rcvbuf=32 * 1024)
    other = EioRaw(served.server.address[1])
    try:
        n, size = 16, 64 * 1024
        served.get(f"/flood/{reader.sid}?n={n}&size={size}")
        assert wait_until(lambda: served.state["floods"] == [n], 5)
        assert served.get("/news?text=now") == "sent"
        assert other.text(timeout=5) == '42["news","now"]'
        for i in range(n):
            event, payload = json.loads(reader.text(timeout=30)[2:])
            assert (event, payload["i"]) == ("chunk", i)
    finally:
        reader.ws.close()
        other.ws.close()


# -- python -m wssync: thread counts, the CLI, Redis across servers, versions ---------------


def _threads_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise AssertionError("no Threads line")


@pytest.mark.slow
@pytest.mark.parametrize("mode", [(), ("--threads", "4")], ids=["reactor", "threads"])
def test_idle_websocket_clients_cost_no_thread_each(tmp_path: Path, mode: Tuple[str, ...]) -> None:
    if not Path("/proc/self/status").exists():
        pytest.skip("reads the thread count from /proc")
    port, proc = cli_server(tmp_path, args=mode)
    idle: List[Any] = []
    try:
        def open_idle(count: int) -> int:
            while len(idle) < count:
                ws = wsclient.create_connection(f"ws://127.0.0.1:{port}{EIO_WS}", timeout=10)
                idle.append(ws)
                assert ws.recv().startswith("0{")
                ws.send("40")
                assert ws.recv().startswith("40{")
            time.sleep(0.5)  # whatever the connects started has settled
            return _threads_of(proc.pid)

        with_10, with_100 = open_idle(10), open_idle(100)
        assert with_100 <= with_10 + 1, (with_10, with_100)
        assert with_100 < 20, with_100
        ws = idle[-1]
        ws.send('421["echo","last"]')
        assert ws.recv() == '431["last"]'
    finally:
        for ws in idle:
            ws.close()
        stop(proc)


@pytest.mark.parametrize("spec", ["socketio_app:socketio", "socketio_app:app"])
def test_the_cli_serves_the_app_by_its_socketio_or_flask_object(tmp_path: Path, client,
                                                                spec: str) -> None:
    port, proc = cli_server(tmp_path, spec)
    try:
        c = client(f"http://127.0.0.1:{port}")
        news = collect(c, "news")
        assert wait_until(lambda: c.transport() == "websocket")
        assert c.call("echo", "cli", timeout=10) == "cli"
        assert requests.get(f"http://127.0.0.1:{port}/news?text=hi", timeout=10).text == "sent"
        assert wait_until(lambda: news == ["hi"]), news
        c.disconnect()
    finally:
        stop(proc)


def test_a_bare_python_socketio_server_by_the_cli(tmp_path: Path, client) -> None:
    (tmp_path / "bare.py").write_text(textwrap.dedent("""
        import socketio

        sio = socketio.Server(async_mode="threading")

        @sio.on("echo")
        def echo(sid, data):
            return data
    """))
    port, proc = cli_server(tmp_path, "bare:sio")
    try:
        c = client(f"http://127.0.0.1:{port}")
        assert wait_until(lambda: c.transport() == "websocket")
        assert c.call("echo", "bare", timeout=10) == "bare"
        c.disconnect()
    finally:
        stop(proc)


def test_messages_cross_servers_through_redis(tmp_path: Path, redis_server, client) -> None:
    """Two servers of the same app with python-socketio's Redis manager: a view on
    one emits, clients on the other get it (as do its own)."""
    queue = redis_server.url()
    a_port, a = cli_server(tmp_path, SIO_TEST_QUEUE=queue)
    try:
        b_port, b = cli_server(tmp_path, SIO_TEST_QUEUE=queue)
        try:
            on_b = [client(f"http://127.0.0.1:{b_port}"),
                    client(f"http://127.0.0.1:{b_port}", transports=["polling"])]
            on_a = client(f"http://127.0.0.1:{a_port}", transports=["websocket"])
            news = [collect(c, "news") for c in (*on_b, on_a)]
            assert on_b[0].call("join", "red", timeout=10) == "red"
            said = collect(on_b[0], "said")
            # The managers' subscriptions may still be starting: emit until heard.
            assert wait_until(lambda: bool(requests.get(
                f"http://127.0.0.1:{a_port}/news?text=across", timeout=10).text)
                and all("across" in got for got in news), timeout=15, interval=0.3), news
            requests.get(f"http://127.0.0.1:{a_port}/room/red?text=to+red", timeout=10)
            assert wait_until(lambda: "to red" in said), said
            for c in (*on_b, on_a):
                c.disconnect()
        finally:
            stop(b)
    finally:
        stop(a)


def test_an_unsupported_engineio_version_is_one_line_and_exit_2(tmp_path: Path) -> None:
    fake = tmp_path / "fake" / "python_engineio-3.14.0.dist-info"
    fake.mkdir(parents=True)
    (fake / "METADATA").write_text("Metadata-Version: 2.1\nName: python-engineio\n"
                                   "Version: 3.14.0\n")
    env = cli_env()
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path / "fake"), env["PYTHONPATH"]])
    done = subprocess.run([sys.executable, "-m", "wssync", "socketio_app:socketio",
                           "--port", str(free_port())], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "python-engineio 3.14.0 is not supported" in lines[0]
    from wssync.socketio import SUPPORTED

    low = ".".join(map(str, SUPPORTED["python-engineio"][0]))
    assert f"serves python-engineio {low} up to" in lines[0], lines[0]
    assert "wssync[socketio]" in lines[0]


# -- the npm socket.io-client, in Node and in Chromium --------------------------------------


@pytest.fixture(scope="session")
def node_modules() -> Path:
    """``socket.io-client`` 4 installed with npm, once, into a cache directory."""
    required_program("node", "nodejs npm")
    npm = required_program("npm", "nodejs npm")
    home = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    directory = home / "wssync-tests" / "socketio-client-4"
    modules = directory / "node_modules"
    if not (modules / "socket.io-client" / "dist" / "socket.io.min.js").exists():
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "package.json").write_text('{"private": true}\n')
        done = subprocess.run([npm, "install", "--no-audit", "--no-fund", "--loglevel=error",
                               "socket.io-client@4"], cwd=directory, capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0, done.stderr
    return modules


def run_node(node_modules: Path, url: str, scenario: str) -> Dict[str, Any]:
    env = dict(os.environ, NODE_PATH=str(node_modules))
    done = subprocess.run(["node", str(NODE_CLIENT), url, scenario], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, (done.stdout, done.stderr)
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


@pytest.mark.parametrize("scenario", ["default", "websocket"])
def test_node_socketio_client(serve, node_modules: Path, scenario: str) -> None:
    served = serve()
    result = run_node(node_modules, served.url, scenario)
    assert result["transport"] == "websocket"
    if scenario == "default":
        assert result["upgraded"] is True
        assert result["first_transport"] == "polling"
    assert result["ack"] == {"n": 1}
    assert result["acks"] == list(range(50))
    assert result["members"] == [["to blue"], ["to blue"]]
    assert result["outsider"] == []
    assert result["news"] == ["from node"]
    assert result["binary"] == {"length": 3, "reversed": [3, 2, 1]}


def test_chromium_page_connects_acks_and_hears_a_broadcast(serve, node_modules: Path,
                                                          browser) -> None:
    served = serve(client_js=str(node_modules / "socket.io-client" / "dist" / "socket.io.min.js"))
    page = browser.new_page()
    errors: List[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    sockets: List[str] = []
    page.on("websocket", lambda ws: sockets.append(ws.url))
    page.goto(served.url + "/page")
    page.wait_for_function("window.ack !== undefined", timeout=10000)
    assert page.evaluate("window.ack") == {"from": "page"}
    page.wait_for_function("window.sock.io.engine.transport.name === 'websocket'",
                           timeout=10000)
    served.get("/news?text=to+the+page")
    page.wait_for_function("window.received.includes('to the page')", timeout=10000)
    log = page.inner_text("#log")
    assert "opened polling" in log and "upgraded websocket" in log, log
    assert any("/socket.io/" in url and "transport=websocket" in url for url in sockets)
    assert served.state["auth"] == ["page"]
    assert errors == []
