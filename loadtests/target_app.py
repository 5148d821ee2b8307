"""The load-test target: HTTP pages and a JSON API, a WebSocket echo and a chat room.

Serve it with ``python -m wssync --app target_app:app --port 8080`` from this
folder (``loadtests/run.sh`` does).  ``/chat`` broadcasts every message it
receives to everyone in the room, unchanged, so clients can measure latency
from a timestamp inside the message.
"""

from __future__ import annotations

import itertools
import threading
from typing import Any, Dict, Union

from wssync import App, Request, Response, WebSocket

app = App()
_items: Dict[int, Dict[str, Any]] = {}
_ids = itertools.count(1)
_lock = threading.Lock()  # handlers may run on worker threads

PAGE = "<!doctype html><title>wssync load target</title><h1>Hello from wssync</h1>" + \
       "<p>" + "Lorem ipsum dolor sit amet. " * 40 + "</p>"


@app.route("/")
def index(request: Request) -> Response:
    return Response.html(PAGE)


@app.route("/api/items", methods=["GET", "POST"])
def items(request: Request) -> Any:
    if request.method == "POST":
        data = request.json()
        with _lock:
            item_id = next(_ids)
            _items[item_id] = {"id": item_id, **data}
            if len(_items) > 10000:  # bounded: a long run must not grow memory
                _items.pop(next(iter(_items)))
        return Response.json(_items[item_id], status=201)
    with _lock:
        latest = list(_items.values())[-20:]
    return {"items": latest, "count": len(latest)}


@app.route("/api/items/<item_id>")
def item(request: Request) -> Any:
    item_id = request.path_params["item_id"]
    found = _items.get(int(item_id)) if item_id.isdigit() else None
    if found is None:
        return Response.json({"error": "not found"}, status=404)
    return found


@app.route("/health")
def health(request: Request) -> str:
    return "ok"


@app.websocket("/ws")
def echo(ws: WebSocket, message: Union[str, bytes]) -> None:
    ws.send(message)


@app.websocket("/chat")
def chat(ws: WebSocket, message: Union[str, bytes]) -> None:
    assert app.server is not None
    app.server.broadcast(message, path="/chat")
