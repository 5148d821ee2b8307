"""The demo page in a real browser (headless Chromium): echo, /stats, pushes from a thread."""

from __future__ import annotations

import shutil
import threading
from typing import Iterator

import pytest

from wssync.demo import create_app

sync_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium on this machine")


@pytest.fixture
def page() -> Iterator[sync_api.Page]:
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"])
        try:
            yield browser.new_page()
        finally:
            browser.close()


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
    # /stats, fetched by the page over HTTP, shows the page's own WebSocket.
    page.wait_for_function(
        "document.getElementById('stats').textContent.includes('1 WebSocket')", timeout=5000)
    rows = page.inner_text("#stats")
    assert f"127.0.0.1:{port}\twebsocket\t/ws" in rows
    assert f"127.0.0.1:{port}\thttp" in rows


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
