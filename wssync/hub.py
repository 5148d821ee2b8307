"""``Hub``: the open WebSockets of one serving process, broadcast to them, and counts.

The bridge registers each WebSocket here when it opens and removes it when it
closes; the server asks here for broadcasts, ``stats()``, ``websockets`` and
``connections()``.  A broadcast is encoded once, fanned out on the reactor
thread, and published once as a record to the broker (a Redis broker, or the
relay to the other workers); records other servers published come back through
``deliver`` and are fanned out here.  For ``/metrics`` it adds to a run's
counters the gauges read off the live connections, pools and broker.  The hub
owns no socket and runs no user code; the server starts and closes it with the
reactor.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Optional, Tuple, Union

from .http.connection import HttpConnection
from .metrics import Metrics, Snapshot, labels
from .scale.broker import Broker, decode_record, encode_record, new_origin
from .websocket.frames import encode_message

if TYPE_CHECKING:
    from .io.lanes import OwnThreads, ThreadPool
    from .io.reactor import BoundedHandoff
    from .io.transport import Transport
    from .scale.relay import WorkerLink
    from .websocket.connection import WebSocketConnection
    from .websocket.handle import WebSocket

log = logging.getLogger("wssync.server")

Message = Union[str, bytes]


class Hub:
    """The WebSocket registry, broadcast and counts of one serving process."""

    def __init__(self) -> None:
        self.worker: Optional[int] = None  # the index under a supervisor, else None
        self._websockets: Dict[WebSocketConnection, WebSocket] = {}
        self._handoff: Optional[BoundedHandoff] = None  # set while serving
        self._origin = b""  # who published a record: set per serving process
        self._bus: Optional[Broker] = None  # where broadcasts are published, if anywhere
        self._link: Optional[WorkerLink] = None  # to the supervisor, in a worker
        # Set when serving stops: a WebSocket opening then is closed at once
        # (True: with 1012, its worker is being replaced).
        self.closing: Optional[bool] = None

    # -- the registry (the bridge's side) ------------------------------------------------

    def add(self, conn: WebSocketConnection, handle: WebSocket) -> None:
        """A WebSocket opened (reactor thread); during a drain it is told to close
        at once (a handshake that came on a kept-alive connection)."""
        self._websockets[conn] = handle
        if self.closing is not None and conn.transport is not None:
            conn.transport.reactor.call_soon(conn.shutdown, self.closing)

    def remove(self, conn: WebSocketConnection) -> None:
        """A WebSocket closed (reactor thread); unknown ones are ignored."""
        self._websockets.pop(conn, None)

    @property
    def websockets(self) -> List[WebSocket]:
        """The open WebSockets (a snapshot)."""
        return list(self._websockets.values())

    def __len__(self) -> int:
        return len(self._websockets)

    # -- serving -------------------------------------------------------------------------

    def start(self, handoff: BoundedHandoff, broker: Optional[Broker] = None,
              link: Optional[WorkerLink] = None) -> None:
        """Serving begins (after any fork): broadcasts go through ``handoff``, and
        to ``broker`` (shared with other servers), else to the other workers
        through ``link`` (a worker's relay to its supervisor)."""
        self._handoff = handoff
        self._origin = new_origin()  # each serving process is its own publisher
        self._link = link
        self._bus = broker if broker is not None else link
        if self._bus is not None:
            self._bus.start(self.deliver)

    def close(self) -> None:
        """Serving ended: close the broker and the link; broadcasts do nothing now.

        Call after the hand-off is closed, so that a broker thread waiting to
        hand a record over gives up and closing the broker does not wait for it.
        """
        self._handoff = None
        if self._bus is not None:
            try:
                self._bus.close()
            except Exception:
                log.exception("error closing the broker")
        if self._link is not None and self._link is not self._bus:
            self._link.close()
        self._bus = self._link = None

    # -- broadcast -----------------------------------------------------------------------

    def broadcast(self, message: Union[Message, bytearray, memoryview],
                  path: Optional[str] = None, wait: bool = False,
                  timeout: Optional[float] = None) -> None:
        """:meth:`wssync.Server.broadcast` (its docstring tells the whole story)."""
        if not isinstance(message, (str, bytes, bytearray, memoryview)):
            raise TypeError("broadcast() takes str (text) or bytes, bytearray or memoryview "
                            f"(binary), not {type(message).__name__}")
        handoff = self._handoff
        if handoff is None:
            return
        on_reactor = handoff.reactor.in_reactor_thread()
        if wait and not on_reactor:
            deadline = None if timeout is None else time.monotonic() + timeout
            for handle in list(self._websockets.values()):
                if path is None or handle.path == path:
                    handle.drain(None if deadline is None
                                 else max(0.0, deadline - time.monotonic()))
        if not isinstance(message, (str, bytes)):
            message = bytes(message)
        frame = encode_message(message)
        if not wait or on_reactor:
            handoff.call(len(frame), self._broadcast, message, frame, path)
            return
        # Paced: return once the frame is in every receiver's output, so the
        # next broadcast's wait sees what this one left unsent.
        fanned_out = threading.Event()
        handoff.call(len(frame), self._broadcast, message, frame, path, fanned_out)
        while not fanned_out.wait(0.25) and self._handoff is handoff:
            pass

    def _broadcast(self, message: Message, frame: bytes, path: Optional[str],
                   fanned_out: Optional[threading.Event] = None) -> None:
        self._fan_out(message, frame, path)
        if fanned_out is not None:
            fanned_out.set()
        broker = self._bus
        if broker is not None:
            # Published from the reactor thread, so records leave in the order
            # the broadcasts were made.
            broker.publish(encode_record(self._origin, path, message))

    def _fan_out(self, message: Message, frame: bytes, path: Optional[str]) -> None:
        for ws_conn, handle in list(self._websockets.items()):
            if path is None or handle.path == path:
                ws_conn.broadcast(message, frame)

    def deliver(self, record: bytes) -> None:
        """A broadcast another server published (any thread): fan it out here."""
        try:
            origin, path, message = decode_record(record)
        except ValueError as exc:
            log.warning("ignoring a malformed broadcast record: %s", exc)
            return
        handoff = self._handoff
        if origin == self._origin or handoff is None:
            return  # our own, back from a broker that delivers to every subscriber
        frame = encode_message(message)
        handoff.call(len(frame), self._fan_out, message, frame, path)

    # -- counts --------------------------------------------------------------------------

    def counts(self, connections: int) -> Dict[str, Any]:
        """This process's counts, with ``connections`` open (HTTP and WebSocket)."""
        return self._counts(connections, self._bus.stats() if self._bus is not None else None)

    def _counts(self, connections: int, broker: Optional[Dict[str, Any]]) -> Dict[str, Any]:
        websockets = len(self._websockets)
        return {"pid": os.getpid(), "worker": self.worker, "connections": connections,
                "http": connections - websockets, "websocket": websockets,
                "dropped": broker.get("dropped", 0) if broker is not None else 0}

    def stats(self, connections: int) -> Dict[str, Any]:
        """:meth:`wssync.Server.stats`: the counts, the broker's and the cluster's."""
        broker = self._bus.stats() if self._bus is not None else None
        counts = self._counts(connections, broker)
        counts["broker"] = broker
        counts["cluster"] = (self._link.view or None) if self._link is not None else None
        return counts

    def metrics(self, metrics: Metrics, transports: Iterable[Transport],
                pools: Iterable[Tuple[str, Optional[ThreadPool]]],
                own_threads: Optional[OwnThreads] = None) -> Snapshot:
        """A run's ``metrics`` with the gauges of now: open ``transports`` by
        protocol and their unsent bytes, each pool's busy threads and waiting
        tasks (``own_threads`` as pool ``websocket``), and the broker's state."""
        for conn in self._websockets:
            conn.count_traffic()  # (up to now: a scrape sees every byte so far)
        snapshot = metrics.snapshot()
        by_protocol: Dict[str, float] = {}
        unsent = 0
        for transport in transports:
            name = transport.protocol.name if transport.started else "tls"
            by_protocol[name] = by_protocol.get(name, 0) + 1
            unsent += transport.get_write_buffer_size()
        snapshot["wssync_open_connections"] = {
            labels(protocol=name): count for name, count in by_protocol.items()}
        snapshot["wssync_output_buffer_bytes"] = {"": unsent}
        busy: Dict[str, float] = {}
        queued: Dict[str, float] = {}
        for name, pool in pools:
            if pool is not None:
                running = pool.busy
                busy[labels(pool=name)] = running
                queued[labels(pool=name)] = max(0, pool.queued - running)
        if own_threads is not None:
            busy[labels(pool="websocket")] = own_threads.count
            queued[labels(pool="websocket")] = 0
        snapshot["wssync_pool_busy_threads"] = busy
        snapshot["wssync_pool_queued_tasks"] = queued
        if self._bus is not None:
            broker = self._bus.stats()
            snapshot["wssync_broker_up"] = {"": 1 if broker.get("connected", True) else 0}
            snapshot["wssync_broker_records_dropped_total"] = {"": broker.get("dropped", 0)}
        return snapshot

    def connections(self, transports: Iterable[Transport]) -> List[Dict[str, Any]]:
        """:meth:`wssync.Server.connections` for these open transports."""
        out = []
        now = time.monotonic()
        for transport in transports:
            protocol = transport.protocol
            peer = transport.proxy_peername or transport.peername
            client = transport.peername
            handle = self._websockets.get(protocol)  # type: ignore[call-overload]
            if handle is not None:
                client = handle.remote_address
            elif isinstance(protocol, HttpConnection) and protocol.client_addr is not None:
                client = protocol.client_addr  # (None while TLS still shakes hands)
            server = transport.sockname
            info: Dict[str, Any] = {
                "transport": "tls" if transport.secure else
                             "tcp" if isinstance(server, tuple) else "unix",
                "client_addr": client[0] if isinstance(client, tuple) else None,
                "client_port": client[1] if isinstance(client, tuple) else None,
                "peer_addr": peer[0] if isinstance(peer, tuple) else None,
                "peer_port": peer[1] if isinstance(peer, tuple) else None,
                "server_addr": server[0] if isinstance(server, tuple) else str(server),
                "server_port": server[1] if isinstance(server, tuple) else None,
                "protocol": protocol.name,
                "bytes_in": transport.bytes_in,
                "bytes_out": transport.bytes_out,
                "age": round(now - transport.opened_at, 3),
            }
            if handle is not None:
                info["path"] = handle.path
            out.append(info)
        return out
