"""The application: HTTP routes (method + path) and WebSocket routes.

``App`` only maps paths to user callables; it neither parses bytes nor runs
anything itself.  Path segments written ``<name>`` match one segment and land
in ``request.path_params``.  A WebSocket route also says which web pages may
open it (``origins``): by default only pages of the server's own origin, since
a browser sends the user's cookies with a WebSocket handshake whichever page
opens it (cross-site WebSocket hijacking).
"""

from __future__ import annotations

import re
import threading
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Dict,
    Iterable,
    List,
    Optional,
    Pattern,
    Protocol,
    Tuple,
    TypeVar,
    Union,
    cast,
)
from urllib.parse import urlsplit

from .http.request import Request
from .http.response import Response
from .http.wsgi import WsgiApp, WsgiHandler

if TYPE_CHECKING:
    from .config import Config
    from .websocket.handle import BlockingWebSocket, WebSocket

Handler = Callable[[Request], Any]
OnConnect = Callable[["WebSocket"], Any]
OnMessage = Callable[["WebSocket", Union[str, bytes]], Any]
OnClose = Callable[["WebSocket", int, str], Any]
OnDrain = Callable[["WebSocket"], Any]
BlockingHandler = Callable[["BlockingWebSocket"], Any]
_H = TypeVar("_H", bound=Callable[..., Any])
OriginCheck = Union[str, Iterable[str], Callable[[Optional[str]], bool]]
ANY_ORIGIN = "*"  # origins="*": every page may open the route
_DEFAULT_PORTS = {"http": 80, "https": 443}
_SHOWN = 100  # characters of a refused Origin quoted back

_PARAM = re.compile(r"<([A-Za-z_][A-Za-z0-9_]*)>")


def _compile(path: str) -> Optional[Pattern[str]]:
    """A regex for a path with ``<name>`` segments, or None for a literal path."""
    if not path.startswith("/"):
        raise ValueError(f"route path must start with '/': {path!r}")
    if "<" not in path:
        return None
    pattern, pos = "", 0
    for match in _PARAM.finditer(path):
        pattern += re.escape(path[pos:match.start()]) + f"(?P<{match.group(1)}>[^/]+)"
        pos = match.end()
    return re.compile(pattern + re.escape(path[pos:]) + r"\Z")


class HttpRoute:
    """An HTTP handler and how it runs (read per request, so declared, not looked up):
    a ``blocking`` handler (WSGI) runs on worker threads even in reactor mode, and a
    ``streams_body`` handler reads its request body as it arrives."""

    __slots__ = ("blocking", "handler", "streams_body")

    def __init__(self, handler: Handler, blocking: bool = False,
                 streams_body: bool = False) -> None:
        self.handler = handler
        self.blocking = blocking
        self.streams_body = streams_body


class WebSocketRoute:
    """A WebSocket endpoint: its callbacks (or, blocking style, its one ``handler``
    that runs as long as the connection), subprotocols and allowed origins.
    ``pooled`` callbacks run on worker threads even in reactor mode, as a mounted
    WSGI application's code does (an adapter's routes: they call blocking code)."""

    __slots__ = ("handler", "on_close", "on_connect", "on_drain", "on_message", "origins", "path",
                 "pooled", "subprotocols")

    def __init__(self, path: str, on_message: Optional[OnMessage], on_connect: Optional[OnConnect],
                 on_close: Optional[OnClose], subprotocols: Iterable[str],
                 origins: Optional[OriginCheck] = None,
                 handler: Optional[BlockingHandler] = None,
                 on_drain: Optional[OnDrain] = None, pooled: bool = False) -> None:
        self.path = path
        self.pooled = pooled
        self.on_message = on_message
        self.on_connect = on_connect
        self.on_close = on_close
        self.on_drain = on_drain
        self.handler = handler
        self.subprotocols = list(subprotocols)
        # None: the server's own origin only; "*": any; else a set or a predicate.
        if isinstance(origins, str):
            origins = frozenset([origins])
        if origins is not None and not callable(origins):
            origins = frozenset(origins)
            if ANY_ORIGIN in origins:
                origins = ANY_ORIGIN
        self.origins = origins

    def origin_refusal(self, request: Request) -> Optional[str]:
        """Why the page that opened this handshake may not (None: it may).

        A handshake without ``Origin`` comes from a client that is not a
        browser, which no web page can drive: only a list or a predicate
        refuses it.  By default an ``Origin`` must be the server's own:
        :func:`same_origin`.
        """
        origin = request.headers.get("origin")
        origins = self.origins
        if origins == ANY_ORIGIN:
            return None
        if origins is None:
            if origin is None or same_origin(origin, request):
                return None
            own = f"{request.scheme}://{request.headers.get('host', '')}"
            return (f"cross-origin WebSocket refused: the page is from {origin[:_SHOWN]}, "
                    f"this server is {own[:_SHOWN]} (a route's origins= can allow it)")
        allowed = origins(origin) if callable(origins) else origin in origins
        if allowed:
            return None
        if origin is None:
            return "this WebSocket route needs an Origin header"
        return f"origin {origin[:_SHOWN]} not allowed"

    def select_subprotocol(self, offered: List[str]) -> Optional[str]:
        """The client's most preferred subprotocol that this route supports."""
        for name in offered:
            if name in self.subprotocols:
                return name
        return None


def _origin_parts(scheme: str, authority: str) -> Optional[Tuple[str, str, int]]:
    """(scheme, host, port) of ``scheme://authority``, the default port filled
    in; None unless it is exactly that (no user, path, query or fragment)."""
    if scheme not in _DEFAULT_PORTS or any(c in authority for c in "@/?#\\"):
        return None
    try:
        parts = urlsplit(f"{scheme}://{authority}")
        port = parts.port
    except ValueError:
        return None
    if not parts.hostname:
        return None
    return scheme, parts.hostname, port if port is not None else _DEFAULT_PORTS[scheme]


def same_origin(origin: str, request: Request) -> bool:
    """Whether the web page ``origin`` (an ``Origin`` header) is of the server
    ``request`` came to: the same scheme (``request.scheme``: https over TLS,
    or what a trusted proxy said in ``X-Forwarded-Proto``), and the host and
    port of its ``Host`` header (a proxy passes the client's on)."""
    scheme, sep, authority = origin.partition("://")
    theirs = _origin_parts(scheme.lower(), authority) if sep else None
    ours = _origin_parts(request.scheme, request.headers.get("host") or "")
    return theirs is not None and theirs == ours


class Later:
    """An HTTP handler's answer that comes later: the handler returns a ``Later``
    and other code (a thread, a timer) calls :meth:`answer` once it has the
    response, so no thread waits meanwhile.  The request counts as in progress
    until then (a connection closes only after it)."""

    __slots__ = ("_lock", "_response", "_send", "answered")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._send: Optional[Callable[[Response], None]] = None
        self._response: Optional[Response] = None
        self.answered = False

    def answer(self, response: Response) -> bool:
        """Send ``response`` (from any thread); False if an answer was given before."""
        with self._lock:
            if self.answered:
                return False
            self.answered = True
            send = self._send
            if send is None:  # answered before the server took it: sent by bind()
                self._response = response
                return True
        send(response)
        return True

    def bind(self, send: Callable[[Response], None]) -> None:
        """The server's side: how the answer is sent (once the handler returned)."""
        with self._lock:
            self._send = send
            response, self._response = self._response, None
        if response is not None:
            send(response)


HttpMatcher = Callable[[Request], Optional[HttpRoute]]


class WebSocketMatcher(Protocol):
    """Finds the route of a handshake among routes declared outside the App."""

    def match_websocket(self, request: Request) -> Optional[WebSocketRoute]: ...


class ServerHandle(Protocol):
    """What an application may use of the :class:`~wssync.Server` serving it
    (declared here so the routing layer does not import the server)."""

    config: Config
    host: str
    port: int
    threads: int

    @property
    def address(self) -> Any: ...
    @property
    def websockets(self) -> List[WebSocket]: ...
    def broadcast(self, message: Union[str, bytes], path: Optional[str] = None,
                  wait: bool = False, timeout: Optional[float] = None) -> None: ...
    def connections(self) -> List[Dict[str, Any]]: ...
    def stats(self) -> Dict[str, Any]: ...
    def stop(self, timeout: Optional[float] = None) -> None: ...
    def _call_later(self, delay: float, fn: Callable[..., None], *args: Any) -> None: ...


class App:
    """Routes for HTTP handlers and WebSocket endpoints.

    ``server`` is the :class:`~wssync.Server` currently serving the app (set
    when a server is created), so handlers can ``app.server.broadcast(...)``.
    """

    def __init__(self) -> None:
        self.server: Optional[ServerHandle] = None
        self._static: Dict[str, Dict[str, HttpRoute]] = {}
        self._dynamic: List[Tuple[Pattern[str], Dict[str, HttpRoute]]] = []
        self._ws_static: Dict[str, WebSocketRoute] = {}
        self._ws_dynamic: List[Tuple[Pattern[str], WebSocketRoute]] = []
        self.wsgi: Optional[WsgiHandler] = None
        self._declared_websockets: List[WebSocketMatcher] = []
        self._sessions: List[Callable[[Request], Optional[str]]] = []
        self._declared_http: List[HttpMatcher] = []
        self._wsgi_route: Optional[HttpRoute] = None

    def mount_wsgi(self, wsgi_app: WsgiApp) -> None:
        """Serve every HTTP request no route matches with ``wsgi_app`` (Flask,
        Django, any PEP 3333 callable).  It runs on worker threads even in
        reactor mode, since WSGI applications block."""
        wsgi = self.wsgi = WsgiHandler(wsgi_app)
        self._wsgi_route = HttpRoute(wsgi, wsgi.blocking, wsgi.streams_body)

    def route(self, path: str, methods: Iterable[str] = ("GET",)) -> Callable[[Handler], Handler]:
        """Decorator: ``handler(request)`` answers ``methods`` on ``path``.

        The handler returns a :class:`Response`, ``str``, ``bytes``, or a
        ``dict``/``list`` (sent as JSON).  GET routes answer HEAD too.
        """
        methods = [m.upper() for m in methods]

        def register(handler: Handler) -> Handler:
            table = self._table(path)
            # A handler may say it blocks and reads its body as it arrives (as
            # WsgiHandler does); read once, here, not per request.
            route = HttpRoute(handler, bool(getattr(handler, "blocking", False)),
                              bool(getattr(handler, "streams_body", False)))
            for method in methods:
                table[method] = route
            if "GET" in methods and "HEAD" not in table:
                table["HEAD"] = route
            return handler

        return register

    def _table(self, path: str) -> Dict[str, HttpRoute]:
        regex = _compile(path)
        if regex is None:
            return self._static.setdefault(path, {})
        for existing, table in self._dynamic:
            if existing.pattern == regex.pattern:
                return table
        table = {}
        self._dynamic.append((regex, table))
        return table

    def websocket(self, path: str, *, on_connect: Optional[OnConnect] = None,
                  on_close: Optional[OnClose] = None, on_drain: Optional[OnDrain] = None,
                  subprotocols: Iterable[str] = (), origins: Optional[OriginCheck] = None,
                  blocking: bool = False) -> Callable[[_H], _H]:
        """Decorator: ``on_message(ws, message)`` serves WebSocket messages on ``path``.

        ``on_connect(ws)`` runs after the handshake, ``on_close(ws, code,
        reason)`` once the connection is gone, ``on_drain(ws)`` when output
        that had gone above ``write_high_water`` has drained (code that
        cannot wait in ``send``, on the reactor, stops producing while
        ``ws.buffered_amount`` is high and resumes there).  ``subprotocols`` lists what the
        endpoint speaks (the client's first match is chosen).  ``origins`` says
        which web pages may open it: by default only the server's own (a
        handshake whose ``Origin`` is another gets 403, one without ``Origin``,
        from a client that is not a browser, is accepted); ``"*"`` any page; a
        set of allowed ``Origin`` values, or a predicate of the ``Origin``
        (None when there is none), decides on its own.

        With ``blocking=True`` the decorated function is ``handler(ws)``
        instead, run on a thread of its own for the whole connection; it
        reads with ``ws.receive()`` (see :class:`~wssync.websocket.handle.BlockingWebSocket`).
        """
        if blocking and (on_connect is not None or on_close is not None
                         or on_drain is not None):
            raise TypeError("a blocking WebSocket handler has no on_connect, on_close or "
                            "on_drain: its own code runs before the first receive() and after "
                            "the last, and its sends wait for the peer")

        def register(fn: _H) -> _H:
            if blocking:
                route = WebSocketRoute(path, None, None, None, subprotocols, origins, fn)
            else:
                route = WebSocketRoute(path, fn, on_connect, on_close, subprotocols, origins,
                                       on_drain=on_drain)
            regex = _compile(path)
            if regex is None:
                self._ws_static[path] = route
            else:
                self._ws_dynamic.append((regex, route))
            return fn

        return register

    def _declare_sessions(self, owner_of: Callable[[Request], Optional[str]]) -> None:
        """The application keeps sessions in its process: ``owner_of(request)``
        names the worker a request's session lives in (None: any)."""
        self._sessions.append(owner_of)

    @property
    def keeps_sessions(self) -> bool:
        """Whether some requests must reach the worker that owns their session."""
        return bool(self._sessions)

    def session_owner(self, request: Request) -> Optional[str]:
        """The worker that must serve ``request`` (its session's), or None."""
        for owner_of in self._sessions:
            owner = owner_of(request)
            if owner is not None:
                return owner
        return None

    def _declare_http(self, matcher: HttpMatcher) -> None:
        """HTTP requests the mounted application's adapter answers itself (before
        the application): ``matcher(request)`` gives the route, or None."""
        self._declared_http.append(matcher)

    def _declare_websockets(self, matcher: WebSocketMatcher) -> None:
        """WebSocket routes the mounted application declares (an adapter's:
        Socket.IO's path), after the app's own: a plain request there is the
        application's, not a 426."""
        self._declared_websockets.append(matcher)

    # -- look-ups (used by the server) ----------------------------------------------

    def match_http(self, request: Request) -> Union[HttpRoute, Response]:
        """The route for ``request``, or the 404/405/426 response to send instead."""
        path = request.path
        table = self._static.get(path)
        if table is None:
            for regex, candidate in self._dynamic:
                match = regex.match(path)
                if match is not None:
                    table = candidate
                    request.path_params = match.groupdict()
                    break
        if table is not None:
            route = table.get(request.method)
            if route is not None:
                return route
            allow = ", ".join(sorted(table))
            return Response("405 Method Not Allowed\n", 405, [("Allow", allow)])
        # A WebSocket route is ours even with a WSGI app mounted: a plain GET
        # there is a client that forgot to upgrade, not a page of the WSGI app.
        # (Routes the WSGI application declares itself are its own to refuse.)
        if self._own_websocket(request) is not None:
            return Response("426 Upgrade Required: this is a WebSocket endpoint\n", 426,
                            [("Upgrade", "websocket"), ("Sec-WebSocket-Version", "13")])
        if self._wsgi_route is not None:
            for matcher in self._declared_http:
                declared = matcher(request)
                if declared is not None:
                    return declared
            return self._wsgi_route
        return Response("404 Not Found\n", 404)

    def match_websocket(self, request: Request) -> Optional[WebSocketRoute]:
        """The route for a handshake: ours, else one the mounted WSGI application
        declares (a Flask app's :class:`wssync.flask.Sock` routes)."""
        route = self._own_websocket(request)
        if route is None:
            for matcher in self._declared_websockets:
                route = matcher.match_websocket(request)
                if route is not None:
                    return route
        if route is None and self.wsgi is not None:
            routes = self.wsgi.websocket_routes()
            if routes is not None:
                return cast(Optional[WebSocketRoute], routes.match_websocket(request))
        return route

    def _own_websocket(self, request: Request) -> Optional[WebSocketRoute]:
        path = request.path
        route = self._ws_static.get(path)
        if route is not None:
            return route
        for regex, candidate in self._ws_dynamic:
            match = regex.match(path)
            if match is not None:
                request.path_params = match.groupdict()
                return candidate
        return None
