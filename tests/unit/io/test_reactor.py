"""The reactor on its own: timers, cross-thread hand-off, stop."""

from __future__ import annotations

import threading
import time
from typing import Any, List, Optional

from wssync.io.reactor import Reactor, Timer, TimerQueue


def run_in_thread(reactor: Reactor) -> threading.Thread:
    thread = threading.Thread(target=reactor.run, name="wssync-test-reactor")
    thread.start()
    return thread


def test_timers_fire_in_order_and_cancel() -> None:
    reactor = Reactor()
    fired: List[str] = []
    reactor.call_later(0.05, fired.append, "b")
    reactor.call_later(0.01, fired.append, "a")
    cancelled = reactor.call_later(0.02, fired.append, "never")
    cancelled.cancel()
    cancelled.cancel()  # idempotent
    reactor.call_later(0.08, reactor.stop)
    reactor.run()
    reactor.close()
    assert fired == ["a", "b"]


def test_cancelled_timers_do_not_pile_up() -> None:
    queue = TimerQueue()
    for _ in range(5000):
        timer = Timer(time.monotonic() + 3600, lambda: None, (), queue)
        queue.add(timer)
        timer.cancel()
    live = Timer(time.monotonic() + 3600, lambda: None, (), queue)
    queue.add(live)
    queue.run_due(time.monotonic())
    assert queue.heap == [live]  # swept: only the live timer is left


def test_a_due_timer_fires_once_and_leaves_the_queue() -> None:
    queue = TimerQueue()
    fired: List[int] = []
    timer = Timer(0.0, fired.append, (1,), queue)
    queue.add(timer)
    queue.run_due(time.monotonic())
    timer.cancel()  # too late: a no-op
    queue.run_due(time.monotonic())
    assert fired == [1] and queue.heap == []


def test_call_soon_threadsafe_from_many_threads_keeps_per_thread_order() -> None:
    reactor = Reactor()
    thread = run_in_thread(reactor)
    seen: List[tuple] = []
    done = threading.Event()
    expected = 4 * 2000

    def record(item: tuple) -> None:
        assert reactor.in_reactor_thread()
        seen.append(item)
        if len(seen) == expected:
            done.set()

    def producer(n: int) -> None:
        for i in range(2000):
            reactor.call_soon_threadsafe(record, (n, i))

    producers = [threading.Thread(target=producer, args=(n,)) for n in range(4)]
    for p in producers:
        p.start()
    for p in producers:
        p.join()
    assert done.wait(5)
    reactor.stop()
    thread.join(5)
    reactor.close()
    for n in range(4):
        assert [i for m, i in seen if m == n] == list(range(2000))


def test_wakeup_interrupts_a_long_select() -> None:
    reactor = Reactor()
    real_select = reactor.selector.select
    blocking = threading.Event()

    def select(timeout: Optional[float] = None) -> Any:
        if timeout is None:
            blocking.set()
        return real_select(timeout)

    reactor.selector.select = select  # type: ignore[method-assign]
    thread = run_in_thread(reactor)
    assert blocking.wait(10)  # the loop sleeps in select() with no timeout
    ran = threading.Event()
    reactor.call_soon_threadsafe(ran.set)
    # Nothing else could end that select(): only the wake-up can run the callback.
    assert ran.wait(10)
    reactor.stop()
    thread.join(5)
    assert not thread.is_alive()
    reactor.close()


def test_a_failing_callback_does_not_stop_the_loop() -> None:
    reactor = Reactor()
    ran: List[int] = []

    def boom() -> None:
        raise RuntimeError("callback failure")

    reactor.call_soon(boom)
    reactor.call_later(0.01, boom)
    reactor.call_later(0.02, ran.append, 1)
    reactor.call_later(0.03, reactor.stop)
    reactor.run()
    reactor.close()
    assert ran == [1]


def test_a_poke_that_lands_after_the_drain_does_not_silence_later_calls() -> None:
    """A thread preempted between its check and its poke: the loop drained its
    call, then the poke arrived.  Later callers must still wake the loop."""
    reactor = Reactor()
    reactor._poked = True  # the late poke: flag set, byte sent, nothing queued
    reactor._wake_w.send(b"\0")
    thread = threading.Thread(target=reactor.run, daemon=True)
    thread.start()
    time.sleep(0.2)  # the loop takes the stray byte and waits with no timer
    done = threading.Event()
    reactor.call_soon_threadsafe(done.set)
    try:
        assert done.wait(5), "the call waited for an unrelated wake-up"
    finally:
        reactor.stop()
        thread.join(5)
        reactor.close()
