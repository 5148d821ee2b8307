"""``ProtocolRegistry``: the one door through which a connection gets its protocol object.

A connection is asked for at three moments, and each has a registration:

- ``first()``: a connection was accepted.  The preambles (a PROXY protocol
  header reader, ...) wrap the first protocol, outermost first, and each hands
  the connection on to the next once it has read what it needs.
- ``after_tls(alpn)``: a TLS handshake finished; the protocol registered for the
  ALPN name the client chose replaces the first one (None keeps it).  The TLS
  context offers ``alpn_protocols()``, in registration order.
- ``upgrades``: an HTTP/1.1 request asked to switch protocols; the handler
  registered for its ``Upgrade`` token decides (HTTP/1.1 -> WebSocket is one such
  registration, made where the server is wired).

The registry holds factories and handlers only: it never parses a byte, and it
knows nothing of HTTP (an upgrade handler's arguments and answer belong to the
HTTP package, :mod:`wssync.http.upgrade`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional

from .protocol import ProtocolFactory

if TYPE_CHECKING:
    from .protocol import BaseProtocol

# Builds a preamble around the factory of the protocol that follows it.
PreambleFactory = Callable[[ProtocolFactory], "BaseProtocol"]


class ProtocolRegistry:
    """Which protocol object a connection gets: at accept, after TLS, on an Upgrade."""

    __slots__ = ("_alpn", "_first", "_preambles", "upgrades")

    def __init__(self) -> None:
        self._first: Optional[ProtocolFactory] = None
        self._preambles: List[PreambleFactory] = []
        self._alpn: Dict[str, ProtocolFactory] = {}
        # Upgrade token (lower case) -> handler; the HTTP connection reads it
        # per request, so it is a plain dict and not a method call.
        self.upgrades: Dict[str, Any] = {}

    def set_first(self, factory: ProtocolFactory) -> None:
        """The protocol a connection speaks once its preambles are done."""
        self._first = factory

    def add_preamble(self, preamble: PreambleFactory) -> None:
        """Run ``preamble`` before the first protocol (added last runs innermost)."""
        self._preambles.append(preamble)

    def add_alpn(self, name: str, factory: ProtocolFactory) -> None:
        """Offer ``name`` in the TLS handshake; a client that picks it gets ``factory()``."""
        if not name or len(name.encode("ascii")) > 255:
            raise ValueError(f"an ALPN protocol name is 1 to 255 ASCII bytes, not {name!r}")
        self._alpn[name] = factory

    def add_upgrade(self, token: str, handler: Any) -> None:
        """Let ``handler`` answer HTTP/1.1 requests with ``Upgrade: <token>``."""
        if not token or not token.isascii() or any(c in token for c in ' \t,;"()'):
            raise ValueError(f"an Upgrade token is one HTTP token, not {token!r}")
        self.upgrades[token.lower()] = handler

    def first(self) -> BaseProtocol:
        """The protocol object for a connection just accepted."""
        factory = self._first
        if factory is None:
            raise RuntimeError("no first protocol registered")
        for preamble in reversed(self._preambles):
            factory = _wrapped(preamble, factory)
        return factory()

    def alpn_protocols(self) -> List[str]:
        """The names to offer in the TLS handshake, in registration order."""
        return list(self._alpn)

    def after_tls(self, alpn: Optional[str]) -> Optional[BaseProtocol]:
        """The protocol for ``alpn`` (the client's choice), or None to keep the first."""
        factory = self._alpn.get(alpn) if alpn else None
        return factory() if factory is not None else None


def _wrapped(preamble: PreambleFactory, inner: ProtocolFactory) -> ProtocolFactory:
    return lambda: preamble(inner)
