"""``wssync.edge.proxy_protocol.parse`` on bytes: v1 and v2 headers, whole and in pieces."""

from __future__ import annotations

import socket
import struct
from typing import Optional

import pytest

from wssync.edge.proxy_protocol import V2_SIGNATURE, ProxyHeader, ProxyProtocolError, parse
from wssync.errors import WssyncError

PAYLOAD = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"


def v2(command: int = 1, family: int = 1, transport: int = 1, block: Optional[bytes] = None,
       tlvs: bytes = b"", version: int = 2) -> bytes:
    """A v2 header; ``block`` defaults to 198.51.100.7:4711 -> 10.0.0.1:443 for IPv4,
    2001:db8::7:4711 -> 2001:db8::1:443 for IPv6."""
    if block is None:
        if family == 2:
            block = (socket.inet_pton(socket.AF_INET6, "2001:db8::7")
                     + socket.inet_pton(socket.AF_INET6, "2001:db8::1")
                     + struct.pack("!HH", 4711, 443))
        else:
            block = (socket.inet_aton("198.51.100.7") + socket.inet_aton("10.0.0.1")
                     + struct.pack("!HH", 4711, 443))
    body = block + tlvs
    return (V2_SIGNATURE + bytes([version << 4 | command, family << 4 | transport])
            + struct.pack("!H", len(body)) + body)


def tlv(kind: int, value: bytes) -> bytes:
    return struct.pack("!BH", kind, len(value)) + value


def whole(header: bytes) -> ProxyHeader:
    """Parse ``header`` followed by a request; the length must stop at the request."""
    parsed = parse(header + PAYLOAD)
    assert parsed is not None
    result, length = parsed
    assert length == len(header)
    return result


# -- v1 ---------------------------------------------------------------------------------


def test_v1_tcp4() -> None:
    assert whole(b"PROXY TCP4 198.51.100.7 10.0.0.1 4711 443\r\n") == \
        ProxyHeader(1, ("198.51.100.7", 4711), ("10.0.0.1", 443))


def test_v1_tcp6() -> None:
    assert whole(b"PROXY TCP6 2001:db8::7 2001:db8::1 4711 443\r\n") == \
        ProxyHeader(1, ("2001:db8::7", 4711), ("2001:db8::1", 443))


@pytest.mark.parametrize("header", [b"PROXY UNKNOWN\r\n",
                                    b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n"])
def test_v1_unknown_names_no_client(header: bytes) -> None:
    assert whole(header) == ProxyHeader(1, None, None)


def test_v1_longest_header_is_accepted() -> None:
    header = (b"PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
              b"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n")
    assert len(header) == 104
    unknown = b"PROXY UNKNOWN " + b"x" * 91 + b"\r\n"
    assert len(unknown) == 107
    assert whole(header).source == ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535)
    assert whole(unknown).source is None


@pytest.mark.parametrize("header", [
    b"PROXY TCP4 198.51.100.7 10.0.0.1 4711 443\n",  # LF alone
    b"PROXY TCP4 198.51.100.7 10.0.0.1 4711\r\n",  # a port missing
    b"PROXY TCP4  198.51.100.7 10.0.0.1 4711 443\r\n",  # two spaces
    b"PROXY TCP4 198.51.100.7 10.0.0.1 4711 443 \r\n",
    b"PROXY TCP4 2001:db8::7 10.0.0.1 4711 443\r\n",  # IPv6 in TCP4
    b"PROXY TCP6 198.51.100.7 10.0.0.1 4711 443\r\n",  # IPv4 in TCP6
    b"PROXY TCP4 198.51.100.300 10.0.0.1 4711 443\r\n",
    b"PROXY TCP4 198.51.100.07 10.0.0.1 4711 443\r\n",  # a leading zero
    b"PROXY TCP4 198.51.100.7 10.0.0.1 65536 443\r\n",
    b"PROXY TCP4 198.51.100.7 10.0.0.1 04711 443\r\n",
    b"PROXY TCP4 198.51.100.7 10.0.0.1 -1 443\r\n",
    b"PROXY UDP4 198.51.100.7 10.0.0.1 4711 443\r\n",
    b"proxy TCP4 198.51.100.7 10.0.0.1 4711 443\r\n",
    b"PROXY\r\n",
    b"PROXY UNKNOWN\x00\r\n",
])
def test_v1_malformed(header: bytes) -> None:
    with pytest.raises(ProxyProtocolError):
        parse(header + PAYLOAD)


def test_v1_too_long() -> None:
    with pytest.raises(ProxyProtocolError, match="longer than 107"):
        parse(b"PROXY UNKNOWN " + b"x" * 92 + b"\r\n")
    with pytest.raises(ProxyProtocolError, match="longer than 107"):
        parse(b"PROXY UNKNOWN " + b"x" * 200)  # no line end in sight


def test_v1_in_pieces_needs_more_until_the_crlf() -> None:
    header = b"PROXY TCP4 198.51.100.7 10.0.0.1 4711 443\r\n"
    for end in range(len(header)):
        assert parse(header[:end]) is None, end
    parsed = parse(header)
    assert parsed is not None and parsed[1] == len(header)


# -- v2 ---------------------------------------------------------------------------------


def test_v2_proxy_ipv4() -> None:
    assert whole(v2()) == ProxyHeader(2, ("198.51.100.7", 4711), ("10.0.0.1", 443))


def test_v2_proxy_ipv6() -> None:
    assert whole(v2(family=2)) == ProxyHeader(2, ("2001:db8::7", 4711), ("2001:db8::1", 443))


def test_v2_local_names_no_client() -> None:
    assert whole(v2(command=0, family=0, transport=0, block=b"")) == ProxyHeader(2, None, None)
    # LOCAL may still carry addresses (of the health check): they are not the client's.
    assert whole(v2(command=0)).source is None


@pytest.mark.parametrize("family, transport, block", [
    (0, 0, b""),  # UNSPEC
    (3, 1, b"\x00" * 216),  # UNIX stream
    (1, 2, None),  # UDP over IPv4
])
def test_v2_other_families_name_no_client(family: int, transport: int,
                                          block: Optional[bytes]) -> None:
    assert whole(v2(family=family, transport=transport, block=block)).source is None


def test_v2_tlvs_are_skipped() -> None:
    tlvs = tlv(0x01, b"http/1.1") + tlv(0x05, b"\x01" * 32) + tlv(0x04, b"")  # ALPN, ID, NOOP
    assert whole(v2(tlvs=tlvs)).source == ("198.51.100.7", 4711)
    assert whole(v2(family=2, tlvs=tlvs)).source == ("2001:db8::7", 4711)


@pytest.mark.parametrize("tlvs", [b"\x01\x00", tlv(0x01, b"abc")[:-1], b"\x01\x00\x05abcd"])
def test_v2_broken_tlvs(tlvs: bytes) -> None:
    with pytest.raises(ProxyProtocolError, match="TLV"):
        parse(v2(tlvs=tlvs) + PAYLOAD)


@pytest.mark.parametrize("header, match", [
    (v2(version=1), "version 1"),
    (v2(command=2), "command"),
    (v2(family=4), "family"),
    (v2(transport=3), "family or transport"),
    (v2(block=b"\x00" * 11), "too short"),
    (v2(family=2, block=b"\x00" * 35), "too short"),
])
def test_v2_malformed(header: bytes, match: str) -> None:
    with pytest.raises(ProxyProtocolError, match=match):
        parse(header + PAYLOAD)


def test_v2_in_pieces_needs_more_until_its_length() -> None:
    header = v2(tlvs=tlv(0x01, b"http/1.1"))
    for end in range(len(header)):
        assert parse(header[:end]) is None, end
    parsed = parse(header)
    assert parsed is not None and parsed[1] == len(header)


def test_v2_truncated_is_not_complete() -> None:
    header = v2(family=2)
    assert parse(header[:-1]) is None  # a reader waits (under its timeout) for the rest


# -- neither ---------------------------------------------------------------------------------


@pytest.mark.parametrize("data", [
    b"GET / HTTP/1.1\r\n", b"\x16\x03\x01\x02\x00",  # HTTP, a TLS ClientHello
    b"PRI * HTTP/2.0\r\n", b"PROXZ", b"\r\n\r\n\x00\r\nQUIT!", b"\r\r", b" PROXY ",
])
def test_bad_signature(data: bytes) -> None:
    with pytest.raises(ProxyProtocolError, match="no PROXY protocol header"):
        parse(data)


def test_bad_signature_is_seen_at_the_first_wrong_byte() -> None:
    with pytest.raises(ProxyProtocolError):
        parse(b"PRX")
    with pytest.raises(ProxyProtocolError):
        parse(b"\r\n\r\n\x01")
    assert parse(b"") is None and parse(b"PRO") is None and parse(b"\r\n\r\n\x00") is None


def test_a_bad_header_is_a_value_error_of_the_wssync_family() -> None:
    with pytest.raises(ProxyProtocolError) as caught:
        parse(b"GET / HTTP/1.1\r\n")
    assert isinstance(caught.value, ValueError) and isinstance(caught.value, WssyncError)
