"""Every Python example of README.rst, run as written, against real clients.

The examples listen on port 8080 as a reader would run them.  Only if 8080 is
taken on this machine is the number replaced by a free port (and said so).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import re
import shutil
import signal
import socket
import sqlite3
import ssl
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Dict, List

import pytest
import requests
import websocket
from conftest import RedisServer, TlsFiles, redis_binary
from helpers import SlowReader, django_project, free_port, run_server, wait_listening, wait_until
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

README = Path(__file__).resolve().parents[2] / "README.rst"


# The first line of a block that is one file of a larger example ("# mysite/live.py").
_FILE_HEADER = re.compile(r"^# ([\w/]+\.py)\n", re.M)


def python_examples() -> List[str]:
    """The README's Python blocks; consecutive blocks that each open with a file
    header are the files of one example, joined in order (see :func:`example_files`)."""
    text = README.read_text(encoding="utf-8")
    examples: List[str] = []
    for match in re.finditer(r"^\.\. code-block:: python\n\n((?:(?: {4}.*)?\n)+)", text, re.M):
        block = textwrap.dedent(match.group(1)).strip() + "\n"
        if examples and _FILE_HEADER.match(block) and _FILE_HEADER.match(examples[-1]):
            examples[-1] += block
        else:
            examples.append(block)
    return examples


def example_files(code: str) -> Dict[str, str]:
    """The files of a multi-file example: path -> text, each with its header line."""
    starts = [m.start() for m in _FILE_HEADER.finditer(code)] + [len(code)]
    return {_FILE_HEADER.match(code, start).group(1): code[start:end]  # type: ignore[union-attr]
            for start, end in zip(starts, starts[1:])}


def _port_8080_free() -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("0.0.0.0", 8080))
        except OSError:
            return False
    return True


@pytest.fixture
def port() -> int:
    if _port_8080_free():
        return 8080
    replacement = free_port()
    print(f"port 8080 is taken here: the examples run on {replacement} instead")
    return replacement


def _write(tmp_path: Path, name: str, code: str, port: int) -> Path:
    path = tmp_path / name
    path.write_text(code.replace("8080", str(port)) if port != 8080 else code)
    return path


def _script(path: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, path.name], cwd=path.parent,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _stop(proc: subprocess.Popen[str], sig: int = signal.SIGINT) -> str:
    """Send ``sig``, wait for a clean exit; the process's stderr."""
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        _, err = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        raise AssertionError(f"did not stop: {err}") from None
    assert "Traceback" not in err, err
    assert proc.returncode == 0, err
    return err


def run_app_example(code: str, tmp_path: Path, port: int) -> None:
    path = _write(tmp_path, "mymodule.py", code, port)
    proc = _script(path)
    try:
        wait_listening(port, proc)
        base = f"http://127.0.0.1:{port}"
        assert requests.get(base + "/hello?name=x", timeout=5).text == "Hello, x"
        assert requests.get(base + "/hello", timeout=5).text == "Hello, world"
        assert requests.put(base + "/items/5", timeout=5).json() == {"id": "5", "method": "PUT"}
        with connect(f"ws://127.0.0.1:{port}/chat") as one, \
                connect(f"ws://127.0.0.1:{port}/chat") as two:
            assert one.recv(timeout=5) == "welcome"
            assert two.recv(timeout=5) == "welcome"
            one.send("hi all")
            assert one.recv(timeout=5) == "hi all"
            assert two.recv(timeout=5) == "hi all"
            proc.send_signal(signal.SIGINT)  # Ctrl-C
            with pytest.raises(ConnectionClosed):
                one.recv(timeout=10)
            assert one.close_code == 1001
    finally:
        err = _stop(proc)
    assert f"serving on http://127.0.0.1:{port}/ (Ctrl-C to quit)" in err  # where, unasked
    # The same module under the command line: its flags win, its own Server stays idle.
    other = free_port()
    cli = run_server(["--app", "mymodule:app", "--host", "127.0.0.1", "--port", str(other),
                      "--threads", "8"], cwd=tmp_path)
    try:
        wait_listening(other, cli)
        assert requests.get(f"http://127.0.0.1:{other}/hello", timeout=5).text == "Hello, world"
        with pytest.raises(requests.ConnectionError):
            requests.get(f"http://127.0.0.1:{port}/hello", timeout=5)
    finally:
        _stop(cli, signal.SIGTERM)


def run_embedding_example(code: str, tmp_path: Path, port: int) -> None:
    proc = _script(_write(tmp_path, "legacy_loop.py", code, port))
    try:
        wait_listening(port, proc)
        ticks = []
        with connect(f"ws://127.0.0.1:{port}/events") as ws:
            with pytest.raises(ConnectionClosed):
                while True:
                    ticks.append(ws.recv(timeout=10))
            assert ws.close_code == 1001  # the with-block ended: going away
        numbers = [int(t.split()[1]) for t in ticks]
        assert numbers and numbers == sorted(numbers) and numbers[-1] == 9
        proc.communicate(timeout=20)
        assert proc.returncode == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def run_flask_example(code: str, tmp_path: Path, port: int) -> None:
    pytest.importorskip("flask")
    proc = _script(_write(tmp_path, "legacy.py", code, port))
    try:
        wait_listening(port, proc)
        base = f"http://127.0.0.1:{port}"
        with connect(f"ws://127.0.0.1:{port}/live") as ws:
            response = requests.post(base + "/orders/7", timeout=5)
            assert response.status_code == 200 and response.text == "ok"
            assert ws.recv(timeout=5) == "order 7 received"
        assert requests.get(base + "/live", timeout=5).status_code == 426
        assert requests.get(base + "/orders/7", timeout=5).status_code == 405  # Flask's
    finally:
        _stop(proc)


def run_workers_example(code: str, tmp_path: Path, port: int) -> None:
    proc = _script(_write(tmp_path, "workers.py", code, port))
    try:
        wait_listening(port, proc)
        base = f"http://127.0.0.1:{port}"
        pids = set()
        for _ in range(200):  # a new connection each time: the kernel spreads them
            pids.add(requests.get(base + "/", headers={"Connection": "close"}, timeout=5).text)
            if len(pids) == 2:
                break
        assert len(pids) == 2  # two workers answer
        assert f"served by process {proc.pid}\n" not in pids  # (not the supervisor)
        with contextlib.ExitStack() as stack:
            clients = [stack.enter_context(connect(f"ws://127.0.0.1:{port}/feed"))
                       for _ in range(10)]
            clients[0].send("news")
            assert [ws.recv(timeout=10) for ws in clients] == ["news"] * 10
            proc.send_signal(signal.SIGINT)  # Ctrl-C: every worker's clients get 1001
            for ws in clients:
                with pytest.raises(ConnectionClosed):
                    ws.recv(timeout=10)
                assert ws.close_code == 1001
    finally:
        _stop(proc)


def run_blocking_example(code: str, tmp_path: Path, port: int) -> None:
    proc = _script(_write(tmp_path, "blocking_echo.py", code, port))
    try:
        wait_listening(port, proc)
        with connect(f"ws://127.0.0.1:{port}/echo") as ws:
            assert ws.recv(timeout=5) == "hello"
            for text in ("one", "two"):
                ws.send(text)
                assert ws.recv(timeout=5) == text
            ws.send("bye")
            with pytest.raises(ConnectionClosed):
                ws.recv(timeout=10)
            assert ws.close_code == 1000  # the handler returned
    finally:
        _stop(proc)


def run_slow_stream_example(code: str, tmp_path: Path, port: int) -> None:
    proc = _script(_write(tmp_path, "stream.py", code, port))
    try:
        wait_listening(port, proc)
        reader = SlowReader(port, "/stream", 16 * 1024 * 1024)
        try:
            for number in range(200):
                assert reader.message() == (0x2, number.to_bytes(4, "big") * 16384)
            opcode, payload = reader.message()
            assert opcode == 0x8 and payload[:2] == b"\x03\xe8"  # returned: 1000
        finally:
            reader.close()
    finally:
        _stop(proc)


def run_on_drain_example(code: str, tmp_path: Path, port: int) -> None:
    proc = _script(_write(tmp_path, "download.py", code, port))
    try:
        wait_listening(port, proc)
        reader = SlowReader(port, "/download", 16 * 1024 * 1024)
        try:
            reader.send(0x1, b"start")
            for _ in range(200):
                assert reader.message() == (0x2, bytes(64 * 1024))
        finally:
            reader.close()
    finally:
        _stop(proc)


def run_flask_sock_example(code: str, tmp_path: Path, port: int) -> None:
    pytest.importorskip("flask")
    _write(tmp_path, "chat.py", code, port)
    proc = run_server(["--app", "chat:app", "--host", "127.0.0.1", "--port", str(port),
                       "--threads", "8"], cwd=tmp_path)
    try:
        wait_listening(port, proc)
        base = f"http://127.0.0.1:{port}"
        assert requests.get(base + "/", timeout=5).text == "the page"
        assert requests.get(base + "/chat/lobby", timeout=5).status_code == 400
        with connect(f"ws://127.0.0.1:{port}/chat/lobby?user=ann") as ws:
            ws.send("hi")
            assert ws.recv(timeout=5) == "ann@lobby: hi"
    finally:
        _stop(proc, signal.SIGTERM)


def run_socketio_example(code: str, tmp_path: Path, port: int) -> None:
    socketio = pytest.importorskip("socketio")
    pytest.importorskip("flask_socketio")
    _write(tmp_path, "chat.py", code, port)
    proc = run_server(["--app", "chat:app", "--host", "127.0.0.1", "--port", str(port)],
                      cwd=tmp_path)
    clients = []
    try:
        wait_listening(port, proc)
        base = f"http://127.0.0.1:{port}"
        refused = socketio.Client(reconnection=False)
        with pytest.raises(socketio.exceptions.ConnectionError):
            refused.connect(base, auth={"token": "wrong"}, wait_timeout=5)
        news: List[str] = []
        for transports in (None, ["websocket"]):  # polling then the upgrade; WebSocket only
            client = socketio.Client(reconnection=False)
            client.on("news", news.append)
            client.connect(base, auth={"token": "s3cret"}, transports=transports,
                           wait_timeout=5)
            clients.append(client)
            assert client.call("echo", [1, "two"], timeout=5) == {"echo": [1, "two"]}
            joined: List[str] = []
            client.on("joined", joined.append)
            client.emit("join", "lobby")
            assert wait_until(lambda joined=joined: joined == ["lobby"], 5)  # type: ignore[misc]
        assert wait_until(lambda: clients[0].transport() == "websocket", 5)
        assert requests.get(base + "/announce?text=hi", timeout=5).text == "sent"
        assert wait_until(lambda: news == ["hi", "hi"], 5), news
    finally:
        for client in clients:
            client.disconnect()
        _stop(proc, signal.SIGTERM)


DJANGO_URLS = """\
from django.urls import path

from notes import views

urlpatterns = [path("publish", views.publish)]
"""


def _open_files(pid: int, name: str) -> List[str]:
    """The descriptors process ``pid`` holds open on files called ``name``."""
    found = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue  # closed meanwhile
        if os.path.basename(target) == name:
            found.append(target)
    return found


def run_django_example(code: str, tmp_path: Path, port: int) -> None:
    pytest.importorskip("django")
    files = example_files(code)
    assert set(files) == {"mysite/live.py", "notes/views.py"}
    site = django_project(tmp_path / "site", {**files, "mysite/urls.py": DJANGO_URLS})
    # The example names no port, and making the project takes seconds, in which a
    # free 8080 may be taken by another server on this machine: pick one now.
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    proc = run_server(["--app", "mysite.live:app", "--host", "127.0.0.1", "--port", str(port),
                       "--threads", "8"], cwd=site, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_listening(port, proc)
        with connect(f"ws://127.0.0.1:{port}/notes") as one:
            listener = websocket.create_connection(f"ws://127.0.0.1:{port}/notes", timeout=10)
            one.send("first")
            assert one.recv(timeout=10) == "saved note 1"

            def writer(n: int) -> List[str]:  # the ORM from several connections at once
                with connect(f"ws://127.0.0.1:{port}/notes") as ws:
                    replies = []
                    for i in range(5):
                        ws.send(f"writer {n} line {i}")
                        replies.append(ws.recv(timeout=20))
                    return replies

            with ThreadPoolExecutor(8) as pool:
                replies = [r for batch in pool.map(writer, range(8)) for r in batch]
            ids = {int(reply.rsplit(" ", 1)[1]) for reply in replies}
            assert ids == set(range(2, 42))  # 40 notes, each saved once

            answer = requests.post(base + "/publish", data={"text": "hello"}, timeout=10)
            assert answer.status_code == 200 and answer.text == "note 42"
            assert one.recv(timeout=10) == "new note: hello"  # a view pushed it
            assert listener.recv() == "new note: hello"
            listener.close()
            with sqlite3.connect(site / "db.sqlite3") as db:
                assert db.execute("select count(*) from notes_note").fetchone() == (42,)
            assert requests.get(base + "/publish", timeout=10).status_code == 405  # Django's
            assert requests.get(base + "/notes", timeout=10).status_code == 426
            missing = requests.get(base + "/nowhere", timeout=10)
            assert missing.status_code == 404 and "Page not found" in missing.text
            if os.path.isdir(f"/proc/{proc.pid}/fd"):
                # CONN_MAX_AGE = 0: like Django after each view, no worker keeps a
                # database connection once its callback is done.
                assert wait_until(lambda: not _open_files(proc.pid, "db.sqlite3"), timeout=20)
            proc.send_signal(signal.SIGTERM)
            with pytest.raises(ConnectionClosed):
                one.recv(timeout=10)
            assert one.close_code == 1001
    finally:
        _stop(proc, signal.SIGTERM)


def run_upload_example(code: str, tmp_path: Path, port: int) -> None:
    pytest.importorskip("flask")
    proc = _script(_write(tmp_path, "uploads.py", code, port))
    try:
        wait_listening(port, proc)
        url = f"http://127.0.0.1:{port}/upload"
        piece = bytes(range(256)) * 256
        expected = hashlib.sha256(piece * 64).hexdigest()
        streamed = requests.post(url, data=(piece for _ in range(64)), timeout=30)  # chunked
        assert streamed.text == expected
        file = tmp_path / "big.iso"
        file.write_bytes(piece * 64)
        if shutil.which("curl") is not None:  # the README's command line
            done = subprocess.run(["curl", "-sS", "-T", str(file), url], capture_output=True,
                                  text=True, timeout=30)
            assert done.returncode == 0 and done.stdout == expected, done.stderr
    finally:
        _stop(proc)


def run_client_example(code: str, tmp_path: Path, port: int) -> None:
    demo = run_server(["--host", "127.0.0.1", "--port", str(port)])
    try:
        wait_listening(port, demo)
        path = _write(tmp_path, "client_example.py", code, port)
        done = subprocess.run([sys.executable, path.name], cwd=tmp_path, capture_output=True,
                              text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        assert done.stdout == "hello\nworld\n"
    finally:
        _stop(demo, signal.SIGTERM)


def run_tls_server_example(code: str, tmp_path: Path, port: int) -> None:
    path = tmp_path / "tls_server.py"
    path.write_text(code.replace("8443", str(port)))
    proc = _script(path)
    try:
        wait_listening(port, proc)
        answer = requests.get(f"https://localhost:{port}/", verify=str(tmp_path / "ca.pem"),
                              timeout=5)
        assert answer.text == "hello over https\n"
        context = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
        with connect(f"wss://localhost:{port}/ws", ssl=context) as ws:
            ws.send("over wss")
            assert ws.recv(timeout=5) == "over wss"
    finally:
        _stop(proc)


def run_tls_client_example(code: str, tmp_path: Path, port: int) -> None:
    server = run_server(["--host", "127.0.0.1", "--port", str(port), "--certfile",
                         str(tmp_path / "cert.pem"), "--keyfile", str(tmp_path / "key.pem")])
    try:
        wait_listening(port, server)
        path = tmp_path / "tls_client.py"
        path.write_text(code.replace("8443", str(port)))
        done = subprocess.run([sys.executable, path.name], cwd=tmp_path, capture_output=True,
                              text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        assert done.stdout == "hello\n"
        # A wrong trust anchor: another leaf of the same CA (not the server's own
        # certificate, which Python 3.13's partial-chain checking would accept).
        (tmp_path / "ca.pem").write_bytes((tmp_path / "other.pem").read_bytes())
        done = subprocess.run([sys.executable, path.name], cwd=tmp_path, capture_output=True,
                              text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith("refused: the certificate of localhost:")
    finally:
        _stop(server, signal.SIGTERM)


def run_redis_example(code: str, tmp_path: Path, port: int) -> None:
    redis = RedisServer(redis_binary(), tmp_path)
    redis.start()
    code = code.replace("6379", str(redis.port))  # the Redis of this test
    other = free_port()  # the second host
    one = _script(_write(tmp_path, "news.py", code, port))
    two = _script(_write(tmp_path, "news_b.py", code.replace("8080", str(other)), port))
    try:
        wait_listening(port, one)
        wait_listening(other, two)
        with connect(f"ws://127.0.0.1:{port}/news") as a, \
                connect(f"ws://127.0.0.1:{other}/news") as b:
            for attempt in range(30):  # until both servers have subscribed
                a.send(f"hello {attempt}")
                try:
                    if b.recv(timeout=1).startswith("hello"):
                        break
                except TimeoutError:
                    continue
            else:
                raise AssertionError("a broadcast never crossed to the other server")
            b.send("from b")
            while a.recv(timeout=5) != "from b":  # after a's own hellos
                pass
    finally:
        errors = [_stop(proc) for proc in (one, two)]
        redis.kill(signal.SIGTERM)
    assert all("broadcasting on channel 'news'" in err for err in errors), errors


def run_file_example(code: str, tmp_path: Path, port: int) -> None:
    report = bytes(range(256)) * 4096  # 1 MiB, as a reader's report.pdf
    (tmp_path / "report.pdf").write_bytes(report)
    proc = _script(_write(tmp_path, "files_example.py", code, port))
    try:
        wait_listening(port, proc)
        address = f"http://127.0.0.1:{port}/report.pdf"
        whole = requests.get(address, timeout=10)
        assert whole.content == report
        assert whole.headers["Content-Type"] == "application/pdf"
        part = requests.get(address, headers={"Range": "bytes=-100"}, timeout=10)
        assert part.status_code == 206 and part.content == report[-100:]
        assert part.headers["Content-Range"] == "bytes 1048476-1048575/1048576"
        again = requests.get(address, headers={"If-None-Match": whole.headers["ETag"]},
                             timeout=10)
        assert again.status_code == 304
        (tmp_path / "report.pdf").unlink()
        assert requests.get(address, timeout=10).status_code == 404
    finally:
        _stop(proc)


def run_locust_example(code: str, tmp_path: Path, port: int) -> None:
    if importlib.util.find_spec("locust") is None:  # (importing it would monkey-patch)
        pytest.skip("Locust is not installed (pip install 'wssync[load]')")
    from test_locust import final_stats
    loadtests = README.parent / "loadtests"
    server = run_server(["--app", "target_app:app", "--host", "127.0.0.1", "--port", str(port),
                         "--no-access-log"], cwd=loadtests)
    try:
        wait_listening(port, server)
        (tmp_path / "locustfile.py").write_text(code)
        done = subprocess.run(
            [sys.executable, "-m", "locust", "-f", "locustfile.py", "--host",
             f"http://127.0.0.1:{port}", "--headless", "-u", "4", "-r", "4", "-t", "4s",
             "--only-summary", "--csv", "out", "--json-file", "out"],
            cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr[-3000:]
        rows = final_stats(tmp_path / "out")
        for row in (("GET", "/api/items"), ("WS", "/ws"), ("WS", "/chat"), ("WS", "echo"),
                    ("WS", "say"), ("WS", "broadcast")):
            assert row in rows, (row, sorted(rows))
            assert rows[row]["Failure Count"] == "0", rows[row]
            assert float(rows[row]["Average Response Time"]) > 0, rows[row]
        assert (tmp_path / "out_exceptions.csv").read_text().count("\n") == 1  # a header
    finally:
        _stop(server, signal.SIGTERM)


def run_socketio_locust_example(code: str, tmp_path: Path, port: int) -> None:
    from test_locust_socketio import run_readme_example  # (skips without Locust)

    run_readme_example(code, tmp_path, port)


# Each example, recognised by a line of its own, and how to check it.
DRIVERS: Dict[str, Callable[[str, Path, int], None]] = {
    '@app.route("/items/<item_id>"': run_app_example,
    "with Server(app, host=": run_embedding_example,
    "# your existing app, untouched": run_flask_example,
    "# mysite/live.py": run_django_example,
    "request.stream.read(65536)": run_upload_example,
    "from wssync.client import connect": run_client_example,
    '@app.websocket("/echo", blocking=True)': run_blocking_example,
    '@app.websocket("/stream", blocking=True)': run_slow_stream_example,
    'on_drain=pump': run_on_drain_example,
    "from wssync.flask import Sock": run_flask_sock_example,
    "workers=2, threads=4).serve_forever()": run_workers_example,
    "ssl_context=context).serve_forever()": run_tls_server_example,
    "from wssync.client import TlsError, connect": run_tls_client_example,
    'broker="redis://': run_redis_example,
    'Response.file("report.pdf")': run_file_example,
    "from wssync.locust import": run_locust_example,
    "socketio = SocketIO(app)": run_socketio_example,
    "from wssync.locust_socketio import": run_socketio_locust_example,
}


def _driver(code: str) -> Callable[[str, Path, int], None]:
    found = [driver for marker, driver in DRIVERS.items() if marker in code]
    assert len(found) == 1, f"README example without exactly one test driver:\n{code}"
    return found[0]


def test_readme_is_valid_restructuredtext() -> None:
    # PyPI renders it as the project page: a broken table would show as raw text.
    docutils_core = pytest.importorskip("docutils.core")
    docutils_core.publish_string(README.read_text(encoding="utf-8"), writer_name="null",
                                 settings_overrides={"halt_level": 2, "report_level": 2})


def test_every_example_has_a_driver() -> None:
    examples = python_examples()
    assert len(examples) == len(DRIVERS)
    assert {_driver(code) for code in examples} == set(DRIVERS.values())


@pytest.mark.parametrize("index", range(len(DRIVERS)))
def test_readme_example_runs_as_written(index: int, tmp_path: Path, port: int,
                                        tls_files: TlsFiles) -> None:
    code = python_examples()[index]
    # The files the TLS examples name, as a reader would have them beside the script.
    for source, name in ((tls_files.ca, "ca.pem"), (tls_files.cert, "cert.pem"),
                         (tls_files.key, "key.pem"), (tls_files.renewed_cert, "other.pem")):
        shutil.copy(source, tmp_path / name)
    start = time.monotonic()
    _driver(code)(code, tmp_path, port)
    print(f"example {index} checked in {time.monotonic() - start:.1f} s")
