"""Unit tests for the Sans-I/O frame codec (plain bytes, no sockets)."""

from __future__ import annotations

import os
import shutil
import struct
from typing import List

import pytest

from wssync.errors import ProtocolError
from wssync.websocket.frames import (
    Frame,
    FrameParser,
    apply_mask,
    decode_close_payload,
    encode_close_payload,
    encode_frame,
    encode_message,
    is_valid_close_code,
    message_frame_parts,
)
from wssync.websocket.frames import Opcode as Op

MASK = b"\x37\xfa\x21\x3d"


def naive_mask(data: bytes, mask: bytes) -> bytes:
    return bytes(b ^ mask[i % 4] for i, b in enumerate(data))


def server_parser(**kwargs) -> FrameParser:
    return FrameParser(expect_masked=True, **kwargs)


def client_parser(**kwargs) -> FrameParser:
    return FrameParser(expect_masked=False, **kwargs)


def parse_all(parser: FrameParser, data: bytes) -> List[Frame]:
    parser.feed(data)
    frames = []
    while True:
        frame = parser.next_frame()
        if frame is None:
            return frames
        frames.append(frame)


def parse_error(parser: FrameParser, data: bytes) -> ProtocolError:
    parser.feed(data)
    with pytest.raises(ProtocolError) as info:
        while parser.next_frame() is not None:
            pass
    return info.value


def raw_header(b0: int, b1: int, ext: bytes = b"") -> bytes:
    return bytes((b0, b1)) + ext


# -- apply_mask ---------------------------------------------------------------


MASK_LENGTHS = list(range(0, 21)) + list(range(4095, 4101)) + [8191, 8192, 8193, 16384 + 3]


@pytest.mark.parametrize("length", MASK_LENGTHS)
def test_apply_mask_matches_naive_xor(length: int) -> None:
    data = os.urandom(length)
    assert apply_mask(data, MASK) == naive_mask(data, MASK)


@pytest.mark.parametrize("length", MASK_LENGTHS)
def test_apply_mask_is_its_own_inverse(length: int) -> None:
    data = os.urandom(length)
    masked = apply_mask(data, MASK)
    assert len(masked) == length
    assert apply_mask(masked, MASK) == data


@pytest.mark.parametrize("length", [1, 5, 4096, 4099, 16387])
def test_apply_mask_keeps_leading_and_trailing_zero_bytes(length: int) -> None:
    # XOR of a byte with itself is 0; big-int based masking must not drop them.
    mask = b"\x01\x02\x03\x04"
    data = (mask * (length // 4 + 1))[:length]
    assert apply_mask(data, mask) == b"\x00" * length


def test_apply_mask_accepts_bytearray() -> None:
    data = bytearray(os.urandom(5000))
    assert apply_mask(data, MASK) == naive_mask(bytes(data), MASK)


def test_apply_mask_with_zero_mask_is_identity() -> None:
    data = os.urandom(100)
    assert apply_mask(data, b"\x00\x00\x00\x00") == data


# -- encode_frame and round trips ----------------------------------------------


@pytest.mark.parametrize(
    "size, length_byte, header_len",
    [
        (0, 0, 2),
        (1, 1, 2),
        (125, 125, 2),
        (126, 126, 4),
        (65535, 126, 4),
        (65536, 127, 10),
        (70000, 127, 10),
    ],
)
def test_encode_frame_length_encoding_unmasked(
    size: int, length_byte: int, header_len: int
) -> None:
    payload = os.urandom(size)
    data = encode_frame(Op.BINARY, payload)
    assert data[0] == 0x80 | Op.BINARY
    assert data[1] == length_byte  # mask bit clear
    assert len(data) == header_len + size
    if length_byte == 126:
        assert struct.unpack("!H", data[2:4])[0] == size
    elif length_byte == 127:
        assert struct.unpack("!Q", data[2:10])[0] == size
    assert data[header_len:] == payload


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536])
def test_encode_frame_masked_layout(size: int) -> None:
    payload = os.urandom(size)
    data = encode_frame(Op.BINARY, payload, mask=MASK)
    header_len = 2 if size < 126 else 4 if size < 65536 else 10
    assert data[1] & 0x80
    assert data[header_len : header_len + 4] == MASK
    assert data[header_len + 4 :] == naive_mask(payload, MASK)


def test_encode_frame_flags() -> None:
    data = encode_frame(Op.TEXT, b"x", fin=False, rsv1=True)
    assert data[0] == 0x40 | Op.TEXT
    data = encode_frame(Op.CONTINUATION, b"x", fin=True)
    assert data[0] == 0x80


@pytest.mark.parametrize("size", [0, 1, 124, 125, 126, 127, 65535, 65536, 100000])
def test_masked_round_trip_client_to_server(size: int) -> None:
    payload = os.urandom(size)
    frames = parse_all(server_parser(), encode_frame(Op.BINARY, payload, mask=os.urandom(4)))
    assert len(frames) == 1
    frame = frames[0]
    assert frame.opcode == Op.BINARY
    assert frame.fin is True
    assert frame.rsv1 is False
    assert frame.payload == payload


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536])
def test_unmasked_round_trip_server_to_client(size: int) -> None:
    payload = os.urandom(size)
    frames = parse_all(client_parser(), encode_frame(Op.BINARY, payload))
    assert [f.payload for f in frames] == [payload]


def test_round_trip_preserves_opcode_and_fin() -> None:
    data = (
        encode_frame(Op.TEXT, b"hel", fin=False, mask=MASK)
        + encode_frame(Op.PING, b"p", mask=MASK)
        + encode_frame(Op.CONTINUATION, b"lo", fin=True, mask=MASK)
        + encode_frame(Op.PONG, b"", mask=MASK)
        + encode_frame(Op.CLOSE, b"\x03\xe8", mask=MASK)
    )
    frames = parse_all(server_parser(), data)
    assert [(f.opcode, f.fin, f.payload) for f in frames] == [
        (Op.TEXT, False, b"hel"),
        (Op.PING, True, b"p"),
        (Op.CONTINUATION, True, b"lo"),
        (Op.PONG, True, b""),
        (Op.CLOSE, True, b"\x03\xe8"),
    ]


def test_rsv1_allowed_when_extension_enabled() -> None:
    frames = parse_all(
        server_parser(allow_rsv1=True), encode_frame(Op.TEXT, b"z", rsv1=True, mask=MASK)
    )
    assert frames[0].rsv1 is True
    assert frames[0].payload == b"z"


# -- incremental parsing --------------------------------------------------------


@pytest.mark.parametrize("size", [0, 5, 125, 126, 300, 65536])
def test_partial_input_returns_none_until_complete(size: int) -> None:
    payload = os.urandom(size)
    data = encode_frame(Op.BINARY, payload, mask=MASK)
    parser = server_parser()
    # Feed everything but the last byte in a few chunks: never a frame.
    cut_points = sorted(
        {0, 1, min(2, len(data) - 1), min(5, len(data) - 1), len(data) // 2, len(data) - 1}
    )
    previous = 0
    for cut in cut_points:
        parser.feed(data[previous:cut])
        previous = cut
        assert parser.next_frame() is None
    parser.feed(data[previous:])
    frame = parser.next_frame()
    assert frame is not None
    assert frame.payload == payload
    assert parser.next_frame() is None
    assert parser.buffered == 0


def test_next_frame_on_empty_parser_is_none() -> None:
    parser = server_parser()
    assert parser.next_frame() is None
    parser.feed(b"")
    assert parser.next_frame() is None


def test_empty_says_whether_anything_is_left_to_parse() -> None:
    parser = server_parser()
    assert parser.empty
    one = encode_frame(Op.TEXT, b"one", mask=MASK)
    two = encode_frame(Op.TEXT, b"two", mask=MASK)
    parser.feed(one + two[:3])
    assert not parser.empty
    assert parser.next_frame().payload == b"one"
    assert not parser.empty  # part of the next frame is buffered
    assert parser.next_frame() is None and not parser.empty
    parser.feed(two[3:])
    assert parser.next_frame().payload == b"two"
    assert parser.empty and parser.buffered == 0
    parser.feed(one + two)
    assert parser.next_frame().payload == b"one"
    assert not parser.empty
    assert parser.next_frame().payload == b"two"
    assert parser.empty


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536])
@pytest.mark.parametrize("kind", [str, bytes, bytearray, memoryview])
def test_encode_message_is_one_final_unmasked_frame(size: int, kind: type) -> None:
    data = kind("é" * (size // 2) + "x" * (size % 2)) if kind is str \
        else kind(os.urandom(size))
    assert encode_message(data) == encode_frame(*message_frame_parts(data))
    frame = parse_all(client_parser(), encode_message(data))[0]
    assert frame.fin and frame.opcode == (Op.TEXT if kind is str else Op.BINARY)


def stream_of_frames() -> bytes:
    return (
        encode_frame(Op.TEXT, "héllo".encode(), mask=MASK)
        + encode_frame(Op.BINARY, os.urandom(126), mask=MASK)
        + encode_frame(Op.PING, b"ping", mask=MASK)
        + encode_frame(Op.BINARY, b"", mask=MASK)
        + encode_frame(Op.BINARY, os.urandom(70000), fin=False, mask=MASK)
        + encode_frame(Op.CONTINUATION, os.urandom(3), mask=MASK)
    )


def frame_tuples(frames: List[Frame]) -> list:
    return [(f.opcode, f.fin, f.rsv1, f.payload) for f in frames]


def test_byte_at_a_time_feeding_gives_same_frames() -> None:
    data = stream_of_frames()
    expected = frame_tuples(parse_all(server_parser(), data))
    assert len(expected) == 6
    parser = server_parser()
    got: List[Frame] = []
    for i in range(len(data)):
        parser.feed(data[i : i + 1])
        while True:
            frame = parser.next_frame()
            if frame is None:
                break
            got.append(frame)
    assert frame_tuples(got) == expected
    assert parser.buffered == 0


@pytest.mark.parametrize("chunk", [2, 3, 7, 100, 4097])
def test_chunked_feeding_gives_same_frames(chunk: int) -> None:
    data = stream_of_frames()
    expected = frame_tuples(parse_all(server_parser(), data))
    parser = server_parser()
    got: List[Frame] = []
    for i in range(0, len(data), chunk):
        got.extend(parse_all(parser, data[i : i + chunk]))
    assert frame_tuples(got) == expected


def test_several_frames_in_one_feed_are_returned_one_by_one() -> None:
    parser = server_parser()
    parser.feed(encode_frame(Op.TEXT, b"a", mask=MASK) + encode_frame(Op.TEXT, b"b", mask=MASK))
    first = parser.next_frame()
    second = parser.next_frame()
    assert first is not None and first.payload == b"a"
    assert second is not None and second.payload == b"b"
    assert parser.next_frame() is None


# -- protocol errors ------------------------------------------------------------


def test_unmasked_frame_on_server_side_is_1002() -> None:
    assert parse_error(server_parser(), encode_frame(Op.TEXT, b"hi")).code == 1002


def test_masked_frame_on_client_side_is_1002() -> None:
    assert parse_error(client_parser(), encode_frame(Op.TEXT, b"hi", mask=MASK)).code == 1002


@pytest.mark.parametrize("bit", [0x40, 0x20, 0x10], ids=["rsv1", "rsv2", "rsv3"])
def test_reserved_bits_are_1002(bit: int) -> None:
    data = bytearray(encode_frame(Op.TEXT, b"hi", mask=MASK))
    data[0] |= bit
    assert parse_error(server_parser(), bytes(data)).code == 1002


@pytest.mark.parametrize("bit", [0x20, 0x10], ids=["rsv2", "rsv3"])
def test_rsv2_rsv3_are_1002_even_with_allow_rsv1(bit: int) -> None:
    data = bytearray(encode_frame(Op.TEXT, b"hi", mask=MASK))
    data[0] |= bit
    assert parse_error(server_parser(allow_rsv1=True), bytes(data)).code == 1002


def test_rsv1_on_control_frame_is_1002_even_with_allow_rsv1() -> None:
    data = encode_frame(Op.PING, b"", rsv1=True, mask=MASK)
    assert parse_error(server_parser(allow_rsv1=True), data).code == 1002


@pytest.mark.parametrize("opcode", [3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF])
def test_reserved_opcodes_are_1002(opcode: int) -> None:
    assert parse_error(server_parser(), encode_frame(opcode, b"", mask=MASK)).code == 1002


@pytest.mark.parametrize("opcode", [3, 0xB])
def test_reserved_opcode_detected_from_header_alone(opcode: int) -> None:
    assert parse_error(server_parser(), raw_header(0x80 | opcode, 0x85)).code == 1002


@pytest.mark.parametrize("opcode", [Op.CLOSE, Op.PING, Op.PONG])
def test_fragmented_control_frame_is_1002(opcode: int) -> None:
    data = encode_frame(opcode, b"", fin=False, mask=MASK)
    assert parse_error(server_parser(), data).code == 1002


@pytest.mark.parametrize("opcode", [Op.CLOSE, Op.PING, Op.PONG])
@pytest.mark.parametrize("size", [126, 65536])
def test_control_payload_over_125_is_1002(opcode: int, size: int) -> None:
    payload = b"\x03\xe8" + b"x" * (size - 2)
    assert parse_error(server_parser(), encode_frame(opcode, payload, mask=MASK)).code == 1002


def test_control_payload_over_125_detected_from_header_alone() -> None:
    assert parse_error(server_parser(), raw_header(0x80 | Op.PING, 0x80 | 126)).code == 1002


def test_control_payload_of_125_is_accepted() -> None:
    frames = parse_all(server_parser(), encode_frame(Op.PING, b"p" * 125, mask=MASK))
    assert frames[0].payload == b"p" * 125


def test_64bit_length_with_high_bit_is_1002() -> None:
    data = raw_header(0x80 | Op.BINARY, 0x80 | 127, struct.pack("!Q", 1 << 63))
    assert parse_error(server_parser(max_size=1 << 64), data).code == 1002


def test_64bit_length_with_high_bit_is_1002_with_default_max_size() -> None:
    data = raw_header(0x80 | Op.BINARY, 0x80 | 127, struct.pack("!Q", (1 << 63) | 5))
    assert parse_error(server_parser(), data).code == 1002


@pytest.mark.parametrize(
    "header",
    [
        raw_header(0x80 | Op.BINARY, 0x80 | 101),
        raw_header(0x80 | Op.BINARY, 0x80 | 126, struct.pack("!H", 101)),
        raw_header(0x80 | Op.BINARY, 0x80 | 127, struct.pack("!Q", 1 << 40)),
    ],
    ids=["7bit", "16bit", "64bit"],
)
def test_announced_length_over_max_size_is_1009_before_payload(header: bytes) -> None:
    # Only the header arrived (not even the mask): the size is already known.
    err = parse_error(server_parser(max_size=100), header)
    assert err.code == 1009


def test_length_exactly_max_size_is_accepted() -> None:
    payload = os.urandom(100)
    frames = parse_all(server_parser(max_size=100), encode_frame(Op.BINARY, payload, mask=MASK))
    assert frames[0].payload == payload


def test_frame_after_good_frames_still_fails() -> None:
    parser = server_parser()
    parser.feed(encode_frame(Op.TEXT, b"ok", mask=MASK) + encode_frame(Op.TEXT, b"bad"))
    first = parser.next_frame()
    assert first is not None and first.payload == b"ok"
    with pytest.raises(ProtocolError) as info:
        parser.next_frame()
    assert info.value.code == 1002


def test_protocol_error_carries_code_and_reason() -> None:
    err = ProtocolError(1002, "bad")
    assert err.code == 1002
    assert err.reason == "bad"
    assert "1002" in str(err)


# -- close payloads ---------------------------------------------------------------


def test_empty_close_payload_is_1005() -> None:
    assert decode_close_payload(b"") == (1005, "")


def test_one_byte_close_payload_is_1002() -> None:
    with pytest.raises(ProtocolError) as info:
        decode_close_payload(b"\x03")
    assert info.value.code == 1002


INVALID_CODES = [0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535]
VALID_CODES = [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999]


@pytest.mark.parametrize("code", INVALID_CODES)
def test_invalid_close_codes_are_1002(code: int) -> None:
    with pytest.raises(ProtocolError) as info:
        decode_close_payload(struct.pack("!H", code))
    assert info.value.code == 1002
    assert not is_valid_close_code(code)


@pytest.mark.parametrize("code", VALID_CODES)
def test_valid_close_codes_are_accepted(code: int) -> None:
    assert decode_close_payload(struct.pack("!H", code) + b"bye") == (code, "bye")
    assert is_valid_close_code(code)


def test_close_reason_is_decoded_as_utf8() -> None:
    payload = struct.pack("!H", 1000) + "tschüß €".encode()
    assert decode_close_payload(payload) == (1000, "tschüß €")


@pytest.mark.parametrize("reason", [b"\xff", b"ok\xc0\xaf", b"\xe2\x82", b"\xed\xa0\x80"])
def test_invalid_utf8_close_reason_is_1007(reason: bytes) -> None:
    with pytest.raises(ProtocolError) as info:
        decode_close_payload(struct.pack("!H", 1000) + reason)
    assert info.value.code == 1007


def test_encode_close_payload() -> None:
    assert encode_close_payload(None) == b""
    assert encode_close_payload(1000) == b"\x03\xe8"
    assert encode_close_payload(4001, "é") == b"\x0f\xa1" + "é".encode()


def test_encode_close_payload_round_trips() -> None:
    assert decode_close_payload(encode_close_payload(1001, "going away")) == (1001, "going away")


def test_encode_close_payload_rejects_long_reason() -> None:
    assert len(encode_close_payload(1000, "x" * 123)) == 125
    with pytest.raises(ValueError):
        encode_close_payload(1000, "x" * 124)
    with pytest.raises(ValueError):
        encode_close_payload(1000, "é" * 62)  # 124 bytes of UTF-8


def test_close_frame_with_reason_round_trips_through_parser() -> None:
    payload = encode_close_payload(1000, "done")
    frames = parse_all(server_parser(), encode_frame(Op.CLOSE, payload, mask=MASK))
    assert decode_close_payload(frames[0].payload) == (1000, "done")


# -- the optional C accelerator and the pure-Python path -------------------------------

MASK_LENGTHS = [0, 1, 3, 4, 5, 7, 8, 9, 15, 16, 17, 4095, 4096, 4097, 16384, 16387, 100_003]


@pytest.mark.parametrize("n", MASK_LENGTHS)
def test_pure_python_mask_matches_naive_xor(n: int) -> None:
    from wssync.websocket.frames import _py_apply_mask

    data, mask = os.urandom(n), os.urandom(4)
    expected = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
    assert _py_apply_mask(data, mask) == expected
    assert _py_apply_mask(bytearray(data), mask) == expected


@pytest.mark.parametrize("n", MASK_LENGTHS)
def test_compiled_mask_matches_pure_python(n: int) -> None:
    from wssync.websocket.frames import _c_apply_mask, _py_apply_mask

    if _c_apply_mask is None:
        pytest.skip("the optional C accelerator is not built here")
    data, mask = os.urandom(n), os.urandom(4)
    assert _c_apply_mask(data, mask) == _py_apply_mask(data, mask)
    assert _c_apply_mask(bytearray(data), mask) == _py_apply_mask(data, mask)
    with pytest.raises(ValueError):
        _c_apply_mask(data, b"abc")


def test_accelerator_is_used_where_built() -> None:
    from wssync.websocket import frames as websocket_frames

    if shutil.which("cc") or shutil.which("gcc"):
        assert websocket_frames._c_apply_mask is not None, "a compiler exists but no build"
        assert websocket_frames.apply_mask is websocket_frames._c_apply_mask
