"""A server's part as one worker of a supervisor, and when to take new connections.

:class:`Worker` is what a forked worker adds to a plain server: its signals
(the supervisor decides about Ctrl-C and SIGHUP), its relay link to the
supervisor (ready once serving, its counts every second, the end of serving
when the supervisor is gone) and its share of new connections.
:class:`Admission` answers the listener's two questions: how long to leave new
connections in the backlog (handler threads far behind, or another worker
serving fewer), and what a connection over ``max_connections`` is told.

This module knows nothing of HTTP, WebSockets or the application: the server
hands it callables (its counts, how to stop) and the bytes of its refusal.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import time
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, Optional, Tuple

from ..io.ratelog import RateLimitedLog
from ..io.reactor import Reactor
from .balance import AcceptBalance
from .relay import WorkerLink
from .supervisor import REPORT_INTERVAL

if TYPE_CHECKING:
    from ..io.lanes import ThreadPool

log = logging.getLogger("wssync.server")

Counts = Callable[[], Dict[str, Any]]

# A flood of connections over max_connections is logged a few times, then
# counted (a line per interval says how many, and from where).
_REFUSED = RateLimitedLog(log, logging.WARNING, "connections refused at max_connections")

# SIGTERM drains; SIGQUIT (the supervisor's second stop signal) stops now.
WORKER_STOP_SIGNALS: Tuple[int, ...] = (signal.SIGTERM, signal.SIGQUIT)


class Worker:
    """One worker process of a supervised server: ``index`` among the workers,
    ``link`` its socket to the supervisor, ``balance`` its share of connections."""

    def __init__(self, index: int, link: socket.socket, balance: AcceptBalance) -> None:
        self.index = index
        self.balance = balance
        # The supervisor's private directory where workers pass connections
        # to one another (wssync.scale.handover); None: no such passing.
        self.handover_dir: Optional[str] = None
        self._sock = link
        self._link: Optional[WorkerLink] = None
        self._reactor: Optional[Reactor] = None
        self._counts: Counts = dict
        self._on_lost: Callable[[], None] = lambda: None
        self._stopping = False

    @staticmethod
    def leave_signals_to_supervisor() -> None:
        """Ctrl-C reaches every process of the terminal's group: the supervisor
        decides, and forwards SIGTERM.  SIGHUP is the supervisor's too."""
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)

    def serve(self, reactor: Reactor, max_record: int, counts: Counts,
              on_lost: Callable[[], None]) -> WorkerLink:
        """Serving begins on ``reactor``: open the link, say ready, report
        ``counts()`` every REPORT_INTERVAL; ``on_lost()`` when the supervisor is gone."""
        self._reactor = reactor
        self._counts = counts
        self._on_lost = on_lost
        self._stopping = False
        link = self._link = WorkerLink(reactor, self._sock, max_record, self._lost)
        reactor.call_soon(link.ready, {"pid": os.getpid()})
        reactor.call_soon(self._report)
        return link

    @property
    def replaced(self) -> bool:
        """Its stop is a replacement (rolling restart, max_requests): WebSockets get 1012."""
        return self.balance.replaced()

    def withdraw(self) -> None:
        """This worker is stopping: it takes no new connections.  It goes on
        reporting while it drains: what it serves meanwhile (the last requests,
        the closes of its WebSockets) counts in the supervisor's metrics."""
        self._stopping = True
        self.balance.withdraw()

    def last_report(self) -> None:
        """Serving ends: report once more (the link sends at once if it can;
        the supervisor reads it after this process has exited)."""
        if self._link is not None:
            self._link.report(self._counts())

    def _report(self) -> None:
        link, reactor = self._link, self._reactor
        if link is None or reactor is None:
            return
        link.report(self._counts())
        reactor.call_later(REPORT_INTERVAL, self._report)

    def _lost(self) -> None:
        if not self._stopping:
            log.warning("the supervisor is gone; stopping")
            self._on_lost()


class Admission:
    """When the listener takes new connections, and how it refuses one too many.

    ``pools`` are the handler pools whose queues are watched (``max_queued``
    calls waiting is far behind); ``open_connections()`` counts this process's
    connections; ``refusal()`` makes what a connection over ``max_connections``
    is sent before it is closed (made per refusal: it carries the time).
    ``reactor`` is the listener's: it times the summaries of refusals.
    """

    def __init__(self, pools: Iterable[Optional[ThreadPool]], max_queued: int,
                 open_connections: Callable[[], int], max_connections: int,
                 refusal: Callable[[], bytes], reactor: Optional[Reactor] = None) -> None:
        self._pools = [pool for pool in pools if pool is not None]
        self._reactor = reactor
        self._open_connections = open_connections
        self._max_queued = max_queued
        self._max_connections = max_connections
        self._refusal = refusal
        self.balance: Optional[AcceptBalance] = None  # set in a worker
        self._saturated_logged = 0.0

    def wait(self) -> float:
        """Seconds to leave new connections in the backlog: while handler threads
        are far behind, or (a worker) while another worker serves fewer."""
        for pool in self._pools:
            if pool.queued >= self._max_queued:
                now = time.monotonic()
                if now - self._saturated_logged > 10:
                    self._saturated_logged = now
                    log.warning("%d handler calls wait for a worker (max_queued_tasks); "
                                "new connections wait", pool.queued)
                return 0.05
        if self.balance is not None:
            return self.balance.wait(self._open_connections())
        return 0.0

    def refuse(self, sock: socket.socket) -> None:
        """Over ``max_connections``: a best-effort refusal, then close."""
        try:
            peer = sock.getpeername()
        except OSError:  # gone already
            peer = None
        _REFUSED.event(self._reactor, peer, "max_connections (%d) reached; refusing %s",
                       self._max_connections, peer)
        try:
            sock.send(self._refusal())
        except OSError:
            pass
        sock.close()
