"""Broadcasts across processes: the record a broadcast travels as, and the
``Broker`` interface that carries records between servers.

A broker is a pipe of records between the servers that share it (the worker
processes of one supervisor, or servers on several hosts sharing Redis).  It
knows nothing of WebSockets: the hub encodes a broadcast once into a record,
publishes it once, and fans out what arrives.  Which broker a ``--broker`` URL
names is the server's choice (:func:`wssync._startup.broker_from`), not this
module's, which imports no broker.  Publishing happens on the
reactor thread and must never block it; delivery may come from any thread
(the server hands it to the reactor, bounded).
"""

from __future__ import annotations

import os
import struct
from typing import Any, Callable, Dict, Optional, Protocol, Tuple, Union

# origin (8 bytes: which server published it), kind, path length; then the
# path (UTF-8) and the payload.
_HEADER = struct.Struct("!8sBH")
_TEXT, _BINARY = 1, 2
_NO_PATH = 0xFFFF  # path length meaning "every WebSocket"
MAX_PATH = 0xFFFE

Deliver = Callable[[bytes], None]


class Broker(Protocol):
    """Carries records to the other servers; the shapes a server relies on."""

    def start(self, deliver: Deliver) -> None:
        """Begin carrying records; ``deliver(record)`` is called for every record
        another server published (from any thread, in publish order per
        publisher).  Called in the serving process (after a fork)."""

    def publish(self, record: bytes) -> None:
        """Send a record to the others; never blocks (drops and counts instead)."""

    def close(self) -> None:
        """Stop carrying records and release threads and sockets."""

    def stats(self) -> Dict[str, Any]:
        """Counters for ``/stats``: at least ``published``, ``received``, ``dropped``."""


def new_origin() -> bytes:
    """A random identity for one serving server: records it published come back
    to it through some brokers (Redis delivers to every subscriber)."""
    return os.urandom(8)


def encode_record(origin: bytes, path: Optional[str], message: Union[str, bytes]) -> bytes:
    path_bytes = b"" if path is None else path.encode("utf-8", "surrogateescape")
    if len(path_bytes) > MAX_PATH:
        raise ValueError("broadcast path too long")
    if isinstance(message, str):
        kind, payload = _TEXT, message.encode("utf-8")
    else:
        kind, payload = _BINARY, bytes(message)
    header = _HEADER.pack(origin, kind, _NO_PATH if path is None else len(path_bytes))
    return b"".join((header, path_bytes, payload))


def decode_record(record: bytes) -> Tuple[bytes, Optional[str], Union[str, bytes]]:
    """``(origin, path, message)``; ``ValueError`` for anything malformed."""
    if len(record) < _HEADER.size:
        raise ValueError("record too short")
    origin, kind, path_length = _HEADER.unpack_from(record)
    offset = _HEADER.size
    path: Optional[str] = None
    if path_length != _NO_PATH:
        end = offset + path_length
        if end > len(record):
            raise ValueError("record path truncated")
        path = record[offset:end].decode("utf-8", "surrogateescape")
        offset = end
    payload = record[offset:]
    if kind == _TEXT:
        return origin, path, payload.decode("utf-8")  # UnicodeDecodeError is a ValueError
    if kind == _BINARY:
        return origin, path, payload
    raise ValueError(f"unknown record kind {kind}")

