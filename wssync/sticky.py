"""``StickySessions``: a request for a session another worker owns goes to that worker.

With ``--workers N`` the kernel gives each new connection to any worker, but a
session that lives in one process (Socket.IO's, polled over many requests)
must be served there.  The application names a request's owner
(:meth:`wssync.App.session_owner`, from the session id); when it is another
worker, its connection, with the bytes from the request's head on, is passed to
that worker through the :class:`~wssync.scale.handover.HandoverPort`, and
leaves this one without a byte lost.  The bridge asks this at every request
head (``hand_over``).  A TLS connection cannot be passed (its keys live in this
process): the owner gets one end of a local socket pair instead, and this
process relays the clear text between the two (:mod:`wssync.io.splice`).
"""

from __future__ import annotations

import socket
from functools import partial
from typing import TYPE_CHECKING, Any, Callable

from .io.splice import splice
from .scale.handover import HandoverPort, process_token

if TYPE_CHECKING:
    from .app import App
    from .http.connection import HttpConnection
    from .http.request import Request
    from .io.protocol import BaseProtocol
    from .io.transport import Transport


class StickySessions:
    """The bridge's ``hand_over``: pass ``conn`` on when ``request`` is another worker's."""

    def __init__(self, app: App, port: HandoverPort,
                 pair: Callable[[socket.socket, Any, BaseProtocol], Transport]) -> None:
        self.app = app
        self.port = port
        self.pair = pair  # a transport for our end of a relay (sock, peer, protocol)

    def __call__(self, conn: HttpConnection, request: Request) -> bool:
        owner = self.app.session_owner(request)
        if owner is None or owner == process_token():
            return False
        transport, parser = conn.transport, conn.parser
        if transport is None or parser is None or transport.get_write_buffer_size():
            return False  # an answer is still going out: served here
        data = parser.since_head()
        if data is None:
            return False
        # Encrypted here: relayed.  (A connection relayed to us is secure but
        # clear text on a local pair: passed on as it is, not relayed again.)
        if transport._ops.secure:
            return self._relay(owner, transport, data)
        if not self.port.send(owner, transport.sock, transport.peername,
                              transport.proxy_peername, data, secure=transport.secure):
            return False
        transport.abort()  # this process's descriptor only: the owner's lives on
        return True

    def _relay(self, owner: str, transport: Transport, data: bytes) -> bool:
        """A TLS connection stays here (its keys do): the owner gets one end of
        a local pair, and this process relays the clear text both ways."""
        near, far = socket.socketpair()
        try:
            passed = self.port.send(owner, far, transport.peername, transport.proxy_peername,
                                    data, secure=True)
        finally:
            far.close()
        if not passed:
            near.close()
            return False
        near.setblocking(False)
        splice(transport, partial(self.pair, near, transport.peername))
        return True
