"""Which web pages may open a WebSocket: the ``Origin`` check, from real clients.

By default a route accepts a handshake whose ``Origin`` is the server's own
(scheme, host and port of the request: ``https`` over TLS or as a trusted proxy
says in ``X-Forwarded-Proto``, the ``Host`` header) and one without ``Origin``
(a client that is not a browser); any other ``Origin`` gets 403 with the reason
in the body.  ``origins="*"`` opens a route to every page; a list or predicate
decides on its own.  The websockets client sends the ``Origin`` it is given,
websocket-client sends the server's own by default, and raw handshakes play a
proxy.  Chromium's side of it is in test_browser.py.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Dict, List, Optional

import pytest
import websocket  # websocket-client
from helpers import handshake_bytes, http_exchange
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from wssync import App, Server

EVIL = "http://evil.example"


def echo_app() -> App:
    app = App()

    def echo(ws, message) -> None:  # type: ignore[no-untyped-def]
        ws.send(message)

    app.websocket("/echo")(echo)
    app.websocket("/open", origins="*")(echo)
    app.websocket("/listed", origins=["https://app.example"])(echo)

    @app.websocket("/blocking", blocking=True)
    def blocking(ws) -> None:  # type: ignore[no-untyped-def]
        ws.send(ws.receive())

    return app


@pytest.fixture
def server(start_server, threads: int) -> Server:
    return start_server(echo_app(), threads=threads)


def echoes(url: str, origin: Optional[str] = None) -> bool:
    with connect(url, origin=origin, open_timeout=10) as ws:  # type: ignore[arg-type]
        ws.send("hi")
        return ws.recv(timeout=10) == "hi"


def refusal(url: str, origin: str) -> str:
    """The 403 body a handshake from ``origin`` gets."""
    with pytest.raises(InvalidStatus) as refused:
        connect(url, origin=origin, open_timeout=10)  # type: ignore[arg-type]
    assert refused.value.response.status_code == 403
    return refused.value.response.body.decode()


@pytest.mark.parametrize("path", ["/echo", "/blocking"])
def test_another_origin_is_refused_by_default_with_the_reason(server: Server,
                                                              path: str) -> None:
    port = server.address[1]
    assert refusal(f"ws://127.0.0.1:{port}{path}", EVIL) == (
        f"403 Forbidden: cross-origin WebSocket refused: the page is from {EVIL}, "
        f"this server is http://127.0.0.1:{port} (a route's origins= can allow it)\n")


@pytest.mark.parametrize("path", ["/echo", "/blocking"])
def test_the_servers_own_origin_and_no_origin_are_accepted(server: Server, path: str) -> None:
    port = server.address[1]
    url = f"ws://127.0.0.1:{port}{path}"
    assert echoes(url, origin=f"http://127.0.0.1:{port}")
    assert echoes(url)  # no Origin: not a browser
    # websocket-client sends "Origin: http://127.0.0.1:<port>" unless told not to.
    ws = websocket.create_connection(url, timeout=10)
    try:
        ws.send("hi")
        assert ws.recv() == "hi"
    finally:
        ws.close()


def test_origins_star_and_a_list(server: Server) -> None:
    port = server.address[1]
    assert echoes(f"ws://127.0.0.1:{port}/open", origin=EVIL)
    assert echoes(f"ws://127.0.0.1:{port}/listed", origin="https://app.example")
    assert refusal(f"ws://127.0.0.1:{port}/listed", EVIL) == \
        f"403 Forbidden: origin {EVIL} not allowed\n"
    # A list is the whole rule: the server's own origin is not on it.
    assert refusal(f"ws://127.0.0.1:{port}/listed", f"http://127.0.0.1:{port}").startswith(
        "403 Forbidden: origin")


def test_over_tls_the_own_origin_is_https(start_server, tls_files) -> None:
    server = start_server(echo_app(), ssl_context=tls_files.server_context())
    port = server.address[1]
    url = f"wss://localhost:{port}/echo"
    context = tls_files.client_context()
    with connect(url, origin=f"https://localhost:{port}",  # type: ignore[arg-type]
                 ssl=context, open_timeout=10) as ws:
        ws.send("hi")
        assert ws.recv(timeout=10) == "hi"
    with pytest.raises(InvalidStatus) as refused:
        connect(url, origin=f"http://localhost:{port}",  # type: ignore[arg-type]
                ssl=context, open_timeout=10)
    assert refused.value.response.status_code == 403


def handshake_status(port: int, headers: Dict[str, Optional[str]]) -> int:
    return http_exchange(port, handshake_bytes("/echo", headers=headers))[0]


@pytest.mark.parametrize(("allow", "status"), [("127.0.0.1", 101), ("", 403)])
def test_behind_a_trusted_proxy_its_scheme_counts(start_server, allow: str,
                                                  status: int) -> None:
    """nginx terminates TLS for https://example.com and passes Host and
    X-Forwarded-Proto on: believed from a trusted proxy (the default trusts the
    loopback), the page https://example.com is the server's own origin; from a
    peer that is not trusted the request is plain http, another origin."""
    server = start_server(echo_app(), forwarded_allow_ips=allow)
    headers: Dict[str, Optional[str]] = {"Host": "example.com", "Origin": "https://example.com",
                                         "X-Forwarded-Proto": "https",
                                         "X-Forwarded-For": "203.0.113.7"}
    assert handshake_status(server.address[1], headers) == status


FLASK_APP = textwrap.dedent('''
    from flask import Flask
    from wssync.flask import Sock

    app = Flask(__name__)
    sock = Sock(app)

    @sock.route("/echo")
    def echo(ws):
        ws.send(ws.receive())
''')


@pytest.mark.parametrize("options", [None, {"origins": "*"}])
def test_a_flask_sock_route_is_same_origin_unless_its_options_say(
        start_server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        options: Optional[Dict[str, List[str]]]) -> None:
    (tmp_path / "origin_flaskapp.py").write_text(FLASK_APP)
    monkeypatch.syspath_prepend(str(tmp_path))
    import origin_flaskapp  # type: ignore[import-not-found]

    if options is not None:
        monkeypatch.setitem(origin_flaskapp.app.config, "SOCK_SERVER_OPTIONS", options)
    app = App()
    app.mount_wsgi(origin_flaskapp.app)
    port = start_server(app).address[1]
    url = f"ws://127.0.0.1:{port}/echo"
    assert echoes(url, origin=f"http://127.0.0.1:{port}")
    if options is None:
        assert refusal(url, EVIL).startswith("403 Forbidden: cross-origin WebSocket refused")
    else:
        assert echoes(url, origin=EVIL)
