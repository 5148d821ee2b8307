"""``ReactorWatchdog``: names the code that holds the reactor thread too long.

In reactor mode the application's callbacks run on the reactor thread, and
one that blocks (a ``time.sleep``, a database call, a slow request to another
service) stalls every connection.  The reactor marks when each round of
callbacks starts (:attr:`~wssync.io.reactor.Reactor.busy_since`); this watchdog,
on a thread of its own, looks a few times per limit and, once a round has run
longer than the limit, reads the reactor thread's stack to name the function
the server called (the first frame outside this package) and where it is now.
The warning is logged once per blocking episode and at most once a minute per
function.  It costs the reactor nothing per callback; it never touches a
socket or stops the code it reports.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from types import FrameType
from typing import Dict, Optional, Tuple

from .reactor import Reactor

log = logging.getLogger("wssync.server")

# The whole package, not just io/: a frame in any wssync module is not the culprit.
_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
_REPEAT = 60.0  # seconds before the same function is named again


def _describe(frame: FrameType) -> str:
    code = frame.f_code
    name = getattr(code, "co_qualname", code.co_name)  # co_qualname: Python 3.11+
    return f"{frame.f_globals.get('__name__', '?')}.{name} ({code.co_filename}:{frame.f_lineno})"


def culprit(frame: Optional[FrameType]) -> Tuple[str, str]:
    """(the function the server called, where the thread is now) for a stack
    whose innermost frame is ``frame``."""
    if frame is None:
        return "an unknown callback", "?"
    innermost = frame
    chain = []
    while frame is not None:
        chain.append(frame)
        frame = frame.f_back
    # From the outermost frame inwards: past the thread's start-up, into our
    # own frames (the reactor's loop, a protocol, the bridge), and the first
    # frame after them that is not ours is the application's code we called.
    inside = False
    for candidate in reversed(chain):
        ours = candidate.f_code.co_filename.startswith(_PACKAGE)
        if ours:
            inside = True
        elif inside:
            return _describe(candidate), _describe(innermost)
    return _describe(innermost), _describe(innermost)


class ReactorWatchdog:
    """Warns when one round of the reactor's callbacks runs longer than ``limit``."""

    def __init__(self, reactor: Reactor, limit: float, advice: str) -> None:
        self._reactor = reactor
        self._limit = limit
        self._advice = advice  # how to stop blocking the reactor, for the log line
        self._stopped = threading.Event()
        self._reported = 0.0  # busy_since of the episode already reported
        self._last: Dict[str, float] = {}  # function -> when it was last named
        self._thread = threading.Thread(target=self._run, name="wssync-watchdog", daemon=True)

    def start(self) -> None:
        """Start watching (before the reactor runs: it reads ``watched`` then)."""
        self._reactor.watched = True
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(2.0)

    def _run(self) -> None:
        interval = self._limit / 4
        while not self._stopped.wait(interval):
            self.check()

    def check(self) -> Optional[str]:
        """Look once; the warning logged, if any."""
        reactor = self._reactor
        since = reactor.busy_since
        if not since or since == self._reported:
            return None
        held = time.monotonic() - since
        ident = reactor.thread_id
        if held < self._limit or ident is None:
            return None
        frame = sys._current_frames().get(ident)
        if reactor.busy_since != since:
            return None  # the round ended while we looked
        self._reported = since
        function, now_at = culprit(frame)
        del frame  # frames hold their locals: keep none of them
        now = time.monotonic()
        last = self._last.get(function)
        if last is not None and now - last < _REPEAT:
            return None
        if len(self._last) > 1000:
            self._last.clear()
        self._last[function] = now
        message = (f"{function} has held the reactor for {held:.2f} s (now at {now_at}); "
                   f"every other connection waits meanwhile. {self._advice}")
        log.warning("%s", message)
        return message
