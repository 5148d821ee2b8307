"""Files end to end: ``Response.file`` (ranges, conditional requests) and
``wsgi.file_wrapper`` (Flask's ``send_file``, Django's ``FileResponse``, a plain
WSGI app) over real loopback sockets, in both modes; ``sendfile`` on plain TCP,
bounded chunked reads over TLS; big files through small write buffers, slow
readers, and clients that leave in the middle.

Whether ``sendfile`` (or a read) happened is seen by wrapping ``os.sendfile``
and ``os.pread`` with counters that call the real ones: the socket layer is
never replaced.
"""

from __future__ import annotations

import contextlib
import http.client
import io
import os
import shutil
import socket
import ssl
import struct
import subprocess
import threading
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List

import django
import pytest
import requests
from conftest import TlsFiles
from django.conf import settings
from django.core.wsgi import get_wsgi_application
from django.http import FileResponse
from django.urls import path as django_path
from flask import Flask, send_file
from helpers import settled, wait_until

from wssync import App, Request, Response, Server

KiB = 1024
MiB = 1024 * KiB
SIZE = 12 * MiB + 12345  # not a multiple of any chunk or step size

Environ = Dict[str, Any]
CLOSED_ON: List[str] = []  # thread names that closed a Recording file
ENTERED, RELEASE = threading.Event(), threading.Event()  # /wsgi/slow's handler


class Recording(io.FileIO):
    """A file that notes which thread closed it."""

    def close(self) -> None:
        if not self.closed:
            CLOSED_ON.append(threading.current_thread().name)
        super().close()


@pytest.fixture(scope="module")
def big_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("files") / "big.bin"
    path.write_bytes(os.urandom(SIZE))
    return path


@pytest.fixture
def sendfile_calls(monkeypatch: pytest.MonkeyPatch) -> List[int]:
    """Bytes each real ``os.sendfile`` call sent."""
    calls: List[int] = []
    real = os.sendfile

    def counting(out_fd: int, in_fd: int, offset: int, count: int) -> int:
        sent = real(out_fd, in_fd, offset, count)
        calls.append(sent)
        return sent

    monkeypatch.setattr(os, "sendfile", counting)
    return calls


@pytest.fixture
def pread_calls(monkeypatch: pytest.MonkeyPatch) -> List[int]:
    """Bytes each real ``os.pread`` call read."""
    calls: List[int] = []
    real = os.pread

    def counting(fd: int, size: int, offset: int) -> bytes:
        data = real(fd, size, offset)
        calls.append(len(data))
        return data

    monkeypatch.setattr(os, "pread", counting)
    return calls


def open_count(path: Path) -> int:
    """How many descriptors of this process have ``path`` open."""
    count = 0
    for name in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{name}") == str(path):
                count += 1
        except OSError:
            pass
    return count


def plain_wsgi(path: Path, fallback: Callable[[Environ, Any], Iterable[bytes]]
               ) -> Callable[[Environ, Any], Iterable[bytes]]:
    """A bare PEP 3333 app using ``wsgi.file_wrapper`` under /wsgi/, else ``fallback``."""
    size = path.stat().st_size

    def app(environ: Environ, start_response: Any) -> Iterable[bytes]:
        route = environ["PATH_INFO"]
        wrapper = environ["wsgi.file_wrapper"]
        if route == "/wsgi/file":
            start_response("200 OK", [("Content-Type", "application/octet-stream"),
                                      ("Content-Length", str(size))])
            return wrapper(open(path, "rb"), 32 * KiB)
        if route == "/wsgi/part":  # from the file's position, as many as Content-Length says
            f = open(path, "rb")  # noqa: SIM115
            f.seek(1000)
            start_response("200 OK", [("Content-Length", "5000")])
            return wrapper(f)
        if route == "/wsgi/memory":  # no descriptor: iterated in blocks
            start_response("200 OK", [("Content-Length", str(size))])
            return wrapper(io.BytesIO(path.read_bytes()), 64 * KiB)
        if route == "/wsgi/chunked":  # no Content-Length: chunked, iterated
            start_response("200 OK", [])
            return wrapper(open(path, "rb"))
        if route == "/wsgi/closed-where":  # which thread closes the file
            start_response("200 OK", [("Content-Length", str(size))])
            return wrapper(Recording(str(path), "rb"))
        if route == "/wsgi/slow":  # answers once the test says so
            ENTERED.set()
            RELEASE.wait(30)
            start_response("200 OK", [("Content-Length", str(size))])
            return wrapper(Recording(str(path), "rb"))
        if route == "/wsgi/short":  # promises more than the file has
            start_response("200 OK", [("Content-Length", str(size + 100))])
            return wrapper(open(path, "rb"))
        return fallback(environ, start_response)

    return app


def file_app(path: Path) -> App:
    app = App()

    @app.route("/file")
    def native(request: Request) -> Response:
        return Response.file(path)

    @app.route("/typed")
    def typed(request: Request) -> Response:
        return Response.file(str(path), content_type="application/x-test", etag=False,
                             headers={"Cache-Control": "no-store"})

    @app.route("/missing")
    def missing(request: Request) -> Response:
        return Response.file(path.parent / "no-such-file")

    @app.route("/directory")
    def directory(request: Request) -> Response:
        return Response.file(path.parent)

    flask_app = Flask(__name__)

    @flask_app.route("/flask")
    def flask_file() -> Any:
        return send_file(path)

    app.mount_wsgi(plain_wsgi(path, flask_app))
    return app


@pytest.fixture
def server(start_server: Callable[..., Server], big_file: Path, threads: int) -> Server:
    return start_server(file_app(big_file), threads)


def url(server: Server, path: str) -> str:
    return f"http://127.0.0.1:{server.address[1]}{path}"


def get(conn: http.client.HTTPConnection, path: str, method: str = "GET",
        **headers: str) -> http.client.HTTPResponse:
    conn.request(method, path, headers={k.replace("_", "-"): v for k, v in headers.items()})
    response = conn.getresponse()
    response.body = response.read()  # type: ignore[attr-defined]
    return response


# -- Response.file ----------------------------------------------------------------------


def sent_with_sendfile(calls: List[int], total: int) -> bool:
    """Whether ``total`` bytes went out with sendfile.  The reactor counts a call
    once it returns, which can be after the client has read those bytes: wait."""
    return wait_until(lambda: sum(calls) == total) and sum(calls) == total


def test_response_file_is_sent_with_sendfile(server: Server, big_file: Path,
                                             sendfile_calls: List[int],
                                             pread_calls: List[int]) -> None:
    answer = requests.get(url(server, "/file"), timeout=30)
    assert answer.status_code == 200
    assert answer.content == big_file.read_bytes()
    assert answer.headers["Content-Length"] == str(SIZE)
    assert answer.headers["Content-Type"] == "application/octet-stream"
    assert answer.headers["Accept-Ranges"] == "bytes"
    assert answer.headers["ETag"].startswith('"')
    assert "Last-Modified" in answer.headers
    assert sent_with_sendfile(sendfile_calls, SIZE)  # every body byte went out with sendfile
    assert not pread_calls  # and none through Python
    assert wait_until(lambda: open_count(big_file) == 0)


def test_response_file_ranges_and_conditions_on_one_connection(server: Server,
                                                               big_file: Path) -> None:
    data = big_file.read_bytes()
    conn = http.client.HTTPConnection("127.0.0.1", server.address[1], timeout=30)
    with contextlib.closing(conn):
        for spec, first, last in (("0-99", 0, 99), ("100-", 100, SIZE - 1),
                                  ("-500", SIZE - 500, SIZE - 1), ("5-5", 5, 5),
                                  ("10-99999999999", 10, SIZE - 1)):
            answer = get(conn, "/file", Range=f"bytes={spec}")
            assert answer.status == 206, spec
            assert answer.getheader("Content-Range") == f"bytes {first}-{last}/{SIZE}"
            assert answer.body == data[first:last + 1]  # type: ignore[attr-defined]
        # Several ranges: the whole file, as allowed; nonsense is ignored.
        for spec in ("bytes=0-1,5-6", "bytes=9-3", "items=0-1"):
            answer = get(conn, "/file", Range=spec)
            assert answer.status == 200 and len(answer.body) == SIZE  # type: ignore[attr-defined]
        answer = get(conn, "/file", Range=f"bytes={SIZE}-")
        assert answer.status == 416
        assert answer.getheader("Content-Range") == f"bytes */{SIZE}"
        assert answer.body == b""  # type: ignore[attr-defined]
        # Conditional requests.
        whole = get(conn, "/file", "HEAD")
        assert whole.status == 200 and whole.body == b""  # type: ignore[attr-defined]
        assert whole.getheader("Content-Length") == str(SIZE)
        etag, modified = whole.getheader("ETag"), whole.getheader("Last-Modified")
        assert etag and modified
        assert get(conn, "/file", If_None_Match=etag).status == 304
        assert get(conn, "/file", If_None_Match='"other", ' + etag).status == 304
        assert get(conn, "/file", If_Modified_Since=modified).status == 304
        assert get(conn, "/file", If_None_Match='"other"', If_Modified_Since=modified
                   ).status == 200
        assert get(conn, "/file", If_Modified_Since="Mon, 01 Jan 1990 00:00:00 GMT"
                   ).status == 200
        answer = get(conn, "/file", Range="bytes=0-9", If_Range=etag)
        assert answer.status == 206 and answer.body == data[:10]  # type: ignore[attr-defined]
        answer = get(conn, "/file", Range="bytes=0-9", If_Range='"stale"')
        assert answer.status == 200 and len(answer.body) == SIZE  # type: ignore[attr-defined]
        answer = get(conn, "/file", Range="bytes=0-9", If_Range=modified)
        assert answer.status == 206
        # The same keep-alive connection all along.
        assert len([c for c in server.connections() if c["protocol"] == "http"]) == 1
        assert server.connections()[0]["bytes_out"] > 4 * SIZE
    assert wait_until(lambda: open_count(big_file) == 0)


def test_response_file_options_missing_file_and_directory(server: Server) -> None:
    answer = requests.get(url(server, "/typed"), timeout=30)
    assert answer.headers["Content-Type"] == "application/x-test"
    assert answer.headers["Cache-Control"] == "no-store"
    assert "ETag" not in answer.headers and len(answer.content) == SIZE
    for path in ("/missing", "/directory"):
        answer = requests.get(url(server, path), timeout=5)
        assert answer.status_code == 404
        assert answer.text == "404 Not Found: file not found\n"


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
def test_curl_range(server: Server, big_file: Path) -> None:
    data = big_file.read_bytes()
    for spec, expected in (("10-19", data[10:20]), ("-20", data[-20:]),
                           ("12000000-", data[12000000:])):
        done = subprocess.run(["curl", "-s", "--fail", "--range", spec, url(server, "/file")],
                              capture_output=True, timeout=30)
        assert done.returncode == 0, done.stderr
        assert done.stdout == expected


# -- wsgi.file_wrapper -------------------------------------------------------------------


def test_flask_send_file_goes_out_with_sendfile(server: Server, big_file: Path,
                                                sendfile_calls: List[int]) -> None:
    data = big_file.read_bytes()
    answer = requests.get(url(server, "/flask"), timeout=30)
    assert answer.status_code == 200 and answer.content == data
    assert answer.headers["Content-Length"] == str(SIZE)
    assert sent_with_sendfile(sendfile_calls, SIZE)
    # Werkzeug answers ranges by wrapping the iterable: streamed, still right.
    answer = requests.get(url(server, "/flask"), headers={"Range": "bytes=100-199"},
                          timeout=30)
    assert answer.status_code == 206 and answer.content == data[100:200]
    answer = requests.get(url(server, "/flask"), headers={"If-None-Match":
                                                          answer.headers["ETag"]}, timeout=30)
    assert answer.status_code == 304
    conn = http.client.HTTPConnection("127.0.0.1", server.address[1], timeout=30)
    with contextlib.closing(conn):
        head = get(conn, "/flask", "HEAD")
    assert head.status == 200 and head.getheader("Content-Length") == str(SIZE)
    assert len(head.msg.get_all("Date") or []) == 1  # Werkzeug's own Date is not repeated
    assert wait_until(lambda: open_count(big_file) == 0)


def test_plain_wsgi_file_wrapper(server: Server, big_file: Path,
                                 sendfile_calls: List[int]) -> None:
    data = big_file.read_bytes()
    answer = requests.get(url(server, "/wsgi/file"), timeout=30)
    assert answer.content == data
    assert sent_with_sendfile(sendfile_calls, SIZE)
    answer = requests.get(url(server, "/wsgi/part"), timeout=30)
    assert answer.content == data[1000:6000]  # from the position, Content-Length bytes
    assert sent_with_sendfile(sendfile_calls, SIZE + 5000)
    # Where sendfile cannot apply the wrapper is iterated: same bytes.
    answer = requests.get(url(server, "/wsgi/memory"), timeout=30)
    assert answer.content == data
    answer = requests.get(url(server, "/wsgi/chunked"), timeout=30)
    assert answer.headers["Transfer-Encoding"] == "chunked" and answer.content == data
    assert sent_with_sendfile(sendfile_calls, SIZE + 5000)
    assert wait_until(lambda: open_count(big_file) == 0)


def test_a_wsgi_file_is_closed_on_the_handler_thread(server: Server,
                                                    sendfile_calls: List[int]) -> None:
    # PEP 3333's close() belongs to the application (Django ends its request
    # there): it runs where the application ran, never on the reactor.
    CLOSED_ON.clear()
    for _ in range(2):
        assert len(requests.get(url(server, "/wsgi/closed-where"), timeout=30).content) == SIZE
    assert sent_with_sendfile(sendfile_calls, 2 * SIZE)
    assert wait_until(lambda: len(CLOSED_ON) == 2)
    assert all(name.startswith("wssync-") and name != "wssync-reactor" for name in CLOSED_ON)


def test_a_file_is_closed_when_the_client_left_before_the_answer(server: Server) -> None:
    CLOSED_ON.clear()
    ENTERED.clear()
    RELEASE.clear()
    try:
        with socket.create_connection(server.address, timeout=10) as sock:
            sock.sendall(b"GET /wsgi/slow HTTP/1.1\r\nHost: x\r\n\r\n")
            assert ENTERED.wait(10)
            # A reset: the server loses the connection before the answer exists.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        assert wait_until(lambda: not server.connections())
    finally:
        RELEASE.set()
    assert wait_until(lambda: len(CLOSED_ON) == 1)


def test_a_file_shorter_than_its_content_length_cuts_the_connection(
        server: Server, big_file: Path) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.address[1], timeout=30)
    with contextlib.closing(conn):
        conn.request("GET", "/wsgi/short")
        response = conn.getresponse()
        with pytest.raises(http.client.IncompleteRead) as caught:
            response.read()
        assert len(caught.value.partial) == SIZE  # all the file had, then the end
    assert wait_until(lambda: open_count(big_file) == 0)
    assert requests.get(url(server, "/typed"), timeout=30).status_code == 200


def _django_view(request: Any) -> FileResponse:
    return FileResponse(open(_DJANGO_FILE[0], "rb"))


_DJANGO_FILE: List[Path] = []
urlpatterns = [django_path("django", _django_view)]  # this module is Django's ROOT_URLCONF


def test_django_file_response_goes_out_with_sendfile(start_server: Callable[..., Server],
                                                     big_file: Path, threads: int,
                                                     sendfile_calls: List[int]) -> None:
    if not settings.configured:
        settings.configure(DEBUG=False, ALLOWED_HOSTS=["*"], ROOT_URLCONF=__name__,
                           SECRET_KEY="test only", MIDDLEWARE=[], INSTALLED_APPS=[])
    django.setup()
    _DJANGO_FILE[:] = [big_file]
    app = App()
    app.mount_wsgi(get_wsgi_application())
    server = start_server(app, threads)
    answer = requests.get(url(server, "/django"), timeout=30)
    assert answer.status_code == 200 and answer.content == big_file.read_bytes()
    assert answer.headers["Content-Length"] == str(SIZE)
    assert sent_with_sendfile(sendfile_calls, SIZE)
    assert wait_until(lambda: open_count(big_file) == 0)


# -- clients that leave, slow clients, small buffers --------------------------------------


def test_client_leaving_mid_download_closes_the_file(server: Server, big_file: Path) -> None:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * KiB)
        sock.connect(server.address)
        sock.sendall(b"GET /file HTTP/1.1\r\nHost: x\r\n\r\n")
        received = 0
        while received < 256 * KiB:
            received += len(sock.recv(64 * KiB))
        assert open_count(big_file) == 1  # still sending
        # Reset, not FIN: the way a killed client leaves.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    assert wait_until(lambda: open_count(big_file) == 0)
    assert wait_until(lambda: not server.connections())
    assert len(requests.get(url(server, "/file"), timeout=30).content) == SIZE


def test_slow_reader_through_small_write_buffers(start_server: Callable[..., Server],
                                                 big_file: Path, threads: int,
                                                 sendfile_calls: List[int]) -> None:
    # The file is far larger than max_write_buffer: the region is not memory,
    # so the peer is not dropped, and it is sent only as fast as it is read.
    server = start_server(file_app(big_file), threads, write_high_water=16 * KiB,
                          max_write_buffer=64 * KiB)
    data = big_file.read_bytes()
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * KiB)
        sock.connect(server.address)
        sock.settimeout(30)
        # Two pipelined requests: the second answer queues behind the first file.
        sock.sendall(b"GET /file HTTP/1.1\r\nHost: x\r\n\r\n"
                     b"GET /wsgi/part HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        chunks = [sock.recv(64 * KiB)]
        sent_while_paused = settled(lambda: sum(sendfile_calls))
        # Kernel socket buffers, not the file: far less than the 12 MiB.
        assert sent_while_paused < 8 * MiB, sent_while_paused
        while True:
            chunk = sock.recv(64 * KiB)
            if not chunk:
                break
            chunks.append(chunk)
    received = b"".join(chunks)
    first_head, _, rest = received.partition(b"\r\n\r\n")
    assert first_head.startswith(b"HTTP/1.1 200 OK")
    assert rest[:SIZE] == data
    second_head, _, second = rest[SIZE:].partition(b"\r\n\r\n")
    assert second_head.startswith(b"HTTP/1.1 200 OK") and second == data[1000:6000]
    assert sent_with_sendfile(sendfile_calls, SIZE + 5000)
    assert wait_until(lambda: open_count(big_file) == 0)


# -- TLS: no sendfile, bounded reads ------------------------------------------------------


def test_tls_reads_the_file_in_bounded_chunks(start_server: Callable[..., Server],
                                              big_file: Path, threads: int,
                                              tls_files: TlsFiles, sendfile_calls: List[int],
                                              pread_calls: List[int]) -> None:
    from wssync.io.filesend import FILE_CHUNK

    server = start_server(file_app(big_file), threads, ssl_context=tls_files.server_context(),
                          write_high_water=16 * KiB, max_write_buffer=64 * KiB)
    data = big_file.read_bytes()
    base = f"https://localhost:{server.address[1]}"
    for path in ("/file", "/flask"):
        answer = requests.get(base + path, verify=str(tls_files.ca), timeout=30)
        assert answer.status_code == 200 and answer.content == data
    answer = requests.get(base + "/file", headers={"Range": "bytes=7-1000006"},
                          verify=str(tls_files.ca), timeout=30)
    assert answer.status_code == 206 and answer.content == data[7:1000007]
    assert not sendfile_calls  # the kernel would send plain text
    assert max(pread_calls) <= FILE_CHUNK
    # A slow reader: the server reads the file only as fast as the client takes it.
    pread_calls.clear()
    context = tls_files.client_context()
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * KiB)
    with context.wrap_socket(raw, server_hostname="localhost") as sock:
        sock.settimeout(30)
        sock.connect(server.address)
        sock.sendall(b"GET /file HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        chunks = [sock.recv(64 * KiB)]
        read_while_paused = settled(lambda: sum(pread_calls))
        assert read_while_paused < 8 * MiB, read_while_paused
        while True:
            try:
                chunk = sock.recv(64 * KiB)
            except ssl.SSLEOFError:
                break
            if not chunk:
                break
            chunks.append(chunk)
    assert b"".join(chunks).partition(b"\r\n\r\n")[2] == data
    assert sum(pread_calls) == SIZE
    assert wait_until(lambda: open_count(big_file) == 0)
