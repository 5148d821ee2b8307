"""wssync with a blocking-style WebSocket echo on ``/ws`` (a thread per connection) and
"Hello, World!" on ``/``.

``WSSYNC_BENCH_STACK_KIB`` (optional) sets ``threading.stack_size`` for every thread the
process starts afterwards, to measure what a smaller thread stack saves.
"""

from __future__ import annotations

import os
import threading

from wssync import App, BlockingWebSocket, Request, Response

if os.environ.get("WSSYNC_BENCH_STACK_KIB"):
    threading.stack_size(int(os.environ["WSSYNC_BENCH_STACK_KIB"]) * 1024)

app = App()


@app.route("/")
def hello(request: Request) -> Response:
    return Response(b"Hello, World!", content_type="text/plain")


@app.websocket("/ws", blocking=True)
def echo(ws: BlockingWebSocket) -> None:
    for message in ws:
        ws.send(message)
