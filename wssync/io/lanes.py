"""Lanes: where application code runs, inline on the reactor or on a pool of workers.

A *lane* is one connection's ordered queue of work: tasks of one lane run one
after another, tasks of different lanes run in parallel on the pool.  How a
task's result gets back to the reactor is not a lane's business
(:class:`wssync.io.reactor.BoundedHandoff` is).  :class:`OwnThreads` is the other
place code runs: a capped number of threads of their own, for work that blocks
as long as a connection lives.  This module knows nothing of
HTTP, WebSocket or sockets.
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
from typing import Any, Callable, Deque, List, Optional, Tuple

log = logging.getLogger("wssync.lanes")

Task = Tuple[Callable[..., Any], Tuple[Any, ...]]


class Lane:
    """One connection's ordered work: inline when it has no pool, else on the pool's
    workers, one task at a time.  Plain data that :class:`ThreadPool` schedules."""

    __slots__ = ("pool", "scheduled", "tasks")

    def __init__(self, pool: Optional[ThreadPool] = None) -> None:
        self.pool = pool
        self.tasks: Deque[Task] = collections.deque()
        self.scheduled = False  # in the pool's queue, or held by a worker

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` after everything submitted before it (at once when inline)."""
        pool = self.pool
        if pool is None:
            fn(*args)
        else:
            pool.schedule(self, (fn, args))


INLINE = Lane()  # the reactor thread's own lane: tasks run as they are submitted

_local = threading.local()  # .pool: the ThreadPool a worker thread belongs to


def current_pool() -> Optional[ThreadPool]:
    """The pool whose worker runs the calling code (None on any other thread), so
    code on a pool can queue more work on it without being handed the pool."""
    return getattr(_local, "pool", None)


class ThreadPool:
    """N daemon worker threads serving lanes."""

    def __init__(self, size: int, name: str = "wssync-worker") -> None:
        if size < 1:
            raise ValueError("a thread pool needs at least one thread")
        self.size = size
        self.queued = 0  # tasks submitted and not finished, over all lanes
        # Whether each thread runs a task: a slot per thread, written by that
        # thread only, so counting needs no lock (read for metrics).
        self._busy = [False] * size
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue[Optional[Lane]] = queue.SimpleQueue()
        # Daemon threads: a handler blocked forever must not keep the process alive.
        self._threads: List[threading.Thread] = [
            threading.Thread(target=self._work, args=(i,), name=f"{name}-{i}", daemon=True)
            for i in range(size)
        ]
        for thread in self._threads:
            thread.start()

    def lane(self) -> Lane:
        return Lane(self)

    def schedule(self, lane: Lane, task: Task) -> None:
        """Queue ``task`` on ``lane``; the lane joins the pool's queue unless it is in it."""
        with self._lock:
            lane.tasks.append(task)
            self.queued += 1
            if lane.scheduled:
                return
            lane.scheduled = True
        self._queue.put(lane)

    @property
    def busy(self) -> int:
        """Threads running a task now."""
        return sum(self._busy)

    def _work(self, index: int) -> None:
        _local.pool = self
        while True:
            lane = self._queue.get()
            if lane is None:
                return
            self._run_one(lane, index)

    def _run_one(self, lane: Lane, index: int) -> None:
        """Run the lane's oldest task (only one worker holds a lane at a time)."""
        fn, args = lane.tasks.popleft()
        busy = self._busy
        busy[index] = True
        try:
            fn(*args)
        except BaseException:  # even SystemExit: a dead worker would strand the lane
            log.exception("unhandled error in worker task")
        busy[index] = False
        with self._lock:
            self.queued -= 1  # counted until done: one lock round per task, not two
            if not lane.tasks:
                lane.scheduled = False
                return
        # Requeue rather than loop, so a chatty connection cannot hold a worker.
        self._queue.put(lane)

    def shutdown(self, timeout: float = 5.0) -> None:
        """Let queued work finish, then end the workers (waits up to ``timeout``)."""
        for _ in self._threads:
            self._queue.put(None)
        for thread in self._threads:
            thread.join(timeout)
            if thread.is_alive():
                log.warning("worker %s still busy at shutdown; leaving it", thread.name)
                timeout = 0.0


class OwnThreads:
    """Work that needs a thread of its own for as long as it runs (a blocking-style
    WebSocket handler), at most ``limit`` at once.

    A place is reserved first (:meth:`reserve`, so a caller can refuse work before
    accepting it), then filled by :meth:`start`; it is free again when the
    function returns.  Daemon threads, as the pool's: a handler that never
    returns must not keep the process alive.
    """

    def __init__(self, limit: int, name: str = "wssync-ws") -> None:
        self.limit = limit
        self._name = name
        self._count = 0  # reserved or running
        self._started = 0
        self._cond = threading.Condition(threading.Lock())

    @property
    def count(self) -> int:
        """Places reserved or running."""
        return self._count

    def reserve(self) -> bool:
        """Take a place, or False when all ``limit`` are taken."""
        with self._cond:
            if self._count >= self.limit:
                return False
            self._count += 1
            return True

    def release(self) -> None:
        """Give back a reserved place that :meth:`start` will not use."""
        with self._cond:
            self._count -= 1
            if not self._count:
                self._cond.notify_all()

    def start(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` on a new thread in a reserved place (raises RuntimeError,
        with the place given back, if the system has no thread to give)."""
        self._started += 1
        thread = threading.Thread(target=self._run, args=(fn, args),
                                  name=f"{self._name}-{self._started}", daemon=True)
        try:
            thread.start()
        except RuntimeError:
            self.release()
            raise

    def _run(self, fn: Callable[..., Any], args: Tuple[Any, ...]) -> None:
        try:
            fn(*args)
        except BaseException:
            log.exception("unhandled error in a thread of its own")
        finally:
            self.release()

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds until none runs; whether none does."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._count, timeout)
