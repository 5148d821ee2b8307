"""The demo page in a real browser (headless Chromium): echo, the live picture of
the port and its connections, pushes from a thread; and which pages may open a
WebSocket (a page of another origin, of the server's own)."""

from __future__ import annotations

import os
import shutil
import socket
import threading
from pathlib import Path
from typing import List

import pytest

from wssync import App, Request, Response
from wssync.demo import create_app

sync_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium on this machine")


@pytest.fixture
def page(browser: sync_api.Browser) -> sync_api.Page:
    return browser.new_page()


@pytest.mark.parametrize("threads", [0, 2])
def test_demo_page_echoes_and_lists_both_protocols(start_server, page, threads: int) -> None:
    server = start_server(create_app(), threads=threads)
    port = server.address[1]
    page.goto(f"http://127.0.0.1:{port}/")
    page.wait_for_function("document.getElementById('status').textContent === 'open'")
    page.fill("#text", "hello from a browser")
    page.click("#send")
    page.wait_for_function(
        "document.getElementById('log').textContent.includes('echo: hello from a browser')")
    # The connection table, pushed to the page, shows the page's own echo WebSocket.
    page.wait_for_function(
        "document.getElementById('stats').innerText.includes('websocket\\t/ws')", timeout=5000)
    rows = page.inner_text("#stats")
    assert f"127.0.0.1:{port}\twebsocket\t/ws" in rows
    assert f"127.0.0.1:{port}\thttp" in rows


def test_demo_page_over_https_echoes_over_wss(start_server, browser, threads: int,
                                             tls_files) -> None:
    """The demo page from a TLS server: the page loads over https (the test CA is
    not trusted by the browser, hence ``ignore_https_errors``), opens its echo
    WebSocket with wss:// on the same port, and the echo comes back."""
    server = start_server(create_app(), threads=threads, ssl_context=tls_files.server_context())
    port = server.address[1]
    context = browser.new_context(ignore_https_errors=True)
    try:
        page = context.new_page()
        sockets: List[str] = []
        page.on("websocket", lambda ws: sockets.append(ws.url))
        response = page.goto(f"https://127.0.0.1:{port}/")
        assert response is not None and response.status == 200
        page.wait_for_function("document.getElementById('status').textContent === 'open'")
        page.fill("#text", "hello over wss")
        page.click("#send")
        page.wait_for_function(
            "document.getElementById('log').textContent.includes('echo: hello over wss')")
        assert f"wss://127.0.0.1:{port}/ws" in sockets
        # The server sees the page's echo WebSocket as a TLS connection.
        echo = [c for c in server.connections() if c.get("path") == "/ws"]
        assert echo and all(c["transport"] == "tls" for c in echo), server.connections()
        assert all(c["transport"] == "tls" for c in server.connections())
    finally:
        context.close()


def test_a_legacy_thread_pushes_to_the_browser(start_server, page) -> None:
    server = start_server(create_app())
    port = server.address[1]
    page.goto(f"http://127.0.0.1:{port}/")
    page.wait_for_function("document.getElementById('status').textContent === 'open'")

    def legacy_job() -> None:  # plain threading code, no event loop in sight
        for n in range(3):
            server.broadcast(f"pushed {n}", path="/ws")

    worker = threading.Thread(target=legacy_job)
    worker.start()
    worker.join()
    page.wait_for_function("document.getElementById('log').textContent.includes('pushed 2')")
    log = page.inner_text("#log")
    assert log.index("pushed 0") < log.index("pushed 1") < log.index("pushed 2")


def recv_until(sock: socket.socket, suffix: bytes) -> bytes:
    data = b""
    while not data.endswith(suffix):
        chunk = sock.recv(4096)
        assert chunk, f"connection closed after {data!r}"
        data += chunk
    return data


def count(page: sync_api.Page, selector: str) -> int:
    return int(page.evaluate("(s) => document.querySelectorAll(s).length", selector))


def test_demo_picture_shows_one_port_and_every_connection(start_server, page, threads: int,
                                                          tmp_path: Path) -> None:
    # A long keep-alive: the HTTP connection the page came over stays drawn
    # however slowly this machine runs the test.
    server = start_server(create_app(), threads=threads, keepalive_timeout=60)
    port = server.address[1]
    page.set_viewport_size({"width": 1200, "height": 1000})
    problems: List[str] = []  # no 404 (favicon) and no script error along the way
    page.on("response", lambda r: problems.append(f"{r.status} {r.url}") if r.status >= 400
            else None)
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.goto(f"http://127.0.0.1:{port}/")
    lines = f'#picture g.conn[data-server-port="{port}"]'
    websockets = lines + '[data-protocol="websocket"]'
    http = lines + '[data-protocol="http"]'
    # The page's own WebSockets (echo and live feed) and the HTTP connection
    # it came over, all drawn to the one server port.
    page.wait_for_function(
        """([ws, http]) => document.querySelectorAll(ws + '[data-path="/ws"]').length === 1
            && document.querySelectorAll(ws + '[data-path="/live"]').length === 1
            && document.querySelectorAll(http).length >= 1""",
        arg=[websockets, http], timeout=10000)
    ports = page.eval_on_selector_all("#picture g.conn",
                                      "els => els.map((e) => e.dataset.serverPort)")
    assert set(ports) == {str(port)}
    assert page.text_content("#port-number") == f":{port}"
    assert "5-tuple" in page.inner_text("#fivetuple")
    before = count(page, websockets)
    page.evaluate("window.notReloaded = true")

    page.click("#open3")
    page.wait_for_function("([s, n]) => document.querySelectorAll(s).length === n",
                           arg=[websockets, before + 3], timeout=10000)
    assert page.text_content("#head-ws") == f"WebSocket: {before + 3}"
    page.wait_for_function("document.querySelectorAll('#extra li').length === 3")

    page.click("#extra li:first-child .close-ws")
    page.wait_for_function("([s, n]) => document.querySelectorAll(s).length === n",
                           arg=[websockets, before + 2], timeout=10000)
    page.wait_for_function("document.querySelectorAll('#extra li').length === 2")
    assert page.evaluate("window.notReloaded === true")  # pushed, not reloaded
    assert page.inner_text("#live-status").startswith("pushed over WebSocket /live")

    # A connection drawn as HTTP that then upgrades on the same socket is
    # marked at that moment (and moves to the WebSocket side).
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: demo\r\n\r\n")
        assert recv_until(sock, b"ok\n").startswith(b"HTTP/1.1 200")
        line = f'#picture g.conn[data-client-port="{sock.getsockname()[1]}"]'
        page.wait_for_selector(line + '[data-protocol="http"]', state="attached", timeout=10000)
        sock.sendall(b"GET /ws HTTP/1.1\r\nHost: demo\r\nUpgrade: websocket\r\n"
                     b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                     b"Sec-WebSocket-Version: 13\r\n\r\n")
        assert recv_until(sock, b"\r\n\r\n").startswith(b"HTTP/1.1 101")
        page.wait_for_selector(line + '[data-protocol="websocket"].switched', state="attached",
                               timeout=10000)
    page.wait_for_function("(s) => document.querySelectorAll(s).length === 0", arg=line)

    # Make it busy for the screenshot: more HTTP lines and fresh WebSockets,
    # caught while their "101" highlight is still on.
    page.click("#burst")
    page.wait_for_function(
        "document.getElementById('burst-result').textContent.startsWith('20 of 20')",
        timeout=10000)
    page.click("#open3")
    page.wait_for_function("([s, n]) => document.querySelectorAll(s).length === n",
                           arg=[websockets, before + 5], timeout=10000)
    page.wait_for_function("(s) => document.querySelectorAll(s).length >= 1", arg=http)
    # Fades and glides finished (the highlight's own animations may go on).
    page.wait_for_function("""document.getAnimations().every((a) => a.playState !== 'running'
        || a.animationName === 'pulse' || a.animationName === 'flow')""", timeout=10000)
    assert not problems
    shot = tmp_path / f"demo-screenshot-{'threads' if threads else 'reactor'}.png"
    page.screenshot(path=str(shot), full_page=True)
    print(f"screenshot: {shot}")
    artifacts = os.environ.get("WSSYNC_ARTIFACTS")
    if artifacts:
        Path(artifacts).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, artifacts)


# -- which pages may open a WebSocket (Origin) -----------------------------------------------

# A page that opens the WebSocket its query names, sends "hi" and shows what happened.
OPENER = """<!doctype html><title>opener</title><pre id="result">pending</pre><script>
const result = document.getElementById("result");
const ws = new WebSocket(new URLSearchParams(location.search).get("url"));
ws.onopen = () => ws.send("hi");
ws.onmessage = (event) => { result.textContent = "echo: " + event.data; };
ws.onclose = (event) => {
  if (!result.textContent.startsWith("echo")) result.textContent = "closed " + event.code;
};
</script>"""


def origin_app(seen: List[str]) -> App:
    """``/opener`` (the page above), ``/echo`` with the default origins, ``/open``
    with ``origins="*"``; ``seen`` gets the Origin of every WebSocket accepted."""
    app = App()

    @app.route("/opener")
    def opener(request: Request) -> Response:
        return Response(OPENER, content_type="text/html; charset=utf-8")

    def echo(ws, message) -> None:  # type: ignore[no-untyped-def]
        seen.append(str(ws.request.headers.get("origin")))
        ws.send(message)

    app.websocket("/echo")(echo)
    app.websocket("/open", origins="*")(echo)
    return app


def opened_from(page: sync_api.Page, page_port: int, url: str) -> str:
    """What the opener page served from ``page_port`` got from the WebSocket ``url``."""
    page.goto(f"http://127.0.0.1:{page_port}/opener?url={url}")
    page.wait_for_function("document.getElementById('result').textContent !== 'pending'",
                           timeout=10000)
    return page.inner_text("#result")


def test_a_page_of_another_origin_is_refused_unless_the_route_allows_it(
        start_server, page, threads: int) -> None:
    """Two servers, two origins (ports).  A page of the other origin opens a
    WebSocket to this server: refused with 403 on the default route (the browser
    sees the handshake fail: 1006), accepted on the route with ``origins="*"``;
    the page of this server's own origin is accepted on the default route."""
    seen: List[str] = []
    server = start_server(origin_app(seen), threads=threads)
    other = start_server(origin_app([]), threads=threads)
    port, other_port = server.address[1], other.address[1]
    assert opened_from(page, other_port, f"ws://127.0.0.1:{port}/echo") == "closed 1006"
    assert seen == []
    assert opened_from(page, other_port, f"ws://127.0.0.1:{port}/open") == "echo: hi"
    assert opened_from(page, port, f"ws://127.0.0.1:{port}/echo") == "echo: hi"
    assert seen == [f"http://127.0.0.1:{other_port}", f"http://127.0.0.1:{port}"]
