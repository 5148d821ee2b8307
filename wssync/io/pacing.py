"""``OutputGate``: threads that write to one connection wait for that connection.

A blocking socket makes ``send`` wait while the peer is slow; a thread that
hands its sends to the reactor would instead pile them up in memory.  The
gate restores the blocking behaviour: a thread waits here while the
connection's unsent output is above its high-water mark (the transport said
so: :meth:`pause` and :meth:`resume`) or while what it and other threads
handed over and the reactor has not yet written is above that mark.  It
wakes with an error once the connection is gone, and gives up after the
caller's timeout.

The reactor side (``pause``, ``resume``, ``close``, ``written``) never waits:
``written`` takes no lock unless a thread waits.  The gate knows nothing of
sockets, frames or HTTP; the error a waiting thread gets is the caller's.
"""

from __future__ import annotations

import threading
import time
from typing import Callable, Optional

# A waiting thread looks again this often even without a wake-up: the cost of
# a missed notify is bounded, never a hang.
_RECHECK = 1.0


class OutputGate:
    """Paces the threads writing to one connection by that connection's output."""

    __slots__ = ("_closed", "_cond", "_done", "_handed", "_limit", "_lock", "_paused",
                 "_waiting")

    def __init__(self, limit: int) -> None:
        self._limit = limit  # the connection's high-water mark
        # The lock alone on the common path (a Condition's ``with`` costs two
        # Python calls per send); the condition, over the same lock, to wait.
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._handed = 0  # bytes threads handed over (by them: see enter)
        self._done = 0  # of those, bytes the reactor has written (reactor only)
        self._paused = False  # the transport's output is above its high-water mark
        # Makes what waiting threads raise once the connection is gone.
        self._closed: Optional[Callable[[], BaseException]] = None
        self._waiting = 0

    @property
    def paused(self) -> bool:
        """The connection's output is above its high-water mark."""
        return self._paused

    @property
    def in_flight(self) -> int:
        """Bytes handed over and not yet written to the transport."""
        return max(0, self._handed - self._done)

    # -- the sending thread ------------------------------------------------------------

    def enter(self, size: int, timeout: Optional[float],
              expired: Callable[[float], BaseException]) -> None:
        """Wait until ``size`` more bytes may be handed over, then count them.

        Raises what :meth:`close` was given once the connection is gone, and
        ``expired(timeout)`` if ``timeout`` seconds pass first (nothing is
        counted then).  One write larger than the limit still goes, alone.
        """
        if self._closed is None and not self._paused:
            # The common case, without the lock (a lock costs more than the rest
            # of a small send).  ``_done`` has one writer, the reactor, so no
            # update of it is lost; two threads sending on one connection at
            # the same instant may lose an update of ``_handed``, which can only
            # make it smaller: one message more in flight, never a wait that
            # does not end.
            in_flight = self._handed - self._done
            if not in_flight or in_flight + size <= self._limit:
                self._handed += size
                return
        with self._lock:
            deadline = None if timeout is None else time.monotonic() + timeout
            if not self._wait(size, deadline):
                assert timeout is not None  # only a deadline ends the wait unmet
                raise expired(timeout)
            if self._closed is not None:
                raise self._closed()
            self._handed += size

    def wait_writable(self, deadline: Optional[float]) -> bool:
        """Wait until the output is below the high-water mark, the connection is
        gone, or ``deadline`` (monotonic) passes; whether it is writable now."""
        with self._lock:
            return self._wait(0, deadline) and self._closed is None

    def _wait(self, size: int, deadline: Optional[float]) -> bool:
        """With the lock held: wait while ``size`` more bytes are blocked, until
        ``deadline``; whether they are no longer blocked."""
        if not self._blocked(size):
            return True
        self._waiting += 1
        try:
            while self._blocked(size):
                left = _RECHECK if deadline is None else deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, _RECHECK))
        finally:
            self._waiting -= 1
        return True

    def _blocked(self, size: int) -> bool:
        if self._closed is not None:
            return False  # nothing to wait for: the caller raises
        if self._paused:
            return True
        in_flight = self._handed - self._done
        return in_flight > 0 and in_flight + size > self._limit

    # -- the reactor -------------------------------------------------------------------

    def count(self, size: int) -> None:
        """``size`` bytes handed over without waiting (counted all the same, so
        that ``in_flight`` says what is on its way)."""
        with self._lock:
            self._handed += size

    def written(self, size: int) -> None:
        """The reactor wrote ``size`` handed-over bytes to the transport."""
        self._done += size
        if self._waiting:
            with self._cond:
                self._cond.notify_all()

    def pause(self) -> None:
        """The connection's output went above its high-water mark."""
        self._paused = True

    def resume(self) -> None:
        """The connection's output drained below its low-water mark."""
        with self._cond:
            self._paused = False
            self._cond.notify_all()

    def close(self, error: Callable[[], BaseException]) -> None:
        """The connection is gone: waiting and later threads raise ``error()``."""
        with self._cond:
            self._closed = error
            self._cond.notify_all()
