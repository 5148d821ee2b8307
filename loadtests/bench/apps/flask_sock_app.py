"""A flask-sock application: "Hello, World!" on ``/``, a WebSocket echo on ``/ws``.

``SOCK=wssync`` imports ``Sock`` from ``wssync.flask`` (served by ``python -m wssync
--app flask_sock_app:app``); otherwise from ``flask_sock`` (served by gunicorn gthread,
one worker thread per WebSocket).
"""

from __future__ import annotations

import os
from typing import Any

from flask import Flask, Response

if os.environ.get("SOCK") == "wssync":
    from wssync.flask import Sock
else:
    from flask_sock import Sock  # type: ignore[no-redef]

app = Flask(__name__)
sock = Sock(app)


@app.route("/")
def hello() -> Response:
    return Response(b"Hello, World!", mimetype="text/plain")


@sock.route("/ws")
def echo(ws: Any) -> None:
    while True:
        ws.send(ws.receive())
