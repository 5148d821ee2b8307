"""The ``websockets`` library's asyncio server: echo on any path.

``python websockets_asyncio_app.py --host 127.0.0.1 --port N [--certfile F --keyfile F]``
(with a certificate: WSS, the ``ssl`` context passed to ``serve``).  A plain
``GET /broadcast?seq=N`` (no upgrade) is answered by ``process_request`` after
``websockets.asyncio.server.broadcast`` sent a 100-byte message to every client.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import ssl
from typing import Optional

from bench_tls import tls_context
from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response


def broadcast_message(seq: str) -> str:
    return f"{seq}:".ljust(100, "x")[:100]


async def echo(ws: ServerConnection) -> None:
    try:
        async for message in ws:
            await ws.send(message)
    except ConnectionClosed:
        pass  # the client closed while an echo was due: nothing to log


def process_request(connection: ServerConnection, request: Request) -> Optional[Response]:
    if request.path.startswith("/broadcast"):
        seq = request.path.partition("seq=")[2].partition("&")[0] or "0"
        broadcast(connection.server.connections, broadcast_message(seq))
        return connection.respond(200, "ok\n")
    if request.headers.get("Upgrade", "").lower() != "websocket":
        return connection.respond(200, "Hello, World!")
    return None


async def main(host: str, port: int, context: Optional[ssl.SSLContext] = None) -> None:
    async with serve(echo, host, port, process_request=process_request, backlog=1024,
                     ssl=context) as server:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, server.close)
        await server.wait_closed()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--certfile", help="serve over TLS with this certificate (PEM)")
    parser.add_argument("--keyfile", help="its private key (PEM)")
    args = parser.parse_args()
    asyncio.run(main(args.host, args.port, tls_context(args.certfile, args.keyfile)))
