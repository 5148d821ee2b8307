"""``Server``: binds the port and serves an ``App`` until stopped.

Owns the life cycle (bind, serve here or on a thread, supervise workers, stop)
and the stop signals.  One run's wiring and draining is :mod:`wssync._serving`'s,
the open WebSockets, broadcast and counts are the hub's (:mod:`wssync.hub`), a
worker's part is :mod:`wssync.scale.worker`'s; the methods about them hand over.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import ssl
import tempfile
import threading
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Tuple, Union

from . import _startup
from ._boot import BootReport, report_boot_failure
from ._serving import Serving
from .app import App
from .config import Config
from .edge.preamble import ProxyPreamble
from .errors import WssyncError
from .http.metrics_endpoint import MetricsEndpoint
from .http.metrics_endpoint import listen as listen_for_metrics
from .hub import Hub
from .io.listener import UnixSocketFile, create_listening_socket
from .io.reactor import Reactor
from .io.registry import ProtocolRegistry
from .scale.broker import Broker
from .scale.supervisor import BOOT_FAILED, AcceptBalance, Supervisor
from .scale.worker import WORKER_STOP_SIGNALS, Worker
from .websocket.handle import WebSocket

if TYPE_CHECKING:
    from .io.transport import Transport

log = logging.getLogger("wssync.server")


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

    def __init__(self, app: App, host: str = "127.0.0.1", port: int = 80, threads: int = 0,
                 ssl_context: Optional[ssl.SSLContext] = None, uds: Optional[str] = None,
                 uds_mode: int = 0o660, broker: Union[str, Broker, None] = None,
                 workers: int = 1, **settings: Any) -> None:
        self.workers = _startup.check_arguments(port, threads, uds_mode, workers)
        self.host = host
        self.port = port
        self.threads = threads
        self.config = Config(**settings)
        _startup.check_settings(self.config, ssl_context)
        if self.config.max_requests and self.workers < 2:
            raise ValueError("max_requests replaces worker processes: it needs workers=2 or "
                             "more (a single process has no supervisor to start its successor)")
        # Which protocol object a connection gets: HTTP/1.1 (registered when
        # serving starts), behind a PROXY header reader if the proxy sends one.
        self.protocols = ProtocolRegistry()
        if self.config.proxy_protocol:
            proxy_timeout = self.config.proxy_protocol_timeout
            self.protocols.add_preamble(lambda inner: ProxyPreamble(inner, proxy_timeout))
        self.ssl_context = ssl_context
        self.uds = uds
        self.uds_mode = uds_mode
        self.broker: Optional[Broker] = _startup.broker_from(broker)
        self.app = app
        self._hub = Hub()  # open WebSockets, broadcast, counts
        self._worker: Optional[Worker] = None  # this process's part under a supervisor
        self._stop_signals: Tuple[int, ...] = (signal.SIGINT, signal.SIGTERM)
        self._sock: Optional[socket.socket] = None
        self._socket_file: Optional[UnixSocketFile] = None
        self._serving: Optional[Serving] = None  # the current (or last) run
        self._thread: Optional[threading.Thread] = None
        self._running = threading.Event()
        self._stopped = threading.Event()
        self._reloads = _startup.CertificateReloads()
        self._signalled = False  # a stop signal arrived (set before the reactor sees it)
        self._metrics_sock: Optional[socket.socket] = None  # with ``metrics``, while serving
        self._flags = False  # messages name the command line's flags, not arguments

    @property
    def app(self) -> App:
        """The application served.  Set it before serving starts (a supervised
        worker's ``prepare`` may, see :meth:`supervise`); it then knows its server."""
        return self._app

    @app.setter
    def app(self, app: App) -> None:
        self._app = app
        app.server = self

    # -- life cycle -----------------------------------------------------------------

    def bind(self) -> None:
        """Open the listening socket now.  A failure raises here, as a
        :class:`~wssync.errors.BindError` naming the address and what to do (also
        the ``OSError`` it was: ``PermissionError``, ``FileExistsError`` ...)."""
        if self._sock is None:
            try:
                if self.uds is not None:
                    self._socket_file = UnixSocketFile(self.uds, self.uds_mode)
                    self._sock = self._socket_file.listen(self.config.backlog)
                else:
                    self._sock = create_listening_socket(self.host, self.port,
                                                         self.config.backlog)
                    self.port = self._sock.getsockname()[1]
            except OSError as exc:  # a BindError: the address, and what to do
                raise _startup.bind_error(exc, self.host, self.port, self.uds,
                                          self._flags) from exc
        self._bind_metrics()  # (a BindError too)

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
        _startup.check_serving_allowed()
        _startup.default_logging()
        self.bind()
        assert self._sock is not None
        serving = self._serving = Serving(
            self.app, self.config, self.threads, self._sock, self.ssl_context, self.protocols,
            self._hub, self.broker, self._worker, self._begin_shutdown, self._metrics_sock)
        self._stopped.clear()
        self._reloads.serving(serving.reactor)
        serving.reactor.call_soon(self._running.set)
        restore = _startup.take_over_signals(self._stop_signals, self._on_signal)
        log.info("%s", self._start_up_line(
            "serving on", signal.getsignal(signal.SIGINT) == self._on_signal,
            ("" if self._worker is None else f"pid {os.getpid()}, ")
            + ("HTTPS and WSS" if self.ssl_context else "HTTP and WebSocket")
            + f", {serving.mode_line()}"))
        try:
            serving.reactor.run()
        finally:
            restore()
            self._cleanup()
            self._drop_metrics_socket()

    def supervise(self, prepare: Optional[Callable[[Server], None]] = None) -> int:
        """Serve from ``workers`` forked processes until SIGTERM or SIGINT; returns
        the exit status (0, or 3, ``BOOT_FAILED``, when the workers could not start).

        The port is bound here, once; every worker inherits it.  ``prepare(server)``
        runs in each new worker before it serves and may set its :attr:`app` and
        ``ssl_context`` (the command line loads the application there, so SIGHUP's
        rolling restart picks up new code); it may ``raise SystemExit(BOOT_FAILED)``.
        """
        _startup.check_serving_allowed()
        _startup.default_logging()
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError("workers need serve_forever() on the main thread")
        if threading.active_count() > 1:
            log.warning("%d threads run in the supervisor: a forked worker has only a copy "
                        "of this one; start threads in handlers or after serving begins",
                        threading.active_count())
        self.bind()
        log.info("%s", self._start_up_line("listening on", True, f"{self.workers} workers, " + (
            f"thread-pool, {self.threads} threads each" if self.threads else "reactor")))

        report = BootReport()
        # Where workers pass each other connections of the sessions they own.
        handover_dir = tempfile.mkdtemp(prefix="wssync-")  # (mode 0700)
        supervisor_pid = os.getpid()
        reactor = Reactor()
        endpoint: Optional[MetricsEndpoint] = None  # the supervisor's /metrics

        def run_worker(index: int, link: socket.socket, balance: AcceptBalance) -> int:
            if endpoint is not None:
                endpoint.forget_in_child()  # a worker serves no /metrics of its own
            self._metrics_sock = None
            Worker.leave_signals_to_supervisor()
            _startup.tag_worker_logs(index)
            self._stop_signals = WORKER_STOP_SIGNALS
            self.workers = 1
            self._worker = Worker(index, link, balance)
            self._worker.handover_dir = handover_dir
            self._hub.worker = index
            self._socket_file = None  # the supervisor removes it, once all are gone
            try:  # anything raised before serving begins is a boot failure
                if prepare is not None:
                    prepare(self)
                report.booted()
                self.serve_forever()
            except (Exception, SystemExit) as exc:  # (an app's sys.exit() at import too)
                if self._serving is not None or (isinstance(exc, SystemExit)
                                                 and exc.code == BOOT_FAILED):
                    raise  # it served (a crash, restarted with back-off), or told already
                report_boot_failure(exc, f"worker {index}", report)
                raise SystemExit(BOOT_FAILED) from None
            return 0

        try:
            supervisor = Supervisor(self.workers, run_worker, self.config.shutdown_grace,
                                    self.config.max_message_size,
                                    max_requests=self.config.max_requests,
                                    max_requests_jitter=self.config.max_requests_jitter,
                                    reactor=reactor)
            if self._metrics_sock is not None:
                endpoint = MetricsEndpoint(reactor, self._metrics_sock, supervisor.metrics)
            return supervisor.run()
        finally:
            if endpoint is not None:
                endpoint.close()
            self._drop_metrics_socket()
            report.close()
            self._cleanup()
            if os.getpid() == supervisor_pid:  # (a worker that returns here keeps it)
                shutil.rmtree(handover_dir, ignore_errors=True)

    def start(self) -> Server:
        """Serve on a background thread; returns once the port is listening."""
        if self._thread is not None:
            raise RuntimeError("server already started")
        if self.workers > 1:
            raise RuntimeError("workers need serve_forever() on the main thread; start() "
                               "serves from this process")
        _startup.check_serving_allowed()
        self.bind()  # (its errors, the metrics socket's too, raise here, not on the thread)
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
        serving = self._serving
        if serving is None or self._stopped.is_set():
            return
        reactor = serving.reactor
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
        context takes the very bytes checked, on the reactor thread, so files
        replaced meanwhile change nothing.  Safe from any thread and from a
        signal handler.
        """
        context = self.ssl_context
        if context is None:
            raise RuntimeError("this server does not use TLS")
        self._reloads.load(context, _startup.stage_certificates(certfile, keyfile, password))

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    def _on_signal(self, signum: int, _frame: Any) -> None:
        serving = self._serving
        if serving is None:
            return
        name = signal.Signals(signum).name
        worker = self._worker is not None
        again = self._signalled or (worker and signum == signal.SIGQUIT)
        if again and worker and signum != signal.SIGQUIT:
            # The same SIGTERM again, from the supervisor and from whoever
            # signalled the whole process group (systemd does): keep draining.
            return
        self._signalled = True
        # A worker's signals come from the supervisor, whatever the user did:
        # it says what it does, not which signal it got.
        said = "" if worker else f"{name} received{' again' if again else ''}, "
        if again:
            log.info("%sstopping now", said)
        else:
            open_now = serving.connection_count()
            waits = (f"waiting up to {self.config.shutdown_grace:g} s for {open_now} open "
                     f"connection{'' if open_now == 1 else 's'}" if open_now
                     else "no open connections to wait for")
            second = "" if worker else ("; Ctrl-C again to stop now" if signum == signal.SIGINT
                                        else f"; a second {name} stops now")
            log.info("%sstopping: %s%s", said, waits, second)
        self.stop()
        if again:  # a second signal (a worker's SIGQUIT): stop now
            serving.reactor.call_soon_threadsafe(serving.wait_for_connections, 0.0)

    def _begin_shutdown(self) -> None:
        serving = self._serving
        if serving is None or serving.stopping:
            return
        serving.begin_shutdown()  # closes the listening socket
        self._sock = None
        self._remove_socket_file()

    def _cleanup(self) -> None:
        if self._serving is not None:
            self._serving.close()
        if self._sock is not None:
            self._sock.close()  # (when serving did not get as far as listening)
        self._sock = None
        self._remove_socket_file()
        self._running.clear()
        self._stopped.set()
        self._reloads.serving(None)
        if self.workers == 1:  # (a supervisor logs its own end)
            log.info("server stopped")

    def _bind_metrics(self) -> None:
        """With ``metrics``, open its listening socket (once; a worker never does:
        its supervisor serves the sum)."""
        if self.config.metrics and self._metrics_sock is None and self._worker is None:
            self._metrics_sock = listen_for_metrics(self.config.metrics)

    def _drop_metrics_socket(self) -> None:
        if self._metrics_sock is not None:
            self._metrics_sock.close()  # (closed already if the run's endpoint got to it)
            self._metrics_sock = None

    def _remove_socket_file(self) -> None:
        if self._socket_file is not None:
            self._socket_file.remove()  # nothing listens there any more
            self._socket_file = None

    def _start_up_line(self, start: str, interrupt: bool, how: str) -> str:
        host, port = (None, 0) if self.uds is not None else self.address[:2]
        return _startup.serving_line(start, host or "", port, self.uds,
                                     self.ssl_context is not None, self._flags, interrupt, how,
                                     reach=self._worker is None)  # (the supervisor says it)

    def _open_transports(self) -> List[Transport]:  # (of the current run)
        return list(self._serving.transports) if self._serving else []

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
        self._hub.broadcast(message, path, wait, timeout)

    def _call_later(self, delay: float, fn: Callable[..., None], *args: Any) -> None:
        """Run ``fn(*args)`` on the reactor ``delay`` seconds from now (from any
        thread; dropped once serving ends).  ``fn`` must not block."""
        serving = self._serving
        if serving is not None:
            serving.handoff.call(0, serving.reactor.call_later, delay, fn, *args)

    def stats(self) -> Dict[str, Any]:
        """This process's counts: ``pid``, ``worker`` (its index under a
        supervisor, else None), ``connections``, ``http``, ``websocket``,
        ``broker`` (its counters: ``published``, ``received``, ``dropped``; None
        without one) and ``cluster``: with workers, the supervisor's table of
        every worker's counts (at most a second old), else None."""
        return self._hub.stats(self._serving.connection_count() if self._serving else 0)

    @property
    def websockets(self) -> List[WebSocket]:
        """The open WebSocket connections (a snapshot)."""
        return self._hub.websockets

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
        return self._hub.connections(self._open_transports())
