"""The server side of one HTTP/1.1 connection as a state machine, on events only (Sans-I/O).

:class:`ServerState` is where a connection's request cycle stands: waiting for
a request (idle, a head arriving, a body arriving), the request with its
handler, the answer going out, the rest of an unread body being drained, or
the end (close, linger, switched to another protocol).  Every change goes
through one table, :data:`TRANSITIONS`; an event the table does not know for
the current state raises :class:`HttpStateError`.  It also decides what
depends on the cycle: whether the connection stays open after an answer,
whether ``100 Continue`` is due, and whether an unread body is drained or the
connection lingers.  It reads no socket, writes nothing and keeps no timer:
:class:`~wssync.http.connection.HttpConnection` does that, and arms the
deadline of what it waits for (:meth:`ServerState.waiting` names the idle or
the head deadline; a body being collected has the body deadline).

States and events are plain ints: they are compared and hashed per request,
and an enum member's hash is a Python-level call.
"""

from __future__ import annotations

from typing import Dict, Tuple

# -- states -----------------------------------------------------------------------------
IDLE = 0  # between requests, nothing of the next one buffered (keepalive_timeout)
HEAD = 1  # part of a request head has arrived (header_timeout)
BODY = 2  # a head is in and its body is being collected (body_timeout)
HANDLING = 3  # the handler has the request and has not answered (no deadline)
SENDING = 4  # the answer is going out
DRAINING = 5  # the answer is out; the unread rest of the body is read and dropped
MUST_CLOSE = 6  # whatever is written goes out, then the connection closes
LINGERING = 7  # closing with input unread: close after the answer, dropping input
SWITCHED = 8  # a 101 went out: another protocol owns the connection
CLOSED = 9  # the transport is gone

STATE_NAMES = ("IDLE", "HEAD", "BODY", "HANDLING", "SENDING", "DRAINING", "MUST_CLOSE",
               "LINGERING", "SWITCHED", "CLOSED")

# -- events -----------------------------------------------------------------------------
WAIT = 0  # nothing of a request is buffered
HEAD_PART = 1  # bytes of a head are buffered, not all of it
BODY_PART = 2  # a complete head waits for its body
REQUEST = 3  # a request goes to its handler (its body whole, or streamed to it)
RESPONSE = 4  # the answer's head is written
KEEP = 5  # the answer is out and the connection is reused
DRAIN = 6  # the answer is out, the body has not ended: drop its rest, then reuse
CLOSE = 7  # close once what is written has gone (an answer, an error, a timeout)
LINGER = 8  # like CLOSE, but the client may still be sending: read and drop first
BODY_END = 9  # the streamed body has ended
UPGRADE = 10  # the 101 is out
LOST = 11  # the transport is gone

EVENT_NAMES = ("WAIT", "HEAD_PART", "BODY_PART", "REQUEST", "RESPONSE", "KEEP", "DRAIN",
               "CLOSE", "LINGER", "BODY_END", "UPGRADE", "LOST")

# -- deadlines (0: none runs, a request is in flight) -------------------------------------
IDLE_DEADLINE, HEAD_DEADLINE, BODY_DEADLINE = 1, 2, 3

# The one table: (state, event) -> next state.
TRANSITIONS: Dict[Tuple[int, int], int] = {
    (IDLE, WAIT): IDLE,
    (IDLE, HEAD_PART): HEAD,
    (IDLE, BODY_PART): BODY,
    (IDLE, REQUEST): HANDLING,
    (IDLE, CLOSE): MUST_CLOSE,  # idle timeout, stop, end of input
    (IDLE, LINGER): LINGERING,  # a refused head (413): its body may follow
    (HEAD, HEAD_PART): HEAD,  # bytes trickling in do not restart the head's deadline
    (HEAD, WAIT): IDLE,  # what had arrived was empty lines before a request (a CR, then LF)
    (HEAD, BODY_PART): BODY,
    (HEAD, REQUEST): HANDLING,
    (HEAD, CLOSE): MUST_CLOSE,  # malformed or late (400, 408, ...)
    (HEAD, LINGER): LINGERING,
    (BODY, BODY_PART): BODY,
    (BODY, REQUEST): HANDLING,
    (BODY, CLOSE): MUST_CLOSE,
    (BODY, LINGER): LINGERING,
    (HANDLING, RESPONSE): SENDING,
    (HANDLING, BODY_END): HANDLING,  # a streamed body ended before the answer
    (HANDLING, UPGRADE): SWITCHED,
    (HANDLING, CLOSE): MUST_CLOSE,  # the answer could not be framed (500), or failed
    (SENDING, BODY_END): SENDING,
    (SENDING, KEEP): IDLE,
    (SENDING, DRAIN): DRAINING,
    (SENDING, CLOSE): MUST_CLOSE,
    (SENDING, LINGER): LINGERING,
    (DRAINING, BODY_END): IDLE,
    (DRAINING, CLOSE): MUST_CLOSE,  # the drained body was malformed or late
    # Closing a connection that is closing already changes nothing (as a second
    # transport.close() does): a stop can come while a refusal or the last
    # answer is still going out.
    (MUST_CLOSE, CLOSE): MUST_CLOSE,
    (LINGERING, CLOSE): LINGERING,
    (CLOSED, CLOSE): CLOSED,
}
# Whatever the state, a lost transport ends it.
TRANSITIONS.update({(state, LOST): CLOSED for state in range(len(STATE_NAMES))})

# The same table by event, for the events of every request: a look-up by the
# state alone builds no key.
_ON_WAIT = {state: new for (state, event), new in TRANSITIONS.items() if event == WAIT}
_ON_HEAD_PART = {state: new for (state, event), new in TRANSITIONS.items() if event == HEAD_PART}
_ON_REQUEST = {state: new for (state, event), new in TRANSITIONS.items() if event == REQUEST}
_ON_RESPONSE = {state: new for (state, event), new in TRANSITIONS.items() if event == RESPONSE}
_ON_KEEP = {state: new for (state, event), new in TRANSITIONS.items() if event == KEEP}


class HttpStateError(Exception):
    """An event that the connection's state does not allow (a bug in the caller)."""


class ServerState:
    """Where one connection's request cycle stands, and what follows from it."""

    __slots__ = ("continue_sent", "expect_continue", "keep_alive", "state", "streaming")

    def __init__(self) -> None:
        self.state = IDLE
        self.keep_alive = True  # the answer going out leaves the connection open
        self.expect_continue = False  # the request in this cycle asked for 100-continue
        self.continue_sent = False  # ... and it was answered (or a final answer started)
        self.streaming = False  # the request's body goes to its handler as it arrives

    def fire(self, event: int) -> int:
        """Move on by ``event``; the new state."""
        state = TRANSITIONS.get((self.state, event))
        if state is None:
            raise HttpStateError(
                f"{EVENT_NAMES[event]} is not allowed in {STATE_NAMES[self.state]}")
        self.state = state
        return state

    # -- waiting for a request ------------------------------------------------------------

    # The methods called for every request look the table up themselves: a
    # nested call to fire() would cost more than the look-up.

    def waiting(self, buffered: int) -> int:
        """No complete request yet, ``buffered`` bytes of a head: the deadline
        that applies now."""
        state = (_ON_HEAD_PART if buffered else _ON_WAIT).get(self.state)
        if state is None:
            self.fire(HEAD_PART if buffered else WAIT)  # raises
        self.state = state  # type: ignore[assignment]
        return HEAD_DEADLINE if buffered else IDLE_DEADLINE

    def body_awaited(self, expect_continue: bool) -> bool:
        """A complete head waits for its body: True when ``100 Continue`` is
        due now (the server waits for a body the client holds back until it is
        asked for); the body deadline applies."""
        head = self.state != BODY
        self.fire(BODY_PART)
        if head:
            # A new head: a 100 Continue sent to an earlier request whose body
            # streamed is not this one's.  Reset here, not on the way back to
            # IDLE, so that only requests with a body pay for it.
            self.continue_sent = False
        if expect_continue and not self.continue_sent:
            self.continue_sent = True
            return True
        return False

    def request(self, expect_continue: bool, streaming: bool) -> None:
        """A request goes to its handler; its body is whole unless ``streaming``."""
        state = _ON_REQUEST.get(self.state)
        if state is None:
            self.fire(REQUEST)  # raises
        self.state = state  # type: ignore[assignment]
        self.expect_continue = expect_continue
        self.streaming = streaming
        self.continue_sent = False

    def reading(self) -> bool:
        """The handler reads its streamed body: True when ``100 Continue`` is due
        (only now: a handler that answers without reading spares the client
        from sending the body at all)."""
        if self.expect_continue and not self.continue_sent and self.streaming:
            self.continue_sent = True
            return True
        return False

    def body_ended(self) -> int:
        """The streamed body has ended."""
        self.streaming = False
        return self.fire(BODY_END)

    # -- answering ------------------------------------------------------------------------

    def answer_closes(self, unread: int, max_unread: int) -> bool:
        """An answer starts while the streamed body has not ended (``unread``
        bytes left, -1 when unknown): whether it must close the connection.

        It stays open only if that rest is known and small enough to read and
        drop, and the client was asked for it: without our 100 Continue the
        next bytes may be the body or the next request.
        """
        close = (self.expect_continue and not self.continue_sent) \
            or unread < 0 or unread > max_unread
        self.continue_sent = True  # no 100 Continue after a final answer
        return close

    def respond(self, keep_alive: bool) -> None:
        """The answer's head is written; ``keep_alive`` as its framing decided."""
        state = _ON_RESPONSE.get(self.state)
        if state is None:
            self.fire(RESPONSE)  # raises
        self.state = state  # type: ignore[assignment]
        self.keep_alive = keep_alive

    def answered(self, keep_alive: bool, stopping: bool) -> int:
        """A whole answer has been written at once (head and body):
        :meth:`respond` then :meth:`sent`; the state after."""
        state = _ON_RESPONSE.get(self.state)
        if state is None:
            self.fire(RESPONSE)  # raises
        self.keep_alive = keep_alive
        if keep_alive and not stopping and not self.streaming:
            state = _ON_KEEP[state]  # type: ignore[index]
            self.state = state
            return state
        self.state = state  # type: ignore[assignment]
        return self.sent(stopping)

    def sent(self, stopping: bool) -> int:
        """The answer is out: reuse the connection, drain the body's rest, or close."""
        if self.keep_alive and not stopping and not self.streaming:
            state = _ON_KEEP.get(self.state)
            if state is not None:
                self.state = state
                return state
        if not self.keep_alive or stopping:
            event = LINGER if self.streaming else CLOSE
        else:
            event = DRAIN if self.streaming else KEEP
        state = TRANSITIONS.get((self.state, event))
        if state is None:
            return self.fire(event)  # raises
        self.state = state
        return state
