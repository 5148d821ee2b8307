"""The server side of ``slow_consumer.py``: synchronous producers that send to slow readers.

``python slow_consumer_app.py --server wssync|websockets [--threads N] [--broadcast-wait]
[--stream-count 64 --stream-size 1048576 --feed-count 1000 --feed-size 65536]
[--ping-interval 0] [--setting NAME=VALUE ...]``

Listens on a free loopback port and prints JSON events, one a line, on stdout (the
benchmark reads them; logs go to stderr): ``listening`` (with the port),
``connected`` (the number of open ``/feed`` connections), ``producer`` (how long a
producer took, from its first send to the return of its last) and
``producer_error``.

* ``/stream`` (blocking-style handler; wssync: ``blocking=True``) and ``/stream2``
  (wssync only: a callback on the thread pool): after the client's ``"go"`` the
  handler sends ``--stream-count`` binary messages of ``--stream-size`` bytes
  (:func:`stream_payload`), then closes with 1000.
* ``/feed``: clients only listen.  ``GET /go`` starts a plain thread that sends
  ``--feed-count`` messages of ``--feed-size`` bytes (:func:`feed_message`) to every
  ``/feed`` connection: wssync with ``server.broadcast(..., wait=--broadcast-wait)``,
  websockets with ``ws.send`` to each connection in turn.

Only wssync's and websockets' public APIs are used; each is imported only when served.
"""

from __future__ import annotations

import argparse
import json
import signal
import threading
import time
from http import HTTPStatus
from typing import Any, Callable, List, Optional

_print_lock = threading.Lock()


def stream_payload(index: int, size: int) -> bytes:
    """Message ``index`` of the stream: its index (mod 256) repeated, so the reader can
    check both order and content."""
    return bytes((index & 0xFF,)) * size


def feed_filler(size: int) -> bytes:
    return b"x" * max(0, size - 8)


def feed_message(seq: int, filler: bytes) -> bytes:
    """Broadcast ``seq``: its number as 8 ASCII digits, then the filler."""
    return b"%08d" % seq + filler


def emit(event: str, **fields: Any) -> None:
    """One event line on stdout, flushed at once: the benchmark waits for some of them."""
    with _print_lock:
        print(json.dumps({"event": event, **fields}), flush=True)


def timed_producer(scenario: str, produce: Callable[[], int]) -> None:
    """Run ``produce`` (which returns how many messages it sent) and report its duration;
    an exception is reported too, so the benchmark does not wait in vain."""
    started = time.monotonic()
    try:
        sent = produce()
    except Exception as exc:
        emit("producer_error", scenario=scenario, error=f"{type(exc).__name__}: {exc}",
             seconds=round(time.monotonic() - started, 3))
        raise
    emit("producer", scenario=scenario, seconds=round(time.monotonic() - started, 3),
         messages=sent)


# -- wssync -------------------------------------------------------------------------


def serve_wssync(args: argparse.Namespace) -> None:
    import logging

    from wssync import App, BlockingWebSocket, Request, Response, Server, WebSocket

    logging.basicConfig(level=logging.WARNING)  # warnings (drops) only, no access log
    app = App()
    feeds = 0
    feeds_lock = threading.Lock()

    def send_stream(ws: WebSocket) -> int:
        for index in range(args.stream_count):
            ws.send(stream_payload(index, args.stream_size))
        return int(args.stream_count)

    @app.websocket("/stream", blocking=True)
    def stream(ws: BlockingWebSocket) -> None:
        if ws.receive(timeout=60) != "go":
            return
        timed_producer("stream", lambda: send_stream(ws))
        ws.close(1000)

    @app.websocket("/stream2")
    def stream2(ws: WebSocket, message: object) -> None:
        # a callback on a pool thread (threads=N): its sends wait as a blocking handler's do
        if message == "go":
            timed_producer("stream", lambda: send_stream(ws))
            ws.close(1000)

    def feed_opened(ws: WebSocket) -> None:
        nonlocal feeds
        with feeds_lock:
            feeds += 1
            emit("connected", path="/feed", count=feeds)

    def feed_closed(ws: WebSocket, code: int, reason: str) -> None:
        nonlocal feeds
        with feeds_lock:
            feeds -= 1

    @app.websocket("/feed", on_connect=feed_opened, on_close=feed_closed)
    def feed(ws: WebSocket, message: object) -> None:
        pass  # the clients only listen

    def broadcast_all() -> int:
        server = app.server
        assert server is not None
        filler = feed_filler(args.feed_size)
        for seq in range(args.feed_count):
            server.broadcast(feed_message(seq, filler), path="/feed", wait=args.broadcast_wait)
        return int(args.feed_count)

    @app.route("/go")
    def go(request: Request) -> Response:
        threading.Thread(target=timed_producer, args=("broadcast", broadcast_all),
                         name="producer", daemon=True).start()
        return Response(b"started\n", content_type="text/plain")

    settings = {"ping_interval": args.ping_interval}
    for item in args.setting:  # other Server settings, for experiments
        name, _, value = item.partition("=")
        settings[name] = json.loads(value)
    server = Server(app, "127.0.0.1", 0, threads=args.threads, **settings)
    emit("listening", port=server.address[1], settings=settings)
    server.serve_forever()  # SIGTERM stops it


# -- websockets (the library's threaded sync server) -------------------------------


def serve_websockets(args: argparse.Namespace) -> None:
    from websockets.exceptions import ConnectionClosed
    from websockets.http11 import Request as WsRequest
    from websockets.http11 import Response as WsResponse
    from websockets.sync.server import ServerConnection, serve

    feeds: List[ServerConnection] = []
    feeds_lock = threading.Lock()

    def send_stream(ws: ServerConnection) -> int:
        for index in range(args.stream_count):
            ws.send(stream_payload(index, args.stream_size))
        return int(args.stream_count)

    def broadcast_all() -> int:
        # What sync code does to broadcast here: send to each connection in turn, so
        # every send waits for that receiver's socket (websockets.broadcast is asyncio only)
        filler = feed_filler(args.feed_size)
        for seq in range(args.feed_count):
            message = feed_message(seq, filler)
            with feeds_lock:
                receivers = list(feeds)
            for ws in receivers:
                try:
                    ws.send(message)
                except ConnectionClosed:
                    with feeds_lock:
                        if ws in feeds:
                            feeds.remove(ws)
        return int(args.feed_count)

    def handler(ws: ServerConnection) -> None:
        path = ws.request.path if ws.request is not None else ""
        try:
            if path == "/stream":
                if ws.recv(timeout=60) != "go":
                    return
                timed_producer("stream", lambda: send_stream(ws))
                ws.close(1000)
            elif path == "/feed":
                with feeds_lock:
                    feeds.append(ws)
                    emit("connected", path="/feed", count=len(feeds))
                try:
                    for _ in ws:
                        pass  # the clients only listen; this returns when they close
                finally:
                    with feeds_lock:
                        if ws in feeds:
                            feeds.remove(ws)
            else:
                ws.close(1008, "no such path")
        except ConnectionClosed:
            pass

    def process_request(connection: ServerConnection,
                        request: WsRequest) -> Optional[WsResponse]:
        if request.path == "/go":
            threading.Thread(target=timed_producer, args=("broadcast", broadcast_all),
                             name="producer", daemon=True).start()
            return connection.respond(HTTPStatus.OK, "started\n")
        return None

    ping = args.ping_interval or None  # 0 disables keepalive pings, as in wssync
    with serve(handler, "127.0.0.1", 0, process_request=process_request,
               ping_interval=ping) as server:
        def stop(*_args: Any) -> None:
            threading.Thread(target=server.shutdown, daemon=True).start()

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        emit("listening", port=server.socket.getsockname()[1],
             settings={"ping_interval": ping})
        server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", choices=["wssync", "websockets"], required=True)
    parser.add_argument("--threads", type=int, default=0, help="wssync's thread pool")
    parser.add_argument("--broadcast-wait", action="store_true",
                        help="wssync: broadcast(wait=True), paced by the slowest receiver")
    parser.add_argument("--stream-count", type=int, default=64)
    parser.add_argument("--stream-size", type=int, default=1 << 20)
    parser.add_argument("--feed-count", type=int, default=1000)
    parser.add_argument("--feed-size", type=int, default=65536)
    parser.add_argument("--ping-interval", type=float, default=0.0,
                        help="seconds between keepalive pings; 0 disables them")
    parser.add_argument("--setting", action="append", default=[], metavar="NAME=VALUE",
                        help="wssync: another Server setting (a JSON value; repeatable)")
    args = parser.parse_args()
    if args.server == "wssync":
        serve_wssync(args)
    else:
        serve_websockets(args)


if __name__ == "__main__":
    main()
