"""wssync: a synchronous HTTP/1.1 and WebSocket server on one port, standard library only."""

from ._version import __version__
from .app import App
from .errors import (
    ConnectionClosed,
    HandshakeRefused,
    HttpError,
    ProtocolError,
    RequestBodyError,
    SendTimeout,
    ServingWhileImported,
    TlsError,
    WssyncError,
)
from .http.request import Headers, Request
from .http.response import Response
from .server import Server
from .websocket.frames import CloseCode
from .websocket.handle import BlockingWebSocket, WebSocket

__all__ = [
    "App",
    "BlockingWebSocket",
    "CloseCode",
    "ConnectionClosed",
    "HandshakeRefused",
    "Headers",
    "HttpError",
    "ProtocolError",
    "Request",
    "RequestBodyError",
    "Response",
    "SendTimeout",
    "Server",
    "ServingWhileImported",
    "TlsError",
    "WebSocket",
    "WssyncError",
    "__version__",
]
