"""Request bodies streamed to a WSGI application as it reads ``wsgi.input``, end to end.

Real clients (``requests``, ``http.client``, curl, raw sockets) upload to real
servers; a Flask view hashes ``request.stream``.  A subprocess server's peak RSS
shows that a large upload is never held in memory.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import signal
import socket
import subprocess
import threading
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Tuple

import pytest
import requests
from flask import Flask
from helpers import finish, free_port, read_until_closed, run_server, wait_listening

from wssync import App, RequestBodyError

Environ = Dict[str, Any]
StartResponse = Callable[..., Any]
MiB = 1024 * 1024

HASHING_APP = '''
import hashlib
from flask import Flask, request

app = Flask(__name__)

@app.route("/upload", methods=["POST", "PUT"])
def upload():
    digest, size = hashlib.sha256(), 0
    while True:
        chunk = request.stream.read(65536)
        if not chunk:
            break
        digest.update(chunk)
        size += len(chunk)
    return {"sha256": digest.hexdigest(), "size": size,
            "content_length": request.environ.get("CONTENT_LENGTH"),
            "terminated": request.environ.get("wsgi.input_terminated")}
'''


def pattern(size: int, piece: int = 65536) -> Iterator[bytes]:
    """``size`` bytes of a repeating, position-dependent pattern, made on the fly."""
    block = bytes(range(256)) * (piece // 256)
    sent = 0
    while sent < size:
        chunk = block[: min(piece, size - sent)]
        sent += len(chunk)
        yield chunk


def sha256_of(chunks: Iterator[bytes]) -> str:
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(chunk)
    return digest.hexdigest()


def flask_hasher() -> Flask:
    namespace: Dict[str, Any] = {"__name__": __name__}
    exec(HASHING_APP, namespace)  # the same code the subprocess server imports
    app: Flask = namespace["app"]
    return app


def mounted(wsgi: Any) -> App:
    app = App()
    app.mount_wsgi(wsgi)

    @app.route("/native", methods=["POST"])
    def native(request: Any) -> str:
        return f"native {len(request.body)}"

    return app


@pytest.fixture
def hasher_port(start_server, threads: int) -> int:
    return start_server(mounted(flask_hasher()), threads=threads,
                        max_body_size=64 * MiB).address[1]


def test_flask_hashes_a_streamed_chunked_upload(hasher_port: int) -> None:
    size = 8 * MiB + 123
    answer = requests.post(f"http://127.0.0.1:{hasher_port}/upload", data=pattern(size),
                           timeout=60).json()
    assert answer == {"sha256": sha256_of(pattern(size)), "size": size,
                      "content_length": None, "terminated": True}


def test_flask_hashes_a_content_length_upload_from_http_client(hasher_port: int) -> None:
    size = 5 * MiB
    body = b"".join(pattern(size))
    conn = http.client.HTTPConnection("127.0.0.1", hasher_port, timeout=60)
    try:
        for _ in range(2):  # twice on one keep-alive connection
            conn.request("PUT", "/upload", body=body)
            response = conn.getresponse()
            answer = requests.models.complexjson.loads(response.read())
            assert response.status == 200
            assert answer["sha256"] == hashlib.sha256(body).hexdigest()
            assert answer["content_length"] == str(size)
    finally:
        conn.close()


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_uploads_a_file_and_from_stdin(hasher_port: int, tmp_path: Path) -> None:
    path = tmp_path / "upload.bin"
    size = 3 * MiB + 7
    with path.open("wb") as file:
        for chunk in pattern(size):
            file.write(chunk)
    url = f"http://127.0.0.1:{hasher_port}/upload"
    expected = hashlib.sha256(path.read_bytes()).hexdigest()
    # -T file: PUT with Content-Length (and, above 1 MiB, Expect: 100-continue).
    done = subprocess.run(["curl", "-sS", "--max-time", "60", "-T", str(path), url],
                          capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stderr
    answer = requests.models.complexjson.loads(done.stdout)
    assert answer["sha256"] == expected and answer["content_length"] == str(size)
    # -T -: from stdin, chunked.
    with path.open("rb") as stdin:
        done = subprocess.run(["curl", "-sS", "--max-time", "60", "-T", "-", url], stdin=stdin,
                              capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stderr
    answer = requests.models.complexjson.loads(done.stdout)
    assert answer["sha256"] == expected and answer["content_length"] is None


def raw_app(calls: List[str], unread_ok: threading.Event) -> Callable[..., List[bytes]]:
    """A plain WSGI app: /read reads N bytes (query), /ignore reads nothing."""

    def app(environ: Environ, start_response: StartResponse) -> List[bytes]:
        path = environ["PATH_INFO"]
        calls.append(path)
        if path == "/read":
            data = environ["wsgi.input"].read(int(environ["QUERY_STRING"] or -1))
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"read %d" % len(data)]
        if path == "/broken":
            try:
                environ["wsgi.input"].read()
            except OSError as exc:  # what a broken upload looks like to the app
                calls.append(f"error {type(exc).__name__} {getattr(exc, 'status', None)}")
                unread_ok.set()
                raise
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ignored"]

    return app


Raw = Tuple[int, List[str], threading.Event]


@pytest.fixture
def raw(start_server, threads: int) -> Raw:
    calls: List[str] = []
    event = threading.Event()
    server = start_server(mounted(raw_app(calls, event)), threads=threads,
                          max_body_size=256 * MiB, max_unread_body=64 * 1024)
    return server.address[1], calls, event


def recv_response(sock: socket.socket, buf: bytearray) -> bytes:
    """One response with a Content-Length body from ``sock``."""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        assert chunk, bytes(buf)
        buf += chunk
    end = buf.index(b"\r\n\r\n") + 4
    head = bytes(buf[:end])
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    while len(buf) < end + length:
        chunk = sock.recv(65536)
        assert chunk
        buf += chunk
    response = bytes(buf[:end + length])
    del buf[:end + length]
    return response


def test_small_unread_rest_is_drained_and_the_connection_reused(raw: Raw) -> None:
    port, calls, _ = raw
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        buf = bytearray()
        sock.sendall(b"POST /ignore HTTP/1.1\r\nHost: x\r\nContent-Length: 50000\r\n\r\n")
        first = recv_response(sock, buf)  # answered before the body was sent
        assert first.startswith(b"HTTP/1.1 200 ") and b"Connection: close" not in first
        sock.sendall(b"z" * 50000 + b"POST /read HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                     b"\r\nhello")
        second = recv_response(sock, buf)
        assert second.endswith(b"read 5")
    assert calls == ["/ignore", "/read"]


def test_large_unread_rest_closes_yet_the_client_gets_the_answer(raw: Raw) -> None:
    port, _calls, _ = raw
    # requests sends the whole body before it reads: the server must keep
    # reading (and dropping) it after answering, or the answer would be lost.
    response = requests.post(f"http://127.0.0.1:{port}/ignore", data=b"y" * (16 * MiB),
                             timeout=60)
    assert response.status_code == 200 and response.text == "ignored"
    assert response.headers["Connection"] == "close"
    response = requests.post(f"http://127.0.0.1:{port}/ignore", data=pattern(16 * MiB),
                             timeout=60)  # chunked: its rest is of unknown size
    assert response.status_code == 200 and response.headers["Connection"] == "close"


def test_pipelined_requests_after_a_streamed_body(raw: Raw) -> None:
    port, _calls, _ = raw
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"POST /read HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        sock.sendall(b"4\r\nabcd\r\n")
        sock.sendall(b"3\r\nefg\r\n0\r\n\r\nGET /ignore HTTP/1.1\r\nHost: x\r\n\r\n"
                     b"POST /native HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
                     b"Connection: close\r\n\r\nabc")
        replies = read_until_closed(sock)
    assert replies.count(b"HTTP/1.1 200 ") == 3
    assert b"read 7" in replies and b"ignored" in replies and replies.endswith(b"native 3")


def test_chunked_upload_over_max_body_size_gets_413(start_server, threads: int) -> None:
    calls: List[str] = []
    event = threading.Event()
    port = start_server(mounted(raw_app(calls, event)), threads=threads,
                        max_body_size=MiB).address[1]
    response = requests.post(f"http://127.0.0.1:{port}/broken", data=pattern(4 * MiB),
                             timeout=60)
    assert response.status_code == 413
    assert response.headers["Connection"] == "close"
    assert event.wait(10) and "error RequestBodyError 413" in calls
    # A Content-Length over the limit is refused before the application runs.
    calls.clear()
    response = requests.post(f"http://127.0.0.1:{port}/broken", data=b"x" * (4 * MiB),
                             timeout=60)
    assert response.status_code == 413 and calls == []


def test_client_vanishing_mid_upload_is_an_error_for_the_app_only(raw: Raw) -> None:
    port, calls, event = raw
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"POST /broken HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n"
                     + b"p" * 1000)
    assert event.wait(10)
    assert any(call.startswith("error RequestBodyError") for call in calls)
    assert issubclass(RequestBodyError, OSError)
    assert requests.post(f"http://127.0.0.1:{port}/read", data=b"fine",
                         timeout=10).text == "read 4"


def test_100_continue_waits_for_the_app_to_read(raw: Raw) -> None:
    port, _calls, _ = raw
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        # An app that answers without reading: no 100, and the answer closes.
        sock.sendall(b"POST /ignore HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n"
                     b"Expect: 100-continue\r\n\r\n")
        reply = read_until_closed(sock)
        assert reply.startswith(b"HTTP/1.1 200 ") and b"Connection: close" in reply
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"POST /read HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n"
                     b"Expect: 100-continue\r\n\r\n")
        assert sock.recv(4096) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b"0123456789")
        buf = bytearray()
        assert recv_response(sock, buf).endswith(b"read 10")


def rss_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc")
@pytest.mark.parametrize("mode", ["0", "4"], ids=["reactor", "threads"])
def test_a_64_mib_upload_leaves_server_memory_flat(tmp_path: Path, mode: str) -> None:
    (tmp_path / "hasher.py").write_text(HASHING_APP)
    port = free_port()
    proc = run_server(["--app", "hasher:app", "--host", "127.0.0.1", "--port", str(port),
                       "--threads", mode, "--max-body-size", str(1024 * MiB),
                       "--no-access-log"], cwd=tmp_path,
                      env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    try:
        wait_listening(port, proc)
        url = f"http://127.0.0.1:{port}/upload"
        requests.post(url, data=b"warm up", timeout=10).raise_for_status()
        idle = rss_kib(proc.pid, "VmRSS")
        with open(f"/proc/{proc.pid}/clear_refs", "w") as file:
            file.write("5")  # the peak (VmHWM) starts again from here
        size = 64 * MiB
        answer = requests.post(url, data=pattern(size), timeout=120).json()
        assert answer["size"] == size and answer["sha256"] == sha256_of(pattern(size))
        peak = rss_kib(proc.pid, "VmHWM")  # the highest RSS since clear_refs
        # The body went through a 256 KiB buffer: growth is a few MiB at most.
        assert peak - idle < 16 * 1024, (idle, peak)
    finally:
        proc.send_signal(signal.SIGTERM)
        finish(proc)
