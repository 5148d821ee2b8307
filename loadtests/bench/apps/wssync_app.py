"""wssync: "Hello, World!" on ``/``, a WebSocket echo on ``/ws``, and ``/broadcast``.

``python -m wssync --app wssync_app:app --threads 0`` (reactor) or ``--threads 4``.
``GET /broadcast?seq=N`` sends one 100-byte text message to every ``/ws`` client
(encoded once, written to every socket before the response goes out in reactor mode).
``GET /stats`` gives ``server.stats()`` as JSON.
"""

from __future__ import annotations

from typing import Union

from wssync import App, Request, Response, WebSocket

app = App()
HELLO = b"Hello, World!"


def broadcast_message(seq: str) -> str:
    """100 bytes: the sequence number, then padding."""
    return f"{seq}:".ljust(100, "x")[:100]


@app.route("/")
def hello(request: Request) -> Response:
    return Response(HELLO, content_type="text/plain")


@app.route("/broadcast")
def broadcast(request: Request) -> Response:
    assert app.server is not None
    app.server.broadcast(broadcast_message(request.arg("seq") or "0"), path="/ws")
    return Response(b"ok\n", content_type="text/plain")


@app.route("/stats")
def stats(request: Request) -> Response:
    """The server's counts (with ``--broker``: its broker's, under ``broker``)."""
    assert app.server is not None
    return Response.json(app.server.stats())


@app.websocket("/ws")
def echo(ws: WebSocket, message: Union[str, bytes]) -> None:
    ws.send(message)
