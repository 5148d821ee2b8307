"""``RateLimitedLog``: log lines about what peers do to the server, at most one per interval.

A client can cause some log lines at will (a TLS handshake it never finishes, a
bad PROXY header, one WebSocket too many): one line per event would let it fill
the log and bury everything else.  A ``RateLimitedLog`` stands for one kind of
such event (one per server, or per process).  After a quiet spell the first
``burst`` events (5) are logged at once, in full, as they would be without a
limit; later ones within ``interval`` seconds (10) are only counted, and one
summary line says how many there were and from where, e.g. ``TLS handshakes
not done in time: 1995 more in the last 10 s, all from 203.0.113.7``.  While
the events go on, each interval has its summary line and no other (the
kernel's printk rate limit works the same way, with a burst of 10 per 5 s).
The summary is written when the interval ends (a timer on the reactor that saw
the event), or by the next event if that reactor has stopped meanwhile.

Exact counts are the metrics' job; this module only keeps the log readable.
It knows nothing of what the events mean: each call site says that in words.
Calls come from reactor threads (several servers in one process may share a
``RateLimitedLog``), so its state is under a lock, and no line is written
while the lock is held.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

if TYPE_CHECKING:
    from .reactor import Reactor

INTERVAL = 10.0  # seconds between two summaries of one kind of event
BURST = 5  # events logged in full after a quiet spell
_MAX_SOURCES = 1000  # addresses counted one by one per interval; more are lumped together


def peer_address(peer: Any) -> str:
    """The address part of a peer name (no port: each connection has its own)."""
    if isinstance(peer, tuple) and peer:
        return str(peer[0])
    return str(peer) if peer else "a Unix socket"


class RateLimitedLog:
    """Log lines about one kind of peer event: ``what`` names the kind in the
    summary (a plural noun phrase), ``level`` is that of every line."""

    __slots__ = ("_count", "_ends", "_full_left", "_level", "_lock", "_logger", "_others",
                 "_scheduled", "_sources", "_starts", "_window", "burst", "interval", "what")

    def __init__(self, logger: logging.Logger, level: int, what: str,
                 interval: float = INTERVAL, burst: int = BURST) -> None:
        self._logger = logger
        self._level = level
        self.what = what
        self.interval = interval
        self.burst = burst
        self._full_left = 0  # events this interval may still log in full
        self._lock = threading.Lock()
        self._window = 0  # which interval: a timer of an earlier one finds it changed
        self._starts = 0.0
        self._ends = 0.0  # 0: quiet, the next event is logged in full
        self._count = 0  # events counted, not logged, in this interval
        self._sources: Dict[str, int] = {}  # address -> events, at most _MAX_SOURCES of them
        self._others = 0  # events from addresses past _MAX_SOURCES
        self._scheduled = -1  # the interval whose summary a timer will write

    def event(self, reactor: Optional[Reactor], peer: Any, msg: str, *args: Any) -> None:
        """``peer`` did it: log ``msg % args`` now if the interval's burst allows,
        else count it for the summary.  Called on the thread of ``reactor``,
        which times the summary (None: the next event does)."""
        if not self._logger.isEnabledFor(self._level):
            return
        now = time.monotonic()
        summary: Optional[Tuple[str, Tuple[Any, ...]]] = None
        full = False
        schedule: Optional[Tuple[float, int]] = None
        with self._lock:
            if now >= self._ends:
                summary = self._close_interval(now)
            if self._full_left:
                self._full_left -= 1
                full = True
            else:
                self._count += 1
                address = peer_address(peer)
                sources = self._sources
                if address in sources or len(sources) < _MAX_SOURCES:
                    sources[address] = sources.get(address, 0) + 1
                else:
                    self._others += 1
                if reactor is not None and self._scheduled != self._window:
                    self._scheduled = self._window
                    schedule = (self._ends - now, self._window)
        if summary is not None:
            self._logger.log(self._level, summary[0], *summary[1])
        if full:
            self._logger.log(self._level, msg, *args, stacklevel=2)  # the caller's line
        if schedule is not None and reactor is not None:
            reactor.call_later(max(schedule[0], 0.0), self._due, schedule[1])

    def _due(self, window: int) -> None:
        """The interval ``window`` is over: its summary, unless an event wrote it."""
        with self._lock:
            if window != self._window:
                return
            summary = self._close_interval(time.monotonic())
        if summary is not None:
            self._logger.log(self._level, summary[0], *summary[1])

    def _close_interval(self, now: float) -> Optional[Tuple[str, Tuple[Any, ...]]]:
        """End the current interval and start the next (lock held): the summary
        line of what it counted, or None if it counted nothing (a quiet spell begins)."""
        count, sources, others = self._count, self._sources, self._others
        elapsed = now - self._starts
        self._window += 1
        self._count = self._others = 0
        self._sources = {}
        self._starts = now
        # The next interval starts now.  After a quiet one its first events
        # are logged in full; while events go on, only their summary is.
        self._ends = now + self.interval
        self._full_left = 0 if count else self.burst
        if not count:
            return None
        return ("%s: %d more in the last %.0f s, %s", (self.what, count, elapsed,
                                                        _from(sources, others, count)))


def _from(sources: Dict[str, int], others: int, count: int) -> str:
    """Where ``count`` events came from, in words: the busiest address first."""
    ranked: List[Tuple[int, str]] = sorted(((n, a) for a, n in sources.items()), reverse=True)
    top_count, top = ranked[0]
    if len(ranked) == 1 and not others:
        return f"all from {top}"
    rest = len(ranked) - 1
    more = f"{rest}{'+' if others else ''} other address{'es' if rest != 1 or others else ''}"
    return f"{top_count} from {top} and {count - top_count} from {more}"
