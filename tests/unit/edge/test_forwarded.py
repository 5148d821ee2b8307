"""``wssync.edge.forwarded`` on plain values: whom to trust, and who the client is."""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import pytest

from wssync.edge.forwarded import TrustedPeers, resolve, trusted_peers

PROXY = ("127.0.0.1", 40000)  # a trusted peer under the default "127.0.0.1"
STRANGER = ("203.0.113.9", 40000)


def headers(**fields: Any) -> Dict[str, List[str]]:
    """``x_forwarded_for="a, b"`` -> {"x-forwarded-for": ["a, b"]}; a list: repeated fields."""
    return {name.replace("_", "-"): value if isinstance(value, list) else [value]
            for name, value in fields.items()}


def client(fields: Dict[str, List[str]], peer: Any = PROXY,
           spec: str = "127.0.0.1") -> Tuple[Any, Optional[str]]:
    return resolve(fields, peer, TrustedPeers(spec))


# -- whom to trust ------------------------------------------------------------------


@pytest.mark.parametrize("spec, peer, trusted", [
    ("127.0.0.1", ("127.0.0.1", 1), True),
    ("127.0.0.1", ("127.0.0.2", 1), False),
    ("127.0.0.1", ("::ffff:127.0.0.1", 1, 0, 0), True),  # a dual-stack socket's IPv4 peer
    ("10.0.0.0/8, 192.168.1.1", ("10.20.30.40", 1), True),
    ("10.0.0.0/8, 192.168.1.1", ("192.168.1.2", 1), False),
    ("fd00::/8", ("fd12::1", 1, 0, 0), True),
    ("::1", ("::1", 1, 0, 0), True),
    ("*", ("198.51.100.1", 1), True),
    ("*", "", True),  # a Unix socket's peer
    ("unix", "", True),
    ("unix", ("127.0.0.1", 1), False),
    ("127.0.0.1", "", False),
    ("127.0.0.1", None, False),
    ("", ("127.0.0.1", 1), False),  # trust nobody
])
def test_trusted_peers(spec: str, peer: Any, trusted: bool) -> None:
    assert TrustedPeers(spec).trusts(peer) is trusted


@pytest.mark.parametrize("spec", ["localhost", "127.0.0.1/33", "10.0.0.0/8;10.1.0.0/16",
                                  "300.1.1.1"])
def test_bad_trust_entries_are_named(spec: str) -> None:
    with pytest.raises(ValueError, match="forwarded_allow_ips"):
        TrustedPeers(spec)


def test_parsed_specs_are_shared() -> None:
    assert trusted_peers("127.0.0.1, ::1") is trusted_peers("127.0.0.1, ::1")


# -- X-Forwarded-For and X-Forwarded-Proto -------------------------------------------


def test_no_header_keeps_the_peer() -> None:
    assert client({}) == (PROXY, None)
    assert client(headers(user_agent="x")) == (PROXY, None)


def test_the_trusted_proxys_word_is_taken() -> None:
    assert client(headers(x_forwarded_for="198.51.100.7",
                          x_forwarded_proto="https")) == (("198.51.100.7", 0), "https")


def test_an_untrusted_peer_is_not_believed() -> None:
    fields = headers(x_forwarded_for="198.51.100.7", x_forwarded_proto="https",
                     forwarded="for=198.51.100.8;proto=https")
    assert client(fields, peer=STRANGER) == (STRANGER, None)


def test_the_rightmost_untrusted_hop_is_the_client() -> None:
    # The client itself sent "1.1.1.1" to nginx, which appended what it saw.
    fields = headers(x_forwarded_for="1.1.1.1, 198.51.100.7, 10.0.0.2")
    assert client(fields, spec="127.0.0.1, 10.0.0.0/8")[0] == ("198.51.100.7", 0)
    assert client(fields)[0] == ("10.0.0.2", 0)  # 10.0.0.2 is not trusted here


def test_every_hop_trusted_gives_the_leftmost() -> None:
    fields = headers(x_forwarded_for="10.0.0.3, 10.0.0.2")
    assert client(fields, spec="127.0.0.1, 10.0.0.0/8")[0] == ("10.0.0.3", 0)


def test_star_trusts_every_hop() -> None:
    fields = headers(x_forwarded_for="198.51.100.1, 198.51.100.2")
    assert client(fields, peer=STRANGER, spec="*")[0] == ("198.51.100.1", 0)


def test_repeated_fields_are_one_list() -> None:
    fields = headers(x_forwarded_for=["198.51.100.1", "198.51.100.2"])
    assert client(fields)[0] == ("198.51.100.2", 0)


@pytest.mark.parametrize("value, expected", [
    ("2001:db8::7", ("2001:db8::7", 0)),
    ("[2001:db8::7]", ("2001:db8::7", 0)),
    ("[2001:db8::7]:4711", ("2001:db8::7", 4711)),
    ("198.51.100.7:4711", ("198.51.100.7", 4711)),
    ("2001:DB8:0::7", ("2001:db8::7", 0)),  # written the usual way
])
def test_address_forms(value: str, expected: Tuple[str, int]) -> None:
    assert client(headers(x_forwarded_for=value))[0] == expected


@pytest.mark.parametrize("value", ["unknown", "", "198.51.100.7,", "evil.example",
                                   "198.51.100.7:99999", "[2001:db8::7", "1.2.3.4:x",
                                   "fe80::1%eth0", "198.51.100.7 198.51.100.8"])
def test_malformed_for_keeps_the_peer(value: str) -> None:
    assert client(headers(x_forwarded_for=value))[0] == PROXY


def test_a_malformed_hop_stops_the_walk() -> None:
    # Nothing left of a hop we cannot read is believed, even if it looks like an address.
    fields = headers(x_forwarded_for="198.51.100.7, garbage, 10.0.0.2")
    assert client(fields, spec="127.0.0.1, 10.0.0.0/8")[0] == PROXY


@pytest.mark.parametrize("value, scheme", [
    ("https", "https"), ("HTTP", "http"), ("wss", "https"), ("ws", "http"),
    ("http, https", "https"),  # the nearest proxy's word: the last value
    ("ftp", None), ("", None), ("https;x", None),
])
def test_proto(value: str, scheme: Optional[str]) -> None:
    assert client(headers(x_forwarded_proto=value)) == (PROXY, scheme)


# -- RFC 7239 Forwarded ------------------------------------------------------------------


def test_forwarded_for_and_proto() -> None:
    fields = headers(forwarded='for=198.51.100.7;proto=https;by=10.0.0.1')
    assert client(fields) == (("198.51.100.7", 0), "https")


def test_forwarded_quoted_ipv6_with_port() -> None:
    fields = headers(forwarded='For="[2001:db8:cafe::17]:4711"')
    assert client(fields) == (("2001:db8:cafe::17", 4711), None)


def test_forwarded_walks_elements_from_the_right() -> None:
    fields = headers(forwarded='for=1.1.1.1;proto=http, for=198.51.100.7;proto=https, '
                               'for=10.0.0.2;proto=http')
    assert client(fields, spec="127.0.0.1, 10.0.0.0/8") == (("198.51.100.7", 0), "https")


def test_forwarded_in_several_fields() -> None:
    fields = headers(forwarded=["for=198.51.100.7", "for=198.51.100.8"])
    assert client(fields)[0] == ("198.51.100.8", 0)


@pytest.mark.parametrize("value", [
    "for=unknown", "for=_hidden", "for=", "for=198.51.100.7;for=198.51.100.8",
    'for="198.51.100.7', "for=198.51.100.7;", "proto=https", "for=198.51.100.7 x",
    "for=198.51.100.7,,for=198.51.100.8", 'for="[2001:db8::1]:80:1"',
])
def test_malformed_forwarded_keeps_the_peer(value: str) -> None:
    assert client(headers(forwarded=value)) == (PROXY, None)


def test_x_forwarded_wins_over_forwarded() -> None:
    fields = headers(forwarded="for=198.51.100.8;proto=https",
                     x_forwarded_for="198.51.100.7")
    assert client(fields) == (("198.51.100.7", 0), None)
    fields = headers(forwarded="for=198.51.100.8", x_forwarded_proto="https")
    assert client(fields) == (PROXY, "https")  # the X- family alone is read


def test_unix_socket_peer() -> None:
    fields = headers(x_forwarded_for="198.51.100.7")
    assert client(fields, peer=None) == (None, None)  # not trusted by default
    assert client(fields, peer=None, spec="unix")[0] == ("198.51.100.7", 0)
