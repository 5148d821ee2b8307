"""ReactorWatchdog on a real Reactor run from a thread of the test: a callback that
sleeps is named (the application's function, not the reactor's), once per episode
and once a minute per function; a reactor that only waits in select is never named."""

from __future__ import annotations

import logging
import sys
import threading
import time
from typing import Iterator, List, Optional

import pytest

from wssync.io.lanes import INLINE
from wssync.io.reactor import Reactor
from wssync.io.watchdog import ReactorWatchdog, culprit


@pytest.fixture
def reactor() -> Iterator[Reactor]:
    loop = Reactor()
    loop.watched = True  # as ReactorWatchdog.start() says, before the loop runs
    thread = threading.Thread(target=loop.run, name="test-reactor", daemon=True)
    thread.start()
    while loop.thread_id is None:
        time.sleep(0.001)
    yield loop
    loop.stop()
    thread.join(5)
    loop.close()


def application_callback(seconds: float, started: threading.Event) -> None:
    started.set()
    time.sleep(seconds)


def held(watchdog: ReactorWatchdog, reactor: Reactor, seconds: float) -> List[str]:
    """Run a callback that holds the reactor for ``seconds``; the warnings the
    watchdog gave, looking every 20 ms meanwhile."""
    started = threading.Event()
    reactor.call_soon_threadsafe(application_callback, seconds, started)
    assert started.wait(5)
    found: List[str] = []
    deadline = time.monotonic() + seconds + 0.2
    while time.monotonic() < deadline:
        message: Optional[str] = watchdog.check()
        if message is not None:
            found.append(message)
        time.sleep(0.02)
    return found


def test_a_callback_that_blocks_is_named_once_with_the_fix(reactor: Reactor, caplog) -> None:
    watchdog = ReactorWatchdog(reactor, 0.1, "Use threads.")
    with caplog.at_level(logging.WARNING, logger="wssync.server"):
        found = held(watchdog, reactor, 0.4)
    assert len(found) == 1  # one episode, one warning, however often it looked
    # The function the reactor called, not the thread's start-up frames before it.
    assert found[0].startswith("test_watchdog.application_callback (")
    assert "has held the reactor for" in found[0] and found[0].endswith("Use threads.")
    assert [r.getMessage() for r in caplog.records] == found


def test_the_same_function_is_named_at_most_once_a_minute(reactor: Reactor) -> None:
    watchdog = ReactorWatchdog(reactor, 0.1, "")
    assert len(held(watchdog, reactor, 0.3)) == 1
    assert held(watchdog, reactor, 0.3) == []  # a second episode, the same function


def test_a_short_callback_and_an_idle_reactor_are_never_named(reactor: Reactor) -> None:
    watchdog = ReactorWatchdog(reactor, 0.3, "")
    assert held(watchdog, reactor, 0.05) == []
    time.sleep(0.5)  # waiting in select is not holding the reactor
    assert watchdog.check() is None


def test_the_watchdog_thread_starts_and_stops(reactor: Reactor) -> None:
    watchdog = ReactorWatchdog(reactor, 0.1, "")
    watchdog.start()
    assert [t for t in threading.enumerate() if t.name == "wssync-watchdog"]
    watchdog.stop()
    assert not [t for t in threading.enumerate() if t.name == "wssync-watchdog"]


def test_culprit_names_the_first_frame_past_the_package_and_where_it_is_now() -> None:
    found: List[tuple[str, str]] = []

    def deeper() -> None:
        found.append(culprit(sys._getframe()))

    def handler() -> None:
        deeper()

    # A frame of the package calls the handler (as the bridge would), under this
    # test's own outer frames (as the thread's start-up would be).
    INLINE.submit(handler)
    called, now_at = found[0]
    assert called.startswith("test_watchdog.")
    assert ".handler (" in called and "deeper" not in called
    assert ".deeper (" in now_at
    assert culprit(None) == ("an unknown callback", "?")
