"""The Socket.IO side of socketio_idle.py and socketio_acks.py: one minimal client for
every server, the checks that a server is up, and the server list.

The load speaks engine.io v4 over its WebSocket transport only (no long-polling
first): ``GET /socket.io/?EIO=4&transport=websocket`` with the websockets library's
asyncio client (no compression, no WebSocket-level pings: engine.io has its own),
then the open packet, ``40`` to join the default namespace, ``2`` answered by
``3``, and ``42<id>["echo",...]`` answered by the ack ``43<id>[...]``.  That is
cheap enough to hold thousands of connections in one process.  The default
transports (polling, then the upgrade) are checked once per server with
python-socketio's own client (:func:`check_transports`).
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any, Dict, List, Optional, Tuple

import common
import servers
from websockets.asyncio.client import ClientConnection, connect

PATH = "/socket.io/?EIO=4&transport=websocket"

# The servers of the single-process comparisons (each pinned to common.SERVER_CPU)
# and of the --workers comparison (unpinned, as run.py's multi-process workloads).
PINNED = ["sio-wssync", "sio-wssync-t8", "sio-gthread", "sio-gevent", "sio-gevent-wc"]
WORKERS = ["sio-wssync-w1", "sio-wssync-w2"]
ANCHORS = ("sio-gthread", "sio-gevent", "sio-gevent-wc")


class SioClient:
    """One Socket.IO client on an open WebSocket: :meth:`hold` answers pings until
    the connection ends; :meth:`call` emits ``echo`` and waits for its ack."""

    __slots__ = ("next_id", "pings", "sid", "ws")

    def __init__(self, ws: ClientConnection, sid: str) -> None:
        self.ws = ws
        self.sid = sid
        self.pings = 0
        self.next_id = 0

    async def hold(self) -> None:
        try:
            async for message in self.ws:
                if message == "2":
                    self.pings += 1
                    await self.ws.send("3")
        except Exception:
            pass  # the connection ended: the caller counts open connections

    async def call(self, payload: str) -> str:
        """One ``echo`` call; its ack's arguments (as JSON text)."""
        self.next_id += 1
        ack = f"43{self.next_id}"
        await self.ws.send(f'42{self.next_id}["echo",{payload}]')
        while True:
            message = await self.ws.recv()
            if not isinstance(message, str):
                continue
            if message == "2":
                self.pings += 1
                await self.ws.send("3")
            elif message.startswith(ack) and message[len(ack)] == "[":
                return message[len(ack):]

    @property
    def open(self) -> bool:
        return self.ws.close_code is None

    async def close(self) -> None:
        try:
            await asyncio.wait_for(self.ws.close(), 5)
        except Exception:
            pass


async def sio_connect(host: str, port: int, timeout: float) -> SioClient:
    """Open the WebSocket, read engine.io's open packet, join the default
    namespace; raises on anything else (or after ``timeout`` seconds)."""
    async def handshake() -> SioClient:
        ws = await connect(f"ws://{host}:{port}{PATH}", compression=None, ping_interval=None,
                           open_timeout=None, close_timeout=2, max_queue=4)
        try:
            opened = await ws.recv()
            if not isinstance(opened, str) or not opened.startswith("0{"):
                raise ConnectionError(f"expected engine.io's open packet, got {opened!r:.60}")
            await ws.send("40")
            while True:
                message = await ws.recv()
                if message == "2":
                    await ws.send("3")
                elif isinstance(message, str) and message.startswith("40"):
                    sid = json.loads(message[2:] or "{}").get("sid", "")
                    return SioClient(ws, sid)
                elif isinstance(message, str) and message.startswith("44"):
                    raise ConnectionError(f"namespace refused: {message[:80]}")
        except BaseException:
            await ws.close()
            raise

    return await asyncio.wait_for(handshake(), timeout)


def failure_kind(exc: BaseException) -> str:
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return "timeout"
    return type(exc).__name__


async def open_many(host: str, port: int, count: int, *, batch: int, timeout: float,
                    verbose: bool = True) -> Tuple[List[SioClient], Dict[str, int], float]:
    """``count`` clients, ``batch`` handshakes started at once and awaited before the
    next batch (each bounded by ``timeout``); (clients, failures by kind, seconds)."""
    clients: List[SioClient] = []
    failures: Dict[str, int] = {}
    t0 = time.monotonic()
    for start in range(0, count, batch):
        n = min(batch, count - start)
        results = await asyncio.gather(*(sio_connect(host, port, timeout) for _ in range(n)),
                                       return_exceptions=True)
        for r in results:
            if isinstance(r, SioClient):
                clients.append(r)
            else:
                kind = failure_kind(r)
                failures[kind] = failures.get(kind, 0) + 1
        if verbose:
            print(f"  {len(clients)}/{start + n} connected, failures {failures}, "
                  f"{time.monotonic() - t0:.1f} s", flush=True)
    return clients, failures, time.monotonic() - t0


def wait_ready(server: servers.ServerProcess, timeout: float = 30.0) -> None:
    """The port, then engine.io's polling handshake (the app has no other route)."""
    server.wait_ready(timeout)
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            status, body, _ = common.http_get(server.host, server.port,
                                              "/socket.io/?EIO=4&transport=polling", timeout=5)
            if status == 200 and body.startswith(b"0{"):
                return
            last = f"{status} {body[:80]!r}"
        except OSError as exc:
            last = repr(exc)
        if not server.alive():
            break
        time.sleep(0.2)
    raise RuntimeError(f"{server.spec.name}: engine.io handshake failed: {last}")


def check_transports(host: str, port: int) -> Dict[str, Any]:
    """python-socketio's client with the default transports (polling, then the
    upgrade) and websocket-only: connects, one ``echo`` call, the transport it
    ended on."""
    import socketio  # the bench venv's python-socketio[client]

    out: Dict[str, Any] = {}
    for name, transports in (("default", None), ("websocket", ["websocket"])):
        client = socketio.Client(reconnection=False)
        try:
            client.connect(f"http://{host}:{port}", transports=transports, wait_timeout=10)
            answer = client.call("echo", {"n": 1}, timeout=10)
            deadline = time.monotonic() + 3
            while client.transport() != "websocket" and time.monotonic() < deadline:
                time.sleep(0.05)
            ok = answer == {"n": 1} and client.transport() == "websocket"
            out[name] = {"ok": ok, "transport": client.transport(), "ack": answer}
        except Exception as exc:
            out[name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        finally:
            try:
                client.disconnect()
            except Exception:
                pass
    return out


def lat_ms(values: List[float]) -> Optional[Dict[str, float]]:
    if not values:
        return None
    return {"p50_ms": round(common.percentile(values, 50) * 1000, 3),
            "p99_ms": round(common.percentile(values, 99) * 1000, 3)}


def save(base: str, data: Dict[str, Any], text: Optional[str] = None) -> None:
    """Write ``data`` to ``base``.json; with ``text``, also ``base``.txt, and show it."""
    with open(base + ".json", "w") as f:
        json.dump(data, f, indent=1, default=str)
    if text is None:
        return
    with open(base + ".txt", "w") as f:
        f.write(text + "\n")
    print()
    print(text)
    print(f"\nresults: {base}.json, {base}.txt")
