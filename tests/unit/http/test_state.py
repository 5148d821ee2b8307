"""Unit tests for ``wssync.http.state.ServerState``: events in, states and decisions out.

No sockets and no connection: the state is driven through its methods and
``fire`` alone.
"""

from __future__ import annotations

from typing import List, Tuple

import pytest

from wssync.http import state as st
from wssync.http.state import HttpStateError, ServerState

# A way to reach each state from IDLE, as events.
PATHS = {
    st.IDLE: [],
    st.HEAD: [st.HEAD_PART],
    st.BODY: [st.BODY_PART],
    st.HANDLING: [st.REQUEST],
    st.SENDING: [st.REQUEST, st.RESPONSE],
    st.DRAINING: [st.REQUEST, st.RESPONSE, st.DRAIN],
    st.MUST_CLOSE: [st.CLOSE],
    st.LINGERING: [st.LINGER],
    st.SWITCHED: [st.REQUEST, st.UPGRADE],
    st.CLOSED: [st.LOST],
}


def in_state(state: int) -> ServerState:
    server = ServerState()
    for event in PATHS[state]:
        server.fire(event)
    assert server.state == state
    return server


ALL: List[Tuple[int, int]] = [(state, event) for state in range(len(st.STATE_NAMES))
                              for event in range(len(st.EVENT_NAMES))]


@pytest.mark.parametrize("state, event", sorted(st.TRANSITIONS),
                         ids=lambda v: str(v))
def test_every_transition_in_the_table(state: int, event: int) -> None:
    server = in_state(state)
    assert server.fire(event) == st.TRANSITIONS[state, event]
    assert server.state == st.TRANSITIONS[state, event]


@pytest.mark.parametrize("state, event", [pair for pair in ALL if pair not in st.TRANSITIONS],
                         ids=lambda v: str(v))
def test_events_outside_the_table_raise_and_change_nothing(state: int, event: int) -> None:
    server = in_state(state)
    with pytest.raises(HttpStateError, match=st.EVENT_NAMES[event]):
        server.fire(event)
    assert server.state == state


def test_lost_ends_every_state() -> None:
    for state in PATHS:
        assert in_state(state).fire(st.LOST) == st.CLOSED


def test_closing_a_connection_that_is_ending_changes_nothing() -> None:
    # A stop can come while the last answer or a refusal is going out.
    for state in (st.MUST_CLOSE, st.LINGERING, st.CLOSED):
        assert in_state(state).fire(st.CLOSE) == state
    with pytest.raises(HttpStateError):  # another protocol owns the connection
        in_state(st.SWITCHED).fire(st.CLOSE)


def test_a_keep_alive_cycle_returns_to_idle() -> None:
    server = ServerState()
    assert server.waiting(10) == st.HEAD_DEADLINE
    assert server.state == st.HEAD
    server.request(False, False)
    server.respond(True)
    assert server.sent(stopping=False) == st.IDLE
    assert server.waiting(0) == st.IDLE_DEADLINE
    assert server.state == st.IDLE


def test_empty_lines_before_a_request_are_idle_again() -> None:
    server = ServerState()
    server.waiting(1)  # a CR
    assert server.waiting(0) == st.IDLE_DEADLINE  # its LF: the empty line is dropped
    assert server.state == st.IDLE


def test_waiting_while_handling_raises() -> None:
    server = ServerState()
    server.request(False, False)
    with pytest.raises(HttpStateError):
        server.waiting(0)
    with pytest.raises(HttpStateError):
        server.request(False, False)


@pytest.mark.parametrize("keep_alive, stopping", [(False, False), (True, True)])
def test_an_answer_that_closes(keep_alive: bool, stopping: bool) -> None:
    server = ServerState()
    server.request(False, False)
    server.respond(keep_alive)
    assert server.sent(stopping) == st.MUST_CLOSE


def test_100_continue_when_the_server_waits_for_the_body_once() -> None:
    server = ServerState()
    assert server.body_awaited(True)
    assert server.state == st.BODY
    assert not server.body_awaited(True)  # once per request
    server.request(False, False)
    server.respond(True)
    server.sent(False)
    assert server.body_awaited(True)  # the next request asks again


@pytest.mark.parametrize("read", [True, False], ids=["read", "drained"])
def test_100_continue_for_a_collected_body_after_a_streamed_one(read: bool) -> None:
    server = ServerState()
    server.request(read, True)
    if read:  # asked for with 100 Continue and read to its end
        assert server.reading()
        server.body_ended()
    else:  # answered before it ended (no 100 Continue after that), then drained
        assert not server.answer_closes(10, 1024)
    server.respond(True)
    if server.sent(False) == st.DRAINING:
        server.body_ended()
    assert server.state == st.IDLE
    assert server.body_awaited(True)  # the next request's own 100 Continue
    assert not server.body_awaited(True)


def test_no_100_continue_without_expect() -> None:
    assert not ServerState().body_awaited(False)


def test_streamed_body_100_continue_only_when_the_handler_reads() -> None:
    server = ServerState()
    server.request(True, True)
    assert server.reading()
    assert not server.reading()  # once


def test_streamed_body_without_expect_gets_no_100_continue() -> None:
    server = ServerState()
    server.request(False, True)
    assert not server.reading()


def test_unread_small_body_is_drained_then_the_connection_goes_on() -> None:
    server = ServerState()
    server.request(False, True)
    assert not server.answer_closes(10, 1024)
    server.respond(True)
    assert server.sent(False) == st.DRAINING
    assert server.body_ended() == st.IDLE


@pytest.mark.parametrize("unread, expect", [
    (-1, False),  # chunked: the rest's size is unknown
    (2048, False),  # more than is worth reading
    (10, True),  # never asked for: the next bytes may be body or request
])
def test_unread_body_that_cannot_be_drained_closes(unread: int, expect: bool) -> None:
    server = ServerState()
    server.request(expect, True)
    assert server.answer_closes(unread, 1024)
    server.respond(False)
    assert server.sent(False) == st.LINGERING


def test_asked_for_body_is_drained() -> None:
    server = ServerState()
    server.request(True, True)
    assert server.reading()
    assert not server.answer_closes(10, 1024)
    assert not server.reading()  # no 100 Continue after a final answer


def test_body_ended_before_the_answer_keeps_the_connection() -> None:
    server = ServerState()
    server.request(False, True)
    assert server.body_ended() == st.HANDLING
    server.respond(True)
    assert server.sent(False) == st.IDLE


def test_stopping_while_streaming_lingers() -> None:
    server = ServerState()
    server.request(False, True)
    server.respond(True)
    assert server.sent(stopping=True) == st.LINGERING


@pytest.mark.parametrize("keep_alive, stopping, streaming, after", [
    (True, False, False, st.IDLE),
    (False, False, False, st.MUST_CLOSE),
    (True, True, False, st.MUST_CLOSE),
    (True, False, True, st.DRAINING),
    (False, False, True, st.LINGERING),
])
def test_a_whole_answer_is_respond_then_sent_in_one_step(keep_alive: bool, stopping: bool,
                                                         streaming: bool, after: int) -> None:
    one, two = ServerState(), ServerState()
    for server in (one, two):
        server.request(False, streaming)
    two.respond(keep_alive)
    assert one.answered(keep_alive, stopping) == two.sent(stopping) == after
    assert (one.state, one.keep_alive) == (two.state, two.keep_alive)


def test_a_whole_answer_outside_handling_raises() -> None:
    server = ServerState()
    with pytest.raises(HttpStateError):
        server.answered(True, False)
    assert server.state == st.IDLE
