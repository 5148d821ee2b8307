"""The client side of Socket.IO v5 over engine.io v4's WebSocket transport, Sans-I/O.

Encodes the packets a client sends (namespace connects, events, acks, pongs) as
the text messages of one WebSocket, and decodes what the server sends into
:class:`Packet` values.  Long-polling, the upgrade from it and binary attachments
are not spoken: a binary event or ack decodes as ``kind == "binary"`` (its
attachments, the binary messages after it, are skipped) and encoding one raises
:class:`BinaryNotSupported`.

This module owns no socket, no clock and no thread, and imports nothing of wssync:
the Locust user (:mod:`wssync.locust_socketio`) does the I/O.
"""

from __future__ import annotations

import json
from typing import Any, NamedTuple, Optional, Sequence, Union

__all__ = ["PONG", "QUERY", "BinaryNotSupported", "Decoder", "Packet", "ack_packet",
           "connect_packet", "disconnect_packet", "event_packet", "unpack_args"]

PONG = "3"  # engine.io's answer to the server's ping ("2")
QUERY = "EIO=4&transport=websocket"  # asks an engine.io v4 server for this transport

# engine.io v4 packet types (the first character of a text message)
_EIO_KINDS = {"0": "open", "1": "close", "2": "ping", "3": "pong", "6": "noop"}
_EIO_MESSAGE = "4"
# Socket.IO v5 packet types (the character after engine.io's "4")
_SIO_KINDS = {0: "connect", 1: "disconnect", 2: "event", 3: "ack", 4: "connect_error",
              5: "binary", 6: "binary"}
_CONNECT, _DISCONNECT, _EVENT, _ACK = 0, 1, 2, 3


class BinaryNotSupported(TypeError):
    """An event or ack with ``bytes`` in its arguments: Socket.IO sends those as
    binary attachments, which this client does not."""


class Packet(NamedTuple):
    """One decoded message.  ``kind`` is engine.io's (``open``, ``close``, ``ping``,
    ``pong``, ``noop``) or Socket.IO's (``connect``, ``connect_error``,
    ``disconnect``, ``event``, ``ack``, ``binary``); ``data`` is the decoded JSON
    (for ``open`` the handshake, for ``event`` ``[name, *args]``); ``size`` the
    message's length in characters."""

    kind: str
    namespace: str = "/"
    id: Optional[int] = None
    data: Any = None
    size: int = 0


class Decoder:
    """Decodes the messages of one connection, in order (it skips the binary
    messages that follow a binary packet)."""

    __slots__ = ("_skip",)

    def __init__(self) -> None:
        self._skip = 0  # attachments of a refused binary packet still to come

    def decode(self, message: Union[str, bytes]) -> Optional[Packet]:
        """The packet in ``message``; None for a message that carries none (an
        attachment, skipped).  Raises ``ValueError`` for what is not engine.io v4."""
        if isinstance(message, bytes):
            if self._skip:
                self._skip -= 1
                return None
            raise ValueError("a binary message without a binary packet before it")
        if not message:
            raise ValueError("an empty engine.io packet")
        head = message[0]
        if head != _EIO_MESSAGE:
            kind = _EIO_KINDS.get(head)
            if kind is None:
                raise ValueError(f"unknown engine.io packet type {head!r}")
            body = message[1:]
            data = json.loads(body) if kind == "open" else (body or None)
            return Packet(kind, data=data, size=len(message))
        return self._socketio(message[1:], len(message))

    def _socketio(self, text: str, size: int) -> Packet:
        if not text or not text[0].isdigit() or int(text[0]) not in _SIO_KINDS:
            raise ValueError(f"unknown Socket.IO packet {text[:20]!r}")
        kind = _SIO_KINDS[int(text[0])]
        at = 1
        if kind == "binary":  # "<n>-" attachments come next: skipped, as the packet
            dash = text.find("-", at)
            if dash < 0 or not text[at:dash].isdigit():
                raise ValueError(f"a binary packet without its attachment count {text[:20]!r}")
            self._skip = int(text[at:dash])
            at = dash + 1
        namespace = "/"
        if text.startswith("/", at):
            comma = text.find(",", at)
            end = len(text) if comma < 0 else comma
            namespace = text[at:end].split("?", 1)[0]
            at = end + 1
        start = at
        while at < len(text) and text[at].isdigit():
            at += 1
        ack_id = int(text[start:at]) if at > start else None
        data = json.loads(text[at:]) if at < len(text) else None
        return Packet(kind, namespace, ack_id, data, size)


def _message(kind: int, namespace: str, ack_id: Optional[int] = None,
             data: Any = None, with_data: bool = False) -> str:
    prefix = "" if namespace == "/" else namespace + ","
    digits = "" if ack_id is None else str(ack_id)
    body = json.dumps(data, separators=(",", ":")) if with_data else ""
    return f"{_EIO_MESSAGE}{kind}{prefix}{digits}{body}"


def connect_packet(namespace: str = "/", auth: Any = None) -> str:
    """Connect to ``namespace``, with ``auth`` (a JSON object) if given."""
    if not namespace.startswith("/"):
        raise ValueError(f"a Socket.IO namespace starts with '/', not {namespace!r}")
    if auth is not None and not isinstance(auth, dict):
        raise TypeError(f"Socket.IO auth is a dict (a JSON object), not {type(auth).__name__}")
    return _message(_CONNECT, namespace, data=auth, with_data=auth is not None)


def disconnect_packet(namespace: str = "/") -> str:
    return _message(_DISCONNECT, namespace)


def event_packet(namespace: str, event: str, args: Sequence[Any],
                 ack_id: Optional[int] = None) -> str:
    """Emit ``event`` with ``args``; with ``ack_id`` the server answers with an ack."""
    _refuse_binary(args)
    return _message(_EVENT, namespace, ack_id, [event, *args], with_data=True)


def ack_packet(namespace: str, ack_id: int, args: Sequence[Any]) -> str:
    """Answer the server's event ``ack_id`` with ``args``."""
    _refuse_binary(args)
    return _message(_ACK, namespace, ack_id, list(args), with_data=True)


def unpack_args(args: Sequence[Any]) -> Any:
    """Arguments as python-socketio's ``Client.call`` returns them: None for none,
    the value for one, a tuple for more."""
    if not args:
        return None
    return args[0] if len(args) == 1 else tuple(args)


def _refuse_binary(value: Any, depth: int = 0) -> None:
    if isinstance(value, (bytes, bytearray, memoryview)):
        raise BinaryNotSupported(
            "bytes in a Socket.IO packet are sent as binary attachments, which "
            "wssync.locust_socketio does not support: send text (base64, for example)")
    if depth > 32:
        return  # deeper structures are left to json.dumps
    if isinstance(value, dict):
        for item in value.values():
            _refuse_binary(item, depth + 1)
    elif isinstance(value, (list, tuple)):
        for item in value:
            _refuse_binary(item, depth + 1)
