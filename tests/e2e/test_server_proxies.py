"""wssync behind real proxies: Debian's nginx and HAProxy, started here on loopback with
the configurations of README.rst's Deployment section as written (only the placeholders
filled in, and timeouts shortened where a test waits for them).

Also the client's address without a proxy in the way: forwarded headers from untrusted
peers, PROXY protocol headers written by hand, and Unix domain sockets.  Clients connect
from 127.0.0.2 (Linux routes all of 127/8 to the loopback), so that the proxy's peer,
127.0.0.1, and the client it names are different addresses.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import re
import shutil
import signal
import socket
import stat
import struct
import subprocess
import tempfile
import textwrap
from http.client import HTTPConnection, HTTPSConnection
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import pytest
from helpers import finish, free_port, read_until_closed, required_program, run_server, wait_until
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect, unix_connect

from wssync import App, Server

README = Path(__file__).resolve().parents[2] / "README.rst"
CLIENT = "127.0.0.2"  # where test clients connect from
BIG = 16 * 1024 * 1024  # the default max_message_size


def _client_address_usable() -> bool:
    try:
        with socket.socket() as sock:
            sock.bind((CLIENT, 0))
    except OSError:
        return False
    return True


needs_second_loopback = pytest.mark.skipif(
    not _client_address_usable(), reason=f"cannot bind {CLIENT} (not Linux?)")


# -- README.rst's configurations ----------------------------------------------------------------


def readme_block(title: str) -> str:
    """The code block of README.rst whose first line is the comment ``# title``
    (without that line)."""
    text = README.read_text(encoding="utf-8")
    for match in re.finditer(r"^\.\. code-block:: \w+\n\n((?:(?: {4}.*)?\n)+)", text, re.M):
        first, _, rest = textwrap.dedent(match.group(1)).partition("\n")
        if first.strip() == f"# {title}":
            return rest
    raise AssertionError(f"README.rst has no code block titled {title!r}")


def fill(block: str, complete: bool = True, **values: str) -> str:
    """Replace each ``{name}`` placeholder; with ``complete``, none may be left."""
    for name, value in values.items():
        assert "{" + name + "}" in block, name
        block = block.replace("{" + name + "}", value)
    left = re.findall(r"\{[a-z_]+\}", block)
    assert not (complete and left), f"placeholders left: {left}"
    return block


def replace_once(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, f"{old!r} is not in the configuration exactly once"
    return text.replace(old, new)


def nginx_config(backend: str, listen: str, idle: Optional[str] = None, tls: Any = None,
                 socket_path: Optional[str] = None) -> str:
    config = readme_block("wssync behind nginx")
    if socket_path is not None:
        upstream = readme_block("wssync on a Unix socket").rstrip("\n")
        config = replace_once(config, "    server {backend};", upstream)
    if tls is not None:
        lines = readme_block("TLS at nginx").rstrip("\n")
        config = replace_once(config, "    listen {listen};", lines)
        config = fill(config, False, certfile=str(tls.cert), keyfile=str(tls.key))
    if idle is not None:
        config = replace_once(config, "proxy_read_timeout 60s;", f"proxy_read_timeout {idle};")
        config = replace_once(config, "proxy_send_timeout 60s;", f"proxy_send_timeout {idle};")
    if socket_path is not None:
        return fill(config, socket=socket_path, listen=listen)
    return fill(config, backend=backend, listen=listen)


def haproxy_config(backend: str, listen: str, idle: Optional[str] = None,
                   proxy_version: Optional[int] = None) -> str:
    if proxy_version is None:
        config = readme_block("wssync behind HAProxy")
        if idle is not None:
            config = replace_once(config, "timeout tunnel 60s", f"timeout tunnel {idle}")
    else:
        config = readme_block("wssync behind HAProxy in TCP mode, with the PROXY protocol")
        if proxy_version == 1:
            config = replace_once(config, "send-proxy-v2", "send-proxy")
    return fill(config, backend=backend, listen=listen)


# -- running the proxies ------------------------------------------------------------------------


class RunningProxy:
    """A proxy process in the foreground, listening on ``port``; always stopped."""

    def __init__(self, command: List[str], port: int, log: Path) -> None:
        self.port = port
        self.log = log
        self.proc = subprocess.Popen(command, stdin=subprocess.DEVNULL,
                                     stdout=log.open("ab"), stderr=subprocess.STDOUT)
        if not wait_until(self._listening, timeout=20, interval=0.05):
            self.stop()
            raise AssertionError(f"{command[0]} did not start: {self.output()}")

    def _listening(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"proxy exited: {self.output()}")
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
        except OSError:
            return False
        return True

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


ProxyStarter = Callable[..., RunningProxy]


@pytest.fixture
def nginx(tmp_path: Path) -> Iterator[ProxyStarter]:
    """``nginx(backend_port=..., idle=None, tls=None, socket_path=None)``: nginx in front
    of wssync with README.rst's configuration."""
    binary = required_program("nginx")
    running: List[RunningProxy] = []

    def start(backend_port: int = 0, **options: Any) -> RunningProxy:
        port = free_port()
        root = tmp_path / f"nginx-{len(running)}"
        root.mkdir()
        server = nginx_config(f"127.0.0.1:{backend_port}", f"127.0.0.1:{port}", **options)
        temp = "\n".join(f"    {kind}_temp_path {root}/{kind};"
                         for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        # As root, workers run as root too: they must reach the test's private files.
        user = "user root;\n" if os.geteuid() == 0 else ""
        conf = root / "nginx.conf"
        conf.write_text(
            f"{user}worker_processes 1;\npid {root}/nginx.pid;\n"
            f"error_log {root}/error.log info;\n"
            "events { worker_connections 1024; }\n"
            f"http {{\n    access_log off;\n{temp}\n{textwrap.indent(server, '    ')}}}\n")
        proxy = RunningProxy([binary, "-p", str(root), "-c", str(conf), "-e",
                              str(root / "error.log"), "-g", "daemon off;"], port,
                             root / "output.log")
        running.append(proxy)
        return proxy

    try:
        yield start
    finally:
        for proxy in running:
            proxy.stop()


@pytest.fixture
def haproxy(tmp_path: Path) -> Iterator[ProxyStarter]:
    """``haproxy(backend_port=..., idle=None, proxy_version=None)``: HAProxy in front of
    wssync with README.rst's configuration."""
    binary = required_program("haproxy")
    running: List[RunningProxy] = []

    def start(backend_port: int, **options: Any) -> RunningProxy:
        port = free_port()
        conf = tmp_path / f"haproxy-{len(running)}.cfg"
        conf.write_text(haproxy_config(f"127.0.0.1:{backend_port}", f"127.0.0.1:{port}",
                                       **options))
        proxy = RunningProxy([binary, "-f", str(conf), "-db"], port,
                             tmp_path / f"haproxy-{len(running)}.log")
        running.append(proxy)
        return proxy

    try:
        yield start
    finally:
        for proxy in running:
            proxy.stop()


@pytest.fixture(params=["nginx", "haproxy"])
def proxy(request: pytest.FixtureRequest) -> ProxyStarter:
    """Each test once behind nginx and once behind HAProxy."""
    return request.getfixturevalue(str(request.param))  # type: ignore[no-any-return]


# -- the application behind them ----------------------------------------------------------------


class Fixture:
    """An app that reports who it sees, echoes, and records closes."""

    def __init__(self) -> None:
        self.app = App()
        self.closes: List[Tuple[int, str]] = []
        self.calls = 0
        app = self.app

        @app.route("/who", methods=["GET", "POST"])
        def who(request: Any) -> Dict[str, Any]:
            self.calls += 1
            addr = request.remote_addr
            return {"remote": addr[0] if isinstance(addr, tuple) else addr,
                    "scheme": request.scheme, "body": request.text}

        def on_close(ws: Any, code: int, reason: str) -> None:
            self.closes.append((code, reason))

        @app.websocket("/echo", on_close=on_close)
        def echo(ws: Any, message: Any) -> None:
            if message == "close 4001":
                ws.close(4001, "server says bye")
            elif message == "who":
                addr = ws.remote_address
                ws.send(json.dumps({"remote": addr[0] if isinstance(addr, tuple) else addr,
                                    "scheme": ws.request.scheme}))
            else:
                ws.send(message)

        @app.websocket("/news")
        def news(ws: Any, message: Any) -> None:
            pass

        def wsgi(environ: Dict[str, Any], start_response: Any) -> List[bytes]:
            start_response("200 OK", [("Content-Type", "application/json")])
            return [json.dumps({"REMOTE_ADDR": environ["REMOTE_ADDR"],
                                "wsgi.url_scheme": environ["wsgi.url_scheme"]}).encode()]

        app.mount_wsgi(wsgi)


def http_json(port: int, path: str, source: str = CLIENT) -> Any:
    conn = HTTPConnection("127.0.0.1", port, timeout=10, source_address=(source, 0))
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        assert response.status == 200, response.read()
        return json.loads(response.read())
    finally:
        conn.close()


def ws_connect(port: int, path: str = "/echo", source: str = CLIENT,
               **options: Any) -> ClientConnection:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))
    return connect(f"ws://127.0.0.1:{port}{path}", sock=sock, open_timeout=10,
                   close_timeout=10, max_size=None, compression=None, **options)


# -- through nginx and HAProxy ------------------------------------------------------------------


@needs_second_loopback
def test_keep_alive_requests(proxy: ProxyStarter, threads: int, start_server: Any) -> None:
    fx = Fixture()
    server = start_server(fx.app, threads)
    port = proxy(server.port).port
    conn = HTTPConnection("127.0.0.1", port, timeout=10, source_address=(CLIENT, 0))
    try:
        first_socket = None
        for n in range(4):
            if n % 2:
                conn.request("POST", "/who", body=f"body {n}".encode())
            else:
                conn.request("GET", "/who")
            response = conn.getresponse()
            got = json.loads(response.read())
            assert response.status == 200
            assert got == {"remote": CLIENT, "scheme": "http",
                           "body": f"body {n}" if n % 2 else ""}
            assert not response.will_close
            first_socket = first_socket or conn.sock
            assert conn.sock is first_socket  # one client connection for every request
    finally:
        conn.close()
    assert fx.calls == 4


@needs_second_loopback
def test_websocket_echo_big_messages_pings_and_close_codes(proxy: ProxyStarter, threads: int,
                                                           start_server: Any) -> None:
    fx = Fixture()
    server = start_server(fx.app, threads)
    port = proxy(server.port).port
    with ws_connect(port) as ws:
        ws.send("hello")
        assert ws.recv(timeout=10) == "hello"
        ws.send(b"\x00\xffbinary")
        assert ws.recv(timeout=10) == b"\x00\xffbinary"
        big = os.urandom(BIG)
        ws.send(big)
        assert ws.recv(timeout=60) == big  # 16 MiB up, and the same 16 MiB down
        assert ws.ping(b"are you there").wait(10)  # the server's pong came back
        ws.send("close 4001")
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=10)
    assert ws.close_code == 4001 and ws.close_reason == "server says bye"
    assert wait_until(lambda: fx.closes == [(4001, "server says bye")])
    with ws_connect(port) as ws:
        ws.send("hi")
        assert ws.recv(timeout=10) == "hi"
        ws.close(4002, "client says bye")
    assert wait_until(lambda: (4002, "client says bye") in fx.closes)


@needs_second_loopback
def test_broadcast_reaches_clients_behind_the_proxy(proxy: ProxyStarter, threads: int,
                                                   start_server: Any) -> None:
    fx = Fixture()
    server = start_server(fx.app, threads)
    port = proxy(server.port).port
    with contextlib.ExitStack() as stack:
        clients = [stack.enter_context(ws_connect(port, "/news")) for _ in range(3)]
        assert wait_until(lambda: len(server.websockets) == 3)
        server.broadcast("news for all", path="/news")
        server.broadcast(b"\x01\x02")
        for ws in clients:
            assert ws.recv(timeout=10) == "news for all"
            assert ws.recv(timeout=10) == b"\x01\x02"


@needs_second_loopback
def test_idle_websocket_outlives_the_proxy_timeout_thanks_to_pings(
        proxy: ProxyStarter, threads: int, start_server: Any) -> None:
    fx = Fixture()
    server = start_server(fx.app, threads, ping_interval=0.5, ping_timeout=10)
    port = proxy(server.port, idle="2s").port
    with ws_connect(port, ping_interval=None) as ws:  # only the server's pings flow
        ws.send("before")
        assert ws.recv(timeout=10) == "before"
        with pytest.raises(TimeoutError):
            ws.recv(timeout=4)  # idle, twice the proxy's timeout: nothing comes, nothing ends
        ws.send("after")
        assert ws.recv(timeout=10) == "after"


@needs_second_loopback
def test_without_pings_the_proxy_cuts_an_idle_websocket(proxy: ProxyStarter,
                                                        start_server: Any) -> None:
    # The control for the test above: its short proxy timeout is real.
    fx = Fixture()
    server = start_server(fx.app, 0, ping_interval=0)
    port = proxy(server.port, idle="2s").port
    with ws_connect(port, ping_interval=None) as ws:
        ws.send("before")
        assert ws.recv(timeout=10) == "before"
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=30)
    assert wait_until(lambda: fx.closes != [])  # the server saw it end too


@needs_second_loopback
def test_the_app_sees_the_real_client(proxy: ProxyStarter, threads: int, start_server: Any,
                                      caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="wssync.access")
    fx = Fixture()
    server = start_server(fx.app, threads)
    port = proxy(server.port).port
    assert http_json(port, "/who") == {"remote": CLIENT, "scheme": "http", "body": ""}
    assert http_json(port, "/wsgi") == {"REMOTE_ADDR": CLIENT, "wsgi.url_scheme": "http"}
    with ws_connect(port) as ws:
        ws.send("who")
        assert json.loads(ws.recv(timeout=10)) == {"remote": CLIENT, "scheme": "http"}
        [entry] = [c for c in server.connections() if c["protocol"] == "websocket"]
        assert entry["client_addr"] == CLIENT and entry["client_port"] == 0
        assert entry["peer_addr"] == "127.0.0.1"  # the proxy
    lines = [r.getMessage() for r in caplog.records if r.name == "wssync.access"]
    assert any(line.startswith(f'{CLIENT} "GET /who ') for line in lines), lines
    assert any(line.startswith(f'{CLIENT} "GET /echo ') for line in lines), lines
    assert not any(line.startswith("127.0.0.1 ") for line in lines), lines


@needs_second_loopback
def test_tls_at_nginx(nginx: ProxyStarter, threads: int, start_server: Any,
                      tls_files: Any) -> None:
    fx = Fixture()
    server = start_server(fx.app, threads)
    port = nginx(server.port, tls=tls_files).port
    context = tls_files.client_context()
    conn = HTTPSConnection("127.0.0.1", port, timeout=10, source_address=(CLIENT, 0),
                           context=context)
    try:
        conn.request("GET", "/who")
        assert json.loads(conn.getresponse().read()) == {"remote": CLIENT, "scheme": "https",
                                                         "body": ""}
        conn.request("GET", "/wsgi")
        assert json.loads(conn.getresponse().read()) == {"REMOTE_ADDR": CLIENT,
                                                         "wsgi.url_scheme": "https"}
    finally:
        conn.close()
    with connect(f"wss://127.0.0.1:{port}/echo", ssl=context, open_timeout=10) as ws:
        ws.send("who")
        assert json.loads(ws.recv(timeout=10))["scheme"] == "https"


# -- forwarded headers from whom ----------------------------------------------------------------


def raw_request(port: int, head: str, source: str = CLIENT) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10,
                                  source_address=(source, 0)) as sock:
        sock.sendall(head.encode() + b"Connection: close\r\n\r\n")
        return read_until_closed(sock)


def body_of(response: bytes) -> Any:
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), response
    return json.loads(body)


SPOOF = ("GET /who HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 198.51.100.7\r\n"
         "X-Forwarded-Proto: https\r\n")


@needs_second_loopback
def test_forwarded_headers_from_an_untrusted_peer_are_ignored(threads: int,
                                                              start_server: Any) -> None:
    fx = Fixture()
    server = start_server(fx.app, threads)  # forwarded_allow_ips: 127.0.0.1
    assert body_of(raw_request(server.port, SPOOF, source=CLIENT)) == \
        {"remote": CLIENT, "scheme": "http", "body": ""}
    forwarded = "GET /who HTTP/1.1\r\nHost: x\r\nForwarded: for=198.51.100.7;proto=https\r\n"
    assert body_of(raw_request(server.port, forwarded, source=CLIENT))["remote"] == CLIENT
    # The same request from the trusted address is believed.
    assert body_of(raw_request(server.port, SPOOF, source="127.0.0.1")) == \
        {"remote": "198.51.100.7", "scheme": "https", "body": ""}


@needs_second_loopback
def test_forwarded_allow_ips_names_whom_to_trust(start_server: Any) -> None:
    fx = Fixture()
    server = start_server(fx.app, forwarded_allow_ips="127.0.0.0/30")
    assert body_of(raw_request(server.port, SPOOF))["remote"] == "198.51.100.7"
    nobody = start_server(fx.app, forwarded_allow_ips="")
    assert body_of(raw_request(nobody.port, SPOOF, source="127.0.0.1"))["remote"] == "127.0.0.1"


def test_a_bad_forwarded_allow_ips_entry_is_refused() -> None:
    with pytest.raises(ValueError, match="'localhost' is not an IP address"):
        Server(App(), "127.0.0.1", 0, forwarded_allow_ips="127.0.0.1, localhost")


# -- the PROXY protocol -------------------------------------------------------------------------


@needs_second_loopback
@pytest.mark.parametrize("version", [1, 2])
def test_haproxy_send_proxy(haproxy: ProxyStarter, threads: int, start_server: Any,
                            version: int) -> None:
    fx = Fixture()
    # Headers are believed from nobody: only the PROXY header can name the client.
    server = start_server(fx.app, threads, proxy_protocol=True, forwarded_allow_ips="")
    port = haproxy(server.port, proxy_version=version).port
    assert http_json(port, "/who") == {"remote": CLIENT, "scheme": "http", "body": ""}
    assert http_json(port, "/wsgi")["REMOTE_ADDR"] == CLIENT
    with ws_connect(port) as ws:
        ws.send("who")
        assert json.loads(ws.recv(timeout=10))["remote"] == CLIENT
        big = os.urandom(1024 * 1024)
        ws.send(big)
        assert ws.recv(timeout=30) == big
        [entry] = [c for c in server.connections() if c["protocol"] == "websocket"]
        assert entry["client_addr"] == CLIENT and entry["client_port"] != 0
        assert entry["peer_addr"] == "127.0.0.1"  # HAProxy


def proxy_v2(source: str, port: int, command: int = 1) -> bytes:
    block = socket.inet_aton(source) + socket.inet_aton("127.0.0.1") + struct.pack("!HH",
                                                                                  port, 80)
    return (b"\r\n\r\n\x00\r\nQUIT\n" + bytes([0x20 | command, 0x11])
            + struct.pack("!H", len(block)) + block)


WHO = b"GET /who HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"


def exchange(port: int, data: bytes, pieces: int = 1) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        step = -(-len(data) // pieces)
        for start in range(0, len(data), step):
            sock.sendall(data[start:start + step])
        return read_until_closed(sock)


@pytest.mark.parametrize("header, remote", [
    (b"PROXY TCP4 198.51.100.7 127.0.0.1 4711 80\r\n", "198.51.100.7"),
    (b"PROXY TCP6 2001:db8::7 ::1 4711 80\r\n", "2001:db8::7"),
    (b"PROXY UNKNOWN\r\n", "127.0.0.1"),  # no client named: the peer stands
    (proxy_v2("198.51.100.7", 4711), "198.51.100.7"),
    (proxy_v2("198.51.100.7", 4711, command=0), "127.0.0.1"),  # LOCAL: the proxy itself
], ids=["v1-tcp4", "v1-tcp6", "v1-unknown", "v2-proxy", "v2-local"])
@pytest.mark.parametrize("pieces", [1, 7])
def test_proxy_headers_by_hand(start_server: Any, threads: int, header: bytes, remote: str,
                               pieces: int) -> None:
    fx = Fixture()
    server = start_server(fx.app, threads, proxy_protocol=True)
    assert body_of(exchange(server.port, header + WHO, pieces))["remote"] == remote


@pytest.mark.parametrize("data", [
    WHO,  # no header at all
    b"PROXY TCP4 198.51.100.7 127.0.0.1 4711\r\n" + WHO,
    b"PROXY TCP4 198.51.100.7 127.0.0.1 4711 80\n" + WHO,
    b"PROXY UNKNOWN " + b"x" * 200 + b"\r\n" + WHO,
    b"\r\n\r\n\x00\r\nQUIT\n\x31\x11\x00\x0c" + bytes(12) + WHO,  # version 3
    b"\x16\x03\x01\x00\x05hello",  # TLS where the header should be
], ids=["none", "v1-no-port", "v1-lf", "v1-too-long", "v2-version-3", "tls"])
def test_malformed_proxy_headers_close_without_a_handler(start_server: Any, threads: int,
                                                         data: bytes) -> None:
    fx = Fixture()
    server = start_server(fx.app, threads, proxy_protocol=True)
    assert exchange(server.port, data) == b""
    assert exchange(server.port, b"PROXY UNKNOWN\r\n" + WHO) != b""  # the server goes on
    assert fx.calls == 1


def test_a_proxy_header_that_never_completes_times_out(start_server: Any) -> None:
    fx = Fixture()
    server = start_server(fx.app, proxy_protocol=True, proxy_protocol_timeout=0.5)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(proxy_v2("198.51.100.7", 4711)[:20])  # truncated, and nothing more
        assert read_until_closed(sock, timeout=10) == b""  # closed well before 10 s
    assert fx.calls == 0


def test_proxy_protocol_and_tls_at_wssync_are_refused(tls_files: Any) -> None:
    with pytest.raises(ValueError, match="proxy_protocol"):
        Server(App(), "127.0.0.1", 0, ssl_context=tls_files.server_context(),
               proxy_protocol=True)


# -- Unix domain sockets ------------------------------------------------------------------------


def unix_exchange(path: str, data: bytes) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(path)
        sock.sendall(data)
        return read_until_closed(sock)


def _unix_listening(path: str) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        try:
            sock.connect(path)
        except OSError:
            return False
    return True


@pytest.fixture
def socket_path() -> Iterator[str]:
    # AF_UNIX paths are short (108 bytes): pytest's tmp_path can be too deep.
    directory = tempfile.mkdtemp(prefix="wssync-uds-")
    try:
        yield os.path.join(directory, "wssync.sock")
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def test_uds_serves_http_and_websocket(socket_path: str, threads: int, start_server: Any,
                                       caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="wssync.access")
    fx = Fixture()
    server = start_server(fx.app, threads, uds=socket_path)
    assert server.address == socket_path
    assert stat.S_ISSOCK(os.stat(socket_path).st_mode)
    assert stat.S_IMODE(os.stat(socket_path).st_mode) == 0o660
    assert body_of(unix_exchange(socket_path, WHO)) == {"remote": None, "scheme": "http",
                                                        "body": ""}
    wsgi = b"GET /wsgi HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    assert body_of(unix_exchange(socket_path, wsgi)) == {"REMOTE_ADDR": "",
                                                         "wsgi.url_scheme": "http"}
    # Forwarded headers from a Unix socket's peer are not believed by default.
    spoof = SPOOF.encode() + b"Connection: close\r\n\r\n"
    assert body_of(unix_exchange(socket_path, spoof))["remote"] is None
    lines = [r.getMessage() for r in caplog.records if r.name == "wssync.access"]
    assert any(line.startswith('- "GET /who ') for line in lines), lines
    # unix_connect: the library then knows not to set TCP options on the socket.
    with unix_connect(socket_path, "ws://localhost/echo", open_timeout=10) as ws:
        ws.send("who")
        assert json.loads(ws.recv(timeout=10)) == {"remote": None, "scheme": "http"}
        [entry] = [c for c in server.connections() if c["protocol"] == "websocket"]
        assert entry["transport"] == "unix" and entry["server_addr"] == socket_path
        assert entry["client_addr"] is None and entry["peer_addr"] is None
    server.stop(timeout=10)
    assert not os.path.exists(socket_path)  # removed at stop


def test_uds_trusted_when_configured(socket_path: str, start_server: Any) -> None:
    fx = Fixture()
    start_server(fx.app, uds=socket_path, uds_mode=0o600, forwarded_allow_ips="unix")
    assert stat.S_IMODE(os.stat(socket_path).st_mode) == 0o600
    spoof = SPOOF.encode() + b"Connection: close\r\n\r\n"
    assert body_of(unix_exchange(socket_path, spoof)) == {"remote": "198.51.100.7",
                                                          "scheme": "https", "body": ""}


def test_uds_replaces_a_stale_socket_but_nothing_else(socket_path: str,
                                                      start_server: Any) -> None:
    fx = Fixture()
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(socket_path)
    stale.close()  # the file stays; nothing listens on it
    start_server(fx.app, uds=socket_path)
    assert body_of(unix_exchange(socket_path, WHO))["remote"] is None
    # A second server must not take the socket of the running one.
    with pytest.raises(OSError) as info:
        Server(fx.app, uds=socket_path).bind()
    assert info.value.errno == errno.EADDRINUSE
    assert body_of(unix_exchange(socket_path, WHO))["remote"] is None  # still served
    other = socket_path + ".txt"
    Path(other).write_text("not a socket")
    with pytest.raises(FileExistsError):
        Server(fx.app, uds=other).bind()
    assert Path(other).read_text() == "not a socket"


@needs_second_loopback
def test_uds_behind_nginx(nginx: ProxyStarter, socket_path: str, threads: int,
                          start_server: Any) -> None:
    fx = Fixture()
    server = start_server(fx.app, threads, uds=socket_path, forwarded_allow_ips="unix")
    port = nginx(socket_path=socket_path).port
    conn = HTTPConnection("127.0.0.1", port, timeout=10, source_address=(CLIENT, 0))
    try:
        for _ in range(3):
            conn.request("GET", "/who")
            assert json.loads(conn.getresponse().read()) == {"remote": CLIENT,
                                                             "scheme": "http", "body": ""}
        conn.request("GET", "/wsgi")
        assert json.loads(conn.getresponse().read())["REMOTE_ADDR"] == CLIENT
    finally:
        conn.close()
    with ws_connect(port) as ws:
        ws.send("who")
        assert json.loads(ws.recv(timeout=10))["remote"] == CLIENT
        big = os.urandom(BIG)
        ws.send(big)
        assert ws.recv(timeout=60) == big
        [entry] = [c for c in server.connections() if c["protocol"] == "websocket"]
        assert entry["transport"] == "unix" and entry["client_addr"] == CLIENT


def test_cli_serves_on_a_unix_socket(socket_path: str) -> None:
    proc = run_server(["--uds", socket_path, "--uds-mode", "640", "--no-access-log"])
    try:
        # The file appears at bind(), a moment before listen(): wait for a listener.
        assert wait_until(lambda: proc.poll() is not None or _unix_listening(socket_path),
                          timeout=20)
        health = unix_exchange(socket_path,
                               b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert health.startswith(b"HTTP/1.1 200")
        assert stat.S_IMODE(os.stat(socket_path).st_mode) == 0o640
    finally:
        proc.send_signal(signal.SIGTERM)
        err = finish(proc)
    assert proc.returncode == 0, err
    assert f"on unix:{socket_path}" in err
    assert not os.path.exists(socket_path)

