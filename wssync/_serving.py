"""``Serving``: one run of a ``Server`` on its reactor, from start to the end of its stop.

Built when serving starts (in a worker: after the fork), it wires the run:
the reactor and its hand-off, the handler pools, the bridge to the
application, the first protocols of the protocol registry and the listener,
the worker's link to its supervisor and the hub.  On stop it drains the open
connections within ``shutdown_grace``; at the end it releases all of it.  The
``Server`` keeps what outlives a run (settings, the listening socket, signals,
the public methods); this module binds no socket and installs no signal handler.
"""

from __future__ import annotations

import logging
import random
import ssl
import time
from functools import partial
from typing import TYPE_CHECKING, Any, Callable, Dict, Optional

from ._boot import serve_adapters
from .bridge import HttpBridge
from .config import Config
from .http.connection import HttpConnection
from .http.metrics_endpoint import MetricsEndpoint
from .http.writer import error_response
from .io.lanes import OwnThreads, ThreadPool
from .io.listener import Listener, LiveTransports, TransportFactory
from .io.reactor import BoundedHandoff, Reactor
from .io.tls import TlsSettings
from .io.transport import BaseProtocol, Transport, WriteLimits
from .io.watchdog import ReactorWatchdog
from .metrics import Metrics, Snapshot, labels
from .scale.handover import HandoverPort
from .scale.worker import Admission
from .sticky import StickySessions
from .websocket.connection import WebSocketConnection
from .websocket.upgrade import websocket_upgrade

if TYPE_CHECKING:
    import socket

    from .app import App
    from .hub import Hub
    from .io.registry import ProtocolRegistry
    from .scale.broker import Broker
    from .scale.worker import Worker

log = logging.getLogger("wssync.server")

WSGI_THREADS = 8  # workers for a mounted WSGI application in reactor mode
# The fix the reactor watchdog suggests for a handler that blocks the reactor.
_UNBLOCK = ("In reactor mode handlers must not block: serve with worker threads (--threads N, "
            "Server(threads=N)) or make a WebSocket handler blocking-style "
            "(@app.websocket(path, blocking=True)).")


class Serving:
    """One serving run: everything made for it, and its drain and release.

    ``on_lost`` is called (on the reactor) when a worker's supervisor is gone.
    With ``metrics_sock`` the run's metrics are served there (``/metrics``).
    """

    def __init__(self, app: App, config: Config, threads: int, sock: socket.socket,
                 ssl_context: Optional[ssl.SSLContext], protocols: ProtocolRegistry, hub: Hub,
                 broker: Optional[Broker], worker: Optional[Worker],
                 on_lost: Callable[[], None],
                 metrics_sock: Optional[socket.socket] = None) -> None:
        serve_adapters(app)  # (once: an embedding program's App is seen here first)
        self.config = config
        self.hub = hub
        self.worker = worker
        self.stopping = False
        reactor = self.reactor = Reactor()
        handoff = self.handoff = BoundedHandoff(reactor, config.max_send_queue)
        self.pool = ThreadPool(threads) if threads else None
        self.blocking_pool: Optional[ThreadPool] = None
        if not threads and app.wsgi is not None:
            # WSGI applications block: even in reactor mode they get workers.
            self.blocking_pool = ThreadPool(WSGI_THREADS, name="wssync-wsgi")
        self.own_threads = OwnThreads(config.max_blocking_websockets)
        bridge = HttpBridge(app, config, handoff, self.pool, hub, self.blocking_pool,
                            self.own_threads)
        admission = Admission((self.pool, self.blocking_pool), config.max_queued_tasks,
                              self.connection_count, config.max_connections,
                              partial(error_response, 503, "too many connections",
                                      [("Retry-After", "1")]), reactor)
        self.metrics = Metrics()  # this run's counters: a forked worker starts from zero
        self.transports = LiveTransports(self.metrics)
        transport_factory: TransportFactory = Transport
        if ssl_context is not None:
            transport_factory = TlsSettings(
                ssl_context, config.tls_handshake_timeout,
                error_response(400, "this port speaks TLS: use https:// or wss://"), protocols,
                config.max_tls_handshakes,
            ).transport

        upgrades = protocols.upgrades

        def http() -> BaseProtocol:
            return HttpConnection(config, bridge, upgrades)

        protocols.set_first(http)
        # One the user registered before serving is theirs to keep (a server
        # serves once: no earlier run's registration can be in the way).
        if "websocket" not in upgrades:
            protocols.add_upgrade("websocket", websocket_upgrade(config, bridge))
        self.limits = WriteLimits(config.write_high_water, config.max_write_buffer,
                                  config.send_timeout, config.max_write_buffer_hard,
                                  config.slow_peer_timeout)
        self.listener: Optional[Listener] = Listener(
            reactor, sock, protocols.first, self.transports, self.limits,
            config.max_connections, admission.refuse, admission.wait, transport_factory,
        )
        link = None
        self.handover: Optional[HandoverPort] = None
        if worker is not None:
            admission.balance = worker.balance
            link = worker.serve(reactor, config.max_message_size, self.counts, on_lost)
            if app.keeps_sessions and worker.handover_dir is not None:
                # Sessions live in one worker: requests for them are passed there.
                self.handover = HandoverPort(reactor, worker.handover_dir,
                                             partial(self._adopt, self.listener, http))
                bridge.hand_over = StickySessions(app, self.handover, self._pair)
        hub.start(handoff, broker, link)
        self.watchdog: Optional[ReactorWatchdog] = None  # reactor mode: names blocking code
        if not threads and config.slow_callback_warning:
            self.watchdog = ReactorWatchdog(reactor, config.slow_callback_warning, _UNBLOCK)
            self.watchdog.start()
        self.metrics_endpoint = MetricsEndpoint(reactor, metrics_sock, self.metrics_snapshot) \
            if metrics_sock is not None else None

    def mode_line(self) -> str:
        """How handlers run, for the start-up line."""
        if self.pool is not None:
            return f"thread-pool mode: handlers run on {self.pool.size} worker threads"
        line = "reactor mode: handlers run on the reactor thread and must not block"
        if self.blocking_pool is not None:
            line += f"; the WSGI app runs on {self.blocking_pool.size} threads"
        return line

    def connection_count(self) -> int:
        return len(self.transports)

    def metrics_snapshot(self) -> Snapshot:
        snapshot = self.hub.metrics(self.metrics, self.transports,
                                    (("handlers", self.pool), ("wsgi", self.blocking_pool)),
                                    self.own_threads)
        if self.handover is not None:
            snapshot["wssync_connections_passed_total"] = {
                labels(direction="out"): self.handover.passed_out,
                labels(direction="in"): self.handover.passed_in}
        return snapshot

    def counts(self) -> Dict[str, Any]:
        counts = self.hub.counts(len(self.transports))
        if self.config.metrics:  # (a worker's, for its supervisor's /metrics)
            counts["metrics"] = self.metrics_snapshot()
        # What max_requests counts: this run's responses, WebSocket handshakes
        # included.  (Not a class attribute bumped per request: writing to a
        # class invalidates the interpreter's attribute caches for its instances.)
        counts["requests"] = self.metrics.responses()
        return counts

    # -- the end ---------------------------------------------------------------------

    def begin_shutdown(self) -> None:
        """Stop accepting, ask every connection to finish, and wait for them (reactor).

        A worker replaced by another (a rolling restart, max_requests) closes
        its WebSockets with 1012 at random moments over ``close_spread``
        seconds (at most half of ``shutdown_grace``): their clients reconnect
        to the other workers, and not all in the same second.  A stop closes
        them with 1001 at once.  So does a WebSocket that opens during the
        drain (a handshake on a kept-alive connection).
        """
        if self.stopping:
            return
        self.stopping = True
        if self.listener is not None:
            self.listener.close()
            self.listener = None
        worker = self.worker
        restart = worker is not None and worker.replaced
        spread = min(self.config.close_spread, self.config.shutdown_grace / 2)
        if worker is not None:
            worker.withdraw()
        self.hub.closing = restart  # (and WebSockets that open during the drain)
        spreading = 0
        for transport in self.transports:
            protocol = transport.protocol
            if restart and isinstance(protocol, WebSocketConnection):
                spreading += 1
                self.reactor.call_later(random.uniform(0, spread), self._close_restarting,
                                        transport)
                continue
            try:
                protocol.shutdown()
            except Exception:
                log.exception("error shutting down a connection")
        if spreading:
            log.info("replaced: closing %d WebSockets with 1012 over %g s", spreading, spread)
        self.wait_for_connections(time.monotonic() + self.config.shutdown_grace)

    def _adopt(self, listener: Listener, http: Callable[[], BaseProtocol], sock: socket.socket,
               peername: Any, proxy_peername: Any, secure: bool, data: bytes) -> None:
        """Serve a connection another worker passed here (a session of this one)."""
        protocol = http()
        listener.adopt(sock, peername, proxy_peername, secure, protocol, data)
        if self.stopping and isinstance(protocol, HttpConnection):
            protocol.shutdown()  # served, then closed: this worker is leaving

    def _pair(self, sock: socket.socket, peername: Any, protocol: BaseProtocol) -> Transport:
        """The local end of a pair that relays a connection to another worker."""
        transport = Transport(self.reactor, sock, peername, protocol, self.transports,
                              self.limits)
        transport.start()
        return transport

    @staticmethod
    def _close_restarting(transport: Transport) -> None:
        protocol = transport.protocol
        if isinstance(protocol, WebSocketConnection) and not transport.is_closing():
            protocol.shutdown(restart=True)

    def wait_for_connections(self, deadline: float) -> None:
        """Stop the reactor once no connection is left, or at ``deadline`` (reactor)."""
        reactor = self.reactor
        # Blocking handlers are waited for too: their last sends and closes
        # still go through this reactor.
        handlers = self.own_threads.count
        if (not self.transports and not handlers) or time.monotonic() >= deadline:
            if handlers:
                log.warning("%d blocking WebSocket handler(s) still running after "
                            "shutdown_grace; leaving them", handlers)
            for transport in self.transports:
                transport.abort()
            if self.worker is not None:
                self.worker.last_report()  # what the drain served counts too
            reactor.stop()
            return
        reactor.call_later(0.02, self.wait_for_connections, deadline)

    def close(self) -> None:
        """Release everything the run made (the reactor has stopped)."""
        if self.watchdog is not None:
            self.watchdog.stop()
            self.watchdog = None
        for transport in self.transports:
            transport.abort()
        if self.listener is not None:
            self.listener.close()
            self.listener = None
        if self.metrics_endpoint is not None:
            self.metrics_endpoint.close()
            self.metrics_endpoint = None
        if self.handover is not None:
            self.handover.close()
            self.handover = None
        for pool in (self.pool, self.blocking_pool):
            if pool is not None:
                pool.shutdown(timeout=2.0)
        # First: a broker thread waiting to hand over a broadcast gives up,
        # so closing the broker below does not wait for it.
        self.handoff.close()  # threads waiting to send give up
        self.hub.close()
        self.reactor.close()
