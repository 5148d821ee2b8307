"""The RFC 6455 connection state machine on plain bytes (Sans-I/O).

Bytes in (:meth:`WebSocketProtocol.feed`, then :meth:`~WebSocketProtocol.next_event`,
or both at once with :meth:`~WebSocketProtocol.receive_data`) give events out: whole
messages, pings, pongs, the peer's close, or a protocol failure.  Output has
one channel: every ``send_*`` method returns the bytes to write, pongs
included (the caller answers a :class:`Ping` event with :meth:`send_pong`).
The connection's :class:`State` changes in one place, :meth:`_enter`.  Used by
the server's ``WebSocketConnection`` and by the client; it never touches a
socket, a timer or a thread.
"""

from __future__ import annotations

import codecs
import os
from enum import IntEnum
from typing import Dict, List, Optional, Union

from ..config import default
from ..errors import ProtocolError
from .deflate import PerMessageDeflate
from .frames import (
    CloseCode,
    FrameParser,
    Opcode,
    decode_close_payload,
    encode_close_payload,
    encode_frame,
    encode_message,
    is_valid_close_code,
    message_frame_parts,
)

Data = Union[str, bytes]



class State(IntEnum):
    """Where a connection is in RFC 6455's life; ordered, so ``<= LOCAL_CLOSING``
    means the peer's frames are still read."""

    OPEN = 1
    LOCAL_CLOSING = 2  # our close frame is sent; the peer's has not come
    REMOTE_CLOSING = 3  # the peer's close frame came; ours is not sent yet
    FAILED = 4  # the peer broke the protocol: input is ignored, our close may still go
    CLOSED = 5  # both close frames exchanged, or the connection is gone


# Every transition, by what causes it; a cause not listed leaves the state as it is.
_TRANSITIONS: Dict[str, Dict[State, State]] = {
    "close_sent": {State.OPEN: State.LOCAL_CLOSING, State.REMOTE_CLOSING: State.CLOSED,
                   State.FAILED: State.CLOSED},
    "close_received": {State.OPEN: State.REMOTE_CLOSING, State.LOCAL_CLOSING: State.CLOSED},
    "failure": {State.OPEN: State.FAILED, State.LOCAL_CLOSING: State.CLOSED},
    "connection_lost": {state: State.CLOSED for state in State},
}

# Compared per frame: a global is cheaper than an enum attribute on Python 3.9-3.11.
_TEXT, _CONTINUATION = Opcode.TEXT, Opcode.CONTINUATION
_MESSAGE_OPCODES = (Opcode.TEXT, Opcode.BINARY)
_PING, _PONG, _CLOSE = Opcode.PING, Opcode.PONG, Opcode.CLOSE
_RECEIVING = State.LOCAL_CLOSING
_SENT = (State.LOCAL_CLOSING, State.CLOSED)


class Message:
    """A complete text (``str``) or binary (``bytes``) message."""

    __slots__ = ("data",)

    def __init__(self, data: Data) -> None:
        self.data = data

    def __repr__(self) -> str:
        return f"Message({self.data!r:.60})"


class Ping:
    __slots__ = ("payload",)

    def __init__(self, payload: bytes) -> None:
        self.payload = payload


class Pong:
    __slots__ = ("payload",)

    def __init__(self, payload: bytes) -> None:
        self.payload = payload


class CloseReceived:
    """The peer sent a close frame; 1005 (NO_STATUS_RCVD) means it carried no code."""

    __slots__ = ("code", "reason")

    def __init__(self, code: int, reason: str) -> None:
        self.code = code
        self.reason = reason


class Failure:
    """The peer broke the protocol; close with ``code``.  No event follows."""

    __slots__ = ("code", "reason")

    def __init__(self, code: int, reason: str) -> None:
        self.code = code
        self.reason = reason


Event = Union[Message, Ping, Pong, CloseReceived, Failure]


def _checked_decode(decoder: codecs.IncrementalDecoder, payload: bytes, final: bool) -> str:
    try:
        text: str = decoder.decode(payload, final)
    except UnicodeDecodeError:
        raise ProtocolError(CloseCode.INVALID_DATA, "invalid UTF-8 in text message") from None
    # Python's decoder waits for a third byte before refusing ED A0..BF
    # (a UTF-16 surrogate); refuse it now so a bad fragment fails fast.
    pending = decoder.getstate()[0]
    if len(pending) >= 2 and pending[0] == 0xED and pending[1] >= 0xA0:
        raise ProtocolError(CloseCode.INVALID_DATA, "invalid UTF-8 in text message")
    return text


class WebSocketProtocol:
    """One side of a WebSocket connection after the handshake.

    ``client=False`` (a server) requires masked incoming frames and sends
    unmasked ones; ``client=True`` the reverse.
    """

    __slots__ = (
        "_close_sent",
        "_compressed",
        "_decoder",
        "_deflate",
        "_fragment_opcode",
        "_fragment_size",
        "_fragments",
        "_peek_decoder",
        "_peek_offset",
        "_state",
        "_text_parts",
        "client",
        "frames",
        "max_message_size",
    )

    def __init__(self, client: bool = False, max_message_size: int = default("max_message_size"),
                 deflate: Optional[PerMessageDeflate] = None) -> None:
        self.client = client
        self.max_message_size = max_message_size
        self._deflate = deflate
        self._compressed = False
        self._state = State.OPEN
        self._close_sent = False  # derived from _state by _enter, read on every send
        # The frame parser (read its ``empty``: nothing left to parse).
        self.frames = FrameParser(expect_masked=not client, max_size=max_message_size,
                                   allow_rsv1=deflate is not None)
        self._fragments: List[bytes] = []
        self._fragment_opcode = 0
        self._fragment_size = 0
        self._decoder: Optional[codecs.IncrementalDecoder] = None
        # Fail-fast UTF-8 checking of a text frame whose payload is still arriving.
        self._peek_decoder: Optional[codecs.IncrementalDecoder] = None
        self._peek_offset = 0
        self._text_parts: List[str] = []

    # -- state ------------------------------------------------------------------

    @property
    def state(self) -> State:
        return self._state

    @property
    def close_sent(self) -> bool:
        """Our close frame is out (or can no longer be sent): nothing more goes out."""
        return self._close_sent

    @property
    def close_received(self) -> bool:
        return self._state in (State.REMOTE_CLOSING, State.CLOSED)

    def _enter(self, cause: str) -> None:
        state = self._state = _TRANSITIONS[cause].get(self._state, self._state)
        self._close_sent = state in _SENT

    def connection_lost(self) -> None:
        """The transport is gone: nothing more is received or sent."""
        self._enter("connection_lost")

    # -- receiving --------------------------------------------------------------

    def receive_data(self, data: bytes) -> List[Event]:
        """Every event ``data`` completes: :meth:`feed` then :meth:`next_event` until None."""
        self.feed(data)
        events: List[Event] = []
        event = self.next_event()
        while event is not None:
            events.append(event)
            event = self.next_event()
        return events

    def feed(self, data: bytes) -> None:
        """Buffer ``data``; nothing is parsed until :meth:`next_event` asks."""
        if self._state <= _RECEIVING:
            self.frames.feed(data)

    def next_event(self) -> Optional[Event]:
        """The next complete event, or None until more bytes come.

        Parsing on demand lets a caller that cannot take more messages stop
        here and leave the rest as bytes.  After a :class:`Failure` or
        :class:`CloseReceived` it returns None for ever.
        """
        if self._state > _RECEIVING:
            return None
        parser = self.frames
        try:
            while True:
                frame = parser.next_frame()
                if frame is None:
                    if parser.pending is not None:
                        self._check_partial_text(parser)
                    return None
                self._peek_offset = 0
                self._peek_decoder = None
                opcode = frame.opcode
                if opcode in _MESSAGE_OPCODES:
                    if self._fragment_opcode:
                        raise ProtocolError(CloseCode.PROTOCOL_ERROR,
                                            "new message inside a fragmented one")
                    payload = frame.payload
                    if frame.rsv1:
                        assert self._deflate is not None  # the parser allows RSV1 only then
                        payload = self._deflate.decompress(payload, frame.fin,
                                                           self.max_message_size)
                    if frame.fin:
                        if opcode == _TEXT:
                            try:
                                return Message(payload.decode("utf-8"))
                            except UnicodeDecodeError:
                                raise ProtocolError(CloseCode.INVALID_DATA,
                                                    "invalid UTF-8 in text message") from None
                        return Message(payload)
                    self._start_fragmented(opcode, payload, frame.rsv1)
                elif opcode == _CONTINUATION:
                    if not self._fragment_opcode:
                        raise ProtocolError(CloseCode.PROTOCOL_ERROR,
                                            "continuation frame without a message")
                    if frame.rsv1:
                        raise ProtocolError(CloseCode.PROTOCOL_ERROR,
                                            "RSV1 set on a continuation frame")
                    message = self._continue_fragmented(frame.payload, frame.fin)
                    if message is not None:
                        return message
                elif opcode == _PING:
                    return Ping(frame.payload)
                elif opcode == _PONG:
                    return Pong(frame.payload)
                else:  # _CLOSE
                    code, reason = decode_close_payload(frame.payload)
                    self._enter("close_received")
                    return CloseReceived(code, reason)
        except ProtocolError as exc:
            self._enter("failure")
            self._fragments = []
            self._text_parts = []
            return Failure(exc.code, exc.reason)

    def _start_fragmented(self, opcode: int, payload: bytes, compressed: bool) -> None:
        self._fragment_opcode = opcode
        self._fragment_size = len(payload)
        self._compressed = compressed
        if opcode == _TEXT:
            self._decoder = codecs.getincrementaldecoder("utf-8")()
            self._text_parts = [self._decode(payload, False)]
        else:
            self._fragments = [payload]

    def _continue_fragmented(self, payload: bytes, fin: bool) -> Optional[Message]:
        if self._compressed:
            assert self._deflate is not None
            payload = self._deflate.decompress(
                payload, fin, self.max_message_size - self._fragment_size)
        self._fragment_size += len(payload)
        if self._fragment_size > self.max_message_size:
            raise ProtocolError(CloseCode.MESSAGE_TOO_BIG, "message too large")
        if self._fragment_opcode == _TEXT:
            # Decode each fragment as it comes: invalid UTF-8 fails at once,
            # not after the whole message has been buffered.
            self._text_parts.append(self._decode(payload, fin))
        else:
            self._fragments.append(payload)
        if not fin:
            return None
        self._fragment_opcode = 0
        if self._decoder is not None:
            text = "".join(self._text_parts)
            self._text_parts = []
            self._decoder = None
            return Message(text)
        data = b"".join(self._fragments)
        self._fragments = []
        return Message(data)

    def _decode(self, payload: bytes, final: bool) -> str:
        assert self._decoder is not None
        return _checked_decode(self._decoder, payload, final)

    def _check_partial_text(self, parser: FrameParser) -> None:
        """Validate the UTF-8 of a text frame still arriving, so a long frame
        with invalid text fails at the first bad byte, not at its end."""
        assert parser.pending is not None
        opcode, rsv1, _, _ = parser.pending
        if rsv1:
            return  # compressed: checked once inflated
        if opcode == _TEXT and not self._fragment_opcode:
            base = None
        elif opcode == _CONTINUATION and self._fragment_opcode == _TEXT \
                and not self._compressed:
            base = self._decoder
        else:
            return
        chunk = parser.partial_payload(self._peek_offset)
        if not chunk:
            return
        if self._peek_decoder is None:
            self._peek_decoder = codecs.getincrementaldecoder("utf-8")()
            if base is not None:
                self._peek_decoder.setstate(base.getstate())
        self._peek_offset += len(chunk)
        _checked_decode(self._peek_decoder, chunk, False)

    # -- sending ----------------------------------------------------------------

    def _frame(self, opcode: int, payload: bytes, rsv1: bool = False) -> bytes:
        mask = os.urandom(4) if self.client else None
        return encode_frame(opcode, payload, True, rsv1, mask)

    def send_message(self, data: Data) -> bytes:
        """A text message for ``str``, binary for bytes-like; ``b""`` once closing.

        A receive-side failure does not stop sending: replies to messages that
        came before the bad frame still go out before our close frame.
        """
        if self._close_sent:
            return b""
        deflate = self._deflate
        if deflate is not None and deflate.compress_outgoing:
            opcode, payload = message_frame_parts(data)
            return self._frame(opcode, deflate.compress(payload), True)
        if not self.client:
            return encode_message(data)  # a server's frames are not masked
        opcode, payload = message_frame_parts(data)
        return self._frame(opcode, payload)

    @property
    def compressed(self) -> bool:
        """Whether outgoing messages are compressed (so frames cannot be shared)."""
        return self._deflate is not None and self._deflate.compress_outgoing

    def send_ping(self, payload: bytes = b"") -> bytes:
        if len(payload) > 125:
            raise ValueError("ping payload over 125 bytes")
        if self._close_sent:
            return b""
        return self._frame(_PING, payload)

    def send_pong(self, payload: bytes) -> bytes:
        """The answer to a :class:`Ping` event (RFC 6455 5.5.2: the same payload)."""
        if self._close_sent:
            return b""
        return self._frame(_PONG, payload)

    def send_close(self, code: Optional[int] = CloseCode.NORMAL_CLOSURE,
                   reason: str = "") -> bytes:
        """Our close frame (once); 1005 or ``None`` sends an empty close payload."""
        if self._close_sent:
            return b""
        if code == CloseCode.NO_STATUS_RCVD:
            code = None
        if code is not None and not is_valid_close_code(code):
            raise ValueError(f"invalid close code {code}")
        self._enter("close_sent")
        return self._frame(_CLOSE, encode_close_payload(code, reason))
