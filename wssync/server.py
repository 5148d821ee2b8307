"""``Server``: binds the port and runs the reactor with an ``App``.

Owns the life cycle (bind, serve, start on a thread, graceful stop), the
registry of open connections and WebSockets, and ``broadcast``.  Protocol
details live in the protocol objects; running user code lives in
:mod:`wssync.bridge`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import ssl
import threading
import time
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple, Union

from .app import App
from .bridge import HttpBridge
from .config import Config
from .edge.forwarded import trusted_peers
from .edge.preamble import ProxyPreamble
from .errors import ServingWhileImported, WssyncError
from .http.connection import HttpConnection
from .http.writer import error_response
from .io.lanes import OwnThreads, ThreadPool
from .io.listener import Listener, TransportFactory, UnixSocketFile, create_listening_socket
from .io.reactor import BoundedHandoff, Reactor
from .io.registry import ProtocolRegistry
from .io.tls import TlsSettings
from .io.transport import BaseProtocol, Transport, WriteLimits
from .io.watchdog import ReactorWatchdog
from .scale.broker import Broker, broker_from_url, decode_record, encode_record, new_origin
from .scale.relay import WorkerLink
from .scale.supervisor import REPORT_INTERVAL, AcceptBalance, Supervisor, worker_count
from .websocket.connection import WebSocketConnection
from .websocket.frames import encode_frame, message_frame_parts
from .websocket.handle import WebSocket
from .websocket.upgrade import websocket_upgrade

log = logging.getLogger("wssync.server")

WSGI_THREADS = 8  # workers for a mounted WSGI application in reactor mode
# The fix the reactor watchdog suggests for a handler that blocks the reactor.
_UNBLOCK = ("In reactor mode handlers must not block: serve with worker threads (--threads N, "
            "Server(threads=N)) or make a WebSocket handler blocking-style "
            "(@app.websocket(path, blocking=True)).")
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_serving_refused: Optional[str] = None  # why serving is refused right now (see below)


@contextlib.contextmanager
def refuse_to_serve(module: str) -> Iterator[None]:
    """While importing ``module`` for the command line, starting a server is an error.

    A module whose last line is ``Server(app, port=8080).serve_forever()`` would
    otherwise start its own server, with its own port and threads, while
    ``python -m wssync --app module:app --port 8081`` waits for the import.
    """
    global _serving_refused
    _serving_refused = module
    try:
        yield
    finally:
        _serving_refused = None


def _check_serving_allowed() -> None:
    if _serving_refused is not None:
        raise ServingWhileImported(
            f"module {_serving_refused!r} starts a server while being imported; --app needs "
            f"a module that only defines the app: put the Server(...) call under "
            f"'if __name__ == \"__main__\":'")


def _default_logging() -> None:
    """Log like the command line when the application configured no logging."""
    package = logging.getLogger("wssync")
    if logging.getLogger().handlers or package.handlers:
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    package.addHandler(handler)
    if package.level == logging.NOTSET:
        package.setLevel(logging.INFO)


class Server:
    """Serves ``app`` over HTTP/1.1 and WebSocket on one port.

    ``threads=0`` runs handlers on the reactor thread (they must not block);
    ``threads=N`` runs them on N worker threads.  With ``ssl_context`` (see
    :func:`wssync.io.tls.server_context`) the port speaks HTTPS and WSS.  With
    ``uds`` it listens on that Unix domain socket (file mode ``uds_mode``)
    instead of ``host`` and ``port``.  ``workers=N`` (0: one per CPU) serves
    from N forked processes sharing the port (:meth:`serve_forever` only);
    ``broker`` (a ``redis://`` URL) shares broadcasts with other servers.
    Settings (limits, timeouts, proxies) are keyword arguments; see
    :class:`~wssync.config.Config`.
    """

    def __init__(self, app: App, host: str = "0.0.0.0", port: int = 80, threads: int = 0,
                 ssl_context: Optional[ssl.SSLContext] = None, uds: Optional[str] = None,
                 uds_mode: int = 0o660, broker: Union[str, Broker, None] = None,
                 workers: int = 1, **settings: Any) -> None:
        if threads < 0:
            raise ValueError("threads must be 0 (reactor mode) or more")
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ValueError(f"port must be a number from 0 to 65535, not {port!r}")
        if isinstance(uds_mode, bool) or not isinstance(uds_mode, int) \
                or not 0 <= uds_mode <= 0o777:
            raise ValueError(f"uds_mode must be a file mode from 0 to 0o777, not {uds_mode!r}")
        self.app = app
        self.host = host
        self.port = port
        self.threads = threads
        if isinstance(workers, bool) or not isinstance(workers, int):
            raise ValueError(f"workers must be a number, not {workers!r}")
        self.workers = worker_count(workers)
        self.config = Config(**settings)
        trusted_peers(self.config.forwarded_allow_ips)  # a ValueError names a bad entry now
        if self.config.proxy_protocol and ssl_context is not None:
            raise ValueError("proxy_protocol with TLS at wssync is not supported: terminate "
                             "TLS at the proxy, or let the proxy pass TLS through without a "
                             "PROXY header")
        # Which protocol object a connection gets: HTTP/1.1 (registered when
        # serving starts), behind a PROXY header reader if the proxy sends one.
        self.protocols = ProtocolRegistry()
        if self.config.proxy_protocol:
            proxy_timeout = self.config.proxy_protocol_timeout
            self.protocols.add_preamble(lambda inner: ProxyPreamble(inner, proxy_timeout))
        self.ssl_context = ssl_context
        self.uds = uds
        self.uds_mode = uds_mode
        self.broker: Optional[Broker] = broker_from_url(broker) if isinstance(broker, str) \
            else broker
        self._origin = b""  # set per serving process (see serve_forever)
        self._bus: Optional[Broker] = None  # where broadcasts are published, if anywhere
        self._link: Optional[WorkerLink] = None  # to the supervisor, in a worker
        self._link_sock: Optional[socket.socket] = None
        self._worker_index: Optional[int] = None
        self._balance: Optional[AcceptBalance] = None  # among workers sharing the socket
        self._watchdog: Optional[ReactorWatchdog] = None  # reactor mode: names blocking code
        self._stop_signals: Tuple[int, ...] = (signal.SIGINT, signal.SIGTERM)
        app.server = self
        self._sock: Optional[socket.socket] = None
        self._socket_file: Optional[UnixSocketFile] = None
        self._reactor: Optional[Reactor] = None
        self._handoff: Optional[BoundedHandoff] = None
        self._listener: Optional[Listener] = None
        self._pool: Optional[ThreadPool] = None
        self._blocking_pool: Optional[ThreadPool] = None
        self._own_threads: Optional[OwnThreads] = None
        self._transports: Dict[int, Transport] = {}
        self._websockets: Dict[WebSocketConnection, WebSocket] = {}
        self._thread: Optional[threading.Thread] = None
        self._running = threading.Event()
        self._stopped = threading.Event()
        self._stopping = False
        self._signalled = False  # a stop signal arrived (set before the reactor sees it)
        self._refused_logged = 0.0
        self._saturated_logged = 0.0

    # -- life cycle -----------------------------------------------------------------

    def bind(self) -> None:
        """Open the listening socket now (errors such as ``PermissionError`` raise here)."""
        if self._sock is None:
            if self.uds is not None:
                self._socket_file = UnixSocketFile(self.uds, self.uds_mode)
                self._sock = self._socket_file.listen(self.config.backlog)
                return
            self._sock = create_listening_socket(self.host, self.port, self.config.backlog)
            self.port = self._sock.getsockname()[1]

    @property
    def address(self) -> Any:
        """The bound ``(host, port, ...)``; the port is real even after ``port=0``.
        With ``uds``, the socket's path."""
        self.bind()
        assert self._sock is not None
        return self._sock.getsockname()

    def serve_forever(self) -> None:
        """Serve on the calling thread until :meth:`stop`.

        On the main thread, SIGINT (Ctrl-C) and SIGTERM stop gracefully, as
        :meth:`stop` does, unless the application installed its own handlers
        (a backgrounded job's ignored SIGINT is taken over too); a second
        signal stops at once.  Without any logging configured, the
        server logs to stderr as the command line does.
        """
        if self.workers > 1:
            if self.supervise() != 0:
                raise WssyncError("the workers could not start (see the log)")
            return
        _check_serving_allowed()
        _default_logging()
        self.bind()
        assert self._sock is not None
        config = self.config
        reactor = self._reactor = Reactor()
        handoff = self._handoff = BoundedHandoff(reactor, config.max_send_queue)
        if self.threads:
            self._pool = ThreadPool(self.threads)
        elif self.app.wsgi is not None:
            # WSGI applications block: even in reactor mode they get workers.
            self._blocking_pool = ThreadPool(WSGI_THREADS, name="wssync-wsgi")
        own_threads = self._own_threads = OwnThreads(config.max_blocking_websockets)
        bridge = HttpBridge(self.app, config, handoff, self._pool, self._websockets,
                            self._blocking_pool, own_threads)
        transport_factory: TransportFactory = Transport
        if self.ssl_context is not None:
            transport_factory = TlsSettings(
                self.ssl_context, config.tls_handshake_timeout,
                error_response(400, "this port speaks TLS: use https:// or wss://"),
            ).transport

        protocols = self.protocols
        upgrades = protocols.upgrades

        def http() -> BaseProtocol:
            return HttpConnection(config, bridge, upgrades)

        protocols.set_first(http)
        protocols.add_upgrade("websocket", websocket_upgrade(config, bridge))
        self._listener = Listener(
            reactor, self._sock, protocols.first, self._transports,
            WriteLimits(config.write_high_water, config.max_write_buffer, config.send_timeout,
                        config.max_write_buffer_hard, config.slow_peer_timeout),
            config.max_connections, self._refuse, self._accepting, transport_factory,
        )
        self._stopped.clear()
        self._origin = new_origin()  # after any fork: each serving process is its own
        if self._link_sock is not None:
            self._link = WorkerLink(reactor, self._link_sock, config.max_message_size,
                                    self._supervisor_lost)
            reactor.call_soon(self._link.ready, {"pid": os.getpid()})
            reactor.call_soon(self._report)
        self._bus = self.broker if self.broker is not None else self._link
        if self._bus is not None:
            self._bus.start(self._deliver)
        reactor.call_soon(self._running.set)
        log.info("%sserving on %s (%s, %s)",
                 "" if self._worker_index is None else
                 f"worker {self._worker_index} (pid {os.getpid()}) ",
                 self._display_address(),
                 "HTTPS and WSS" if self.ssl_context else "HTTP and WebSocket",
                 self._mode_line())
        if not self.threads and config.slow_callback_warning:
            self._watchdog = ReactorWatchdog(reactor, config.slow_callback_warning, _UNBLOCK)
            self._watchdog.start()
        restore = self._handle_signals()
        try:
            reactor.run()
        finally:
            restore()
            self._cleanup()

    def supervise(self, prepare: Optional[Callable[[Server], None]] = None) -> int:
        """Serve from ``workers`` forked processes until SIGTERM or SIGINT; returns
        the exit status (0, or 2 when the workers could not start).

        The port is bound here, once; every worker inherits it.  ``prepare``
        runs in each new worker before it serves (the command line loads the
        application there, so SIGHUP's rolling restart picks up new code); it
        may ``raise SystemExit(supervisor.BOOT_FAILED)``.
        """
        _check_serving_allowed()
        _default_logging()
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError("workers need serve_forever() on the main thread")
        if threading.active_count() > 1:
            log.warning("%d threads run in the supervisor: a forked worker has only a copy "
                        "of this one; start threads in handlers or after serving begins",
                        threading.active_count())
        self.bind()
        log.info("listening on %s with %d workers (%s)", self._display_address(), self.workers,
                 f"thread-pool, {self.threads} threads each" if self.threads else "reactor")

        def run_worker(index: int, link: socket.socket, balance: AcceptBalance) -> int:
            return self._serve_worker(index, link, balance, prepare)

        try:
            return Supervisor(self.workers, run_worker, self.config.shutdown_grace,
                              self.config.max_message_size).run()
        finally:
            self._cleanup()

    def _serve_worker(self, index: int, link: socket.socket, balance: AcceptBalance,
                      prepare: Optional[Callable[[Server], None]]) -> int:
        """A forked worker's life: serve the inherited socket until told to stop."""
        # Ctrl-C reaches every process of the terminal's group: the supervisor
        # decides, and forwards SIGTERM.  SIGHUP is the supervisor's too.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        # SIGTERM drains; SIGQUIT (the supervisor's second stop signal) stops now.
        self._stop_signals = (signal.SIGTERM, signal.SIGQUIT)
        self.workers = 1
        self._worker_index = index
        self._link_sock = link
        self._balance = balance
        self._socket_file = None  # the supervisor removes it, once all are gone
        if prepare is not None:
            prepare(self)
        self.serve_forever()
        return 0

    def _use_app(self, app: App) -> None:
        """Serve ``app`` (the command line's workers load it after the fork)."""
        self.app = app
        app.server = self

    def _report(self) -> None:
        """A worker's counts to the supervisor, every REPORT_INTERVAL seconds."""
        link, reactor = self._link, self._reactor
        if link is None or reactor is None or self._stopping:
            return
        link.report(self._counts(self._bus.stats() if self._bus is not None else None))
        reactor.call_later(REPORT_INTERVAL, self._report)

    def _supervisor_lost(self) -> None:
        if not self._stopping:
            log.warning("the supervisor is gone; stopping")
            self._begin_shutdown()

    def start(self) -> Server:
        """Serve on a background thread; returns once the port is listening."""
        if self._thread is not None:
            raise RuntimeError("server already started")
        if self.workers > 1:
            raise RuntimeError("workers need serve_forever() on the main thread; start() "
                               "serves from this process")
        _check_serving_allowed()
        self.bind()
        self._thread = threading.Thread(target=self.serve_forever, name="wssync-reactor",
                                        daemon=True)
        self._thread.start()
        self._running.wait()
        return self

    def stop(self, timeout: Optional[float] = None) -> None:
        """Stop gracefully; safe from any thread and from a signal handler.

        Stops accepting, closes WebSockets with 1001, lets in-flight HTTP
        responses finish within ``shutdown_grace`` seconds, then closes
        everything.  Waits for that unless called on the reactor thread.
        """
        reactor = self._reactor
        if reactor is None or self._stopped.is_set():
            return
        reactor.call_soon_threadsafe(self._begin_shutdown)
        # On the reactor thread (a handler, or a signal handler interrupting
        # serve_forever) waiting would deadlock: the loop finishes the stop.
        if reactor.in_reactor_thread():
            return
        self._stopped.wait(timeout if timeout is not None else self.config.shutdown_grace + 5)
        if self._thread is not None:
            self._thread.join(1.0)

    def reload_certificates(self, certfile: str, keyfile: Optional[str] = None,
                            password: Union[str, Callable[[], str], None] = None) -> None:
        """Use a renewed certificate for new TLS connections; open ones keep theirs.

        The files are checked here first (a bad file raises ``ssl.SSLError``
        or ``OSError`` and the current certificate stays); the server's
        context takes them on the reactor thread.  Safe from any thread and
        from a signal handler.
        """
        context = self.ssl_context
        if context is None:
            raise RuntimeError("this server does not use TLS")
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(certfile, keyfile, password)
        reactor = self._reactor
        if reactor is None or self._stopped.is_set():
            context.load_cert_chain(certfile, keyfile, password)
        else:
            reactor.call_soon_threadsafe(self._load_certificates, certfile, keyfile, password)

    def _load_certificates(self, certfile: str, keyfile: Optional[str],
                           password: Union[str, Callable[[], str], None]) -> None:
        assert self.ssl_context is not None
        try:
            self.ssl_context.load_cert_chain(certfile, keyfile, password)
        except (OSError, ssl.SSLError) as exc:
            log.error("certificate not reloaded: %s", exc)
            return
        log.info("certificate reloaded from %s; new connections use it", certfile)

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    def _handle_signals(self) -> Callable[[], None]:
        """Install graceful-stop handlers for SIGINT and SIGTERM; returns their undo."""
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        installed: Dict[int, Any] = {}
        for signum in self._stop_signals:
            previous = signal.getsignal(signum)
            # The application's own handler stays; defaults, and the SIG_IGN a
            # shell gives background jobs, are ours to replace.
            if previous in (signal.SIG_DFL, signal.SIG_IGN, signal.default_int_handler, None):
                installed[signum] = signal.SIG_DFL if previous is None else previous
                signal.signal(signum, self._on_signal)

        def restore() -> None:
            for signum, previous in installed.items():
                signal.signal(signum, previous)

        return restore

    def _on_signal(self, signum: int, _frame: Any) -> None:
        reactor = self._reactor
        if reactor is None:
            return
        name = signal.Signals(signum).name
        worker = self._worker_index is not None
        if self._signalled or (worker and signum == signal.SIGQUIT):
            if worker and signum != signal.SIGQUIT:
                # The same SIGTERM again, from the supervisor and from whoever
                # signalled the whole process group (systemd does): keep draining.
                return
            log.info("%s received%s, stopping now", name, "" if worker else " again")
            self._signalled = True
            self.stop()
            reactor.call_soon_threadsafe(self._wait_for_connections, 0.0)
            return
        self._signalled = True
        log.info("%s received, stopping", name)
        self.stop()

    def _begin_shutdown(self) -> None:
        if self._stopping:
            return
        self._stopping = True
        reactor = self._reactor
        assert reactor is not None
        if self._listener is not None:
            self._listener.close()
            self._listener = None
            self._sock = None
        if self._balance is not None:
            self._balance.withdraw()
        if self._socket_file is not None:
            self._socket_file.remove()  # nothing listens there any more
            self._socket_file = None
        for transport in list(self._transports.values()):
            try:
                transport.protocol.shutdown()
            except Exception:
                log.exception("error shutting down a connection")
        deadline = time.monotonic() + self.config.shutdown_grace
        self._wait_for_connections(deadline)

    def _wait_for_connections(self, deadline: float) -> None:
        reactor = self._reactor
        assert reactor is not None
        # Blocking handlers are waited for too: their last sends and closes
        # still go through this reactor.
        handlers = self._own_threads.count if self._own_threads is not None else 0
        if (not self._transports and not handlers) or time.monotonic() >= deadline:
            if handlers:
                log.warning("%d blocking WebSocket handler(s) still running after "
                            "shutdown_grace; leaving them", handlers)
            for transport in list(self._transports.values()):
                transport.abort()
            reactor.stop()
            return
        reactor.call_later(0.02, self._wait_for_connections, deadline)

    def _mode_line(self) -> str:
        """How handlers run, for the start-up line."""
        if self.threads:
            return f"thread-pool mode: handlers run on {self.threads} worker threads"
        line = "reactor mode: handlers run on the reactor thread and must not block"
        if self._blocking_pool is not None:
            line += f"; the WSGI app runs on {self._blocking_pool.size} threads"
        return line

    def _cleanup(self) -> None:
        if self._watchdog is not None:
            self._watchdog.stop()
            self._watchdog = None
        for transport in list(self._transports.values()):
            transport.abort()
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        elif self._sock is not None:
            self._sock.close()
        self._sock = None
        if self._socket_file is not None:
            self._socket_file.remove()
            self._socket_file = None
        for pool in (self._pool, self._blocking_pool):
            if pool is not None:
                pool.shutdown(timeout=2.0)
        self._pool = self._blocking_pool = None
        if self._handoff is not None:
            # First: a broker thread waiting to hand over a broadcast gives up,
            # so closing the broker below does not wait for it.
            self._handoff.close()  # threads waiting to send give up
        if self._bus is not None:
            try:
                self._bus.close()
            except Exception:
                log.exception("error closing the broker")
        if self._link is not None and self._link is not self._bus:
            self._link.close()
        self._bus = self._link = None
        if self._reactor is not None:
            self._reactor.close()
        self._running.clear()
        self._stopped.set()
        if self.workers == 1:  # (a supervisor logs its own end)
            log.info("server stopped")

    def _accepting(self) -> float:
        """Seconds to leave new connections in the backlog: while handler threads
        are far behind, or (a worker) while another worker serves fewer."""
        for pool in (self._pool, self._blocking_pool):
            if pool is not None and pool.queued >= self.config.max_queued_tasks:
                now = time.monotonic()
                if now - self._saturated_logged > 10:
                    self._saturated_logged = now
                    log.warning("%d handler calls wait for a worker (max_queued_tasks); "
                                "new connections wait", pool.queued)
                return 0.05
        if self._balance is not None:
            return self._balance.wait(len(self._transports))
        return 0.0

    def _refuse(self, sock: socket.socket) -> None:
        """Over ``max_connections``: a best-effort 503, then close."""
        now = time.monotonic()
        if now - self._refused_logged > 10:
            self._refused_logged = now
            log.warning("max_connections (%d) reached; refusing new connections",
                        self.config.max_connections)
        try:
            sock.send(error_response(503, "too many connections", [("Retry-After", "1")]))
        except OSError:
            pass
        sock.close()

    def _display_address(self) -> str:
        if self.uds is not None:
            return f"unix:{self.uds}"
        host, port = self.address[:2]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    # -- application services ---------------------------------------------------------

    def broadcast(self, message: Union[str, bytes], path: Optional[str] = None,
                  wait: bool = False, timeout: Optional[float] = None) -> None:
        """Send ``message`` to every open WebSocket (on ``path`` only, if given).

        Encoded once: every receiver's output buffer refers to the same frame,
        so a broadcast costs its size once, however many receive it.  With a
        broker (or several workers) it is also published once to the other
        servers, which send it to their matching WebSockets.  Safe from
        any thread; a thread waits while more than ``max_send_queue`` bytes it
        and others handed over are not yet fanned out.

        A receiver that reads slower than broadcasts come falls behind; it is
        dropped only when its backlog is above ``max_write_buffer`` and has not
        shrunk for ``slow_peer_timeout``, or passes ``max_write_buffer_hard``
        (see README, "Slow peers").  With ``wait=True`` a thread other than the
        reactor's first waits until every matching receiver's unsent output is
        below ``write_high_water`` (as a loop of blocking sends would), so the
        slowest live receiver paces the producer; ``timeout`` bounds that wait,
        after which the message goes out all the same.
        """
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
        frame = encode_frame(*message_frame_parts(message))
        if not wait or on_reactor:
            handoff.call(len(frame), self._broadcast, message, frame, path)
            return
        # Paced: return once the frame is in every receiver's output, so the
        # next broadcast's wait sees what this one left unsent.
        fanned_out = threading.Event()
        handoff.call(len(frame), self._broadcast, message, frame, path, fanned_out)
        while not fanned_out.wait(0.25) and self._running.is_set():
            pass

    def _broadcast(self, message: Union[str, bytes], frame: bytes, path: Optional[str],
                   fanned_out: Optional[threading.Event] = None) -> None:
        self._fan_out(message, frame, path)
        if fanned_out is not None:
            fanned_out.set()
        broker = self._bus
        if broker is not None:
            # Published from the reactor thread, so records leave in the order
            # the broadcasts were made.
            broker.publish(encode_record(self._origin, path, message))

    def _fan_out(self, message: Union[str, bytes], frame: bytes, path: Optional[str]) -> None:
        for ws_conn, handle in list(self._websockets.items()):
            if path is None or handle.path == path:
                ws_conn.broadcast(message, frame)

    def _deliver(self, record: bytes) -> None:
        """A broadcast another server published (any thread): fan it out here."""
        try:
            origin, path, message = decode_record(record)
        except ValueError as exc:
            log.warning("ignoring a malformed broadcast record: %s", exc)
            return
        handoff = self._handoff
        if origin == self._origin or handoff is None:
            return  # our own, back from a broker that delivers to every subscriber
        frame = encode_frame(*message_frame_parts(message))
        handoff.call(len(frame), self._fan_out, message, frame, path)

    def stats(self) -> Dict[str, Any]:
        """This process's counts: ``pid``, ``worker`` (its index under a
        supervisor, else None), ``connections``, ``http``, ``websocket``,
        ``broker`` (its counters: ``published``, ``received``, ``dropped``; None
        without one) and ``cluster``: with workers, the supervisor's table of
        every worker's counts (at most a second old), else None."""
        broker = self._bus.stats() if self._bus is not None else None
        counts = self._counts(broker)
        counts["broker"] = broker
        counts["cluster"] = (self._link.view or None) if self._link is not None else None
        return counts

    def _counts(self, broker: Optional[Dict[str, Any]]) -> Dict[str, Any]:
        """This process's counts; ``broker`` is its broker's ``stats()``, if any."""
        websockets = len(self._websockets)
        return {"pid": os.getpid(), "worker": self._worker_index,
                "connections": len(self._transports), "http": len(self._transports) - websockets,
                "websocket": websockets,
                "dropped": broker.get("dropped", 0) if broker is not None else 0}

    @property
    def websockets(self) -> List[WebSocket]:
        """The open WebSocket connections (a snapshot)."""
        return list(self._websockets.values())

    def connections(self) -> List[Dict[str, Any]]:
        """Every open connection: its client, the socket's two ends, current protocol,
        the bytes read from and sent to the peer so far, and its age in seconds (a
        snapshot).

        ``peer_addr``/``peer_port`` and ``server_addr``/``server_port`` are the
        socket's ends (with ``transport``, the 5-tuple); ``client_addr``/``client_port``
        are who the client is as far as the server knows: the source a PROXY header
        named, or what a trusted proxy's headers said in the last request or the
        WebSocket handshake (port 0 if they gave none), else the peer itself.  A Unix
        socket's peer has no address (None).
        """
        out = []
        now = time.monotonic()
        for transport in list(self._transports.values()):
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
