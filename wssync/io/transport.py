"""Connections on the reactor: one ``Transport`` per accepted socket.

A ``Transport`` owns its socket, output buffer and back-pressure state, and holds the
current protocol object, which it can swap (HTTP to WebSocket) on the same TCP connection.
Its output queue holds byte buffers and file regions (:mod:`wssync.io.filesend`), in order.
What it asks of the socket goes through its socket operations (:mod:`wssync.io.sockops`:
the socket itself, or TLS), so the same transport serves both.  It moves bytes only: it
must not parse them, and it never opens or closes a file (the protocol owns the descriptor
it hands in).  Every method here runs on the reactor thread.
"""

from __future__ import annotations

import logging
import selectors
import socket
import time
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Union

from ..errors import FileEndedEarly
from ..metrics import Metrics
from .filesend import FileRegion
from .protocol import BaseProtocol as BaseProtocol
from .protocol import WriteLimits as WriteLimits
from .ratelog import RateLimitedLog
from .reactor import Reactor, Timer
from .sockops import PLAIN, Buffer, SocketOps

if TYPE_CHECKING:
    from .listener import LiveTransports

log = logging.getLogger("wssync.transport")
# A peer can be slow at will: a few lines, then one per interval with counts.
_SLOW = RateLimitedLog(log, logging.WARNING, "slow peers dropped")
_QUIET = RateLimitedLog(log, logging.INFO, "peers dropped for taking nothing")

EVENT_READ = selectors.EVENT_READ
EVENT_WRITE = selectors.EVENT_WRITE

RECV_SIZE = 65536
# Buffers handed to one sendmsg(): enough to fill a socket buffer with small
# frames, far below the kernel's IOV_MAX (1024 on Linux).
_IOV_BATCH = 64
# Errors that mean "the peer is gone", not a bug worth a traceback.
_GONE = (ConnectionError, TimeoutError)
_LOCAL_ADDRESSES: Dict[Any, Any] = {}


class Transport:
    """One accepted connection's socket: buffers, back-pressure, and the protocol
    object it feeds (asyncio's word for this layer)."""

    __slots__ = (
        "_backlog_mark", "_closed", "_closing", "_eof", "_events", "_hard_limit", "_high_water",
        "_io", "_live", "_low_water", "_max_buffer", "_ops", "_out", "_out_size", "_progress",
        "_reading_paused", "_regions", "_send_timeout", "_send_timer", "_slow_timeout",
        "_slow_timer", "_write_eof", "_writing_paused", "bytes_in", "bytes_out", "fileno",
        "metrics", "opened_at", "peername", "protocol", "proxy_peername", "reactor", "secure",
        "sock", "sockname", "started",
    )

    def __init__(self, reactor: Reactor, sock: socket.socket, peername: Any,
                 protocol: BaseProtocol, live: Optional[LiveTransports], limits: WriteLimits,
                 ops: SocketOps = PLAIN) -> None:
        self.reactor = reactor
        self.sock = sock
        self._ops = ops
        # What recv and send are called on: for a plain socket the socket itself,
        # so nothing sits between this transport and the kernel.
        self._io = ops.io(sock)
        self.secure = ops.secure  # the bytes are encrypted on the wire
        self.fileno = sock.fileno()
        self.peername = peername
        # The socket's own peer once a PROXY protocol header named the client in
        # ``peername`` (that proxy's address); None otherwise.
        self.proxy_peername: Any = None
        sockname = sock.getsockname()
        # Every connection of a listener shares a handful of local addresses:
        # share the tuples too (idle connections are counted in thousands).
        self.sockname = _LOCAL_ADDRESSES.setdefault(sockname, sockname) \
            if len(_LOCAL_ADDRESSES) < 256 else sockname
        self.protocol = protocol
        self._live = live
        # The serving run's counters, at hand for every layer above (a relay's own).
        self.metrics = live.metrics if live is not None else Metrics()
        self._high_water = limits.high_water
        self._low_water = limits.high_water // 4
        self._max_buffer = limits.max_buffer
        self._hard_limit = max(limits.hard_limit, limits.max_buffer)
        self._send_timeout = limits.send_timeout
        self._send_timer: Optional[Timer] = None
        self._slow_timeout = limits.slow_timeout
        self._slow_timer: Optional[Timer] = None
        self._backlog_mark = -1  # the backlog at the last soft-limit check (-1: none yet)
        self._progress = 0.0  # when the peer last took bytes from a non-empty buffer
        # Buffers waiting for the kernel, sent as they are (never joined): a
        # broadcast frame is one object referenced by every receiver's list.
        # File regions wait in the same queue, in order, but are not memory:
        # ``_out_size`` counts buffered bytes only.
        self._out: List[Union[Buffer, FileRegion]] = []
        self._out_size = 0
        self._regions = 0  # file regions in _out
        self.bytes_in = 0  # read from the peer
        self.bytes_out = 0  # taken by the kernel for the peer
        self.opened_at = time.monotonic()
        self._events = 0
        self._reading_paused = False  # by the protocol
        self._writing_paused = False  # we told the protocol to stop writing
        self._closing = False
        self._write_eof = False  # close_write() asked: send FIN once the buffer drains
        self._closed = False
        self._eof = False
        self.started = False  # the protocol was told (connection_made)
        self._set_events(EVENT_READ)  # first: if it fails, nothing is left registered
        if live is not None:
            live.add(self)

    # -- info ---------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    def is_closing(self) -> bool:
        return self._closing or self._closed

    def start(self) -> None:
        """Begin: the socket operations make it ready (TLS shakes hands), then the protocol."""
        self._ops.start(self)

    # -- what socket operations call ----------------------------------------------

    def connection_ready(self) -> None:
        """The socket carries the protocol's bytes from now on: tell the protocol."""
        self.started = True
        self._update_events()  # back to this transport's own callbacks
        self.protocol.connection_made(self)

    def wait_socket(self, events: int, callback: Callable[[int], None]) -> None:
        """Until :meth:`connection_ready` (a handshake): ``callback(mask)`` on ``events``."""
        if self._closed:
            return
        self.reactor.selector.modify(self.sock, events, callback)
        self._events = -1  # not a mask of this transport's: the next _set_events replaces it

    def read_buffered(self) -> None:
        """Read as on a readable event: for input the selector cannot see (decrypted TLS)."""
        if not self._closed and self._events & EVENT_READ:
            self._read()

    # -- protocol swap --------------------------------------------------------

    def set_protocol(self, protocol: BaseProtocol, leftover: bytes = b"") -> None:
        """Install ``protocol`` and hand it bytes already read past the old one's end."""
        self.protocol = protocol
        protocol.connection_made(self)
        if self._writing_paused:
            protocol.pause_writing()
        if leftover and not self._closed:
            protocol.data_received(leftover)

    # -- reading ---------------------------------------------------------------

    def pause_reading(self) -> None:
        if not self._reading_paused:
            self._reading_paused = True
            self._update_events()

    def resume_reading(self) -> None:
        if self._reading_paused:
            self._reading_paused = False
            self._update_events()

    def _on_event(self, mask: int) -> None:
        """Selector callback while output is waiting (see _set_events)."""
        if mask & EVENT_WRITE:
            self._flush()
        if mask & EVENT_READ:
            self._read(mask)

    def _read(self, _mask: int = EVENT_READ) -> None:
        """Selector callback while only reading, which is nearly always."""
        if self._closed:
            return  # closed by an earlier callback of the same select() round
        try:
            data = self._io.recv(RECV_SIZE)
        except self._ops.would_block:
            return
        except OSError as exc:
            self._force_close(exc)
            return
        if data:
            self.bytes_in += len(data)
            self.protocol.data_received(data)
            return
        self._received_eof()

    def _received_eof(self) -> None:
        # The peer half-closed.  Stop reading; the protocol decides whether to
        # finish writing (HTTP response in flight) or to close now.
        self._eof = True
        self._update_events()
        self.protocol.eof_received()

    # -- writing ---------------------------------------------------------------

    def write(self, data: Buffer) -> None:
        """Send ``data`` (kept by reference, so it must not change afterwards)."""
        if self._closing or self._write_eof or not data:  # (closed is closing too)
            return
        if not self._out:
            # Write first, buffer second: most writes go out whole right away.  (_send
            # inline: every response and message comes this way.)
            try:
                sent = self._io.send(data)
            except self._ops.would_block:
                sent = 0
            except OSError as exc:
                self._force_close(exc)
                return
            self.bytes_out += sent
            if sent == len(data):
                return
            self._out.append(memoryview(data)[sent:] if sent else data)
            self._out_size = len(data) - sent
            self._update_events()
            self._watch_send()
        else:
            behind = self._out_size > self._high_water
            self._out.append(data)
            self._out_size += len(data)
            if behind and self._out_size > self._hard_limit:
                # Memory first: whatever the peer does, a backlog this large is
                # not kept.  One that had caught up may take a message of any size.
                self._drop("hard_limit", "more than %d bytes behind", self._hard_limit)
                return
        if self._out_size > self._high_water:
            if not self._writing_paused:
                self._writing_paused = True
                self._update_events()  # stop reading from a peer that does not read
                try:
                    self.protocol.pause_writing()
                except Exception:
                    log.exception("pause_writing failed")
            if self._out_size > self._max_buffer and self._slow_timer is None \
                    and self._slow_timeout:
                self._slow_timer = self.reactor.call_later(self._slow_timeout,
                                                           self._check_backlog)

    def write_control(self, data: bytes) -> None:
        """Send a small control message (a ping, a pong, a close) after what is
        buffered.  It never counts toward dropping the peer: a peer reading a
        large message must not be cut for the keepalive ping behind it."""
        if self._out and not (self._closing or self._closed or self._write_eof):
            self._out.append(data)
            self._out_size += len(data)
        else:
            self.write(data)

    def get_write_buffer_size(self) -> int:
        """Bytes written and not yet taken by the kernel (file regions not counted)."""
        return self._out_size

    def write_file(self, fd: int, offset: int, count: int, done: Callable[[], None]) -> None:
        """Send ``count`` bytes of the open regular file ``fd`` from ``offset``,
        after what is buffered, then call ``done`` (not called if the
        connection is lost first).  The caller keeps ``fd`` open until then or
        until ``connection_lost``.  The region is not counted as buffered
        memory; a file shorter than ``count`` drops the connection, since the
        peer was promised that many bytes."""
        if self._closing or self._closed or self._write_eof:
            return
        if count <= 0:
            done()
            return
        out = self._out
        out.append(FileRegion(fd, offset, count, done, self._ops.sendfile))
        self._regions += 1
        if len(out) == 1:
            self._flush()  # write first: often most of it goes at once
        if self._out and not self._closed:
            self._watch_send()

    def _send(self, data: Union[Buffer, List[Buffer]]) -> int:
        """Bytes the kernel took (0 when its buffer is full), or -1 if the peer is gone.

        A list of buffers goes out with one ``sendmsg`` (scatter/gather: the
        kernel copies from each buffer in place, nothing is joined).
        """
        io = self._io
        try:
            sent = io.sendmsg(data) if isinstance(data, list) else io.send(data)
        except self._ops.would_block:
            return 0
        except OSError as exc:
            self._force_close(exc)
            return -1
        self.bytes_out += sent
        return sent

    def _flush(self) -> None:
        out = self._out
        if not out:
            self._update_events()
            return
        done: Optional[Callable[[], None]] = None
        head = out[0]
        if self._regions and type(head) is FileRegion:
            sent = self._send_region(head)
            if sent < 0:
                return
            if sent:
                self._progress = time.monotonic()
                if not head.count and not head.pending:
                    del out[0]
                    self._regions -= 1
                    done = head.done
        else:
            if not self._regions:
                batch = out[:_IOV_BATCH] if len(out) > 1 else head
            else:  # the buffers before the next file region
                end = 1
                while end < len(out) and end < _IOV_BATCH and type(out[end]) is not FileRegion:
                    end += 1
                batch = out[:end] if end > 1 else head
            sent = self._send(batch)  # type: ignore[arg-type]  # buffers only, as chosen
            if sent < 0:
                return
            if sent:
                self._progress = time.monotonic()
                self._out_size -= sent
                taken = 0
                while sent:
                    size = len(out[taken])  # type: ignore[arg-type]
                    if sent < size:
                        out[taken] = memoryview(out[taken])[sent:]  # type: ignore[arg-type]
                        break
                    sent -= size
                    taken += 1
                del out[:taken]
        if self._writing_paused and self._out_size <= self._low_water:
            self._writing_paused = False
            self._update_events()
            try:
                self.protocol.resume_writing()
            except Exception:
                log.exception("resume_writing failed")
        if not out:
            if self._closing:
                self._force_close(None, graceful=True)
                return
            if self._write_eof:
                self._ops.shutdown_write(self)
        self._update_events()
        if done is not None and not self._closed:
            done()  # last: it may write the next response

    def _send_region(self, region: FileRegion) -> int:
        """One step of the file region at the head of the queue: bytes sent, or -1."""
        by_kernel = region.sendfile  # sendfile's bytes are not counted by _send
        try:
            sent = region.step(self.fileno, self._send, self._ops.would_block)
        except OSError as exc:
            if isinstance(exc, FileEndedEarly):
                # The response promised more bytes than the file has: the only
                # honest signal left is to cut the connection.
                log.warning("%s: file ended %d bytes early; closing the connection",
                            self.peername, region.count)
            self._force_close(exc)
            return -1
        if by_kernel and sent > 0:
            self.bytes_out += sent
        return sent

    def _watch_send(self) -> None:
        """Output is waiting: make sure a peer that never reads is dropped in time."""
        if self._send_timeout and self._send_timer is None:
            self._progress = time.monotonic()
            self._send_timer = self.reactor.call_later(self._send_timeout, self._check_send)

    def _check_backlog(self) -> None:
        """The backlog was above ``max_buffer``: drop a peer that is not catching up."""
        self._slow_timer = None
        size = self._out_size
        if self._closed or size <= self._max_buffer:
            self._backlog_mark = -1
            return
        if 0 <= self._backlog_mark <= size:
            # Above the soft limit a whole period ago and no smaller now: the
            # peer falls further behind for good (a reading peer of a large
            # message shrinks its backlog, and is kept however slow).
            self._drop("not_catching_up", "%d bytes behind and not catching up for %.0f s",
                       size, self._slow_timeout)
            return
        self._backlog_mark = size
        self._slow_timer = self.reactor.call_later(self._slow_timeout, self._check_backlog)

    def _check_send(self) -> None:
        self._send_timer = None
        if self._closed or not self._out:
            return
        idle = time.monotonic() - self._progress
        if idle >= self._send_timeout:
            self._drop("send_timeout", "no bytes taken for %.0f s", idle)
            return
        self._send_timer = self.reactor.call_later(self._send_timeout - idle, self._check_send)

    def _drop(self, reason: str, why: str, *args: Any) -> None:
        """Drop a peer that does not take its output (counted by ``reason``)."""
        self.metrics.slow_drops[reason] += 1
        (_QUIET if reason == "send_timeout" else _SLOW).event(
            self.reactor, self.peername, "dropping %s: " + why, self.peername, *args)
        self.abort()

    # -- closing ---------------------------------------------------------------

    def close(self) -> None:
        """Close once everything buffered has been sent."""
        if self._closing or self._closed:
            return
        self._closing = True
        if not self._out:
            self._force_close(None, graceful=True)
        else:
            self._update_events()

    def close_write(self) -> None:
        """Half-close: send FIN after what is buffered, and keep reading.

        For a peer that may still be sending: closing outright with unread
        input makes the kernel answer with a reset, which can destroy the
        last bytes we sent before the peer reads them.
        """
        if self._write_eof or self._closing or self._closed:
            return
        self._write_eof = True
        if not self._out:
            self._ops.shutdown_write(self)

    def abort(self) -> None:
        """Close now, discarding anything unsent."""
        self._out = []
        self._out_size = 0
        self._regions = 0
        self._force_close(None)

    def _force_close(self, exc: Optional[BaseException], graceful: bool = False) -> None:
        """Close the socket now and tell the protocol; ``graceful`` when all
        output went out (TLS then says close_notify first)."""
        if self._closed:
            return
        self._closed = True
        self._closing = True
        for timer in (self._send_timer, self._slow_timer):
            if timer is not None:
                timer.cancel()
        self._send_timer = self._slow_timer = None
        if self._events:
            try:
                self.reactor.selector.unregister(self.sock)
            except (KeyError, ValueError):
                pass
            self._events = 0
        if self._live is not None:
            self._live.remove(self)
        self._ops.close(self, graceful)
        if exc is not None and not isinstance(exc, _GONE):
            log.debug("connection %s closed on error: %r", self.peername, exc)
        if not self.started:
            return  # the protocol never heard of this connection
        try:
            self.protocol.connection_lost(exc)
        except Exception:
            log.exception("connection_lost failed")

    # -- selector registration ---------------------------------------------------

    def _update_events(self) -> None:
        if self._closed:
            return
        events = 0
        if not (self._reading_paused or self._writing_paused or self._eof or self._closing):
            events |= EVENT_READ
        if self._out:
            events |= EVENT_WRITE
        self._set_events(events)

    def _set_events(self, events: int) -> None:
        if events == self._events:
            return
        selector = self.reactor.selector
        # Reading only is the common case: its callback skips the dispatch on the mask.
        callback = self._read if events == EVENT_READ else self._on_event
        if not self._events:
            selector.register(self.sock, events, callback)
        elif not events:
            selector.unregister(self.sock)
        else:
            selector.modify(self.sock, events, callback)
        self._events = events
