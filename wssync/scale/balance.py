"""How the workers of a supervisor share new connections evenly, and why one stops.

:class:`ConnectionCounts` is every worker's count of open connections in memory
shared across the fork; :class:`AcceptBalance` is one worker's use of it to
leave a new connection to a less busy worker.  The same memory carries the
supervisor's word that a worker it stops is being replaced (a rolling restart,
max_requests), not stopped with the service.  Nothing here forks, signals or
touches a socket: the supervisor makes the counts, each worker writes its own.
"""

from __future__ import annotations

import mmap
import struct
import time
from typing import Optional

BALANCE_WAIT = 0.005  # how long a busier worker leaves a new connection to the others


class ConnectionCounts:
    """Every worker's open connections, in memory shared across the fork.

    One slot per worker process (twice the worker count: a rolling restart
    runs an old and a new worker side by side), each written by its worker
    only; -1 marks a slot with no worker accepting.  Reads need no lock: an
    aligned 8-byte value is never seen half-written, and a count one
    connection old is good enough to balance by.

    After the counts, one byte per slot says the worker is being replaced:
    the supervisor writes it before it signals the worker to stop, so the
    worker reads it once the signal has come.
    """

    _SLOT = struct.Struct("q")

    def __init__(self, slots: int) -> None:
        self._flags = self._SLOT.size * slots
        self._map = mmap.mmap(-1, self._flags + slots)  # anonymous, MAP_SHARED
        self.slots = slots
        for slot in range(slots):
            self.set(slot, -1)

    def mark_replaced(self, slot: int, replaced: bool) -> None:
        """The worker of ``slot`` stops for a replacement (or, False: a new one starts)."""
        self._map[self._flags + slot] = int(replaced)

    def replaced(self, slot: int) -> bool:
        return bool(self._map[self._flags + slot])

    def set(self, slot: int, value: int) -> None:
        self._SLOT.pack_into(self._map, slot * self._SLOT.size, value)

    def get(self, slot: int) -> int:
        return int(self._SLOT.unpack_from(self._map, slot * self._SLOT.size)[0])

    def least_other(self, slot: int) -> Optional[int]:
        """The fewest connections of any other accepting worker (None: no other)."""
        least: Optional[int] = None
        for other in range(self.slots):
            if other != slot:
                value = self.get(other)
                if value >= 0 and (least is None or value < least):
                    least = value
        return least


class AcceptBalance:
    """A worker's part in spreading connections evenly over the workers.

    All workers wait on the one listening socket and the kernel wakes them
    all; the first to call ``accept`` wins, and on an idle machine that is
    mostly the same one, so connections arriving one at a time (WebSockets
    that then stay for hours) pile up on one worker.  A worker clearly busier
    than another therefore leaves a new connection in the backlog for a few
    milliseconds, once, for the other one to take; if nobody does, it takes it.
    """

    def __init__(self, counts: ConnectionCounts, slot: int) -> None:
        self._counts = counts
        self._slot = slot
        self._waited_at = 0.0

    def wait(self, mine: int) -> float:
        """Seconds to leave new connections to the others (0: accept now)."""
        self._counts.set(self._slot, mine)
        least = self._counts.least_other(self._slot)
        if least is None or mine <= least + 1 + mine // 32:
            return 0.0
        now = time.monotonic()
        if now - self._waited_at < 2 * BALANCE_WAIT:
            return 0.0  # waited just now and the connection is still there: take it
        self._waited_at = now
        return BALANCE_WAIT

    def withdraw(self) -> None:
        """This worker accepts no more (it is stopping)."""
        self._counts.set(self._slot, -1)

    def replaced(self) -> bool:
        """The supervisor stops this worker to replace it, not to stop serving."""
        return self._counts.replaced(self._slot)
