"""``StickySessions``: a request for a session another worker owns goes to that worker.

With ``--workers N`` the kernel gives each new connection to any worker, but a
session that lives in one process (Socket.IO's, polled over many requests)
must be served there.  The application names a request's owner
(:meth:`wssync.App.session_owner`, from the session id); when it is another
worker, its connection, with the bytes from the request's head on, is passed to
that worker through the :class:`~wssync.scale.handover.HandoverPort`, and
leaves this one without a byte lost.  The bridge asks this at every request
head (``hand_over``).  A TLS connection cannot be passed (its keys live in this
process): it is served here, where the session is unknown.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from .io.ratelog import RateLimitedLog
from .scale.handover import HandoverPort, process_token

if TYPE_CHECKING:
    from .app import App
    from .http.connection import HttpConnection
    from .http.request import Request

log = logging.getLogger("wssync.server")

_OVER_TLS = RateLimitedLog(log, logging.WARNING, "sessions of other workers over TLS")


class StickySessions:
    """The bridge's ``hand_over``: pass ``conn`` on when ``request`` is another worker's."""

    def __init__(self, app: App, port: HandoverPort) -> None:
        self.app = app
        self.port = port

    def __call__(self, conn: HttpConnection, request: Request) -> bool:
        owner = self.app.session_owner(request)
        if owner is None or owner == process_token():
            return False
        transport, parser = conn.transport, conn.parser
        if transport is None or parser is None or transport.get_write_buffer_size():
            return False  # an answer is still going out: served here
        if transport.secure:
            _OVER_TLS.event(transport.reactor, request.remote_addr,
                            "a request for a session of another worker came over TLS and "
                            "cannot be passed on; terminate TLS in front of the workers "
                            "(nginx, HAProxy) or let clients use the websocket transport only")
            return False
        data = parser.since_head()
        if data is None or not self.port.send(owner, transport.sock, transport.peername,
                                              transport.proxy_peername, data):
            return False
        transport.abort()  # this process's descriptor only: the owner's lives on
        return True
