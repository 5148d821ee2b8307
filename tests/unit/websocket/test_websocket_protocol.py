"""Unit tests for the Sans-I/O connection state machine in ``wssync.websocket.protocol``."""

from __future__ import annotations

import os
import struct
from typing import List, Tuple

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wssync.websocket.frames import (
    FrameParser,
    encode_close_payload,
    encode_frame,
)
from wssync.websocket.frames import Opcode as Op
from wssync.websocket.protocol import (
    CloseReceived,
    Failure,
    Message,
    Ping,
    Pong,
    State,
    WebSocketProtocol,
)


def cf(opcode: int, payload: bytes = b"", fin: bool = True) -> bytes:
    """A masked frame as a client sends it."""
    return encode_frame(opcode, payload, fin=fin, mask=os.urandom(4))


def sf(opcode: int, payload: bytes = b"", fin: bool = True) -> bytes:
    """An unmasked frame as a server sends it."""
    return encode_frame(opcode, payload, fin=fin)


def describe(events) -> List[Tuple]:
    out = []
    for e in events:
        if isinstance(e, Message):
            out.append(("message", e.data))
        elif isinstance(e, Ping):
            out.append(("ping", e.payload))
        elif isinstance(e, Pong):
            out.append(("pong", e.payload))
        elif isinstance(e, CloseReceived):
            out.append(("close", e.code, e.reason))
        elif isinstance(e, Failure):
            out.append(("failure", e.code))
        else:  # pragma: no cover - an unknown event type is itself a failure
            raise AssertionError(f"unexpected event {e!r}")
    return out


def server(**kwargs) -> WebSocketProtocol:
    return WebSocketProtocol(client=False, **kwargs)


def parse_server_frames(data: bytes) -> List[Tuple[int, bool, bytes]]:
    """Decode the unmasked frames a server-mode protocol wrote."""
    parser = FrameParser(expect_masked=False)
    parser.feed(data)
    frames = []
    while True:
        frame = parser.next_frame()
        if frame is None:
            return frames
        frames.append((frame.opcode, frame.fin, frame.payload))


# -- messages -----------------------------------------------------------------


def test_text_message() -> None:
    ws = server()
    assert describe(ws.receive_data(cf(Op.TEXT, "héllo €".encode()))) == [("message", "héllo €")]
    assert ws.state == State.OPEN


def test_binary_message() -> None:
    ws = server()
    payload = bytes(range(256))
    events = ws.receive_data(cf(Op.BINARY, payload))
    assert describe(events) == [("message", payload)]
    assert isinstance(events[0].data, bytes)


def test_empty_text_and_binary_messages() -> None:
    ws = server()
    assert describe(ws.receive_data(cf(Op.TEXT) + cf(Op.BINARY))) == [
        ("message", ""),
        ("message", b""),
    ]


def test_large_message_with_64bit_length() -> None:
    ws = server()
    payload = os.urandom(70000)
    assert describe(ws.receive_data(cf(Op.BINARY, payload))) == [("message", payload)]


def test_several_messages_in_one_chunk_keep_order() -> None:
    ws = server()
    data = cf(Op.TEXT, b"one") + cf(Op.BINARY, b"two") + cf(Op.PONG, b"p") + cf(Op.TEXT, b"three")
    assert describe(ws.receive_data(data)) == [
        ("message", "one"),
        ("message", b"two"),
        ("pong", b"p"),
        ("message", "three"),
    ]


def test_fragmented_text_message() -> None:
    ws = server()
    assert ws.receive_data(cf(Op.TEXT, b"Hel", fin=False)) == []
    assert ws.receive_data(cf(Op.CONTINUATION, b"lo, ", fin=False)) == []
    assert describe(ws.receive_data(cf(Op.CONTINUATION, b"world"))) == [("message", "Hello, world")]


def test_fragmented_binary_message() -> None:
    ws = server()
    data = (
        cf(Op.BINARY, b"\x00\x01", fin=False)
        + cf(Op.CONTINUATION, b"", fin=False)
        + cf(Op.CONTINUATION, b"\x02")
    )
    events = ws.receive_data(data)
    assert describe(events) == [("message", b"\x00\x01\x02")]
    assert isinstance(events[0].data, bytes)


def test_text_after_fragmented_binary_and_vice_versa() -> None:
    ws = server()
    data = (
        cf(Op.BINARY, b"ab", fin=False)
        + cf(Op.CONTINUATION, b"c")
        + cf(Op.TEXT, b"de", fin=False)
        + cf(Op.CONTINUATION, b"f")
        + cf(Op.BINARY, b"gh", fin=False)
        + cf(Op.CONTINUATION, b"i")
    )
    assert describe(ws.receive_data(data)) == [
        ("message", b"abc"),
        ("message", "def"),
        ("message", b"ghi"),
    ]


def test_ping_inside_fragmented_message_is_answered_and_message_assembled() -> None:
    ws = server()
    events = ws.receive_data(cf(Op.TEXT, b"frag", fin=False) + cf(Op.PING, b"are you there"))
    assert describe(events) == [("ping", b"are you there")]
    assert isinstance(events[0], Ping)
    pong = ws.send_pong(events[0].payload)
    assert parse_server_frames(pong) == [(Op.PONG, True, b"are you there")]
    events = ws.receive_data(
        cf(Op.CONTINUATION, b"ment", fin=False) + cf(Op.PONG, b"x") + cf(Op.CONTINUATION, b"ed")
    )
    assert describe(events) == [("pong", b"x"), ("message", "fragmented")]


def test_each_ping_is_an_event_in_order_and_answered_with_its_payload() -> None:
    ws = server()
    events = ws.receive_data(cf(Op.PING, b"1") + cf(Op.PING, b"") + cf(Op.PING, b"3"))
    pongs = b"".join(ws.send_pong(event.payload) for event in events if isinstance(event, Ping))
    assert parse_server_frames(pongs) == [
        (Op.PONG, True, b"1"),
        (Op.PONG, True, b""),
        (Op.PONG, True, b"3"),
    ]


def test_pong_is_not_answered() -> None:
    ws = server()
    assert describe(ws.receive_data(cf(Op.PONG, b"unsolicited"))) == [("pong", b"unsolicited")]


def test_utf8_sequence_split_across_fragments() -> None:
    ws = server()
    euro = "€".encode()  # 3 bytes
    smile = "😀".encode()  # 4 bytes
    data = (
        cf(Op.TEXT, b"a" + euro[:1], fin=False)
        + cf(Op.CONTINUATION, euro[1:2], fin=False)
        + cf(Op.CONTINUATION, euro[2:] + smile[:3], fin=False)
        + cf(Op.CONTINUATION, smile[3:] + b"z")
    )
    assert describe(ws.receive_data(data)) == [("message", "a€😀z")]


# -- protocol errors ---------------------------------------------------------------


def test_continuation_without_start_is_1002() -> None:
    ws = server()
    assert describe(ws.receive_data(cf(Op.CONTINUATION, b"x"))) == [("failure", 1002)]
    assert ws.state == State.FAILED


def test_continuation_after_finished_message_is_1002() -> None:
    ws = server()
    events = ws.receive_data(
        cf(Op.TEXT, b"a", fin=False) + cf(Op.CONTINUATION, b"b") + cf(Op.CONTINUATION, b"c")
    )
    assert describe(events) == [("message", "ab"), ("failure", 1002)]


@pytest.mark.parametrize("first", [Op.TEXT, Op.BINARY])
@pytest.mark.parametrize("second", [Op.TEXT, Op.BINARY])
def test_new_data_frame_inside_fragmented_message_is_1002(first: int, second: int) -> None:
    ws = server()
    events = ws.receive_data(cf(first, b"a", fin=False) + cf(second, b"b"))
    assert describe(events) == [("failure", 1002)]
    assert ws.state == State.FAILED


@pytest.mark.parametrize(
    "payload", [b"\xff", b"abc\xc0\xaf", b"\xe2\x82", b"\xed\xa0\x80", b"\xf4\x90\x80\x80"]
)
def test_invalid_utf8_in_unfragmented_text_is_1007(payload: bytes) -> None:
    ws = server()
    assert describe(ws.receive_data(cf(Op.TEXT, payload))) == [("failure", 1007)]
    assert ws.state == State.FAILED


def test_invalid_utf8_in_binary_is_fine() -> None:
    ws = server()
    assert describe(ws.receive_data(cf(Op.BINARY, b"\xff\xfe"))) == [("message", b"\xff\xfe")]


@pytest.mark.parametrize(
    "payload",
    [b"ok\xff", b"\xc0\xaf", b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xf4\x90\x80\x80"],
)
def test_invalid_utf8_in_first_fragment_fails_fast(payload: bytes) -> None:
    ws = server()
    # The final fragment has not arrived, yet the message can never be valid.
    assert describe(ws.receive_data(cf(Op.TEXT, payload, fin=False))) == [("failure", 1007)]
    assert ws.state == State.FAILED
    assert ws.receive_data(cf(Op.CONTINUATION, b"rest")) == []


def test_invalid_utf8_in_middle_fragment_fails_fast() -> None:
    ws = server()
    assert ws.receive_data(cf(Op.TEXT, b"good", fin=False)) == []
    assert describe(ws.receive_data(cf(Op.CONTINUATION, b"\xff", fin=False))) == [("failure", 1007)]


def test_truncated_utf8_at_end_of_fragmented_text_is_1007() -> None:
    ws = server()
    data = cf(Op.TEXT, b"a", fin=False) + cf(Op.CONTINUATION, "€".encode()[:2])
    assert describe(ws.receive_data(data)) == [("failure", 1007)]


def test_unmasked_frame_to_server_is_1002() -> None:
    ws = server()
    assert describe(ws.receive_data(sf(Op.TEXT, b"hi"))) == [("failure", 1002)]


def test_masked_frame_to_client_is_1002() -> None:
    ws = WebSocketProtocol(client=True)
    assert describe(ws.receive_data(cf(Op.TEXT, b"hi"))) == [("failure", 1002)]


def test_reserved_opcode_is_1002() -> None:
    ws = server()
    assert describe(ws.receive_data(cf(0x3, b"x"))) == [("failure", 1002)]


def test_unfragmented_message_over_max_size_is_1009() -> None:
    ws = server(max_message_size=10)
    assert describe(ws.receive_data(cf(Op.BINARY, b"x" * 10))) == [("message", b"x" * 10)]
    assert describe(ws.receive_data(cf(Op.BINARY, b"x" * 11))) == [("failure", 1009)]


@pytest.mark.parametrize("opcode", [Op.TEXT, Op.BINARY])
def test_fragmented_message_over_max_size_is_1009(opcode: int) -> None:
    ws = server(max_message_size=10)
    assert ws.receive_data(cf(opcode, b"x" * 6, fin=False)) == []
    assert describe(ws.receive_data(cf(Op.CONTINUATION, b"x" * 5))) == [("failure", 1009)]
    assert ws.state == State.FAILED


def test_fragmented_message_of_exactly_max_size_is_accepted() -> None:
    ws = server(max_message_size=10)
    data = (
        cf(Op.BINARY, b"x" * 4, fin=False)
        + cf(Op.CONTINUATION, b"y" * 4, fin=False)
        + cf(Op.CONTINUATION, b"zz")
    )
    assert describe(ws.receive_data(data)) == [("message", b"xxxxyyyyzz")]


def test_message_size_limit_resets_between_messages() -> None:
    ws = server(max_message_size=10)
    data = b"".join(
        cf(Op.BINARY, b"x" * 5, fin=False) + cf(Op.CONTINUATION, b"y" * 5) for _ in range(3)
    )
    assert describe(ws.receive_data(data)) == [("message", b"x" * 5 + b"y" * 5)] * 3


def test_events_before_protocol_error_come_first() -> None:
    ws = server()
    data = (
        cf(Op.TEXT, b"first")
        + cf(Op.PING, b"p")
        + cf(Op.BINARY, b"second")
        + sf(Op.TEXT, b"unmasked")
    )
    assert describe(ws.receive_data(data)) == [
        ("message", "first"),
        ("ping", b"p"),
        ("message", b"second"),
        ("failure", 1002),
    ]


def test_nothing_is_parsed_after_failure() -> None:
    ws = server()
    data = cf(Op.CONTINUATION, b"bad") + cf(Op.TEXT, b"never")
    assert describe(ws.receive_data(data)) == [("failure", 1002)]
    assert ws.receive_data(cf(Op.TEXT, b"later")) == []
    assert ws.receive_data(cf(Op.PING, b"later")) == []
    assert ws.state == State.FAILED
    # Our close frame may still go out, once; then the connection is closed.
    assert parse_server_frames(ws.send_close(1002)) == [(Op.CLOSE, True, b"\x03\xea")]
    assert ws.state == State.CLOSED
    assert ws.send_close(1002) == b""


def test_replies_still_go_out_after_failure_until_the_close_frame() -> None:
    """Messages that arrived before a bad frame are answered before our close
    (Autobahn 3.x/4.x strictness); after the close frame nothing is sent."""
    ws = server()
    events = ws.receive_data(cf(Op.TEXT, b"first") + cf(Op.CONTINUATION))
    assert describe(events) == [("message", "first"), ("failure", 1002)]
    assert parse_server_frames(ws.send_message("first")) == [(Op.TEXT, True, b"first")]
    assert parse_server_frames(ws.send_close(1002))[0][0] == Op.CLOSE
    assert ws.send_message("late") == b""
    assert ws.send_ping(b"late") == b""


def test_invalid_utf8_fails_before_a_long_text_frame_completes() -> None:
    """Autobahn 6.4.3/6.4.4: one frame arriving in pieces fails at the bad piece."""
    ws = server()
    payload = "κόσμε".encode() + b"\xf4\x90\x80\x80" + b"edited" * 1000
    frame = cf(Op.TEXT, payload)
    cut = len(frame) - len(payload) + len("κόσμε".encode()) + 2
    assert ws.receive_data(frame[:cut - 2]) == []  # valid so far: nothing to say
    assert describe(ws.receive_data(frame[cut - 2:cut])) == [("failure", 1007)]


def test_partial_text_check_continues_a_fragmented_message() -> None:
    ws = server()
    first = cf(Op.TEXT, "é".encode()[:1], fin=False)  # a split 2-byte character
    assert ws.receive_data(first) == []
    rest = cf(Op.CONTINUATION, "é".encode()[1:] + b"ok" * 100)
    assert describe(ws.receive_data(rest[:10]) + ws.receive_data(rest[10:])) == [
        ("message", "é" + "ok" * 100)]


@pytest.mark.parametrize(
    "payload, code",
    [
        (b"\x03", 1002),
        (struct.pack("!H", 1005), 1002),
        (struct.pack("!H", 999), 1002),
        (struct.pack("!H", 1000) + b"\xff", 1007),
    ],
)
def test_bad_close_payload_is_a_failure(payload: bytes, code: int) -> None:
    ws = server()
    assert describe(ws.receive_data(cf(Op.CLOSE, payload))) == [("failure", code)]
    assert ws.state == State.FAILED


# -- close handshake ------------------------------------------------------------------


def test_peer_closes_first() -> None:
    ws = server()
    events = ws.receive_data(cf(Op.CLOSE, encode_close_payload(1001, "going away")))
    assert describe(events) == [("close", 1001, "going away")]
    assert ws.close_received
    assert ws.state == State.REMOTE_CLOSING  # our close frame has not been sent yet
    out = ws.send_close(1001)
    assert parse_server_frames(out) == [(Op.CLOSE, True, b"\x03\xe9")]
    assert ws.state == State.CLOSED


def test_peer_close_without_code_is_1005() -> None:
    ws = server()
    assert describe(ws.receive_data(cf(Op.CLOSE))) == [("close", 1005, "")]


def test_we_close_first() -> None:
    ws = server()
    out = ws.send_close(1000, "bye")
    assert parse_server_frames(out) == [(Op.CLOSE, True, b"\x03\xe8bye")]
    assert ws.state == State.LOCAL_CLOSING
    assert ws.close_sent
    assert describe(ws.receive_data(cf(Op.CLOSE, b"\x03\xe8"))) == [("close", 1000, "")]
    assert ws.state == State.CLOSED


def test_messages_still_arrive_while_closing() -> None:
    ws = server()
    ws.send_close()
    events = ws.receive_data(cf(Op.TEXT, b"in flight") + cf(Op.CLOSE, b"\x03\xe8"))
    assert describe(events) == [("message", "in flight"), ("close", 1000, "")]
    assert ws.state == State.CLOSED


def test_nothing_is_parsed_after_peer_close() -> None:
    ws = server()
    events = ws.receive_data(cf(Op.CLOSE, b"\x03\xe8") + cf(Op.TEXT, b"after close"))
    assert describe(events) == [("close", 1000, "")]
    assert ws.receive_data(cf(Op.PING, b"x")) == []
    assert ws.send_pong(b"x") != b""  # our close is not sent yet: a pong may still go
    ws.send_close()
    assert ws.send_pong(b"x") == b""


def test_send_message_after_close_sent_returns_nothing() -> None:
    ws = server()
    ws.send_close()
    assert ws.send_message("text") == b""
    assert ws.send_message(b"bin") == b""
    assert ws.send_ping() == b""
    assert ws.send_close() == b""  # only one close frame


def test_send_close_1005_sends_empty_payload() -> None:
    ws = server()
    assert parse_server_frames(ws.send_close(1005)) == [(Op.CLOSE, True, b"")]


def test_send_close_none_sends_empty_payload() -> None:
    ws = server()
    assert parse_server_frames(ws.send_close(None)) == [(Op.CLOSE, True, b"")]


@pytest.mark.parametrize("code", [0, 999, 1004, 1006, 1015, 2000, 5000])
def test_send_close_rejects_invalid_code(code: int) -> None:
    ws = server()
    with pytest.raises(ValueError):
        ws.send_close(code)
    assert not ws.close_sent
    assert ws.state == State.OPEN


def test_send_ping_rejects_long_payload() -> None:
    ws = server()
    with pytest.raises(ValueError):
        ws.send_ping(b"x" * 126)
    assert parse_server_frames(ws.send_ping(b"x" * 125)) == [(Op.PING, True, b"x" * 125)]


# -- sending and masking -----------------------------------------------------------------


def test_server_sends_unmasked_frames() -> None:
    ws = server()
    text = ws.send_message("hé")
    binary = ws.send_message(b"\x00\x01")
    assert not text[1] & 0x80
    assert parse_server_frames(text + binary) == [
        (Op.TEXT, True, "hé".encode()),
        (Op.BINARY, True, b"\x00\x01"),
    ]


def test_send_message_accepts_bytearray_and_memoryview() -> None:
    ws = server()
    out = ws.send_message(bytearray(b"ab")) + ws.send_message(memoryview(b"cd"))
    assert parse_server_frames(out) == [(Op.BINARY, True, b"ab"), (Op.BINARY, True, b"cd")]


def test_client_masks_outgoing_frames_and_server_reads_them() -> None:
    client = WebSocketProtocol(client=True)
    payload = b"A" * 64
    out = client.send_message(payload)
    assert out[1] & 0x80  # mask bit
    assert out[1] & 0x7F == 64
    assert out[6:] != payload
    srv = server()
    assert describe(srv.receive_data(out)) == [("message", payload)]


def test_client_text_ping_and_close_are_readable_by_server() -> None:
    client = WebSocketProtocol(client=True)
    out = client.send_message("héllo") + client.send_ping(b"pp") + client.send_close(4000, "done")
    srv = server()  # would fail with 1002 if any frame were unmasked
    assert describe(srv.receive_data(out)) == [
        ("message", "héllo"),
        ("ping", b"pp"),
        ("close", 4000, "done"),
    ]
    assert client.state == State.LOCAL_CLOSING


def test_client_reads_server_frames_and_answers_ping_masked() -> None:
    client = WebSocketProtocol(client=True)
    srv = server()
    events = client.receive_data(srv.send_message("hi") + srv.send_ping(b"hb"))
    assert describe(events) == [("message", "hi"), ("ping", b"hb")]
    assert isinstance(events[1], Ping)
    pong = client.send_pong(events[1].payload)
    assert pong[1] & 0x80
    assert describe(srv.receive_data(pong)) == [("pong", b"hb")]


def test_full_close_handshake_between_client_and_server() -> None:
    client = WebSocketProtocol(client=True)
    srv = server()
    assert describe(srv.receive_data(client.send_close(1000, "bye"))) == [("close", 1000, "bye")]
    assert client.state == State.LOCAL_CLOSING
    assert describe(client.receive_data(srv.send_close(1000, "bye"))) == [("close", 1000, "bye")]
    assert srv.state == State.CLOSED
    assert client.state == State.CLOSED


# -- properties ------------------------------------------------------------------------------

MAX_EXAMPLES = 150


@st.composite
def client_stream(draw) -> Tuple[bytes, List[Tuple]]:
    """Masked client frames for a few messages/pings, plus the events they should give."""
    data = b""
    expected: List[Tuple] = []
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(st.sampled_from(["text", "binary", "ping"]))
        if kind == "ping":
            payload = draw(st.binary(max_size=125))
            data += cf(Op.PING, payload)
            expected.append(("ping", payload))
            continue
        if kind == "text":
            value = draw(st.text(max_size=40))
            raw = value.encode("utf-8")
            opcode = Op.TEXT
        else:
            value = raw = draw(st.binary(max_size=300))
            opcode = Op.BINARY
        cuts = sorted(draw(st.lists(st.integers(0, len(raw)), max_size=4)))
        pieces = [raw[a:b] for a, b in zip([0, *cuts], [*cuts, len(raw)])]
        for i, piece in enumerate(pieces):
            data += cf(opcode if i == 0 else Op.CONTINUATION, piece, fin=i == len(pieces) - 1)
            if i < len(pieces) - 1 and draw(st.booleans()):
                ping = draw(st.binary(max_size=10))
                data += cf(Op.PING, ping)
                expected.append(("ping", ping))
        expected.append(("message", value))
    return data, expected


@settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stream=client_stream(), data=st.data())
def test_arbitrary_splits_give_same_events(stream, data) -> None:
    raw, expected = stream
    whole = server()
    assert describe(whole.receive_data(raw)) == expected
    cuts = sorted(data.draw(st.lists(st.integers(0, len(raw)), max_size=12)))
    split = server()
    got = []
    for a, b in zip([0, *cuts], [*cuts, len(raw)]):
        got.extend(split.receive_data(raw[a:b]))
    assert describe(got) == expected
    assert split.state == whole.state == State.OPEN


@st.composite
def frame_soup(draw) -> bytes:
    """Frames with arbitrary header bits and lengths, plus raw junk."""
    out = b""
    for _ in range(draw(st.integers(0, 5))):
        if draw(st.booleans()):
            out += draw(st.binary(max_size=20))
        else:
            b0 = draw(st.integers(0, 255))
            payload = draw(st.binary(max_size=140))
            mask = draw(st.one_of(st.none(), st.binary(min_size=4, max_size=4)))
            frame = encode_frame(b0 & 0x0F, payload, fin=bool(b0 & 0x80), rsv1=False, mask=mask)
            out += bytes((frame[0] | (b0 & 0x70),)) + frame[1:]
    return out


def check_robust(ws: WebSocketProtocol, chunks: List[bytes]) -> None:
    events = []
    for chunk in chunks:
        events.extend(ws.receive_data(chunk))  # must never raise
    kinds = describe(events)
    failures = [i for i, e in enumerate(kinds) if e[0] == "failure"]
    closes = [i for i, e in enumerate(kinds) if e[0] == "close"]
    # A Failure or CloseReceived can only be the very last event.
    assert len(failures) + len(closes) <= 1
    for i in failures + closes:
        assert i == len(kinds) - 1
    if failures:
        assert kinds[-1][1] in (1002, 1007, 1009)
        assert ws.state == State.FAILED
        assert ws.receive_data(cf(Op.TEXT, b"x") + sf(Op.TEXT, b"x")) == []


@settings(max_examples=MAX_EXAMPLES, deadline=None)
@given(raw=st.binary(max_size=200), client=st.booleans())
def test_arbitrary_bytes_never_raise(raw: bytes, client: bool) -> None:
    check_robust(WebSocketProtocol(client=client, max_message_size=1000), [raw])


@settings(max_examples=MAX_EXAMPLES, deadline=None)
@given(raw=frame_soup(), client=st.booleans(), data=st.data())
def test_arbitrary_frames_never_raise(raw: bytes, client: bool, data) -> None:
    cuts = sorted(data.draw(st.lists(st.integers(0, len(raw)), max_size=5)))
    chunks = [raw[a:b] for a, b in zip([0, *cuts], [*cuts, len(raw)])]
    check_robust(WebSocketProtocol(client=client, max_message_size=100), chunks)


def test_text_frame_cut_inside_its_mask_key_is_not_checked_yet() -> None:
    ws = server()
    frame = cf(Op.TEXT, "héllo".encode())
    for cut in range(1, len(frame)):
        ws = server()
        assert ws.receive_data(frame[:cut]) == []
        assert describe(ws.receive_data(frame[cut:])) == [("message", "héllo")]
