"""wssync: WebSocket clients on ``/ws``; ``GET /burst`` starts a broadcasting thread.

``GET /burst?count=N&size=S`` starts a plain thread (as legacy code pushing
updates would) that calls ``server.broadcast`` N times with S-byte binary
messages (``&from=handler``: the request handler itself does, on the reactor
thread in reactor mode); each message starts with its sequence number as 8 ASCII digits so
receivers can check order.  Used by ``broadcast_memory.py``; only the public
API is used, so any version of wssync can serve it.
"""

from __future__ import annotations

import threading

from wssync import App, Request, Response, WebSocket

app = App()


def burst_message(seq: int, filler: bytes) -> bytes:
    return b"%08d" % seq + filler


def _produce(count: int, size: int) -> None:
    server = app.server
    assert server is not None
    filler = b"x" * max(0, size - 8)
    for seq in range(count):
        server.broadcast(burst_message(seq, filler), path="/ws")


@app.route("/burst")
def burst(request: Request) -> Response:
    count = int(request.arg("count") or "1000")
    size = int(request.arg("size") or "65536")
    if request.arg("from") == "handler":
        _produce(count, size)
    else:
        threading.Thread(target=_produce, args=(count, size), name="burst", daemon=True).start()
    return Response(b"started\n", content_type="text/plain")


@app.websocket("/ws")
def ignore(ws: WebSocket, message: object) -> None:
    pass
