"""The supervisor on its own.

Its building blocks (how many workers, the shared connection counts that
spread connections over them), then the supervisor at work with its processes
and its clock replaced: workers are pids that a test makes ready (a real
"ready" frame on the worker's real relay socket) and makes exit, time passes
only when a test advances it, and SIGTERM, SIGINT, SIGHUP and SIGCHLD are real
signals delivered to ``Supervisor.run`` on the main thread.  No process is
forked here; tests/e2e/test_server_workers.py runs real workers.
"""

from __future__ import annotations

import heapq
import itertools
import json
import logging
import os
import random
import signal
import socket
import threading
from typing import Any, Callable, Dict, List, Optional, Tuple

import pytest
from helpers import wait_until

from wssync.io.reactor import Reactor
from wssync.scale.balance import BALANCE_WAIT, AcceptBalance, ConnectionCounts
from wssync.scale.processes import Clock, Processes
from wssync.scale.relay import READY, STATS, encode_frame
from wssync.scale.supervisor import (
    BOOT_FAILED,
    MAX_BACKOFF,
    READY_TIMEOUT,
    REPORT_INTERVAL,
    STABLE_AFTER,
    STOP_MARGIN,
    Supervisor,
    worker_count,
)

pytestmark = pytest.mark.timeout(60)


def test_worker_count() -> None:
    assert worker_count(3) == 3
    assert worker_count(0) == len(os.sched_getaffinity(0))
    with pytest.raises(ValueError):
        worker_count(-1)


def test_counts_are_shared_with_forked_workers() -> None:
    counts = ConnectionCounts(4)
    assert [counts.get(slot) for slot in range(4)] == [-1] * 4
    pid = os.fork()
    if pid == 0:
        counts.set(2, 1234)
        os._exit(0)
    os.waitpid(pid, 0)
    assert counts.get(2) == 1234
    assert counts.least_other(0) == 1234
    assert counts.least_other(2) is None  # the others are not accepting


def test_a_busier_worker_leaves_a_connection_to_the_other_once() -> None:
    counts = ConnectionCounts(2)
    busy, idle = AcceptBalance(counts, 0), AcceptBalance(counts, 1)
    assert idle.wait(0) == 0.0  # registers 0 connections
    assert busy.wait(1) == 0.0  # one more is fair
    assert busy.wait(5) == BALANCE_WAIT  # clearly busier: the other should take it
    assert busy.wait(5) == 0.0  # still there right after: nobody took it, so take it
    idle.withdraw()
    assert busy.wait(50) == 0.0  # the other no longer accepts


def test_alone_a_worker_always_accepts() -> None:
    balance = AcceptBalance(ConnectionCounts(2), 0)
    assert balance.wait(10_000) == 0.0


# -- the supervisor at work, without forks -----------------------------------------------

Event = Tuple[Any, ...]  # ("spawn", pid) or ("kill", pid, signal)


class FakeProcesses(Processes):
    """Workers that are only pids: spawning records one and keeps its end of the
    relay (the worker's side of a real socketpair); signals are recorded, not
    sent; a worker ends when the test says so, and SIGCHLD tells the supervisor."""

    def __init__(self) -> None:
        self.events: List[Event] = []
        self.relays: Dict[int, socket.socket] = {}
        # Whether a worker signalled to stop was told it is replaced (1012) or
        # not (1001), as it would read it once the signal has come.
        self.told_replaced: Dict[int, bool] = {}
        self.is_replaced: Callable[[int], bool] = lambda pid: False
        self._ended: List[Tuple[int, int]] = []
        self._pids = itertools.count(101)
        self._lock = threading.Lock()

    def spawn(self, child: Callable[[], int], relay: socket.socket) -> int:
        pid = next(self._pids)
        with self._lock:
            self.relays[pid] = relay.dup()  # as a fork inherits it
            self.events.append(("spawn", pid))
        return pid

    def kill(self, pid: int, signum: int) -> None:
        with self._lock:
            self.events.append(("kill", pid, signum))
            if signum == signal.SIGTERM:
                self.told_replaced[pid] = self.is_replaced(pid)

    def reap(self) -> Optional[Tuple[int, int]]:
        with self._lock:
            return self._ended.pop(0) if self._ended else None

    # -- what the test does -------------------------------------------------------------

    def end(self, pid: int, code: int) -> None:
        with self._lock:
            self._ended.append((pid, code))
            relay = self.relays.pop(pid)
        relay.close()  # as the process's end of the link closes when it exits

    def spawned(self) -> List[int]:
        with self._lock:
            return [event[1] for event in self.events if event[0] == "spawn"]

    def kills(self, signum: Optional[int] = None) -> List[Tuple[int, int]]:
        with self._lock:
            return [(event[1], event[2]) for event in self.events
                    if event[0] == "kill" and signum in (None, event[2])]

    def close(self) -> None:
        for relay in self.relays.values():
            relay.close()


class _Call:
    __slots__ = ("args", "callback", "cancelled", "seq", "when")

    def __init__(self, when: float, seq: int, callback: Callable[..., Any],
                 args: Tuple[Any, ...]) -> None:
        self.when, self.seq, self.callback, self.args = when, seq, callback, args
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True

    def __lt__(self, other: _Call) -> bool:
        return (self.when, self.seq) < (other.when, other.seq)


class VirtualClock(Clock):
    """Time that moves only when :meth:`advance` moves it; calls that come due
    run on the reactor's thread, one at a time and in order of their time."""

    def __init__(self, reactor: Reactor) -> None:
        super().__init__(reactor)
        self._reactor = reactor  # its calls run there
        self.now = 1000.0
        self._calls: List[_Call] = []
        self._seq = itertools.count()
        self._lock = threading.Lock()

    def monotonic(self) -> float:
        return self.now

    def call_later(self, delay: float, callback: Callable[..., Any], *args: Any) -> _Call:
        call = _Call(self.now + delay, next(self._seq), callback, args)
        with self._lock:
            heapq.heappush(self._calls, call)
        return call

    def advance(self, seconds: float) -> None:
        """Move time on by ``seconds``, running every call due by then (from the
        test's thread, while the reactor runs)."""
        end = self.now + seconds
        while True:
            with self._lock:
                while self._calls and self._calls[0].cancelled:
                    heapq.heappop(self._calls)
                if not self._calls or self._calls[0].when > end:
                    break
                call = heapq.heappop(self._calls)
            self.now = max(self.now, call.when)
            done = threading.Event()

            def run(call: _Call = call, done: threading.Event = done) -> None:
                try:
                    if not call.cancelled:
                        call.callback(*call.args)
                finally:
                    done.set()

            self._reactor.call_soon_threadsafe(run)
            while not done.wait(0.01):
                if self._reactor.thread_id is None:
                    return  # the supervisor's run is over: nothing runs any more
        self.now = end


class Harness:
    """A :class:`Supervisor` of ``count`` fake workers, run on the main thread
    while a scenario drives it from another."""

    def __init__(self, count: int, shutdown_grace: float = 2.0, max_requests: int = 0,
                 max_requests_jitter: int = 0, seed: int = 0) -> None:
        self.reactor = Reactor()
        self.processes = FakeProcesses()
        self.clock = VirtualClock(self.reactor)
        supervisor = self.supervisor = Supervisor(
            count, self._never_run, shutdown_grace, 1 << 16, max_requests=max_requests,
            max_requests_jitter=max_requests_jitter, reactor=self.reactor,
            processes=self.processes, clock=self.clock, rng=random.Random(seed))
        # The flag in the shared memory the worker of that slot reads.
        self.processes.is_replaced = lambda pid: supervisor._counts.replaced(
            supervisor._workers[pid].slot)
        self.count = count
        self._main = threading.get_ident()

    @staticmethod
    def _never_run(*_args: Any) -> int:
        raise AssertionError("no worker process runs in these tests")

    def run(self, scenario: Callable[[Harness], None]) -> int:
        """``Supervisor.run()`` here, ``scenario(self)`` on a thread; the run's
        status (the scenario's failure, if it failed)."""
        failure: List[BaseException] = []

        def script() -> None:
            try:
                assert wait_until(lambda: len(self.processes.spawned()) >= self.count)
                scenario(self)
            except BaseException as exc:
                failure.append(exc)
                self.reactor.stop()

        def heartbeat() -> None:
            # A real supervisor's reactor always has a timer to come (its report
            # every second): so must this one, whose timers are all virtual, or
            # a wake-up that races with the loop draining its queue could leave
            # it asleep in select() for good.
            self.reactor.call_later(0.005, heartbeat)

        self.reactor.call_later(0.005, heartbeat)
        thread = threading.Thread(target=script, name="scenario")
        thread.start()
        try:
            status = self.supervisor.run()
        finally:
            thread.join(30)
            self.processes.close()
        if failure:
            raise failure[0]
        assert not thread.is_alive(), "the scenario did not end"
        return status

    # -- the scenario's steps -----------------------------------------------------------

    def on_reactor(self, fn: Callable[[], Any]) -> Any:
        result: List[Any] = []
        done = threading.Event()

        def run() -> None:
            try:
                result.append(fn())
            finally:
                done.set()

        self.reactor.call_soon_threadsafe(run)
        assert done.wait(10)
        return result[0]

    def view(self) -> List[Dict[str, Any]]:
        return list(self.on_reactor(self.supervisor.view)["workers"])

    def serving(self) -> Dict[int, int]:
        """Worker index -> the pid serving it."""
        return {w["worker"]: w["pid"] for w in self.view() if w["serving"]}

    def signal(self, signum: int) -> None:
        """A real signal, to the main thread, where the supervisor's handlers run."""
        signal.pthread_kill(self._main, signum)

    def ready(self, *pids: int) -> None:
        for pid in pids:
            self.processes.relays[pid].sendall(encode_frame(READY, b"{}"))
        assert wait_until(lambda: all(w["ready"] for w in self.view() if w["pid"] in pids))

    def report(self, pid: int, requests: int) -> None:
        """Worker ``pid`` reports having served ``requests``; the supervisor looks
        at the reports on its next tick."""
        body = json.dumps({"pid": pid, "requests": requests}).encode()
        self.processes.relays[pid].sendall(encode_frame(STATS, body))
        assert wait_until(lambda: any(w.get("requests") == requests
                                      for w in self.view() if w["pid"] == pid))

    def end(self, pid: int, code: int = 0) -> None:
        """Worker ``pid`` exits with ``code``; returns once the supervisor knows."""
        self.processes.end(pid, code)
        self.signal(signal.SIGCHLD)
        assert wait_until(lambda: pid not in {w["pid"] for w in self.view()})

    def wait_spawned(self, count: int) -> List[int]:
        assert wait_until(lambda: len(self.processes.spawned()) >= count), \
            self.processes.events
        return self.processes.spawned()

    def wait_killed(self, pid: int, signum: int) -> None:
        assert wait_until(lambda: (pid, signum) in self.processes.kills()), \
            self.processes.events

    def settle(self) -> None:
        """Let queued work run: two round trips through the reactor."""
        self.on_reactor(lambda: None)
        self.on_reactor(lambda: None)

    def finish(self) -> None:
        """SIGTERM, every worker stops, and the supervisor's next look ends its run."""
        live = [w["pid"] for w in self.view()]
        self.signal(signal.SIGTERM)
        for pid in live:
            self.wait_killed(pid, signal.SIGTERM)
        for pid in live:
            self.end(pid)
        self.clock.advance(0.05)


def test_a_worker_that_dies_after_a_long_life_is_restarted_at_once() -> None:
    h = Harness(2)

    def scenario(h: Harness) -> None:
        first, second = h.wait_spawned(2)
        h.ready(first, second)
        h.clock.advance(STABLE_AFTER + 60)
        h.end(first, 1)
        h.clock.advance(0)  # no delay: due now
        third = h.wait_spawned(3)[2]
        assert h.serving() == {0: third, 1: second}
        assert [w["restarts"] for w in h.view()] == [1, 0]
        assert h.processes.kills() == []  # nobody else was touched
        h.finish()

    assert h.run(scenario) == 0


def test_a_worker_that_keeps_dying_young_is_restarted_later_and_later() -> None:
    h = Harness(1)
    delays = [0.5, 1, 2, 4, 8, 16, MAX_BACKOFF, MAX_BACKOFF]

    def scenario(h: Harness) -> None:
        pid = h.wait_spawned(1)[0]
        h.ready(pid)
        for n, delay in enumerate(delays):
            h.clock.advance(1)  # dies one second after it started: young
            h.end(pid, 1)
            h.clock.advance(delay - 0.01)
            assert len(h.processes.spawned()) == n + 1, f"restarted before {delay} s"
            h.clock.advance(0.01)
            pid = h.wait_spawned(n + 2)[-1]
        # One that lived long enough was not crashing: restarted at once, and the
        # count of young deaths starts again.
        h.clock.advance(STABLE_AFTER)
        h.end(pid, 1)
        h.clock.advance(0)
        pid = h.wait_spawned(len(delays) + 2)[-1]
        h.clock.advance(1)
        h.end(pid, 1)
        h.clock.advance(0.49)
        assert len(h.processes.spawned()) == len(delays) + 2
        h.clock.advance(0.01)
        h.wait_spawned(len(delays) + 3)
        h.finish()

    assert h.run(scenario) == 0


def test_a_worker_killed_by_a_signal_is_restarted_too() -> None:
    h = Harness(1)

    def scenario(h: Harness) -> None:
        pid = h.wait_spawned(1)[0]
        h.ready(pid)
        h.clock.advance(STABLE_AFTER)
        h.end(pid, -signal.SIGKILL)
        h.clock.advance(0)
        h.wait_spawned(2)
        h.finish()

    assert h.run(scenario) == 0


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stop_signal_stops_every_worker_gracefully_then_the_supervisor(signum: int) -> None:
    h = Harness(2, shutdown_grace=2.0)

    def scenario(h: Harness) -> None:
        first, second = h.wait_spawned(2)
        h.ready(first, second)
        h.signal(signum)
        h.wait_killed(first, signal.SIGTERM)
        h.wait_killed(second, signal.SIGTERM)
        h.end(first)
        h.clock.advance(1)  # the other drains: the supervisor waits for it
        h.settle()
        assert h.processes.spawned() == [first, second]  # a stopped worker is not replaced
        assert h.processes.kills(signal.SIGKILL) == []
        h.end(second)
        h.clock.advance(0.05)

    assert h.run(scenario) == 0
    assert h.processes.kills() == [(101, signal.SIGTERM), (102, signal.SIGTERM)]


def test_a_worker_that_does_not_stop_in_time_is_killed() -> None:
    grace = 2.0
    h = Harness(2, shutdown_grace=grace)

    def scenario(h: Harness) -> None:
        first, second = h.wait_spawned(2)
        h.ready(first, second)
        h.signal(signal.SIGTERM)
        h.wait_killed(second, signal.SIGTERM)
        h.end(first)
        h.clock.advance(grace + STOP_MARGIN - 0.1)
        assert h.processes.kills(signal.SIGKILL) == []
        h.clock.advance(0.15)  # the deadline, and the supervisor's next look (0.05 s)
        h.wait_killed(second, signal.SIGKILL)
        assert h.processes.kills(signal.SIGKILL) == [(second, signal.SIGKILL)]
        h.end(second, -signal.SIGKILL)
        h.clock.advance(0.05)

    assert h.run(scenario) == 0


def test_a_second_stop_signal_stops_the_workers_at_once() -> None:
    h = Harness(2)

    def scenario(h: Harness) -> None:
        first, second = h.wait_spawned(2)
        h.ready(first, second)
        h.signal(signal.SIGTERM)
        h.wait_killed(second, signal.SIGTERM)
        h.signal(signal.SIGINT)
        h.wait_killed(first, signal.SIGQUIT)
        h.wait_killed(second, signal.SIGQUIT)
        h.end(first)
        h.end(second)
        h.clock.advance(0.05)

    assert h.run(scenario) == 0


def test_sighup_restarts_the_workers_one_at_a_time() -> None:
    """Each new worker is up and serving before its old one is asked to stop, and
    the next index waits until the old one has gone."""
    h = Harness(2)

    def scenario(h: Harness) -> None:
        old0, old1 = h.wait_spawned(2)
        h.ready(old0, old1)
        h.signal(signal.SIGHUP)
        new0 = h.wait_spawned(3)[2]
        h.clock.advance(1)
        h.settle()
        assert h.processes.kills() == []  # the old one serves until the new one does
        assert h.serving() == {0: old0, 1: old1}
        h.ready(new0)
        h.wait_killed(old0, signal.SIGTERM)
        assert h.serving() == {0: new0, 1: old1}
        h.clock.advance(1)
        assert len(h.processes.spawned()) == 3  # the next waits for the old one to go
        h.end(old0)
        new1 = h.wait_spawned(4)[3]
        h.settle()
        assert h.processes.kills() == [(old0, signal.SIGTERM)]
        h.ready(new1)
        h.wait_killed(old1, signal.SIGTERM)
        h.end(old1)
        h.clock.advance(READY_TIMEOUT)  # nothing left to roll: no more spawns or kills
        assert h.processes.spawned() == [old0, old1, new0, new1]
        assert h.processes.kills() == [(old0, signal.SIGTERM), (old1, signal.SIGTERM)]
        assert h.serving() == {0: new0, 1: new1}
        h.signal(signal.SIGHUP)  # the next SIGHUP starts a new round
        h.wait_spawned(5)
        h.finish()

    assert h.run(scenario) == 0


def test_an_old_worker_dying_while_its_replacement_starts_is_not_restarted_besides() -> None:
    """The replacement takes the index: a restart as well would leave a third
    worker serving that no slot knows of (never replaced, never restarted)."""
    h = Harness(2)

    def scenario(h: Harness) -> None:
        old0, old1 = h.wait_spawned(2)
        h.ready(old0, old1)
        h.clock.advance(STABLE_AFTER + 1)
        h.signal(signal.SIGHUP)
        new0 = h.wait_spawned(3)[2]
        h.end(old0, 1)  # crashes while new0 boots
        h.clock.advance(1)
        h.settle()
        assert h.processes.spawned() == [old0, old1, new0]  # no restart besides
        h.ready(new0)
        new1 = h.wait_spawned(4)[3]  # the rolling restart goes on
        h.ready(new1)
        h.wait_killed(old1, signal.SIGTERM)
        h.end(old1)
        h.settle()
        assert h.serving() == {0: new0, 1: new1}
        assert len(h.view()) == 2
        h.finish()

    assert h.run(scenario) == 0


def test_an_index_whose_old_and_new_worker_both_die_is_restarted() -> None:
    h = Harness(2)

    def scenario(h: Harness) -> None:
        old0, old1 = h.wait_spawned(2)
        h.ready(old0, old1)
        h.clock.advance(STABLE_AFTER + 1)
        h.signal(signal.SIGHUP)
        new0 = h.wait_spawned(3)[2]
        h.end(old0, 1)
        h.end(new0, 1)  # the replacement fails to start as well
        h.clock.advance(MAX_BACKOFF)  # (it died young: restarted after a back-off)
        again = h.wait_spawned(4)[3]
        h.ready(again)
        h.settle()
        assert h.serving() == {0: again, 1: old1}
        h.finish()

    assert h.run(scenario) == 0


def test_a_replacement_killed_as_stalled_that_says_ready_late_takes_nothing() -> None:
    h = Harness(2)

    def scenario(h: Harness) -> None:
        old0, old1 = h.wait_spawned(2)
        h.ready(old0, old1)
        h.signal(signal.SIGHUP)
        new0 = h.wait_spawned(3)[2]
        h.clock.advance(READY_TIMEOUT)  # stalled: killed
        h.wait_killed(new0, signal.SIGKILL)
        h.processes.relays[new0].sendall(encode_frame(READY, b"{}"))  # too late
        h.settle()
        assert h.serving() == {0: old0, 1: old1}
        assert (old0, signal.SIGTERM) not in h.processes.kills()
        h.end(new0, -signal.SIGKILL)
        h.finish()

    assert h.run(scenario) == 0


def test_a_sighup_during_a_rolling_restart_is_ignored(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="wssync.supervisor")
    h = Harness(2)

    def scenario(h: Harness) -> None:
        old0, old1 = h.wait_spawned(2)
        h.ready(old0, old1)
        h.signal(signal.SIGHUP)
        h.wait_spawned(3)
        h.signal(signal.SIGHUP)
        assert wait_until(lambda: "already under way" in caplog.text)
        h.settle()
        assert len(h.processes.spawned()) == 3
        h.finish()

    assert h.run(scenario) == 0


def test_a_new_worker_that_never_comes_up_abandons_the_rolling_restart() -> None:
    h = Harness(2)

    def scenario(h: Harness) -> None:
        old0, old1 = h.wait_spawned(2)
        h.ready(old0, old1)
        h.signal(signal.SIGHUP)
        new0 = h.wait_spawned(3)[2]
        h.clock.advance(READY_TIMEOUT - 0.1)
        assert h.processes.kills() == []
        h.clock.advance(0.1)
        h.wait_killed(new0, signal.SIGKILL)
        h.end(new0, -signal.SIGKILL)
        h.clock.advance(MAX_BACKOFF + 1)
        # The old workers serve on, untouched; the stuck one is not restarted.
        assert h.processes.kills() == [(new0, signal.SIGKILL)]
        assert len(h.processes.spawned()) == 3
        assert h.serving() == {0: old0, 1: old1}
        h.signal(signal.SIGHUP)  # abandoned means over: a new SIGHUP tries again
        h.wait_spawned(4)
        h.finish()

    assert h.run(scenario) == 0


def test_a_new_worker_that_dies_before_serving_abandons_the_rolling_restart() -> None:
    h = Harness(2)

    def scenario(h: Harness) -> None:
        old0, old1 = h.wait_spawned(2)
        h.ready(old0, old1)
        h.signal(signal.SIGHUP)
        new0 = h.wait_spawned(3)[2]
        h.end(new0, 1)
        h.clock.advance(MAX_BACKOFF)  # (less than READY_TIMEOUT: no stall is noticed)
        assert h.processes.kills() == []
        assert len(h.processes.spawned()) == 3
        assert h.serving() == {0: old0, 1: old1}
        h.signal(signal.SIGHUP)  # abandoned means over: a new SIGHUP tries again
        h.wait_spawned(4)
        h.finish()

    assert h.run(scenario) == 0


def test_workers_that_cannot_start_stop_the_supervisor_with_boot_failed() -> None:
    h = Harness(2)

    def scenario(h: Harness) -> None:
        first, second = h.wait_spawned(2)
        h.end(first, BOOT_FAILED)  # before any worker ever served
        h.wait_killed(second, signal.SIGTERM)
        h.end(second, BOOT_FAILED)
        h.clock.advance(MAX_BACKOFF)
        assert len(h.processes.spawned()) == 2

    assert h.run(scenario) == BOOT_FAILED


def test_boot_failure_after_serving_is_only_a_crash() -> None:
    h = Harness(1)

    def scenario(h: Harness) -> None:
        pid = h.wait_spawned(1)[0]
        h.ready(pid)
        h.clock.advance(STABLE_AFTER)
        h.end(pid, BOOT_FAILED)  # e.g. a bad file found by a later restart
        h.clock.advance(0)
        h.wait_spawned(2)
        h.finish()

    assert h.run(scenario) == 0


def test_a_stop_signal_during_a_back_off_cancels_the_restart() -> None:
    h = Harness(2)

    def scenario(h: Harness) -> None:
        first, second = h.wait_spawned(2)
        h.ready(first, second)
        h.clock.advance(1)
        h.end(first, 1)  # young: restarted in 0.5 s
        h.signal(signal.SIGTERM)
        h.wait_killed(second, signal.SIGTERM)
        h.clock.advance(MAX_BACKOFF)
        assert h.processes.spawned() == [first, second]
        h.end(second)
        h.clock.advance(0.05)

    assert h.run(scenario) == 0


def test_a_sighup_during_a_back_off_starts_that_worker_at_once() -> None:
    h = Harness(2)

    def scenario(h: Harness) -> None:
        first, second = h.wait_spawned(2)
        h.ready(first, second)
        h.clock.advance(1)
        h.end(first, 1)  # young: a restart is due in 0.5 s
        h.signal(signal.SIGHUP)
        new0 = h.wait_spawned(3)[2]  # without waiting for the back-off
        h.clock.advance(0)  # index 0 had no old worker: the roll goes on to index 1
        new1 = h.wait_spawned(4)[3]
        h.ready(new0, new1)
        h.wait_killed(second, signal.SIGTERM)
        h.end(second)
        h.clock.advance(MAX_BACKOFF)  # the cancelled back-off starts nothing more
        assert h.processes.spawned() == [first, second, new0, new1]
        assert h.serving() == {0: new0, 1: new1}
        h.finish()

    assert h.run(scenario) == 0


# -- why a worker stops: replaced (1012) or stopped (1001) --------------------------------


def test_a_worker_stopped_by_a_rolling_restart_is_told_it_is_replaced() -> None:
    h = Harness(2)

    def scenario(h: Harness) -> None:
        old0, old1 = h.wait_spawned(2)
        h.ready(old0, old1)
        h.signal(signal.SIGHUP)
        new0 = h.wait_spawned(3)[2]
        h.ready(new0)
        h.wait_killed(old0, signal.SIGTERM)
        h.end(old0)
        new1 = h.wait_spawned(4)[3]
        assert not h.on_reactor(lambda: h.processes.is_replaced(new1))  # a new slot is clear
        h.finish()
        assert h.processes.told_replaced == {old0: True, old1: False, new0: False,
                                             new1: False}

    assert h.run(scenario) == 0


def test_a_stop_tells_no_worker_it_is_replaced(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="wssync.supervisor")
    h = Harness(2, shutdown_grace=7.0)

    def scenario(h: Harness) -> None:
        first, second = h.wait_spawned(2)
        h.ready(first, second)
        h.signal(signal.SIGINT)
        h.wait_killed(first, signal.SIGTERM)
        h.wait_killed(second, signal.SIGTERM)
        assert h.processes.told_replaced == {first: False, second: False}
        h.end(first)
        h.end(second)
        h.clock.advance(0.05)

    assert h.run(scenario) == 0
    assert ("stopping 2 workers: waiting up to 7 s for their connections to finish; "
            "Ctrl-C again to stop now") in caplog.text


# -- max_requests ---------------------------------------------------------------------------


def test_a_worker_that_served_max_requests_is_replaced_new_one_first() -> None:
    h = Harness(2, max_requests=100)

    def scenario(h: Harness) -> None:
        old0, old1 = h.wait_spawned(2)
        h.ready(old0, old1)
        h.report(old1, 99)
        h.clock.advance(REPORT_INTERVAL)
        h.settle()
        assert len(h.processes.spawned()) == 2  # not yet
        h.report(old1, 100)
        h.clock.advance(REPORT_INTERVAL)
        new1 = h.wait_spawned(3)[2]
        h.clock.advance(REPORT_INTERVAL)
        h.settle()
        assert h.processes.kills() == []  # the old one serves until the new one does
        assert h.serving() == {0: old0, 1: old1}
        h.ready(new1)
        h.wait_killed(old1, signal.SIGTERM)
        assert h.processes.told_replaced == {old1: True}
        assert h.serving() == {0: old0, 1: new1}
        h.end(old1)
        h.clock.advance(REPORT_INTERVAL)
        h.settle()
        assert h.processes.spawned() == [old0, old1, new1]  # the new one starts at 0
        assert [w["restarts"] for w in h.view()] == [0, 0]  # a replacement is no crash
        h.finish()

    assert h.run(scenario) == 0


def test_workers_over_max_requests_are_replaced_one_at_a_time() -> None:
    h = Harness(3, max_requests=10)

    def scenario(h: Harness) -> None:
        old0, old1, old2 = h.wait_spawned(3)
        h.ready(old0, old1, old2)
        for pid in (old0, old1, old2):
            h.report(pid, 50)
        h.clock.advance(REPORT_INTERVAL)
        new0 = h.wait_spawned(4)[3]
        h.ready(new0)
        h.wait_killed(old0, signal.SIGTERM)
        h.clock.advance(5 * REPORT_INTERVAL)  # the old one still drains: nothing else
        h.settle()
        assert len(h.processes.spawned()) == 4
        assert h.processes.kills() == [(old0, signal.SIGTERM)]
        h.end(old0)
        h.clock.advance(REPORT_INTERVAL)
        new1 = h.wait_spawned(5)[4]
        h.ready(new1)
        h.wait_killed(old1, signal.SIGTERM)
        h.end(old1)
        h.clock.advance(REPORT_INTERVAL)
        new2 = h.wait_spawned(6)[5]
        h.ready(new2)
        h.wait_killed(old2, signal.SIGTERM)
        h.end(old2)
        assert h.serving() == {0: new0, 1: new1, 2: new2}
        h.finish()

    assert h.run(scenario) == 0


def test_max_requests_jitter_gives_each_worker_its_own_limit_within_bounds() -> None:
    h = Harness(16, max_requests=100, max_requests_jitter=20, seed=7)

    def scenario(h: Harness) -> None:
        h.wait_spawned(16)
        limits = [w["max_requests"] for w in h.view()]
        assert all(100 <= limit <= 120 for limit in limits), limits
        assert len(set(limits)) > 4, limits  # spread, not one value for all
        h.finish()

    assert h.run(scenario) == 0


def test_no_max_requests_no_replacement() -> None:
    h = Harness(1)

    def scenario(h: Harness) -> None:
        pid = h.wait_spawned(1)[0]
        h.ready(pid)
        h.report(pid, 10**9)
        h.clock.advance(10 * REPORT_INTERVAL)
        h.settle()
        assert h.processes.spawned() == [pid]
        assert "max_requests" not in h.view()[0]
        h.finish()

    assert h.run(scenario) == 0


def test_a_replacement_that_fails_leaves_the_old_worker_and_waits() -> None:
    h = Harness(1, max_requests=10)

    def scenario(h: Harness) -> None:
        old = h.wait_spawned(1)[0]
        h.ready(old)
        h.report(old, 10)
        h.clock.advance(REPORT_INTERVAL)
        new = h.wait_spawned(2)[1]
        h.end(new, 1)  # it could not start
        h.clock.advance(MAX_BACKOFF - 2 * REPORT_INTERVAL)
        h.settle()
        assert h.processes.spawned() == [old, new]  # not one attempt a second
        assert h.processes.kills() == []
        assert h.serving() == {0: old}
        h.clock.advance(3 * REPORT_INTERVAL)
        h.wait_spawned(3)  # tried again after the back-off
        h.finish()

    assert h.run(scenario) == 0


def test_a_sighup_during_a_replacement_rolls_once_it_is_done() -> None:
    h = Harness(2, max_requests=10)

    def scenario(h: Harness) -> None:
        old0, old1 = h.wait_spawned(2)
        h.ready(old0, old1)
        h.report(old1, 10)
        h.clock.advance(REPORT_INTERVAL)
        new1 = h.wait_spawned(3)[2]
        h.signal(signal.SIGHUP)
        h.settle()
        assert len(h.processes.spawned()) == 3  # no second new worker at once
        h.ready(new1)
        h.wait_killed(old1, signal.SIGTERM)
        h.end(old1)
        roll0 = h.wait_spawned(4)[3]  # now the rolling restart, from index 0
        h.ready(roll0)
        h.wait_killed(old0, signal.SIGTERM)
        h.end(old0)
        roll1 = h.wait_spawned(5)[4]
        h.ready(roll1)
        h.wait_killed(new1, signal.SIGTERM)
        h.end(new1)
        assert h.serving() == {0: roll0, 1: roll1}
        h.finish()

    assert h.run(scenario) == 0
