"""Who the client is behind a proxy: ``X-Forwarded-For``, ``X-Forwarded-Proto`` and
RFC 7239 ``Forwarded``, believed only from trusted peers.

Sans-I/O: plain values in, an address and a scheme out; nothing here touches a
socket or knows how the request arrived.

The rules (those of uvicorn and gunicorn, made explicit):

- The headers are read only when the connection's peer is trusted
  (``forwarded_allow_ips``: IP addresses and networks, ``*`` for every peer,
  ``unix`` for peers on a Unix domain socket).  Anyone else could write them.
- ``X-Forwarded-For`` lists the hops, client first; each proxy appends the
  address it saw.  Walking from the right, the first address that is not a
  trusted proxy is the client (with ``*`` every hop is trusted, so the leftmost
  one is).  ``Forwarded`` is walked the same way on its ``for=`` values.
- The ``X-Forwarded-*`` pair wins over ``Forwarded``: ``Forwarded`` is read
  only when the request has neither ``X-Forwarded-For`` nor
  ``X-Forwarded-Proto``.  (A proxy passes on headers it does not set itself, so
  only the family the proxy writes can be believed; nginx and HAProxy write
  ``X-Forwarded-For``.)
- The scheme is the last ``X-Forwarded-Proto`` value, or the ``proto=`` of the
  chosen ``Forwarded`` element: ``http`` or ``https`` (``ws``/``wss`` count
  as those).
- Anything malformed (a hop that is not an IP address, such as ``unknown`` or
  an obfuscated name, an empty hop, a broken ``Forwarded`` pair, another
  scheme) is ignored: the TCP peer and its scheme stay.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

__all__ = ["UNIX", "TrustedPeers", "resolve", "trusted_peers"]

UNIX = "unix"  # the forwarded_allow_ips entry that trusts Unix domain socket peers

IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]
Address = Tuple[str, int]  # (host, port); port 0 when the proxy did not say

_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_QUOTED = r'"(?:[^"\\\x00-\x08\x0a-\x1f\x7f]|\\[\t\x20-\x7e])*"'
_PAIR = re.compile(rf"[ \t]*({_TOKEN})=({_TOKEN}|{_QUOTED})[ \t]*")
_ESCAPE = re.compile(r"\\(.)")
_PORT = re.compile(r"[0-9]{1,5}")
_SCHEMES = {"http": "http", "https": "https", "ws": "http", "wss": "https"}


def _ip(text: str) -> Optional[IPAddress]:
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped  # "::ffff:127.0.0.1" from a dual-stack socket is 127.0.0.1
    return ip


class TrustedPeers:
    """The peers whose forwarded headers are believed, from a comma-separated spec:
    IP addresses, networks (``10.0.0.0/8``, ``fd00::/8``), ``*`` and ``unix``."""

    __slots__ = ("_all", "_known", "_networks", "_unix", "spec")

    def __init__(self, spec: str) -> None:
        self.spec = spec
        self._all = False
        self._unix = False
        self._networks: List[Network] = []
        # Peer host -> trusted: each connection (and each proxied request) asks,
        # and an address parse costs microseconds.  Bounded: cleared when full.
        self._known: Dict[str, bool] = {}
        for item in spec.split(","):
            item = item.strip()
            if not item:
                continue
            if item == "*":
                self._all = self._unix = True
            elif item.lower() == UNIX:
                self._unix = True
            else:
                try:
                    network = ipaddress.ip_network(item, strict=False)
                except ValueError:
                    raise ValueError(f"forwarded_allow_ips: {item!r} is not an IP address, a "
                                     f"network, '*' or 'unix'") from None
                if isinstance(network, ipaddress.IPv6Network):
                    mapped = network.network_address.ipv4_mapped
                    if mapped is not None and network.prefixlen >= 96:
                        network = ipaddress.ip_network(f"{mapped}/{network.prefixlen - 96}",
                                                       strict=False)
                self._networks.append(network)

    @property
    def trusts_everyone(self) -> bool:
        return self._all

    def trusts(self, peer: Any) -> bool:
        """Whether a connection from ``peer`` (a socket address; anything else is a
        Unix domain socket's peer) may tell who the client is."""
        if not isinstance(peer, tuple):
            return self._unix
        host = str(peer[0])
        known = self._known.get(host)
        if known is None:
            if len(self._known) >= 1024:
                self._known.clear()
            known = self._known[host] = self.trusts_ip(_ip(host))
        return known

    def trusts_ip(self, ip: Optional[IPAddress]) -> bool:
        if self._all:
            return True
        if ip is None:
            return False
        return any(ip in network for network in self._networks)

    def __repr__(self) -> str:
        return f"TrustedPeers({self.spec!r})"


@functools.lru_cache(maxsize=16)
def trusted_peers(spec: str) -> TrustedPeers:
    """The parsed ``forwarded_allow_ips`` (cached: every connection asks)."""
    return TrustedPeers(spec)


def _node(text: str) -> Optional[Tuple[IPAddress, int]]:
    """An address as proxies write it: ``192.0.2.1``, ``192.0.2.1:80``, ``2001:db8::1``,
    ``[2001:db8::1]`` or ``[2001:db8::1]:80``; None for anything else."""
    port = 0
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket:
            return None
        if rest:
            if rest[0] != ":" or _PORT.fullmatch(rest[1:]) is None:
                return None
            port = int(rest[1:])
    elif text.count(":") == 1:
        host, _, digits = text.partition(":")
        if _PORT.fullmatch(digits) is None:
            return None
        port = int(digits)
    else:
        host = text
    ip = _ip(host) if "%" not in host else None
    if ip is None or port > 65535:
        return None
    return ip, port


def _pick(hops: Sequence[str], trusted: TrustedPeers) -> Optional[Tuple[int, Address]]:
    """The client among ``hops`` (client first, nearest proxy last) and its index."""
    if not hops:
        return None
    indexes = [0] if trusted.trusts_everyone else range(len(hops) - 1, -1, -1)
    for index in indexes:
        node = _node(hops[index])
        if node is None:
            return None  # nothing left of a hop we cannot read can be believed
        ip, port = node
        if not trusted.trusts_ip(ip) or index == 0:
            return index, (str(ip), port)
    return None


def _forwarded_elements(value: str) -> Optional[List[Dict[str, str]]]:
    """RFC 7239 ``Forwarded`` as a list of {parameter: value}; None if malformed."""
    elements: List[Dict[str, str]] = []
    current: Dict[str, str] = {}
    pos = 0
    end = len(value)
    while True:
        match = _PAIR.match(value, pos)
        if match is None:
            return None
        name, raw = match.group(1).lower(), match.group(2)
        if raw.startswith('"'):
            raw = _ESCAPE.sub(r"\1", raw[1:-1])
        if name in current:
            return None
        current[name] = raw
        pos = match.end()
        if pos == end:
            elements.append(current)
            return elements
        separator = value[pos]
        pos += 1
        if separator == ",":
            elements.append(current)
            current = {}
        elif separator != ";":
            return None


def _values(headers: Mapping[str, Sequence[str]], name: str) -> List[str]:
    """The comma-separated items of every ``name`` field, stripped (empty ones kept)."""
    return [item.strip() for value in headers.get(name, ()) for item in value.split(",")]


def resolve(headers: Mapping[str, Sequence[str]], peer: Any,
            trusted: TrustedPeers) -> Tuple[Any, Optional[str]]:
    """``(client address, scheme)`` for a request from ``peer``.

    ``headers`` maps lower-case names to their values (``Headers.by_name()``).
    The address is ``(host, port)`` (port 0 when the proxy did not say) or
    ``peer`` itself; the scheme is ``"http"``, ``"https"`` or None when no
    trusted header said.
    """
    # Per request, so the common case (no such header) costs three look-ups.
    if ("x-forwarded-for" not in headers and "x-forwarded-proto" not in headers
            and "forwarded" not in headers) or not trusted.trusts(peer):
        return peer, None
    if "x-forwarded-for" in headers or "x-forwarded-proto" in headers:
        address = peer
        if "x-forwarded-for" in headers:
            picked = _pick(_values(headers, "x-forwarded-for"), trusted)
            if picked is not None:
                address = picked[1]
        protos = _values(headers, "x-forwarded-proto")
        scheme = _SCHEMES.get(protos[-1].lower()) if protos else None
        return address, scheme
    elements = _forwarded_elements(", ".join(headers["forwarded"]))
    if elements is None or any("for" not in element for element in elements):
        return peer, None
    picked = _pick([element["for"] for element in elements], trusted)
    if picked is None:
        return peer, None
    index, address = picked
    proto = elements[index].get("proto")
    return address, _SCHEMES.get(proto.lower()) if proto is not None else None
