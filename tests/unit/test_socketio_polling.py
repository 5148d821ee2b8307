"""The outbox's long-polling side: take what waits, park a poll, wake it with the
next packet, the end marker, and a poll whose time is up."""

from __future__ import annotations

from typing import Any, List

import pytest

pytest.importorskip("engineio")

from wssync.socketio_polling import BUSY, Outbox


def test_a_poll_takes_what_waits_up_to_the_end_marker() -> None:
    box = Outbox()
    for item in ("a", "b", None, "late"):
        box.put(item)
    assert box.take_or_park(lambda packets: None) == ["a", "b"]
    assert box.take_or_park(lambda packets: None) == []  # the end: engine.io's "closed"
    assert box.take_or_park(lambda packets: None) == ["late"]
    box.join()  # every packet taken counts as done: a closing socket does not hang


def test_a_parked_poll_is_answered_by_the_next_packet_only_once() -> None:
    box = Outbox()
    answers: List[Any] = []
    assert box.take_or_park(answers.append) is None
    assert box.take_or_park(lambda packets: None) is BUSY  # one poll at a time
    box.put_at_once("ping")  # (the reactor's put wakes it too)
    assert answers == [["ping"]]
    box.put("later")  # nobody waits: it stays for the next poll
    assert answers == [["ping"]]
    assert box.take_or_park(answers.append) == ["later"]


def test_a_poll_whose_time_is_up_is_taken_back_and_not_answered() -> None:
    box = Outbox()
    answers: List[Any] = []
    answer = answers.append
    assert box.take_or_park(answer) is None
    assert box.unpark(answer) and not box.unpark(answer)
    box.put("x")
    assert answers == []
    assert box.take_or_park(answer) == ["x"]
