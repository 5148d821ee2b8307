"""Raw ASGI 3 twin of ``loadtests/target_app.py``, so uvicorn can serve the Locust scenario.

Same routes, status codes, content types, bodies and JSON shapes as the wssync
app: the HTML page on ``/``, the JSON API on ``/api/items`` (GET, POST -> 201)
and ``/api/items/<id>`` (404 JSON when unknown), ``/health``, a WebSocket echo
on ``/ws`` and a chat room on ``/chat`` that sends every message it receives,
unchanged, to every client of the room (the sender included).  Unknown paths
get 404, a known path with the wrong method 405 with ``Allow``, a plain GET on a
WebSocket path 426, as wssync answers.  No framework: ``mixed.py`` compares
servers, not routers.
"""

from __future__ import annotations

import itertools
import json
from typing import Any, Awaitable, Callable, Dict, List, Optional, Set, Tuple

from asgi_app import lifespan

Scope = Dict[str, Any]
Receive = Callable[[], Awaitable[Dict[str, Any]]]
Send = Callable[[Dict[str, Any]], Awaitable[None]]

TEXT = b"text/plain; charset=utf-8"
PAGE = ("<!doctype html><title>wssync load target</title><h1>Hello from wssync</h1>"
        + "<p>" + "Lorem ipsum dolor sit amet. " * 40 + "</p>").encode()
ALLOW = {"/": "GET, HEAD", "/health": "GET, HEAD", "/api/items": "GET, HEAD, POST"}
ITEM_PREFIX = "/api/items/"
WS_PATHS = ("/ws", "/chat")

_items: Dict[int, Dict[str, Any]] = {}
_ids = itertools.count(1)  # one event loop, no threads: no lock needed
_chat: Set[Send] = set()


def _json(data: Any, status: int = 200) -> Tuple[int, bytes, bytes]:
    # the same compact separators as wssync's Response.json, so bodies match byte for byte
    return status, json.dumps(data, separators=(",", ":")).encode(), b"application/json"


async def _read_body(receive: Receive) -> bytes:
    chunks: List[bytes] = []
    while True:
        event = await receive()
        if event["type"] == "http.disconnect":
            break
        chunks.append(event.get("body", b""))
        if not event.get("more_body"):
            break
    return b"".join(chunks)


async def _route(method: str, path: str, receive: Receive
                 ) -> Tuple[int, bytes, bytes, Optional[str]]:
    """(status, body, content type, Allow header or None) for one HTTP request."""
    get = method in ("GET", "HEAD")  # uvicorn leaves the body out of HEAD responses
    if path == "/" and get:
        return 200, PAGE, b"text/html; charset=utf-8", None
    if path == "/health" and get:
        return 200, b"ok", TEXT, None
    if path == "/api/items" and method == "POST":
        try:
            data = json.loads(await _read_body(receive))
            new_id = next(_ids)
            _items[new_id] = {"id": new_id, **data}
        except (ValueError, TypeError):  # wssync turns the handler's exception into a 500
            return 500, b"500 Internal Server Error\n", TEXT, None
        if len(_items) > 10000:  # bounded like target_app: a long run must not grow memory
            _items.pop(next(iter(_items)))
        return (*_json(_items[new_id], 201), None)
    if path == "/api/items" and get:
        latest = list(_items.values())[-20:]
        return (*_json({"items": latest, "count": len(latest)}), None)
    item_id = path[len(ITEM_PREFIX):]
    if path.startswith(ITEM_PREFIX) and item_id and "/" not in item_id:
        if not get:
            return 405, b"405 Method Not Allowed\n", TEXT, "GET, HEAD"
        found = _items.get(int(item_id)) if item_id.isdigit() else None
        if found is None:
            return (*_json({"error": "not found"}, 404), None)
        return (*_json(found), None)
    if path in ALLOW:
        return 405, b"405 Method Not Allowed\n", TEXT, ALLOW[path]
    if path in WS_PATHS:
        return 426, b"426 Upgrade Required: this is a WebSocket endpoint\n", TEXT, None
    return 404, b"404 Not Found\n", TEXT, None


async def _http(scope: Scope, receive: Receive, send: Send) -> None:
    status, body, content_type, allow = await _route(scope["method"], scope["path"], receive)
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    if allow is not None:
        headers.append((b"allow", allow.encode()))
    elif status == 426:
        headers += [(b"upgrade", b"websocket"), (b"sec-websocket-version", b"13")]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _broadcast(message: Dict[str, Any]) -> None:
    for client in list(_chat):
        try:
            await client(message)
        except Exception:  # one closed or broken client must not stop the others
            _chat.discard(client)


async def _websocket(scope: Scope, receive: Receive, send: Send) -> None:
    path = scope["path"]
    event = await receive()  # websocket.connect
    if path not in WS_PATHS:
        # wssync answers 404; uvicorn's sansio impl logs an error for this correct
        # rejection (it counts it as "returned without completing handshake")
        if "websocket.http.response" in scope.get("extensions", {}):
            body = b"404 Not Found: no WebSocket endpoint here\n"
            await send({"type": "websocket.http.response.start", "status": 404,
                        "headers": [(b"content-type", TEXT),
                                    (b"content-length", str(len(body)).encode())]})
            await send({"type": "websocket.http.response.body", "body": body})
        else:
            await send({"type": "websocket.close"})  # the server answers 403
        return
    await send({"type": "websocket.accept"})
    chat = path == "/chat"
    if chat:
        _chat.add(send)
    try:
        while True:
            event = await receive()
            if event["type"] != "websocket.receive":
                return  # websocket.disconnect
            text = event.get("text")
            message = ({"type": "websocket.send", "text": text} if text is not None
                       else {"type": "websocket.send", "bytes": event.get("bytes") or b""})
            if chat:
                await _broadcast(message)
            else:
                await send(message)
    finally:
        _chat.discard(send)


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    kind = scope["type"]
    if kind == "http":
        await _http(scope, receive, send)
    elif kind == "websocket":
        await _websocket(scope, receive, send)
    elif kind == "lifespan":
        await lifespan(receive, send)
