"""The Sans-I/O Socket.IO v5 / engine.io v4 client packets, checked against
python-socketio's own packet codec where it has one (an encoder no one here wrote)."""

from __future__ import annotations

from typing import Any, Optional

import pytest

from wssync.socketio_protocol import (
    PONG,
    QUERY,
    BinaryNotSupported,
    Decoder,
    Packet,
    ack_packet,
    connect_packet,
    disconnect_packet,
    event_packet,
    unpack_args,
)

sio_packet = pytest.importorskip("socketio.packet")


def theirs(kind: int, data: Any = None, namespace: Optional[str] = None,
           ack_id: Optional[int] = None) -> str:
    """python-socketio's encoding, inside an engine.io message packet ("4")."""
    encoded = sio_packet.Packet(kind, data=data, namespace=namespace, id=ack_id).encode()
    assert isinstance(encoded, str)
    return "4" + encoded


def test_the_transport_query_and_the_pong() -> None:
    assert QUERY == "EIO=4&transport=websocket"
    assert PONG == "3"


@pytest.mark.parametrize(("namespace", "auth"), [
    ("/", None), ("/", {"token": "good"}), ("/chat", None), ("/chat", {"a": [1, "é"]}),
])
def test_connect_packets_are_python_socketio_s(namespace: str, auth: Any) -> None:
    assert connect_packet(namespace, auth) == theirs(sio_packet.CONNECT, auth, namespace)


def test_connect_auth_must_be_an_object() -> None:
    with pytest.raises(TypeError, match="auth is a dict"):
        connect_packet("/", "token")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="starts with '/'"):
        connect_packet("chat")


@pytest.mark.parametrize(("namespace", "ack_id"), [("/", None), ("/", 7), ("/chat", 12)])
def test_event_packets_are_python_socketio_s(namespace: str, ack_id: Optional[int]) -> None:
    args = (1, "two", {"three": [3.0, None, True]})
    assert event_packet(namespace, "echo", args, ack_id) == \
        theirs(sio_packet.EVENT, ["echo", *args], namespace, ack_id)


def test_ack_and_disconnect_packets() -> None:
    assert ack_packet("/", 3, [1]) == theirs(sio_packet.ACK, [1], "/", 3) == "433[1]"
    assert ack_packet("/chat", 4, []) == "43/chat,4[]"
    assert disconnect_packet() == "41"
    assert disconnect_packet("/chat") == "41/chat,"


def test_bytes_anywhere_in_the_arguments_are_refused_clearly() -> None:
    for args in ([b"x"], [{"deep": [bytearray(b"x")]}], [[memoryview(b"x")]]):
        with pytest.raises(BinaryNotSupported, match="binary attachments"):
            event_packet("/", "upload", args)
    with pytest.raises(BinaryNotSupported):
        ack_packet("/", 1, [{"file": b"x"}])
    assert issubclass(BinaryNotSupported, TypeError)


def test_engine_io_packets() -> None:
    decoder = Decoder()
    opened = decoder.decode('0{"sid":"abc","upgrades":[],"pingInterval":25000,'
                            '"pingTimeout":20000,"maxPayload":1000000}')
    assert opened is not None and opened.kind == "open" and opened.data["sid"] == "abc"
    assert decoder.decode("2") == Packet("ping", size=1)
    assert decoder.decode("3") == Packet("pong", size=1)
    assert decoder.decode("1") == Packet("close", size=1)
    assert decoder.decode("6") == Packet("noop", size=1)


@pytest.mark.parametrize(("kind", "name", "data", "namespace", "ack_id"), [
    (2, "event", ["news", {"n": 1}], "/", None),
    (2, "event", ["question", 20], "/chat", 5),
    (3, "ack", [1, "two"], "/", 12),
    (3, "ack", [], "/chat", 1),
    (0, "connect", {"sid": "xyz"}, "/chat", None),
    (4, "connect_error", {"message": "bad token"}, "/", None),
    (1, "disconnect", None, "/chat", None),
])
def test_decodes_what_python_socketio_encodes(kind: int, name: str, data: Any, namespace: str,
                                              ack_id: Optional[int]) -> None:
    message = theirs(kind, data, namespace, ack_id)
    assert Decoder().decode(message) == Packet(name, namespace, ack_id, data, len(message))


def test_a_binary_packet_is_decoded_as_such_and_its_attachments_skipped() -> None:
    encoded = sio_packet.Packet(sio_packet.EVENT, data=["file", b"ab", b"cd"],
                                namespace="/chat", id=3).encode()
    head, *attachments = encoded
    decoder = Decoder()
    packet = decoder.decode("4" + head)
    assert packet is not None
    assert (packet.kind, packet.namespace, packet.id, packet.data[0]) == ("binary", "/chat", 3,
                                                                         "file")
    assert [decoder.decode(a) for a in attachments] == [None, None]
    with pytest.raises(ValueError, match="binary message without"):
        decoder.decode(b"stray")  # past the announced attachments


@pytest.mark.parametrize("message", ["", "9", "4", "49", "4x", '0{"sid"', "42[1", "451["])
def test_what_is_not_engine_io_v4_is_an_error(message: str) -> None:
    with pytest.raises(ValueError):
        Decoder().decode(message)


def test_a_namespace_s_query_is_not_part_of_its_name() -> None:
    assert Decoder().decode('40/chat?x=1,{"sid":"a"}') == Packet(
        "connect", "/chat", None, {"sid": "a"}, 23)


def test_arguments_unpacked_as_python_socketio_s_call() -> None:
    assert unpack_args([]) is None
    assert unpack_args([[1, 2]]) == [1, 2]
    assert unpack_args([1, "two"]) == (1, "two")
