"""The ``websockets`` library's threaded sync server (one thread per connection): echo.

``python websockets_sync_app.py --host 127.0.0.1 --port N [--certfile F --keyfile F]``
(with a certificate: WSS).
"""

from __future__ import annotations

import argparse
import signal
import ssl
import threading
from typing import Any, Optional

from bench_tls import tls_context
from websockets.exceptions import ConnectionClosed
from websockets.sync.server import ServerConnection, serve


def echo(ws: ServerConnection) -> None:
    try:
        for message in ws:
            ws.send(message)
    except ConnectionClosed:
        pass  # the client closed while an echo was due: nothing to log


def main(host: str, port: int, context: Optional[ssl.SSLContext] = None) -> None:
    with serve(echo, host, port, backlog=1024, ssl=context) as server:
        def stop(*_args: Any) -> None:
            threading.Thread(target=server.shutdown, daemon=True).start()

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--certfile", help="serve over TLS with this certificate (PEM)")
    parser.add_argument("--keyfile", help="its private key (PEM)")
    args = parser.parse_args()
    main(args.host, args.port, tls_context(args.certfile, args.keyfile))
