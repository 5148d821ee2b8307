"""``--metrics``: Prometheus metrics end to end.  A known load from real clients
(http.client, a raw WebSocket client, openssl-free TLS failures from plain
sockets), then the exact counts as scraped and read by ``prometheus_client``'s
parser; one process, ``--workers 2`` summed by the supervisor (a SIGKILLed
worker's counts kept), and a real Prometheus server scraping us."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import pytest
from conftest import TlsFiles
from helpers import RawWS, free_port, handshake_bytes, read_head, required_program, wait_until
from prometheus_client.parser import text_string_to_metric_families

from wssync import App, Response, Server
from wssync.errors import BindError

Samples = Dict[Tuple[str, Tuple[Tuple[str, str], ...]], float]


def scrape(port: int, path: str = "/metrics") -> Samples:
    """The samples at ``path``, as Prometheus's reference parser reads them."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
        assert response.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
        text = response.read().decode()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def wait_for_values(port: int, expected: Dict[Tuple[str, Tuple[Tuple[str, str], ...]], float],
                    timeout: float = 15.0) -> Samples:
    """Scrape until every expected sample has its value (workers report once a
    second): the last scrape, or an assertion naming what differs."""
    last: List[Samples] = [{}]

    def matches() -> bool:
        last[0] = scrape(port)
        return all(last[0].get(key, 0.0) == want for key, want in expected.items())

    if not wait_until(matches, timeout, 0.2):
        differ = {key: (last[0].get(key, 0.0), want) for key, want in expected.items()
                  if last[0].get(key, 0.0) != want}
        raise AssertionError(f"(got, wanted): {differ}")
    return last[0]


def key(name: str, **labels: str) -> Tuple[str, Tuple[Tuple[str, str], ...]]:
    return name, tuple(sorted(labels.items()))


def make_app() -> App:
    app = App()

    @app.route("/")
    def index(request: object) -> str:
        return "ok"

    @app.route("/teapot")
    def teapot(request: object) -> Response:
        return Response("short and stout", 418)

    @app.websocket("/echo")
    def echo(ws: object, message: str) -> None:
        ws.send(message)  # type: ignore[attr-defined]

    return app


def metrics_port(server: Server) -> int:
    sock = server._metrics_sock
    assert sock is not None
    return int(sock.getsockname()[1])


def http_load(port: int, context: Optional[ssl.SSLContext] = None) -> None:
    """4 GET / (200), 1 HEAD / (200), 2 GET /nope (404), 1 GET /teapot (418),
    1 POST / (405) and 1 BREW / (405, method other), on one keep-alive connection."""
    conn: http.client.HTTPConnection = (
        http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10)
        if context is not None else http.client.HTTPConnection("127.0.0.1", port, timeout=10))
    with contextlib.closing(conn):
        for method, path in [("GET", "/")] * 4 + [("HEAD", "/"), ("GET", "/nope"),
                                                  ("GET", "/nope"), ("GET", "/teapot"),
                                                  ("POST", "/"), ("BREW", "/")]:
            conn.request(method, path)
            conn.getresponse().read()


HTTP_EXPECTED = {
    key("wssync_http_requests_total", method="GET", status="200"): 4,
    key("wssync_http_requests_total", method="HEAD", status="200"): 1,
    key("wssync_http_requests_total", method="GET", status="404"): 2,
    key("wssync_http_requests_total", method="GET", status="418"): 1,
    key("wssync_http_requests_total", method="POST", status="405"): 1,
    key("wssync_http_requests_total", method="other", status="405"): 1,
}


def websocket_load(port: int, messages: List[bytes]) -> None:
    """Echo ``messages`` over one raw (uncompressed, so byte-exact) WebSocket,
    then close it with 1000 and wait for the server's answer."""
    echo_and_close(RawWS.connect(port), messages)


def echo_and_close(ws: RawWS, messages: List[bytes]) -> None:
    try:
        for payload in messages:
            ws.send(0x1, payload)
            assert ws.recv_data() == (0x1, payload)
        ws.send(0x8, (1000).to_bytes(2, "big"))
        assert ws.recv_close() == (1000, "")
    finally:
        ws.close()


def websocket_expected(messages: List[bytes]) -> Dict[Tuple[str, Tuple[Tuple[str, str], ...]],
                                                      float]:
    # Short frames: 2 header bytes, and the client's 4-byte mask.
    return {
        key("wssync_websocket_messages_received_total"): len(messages),
        key("wssync_websocket_messages_sent_total"): len(messages),
        key("wssync_websocket_received_bytes_total"): sum(6 + len(m) for m in messages) + 8,
        key("wssync_websocket_sent_bytes_total"): sum(2 + len(m) for m in messages) + 4,
        key("wssync_websocket_closes_received_total", code="1000"): 1,
        key("wssync_websocket_closes_sent_total", code="1000"): 1,
        key("wssync_http_requests_total", method="GET", status="101"): 1,
    }


def refused_handshake(port: int) -> None:
    """A WebSocket handshake without its key: 400."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(handshake_bytes("/echo", headers={"Sec-WebSocket-Key": None}))
        assert read_head(sock)[0] == 400


MESSAGES = [b"hello", b"x" * 100, b"", b"y" * 125]


def test_a_known_load_gives_exact_counts(start_server: Callable[..., Server]) -> None:
    server = start_server(make_app(), metrics="127.0.0.1:0")
    port, mport = server.address[1], metrics_port(server)
    http_load(port)
    websocket_load(port, MESSAGES)
    refused_handshake(port)
    expected = {**HTTP_EXPECTED, **websocket_expected(MESSAGES),
                key("wssync_http_requests_total", method="GET", status="400"): 1,
                key("wssync_websocket_handshakes_refused_total", status="400"): 1,
                key("wssync_connections_accepted_total"): 3}
    samples = wait_for_values(mport, expected)
    assert value(samples, "wssync_output_buffer_bytes") == 0
    assert value(samples, "wssync_pool_busy_threads", pool="websocket") == 0
    # What it does not count is not there: no workers, no broker.
    assert key("wssync_workers") not in samples
    assert key("wssync_broker_up") not in samples


def test_open_connections_by_protocol(start_server: Callable[..., Server],
                                      clients: contextlib.ExitStack) -> None:
    server = start_server(make_app(), threads=2, metrics="127.0.0.1:0")
    port, mport = server.address[1], metrics_port(server)
    for _ in range(2):
        clients.enter_context(contextlib.closing(RawWS.connect(port)))
    idle = clients.enter_context(socket.create_connection(("127.0.0.1", port)))
    assert idle
    samples = wait_for_values(mport, {key("wssync_open_connections", protocol="websocket"): 2,
                                      key("wssync_open_connections", protocol="http"): 1})
    assert value(samples, "wssync_pool_busy_threads", pool="handlers") == 0
    assert value(samples, "wssync_pool_queued_tasks", pool="handlers") == 0


def test_the_endpoint_answers_only_get_and_head_at_its_path(
        start_server: Callable[..., Server]) -> None:
    server = start_server(make_app(), metrics="127.0.0.1:0")
    conn = http.client.HTTPConnection("127.0.0.1", metrics_port(server), timeout=10)
    with contextlib.closing(conn):
        conn.request("HEAD", "/metrics")
        response = conn.getresponse()
        assert response.status == 200 and response.read() == b""
        assert int(response.headers["Content-Length"]) > 1000
        conn.request("GET", "/")
        response = conn.getresponse()
        assert response.status == 404 and response.read()
        conn.request("POST", "/metrics", body=b"")
        response = conn.getresponse()
        assert response.status == 405 and response.headers["Allow"] == "GET, HEAD"
        response.read()
        conn.request("GET", "/metrics?name=x")  # (a query string is ignored)
        response = conn.getresponse()
        assert response.status == 200 and b"wssync_" in response.read()
    # A request with a body: refused (413) and closed, nothing read past the head.
    with socket.create_connection(("127.0.0.1", metrics_port(server)), timeout=10) as sock:
        sock.sendall(b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n")
        assert read_head(sock)[0] == 413


def test_a_metrics_address_in_use_fails_at_start(start_server: Callable[..., Server]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        with pytest.raises(BindError, match=f"cannot listen for metrics on {address}"):
            start_server(make_app(), metrics=address)


def test_tls_handshake_failures_by_reason(start_server: Callable[..., Server],
                                          tls_files: TlsFiles) -> None:
    server = start_server(make_app(), ssl_context=tls_files.server_context(),
                          tls_handshake_timeout=0.5, metrics="127.0.0.1:0")
    port, mport = server.address[1], metrics_port(server)
    http_load(port, tls_files.client_context())  # (and they are counted over TLS too)
    plaintext_to_tls_port(port)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        # A record header of a handshake, then a body that is not one.
        sock.sendall(b"\x16\x03\x01\x00\x05" + b"\xff" * 5)
        sock.recv(4096)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        samples = wait_for_values(mport, {key("wssync_open_connections", protocol="tls"): 1})
        # Silent: dropped when the handshake deadline passes.
        assert sock.recv(4096) == b""
    samples = wait_for_values(mport, {
        **HTTP_EXPECTED,
        key("wssync_tls_handshake_failures_total", reason="plaintext"): 1,
        key("wssync_tls_handshake_failures_total", reason="error"): 1,
        key("wssync_tls_handshake_failures_total", reason="timeout"): 1,
        key("wssync_connections_accepted_total"): 4,
    })
    assert value(samples, "wssync_open_connections", protocol="tls") == 0


def test_a_handshake_dropped_past_max_tls_handshakes_is_counted(
        start_server: Callable[..., Server], tls_files: TlsFiles,
        clients: contextlib.ExitStack) -> None:
    server = start_server(make_app(), ssl_context=tls_files.server_context(),
                          tls_handshake_timeout=60, max_tls_handshakes=2,
                          metrics="127.0.0.1:0")
    port, mport = server.address[1], metrics_port(server)
    for _ in range(2):
        clients.enter_context(socket.create_connection(("127.0.0.1", port), timeout=10))
    wait_for_values(mport, {key("wssync_open_connections", protocol="tls"): 2})
    clients.enter_context(socket.create_connection(("127.0.0.1", port), timeout=10))
    wait_for_values(mport, {
        key("wssync_tls_handshake_failures_total", reason="max_tls_handshakes"): 1,
        key("wssync_open_connections", protocol="tls"): 2})


def plaintext_to_tls_port(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_head(sock)[0] == 400


# -- --workers 2: the supervisor sums ------------------------------------------------------

CLUSTER_APP = '''
from wssync import App, Response

app = App()

@app.route("/")
def index(request):
    return "ok"

@app.route("/teapot")
def teapot(request):
    return Response("short and stout", 418)

@app.websocket("/echo")
def echo(ws, message):
    ws.send(message)
'''


class Cluster:
    """``python -m wssync --workers 2 --metrics ...`` over TLS, in its own process group."""

    def __init__(self, tmp_path: Path, tls_files: TlsFiles) -> None:
        (tmp_path / "metricsapp.py").write_text(CLUSTER_APP)
        self.port, self.metrics_port = free_port(), free_port()
        self.log_path = tmp_path / "server.log"
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "wssync", "metricsapp:app", "--host", "127.0.0.1",
                 "--port", str(self.port), "--workers", "2", "--no-access-log",
                 "--metrics", f"127.0.0.1:{self.metrics_port}",
                 "--certfile", str(tls_files.cert), "--keyfile", str(tls_files.key)],
                cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=log, start_new_session=True)

    def workers(self) -> List[int]:
        """The supervisor's children (its live workers)."""
        path = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        return [int(pid) for pid in path.read_text().split()]

    def holds_metrics_socket(self, pid: int) -> bool:
        """Whether process ``pid`` has the metrics listening socket open."""
        inodes = set()
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[1].endswith(f":{self.metrics_port:04X}") and fields[3] == "0A":
                inodes.add(f"socket:[{fields[9]}]")
        assert inodes, "nothing listens on the metrics port"
        fds = Path(f"/proc/{pid}/fd")
        return any(os.readlink(fds / fd) in inodes for fd in os.listdir(fds))

    def stop(self) -> str:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
        return self.log_path.read_text()


@pytest.fixture
def cluster(tmp_path: Path, tls_files: TlsFiles) -> Iterator[Cluster]:
    started = Cluster(tmp_path, tls_files)
    try:
        assert wait_until(lambda: len(started.workers()) == 2 and _answers(started), 20, 0.1), \
            started.log_path.read_text()
        yield started
    finally:
        started.stop()


def _answers(cluster: Cluster) -> bool:
    try:
        return bool(scrape(cluster.metrics_port))
    except OSError:
        return False


@pytest.mark.slow
def test_workers_are_summed_and_a_killed_workers_counts_are_kept(
        cluster: Cluster, tls_files: TlsFiles) -> None:
    port, mport = cluster.port, cluster.metrics_port
    context = tls_files.client_context()
    # Only the supervisor listens for scrapes: a worker's inherited copy is closed.
    assert cluster.holds_metrics_socket(cluster.proc.pid)
    assert not any(cluster.holds_metrics_socket(pid) for pid in cluster.workers())
    for _ in range(3):  # new connections: the kernel spreads them over the workers
        http_load(port, context)
    tls_websocket_load(port, context, MESSAGES)
    tls_websocket_load(port, context, MESSAGES)
    plaintext_to_tls_port(port)
    expected = {name: 3 * count for name, count in HTTP_EXPECTED.items()}
    for name, count in websocket_expected(MESSAGES).items():
        expected[name] = expected.get(name, 0) + 2 * count
    expected.update({
        key("wssync_tls_handshake_failures_total", reason="plaintext"): 1,
        key("wssync_connections_accepted_total"): 6,
        key("wssync_workers"): 2,
        key("wssync_worker_restarts_total"): 0,
        key("wssync_broker_up"): 1,  # (the relay between the workers)
    })
    before = wait_for_values(mport, expected)
    assert value(before, "wssync_open_connections", protocol="websocket") == 0

    victim = cluster.workers()[0]
    os.kill(victim, signal.SIGKILL)
    counters = {name: count for name, count in expected.items()
                if name[0].endswith("_total") and name[0] != "wssync_worker_restarts_total"}

    def restarted() -> bool:
        samples = scrape(mport)
        for name, count in counters.items():  # never lower, meanwhile or after
            assert samples.get(name, 0.0) == count, (name, samples.get(name))
        return (value(samples, "wssync_worker_restarts_total") == 1
                and victim not in cluster.workers() and len(cluster.workers()) == 2)

    assert wait_until(restarted, 20, 0.2), cluster.log_path.read_text()
    # The new worker serves, and counts from zero on top of what was kept.
    http_load(port, context)
    wait_for_values(mport, {name: 4 * count for name, count in HTTP_EXPECTED.items()})


def tls_websocket_load(port: int, context: ssl.SSLContext, messages: List[bytes]) -> None:
    """:func:`websocket_load` over TLS (the raw client on a TLS socket)."""
    sock = context.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10),
                               server_hostname="127.0.0.1")
    sock.sendall(handshake_bytes("/echo"))
    status, _headers, rest = read_head(sock)
    assert status == 101
    echo_and_close(RawWS(sock, rest), messages)


# -- a real Prometheus -------------------------------------------------------------------


@pytest.mark.slow
def test_a_prometheus_server_scrapes_us(start_server: Callable[..., Server],
                                        tmp_path: Path) -> None:
    binary = required_program("prometheus")
    server = start_server(make_app(), metrics="127.0.0.1:0")
    http_load(server.address[1])
    target = f"127.0.0.1:{metrics_port(server)}"
    config = tmp_path / "prometheus.yml"
    config.write_text(json.dumps({  # (YAML is a superset of JSON)
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
        "scrape_configs": [{"job_name": "wssync", "static_configs": [{"targets": [target]}]}],
    }))
    api = free_port()
    with open(tmp_path / "prometheus.log", "w") as log:
        proc = subprocess.Popen(
            [binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}",
             f"--web.listen-address=127.0.0.1:{api}"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        def query(expression: str) -> List[Dict[str, object]]:
            url = (f"http://127.0.0.1:{api}/api/v1/query?"
                   + urllib.parse.urlencode({"query": expression}))
            with urllib.request.urlopen(url, timeout=5) as response:
                return list(json.load(response)["data"]["result"])

        def scraped() -> bool:
            try:
                up = query('up{job="wssync"}')
            except OSError:
                return False
            return bool(up) and up[0]["value"][1] == "1"  # type: ignore[index]

        assert wait_until(scraped, 60, 0.5), (tmp_path / "prometheus.log").read_text()
        found = query('wssync_http_requests_total{method="GET",status="200"}')
        assert found and found[0]["value"][1] == "4"  # type: ignore[index]
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)



@pytest.mark.slow
def test_what_a_replaced_worker_does_while_it_drains_is_counted(
        cluster: Cluster, tls_files: TlsFiles) -> None:
    """A rolling restart's 1012 closes are sent after the worker stopped taking
    connections: they count all the same (it reports while it drains, and once
    more as it ends)."""
    context = tls_files.client_context()
    sockets = []
    for _ in range(4):
        sock = context.wrap_socket(socket.create_connection(("127.0.0.1", cluster.port),
                                                            timeout=30),
                                   server_hostname="127.0.0.1")
        sock.sendall(handshake_bytes("/echo"))
        status, _headers, rest = read_head(sock)
        assert status == 101
        sockets.append(RawWS(sock, rest))
    codes: List[Optional[int]] = []

    def answer(ws: RawWS) -> None:  # each at once: the server waits close_timeout for it
        code = ws.recv_close(timeout=30)[0]  # (the closes are spread over close_spread)
        ws.send(0x8, (1012).to_bytes(2, "big"))
        codes.append(code)

    threads = [threading.Thread(target=answer, args=(ws,)) for ws in sockets]
    try:
        os.kill(cluster.proc.pid, signal.SIGHUP)
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(40)
    finally:
        for ws in sockets:
            ws.close()
    assert codes == [1012] * 4
    wait_for_values(cluster.metrics_port, {
        key("wssync_websocket_closes_sent_total", code="1012"): 4,
        key("wssync_websocket_closes_received_total", code="1012"): 4,
    })
