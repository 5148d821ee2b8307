"""The RFC 6455 frame codec on plain bytes (Sans-I/O): parse, build, mask.

Owns the wire format of single frames and the close-frame payload.  It does
not assemble messages, decode text or keep connection state; that is
:mod:`wssync.websocket.protocol`'s job.
"""

from __future__ import annotations

import struct
from enum import IntEnum
from typing import Callable, Optional, Tuple, Union

from ..config import default
from ..errors import ProtocolError


class Opcode(IntEnum):
    """Frame opcodes (RFC 6455 section 5.2)."""

    CONTINUATION = 0x0
    TEXT = 0x1
    BINARY = 0x2
    CLOSE = 0x8
    PING = 0x9
    PONG = 0xA


class CloseCode(IntEnum):
    """Close codes (RFC 6455 section 7.4.1 and the IANA registry)."""

    NORMAL_CLOSURE = 1000
    GOING_AWAY = 1001  # the server is stopping, or a browser leaves the page
    PROTOCOL_ERROR = 1002
    UNSUPPORTED_DATA = 1003
    NO_STATUS_RCVD = 1005  # reported for a close frame without a code; never sent
    ABNORMAL_CLOSURE = 1006  # reported when no close frame came at all; never sent
    INVALID_DATA = 1007  # e.g. invalid UTF-8 in a text message
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    MANDATORY_EXTENSION = 1010
    INTERNAL_ERROR = 1011
    SERVICE_RESTART = 1012
    TRY_AGAIN_LATER = 1013
    BAD_GATEWAY = 1014


# Used per message: a global is cheaper than an enum attribute on Python 3.9-3.11.
_TEXT, _BINARY = Opcode.TEXT, Opcode.BINARY
_DATA_OPCODES = frozenset((Opcode.CONTINUATION, Opcode.TEXT, Opcode.BINARY))
_CONTROL_OPCODES = frozenset((Opcode.CLOSE, Opcode.PING, Opcode.PONG))

# Codes a peer may send: 1005 and 1006 only describe what happened, and
# 1004 and 1015 are reserved; 3000-4999 belong to libraries and applications.
_VALID_CLOSE_CODES = frozenset(CloseCode) - {CloseCode.NO_STATUS_RCVD,
                                             CloseCode.ABNORMAL_CLOSURE}

_PACK_16 = struct.Struct("!BBH").pack
_PACK_64 = struct.Struct("!BBQ").pack
_UNPACK_16 = struct.Struct("!H").unpack_from
_UNPACK_64 = struct.Struct("!Q").unpack_from

# XOR in pieces: one big int.from_bytes over 16 KiB is slower than a few
# cache-sized pieces, and a piece's key can be built once.
_MASK_PIECE = 4096


class Frame:
    """One frame: opcode, FIN, RSV1 (for extensions) and the unmasked payload."""

    __slots__ = ("fin", "opcode", "payload", "rsv1")

    def __init__(self, opcode: int, payload: bytes, fin: bool = True, rsv1: bool = False) -> None:
        self.opcode = opcode
        self.payload = payload
        self.fin = fin
        self.rsv1 = rsv1

    def __repr__(self) -> str:
        return f"Frame(opcode={self.opcode}, fin={self.fin}, len={len(self.payload)})"


def _py_apply_mask(data: Union[bytes, bytearray], mask: bytes) -> bytes:
    """XOR ``data`` with the 4-byte ``mask`` repeated (masking and unmasking alike)."""
    n = len(data)
    if n <= _MASK_PIECE:
        if not n:
            return b""
        key = (mask * ((n >> 2) + 1))[:n]
        masked = int.from_bytes(data, "little") ^ int.from_bytes(key, "little")
        return masked.to_bytes(n, "little")
    view = memoryview(data)
    piece_key = int.from_bytes(mask * (_MASK_PIECE // 4), "little")
    from_bytes = int.from_bytes
    whole = n - n % _MASK_PIECE
    parts = [
        (from_bytes(view[i:i + _MASK_PIECE], "little") ^ piece_key).to_bytes(_MASK_PIECE, "little")
        for i in range(0, whole, _MASK_PIECE)
    ]
    if whole < n:
        # Pieces are a multiple of 4 long, so the key stays aligned.
        parts.append(_py_apply_mask(bytes(view[whole:]), mask))
    return b"".join(parts)


_c_apply_mask: Optional[Callable[[Union[bytes, bytearray], bytes], bytes]]
try:
    # The optional C build of the same function, where a compiler was found.
    from .._speedups import apply_mask as _c_apply_mask
except ImportError:  # pragma: no cover - depends on the build
    _c_apply_mask = None

apply_mask = _c_apply_mask if _c_apply_mask is not None else _py_apply_mask


def message_frame_parts(data: Union[str, bytes, bytearray, memoryview]) -> Tuple[Opcode, bytes]:
    """Opcode and payload of a message: text for ``str``, binary for bytes-like."""
    if isinstance(data, str):
        return _TEXT, data.encode("utf-8")
    return _BINARY, bytes(data)


# The two header bytes of every final, unmasked text or binary frame of up to
# 125 bytes: a server's small messages take theirs from here.
_SMALL_TEXT_HEADS = [bytes((0x80 | _TEXT, n)) for n in range(126)]
_SMALL_BINARY_HEADS = [bytes((0x80 | _BINARY, n)) for n in range(126)]


def encode_message(data: Union[str, bytes, bytearray, memoryview]) -> bytes:
    """One unmasked, uncompressed frame carrying the whole message ``data``
    (text for ``str``): what a server sends; as ``encode_frame`` of
    ``message_frame_parts``, without their calls for a small message."""
    if isinstance(data, str):
        payload = data.encode("utf-8")
        heads = _SMALL_TEXT_HEADS
    else:
        payload = bytes(data)
        heads = _SMALL_BINARY_HEADS
    n = len(payload)
    if n < 126:
        return heads[n] + payload
    return encode_frame(_TEXT if heads is _SMALL_TEXT_HEADS else _BINARY, payload)


def encode_frame(opcode: int, payload: bytes, fin: bool = True, rsv1: bool = False,
                 mask: Optional[bytes] = None) -> bytes:
    """The bytes of one frame; ``mask`` (4 bytes) is for client-to-server frames."""
    first = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode
    n = len(payload)
    mask_bit = 0x80 if mask is not None else 0
    if n < 126:
        header = bytes((first, mask_bit | n))
    elif n < 65536:
        header = _PACK_16(first, mask_bit | 126, n)
    else:
        header = _PACK_64(first, mask_bit | 127, n)
    if mask is not None:
        return header + mask + apply_mask(payload, mask)
    return header + payload


def encode_close_payload(code: Optional[int], reason: str = "") -> bytes:
    if code is None:
        return b""
    data = struct.pack("!H", code) + reason.encode("utf-8")
    if len(data) > 125:
        raise ValueError("close reason is longer than 123 bytes of UTF-8")
    return data


def decode_close_payload(payload: bytes) -> Tuple[int, str]:
    """``(code, reason)`` of a received close frame; 1005 (NO_STATUS_RCVD) when it
    carries no code."""
    if not payload:
        return CloseCode.NO_STATUS_RCVD, ""
    if len(payload) == 1:
        raise ProtocolError(CloseCode.PROTOCOL_ERROR, "close frame with a 1-byte payload")
    code = (payload[0] << 8) | payload[1]
    if code not in _VALID_CLOSE_CODES and not 3000 <= code <= 4999:
        raise ProtocolError(CloseCode.PROTOCOL_ERROR, f"invalid close code {code}")
    try:
        reason = payload[2:].decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError(CloseCode.INVALID_DATA, "close reason is not valid UTF-8") from None
    return code, reason


def is_valid_close_code(code: int) -> bool:
    """Whether an application may send ``code`` in a close frame."""
    return code in _VALID_CLOSE_CODES or 3000 <= code <= 4999


class FrameParser:
    """Incremental frame parser.

    ``expect_masked`` is True on the server (client frames must be masked)
    and False on the client.  ``max_size`` bounds one frame's payload (a
    larger announced length fails with 1009 before its bytes are buffered).
    ``allow_rsv1`` is set when an extension (permessage-deflate) gives RSV1 a
    meaning.
    """

    __slots__ = (
        "_buf", "_pos", "allow_rsv1", "empty", "expect_masked", "max_size", "pending",
    )

    def __init__(self, expect_masked: bool = True, max_size: int = default("max_message_size"),
                 allow_rsv1: bool = False) -> None:
        self.expect_masked = expect_masked
        self.max_size = max_size
        self.allow_rsv1 = allow_rsv1
        self._buf = bytearray()
        self._pos = 0
        # Nothing is buffered (read it, do not set it): a caller that took a frame
        # looks here before asking for the next one.  False may be stale, never True.
        self.empty = True
        # (opcode, rsv1, header length with mask, mask) of a frame not yet complete
        self.pending: Optional[Tuple[int, bool, int, Optional[bytes]]] = None

    def feed(self, data: bytes) -> None:
        self.empty = False
        if self._pos:
            if self._pos == len(self._buf):
                self._buf = bytearray(data)
                self._pos = 0
                return
            if self._pos >= len(self._buf) // 2:
                del self._buf[: self._pos]
                self._pos = 0
        self._buf += data

    @property
    def buffered(self) -> int:
        return len(self._buf) - self._pos

    def partial_payload(self, offset: int) -> bytes:
        """Unmasked payload bytes of the :attr:`pending` frame from ``offset`` on."""
        assert self.pending is not None
        _opcode, _rsv1, header, mask = self.pending
        start = self._pos + header + offset
        data = self._buf[start:]
        if mask is None:
            return bytes(data)
        shift = offset % 4  # the mask key continues where ``offset`` left it
        return apply_mask(data, mask[shift:] + mask[:shift])

    def next_frame(self) -> Optional[Frame]:
        """The next complete frame, or None; raises :class:`ProtocolError` at a bad one.

        When a frame's header has arrived but not all of its payload,
        :attr:`pending` describes it so :meth:`partial_payload` can show what
        arrived (for fail-fast UTF-8 checks on long text frames).
        """
        self.pending = None
        buf = self._buf
        pos = self._pos
        available = len(buf) - pos
        if available < 2:
            return None
        b0 = buf[pos]
        b1 = buf[pos + 1]
        opcode = b0 & 0x0F
        if b0 & 0x30 or (b0 & 0x40 and not self.allow_rsv1):
            raise ProtocolError(CloseCode.PROTOCOL_ERROR, "reserved bits set")
        if opcode not in _DATA_OPCODES and opcode not in _CONTROL_OPCODES:
            raise ProtocolError(CloseCode.PROTOCOL_ERROR, f"reserved opcode {opcode:#x}")
        # Comparisons, not bool() calls: these are bytes, so the top bit is >= 0x80.
        fin = b0 >= 0x80
        masked = b1 >= 0x80
        if masked != self.expect_masked:
            raise ProtocolError(CloseCode.PROTOCOL_ERROR,
                                "frame masking is wrong for this direction")
        length = b1 & 0x7F
        header = 2
        if opcode >= 8:
            if not fin:
                raise ProtocolError(CloseCode.PROTOCOL_ERROR, "fragmented control frame")
            if length > 125:
                raise ProtocolError(CloseCode.PROTOCOL_ERROR,
                                    "control frame payload over 125 bytes")
            if b0 & 0x40:
                raise ProtocolError(CloseCode.PROTOCOL_ERROR, "RSV1 set on a control frame")
        if length == 126:
            if available < 4:
                return None
            length = _UNPACK_16(buf, pos + 2)[0]
            header = 4
        elif length == 127:
            if available < 10:
                return None
            length = _UNPACK_64(buf, pos + 2)[0]
            if length >> 63:
                raise ProtocolError(CloseCode.PROTOCOL_ERROR, "frame length has the high bit set")
            header = 10
        if length > self.max_size:
            raise ProtocolError(CloseCode.MESSAGE_TOO_BIG, "frame too large")
        if masked:
            start = pos + header + 4  # of the payload, after the mask key
            end = start + length
            if len(buf) < end:
                if len(buf) >= start:  # the mask key is complete
                    self.pending = (opcode, bool(b0 & 0x40), header + 4,
                                    bytes(buf[start - 4:start]))
                return None
            payload = apply_mask(buf[start:end], bytes(buf[start - 4:start]))
        else:
            end = pos + header + length
            if len(buf) < end:
                self.pending = (opcode, bool(b0 & 0x40), header, None)
                return None
            payload = bytes(buf[pos + header:end])
        if end == len(buf):
            self._buf = bytearray()
            self._pos = 0
            self.empty = True
        else:
            self._pos = end
        return Frame(opcode, payload, fin, (b0 & 0x40) != 0)
