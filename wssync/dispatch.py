"""Where application code runs: inline on the reactor, or on a pool of workers.

A *lane* is one connection's ordered queue of work: tasks of one lane run one
after another, tasks of different lanes run in parallel on the pool.  This
module knows nothing of HTTP, WebSocket or sockets.
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
from typing import Any, Callable, Deque, List, Optional, Tuple

log = logging.getLogger("wssync.dispatch")

Task = Tuple[Callable[..., Any], Tuple[Any, ...]]


class Lane:
    """Runs submitted tasks in order; inline unless it belongs to a pool."""

    __slots__ = ("_pool", "_scheduled", "_tasks")

    def __init__(self, pool: Optional[ThreadPool] = None) -> None:
        self._pool = pool
        self._tasks: Deque[Task] = collections.deque()
        self._scheduled = False

    @property
    def threaded(self) -> bool:
        return self._pool is not None

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        pool = self._pool
        if pool is None:
            fn(*args)
            return
        with pool._lock:
            self._tasks.append((fn, args))
            pool.queued += 1
            if self._scheduled:
                return
            self._scheduled = True
        pool._queue.put(self)

    def _run_one(self) -> None:
        """Run the oldest task (a worker; only one worker holds a lane at a time)."""
        pool = self._pool
        assert pool is not None
        fn, args = self._tasks.popleft()
        try:
            fn(*args)
        except Exception:
            log.exception("unhandled error in worker task")
        with pool._lock:
            pool.queued -= 1  # counted until done: one lock round per task, not two
            if not self._tasks:
                self._scheduled = False
                return
        # Requeue rather than loop, so a chatty connection cannot hold a worker.
        pool._queue.put(self)


class ThreadPool:
    """N daemon worker threads serving lanes."""

    def __init__(self, size: int, name: str = "wssync-worker") -> None:
        if size < 1:
            raise ValueError("a thread pool needs at least one thread")
        self.size = size
        self.queued = 0  # tasks submitted and not finished, over all lanes
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue[Optional[Lane]] = queue.SimpleQueue()
        # Daemon threads: a handler blocked forever must not keep the process alive.
        self._threads: List[threading.Thread] = [
            threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True)
            for i in range(size)
        ]
        for thread in self._threads:
            thread.start()

    def lane(self) -> Lane:
        return Lane(self)

    def _work(self) -> None:
        while True:
            lane = self._queue.get()
            if lane is None:
                return
            lane._run_one()

    def shutdown(self, timeout: float = 5.0) -> None:
        """Let queued work finish, then end the workers (waits up to ``timeout``)."""
        for _ in self._threads:
            self._queue.put(None)
        for thread in self._threads:
            thread.join(timeout)
            if thread.is_alive():
                log.warning("worker %s still busy at shutdown; leaving it", thread.name)
                timeout = 0.0
