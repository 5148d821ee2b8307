"""The event loop: one selector, timers, and a wake-up channel for other threads.

The reactor owns the selector and runs callbacks; it knows nothing of HTTP or
WebSocket and nothing of what a socket carries.  Only the thread running
:meth:`Reactor.run` may touch the selector; every other thread hands work over
with :meth:`Reactor.call_soon_threadsafe`.
"""

from __future__ import annotations

import collections
import heapq
import logging
import selectors
import socket
import threading
import time
from typing import Any, Callable, Deque, List, Optional, Tuple

log = logging.getLogger("wssync.reactor")

Callback = Callable[..., Any]
_get_ident = threading.get_ident


class Timer:
    """A callback scheduled at a monotonic time; :meth:`cancel` is idempotent."""

    __slots__ = ("_args", "_callback", "_queue", "cancelled", "when")

    def __init__(self, when: float, callback: Callback, args: Tuple[Any, ...],
                 queue: TimerQueue) -> None:
        self.when = when
        self._callback = callback
        self._args = args
        self.cancelled = False
        self._queue: Optional[TimerQueue] = queue

    def cancel(self) -> None:
        if self.cancelled:
            return
        self.cancelled = True
        # Drop references early: a cancelled timer may sit in the heap a while.
        self._callback = _noop
        self._args = ()
        if self._queue is not None:
            self._queue.note_cancelled()
            self._queue = None

    def fire(self) -> None:
        """Run the callback (the queue calls this once the timer is due)."""
        self.cancelled = True  # done: a later cancel() is a no-op
        self._queue = None
        self._callback(*self._args)

    def __lt__(self, other: Timer) -> bool:
        return self.when < other.when


def _noop(*_args: Any) -> None:
    return None


class TimerQueue:
    """Timers by due time.  Cancelled ones are skipped when they come up, and
    swept out when they are most of the heap, so connections that re-arm
    timers all the time cannot grow it without bound."""

    __slots__ = ("_cancelled", "heap")

    def __init__(self) -> None:
        self.heap: List[Timer] = []  # read by the loop for the next due time
        self._cancelled = 0

    def add(self, timer: Timer) -> None:
        heapq.heappush(self.heap, timer)

    def note_cancelled(self) -> None:
        self._cancelled += 1

    def run_due(self, now: float) -> None:
        heap = self.heap
        while heap and heap[0].when <= now:
            timer = heapq.heappop(heap)
            if timer.cancelled:
                self._cancelled -= 1
                continue
            try:
                timer.fire()
            except Exception:
                log.exception("unhandled error in timer callback")
        if self._cancelled > 512 and self._cancelled * 2 > len(heap):
            live = [t for t in heap if not t.cancelled]
            heapq.heapify(live)
            heap[:] = live
            self._cancelled = 0


class Reactor:
    """A single-threaded selector loop with timers and a thread-safe call queue."""

    def __init__(self) -> None:
        self.selector = selectors.DefaultSelector()
        self._ready: Deque[Tuple[Callback, Tuple[Any, ...]]] = collections.deque()
        # Filled by other threads (and signal handlers): deque.append and popleft
        # are atomic, so no lock is needed, and a signal handler cannot deadlock
        # on one.
        self._foreign: Deque[Tuple[Callback, Tuple[Any, ...]]] = collections.deque()
        self._timers = TimerQueue()
        self._stopping = False
        self._poked = False
        self.thread_id: Optional[int] = None  # of the thread in run(), while it runs
        # When the loop last woke from select() to run callbacks; 0.0 while it
        # waits in select().  A watchdog on another thread reads it to see a
        # callback that holds the loop (one clock read per round, none per
        # callback), if ``watched`` was set before run().
        self.busy_since = 0.0
        self.watched = False
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self.selector.register(self._wake_r, selectors.EVENT_READ, self._on_wakeup)

    # -- scheduling ---------------------------------------------------------

    def in_reactor_thread(self) -> bool:
        return threading.get_ident() == self.thread_id

    def call_soon(self, callback: Callback, *args: Any) -> None:
        """Run ``callback(*args)`` on the next loop iteration (reactor thread only)."""
        self._ready.append((callback, args))

    def call_soon_threadsafe(self, callback: Callback, *args: Any) -> None:
        """Run ``callback(*args)`` on the reactor thread; callable from any thread."""
        self._foreign.append((callback, args))
        # Coalesce pokes: one byte wakes the loop however many calls are queued.
        # The reactor clears the flag *before* draining, so nothing is missed.
        if not self._poked:
            self._poked = True
            try:
                self._wake_w.send(b"\0")
            except (BlockingIOError, InterruptedError):
                pass  # the pipe is full, so the loop is awake anyway
            except OSError:
                pass  # closed during shutdown

    def call_later(self, delay: float, callback: Callback, *args: Any) -> Timer:
        """Run ``callback(*args)`` after ``delay`` seconds (reactor thread only)."""
        return self.call_at(time.monotonic() + delay, callback, *args)

    def call_at(self, when: float, callback: Callback, *args: Any) -> Timer:
        """Run ``callback(*args)`` at monotonic time ``when`` (reactor thread only)."""
        timer = Timer(when, callback, args, self._timers)
        self._timers.add(timer)
        return timer

    # -- the loop -----------------------------------------------------------

    def stop(self) -> None:
        """Make :meth:`run` return after the current iteration; any thread."""
        self.call_soon_threadsafe(self._set_stopping)

    def _set_stopping(self) -> None:
        self._stopping = True

    def run(self) -> None:
        """Run until :meth:`stop`; the calling thread becomes the reactor thread."""
        self.thread_id = threading.get_ident()
        self._stopping = False
        select = self.selector.select
        ready = self._ready
        foreign = self._foreign
        timers = self._timers.heap
        run_due = self._timers.run_due
        monotonic = time.monotonic
        watched = self.watched
        try:
            while not self._stopping:
                if ready or foreign:
                    timeout: Optional[float] = 0.0
                elif timers:
                    timeout = max(0.0, timers[0].when - monotonic())
                else:
                    timeout = None
                if watched:
                    self.busy_since = 0.0
                    events = select(timeout)
                    self.busy_since = monotonic()
                else:
                    events = select(timeout)
                for key, mask in events:
                    try:
                        key.data(mask)
                    except Exception:
                        log.exception("unhandled error in I/O callback")
                if timers:
                    run_due(monotonic())
                if foreign:
                    self._poked = False
                    while foreign:
                        ready.append(foreign.popleft())
                # Run only what is queued now: callbacks queued by callbacks wait
                # for the next iteration, so I/O is never starved.
                for _ in range(len(ready)):
                    callback, args = ready.popleft()
                    try:
                        callback(*args)
                    except Exception:
                        log.exception("unhandled error in callback %r", callback)
        finally:
            self.thread_id = None
            self.busy_since = 0.0

    def _on_wakeup(self, _mask: int) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass
        # A thread can set the flag after the loop drained its call (it was
        # preempted between its check and its poke): left set, it would keep
        # every later caller from poking.  What is queued now is drained in this
        # same round, so clearing here loses nothing.
        self._poked = False

    def close(self) -> None:
        """Release the selector and the wake-up pair (after :meth:`run` returned)."""
        try:
            self.selector.unregister(self._wake_r)
        except (KeyError, ValueError):
            pass
        self._wake_r.close()
        self._wake_w.close()
        self.selector.close()


    def forget_in_child(self) -> None:
        """In a forked child: close our copies of the descriptors without
        changing the parent's loop (an epoll set is shared across fork, so
        unregistering here would unregister there too)."""
        self._wake_r.close()
        self._wake_w.close()
        self.selector.close()  # closes the descriptor only: no epoll_ctl


class BoundedHandoff:
    """Calls other threads hand the reactor, bounded by the bytes they carry.

    ``call_soon_threadsafe`` alone lets a producer thread queue work faster
    than the reactor runs it, without limit.  Here a thread waits while more
    than ``limit`` bytes it and others handed over are not yet handled, so
    producers are slowed to the reactor's pace.  On the reactor thread a call
    runs at once and never waits.  After :meth:`close` calls are dropped.
    """

    def __init__(self, reactor: Reactor, limit: int) -> None:
        self.reactor = reactor  # whose thread runs the calls
        self._limit = limit
        self._pending = 0
        self._waiting = 0
        self._closed = False
        # ``with`` on the lock itself: on a Condition it costs two Python calls,
        # twice per handed-over send.  The condition shares the lock, to wait.
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)

    def call(self, size: int, callback: Callback, *args: Any) -> None:
        """Run ``callback(*args)`` on the reactor; ``size`` is what it carries."""
        reactor = self.reactor
        if _get_ident() == reactor.thread_id:  # the reactor itself: no queue
            callback(*args)
            return
        if not size:
            # Nothing to bound (a handler's response, a close): the same queue
            # keeps it in order with the sized calls, without their lock.
            if not self._closed:
                reactor.call_soon_threadsafe(callback, *args)
            return
        with self._lock:
            # One call larger than the limit still goes, alone.
            while self._pending and self._pending + size > self._limit and not self._closed:
                self._waiting += 1
                self._cond.wait(1.0)
                self._waiting -= 1
            if self._closed:
                return
            self._pending += size
        reactor.call_soon_threadsafe(self._run, size, callback, args)

    def _run(self, size: int, callback: Callback, args: Tuple[Any, ...]) -> None:
        try:
            callback(*args)
        finally:
            with self._lock:
                self._pending -= size
                if self._waiting:
                    self._cond.notify_all()

    def close(self) -> None:
        """Wake every waiting thread and drop later calls (the reactor is done)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
