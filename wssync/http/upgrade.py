"""The door through which an HTTP/1.1 request switches its connection to another protocol.

An upgrade handler is registered for one ``Upgrade`` token (see
:class:`wssync.io.registry.ProtocolRegistry`); the connection calls it with
itself and the request, and it answers with a :class:`Response` (a refusal:
sent, then the connection closes) or a :class:`Switch`: the ``101`` head to
write and the protocol object that takes the connection over, with the bytes
that followed the request.  This module knows no particular protocol.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Dict, Optional, Union

if TYPE_CHECKING:
    from ..io.transport import BaseProtocol
    from .connection import HttpConnection
    from .request import Request
    from .response import Response


class Switch:
    """An upgrade handler's yes: the exact ``101`` head bytes and the protocol
    object that speaks on the connection after them."""

    __slots__ = ("head", "protocol")

    def __init__(self, head: bytes, protocol: BaseProtocol) -> None:
        self.head = head
        self.protocol = protocol


UpgradeHandler = Callable[["HttpConnection", "Request"], Union["Response", Switch]]


def upgrade_handler(request: Request,
                    upgrades: Dict[str, UpgradeHandler]) -> Optional[UpgradeHandler]:
    """The handler of the protocol ``request`` asks to switch to, or None.

    Only HTTP/1.1 has upgrades, and ``Upgrade`` counts only with the
    ``upgrade`` token in ``Connection`` (else a proxy forwarded a hop-by-hop
    header it should have dropped).  The client lists protocols in its order
    of preference: the first registered one wins; an unregistered one is
    ignored and the request is plain HTTP (RFC 9110 7.8).
    """
    if request.version != "HTTP/1.1" or not upgrades:
        return None
    headers = request.headers
    if "upgrade" not in headers.tokens("connection"):
        return None
    for token in headers.tokens("upgrade"):
        handler = upgrades.get(token)
        if handler is not None:
            return handler
    return None
