"""Shared fixtures: real servers on loopback port 0, always stopped after the test."""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator, List, NamedTuple, Optional

import pytest
from helpers import free_port, missing, required_program

from wssync import App, Server


@pytest.fixture(params=[0, 4], ids=["reactor", "threads"])
def threads(request: pytest.FixtureRequest) -> int:
    """Run the test once in reactor mode and once in thread-pool mode."""
    return int(request.param)


@pytest.fixture
def start_server() -> Iterator[Callable[..., Server]]:
    """``start_server(app, threads=0, **settings)`` -> a started Server on 127.0.0.1:0."""
    servers: List[Server] = []

    def start(app: App, threads: int = 0, host: str = "127.0.0.1", **settings: Any) -> Server:
        server = Server(app, host, 0, threads=threads, **settings)
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop(timeout=10)


@pytest.fixture
def clients() -> Iterator[contextlib.ExitStack]:
    """Closes every client a test opened, even when it fails."""
    with contextlib.ExitStack() as stack:
        yield stack


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    """Every test must leave no server thread behind."""
    before = set(threading.enumerate())
    yield
    leaked = [t for t in threading.enumerate()
              if t not in before and t.name.startswith("wssync") and t.is_alive()]
    for thread in leaked:
        thread.join(3)
    leaked = [t for t in leaked if t.is_alive()]
    assert not leaked, f"threads left running: {leaked}"


class TlsFiles(NamedTuple):
    """A private CA and certificates it signed, as PEM files (see ``tls_files``)."""

    ca: Path  # the CA certificate clients trust
    cert: Path  # server certificate for localhost and 127.0.0.1
    key: Path
    renewed_cert: Path  # the same names, a new key and serial (a renewal)
    renewed_key: Path
    other_cert: Path  # for other.example only: a host name mismatch on loopback
    other_key: Path
    client_cert: Path  # a client certificate (CN=test client) for mutual TLS
    client_key: Path
    encrypted_key: Path  # ``key`` encrypted with the password "secret"

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca))

    def server_context(self) -> ssl.SSLContext:
        from wssync.io.tls import server_context

        return server_context(str(self.cert), str(self.key))


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _issue(cwd: Path, name: str, subject: str, extensions: str) -> None:
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", subject, cwd=cwd)
    (cwd / f"{name}.ext").write_text(extensions)
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
             "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext",
             cwd=cwd)


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    """A test CA and certificates, made with the ``openssl`` command once per run."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed (apt-get install openssl)")
    cwd = tmp_path_factory.mktemp("tls")
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=wssync test CA",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=cwd)
    server_ext = "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n"
    _issue(cwd, "server", "/CN=localhost", server_ext)
    _issue(cwd, "renewed", "/CN=localhost", server_ext)
    _issue(cwd, "other", "/CN=other.example",
           "subjectAltName=DNS:other.example\nextendedKeyUsage=serverAuth\n")
    _issue(cwd, "client", "/CN=test client", "extendedKeyUsage=clientAuth\n")
    _openssl("pkey", "-in", "server.key", "-out", "encrypted.key", "-aes256",
             "-passout", "pass:secret", cwd=cwd)
    return TlsFiles(cwd / "ca.pem", cwd / "server.pem", cwd / "server.key",
                    cwd / "renewed.pem", cwd / "renewed.key", cwd / "other.pem",
                    cwd / "other.key", cwd / "client.pem", cwd / "client.key",
                    cwd / "encrypted.key")


class RedisServer:
    """A real ``redis-server`` on a free loopback port, without persistence; it can
    be killed and started again on the same port (an outage, then recovery)."""

    def __init__(self, binary: str, directory: Path) -> None:
        self.binary = binary
        self.directory = directory
        self.port = free_port()
        self.proc: Optional[subprocess.Popen[bytes]] = None

    def url(self, channel: str = "") -> str:
        return f"redis://127.0.0.1:{self.port}/0" + (f"?channel={channel}" if channel else "")

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        log = open(self.directory / "redis.log", "ab")  # noqa: SIM115 (closed below)
        with log:
            self.proc = subprocess.Popen(
                [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--dir", str(self.directory)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("redis-server exited: "
                                     + (self.directory / "redis.log").read_text()[-2000:])
            if self.ping():
                return
            time.sleep(0.02)
        raise AssertionError("redis-server did not answer PING")

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Stop it abruptly (SIGKILL: no goodbye to its clients), and wait for the end."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(15)

    def restart(self) -> None:
        self.kill()
        self.start()


def redis_binary() -> str:
    """The redis-server to run; skips where it or the redis client library is
    missing, unless WSSYNC_REQUIRE_PROXIES is set (CI installs them: there the
    tests must run)."""
    binary = required_program("redis-server")
    try:
        import redis  # noqa: F401
    except ImportError:
        missing("the redis client library is not installed (pip install 'wssync[redis]')")
    return binary


@pytest.fixture
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A started :class:`RedisServer`, always stopped afterwards (see :func:`redis_binary`)."""
    server = RedisServer(redis_binary(), tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.kill(signal.SIGTERM)


@pytest.fixture
def browser() -> Iterator[Any]:
    """Headless Chromium through playwright, closed afterwards; the test skips
    where either is missing."""
    sync_api = pytest.importorskip("playwright.sync_api")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("no Chromium on this machine")
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=chromium,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"])
        try:
            yield launched
        finally:
            launched.close()
