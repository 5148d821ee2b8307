"""Which pages may open a Socket.IO WebSocket is engine.io's own decision
(``cors_allowed_origins``: the default, a list, a callable), the same over
WebSocket as over long-polling; a handshake without ``Origin`` is not checked."""

from __future__ import annotations

from typing import Any, Callable, Iterator, List, Optional

import pytest
from helpers import port_of
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from wssync import App, Server

flask = pytest.importorskip("flask")
flask_socketio = pytest.importorskip("flask_socketio")

GOOD, BAD = "https://good.example", "https://evil.example"


@pytest.fixture
def served(start_server: Callable[..., Server]) -> Iterator[Callable[[Any], int]]:
    made: List[Any] = []

    def serve(origins: Any) -> int:
        flask_app = flask.Flask(__name__)
        socketio = flask_socketio.SocketIO(flask_app, cors_allowed_origins=origins)
        made.append(socketio)
        app = App()
        app.mount_wsgi(flask_app)
        return port_of(start_server(app))

    yield serve
    for socketio in made:
        socketio.server.shutdown()


def opens(port: int, origin: Optional[str]) -> bool:
    url = f"ws://127.0.0.1:{port}/socket.io/?EIO=4&transport=websocket"
    try:
        with connect(url, origin=origin, open_timeout=5) as ws:  # type: ignore[arg-type]
            return ws.recv(timeout=5).startswith("0{")  # engine.io's open packet
    except InvalidStatus as refused:
        assert refused.response.status_code == 403
        return False


def good_only(origin: str, environ: Any) -> bool:
    return origin == GOOD


@pytest.mark.parametrize("origins", [[GOOD], GOOD, good_only], ids=["list", "str", "callable"])
def test_the_apps_origins_decide(served: Callable[[Any], int], origins: Any) -> None:
    port = served(origins)
    assert opens(port, GOOD)
    assert not opens(port, BAD)
    assert opens(port, None)  # no Origin: not a browser page, as engine.io


def test_by_default_only_the_servers_own_pages(served: Callable[[Any], int]) -> None:
    port = served(None)
    assert opens(port, f"http://127.0.0.1:{port}")
    assert not opens(port, GOOD)
    assert opens(port, None)


def test_star_lets_any_page_open_it(served: Callable[[Any], int]) -> None:
    port = served("*")
    assert opens(port, BAD)
