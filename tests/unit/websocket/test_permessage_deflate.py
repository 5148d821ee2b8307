"""permessage-deflate (RFC 7692) on plain bytes: negotiation, round trips, the bomb limit."""

from __future__ import annotations

import os
import tracemalloc
import zlib

import pytest

from wssync.config import Config
from wssync.errors import ProtocolError
from wssync.websocket.deflate import negotiate, parse_offers
from wssync.websocket.frames import Opcode, encode_frame
from wssync.websocket.protocol import Failure, Message, WebSocketProtocol

SETTINGS = Config()


def client_compress(data: bytes, wbits: int = 15) -> bytes:
    compressor = zlib.compressobj(6, zlib.DEFLATED, -wbits)
    out = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(b"\x00\x00\xff\xff")
    return out[:-4]


def client_inflate(data: bytes, wbits: int = 15) -> bytes:
    return zlib.decompressobj(-wbits).decompress(data + b"\x00\x00\xff\xff")


@pytest.mark.parametrize("offer, response", [
    ("permessage-deflate", "permessage-deflate"),
    ("permessage-deflate; client_max_window_bits", "permessage-deflate"),
    ('permessage-deflate; client_max_window_bits="10"',
     "permessage-deflate; client_max_window_bits=10"),
    ("permessage-deflate; server_no_context_takeover; client_no_context_takeover",
     "permessage-deflate; server_no_context_takeover; client_no_context_takeover"),
    ("permessage-deflate; server_max_window_bits=10",
     "permessage-deflate; server_max_window_bits=10"),
    ("permessage-deflate; server_max_window_bits=8",
     "permessage-deflate; server_max_window_bits=8"),
    # The first acceptable offer wins; unacceptable ones are skipped.
    ("permessage-deflate; server_max_window_bits=7, permessage-deflate; "
     "client_no_context_takeover", "permessage-deflate; client_no_context_takeover"),
    ("x-webkit-deflate-frame, permessage-deflate", "permessage-deflate"),
])
def test_negotiation_accepts(offer: str, response: str) -> None:
    deflate = negotiate([offer], SETTINGS)
    assert deflate is not None
    assert deflate.response_value() == response


@pytest.mark.parametrize("offer", [
    "permessage-deflate; unknown_param",
    "permessage-deflate; server_max_window_bits",  # needs a value
    "permessage-deflate; server_max_window_bits=16",
    "permessage-deflate; server_max_window_bits=0x0f",
    "permessage-deflate; client_max_window_bits=7",
    "permessage-deflate; server_no_context_takeover=1",
    "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
    "x-webkit-deflate-frame",
    "",
])
def test_negotiation_declines_malformed_offers(offer: str) -> None:
    assert negotiate([offer], SETTINGS) is None


def test_compression_can_be_turned_off() -> None:
    assert negotiate(["permessage-deflate"], Config(compression=False)) is None


def test_parse_offers_keeps_order_and_params() -> None:
    assert parse_offers(["a; x=1, b", "c; y"]) == [("a", {"x": "1"}), ("b", {}), ("c", {"y": None})]


@pytest.mark.parametrize("context_takeover", [True, False])
def test_outgoing_messages_inflate_with_a_standard_decoder(context_takeover: bool) -> None:
    offer = "permessage-deflate" + ("" if context_takeover else "; server_no_context_takeover")
    deflate = negotiate([offer], SETTINGS)
    assert deflate is not None
    decoder = zlib.decompressobj(-15)
    for message in [b"hello " * 100, b"", os.urandom(3000), b"hello " * 100]:
        compressed = deflate.compress(message)
        if not context_takeover:
            decoder = zlib.decompressobj(-15)
        assert decoder.decompress(compressed + b"\x00\x00\xff\xff") == message


def test_window_of_8_bits_sends_uncompressed_messages() -> None:
    deflate = negotiate(["permessage-deflate; server_max_window_bits=8"], SETTINGS)
    assert deflate is not None and not deflate.compress_outgoing
    proto = WebSocketProtocol(deflate=deflate)
    frame = proto.send_message("plain text")
    assert frame[0] & 0x40 == 0  # RSV1 clear: not compressed
    assert frame.endswith(b"plain text")


def test_protocol_reads_compressed_and_fragmented_messages() -> None:
    deflate = negotiate(["permessage-deflate; client_no_context_takeover"], SETTINGS)
    proto = WebSocketProtocol(deflate=deflate)
    mask = b"\x01\x02\x03\x04"
    text = "héllo wörld " * 500
    compressed = client_compress(text.encode())
    whole = encode_frame(Opcode.TEXT, compressed, True, True, mask)
    half = len(compressed) // 2
    fragmented = (encode_frame(Opcode.TEXT, compressed[:half], False, True, mask)
                  + encode_frame(Opcode.CONTINUATION, compressed[half:], True, False, mask))
    events = proto.receive_data(whole + fragmented)
    assert [type(e) for e in events] == [Message, Message]
    assert events[0].data == text and events[1].data == text  # type: ignore[union-attr]
    # Outgoing messages carry RSV1 and inflate back.
    frame = proto.send_message(text)
    assert frame[0] & 0x40
    payload_start = 4 if frame[1] == 126 else 2
    assert client_inflate(frame[payload_start:]).decode() == text


def test_rsv1_on_a_continuation_frame_is_1002() -> None:
    proto = WebSocketProtocol(deflate=negotiate(["permessage-deflate"], SETTINGS))
    mask = b"\x01\x02\x03\x04"
    compressed = client_compress(b"abcdef" * 10)
    data = (encode_frame(Opcode.TEXT, compressed[:5], False, True, mask)
            + encode_frame(Opcode.CONTINUATION, compressed[5:], True, True, mask))
    events = proto.receive_data(data)
    assert isinstance(events[-1], Failure) and events[-1].code == 1002


def test_rsv1_without_negotiation_is_1002() -> None:
    proto = WebSocketProtocol()
    events = proto.receive_data(encode_frame(Opcode.TEXT, client_compress(b"x"), True, True,
                                             b"\x01\x02\x03\x04"))
    assert isinstance(events[-1], Failure) and events[-1].code == 1002


def test_corrupt_compressed_data_fails() -> None:
    proto = WebSocketProtocol(deflate=negotiate(["permessage-deflate"], SETTINGS))
    events = proto.receive_data(encode_frame(Opcode.TEXT, b"\xff\xff\xff\xff", True, True,
                                             b"\x01\x02\x03\x04"))
    assert isinstance(events[-1], Failure) and events[-1].code == 1007


def test_deflate_bomb_is_stopped_without_allocating_it() -> None:
    """64 MiB of zeros compress to ~64 KiB; with a 1 MiB limit we must fail with
    1009 and never hold more than about the limit in memory."""
    bomb = client_compress(b"\x00" * (64 * 1024 * 1024))
    assert len(bomb) < 100_000
    deflate = negotiate(["permessage-deflate"], SETTINGS)
    proto = WebSocketProtocol(max_message_size=1024 * 1024, deflate=deflate)
    frame = encode_frame(Opcode.TEXT, bomb, True, True, b"\x01\x02\x03\x04")
    tracemalloc.start()
    try:
        events = proto.receive_data(frame)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert isinstance(events[-1], Failure) and events[-1].code == 1009
    assert peak < 8 * 1024 * 1024


def test_deflate_bomb_in_fragments_is_stopped() -> None:
    deflate = negotiate(["permessage-deflate"], SETTINGS)
    assert deflate is not None
    with pytest.raises(ProtocolError) as info:
        deflate.decompress(client_compress(b"\x00" * 5_000_000), False, 1_000_000)
    assert info.value.code == 1009
    proto = WebSocketProtocol(max_message_size=1_000_000,
                              deflate=negotiate(["permessage-deflate"], SETTINGS))
    mask = b"\x01\x02\x03\x04"
    compressed = client_compress(b"\x00" * 3_000_000)
    third = len(compressed) // 3
    data = (encode_frame(Opcode.TEXT, compressed[:third], False, True, mask)
            + encode_frame(Opcode.CONTINUATION, compressed[third:2 * third], False, False, mask)
            + encode_frame(Opcode.CONTINUATION, compressed[2 * third:], True, False, mask))
    events = proto.receive_data(data)
    assert isinstance(events[-1], Failure) and events[-1].code == 1009
