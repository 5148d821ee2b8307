"""The supervisor's seam to the operating system: forks, signals, reaping, time.

:class:`Processes` forks, signals and reaps workers; :class:`Clock` tells the
time and schedules calls on the supervisor's reactor.  A test replaces both
with its own to drive the supervisor without a process or a wait.  Nothing
here decides when a worker starts or stops: that is the supervisor's.
"""

from __future__ import annotations

import os
import socket
import sys
import time
import traceback
from typing import Any, Callable, Optional, Protocol, Tuple

from ..io.reactor import Reactor


class Processes:
    """The supervisor's dealings with the operating system: real forks and signals."""

    def spawn(self, child: Callable[[], int], relay: socket.socket) -> int:
        """Fork a worker that runs ``child()`` and exits with what it returns; its
        pid.  The fork inherits ``relay``, the worker's end of its link."""
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid:
            return pid
        status = 1  # the worker: never returns from here
        try:
            status = child()
        except SystemExit as exc:
            status = exc.code if isinstance(exc.code, int) else 1
        except BaseException:
            traceback.print_exc()
        finally:
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            finally:
                os._exit(status)

    def kill(self, pid: int, signum: int) -> None:
        try:  # a worker that is gone already is no error
            os.kill(pid, signum)
        except ProcessLookupError:
            pass

    def reap(self) -> Optional[Tuple[int, int]]:
        """A worker that ended, as ``(pid, exit code)`` (negative: the signal
        that killed it), without waiting; None when none has."""
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return None
        return (pid, os.waitstatus_to_exitcode(status)) if pid else None


class Scheduled(Protocol):  # a Clock's call to come, until cancelled
    def cancel(self) -> None: ...


class Clock:
    """The supervisor's time: the clock, and calls after a delay on its reactor."""

    def __init__(self, reactor: Reactor) -> None:
        self._reactor = reactor

    def monotonic(self) -> float:
        return time.monotonic()

    def call_later(self, delay: float, callback: Callable[..., Any], *args: Any) -> Scheduled:
        return self._reactor.call_later(delay, callback, *args)
