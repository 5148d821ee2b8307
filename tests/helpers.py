"""Small helpers shared by the end-to-end tests (plain functions, no fixtures)."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.client
import os
import shutil
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, NoReturn, Optional, Tuple

import pytest

from wssync.metrics import Metrics


def read_until_closed(sock: socket.socket, timeout: Optional[float] = None) -> bytes:
    """Everything received on ``sock`` until the peer closes the connection (a
    reset counts as the close).  With ``timeout``, a peer that neither sends nor
    closes for that long raises ``socket.timeout``."""
    if timeout is not None:
        sock.settimeout(timeout)
    chunks = []
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def raw_exchange(port: int, data: bytes, half_close: bool = False,
                 timeout: float = 5.0) -> bytes:
    """Send ``data`` on a fresh connection (then half-close if asked) and read
    until the server closes it."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        return read_until_closed(sock)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def missing(why: str) -> NoReturn:
    """A program or library a test needs is not here: the test skips, or fails
    where WSSYNC_REQUIRE_PROXIES is set (CI installs them all: there they must run)."""
    if os.environ.get("WSSYNC_REQUIRE_PROXIES"):
        pytest.fail(f"{why}, and WSSYNC_REQUIRE_PROXIES is set")
    pytest.skip(why)


def required_program(name: str, package: Optional[str] = None) -> str:
    """The installed program ``name`` (on PATH, else in /usr/sbin or /usr/bin); see
    :func:`missing` for where it is not, ``package`` being what installs it."""
    found = shutil.which(name) or next(
        (path for path in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if os.path.exists(path)),
        None)
    if found is None:
        missing(f"{name} is not installed (apt-get install {package or name})")
    return found


def refused(port: int) -> bool:
    """Whether a connection to ``port`` is refused: nothing listens there (any more)."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except (ConnectionRefusedError, ConnectionResetError):
        return True  # refused, or reset: the listening socket closed with us in its queue
    return False


def run_server(args: List[str], cwd: Optional[Path] = None,
               env: Optional[Dict[str, str]] = None) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "wssync", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_listening(port: int, proc: subprocess.Popen[str], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited: {proc.communicate()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError("server did not start listening")


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0,
               interval: float = 0.01) -> bool:
    """Poll ``predicate`` until it holds or ``timeout`` passes; its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def settled(read: Callable[[], Any], quiet: float = 0.3, timeout: float = 10.0) -> Any:
    """``read()`` once its value has not changed for ``quiet`` seconds (or at ``timeout``)."""
    deadline = time.monotonic() + timeout
    last = read()
    since = time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.05)
        now = read()
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            break
    return last


def mask_bytes(payload: bytes, key: bytes) -> bytes:
    n = len(payload)
    if not n:
        return b""
    stream = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(stream, "big")).to_bytes(n, "big")


def frame(opcode: int, payload: bytes = b"", fin: bool = True, mask: bool = True,
          rsv: int = 0) -> bytes:
    """One client frame (masked unless told otherwise)."""
    b0 = (0x80 if fin else 0) | rsv | opcode
    n = len(payload)
    mbit = 0x80 if mask else 0
    if n < 126:
        head = struct.pack("!BB", b0, mbit | n)
    elif n < 65536:
        head = struct.pack("!BBH", b0, mbit | 126, n)
    else:
        head = struct.pack("!BBQ", b0, mbit | 127, n)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + mask_bytes(payload, key)


def finish(proc: subprocess.Popen[str], timeout: float = 15) -> str:
    """Wait for ``proc`` to exit by itself; kill it if it does not (never leave a
    server behind).  Its stderr."""
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        raise AssertionError(f"process did not exit within {timeout} s: {err}") from None
    return err


class RecordingTransport:
    """Stands in for :class:`wssync.io.transport.Transport` in protocol unit tests.

    It offers what a protocol object uses (``reactor``, addresses, ``write``,
    ``close``, ``close_write``, ``abort``, reading flow control, ``set_protocol``)
    and records each call in :attr:`events` instead of touching a socket.  As
    with a real transport whose output buffer is empty, ``close`` and ``abort``
    end the connection at once and call the protocol's ``connection_lost``;
    writes after ``close`` or ``close_write`` are dropped.  Timers go to
    ``reactor``, a real :class:`wssync.io.reactor.Reactor`, which the test runs
    from its own thread with :meth:`run_until`.
    """

    secure = False  # as a plain TCP transport

    def __init__(self, reactor: Any, protocol: Any,
                 peername: Any = ("127.0.0.1", 50000),
                 sockname: Any = ("127.0.0.1", 8080)) -> None:
        self.reactor = reactor
        self.protocol = protocol
        self.peername = peername
        self.sockname = sockname
        self.metrics = Metrics()  # what the layers above count, as a serving run's
        self.bytes_in = self.bytes_out = 0  # (what a WebSocket's byte counts are read off)
        self.events: List[tuple[str, Any]] = []  # ("write", bytes), ("close", None), ...
        self.reading_paused = False
        self.write_eof = False
        self.lost: List[Optional[BaseException]] = []  # connection_lost calls made
        self._closing = False
        self._closed = False

    # -- what a protocol sees -----------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    def is_closing(self) -> bool:
        return self._closing or self._closed

    def write(self, data: bytes) -> None:
        if self._closing or self._closed or self.write_eof or not data:
            return
        self.events.append(("write", bytes(data)))

    def write_control(self, data: bytes) -> None:
        self.write(data)  # recorded as any write: the order is what tests look at

    def get_write_buffer_size(self) -> int:
        return 0  # everything "written" here is taken at once

    def close(self) -> None:
        if self._closing or self._closed:
            return
        self._closing = True
        self.events.append(("close", None))
        self._lose()

    def close_write(self) -> None:
        if self.write_eof or self._closing or self._closed:
            return
        self.write_eof = True
        self.events.append(("close_write", None))

    def abort(self) -> None:
        if self._closed:
            return
        self.events.append(("abort", None))
        self._lose()

    def pause_reading(self) -> None:
        if not self.reading_paused:  # recorded when it changes something, as it acts
            self.reading_paused = True
            self.events.append(("pause_reading", None))

    def resume_reading(self) -> None:
        if self.reading_paused:
            self.reading_paused = False
            self.events.append(("resume_reading", None))

    def set_protocol(self, protocol: Any, leftover: bytes = b"") -> None:
        self.events.append(("set_protocol", (protocol, bytes(leftover))))
        self.protocol = protocol
        protocol.connection_made(self)
        if leftover and not self._closed:
            protocol.data_received(leftover)

    def _lose(self) -> None:
        self._closing = self._closed = True
        self.lost.append(None)
        self.protocol.connection_lost(None)

    # -- what a test looks at -------------------------------------------------------

    @property
    def written(self) -> bytes:
        """Everything written so far, in order."""
        return b"".join(data for kind, data in self.events if kind == "write")

    def kinds(self) -> List[str]:
        """The recorded calls by name, in order."""
        return [kind for kind, _ in self.events]

    def run_until(self, predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
        """Run the reactor on this thread until ``predicate`` holds (checked every
        few milliseconds) or ``timeout`` passes; the predicate's last value."""
        reactor = self.reactor
        deadline = time.monotonic() + timeout

        def check() -> None:
            if predicate() or time.monotonic() >= deadline:
                reactor.stop()
            else:
                reactor.call_later(0.005, check)

        reactor.call_soon(check)
        reactor.run()
        return predicate()


NOTE_MODEL = """\
from django.db import models


class Note(models.Model):
    text = models.CharField(max_length=200)
"""


def django_project(path: Path, files: Dict[str, str]) -> Path:
    """A real Django project made as a developer makes one, in ``path`` (created):
    ``startproject mysite``, ``startapp notes`` with a ``Note`` model (``text``) in
    INSTALLED_APPS, then ``files`` (path in the project -> text: the views and
    URLs) written, migrations made and run on SQLite.  Returns ``path``, where
    ``manage.py`` is.  Needs Django in this interpreter."""

    def manage(*args: str) -> None:
        done = subprocess.run([sys.executable, *args], cwd=path, capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0, done.stderr

    path.mkdir(parents=True, exist_ok=True)
    manage("-m", "django", "startproject", "mysite", ".")
    manage("manage.py", "startapp", "notes")
    settings = path / "mysite" / "settings.py"
    text = settings.read_text()
    assert "INSTALLED_APPS = [\n" in text
    settings.write_text(text.replace("INSTALLED_APPS = [\n", "INSTALLED_APPS = [\n    'notes',\n"))
    (path / "notes" / "models.py").write_text(NOTE_MODEL)
    for name, content in files.items():
        (path / name).write_text(content)
    manage("manage.py", "makemigrations", "notes")
    manage("manage.py", "migrate")
    return path


class SlowReader:
    """A WebSocket client on a raw (optionally TLS) socket that reads at most
    ``rate`` bytes per second, so the server's output really backs up: the
    kernel buffers fill and the server must wait or hold the rest.  It sends
    masked frames, reads unmasked ones, and answers nothing by itself."""

    def __init__(self, port: int, path: str, rate: float,
                 context: Optional[ssl.SSLContext] = None) -> None:
        sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        if context is not None:
            sock = context.wrap_socket(sock, server_hostname="localhost")
        # A small receive buffer: the server sees the slowness soon, not after megabytes.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        self.sock = sock
        self.rate = rate
        self.received = 0  # bytes read off the socket
        self._started = time.monotonic()
        self._buffer = bytearray()
        key = base64.b64encode(os.urandom(16)).decode()
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
                     f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                     "Sec-WebSocket-Version: 13\r\n\r\n".encode())
        while b"\r\n\r\n" not in self._buffer:
            self._fill()
        head, _, rest = bytes(self._buffer).partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        self._buffer = bytearray(rest)

    def send(self, opcode: int, payload: bytes) -> None:
        self.sock.sendall(frame(opcode, payload))

    def _fill(self) -> None:
        # Hold the pace: no more than rate * elapsed bytes read so far.
        ahead = self.received / self.rate - (time.monotonic() - self._started)
        if ahead > 0:
            time.sleep(ahead)
        chunk = self.sock.recv(16 * 1024)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        self.received += len(chunk)
        self._buffer += chunk

    def _take(self, n: int) -> bytes:
        while len(self._buffer) < n:
            self._fill()
        data = bytes(self._buffer[:n])
        del self._buffer[:n]
        return data

    def frame(self) -> Tuple[int, bytes]:
        """The next frame: (opcode, payload); server frames are never masked."""
        b0, b1 = self._take(2)
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack("!H", self._take(2))[0]
        elif n == 127:
            n = struct.unpack("!Q", self._take(8))[0]
        return b0 & 0x0F, self._take(n)

    def message(self) -> Tuple[int, bytes]:
        """The next data or close frame (the server sends messages unfragmented);
        pings are answered, pongs skipped."""
        while True:
            opcode, payload = self.frame()
            if opcode == 0x9:
                self.send(0xA, payload)
            elif opcode != 0xA:
                return opcode, payload

    def close(self) -> None:
        self.sock.close()


# -- a tiny independent RFC 6455 client codec, on raw sockets ---------------------------------
# Written from the RFC, not from wssync's code, so that it can check the server
# (and send what well-behaved clients refuse to send).

WS_HOST = "127.0.0.1"
WS_TIMEOUT = 5.0
WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
WS_KEY = base64.b64encode(b"0123456789abcdef").decode()
_TEXT, _CLOSE, _PING, _PONG = 0x1, 0x8, 0x9, 0xA


def close_payload(code: int, reason: str = "") -> bytes:
    return struct.pack("!H", code) + reason.encode()


def parse_close(payload: bytes) -> Tuple[Optional[int], str]:
    if not payload:
        return None, ""
    return struct.unpack("!H", payload[:2])[0], payload[2:].decode("utf-8")


def accept_for(key: str) -> str:
    """The ``Sec-WebSocket-Accept`` that answers ``key``."""
    return base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()


def handshake_bytes(path: str = "/echo", method: str = "GET",
                    headers: Optional[Dict[str, Optional[str]]] = None) -> bytes:
    """An upgrade request; ``headers`` overrides defaults (a None value drops one)."""
    fields: Dict[str, Optional[str]] = {
        "Host": f"{WS_HOST}",
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": WS_KEY,
        "Sec-WebSocket-Version": "13",
    }
    fields.update(headers or {})
    lines = [f"{method} {path} HTTP/1.1"]
    lines += [f"{name}: {value}" for name, value in fields.items() if value is not None]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def read_head(sock: socket.socket) -> Tuple[int, Dict[str, str], bytes]:
    """Status, headers (lower-case names) and the bytes after the head."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise EOFError(f"connection closed before a response head: {data!r}")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, rest


def http_exchange(port: int, request: bytes) -> Tuple[int, Dict[str, str], bytes]:
    """Send a request on a fresh connection; status, headers and body."""
    with socket.create_connection((WS_HOST, port), timeout=WS_TIMEOUT) as sock:
        sock.sendall(request)
        status, headers, body = read_head(sock)
        length = int(headers.get("content-length", "0"))
        while len(body) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
        return status, headers, body


class RawWS:
    """A hand-driven WebSocket client on a plain socket."""

    def __init__(self, sock: socket.socket, buffered: bytes = b"",
                 headers: Optional[Dict[str, str]] = None) -> None:
        self.sock = sock
        self.buf = bytearray(buffered)
        self.headers = headers or {}

    @classmethod
    def connect(cls, port: int, path: str = "/echo",
                headers: Optional[Dict[str, Optional[str]]] = None,
                rcvbuf: Optional[int] = None) -> RawWS:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.settimeout(WS_TIMEOUT)
        sock.connect((WS_HOST, port))
        sock.sendall(handshake_bytes(path, headers=headers))
        status, resp_headers, rest = read_head(sock)
        assert status == 101, (status, resp_headers)
        assert resp_headers["sec-websocket-accept"] == accept_for(WS_KEY)
        return cls(sock, rest, resp_headers)

    def send(self, opcode: int, payload: bytes = b"", fin: bool = True, mask: bool = True,
             rsv: int = 0) -> None:
        self.sock.sendall(frame(opcode, payload, fin, mask, rsv))

    def send_text(self, text: str) -> None:
        self.send(_TEXT, text.encode())

    def _need(self, n: int) -> None:
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("connection closed by the server")
            self.buf += chunk

    def recv_frame(self, timeout: float = WS_TIMEOUT) -> Tuple[bool, int, bytes]:
        """(fin, opcode, payload) of the next server frame, which must be unmasked."""
        self.sock.settimeout(timeout)
        self._need(2)
        b0, b1 = self.buf[0], self.buf[1]
        assert not b1 & 0x80, "server frames must not be masked"
        assert not b0 & 0x70, "no extension was negotiated: RSV bits must be clear"
        n, header = b1 & 0x7F, 2
        if n == 126:
            self._need(4)
            n, header = struct.unpack_from("!H", self.buf, 2)[0], 4
        elif n == 127:
            self._need(10)
            n, header = struct.unpack_from("!Q", self.buf, 2)[0], 10
        self._need(header + n)
        payload = bytes(self.buf[header:header + n])
        del self.buf[:header + n]
        return bool(b0 & 0x80), b0 & 0x0F, payload

    def recv_data(self, timeout: float = WS_TIMEOUT) -> Tuple[int, bytes]:
        """The next non-control frame (pings are skipped, not answered)."""
        while True:
            fin, opcode, payload = self.recv_frame(timeout)
            if opcode in (_PING, _PONG):
                continue
            assert fin, "the server sent a fragmented message"
            return opcode, payload

    def recv_close(self, timeout: float = WS_TIMEOUT) -> Tuple[Optional[int], str]:
        """Skip frames until the server's close frame; its (code, reason)."""
        while True:
            _fin, opcode, payload = self.recv_frame(timeout)
            if opcode == _CLOSE:
                return parse_close(payload)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


def raw(server: Any, clients: contextlib.ExitStack, path: str = "/echo",
        **kwargs: Any) -> RawWS:
    """A :class:`RawWS` to ``server`` (a started ``wssync.Server``), closed with ``clients``."""
    conn = RawWS.connect(port_of(server), path, **kwargs)
    clients.callback(conn.close)
    return conn


def port_of(server: Any) -> int:
    return int(server.address[1])


def http_get(port: int, path: str = "/health", timeout: float = WS_TIMEOUT) -> Tuple[int, bytes]:
    conn = http.client.HTTPConnection(WS_HOST, port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


class Recorder:
    """Thread-safe record of callback calls, with waiting."""

    def __init__(self) -> None:
        self.calls: List[Any] = []
        self._cond = threading.Condition()

    def add(self, item: Any) -> None:
        with self._cond:
            self.calls.append(item)
            self._cond.notify_all()

    def wait(self, n: int = 1, timeout: float = WS_TIMEOUT,
             where: Callable[[Any], bool] = lambda item: True) -> List[Any]:
        with self._cond:
            self._cond.wait_for(lambda: len([c for c in self.calls if where(c)]) >= n, timeout)
            return [c for c in self.calls if where(c)]


def in_thread(fn: Callable[[], Any]) -> Tuple[threading.Thread, List[Any]]:
    """Run ``fn`` on a new daemon thread; the list gets its result or the exception it raised."""
    outcome: List[Any] = []

    def run() -> None:
        try:
            outcome.append(fn())
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome
