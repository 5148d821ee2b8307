"""Lanes and the thread pool: per-lane order, parallel lanes."""

from __future__ import annotations

import random
import threading
import time
from typing import Dict, List

from wssync.io.lanes import INLINE, Lane, OwnThreads, ThreadPool


def test_inline_lane_runs_at_once() -> None:
    out: List[int] = []
    INLINE.submit(out.append, 1)
    Lane().submit(out.append, 2)
    assert out == [1, 2]
    assert not INLINE.tasks


def test_pool_counts_tasks_until_they_finish() -> None:
    pool = ThreadPool(1)
    lane = pool.lane()
    release = threading.Event()
    lane.submit(release.wait, 10)
    lane.submit(lambda: None)
    assert pool.queued == 2  # one running, one waiting
    release.set()
    deadline = time.monotonic() + 10
    while pool.queued and time.monotonic() < deadline:
        time.sleep(0.01)
    assert pool.queued == 0
    assert not lane.scheduled
    pool.shutdown()


def test_pool_keeps_each_lane_in_order() -> None:
    pool = ThreadPool(4)
    results: Dict[int, List[int]] = {n: [] for n in range(8)}
    lanes = [pool.lane() for _ in range(8)]
    done = threading.Semaphore(0)

    def task(n: int, i: int) -> None:
        time.sleep(random.random() / 2000)
        results[n].append(i)
        done.release()

    for i in range(100):
        for n, lane in enumerate(lanes):
            lane.submit(task, n, i)
    for _ in range(800):
        assert done.acquire(timeout=10)
    pool.shutdown()
    for n in range(8):
        assert results[n] == list(range(100))


def test_a_blocked_lane_does_not_block_others() -> None:
    pool = ThreadPool(2)
    release = threading.Event()
    ran = threading.Event()
    pool.lane().submit(release.wait, 30)
    pool.lane().submit(ran.set)
    try:
        assert ran.wait(10)  # while the first lane still blocks
    finally:
        release.set()
    pool.shutdown()


def test_a_failing_task_does_not_kill_the_worker() -> None:
    pool = ThreadPool(1)
    lane = pool.lane()
    ran = threading.Event()
    lane.submit(lambda: 1 / 0)
    lane.submit(ran.set)
    assert ran.wait(10)
    pool.shutdown()


def test_own_threads_reserve_up_to_the_limit_and_free_a_place_when_done() -> None:
    threads = OwnThreads(2, name="wssync-test-own")
    assert threads.reserve() and threads.reserve()
    assert not threads.reserve()  # full: the caller refuses the work
    threads.release()  # a reservation given back unused
    release = threading.Event()
    ran = threading.Event()

    def work() -> None:
        ran.set()
        release.wait(30)

    threads.start(work)  # in the place reserved first
    assert ran.wait(10)
    assert threads.count == 1 and threads.reserve() and not threads.reserve()
    threads.release()
    assert not threads.wait(0.01)  # work still runs
    release.set()
    assert threads.wait(10) and threads.count == 0
