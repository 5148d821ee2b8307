"""Tornado: ``python tornado_app.py --host 127.0.0.1 --port N [--certfile F --keyfile F]``.

RequestHandler "Hello, World!" on ``/``, WebSocketHandler echo on ``/ws``,
``GET /broadcast?seq=N`` writes a 100-byte message to every WebSocket client.
One process, Tornado's default (asyncio) IOLoop.  With a certificate: HTTPS and WSS
(``ssl_options``, an ``ssl.SSLContext``).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import ssl
from typing import Optional, Set, Union

import tornado.web
import tornado.websocket
from bench_tls import tls_context

CLIENTS: Set[EchoHandler] = set()


def broadcast_message(seq: str) -> str:
    return f"{seq}:".ljust(100, "x")[:100]


class HelloHandler(tornado.web.RequestHandler):
    def get(self) -> None:
        self.set_header("Content-Type", "text/plain")
        self.write(b"Hello, World!")


class BroadcastHandler(tornado.web.RequestHandler):
    def get(self) -> None:
        message = broadcast_message(self.get_argument("seq", "0"))
        for client in list(CLIENTS):
            try:
                client.write_message(message)
            except tornado.websocket.WebSocketClosedError:
                CLIENTS.discard(client)
        self.set_header("Content-Type", "text/plain")
        self.write(b"ok\n")


class EchoHandler(tornado.websocket.WebSocketHandler):
    def open(self, *args: str, **kwargs: str) -> None:
        CLIENTS.add(self)

    def on_message(self, message: Union[str, bytes]) -> None:
        self.write_message(message, binary=isinstance(message, bytes))

    def on_close(self) -> None:
        CLIENTS.discard(self)

    def check_origin(self, origin: str) -> bool:
        return True


def make_app() -> tornado.web.Application:
    return tornado.web.Application([
        (r"/", HelloHandler),
        (r"/broadcast", BroadcastHandler),
        (r"/ws", EchoHandler),
    ])


async def main(host: str, port: int, context: Optional[ssl.SSLContext] = None) -> None:
    server = make_app().listen(port, address=host, backlog=1024, ssl_options=context)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--certfile", help="serve over TLS with this certificate (PEM)")
    parser.add_argument("--keyfile", help="its private key (PEM)")
    args = parser.parse_args()
    asyncio.run(main(args.host, args.port, tls_context(args.certfile, args.keyfile)))
