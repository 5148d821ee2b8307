"""The supervisor's building blocks on their own: how many workers, and the
shared connection counts that spread connections over them (the supervisor at
work, with real processes and signals, is tests/test_server_workers.py)."""

from __future__ import annotations

import os

import pytest

from wssync.scale.supervisor import BALANCE_WAIT, AcceptBalance, ConnectionCounts, worker_count


def test_worker_count() -> None:
    assert worker_count(3) == 3
    assert worker_count(0) == len(os.sched_getaffinity(0))
    with pytest.raises(ValueError):
        worker_count(-1)


def test_counts_are_shared_with_forked_workers() -> None:
    counts = ConnectionCounts(4)
    assert [counts.get(slot) for slot in range(4)] == [-1] * 4
    pid = os.fork()
    if pid == 0:
        counts.set(2, 1234)
        os._exit(0)
    os.waitpid(pid, 0)
    assert counts.get(2) == 1234
    assert counts.least_other(0) == 1234
    assert counts.least_other(2) is None  # the others are not accepting


def test_a_busier_worker_leaves_a_connection_to_the_other_once() -> None:
    counts = ConnectionCounts(2)
    busy, idle = AcceptBalance(counts, 0), AcceptBalance(counts, 1)
    assert idle.wait(0) == 0.0  # registers 0 connections
    assert busy.wait(1) == 0.0  # one more is fair
    assert busy.wait(5) == BALANCE_WAIT  # clearly busier: the other should take it
    assert busy.wait(5) == 0.0  # still there right after: nobody took it, so take it
    idle.withdraw()
    assert busy.wait(50) == 0.0  # the other no longer accepts


def test_alone_a_worker_always_accepts() -> None:
    balance = AcceptBalance(ConnectionCounts(2), 0)
    assert balance.wait(10_000) == 0.0
