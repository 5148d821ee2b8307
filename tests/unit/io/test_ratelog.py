"""RateLimitedLog on a real Reactor run from a thread of the test: after a quiet
spell the first ``burst`` events are logged in full, the rest of the interval is
one summary line with the count and where they came from, written by a reactor
timer when the interval ends (or by the next event when no reactor times it);
a flood that goes on gets one line per interval; threads share one safely."""

from __future__ import annotations

import logging
import re
import threading
import time
from typing import Callable, Iterator, List

import pytest
from helpers import wait_until

from wssync.io.ratelog import RateLimitedLog, peer_address
from wssync.io.reactor import Reactor

LOGGER = "wssync.test_ratelog"


@pytest.fixture
def reactor() -> Iterator[Reactor]:
    loop = Reactor()
    thread = threading.Thread(target=loop.run, name="test-reactor", daemon=True)
    thread.start()
    while loop.thread_id is None:
        time.sleep(0.001)
    yield loop
    loop.stop()
    thread.join(5)
    loop.close()


@pytest.fixture
def said(caplog: pytest.LogCaptureFixture) -> Callable[[], List[str]]:
    """What was logged so far."""
    caplog.set_level(logging.INFO, logger=LOGGER)
    return lambda: [r.getMessage() for r in caplog.records if r.name == LOGGER]


def on_reactor(reactor: Reactor, fn, *args) -> None:  # type: ignore[no-untyped-def]
    """Run ``fn(*args)`` on the reactor thread and wait for it."""
    done = threading.Event()

    def call() -> None:
        fn(*args)
        done.set()

    reactor.call_soon_threadsafe(call)
    assert done.wait(5)


def flood(limited: RateLimitedLog, reactor: Reactor, peers: List[str]) -> None:
    for n, peer in enumerate(peers):
        limited.event(reactor, (peer, 1000 + n), "%s: bad thing %d", peer, n)


def test_a_burst_in_full_then_one_summary_when_the_interval_ends(
        reactor: Reactor, said: Callable[[], List[str]]) -> None:
    limited = RateLimitedLog(logging.getLogger(LOGGER), logging.INFO, "bad things",
                             interval=0.3, burst=2)
    on_reactor(reactor, flood, limited, reactor, ["203.0.113.7"] * 500)
    assert said() == ["203.0.113.7: bad thing 0", "203.0.113.7: bad thing 1"]
    assert wait_until(lambda: len(said()) == 3, timeout=5)
    assert re.fullmatch(r"bad things: 498 more in the last 0 s, all from 203\.0\.113\.7",
                        said()[2]), said()[2]
    time.sleep(0.4)
    assert len(said()) == 3  # nothing more came: nothing more is said


def test_the_summary_names_the_busiest_address_and_counts_the_others(
        reactor: Reactor, said: Callable[[], List[str]]) -> None:
    limited = RateLimitedLog(logging.getLogger(LOGGER), logging.INFO, "bad things",
                             interval=0.2, burst=1)
    peers = ["192.0.2.1"] + ["203.0.113.7"] * 50 + [f"198.51.100.{n}" for n in range(38)]
    on_reactor(reactor, flood, limited, reactor, peers)
    assert wait_until(lambda: len(said()) == 2, timeout=5)
    assert said()[1].endswith(": 88 more in the last 0 s, "
                             "50 from 203.0.113.7 and 38 from 38 other addresses"), said()[1]


def test_a_flood_that_goes_on_gets_one_line_per_interval(
        reactor: Reactor, said: Callable[[], List[str]]) -> None:
    """After a summary the burst is not granted again until a quiet interval."""
    limited = RateLimitedLog(logging.getLogger(LOGGER), logging.INFO, "bad things",
                             interval=0.3, burst=3)
    deadline = time.monotonic() + 1.6  # five intervals and some
    while time.monotonic() < deadline:
        on_reactor(reactor, flood, limited, reactor, ["203.0.113.7"] * 10)
        time.sleep(0.02)
    assert wait_until(lambda: said()[-1].startswith("bad things:"), timeout=5)
    summaries = [line for line in said() if line.startswith("bad things:")]
    assert len(said()) == 3 + len(summaries)  # the burst, then summaries only
    assert 4 <= len(summaries) <= 7, said()


def test_without_a_reactor_the_next_event_writes_the_summary(
        said: Callable[[], List[str]]) -> None:
    limited = RateLimitedLog(logging.getLogger(LOGGER), logging.INFO, "bad things",
                             interval=0.1, burst=1)
    for n in range(3):
        limited.event(None, ("192.0.2.1", n), "first %d", n)
    assert said() == ["first 0"]
    time.sleep(0.15)
    limited.event(None, ("192.0.2.1", 9), "later")
    assert said()[1].startswith("bad things: 2 more in the last ")
    assert len(said()) == 2  # "later" counts in the new interval: the flood went on


def test_threads_sharing_one_lose_no_event(reactor: Reactor, said: Callable[[], List[str]]) -> None:
    limited = RateLimitedLog(logging.getLogger(LOGGER), logging.INFO, "bad things",
                             interval=0.5, burst=5)
    threads = [threading.Thread(target=flood, args=(limited, None, ["192.0.2.1"] * 1000))
               for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    time.sleep(0.6)
    limited.event(None, "x", "after")
    total = 5 + int(re.search(r": (\d+) more", said()[5]).group(1))  # type: ignore[union-attr]
    assert total == 4000


def test_nothing_is_counted_when_the_level_is_off(said: Callable[[], List[str]]) -> None:
    limited = RateLimitedLog(logging.getLogger(LOGGER), logging.DEBUG, "bad things")
    limited.event(None, "x", "never")
    assert said() == []


def test_peer_address_drops_the_port() -> None:
    assert peer_address(("203.0.113.7", 5555)) == "203.0.113.7"
    assert peer_address(("::1", 5555, 0, 0)) == "::1"
    assert peer_address("") == "a Unix socket"
