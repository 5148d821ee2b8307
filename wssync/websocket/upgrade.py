"""The HTTP/1.1 -> WebSocket upgrade: the handler registered for ``Upgrade: websocket``.

It validates the handshake (:mod:`wssync.websocket.handshake`), asks the
application layer (a :class:`wssync.contract.WebSocketAcceptor`) whether to
accept it, and answers the HTTP connection with the refusal or with the ``101``
head and the :class:`WebSocketConnection` that takes the connection over.  It
writes nothing itself: the HTTP connection sends what it returns.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, List, Optional, Tuple, Union

from ..errors import HttpError
from ..http.response import Response
from ..http.upgrade import Switch, UpgradeHandler
from ..http.writer import error_answer
from .connection import WebSocketConnection
from .handshake import switching_protocols, validate_request

if TYPE_CHECKING:
    from ..config import Config
    from ..contract import WebSocketAcceptor, WebSocketApplication
    from ..http.connection import HttpConnection
    from ..http.request import Request


class WebSocketAccept:
    """The application's yes to a handshake: its side of the new connection, the
    chosen subprotocol and extra response headers."""

    __slots__ = ("app", "headers", "subprotocol")

    def __init__(self, app: WebSocketApplication, subprotocol: Optional[str] = None,
                 headers: Optional[List[Tuple[str, str]]] = None) -> None:
        self.app = app
        self.subprotocol = subprotocol
        self.headers = headers or []


def websocket_upgrade(config: Config, app: WebSocketAcceptor) -> UpgradeHandler:
    """The upgrade handler that lets ``app`` accept WebSocket handshakes."""

    def upgrade(conn: HttpConnection, request: Request) -> Union[Response, Switch]:
        try:
            key = validate_request(request)
        except HttpError as exc:
            return error_answer(exc)
        decision = app.accept_websocket(conn, request)
        if isinstance(decision, Response):
            return decision
        head, deflate = switching_protocols(
            request, key, decision.subprotocol, decision.headers, config)
        return Switch(head, WebSocketConnection(config, decision.app, decision.subprotocol,
                                                deflate))

    return upgrade
