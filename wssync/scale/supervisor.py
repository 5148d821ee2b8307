"""The supervisor of ``--workers N``: forks worker processes that all serve the
same listening socket, and keeps them running.

The listening socket is opened once, before any fork, and every worker
inherits it (the kernel hands each new connection to one of the workers
waiting in ``accept``).  The supervisor keeps its copy open for its whole life,
so the port never closes while workers die, restart or roll over: a client
connecting meanwhile waits in the kernel's backlog instead of being refused.

The supervisor restarts a worker that dies (with a growing delay for one that
keeps dying young), stops every worker gracefully on SIGTERM or SIGINT,
replaces them one at a time on SIGHUP, replaces a worker that has served
``max_requests`` (one at a time too), and runs the relay that carries
broadcasts and statistics between workers (:mod:`wssync.scale.relay`).  A
replacement always starts the new worker first and stops the old one once the
new one serves; the old one is told it is replaced, not stopped (its
WebSockets get 1012, Service Restart).  It runs no
application code and serves no connection itself; what a worker runs is the
``run_worker`` callable it is given.

What it asks of the system (fork, signal, reap a worker) goes through
:class:`Processes`, time through a :class:`Clock`: a test gives its own of each.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import socket
from functools import partial
from typing import Any, Callable, Dict, List, Optional

from ..io.reactor import Reactor
from .balance import AcceptBalance, ConnectionCounts
from .processes import Clock, Processes, Scheduled
from .relay import RelayHub

__all__ = ["BOOT_FAILED", "REPORT_INTERVAL", "AcceptBalance", "Supervisor", "worker_count"]

log = logging.getLogger("wssync.supervisor")

BOOT_FAILED = 3  # a worker's exit status when it could not start (bad app, bad files)
READY_TIMEOUT = 60.0  # a new worker that has not started serving by then is given up
STABLE_AFTER = 5.0  # a worker that lived this long was not crashing at start-up
MAX_BACKOFF = 30.0
REPORT_INTERVAL = 1.0  # statistics: workers report, the supervisor sends the table back
STOP_MARGIN = 5.0  # beyond shutdown_grace, before a worker that does not stop is killed


RunWorker = Callable[[int, socket.socket, AcceptBalance], int]


class _Worker:
    __slots__ = ("index", "limit", "pid", "ready", "replaces", "retiring", "slot", "started")

    def __init__(self, index: int, slot: int, pid: int, replaces: Optional[int],
                 started: float, limit: int) -> None:
        self.index = index
        self.slot = slot
        self.pid = pid
        self.started = started
        self.limit = limit  # the requests after which it is replaced (0: never)
        self.ready = False
        self.retiring = False  # asked to stop: its exit is expected
        self.replaces = replaces  # the worker it takes over from once it serves


def worker_count(requested: int) -> int:
    """``0`` means one worker per CPU this process may run on."""
    if requested < 0:
        raise ValueError("workers must be 0 (one per CPU) or more")
    if requested:
        return requested
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class Supervisor:
    """Forks ``count`` workers running ``run_worker(index, relay_socket)``
    (which returns the exit status) and supervises them until stopped.

    A worker that has served ``max_requests`` plus a random 0 to
    ``max_requests_jitter`` requests, as its reports say, is replaced (0: never).
    ``reactor``, ``processes``, ``clock`` and ``rng`` replace the real ones (a
    test's own); the clock should then run its calls on ``reactor``'s thread."""

    def __init__(self, count: int, run_worker: RunWorker, shutdown_grace: float,
                 max_record: int, *, max_requests: int = 0, max_requests_jitter: int = 0,
                 reactor: Optional[Reactor] = None, processes: Optional[Processes] = None,
                 clock: Optional[Clock] = None, rng: Optional[random.Random] = None) -> None:
        self.count = count
        self._run_worker = run_worker
        self._shutdown_grace = shutdown_grace
        self._max_requests = max_requests
        self._jitter = max_requests_jitter
        self._rng = rng if rng is not None else random.Random()
        self._reactor = reactor if reactor is not None else Reactor()
        self._processes = processes if processes is not None else Processes()
        self._clock = clock if clock is not None else Clock(self._reactor)
        self._hub = RelayHub(self._reactor, max_record, self._on_ready)
        self._counts = ConnectionCounts(2 * count)
        self._workers: Dict[int, _Worker] = {}  # by pid, every live child
        self._slots: List[Optional[int]] = [None] * count  # the serving pid of each index
        self._failures = [0] * count  # consecutive young deaths, for the back-off
        self._restarts = [0] * count
        self._restart_timers: Dict[int, Scheduled] = {}
        self._ever_ready = False
        self._stopping = False
        self._stop_deadline = 0.0
        self._killed = False
        self._rolling: Optional[int] = None  # the index being replaced by SIGHUP
        self._recycling: Optional[int] = None  # the pid being replaced for max_requests
        self._outgoing: Optional[int] = None  # the replaced pid, draining
        self._roll_timer: Optional[Scheduled] = None  # the new worker's time to serve
        self._hup_pending = False  # a SIGHUP during a recycle: rolls once it is done
        self._recycle_after = 0.0  # a replacement that failed: none again before then
        self._started = self._clock.monotonic()
        self.status = 0

    # -- running -----------------------------------------------------------------

    def run(self) -> int:
        """Start the workers and supervise them until they have all stopped;
        returns the exit status for the command line (0, or ``BOOT_FAILED``
        when a worker could not start before any had served)."""
        reactor = self._reactor
        restore = self._handle_signals()
        log.info("supervisor %d starting %d workers", os.getpid(), self.count)
        try:
            for index in range(self.count):
                self._spawn(index)
            self._clock.call_later(REPORT_INTERVAL, self._tick)
            reactor.run()
        finally:
            restore()
            for pid in list(self._workers):  # only after an error in the loop itself
                self._processes.kill(pid, signal.SIGKILL)
            self._hub.close_all()
            reactor.close()
        log.info("supervisor stopped")
        return self.status

    def _handle_signals(self) -> Callable[[], None]:
        reactor = self._reactor
        actions: Dict[int, Callable[[], None]] = {
            signal.SIGTERM: partial(self._begin_stop, "SIGTERM again"),
            signal.SIGINT: partial(self._begin_stop, "Ctrl-C again"),
            signal.SIGHUP: self._begin_rolling_restart,
            signal.SIGCHLD: self._reap,
        }
        previous: Dict[int, Any] = {}
        for signum, action in actions.items():
            def handler(_signum: int, _frame: Any, action: Callable[[], None] = action) -> None:
                reactor.call_soon_threadsafe(action)  # lock-free: safe in a signal handler

            previous[signum] = signal.signal(signum, handler)

        def restore() -> None:
            for signum, handler in previous.items():
                signal.signal(signum, handler if handler is not None else signal.SIG_DFL)

        return restore

    def _spawn(self, index: int, replaces: Optional[int] = None) -> _Worker:
        taken = {worker.slot for worker in self._workers.values()}
        slot = next(n for n in range(self._counts.slots) if n not in taken)
        self._counts.set(slot, -1)  # until the worker accepts
        ours, theirs = socket.socketpair()

        def child() -> int:  # in the new worker process
            ours.close()
            self._forget_in_child()
            return self._run_worker(index, theirs, AcceptBalance(self._counts, slot))

        self._counts.mark_replaced(slot, False)
        pid = self._processes.spawn(child, theirs)
        theirs.close()
        limit = self._max_requests and self._max_requests + self._rng.randint(0, self._jitter)
        worker = self._workers[pid] = _Worker(index, slot, pid, replaces,
                                              self._clock.monotonic(), limit)
        if replaces is None:
            self._slots[index] = pid
        self._hub.attach(pid, ours)
        log.info("worker %d started (pid %d)", index, pid)
        return worker

    def _forget_in_child(self) -> None:
        """In a new worker: drop the supervisor's descriptors and signal handlers
        without touching anything the supervisor still uses (the selector is
        shared across fork: unregistering here would unregister there)."""
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD):
            signal.signal(signum, signal.SIG_DFL)
        self._hub.forget_in_child()
        self._reactor.forget_in_child()

    # -- workers coming and going -------------------------------------------------

    def _on_ready(self, pid: int, _info: Dict[str, Any]) -> None:
        worker = self._workers.get(pid)
        if worker is None or worker.retiring:  # (killed already: ready too late)
            return
        worker.ready = True
        self._ever_ready = True
        if worker.replaces is None:
            return
        # A replacement serves: the old worker of its index may go.
        if self._roll_timer is not None:
            self._roll_timer.cancel()
            self._roll_timer = None
        old = self._workers.get(worker.replaces)
        self._slots[worker.index] = pid
        worker.replaces = None
        if old is None:
            self._replacement_done()
        else:
            self._outgoing = old.pid
            self._retire(old, replaced=True)  # its exit ends the replacement

    def _reap(self) -> None:
        reap = self._processes.reap
        ended = reap()
        while ended is not None:
            self._exited(*ended)
            ended = reap()

    def _exited(self, pid: int, code: int) -> None:
        worker = self._workers.pop(pid, None)
        if worker is None:
            return
        self._hub.detach(pid)
        self._counts.set(worker.slot, -1)
        index = worker.index
        how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exited ({code})"
        if worker.retiring or self._stopping:
            log.info("worker %d (pid %d) stopped", index, pid)
            if pid == self._outgoing:
                self._outgoing = None
                if not self._stopping:
                    self._replacement_done()
            return
        if worker.replaces is not None:  # a replacement did not start
            log.error("the new worker %d (pid %d) %s before serving; %s abandoned, the "
                      "running workers stay", index, pid, how,
                      "rolling restart" if self._recycling is None else "replacement")
            self._replacement_failed()
            if self._slots[index] is None:  # the worker it was to replace died meanwhile
                self._schedule_restart(index, worker, how)
            return
        if any(other.replaces == pid for other in self._workers.values()):
            # Its replacement is starting already and takes the index when ready:
            # a restart besides would leave a worker no slot knows of.
            log.warning("worker %d (pid %d) %s while its replacement starts", index, pid, how)
            self._slots[index] = None
            return
        if code == BOOT_FAILED and not self._ever_ready:
            log.error("worker %d could not start; stopping", index)
            self.status = BOOT_FAILED
            self._begin_stop()
            return
        if self._slots[index] != pid:
            return
        self._slots[index] = None
        self._schedule_restart(index, worker, how)

    def _schedule_restart(self, index: int, worker: _Worker, how: str) -> None:
        """Start ``index`` again, at once or after a back-off if it keeps dying young."""
        pid = worker.pid
        lived = self._clock.monotonic() - worker.started
        self._failures[index] = self._failures[index] + 1 if lived < STABLE_AFTER else 0
        failures = self._failures[index]
        delay = 0.0 if not failures else min(MAX_BACKOFF, 0.5 * 2 ** (failures - 1))
        log.warning("worker %d (pid %d) %s after %.1f s; restarting it%s", index, pid, how,
                    lived, f" in {delay:g} s" if delay else "")
        self._restart_timers[index] = self._clock.call_later(delay, self._restart, index)

    def _restart(self, index: int) -> None:
        self._restart_timers.pop(index, None)
        if self._stopping or self._slots[index] is not None:
            return
        self._restarts[index] += 1
        self._spawn(index)

    def _retire(self, worker: _Worker, replaced: bool) -> None:
        """Ask a worker to stop gracefully (it drains, then exits); ``replaced``
        tells it that another serves in its place (written before the signal)."""
        worker.retiring = True
        if replaced:
            self._counts.mark_replaced(worker.slot, True)
        self._processes.kill(worker.pid, signal.SIGTERM)
        self._clock.call_later(self._shutdown_grace + STOP_MARGIN, self._kill_if_alive,
                               worker.pid)

    def _kill_if_alive(self, pid: int) -> None:
        if pid in self._workers:
            log.warning("worker pid %d did not stop in time; killing it", pid)
            self._processes.kill(pid, signal.SIGKILL)

    # -- replacements: SIGHUP (every worker), max_requests (one) ---------------------

    def _begin_rolling_restart(self) -> None:
        if self._stopping:
            return
        if self._rolling is not None:
            log.info("SIGHUP: a rolling restart is already under way")
            return
        if self._recycling is not None:
            log.info("SIGHUP: restarting the workers once the one being replaced has stopped")
            self._hup_pending = True
            return
        log.info("SIGHUP: restarting the workers one at a time")
        self._rolling = -1
        self._roll_next()

    def _roll_next(self) -> None:
        assert self._rolling is not None
        self._rolling += 1
        index = self._rolling
        if index >= self.count:
            log.info("rolling restart done")
            self._end_replacing()
            return
        old = self._slots[index]
        if old is None:  # that index is down (restart pending): start it now
            timer = self._restart_timers.pop(index, None)
            if timer is not None:
                timer.cancel()
            self._slots[index] = self._spawn(index).pid
            self._roll_timer = self._clock.call_later(0, self._roll_next)
            return
        self._replace(index, old)

    def _check_recycling(self) -> None:
        """Replace the first worker that has served its ``max_requests``."""
        if (not self._max_requests or self._stopping or self._rolling is not None
                or self._recycling is not None
                or self._clock.monotonic() < self._recycle_after):
            return
        for worker in sorted(self._workers.values(), key=lambda w: w.index):
            served = self._hub.counts.get(worker.pid, {}).get("requests", 0)
            if worker.ready and not worker.retiring and served >= worker.limit \
                    and self._slots[worker.index] == worker.pid:
                log.info("worker %d (pid %d) has served %d requests (max_requests %d); "
                         "replacing it", worker.index, worker.pid, served, worker.limit)
                self._recycling = worker.pid
                self._replace(worker.index, worker.pid)
                return

    def _replace(self, index: int, old: int) -> None:
        """Start the new worker of ``index``; ``old`` stops once it serves."""
        new = self._spawn(index, replaces=old)
        self._roll_timer = self._clock.call_later(READY_TIMEOUT, self._roll_stalled, new.pid)

    def _replacement_done(self) -> None:
        """The replaced worker has stopped: on to the next one."""
        if self._recycling is not None:
            self._end_replacing()
            if self._hup_pending:
                self._hup_pending = False
                self._begin_rolling_restart()
        elif self._rolling is not None:
            self._roll_next()

    def _roll_stalled(self, pid: int) -> None:
        self._roll_timer = None
        log.error("the new worker (pid %d) did not start serving within %.0f s; %s "
                  "abandoned", pid, READY_TIMEOUT,
                  "rolling restart" if self._recycling is None else "replacement")
        worker = self._workers.get(pid)
        if worker is not None:
            worker.retiring = True
            self._processes.kill(pid, signal.SIGKILL)
        self._replacement_failed()

    def _replacement_failed(self) -> None:
        if self._recycling is not None:
            # The old worker keeps serving; try again later, not every second.
            self._recycle_after = self._clock.monotonic() + MAX_BACKOFF
        self._end_replacing()
        self._hup_pending = False

    def _end_replacing(self) -> None:
        self._rolling = self._recycling = None
        if self._roll_timer is not None:
            self._roll_timer.cancel()
            self._roll_timer = None

    # -- stopping -----------------------------------------------------------------

    def _begin_stop(self, again: str = "signal again") -> None:
        if self._stopping:
            # A second signal: the workers stop at once (as a single server does).
            log.info("stopping the workers now")
            for pid in self._workers:
                self._processes.kill(pid, signal.SIGQUIT)
            return
        self._stopping = True
        log.info("stopping %d workers: waiting up to %g s for their connections to finish; "
                 "%s to stop now", len(self._workers), self._shutdown_grace, again)
        self._end_replacing()
        self._hup_pending = False
        for timer in self._restart_timers.values():
            timer.cancel()
        self._restart_timers.clear()
        for worker in self._workers.values():
            worker.retiring = True
            self._processes.kill(worker.pid, signal.SIGTERM)
        self._stop_deadline = self._clock.monotonic() + self._shutdown_grace + STOP_MARGIN
        self._wait_for_workers()

    def _wait_for_workers(self) -> None:
        self._reap()
        if not self._workers:
            self._reactor.stop()
            return
        if self._clock.monotonic() >= self._stop_deadline and not self._killed:
            self._killed = True
            log.warning("%d workers did not stop in time; killing them", len(self._workers))
            for pid in self._workers:
                self._processes.kill(pid, signal.SIGKILL)
        self._clock.call_later(0.05, self._wait_for_workers)

    # -- statistics ----------------------------------------------------------------

    def _tick(self) -> None:
        self._reap()  # in case a SIGCHLD was coalesced with another
        self._hub.send_view(self.view())
        self._check_recycling()
        self._clock.call_later(REPORT_INTERVAL, self._tick)

    def metrics(self) -> Dict[str, Any]:
        """The workers' metrics summed, with restarts and workers (for /metrics)."""
        serving = sum(1 for pid in self._slots if pid is not None)
        return self._hub.cluster_metrics(sum(self._restarts), serving)

    def view(self) -> Dict[str, Any]:
        """Every worker's latest counts, as the supervisor sees them."""
        now = self._clock.monotonic()
        workers = []
        for worker in sorted(self._workers.values(), key=lambda w: (w.index, w.started)):
            entry: Dict[str, Any] = {
                "worker": worker.index, "pid": worker.pid, "ready": worker.ready,
                "serving": self._slots[worker.index] == worker.pid and not worker.retiring,
                "age": round(now - worker.started, 1), "restarts": self._restarts[worker.index],
            }
            if worker.limit:
                entry["max_requests"] = worker.limit
            counts = self._hub.counts.get(worker.pid)
            if counts:
                entry.update({key: value for key, value in counts.items()
                              if key not in entry})
            workers.append(entry)
        return {"supervisor": os.getpid(), "age": round(now - self._started, 1),
                "workers": workers, "relayed": self._hub.relayed,
                "relay_dropped": self._hub.dropped}

