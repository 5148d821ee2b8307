"""The built-in relay between a supervisor and its worker processes.

Each worker has one Unix stream socket to the supervisor (a socketpair made
before the fork).  Over it travel frames: broadcast records (worker → hub →
every other worker), a worker's "ready" once it serves, and statistics (each
worker's counts up every second, the table of all workers down).  Both ends
are protocol objects on a reactor :class:`~wssync.io.transport.Transport`, so
neither side ever blocks on the other; a side that falls more than
:data:`RELAY_BUFFER` bytes behind misses broadcasts, which are counted as
dropped rather than queued without bound.

This module knows nothing of HTTP, WebSockets or processes: the supervisor and
the server give it sockets and callbacks.
"""

from __future__ import annotations

import json
import logging
import socket
import struct
from typing import Any, Callable, Dict, List, Optional, Tuple

from ..io.reactor import Reactor
from ..io.transport import Transport, WriteLimits
from ..metrics import Snapshot, add_into, combine
from .broker import Deliver

log = logging.getLogger("wssync.relay")

_FRAME = struct.Struct("!BI")  # kind, body length
RECORD, READY, STATS = 1, 2, 3
_KINDS = (RECORD, READY, STATS)
RELAY_BUFFER = 16 * 1024 * 1024  # output one end may be behind before it drops records
_LIMITS = WriteLimits(high_water=RELAY_BUFFER, max_buffer=4 * RELAY_BUFFER, send_timeout=0.0)


def encode_frame(kind: int, body: bytes) -> bytes:
    return _FRAME.pack(kind, len(body)) + body


class FrameReader:
    """Splits the relay's byte stream into ``(kind, body)`` frames (Sans-I/O)."""

    def __init__(self, max_body: int) -> None:
        self._max_body = max_body
        self._buffer = bytearray()

    def feed(self, data: bytes) -> List[Tuple[int, bytes]]:
        """The frames ``data`` completes; ``ValueError`` for a corrupt stream."""
        buffer = self._buffer
        buffer += data
        frames = []
        offset = 0
        while len(buffer) - offset >= _FRAME.size:
            kind, length = _FRAME.unpack_from(buffer, offset)
            if kind not in _KINDS or length > self._max_body:
                raise ValueError(f"corrupt relay frame (kind {kind}, {length} bytes)")
            end = offset + _FRAME.size + length
            if end > len(buffer):
                break
            frames.append((kind, bytes(buffer[offset + _FRAME.size:end])))
            offset = end
        del buffer[:offset]
        return frames


class _Link:
    """One end of a relay socket: frames in, frames out, drops when far behind."""

    name = "relay"

    def __init__(self, on_frame: Callable[[int, bytes], None], on_lost: Callable[[], None],
                 max_body: int) -> None:
        self._on_frame = on_frame
        self._on_lost = on_lost
        self._reader = FrameReader(max_body)
        self.transport: Optional[Transport] = None
        self.behind = False  # more than RELAY_BUFFER waits for the other end
        self.dropped = 0

    def send(self, kind: int, body: bytes) -> bool:
        return self.send_frame(kind, encode_frame(kind, body))

    def send_frame(self, kind: int, frame: bytes) -> bool:
        """Queue an encoded frame; False (and counted) when the other end is too
        far behind."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return False
        if self.behind and kind == RECORD:
            self.dropped += 1
            return False
        transport.write(frame)
        return True

    def read_rest(self) -> None:
        """The other end has exited: read what it wrote before (its last report)
        now, before the link is dropped; the reactor may not have seen it yet.
        (On the reactor thread, as every read of this socket.)"""
        try:
            while self.transport is not None:
                data = self.transport.sock.recv(65536)
                if not data:
                    break
                self.data_received(data)
        except OSError:  # (BlockingIOError: nothing more to read)
            pass

    # -- BaseProtocol --------------------------------------------------------

    def connection_made(self, transport: Transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            frames = self._reader.feed(data)
        except ValueError as exc:
            log.error("relay: %s; closing the link", exc)
            assert self.transport is not None
            self.transport.abort()
            return
        for kind, body in frames:
            self._on_frame(kind, body)

    def eof_received(self) -> None:
        assert self.transport is not None
        self.transport.close()

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        self.transport = None
        self._on_lost()

    def pause_writing(self) -> None:
        self.behind = True

    def resume_writing(self) -> None:
        self.behind = False

    def shutdown(self) -> None:
        pass


def _open(reactor: Reactor, sock: socket.socket, link: _Link) -> Transport:
    sock.setblocking(False)
    transport = Transport(reactor, sock, "relay", link, None, _LIMITS)
    transport.start()
    return transport


class WorkerLink:
    """A worker's end: a :class:`~wssync.scale.broker.Broker` that reaches the other
    workers through the supervisor, and the channel for readiness and counts."""

    def __init__(self, reactor: Reactor, sock: socket.socket, max_record: int,
                 on_lost: Callable[[], None]) -> None:
        self._reactor = reactor
        self._sock = sock
        self._max_record = max_record
        self._on_lost = on_lost
        self._deliver: Optional[Deliver] = None
        self._link = _Link(self._on_frame, self._lost, max_record + 4096)
        self._closed = False
        self.view: Dict[str, Any] = {}  # the supervisor's latest table of all workers
        self.published = 0
        self.received = 0
        _open(reactor, sock, self._link)

    def ready(self, info: Dict[str, Any]) -> None:
        self._link.send(READY, json.dumps(info).encode())

    def report(self, counts: Dict[str, Any]) -> None:
        self._link.send(STATS, json.dumps(counts).encode())

    # -- Broker ------------------------------------------------------------------

    def start(self, deliver: Deliver) -> None:
        self._deliver = deliver

    def publish(self, record: bytes) -> None:
        if len(record) > self._max_record:
            self._link.dropped += 1
            return
        if self._link.send(RECORD, record):
            self.published += 1

    def close(self) -> None:
        self._closed = True
        transport = self._link.transport
        if transport is not None:
            transport.close()

    def stats(self) -> Dict[str, Any]:
        return {"broker": "relay", "connected": self._link.transport is not None,
                "published": self.published, "received": self.received,
                "dropped": self._link.dropped}

    # -- frames from the supervisor ------------------------------------------------

    def _on_frame(self, kind: int, body: bytes) -> None:
        if kind == RECORD:
            self.received += 1
            if self._deliver is not None:
                self._deliver(body)
        elif kind == STATS:
            try:
                self.view = json.loads(body)
            except ValueError:
                log.warning("relay: unreadable statistics from the supervisor")

    def _lost(self) -> None:
        if not self._closed:
            self._on_lost()


class RelayHub:
    """The supervisor's end: one link per worker; records from one go to all others."""

    def __init__(self, reactor: Reactor, max_record: int,
                 on_ready: Callable[[int, Dict[str, Any]], None]) -> None:
        self._reactor = reactor
        self._max_record = max_record
        self._on_ready = on_ready
        self._links: Dict[int, _Link] = {}  # by worker pid
        self.counts: Dict[int, Dict[str, Any]] = {}  # the latest report of each worker
        self.metrics: Dict[int, Snapshot] = {}  # the latest metrics of each worker
        # The last counters of workers gone, so that sums never go down.
        self.retired: Snapshot = {}
        self._retired_dropped = 0
        self.relayed = 0

    def attach(self, pid: int, sock: socket.socket) -> None:
        def on_frame(kind: int, body: bytes) -> None:
            self._on_frame(pid, kind, body)

        def on_lost() -> None:
            self._links.pop(pid, None)

        link = _Link(on_frame, on_lost, self._max_record + 4096)
        self._links[pid] = link
        _open(self._reactor, sock, link)

    def detach(self, pid: int) -> None:
        link = self._links.pop(pid, None)
        if link is not None:
            link.read_rest()  # the worker's last report, sent as it ended
        self.counts.pop(pid, None)
        add_into(self.retired, self.metrics.pop(pid, {}))
        if link is not None:
            self._retired_dropped += link.dropped
            if link.transport is not None:
                link.transport.abort()

    def forget_in_child(self) -> None:
        """In a forked worker: close our copies of the links, touching no selector."""
        for link in self._links.values():
            if link.transport is not None:
                link.transport.sock.close()
        self._links.clear()

    def close_all(self) -> None:
        for pid in list(self._links):
            self.detach(pid)

    @property
    def dropped(self) -> int:
        return sum(link.dropped for link in self._links.values())

    def cluster_metrics(self, restarts: int, workers: int) -> Snapshot:
        """Every worker's latest metrics summed (workers gone included), with the
        supervisor's own: ``restarts``, ``workers`` serving, records it dropped."""
        total = combine(self.metrics.values(), self.retired)
        dropped = total.setdefault("wssync_broker_records_dropped_total", {})
        dropped[""] = dropped.get("", 0) + self.dropped + self._retired_dropped
        total["wssync_workers"] = {"": workers}
        total["wssync_worker_restarts_total"] = {"": restarts}
        return total

    def send_view(self, view: Dict[str, Any]) -> None:
        body = json.dumps(view).encode()
        for link in list(self._links.values()):
            link.send(STATS, body)

    def _on_frame(self, pid: int, kind: int, body: bytes) -> None:
        if kind == RECORD:
            frame = encode_frame(RECORD, body)  # once, shared by every link's buffer
            for other, link in list(self._links.items()):
                if other != pid:
                    link.send_frame(RECORD, frame)
            self.relayed += 1
        elif kind == STATS:
            try:
                counts = json.loads(body)
            except ValueError:
                log.warning("relay: unreadable statistics from worker %d", pid)
                return
            metrics = counts.pop("metrics", None) if isinstance(counts, dict) else None
            if isinstance(metrics, dict):  # (with --metrics: for cluster_metrics)
                self.metrics[pid] = metrics
            self.counts[pid] = counts
        elif kind == READY:
            try:
                info = json.loads(body)
            except ValueError:
                info = {}
            self._on_ready(pid, info)
