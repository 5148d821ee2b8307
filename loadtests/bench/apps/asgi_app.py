"""ASGI app for uvicorn: "Hello, World!" on ``/``, WebSocket echo on ``/ws``,
``GET /broadcast?seq=N`` sends a 100-byte text message to every WebSocket client
(one ``await send`` per client, the ASGI way)."""

from __future__ import annotations

from typing import Any, Awaitable, Callable, Dict, Set

Send = Callable[[Dict[str, Any]], Awaitable[None]]
HELLO = b"Hello, World!"
HEADERS = [(b"content-type", b"text/plain"), (b"content-length", str(len(HELLO)).encode())]
CLIENTS: Set[Send] = set()


def broadcast_message(seq: str) -> str:
    return f"{seq}:".ljust(100, "x")[:100]


async def app(scope: Dict[str, Any], receive: Callable[[], Awaitable[Dict[str, Any]]],
              send: Send) -> None:
    kind = scope["type"]
    if kind == "http":
        if scope["path"] == "/broadcast":
            query = scope["query_string"].decode()
            seq = query.partition("seq=")[2].partition("&")[0] or "0"
            message = {"type": "websocket.send", "text": broadcast_message(seq)}
            for client in list(CLIENTS):
                try:
                    await client(message)
                except Exception:
                    CLIENTS.discard(client)
            body = b"ok\n"
        else:
            body = HELLO
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
    elif kind == "websocket":
        while True:
            event = await receive()
            etype = event["type"]
            if etype == "websocket.receive":
                text = event.get("text")
                if text is not None:
                    await send({"type": "websocket.send", "text": text})
                else:
                    await send({"type": "websocket.send", "bytes": event.get("bytes") or b""})
            elif etype == "websocket.connect":
                await send({"type": "websocket.accept"})
                CLIENTS.add(send)
            else:  # websocket.disconnect
                CLIENTS.discard(send)
                return
    elif kind == "lifespan":
        await lifespan(receive, send)


async def lifespan(receive: Callable[[], Awaitable[Dict[str, Any]]], send: Send) -> None:
    """Answer uvicorn's start-up and shut-down events (nothing to set up)."""
    while True:
        event = await receive()
        if event["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif event["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
