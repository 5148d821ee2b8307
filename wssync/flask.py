"""``Sock``: the flask-sock API, served by wssync's blocking-style WebSocket handlers.

An application written for flask-sock changes one import line
(``from wssync.flask import Sock``) and runs under ``python -m wssync --app
module:app``: the Flask app keeps its HTTP views, and its WebSocket routes are
answered by wssync on the same port.  ``Sock`` declares each route to Flask as
a ``websocket=True`` URL rule (so a plain GET there gets Flask's 400, as under
flask-sock) and leaves a matcher in ``app.extensions["wssync"]``, which
:meth:`wssync.App.match_websocket` consults for handshakes through the mounted
WSGI app.  Handlers run on a thread of their own inside the app context and a
request context of the handshake request.  As every wssync WebSocket route,
a Sock route accepts browsers only from pages of the server's own origin
unless ``SOCK_SERVER_OPTIONS`` says ``"origins"`` (``"*"``, a list, a predicate).

This module imports Flask; ``import wssync`` never imports it.  It owns no
socket and no thread: :mod:`wssync.bridge` runs the handler.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Dict, Iterable, Mapping, Optional, TypeVar, Union, cast

from flask import Blueprint, Flask
from flask import Request as FlaskRequest
from flask.blueprints import BlueprintSetupState
from werkzeug.exceptions import HTTPException

from .app import WebSocketRoute
from .errors import ConnectionClosed as _Closed
from .http.request import Request
from .http.wsgi import EXTENSION, request_environ
from .websocket.frames import CloseCode
from .websocket.handle import BlockingWebSocket

__all__ = ["ConnectionClosed", "Sock", "WebSocket"]

_F = TypeVar("_F", bound=Callable[..., Any])
_HANDLER = "_wssync_websocket_handler"  # marks a view function as a Sock route


class ConnectionClosed(_Closed):
    """The WebSocket is closed: :class:`wssync.ConnectionClosed` under the names
    flask-sock's applications catch, ``reason`` the close code and ``message`` its
    text (``code`` is the close code too)."""

    def __init__(self, reason: int = CloseCode.NO_STATUS_RCVD,
                 message: Optional[str] = None) -> None:
        super().__init__(reason, message or "")
        # simple-websocket's names win here: its ``reason`` is the code.
        self.reason = reason  # type: ignore[assignment]
        self.message = message


class WebSocket:
    """The ``ws`` a Sock handler gets: ``receive``, ``send`` and ``close`` as in
    flask-sock, over a :class:`~wssync.websocket.handle.BlockingWebSocket` (``wssync_ws``)."""

    __slots__ = ("wssync_ws",)

    def __init__(self, ws: BlockingWebSocket) -> None:
        self.wssync_ws = ws

    @property
    def connected(self) -> bool:
        return not self.wssync_ws.closed

    @property
    def subprotocol(self) -> Optional[str]:
        return self.wssync_ws.subprotocol

    def receive(self, timeout: Optional[float] = None) -> Union[str, bytes, None]:
        """The next message; None after ``timeout`` seconds without one."""
        try:
            return self.wssync_ws.receive(timeout)
        except _Closed as exc:
            raise ConnectionClosed(exc.code, exc.reason) from None

    def send(self, data: Union[str, bytes]) -> None:
        try:
            self.wssync_ws.send(data)
        except _Closed as exc:
            raise ConnectionClosed(exc.code, exc.reason) from None

    def close(self, reason: Optional[int] = None, message: Optional[str] = None) -> None:
        """Close with code ``reason`` (1000) and text ``message``."""
        self.wssync_ws.close(CloseCode.NORMAL_CLOSURE if reason is None else reason,
                             message or "")


class _FlaskWebSockets:
    """The Sock routes of one Flask app, as wssync looks them up at a handshake."""

    def __init__(self, app: Flask) -> None:
        self.app = app

    def match_websocket(self, request: Request) -> Optional[WebSocketRoute]:
        environ = request_environ(request)
        adapter = self.app.create_url_adapter(FlaskRequest(environ))
        if adapter is None:
            return None
        try:
            rule, args = adapter.match(return_rule=True)
        except HTTPException:
            return None
        handler = getattr(self.app.view_functions.get(rule.endpoint), _HANDLER, None)
        if handler is None:
            return None
        options: Dict[str, Any] = self.app.config.get("SOCK_SERVER_OPTIONS") or {}
        subprotocols: Iterable[str] = options.get("subprotocols") or ()
        return WebSocketRoute(request.path, None, None, None, subprotocols,
                              options.get("origins"),
                              functools.partial(self._run, handler, environ, args))

    def _run(self, handler: Callable[..., Any], environ: Dict[str, Any],
             args: Mapping[str, Any], ws: BlockingWebSocket) -> None:
        # The request context pushes the app context too: request, g, current_app
        # and session work as in a view.
        with self.app.request_context(environ):
            try:
                handler(WebSocket(ws), **args)
            except _Closed:  # (flask-sock's name for it too)
                pass  # the peer went away: a normal end, as under flask-sock


def _install(app: Flask) -> None:
    if EXTENSION not in app.extensions:
        app.extensions[EXTENSION] = _FlaskWebSockets(app)


class Sock:
    """WebSocket routes for a Flask app: ``Sock(app)``, or ``Sock()`` and
    :meth:`init_app` later; ``@sock.route(path)`` registers ``handler(ws, **url_args)``."""

    def __init__(self, app: Optional[Flask] = None) -> None:
        self.app: Optional[Flask] = None
        self.bp: Optional[Blueprint] = None  # routes declared before init_app
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        self.app = app
        _install(app)
        if self.bp is not None:
            app.register_blueprint(self.bp)

    def route(self, path: str, bp: Optional[Blueprint] = None,
              **kwargs: Any) -> Callable[[_F], _F]:
        """Decorator: ``handler(ws, **url_args)`` serves WebSocket connections on the
        Flask URL rule ``path`` (on blueprint ``bp`` if given; ``kwargs`` go to the
        rule, as for ``app.route``)."""

        def decorator(handler: _F) -> _F:
            @functools.wraps(handler)
            def view(**_args: Any) -> Any:
                # Only reached when another server runs the app: wssync answers
                # the handshake before Flask sees it.
                return "this WebSocket route needs the wssync server\n", 500

            setattr(view, _HANDLER, handler)
            kwargs["websocket"] = True
            if bp is not None:
                bp.record_once(_install_on)
                bp.route(path, **kwargs)(view)
            elif self.app is not None:
                self.app.route(path, **kwargs)(view)
            else:
                if self.bp is None:
                    self.bp = Blueprint("wssync_sock", __name__)
                self.bp.route(path, **kwargs)(view)
            return handler

        return decorator


def _install_on(state: BlueprintSetupState) -> None:
    _install(cast(Flask, state.app))
