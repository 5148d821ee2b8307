"""wssync: a synchronous HTTP/1.1 and WebSocket server on one port, standard library only."""

from ._version import __version__
from .app import App
from .request import Headers, Request
from .response import Response
from .server import Server
from .websocket import WebSocket

__all__ = ["App", "Headers", "Request", "Response", "Server", "WebSocket", "__version__"]
