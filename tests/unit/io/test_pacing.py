"""OutputGate on its own: real threads, no sockets.  The test plays the reactor
(pause, resume, written, close) and checks when a sending thread may go on."""

from __future__ import annotations

import threading
import time

import pytest
from helpers import in_thread

from wssync.io.pacing import OutputGate


class Expired(Exception):
    pass


def expired(timeout: float) -> Expired:
    return Expired(timeout)




def still_waiting(thread: threading.Thread, seconds: float = 0.2) -> bool:
    thread.join(seconds)
    return thread.is_alive()


def test_a_send_goes_at_once_below_the_mark_and_is_counted_until_written() -> None:
    gate = OutputGate(100)
    gate.enter(60, None, expired)
    assert gate.in_flight == 60
    gate.written(60)
    assert gate.in_flight == 0


def test_a_write_larger_than_the_mark_still_goes_alone() -> None:
    gate = OutputGate(100)
    gate.enter(1000, None, expired)  # nothing in flight: it goes
    thread, outcome = in_thread(lambda: gate.enter(1, None, expired))
    assert still_waiting(thread)  # the next waits for the reactor to take it
    gate.written(1000)
    thread.join(5)
    assert outcome == [None] and gate.in_flight == 1


def test_in_flight_bytes_over_the_mark_make_the_next_sender_wait() -> None:
    gate = OutputGate(100)
    gate.enter(60, None, expired)
    thread, outcome = in_thread(lambda: gate.enter(60, None, expired))
    assert still_waiting(thread)
    gate.written(60)  # the reactor wrote the first: the second fits now
    thread.join(5)
    assert outcome == [None]


def test_a_paused_connection_holds_every_sender_until_resume() -> None:
    gate = OutputGate(100)
    gate.pause()
    assert gate.paused
    threads = [in_thread(lambda: gate.enter(1, None, expired)) for _ in range(3)]
    assert all(still_waiting(t) for t, _ in threads)
    gate.resume()
    for thread, outcome in threads:
        thread.join(5)
        assert outcome == [None]
    assert not gate.paused


def test_close_wakes_a_waiting_sender_with_the_error_and_refuses_later_ones() -> None:
    gate = OutputGate(100)
    gate.pause()
    thread, outcome = in_thread(lambda: gate.enter(1, None, expired))
    assert still_waiting(thread)
    gate.close(lambda: ConnectionError("gone"))
    thread.join(5)
    assert isinstance(outcome[0], ConnectionError) and str(outcome[0]) == "gone"
    with pytest.raises(ConnectionError):
        gate.enter(1, None, expired)  # later sends fail at once, not after a wait
    assert gate.in_flight == 0  # nothing was counted for them


def test_a_timeout_raises_the_callers_error_and_counts_nothing() -> None:
    gate = OutputGate(100)
    gate.pause()
    started = time.monotonic()
    thread, outcome = in_thread(lambda: gate.enter(10, 0.2, expired))
    thread.join(10)  # ends at its deadline, not at some later look
    assert not thread.is_alive()
    assert time.monotonic() - started >= 0.2
    assert isinstance(outcome[0], Expired) and outcome[0].args == (0.2,)
    assert gate.in_flight == 0


def test_wait_writable_says_whether_the_output_drained() -> None:
    gate = OutputGate(100)
    assert gate.wait_writable(None)
    gate.pause()
    thread, outcome = in_thread(lambda: gate.wait_writable(time.monotonic() + 0.1))
    thread.join(10)
    assert outcome == [False]  # timed out, at its deadline
    thread, outcome = in_thread(lambda: gate.wait_writable(None))
    assert still_waiting(thread)
    gate.resume()
    thread.join(5)
    assert outcome == [True]
    gate.close(lambda: ConnectionError("gone"))
    assert not gate.wait_writable(None)  # closed: never writable, and no wait


def test_a_missed_wake_up_costs_at_most_the_recheck() -> None:
    # written() notifies only when a thread waits; a thread that checks just
    # before the count changes still sees it at its next look.
    gate = OutputGate(100)
    gate.enter(100, None, expired)
    waiter, outcome = in_thread(lambda: gate.enter(100, None, expired))
    assert still_waiting(waiter)
    gate._done += 100  # the count changes without a notify
    waiter.join(3)
    assert outcome == [None]
