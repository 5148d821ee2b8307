"""The PROXY protocol (HAProxy's ``send-proxy`` and ``send-proxy-v2``): a header a TCP
proxy sends before anything else, naming the client it accepted the connection from.

Sans-I/O: :func:`parse` takes the bytes received so far and says "need more",
"here is the header and its length", or raises :class:`ProxyProtocolError`.
It never touches a socket.  Both versions of the specification are read:

- v1, text: ``PROXY TCP4 <src> <dst> <sport> <dport>\\r\\n`` (or ``TCP6``, or
  ``UNKNOWN`` followed by anything), at most 107 bytes with the CRLF.
- v2, binary: a 12-byte signature, version and command (``PROXY`` or
  ``LOCAL``), family and transport, a 16-bit length, the addresses, then TLVs,
  which are skipped.

``LOCAL`` (the proxy's own health check), ``UNKNOWN`` and families other than
TCP over IPv4 or IPv6 carry no client: :attr:`ProxyHeader.source` is None and
the connection's own addresses stand.  Anything else that is not a header as
the specification writes it is an error, as soon as the bytes show it.
"""

from __future__ import annotations

import ipaddress
import re
import struct
from typing import NamedTuple, Optional, Tuple

from ..errors import ProxyProtocolError

__all__ = ["V1_MAX", "V2_SIGNATURE", "ProxyHeader", "ProxyProtocolError", "parse"]

V1_PREFIX = b"PROXY "
V1_MAX = 107  # the longest v1 header, CRLF included
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
_V2_HEAD = struct.Struct("!12sBBH")  # signature, version|command, family|transport, length
_V1_LINE = re.compile(
    rb"PROXY (?:(TCP4|TCP6) ([0-9a-fA-F.:]+) ([0-9a-fA-F.:]+) (0|[1-9][0-9]{0,4}) "
    rb"(0|[1-9][0-9]{0,4})|UNKNOWN(?: [\x20-\x7e]*)?)\r\n")
_IPV4 = struct.Struct("!4s4sHH")
_IPV6 = struct.Struct("!16s16sHH")

Address = Tuple[str, int]


class ProxyHeader(NamedTuple):
    """What a PROXY header said."""

    version: int  # 1 or 2
    source: Optional[Address]  # the client; None: keep the connection's own (LOCAL, UNKNOWN)
    destination: Optional[Address]  # the address the client connected to, at the proxy


def parse(data: bytes) -> Optional[Tuple[ProxyHeader, int]]:
    """The header at the start of ``data`` and its length in bytes, or None when
    more bytes are needed; raises :class:`ProxyProtocolError` when ``data``
    cannot start a valid header."""
    if data[:1] == b"P":
        return _parse_v1(data)
    if data[:1] == b"\r":
        return _parse_v2(data)
    if not data:
        return None
    raise ProxyProtocolError("no PROXY protocol header")


def _parse_v1(data: bytes) -> Optional[Tuple[ProxyHeader, int]]:
    if not data.startswith(V1_PREFIX[:len(data)]):
        raise ProxyProtocolError("no PROXY protocol header")
    end = data.find(b"\r\n", 0, V1_MAX)
    if end < 0:
        if len(data) >= V1_MAX:
            raise ProxyProtocolError("PROXY v1 header longer than 107 bytes")
        if b"\n" in data:
            raise ProxyProtocolError("PROXY v1 header ends without CRLF")
        return None
    length = end + 2
    match = _V1_LINE.fullmatch(data, 0, length)
    if match is None:
        raise ProxyProtocolError("malformed PROXY v1 header")
    family = match.group(1)
    if family is None:
        return ProxyHeader(1, None, None), length
    cls = ipaddress.IPv4Address if family == b"TCP4" else ipaddress.IPv6Address
    try:
        source = str(cls(match.group(2).decode("ascii")))
        destination = str(cls(match.group(3).decode("ascii")))
    except ValueError:
        raise ProxyProtocolError(f"malformed {family.decode()} address in PROXY v1 "
                                 f"header") from None
    sport, dport = int(match.group(4)), int(match.group(5))
    if sport > 65535 or dport > 65535:
        raise ProxyProtocolError("port out of range in PROXY v1 header")
    return ProxyHeader(1, (source, sport), (destination, dport)), length


def _parse_v2(data: bytes) -> Optional[Tuple[ProxyHeader, int]]:
    if not data.startswith(V2_SIGNATURE[:len(data)]):
        raise ProxyProtocolError("no PROXY protocol header")
    if len(data) < _V2_HEAD.size:
        return None
    _, version_command, family_transport, size = _V2_HEAD.unpack_from(data)
    version, command = version_command >> 4, version_command & 0x0F
    if version != 2:
        raise ProxyProtocolError(f"PROXY protocol version {version} is not 2")
    if command > 1:
        raise ProxyProtocolError(f"unknown PROXY v2 command {command}")
    length = _V2_HEAD.size + size
    if len(data) < length:
        return None
    if command == 0:  # LOCAL: the proxy speaks for itself
        return ProxyHeader(2, None, None), length
    family, transport = family_transport >> 4, family_transport & 0x0F
    if family > 3 or transport > 2:
        raise ProxyProtocolError("unknown PROXY v2 address family or transport")
    block = data[_V2_HEAD.size:length]
    if transport == 1 and family in (1, 2):  # TCP over IPv4 or IPv6
        layout = _IPV4 if family == 1 else _IPV6
        if size < layout.size:
            raise ProxyProtocolError("PROXY v2 address block too short")
        src, dst, sport, dport = layout.unpack_from(block)
        make = ipaddress.IPv4Address if family == 1 else ipaddress.IPv6Address
        tlvs = block[layout.size:]
        _check_tlvs(tlvs)
        return ProxyHeader(2, (str(make(src)), sport), (str(make(dst)), dport)), length
    # UNSPEC, UNIX or datagrams: nothing we can use as a client address.
    return ProxyHeader(2, None, None), length


def _check_tlvs(tlvs: bytes) -> None:
    """TLVs are skipped, but they must fill the rest of the header exactly."""
    pos = 0
    while pos < len(tlvs):
        if len(tlvs) - pos < 3:
            raise ProxyProtocolError("truncated TLV in PROXY v2 header")
        (size,) = struct.unpack_from("!H", tlvs, pos + 1)
        pos += 3 + size
        if pos > len(tlvs):
            raise ProxyProtocolError("TLV longer than the PROXY v2 header")
