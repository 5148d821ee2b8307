"""A Flask-SocketIO application as its users write it (threading mode, nothing of
wssync in it), for the Socket.IO tests.  :func:`create` makes a fresh one; the
module-level ``app`` and ``socketio`` are what ``python -m wssync socketio_app:socketio``
serves, configured by the environment (``SIO_TEST_QUEUE``: a message queue URL;
``SIO_TEST_CLIENT_JS``: the socket.io client script the page loads)."""

from __future__ import annotations

import json
import os
import threading
from typing import Any, Dict, List, Optional, Tuple

from flask import Flask, abort, request, send_file
from flask_socketio import (
    ConnectionRefusedError,
    SocketIO,
    disconnect,
    emit,
    join_room,
    leave_room,
)

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>socket.io</title>
<script src="/socket.io.min.js"></script></head>
<body><pre id="log"></pre>
<script>
  const log = (line) => { document.getElementById("log").textContent += line + "\\n"; };
  window.received = [];
  const socket = io({auth: {token: "page"}});
  window.sock = socket;
  socket.io.once("open", () => {
    log("opened " + socket.io.engine.transport.name);
    socket.io.engine.once("upgrade", (t) => log("upgraded " + t.name));
  });
  socket.on("connect", () => {
    log("connected");
    socket.emit("echo", {from: "page"}, (answer) => {
      window.ack = answer;
      log("ack " + JSON.stringify(answer));
    });
  });
  socket.on("news", (text) => { window.received.push(text); log("news " + text); });
</script></body></html>
"""


def create(message_queue: Optional[str] = None, max_http_buffer_size: int = 1_000_000,
           ping_interval: float = 25, client_js: Optional[str] = None,
           ) -> Tuple[Flask, SocketIO]:
    """A Flask app and its ``SocketIO``: events, rooms, a namespace, acks, and views
    that emit (broadcast, to a room, from a background task, a call to a client)."""
    app = Flask(__name__)
    socketio = SocketIO(app, message_queue=message_queue,
                        max_http_buffer_size=max_http_buffer_size,
                        ping_interval=ping_interval)
    state: Dict[str, List[Any]] = {"auth": [], "disconnects": [], "answers": [], "floods": []}
    app.config["state"] = state

    @socketio.on("connect")
    def connect(auth: Optional[Dict[str, Any]] = None) -> None:
        token = (auth or {}).get("token")
        if token == "wrong":
            raise ConnectionRefusedError("bad token")
        state["auth"].append(token)

    @socketio.on("disconnect")
    def gone(*reason: Any) -> None:
        state["disconnects"].append(request.sid)  # type: ignore[attr-defined]

    @socketio.on("echo")
    def echo(data: Any) -> Any:
        return data

    @socketio.on("whoami")
    def whoami() -> str:
        return request.sid  # type: ignore[attr-defined,no-any-return]

    @socketio.on("join")
    def join(room: str) -> str:
        join_room(room)
        return room

    @socketio.on("leave")
    def leave(room: str) -> str:
        leave_room(room)
        return room

    @socketio.on("say")
    def say(room: str, text: str) -> None:
        emit("said", text, to=room)

    @socketio.on("kick")
    def kick() -> None:
        disconnect()

    @socketio.on("ask_me")
    def ask_me(text: str) -> Any:
        # A handler that waits for its own client: the answer comes in on the
        # very connection whose event this is.
        return socketio.call("question", text, to=request.sid,  # type: ignore[attr-defined]
                             timeout=10)

    @socketio.on("slow")
    def slow(seconds: float) -> str:
        socketio.sleep(seconds)
        return "slept"

    @socketio.on("bin")
    def binary(data: bytes) -> Dict[str, Any]:
        return {"reversed": bytes(reversed(data)), "length": len(data)}

    @socketio.on("echo", namespace="/chat")
    def chat_echo(data: Any) -> Dict[str, Any]:
        return {"namespace": "/chat", "data": data}

    @app.route("/news")
    def news() -> str:
        socketio.emit("news", request.args.get("text", "news"))
        return "sent"

    @app.route("/room/<room>")
    def to_room(room: str) -> str:
        socketio.emit("said", request.args.get("text", ""), to=room)
        return "sent"

    @app.route("/background")
    def background() -> str:
        n = int(request.args.get("n", "3"))

        def ticker() -> None:
            for i in range(n):
                socketio.emit("tick", i)
                socketio.sleep(0.02)

        socketio.start_background_task(ticker)
        return "started"

    @app.route("/ask/<sid>")
    def ask(sid: str) -> str:
        def question() -> None:
            try:
                state["answers"].append(socketio.call("question", "6 * 7?", to=sid, timeout=10))
            except Exception as exc:  # the test reads what went wrong
                state["answers"].append(f"error: {exc!r}")

        socketio.start_background_task(question)
        return "asked"

    @app.route("/flood/<sid>")
    def flood(sid: str) -> str:
        n, size = int(request.args.get("n", "128")), int(request.args.get("size", "65536"))
        filler = "x" * size

        def send_all() -> None:
            for i in range(n):
                socketio.emit("chunk", {"i": i, "data": filler}, to=sid)
            state["floods"].append(n)

        threading.Thread(target=send_all, daemon=True).start()
        return "flooding"

    @app.route("/state")
    def read_state() -> str:
        return json.dumps(state)

    @app.route("/threads")
    def threads() -> str:
        return str(threading.active_count())

    @app.route("/page")
    def page() -> str:
        return PAGE

    @app.route("/socket.io.min.js")
    def client_script() -> Any:
        if client_js is None:
            abort(404)
        return send_file(client_js, mimetype="application/javascript")

    return app, socketio


app, socketio = create(message_queue=os.environ.get("SIO_TEST_QUEUE") or None,
                       client_js=os.environ.get("SIO_TEST_CLIENT_JS") or None)
