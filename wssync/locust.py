"""``WebSocketUser``: Locust users that open WebSockets, with a request row per exchange.

``self.connect(path)`` opens a WebSocket to the user's ``host`` with the blocking
client of :mod:`wssync.client` (cooperative under the gevent monkey-patching that
importing Locust applies) and returns a :class:`LocustWebSocket`.  Every exchange
becomes a Locust request event of type ``"WS"`` with its real response time: the
handshake, ``request`` (send to reply), named ``send``/``receive``, and server
pushes that carry a timestamp (``time_pushes``).  A failure (refused handshake,
TLS error, timeout, a connection the server closed) is a failure row, and ends the
task as a ``return`` would (:class:`WebSocketFailure` is Locust's
``RescheduleTask``); it never kills the user.  A connection that is not open is
opened again by its next operation.

An idle user costs its own greenlet and its sockets, no thread and no second
greenlet: while the user waits between tasks, that greenlet reads its open
connections, so pings are answered and pushes timed as they arrive.

:class:`WebSocketMixin` adds ``connect`` to any user class; beside Locust's
``HttpUser`` or ``FastHttpUser`` the handshake carries that session's cookies
and headers, so a scenario can log in over HTTP and then open its WebSocket.

This module imports Locust (``pip install 'wssync[load]'``); ``import wssync``
never does.  It runs no server and owns no thread.
"""

from __future__ import annotations

import select
import ssl
import time
import urllib.request
from collections import deque
from http.cookiejar import CookieJar
from typing import Any, Callable, Deque, Dict, List, NoReturn, Optional, Sequence, Tuple, Union
from urllib.parse import urlsplit

from locust import User
from locust.exception import RescheduleTask

from .client import ClientConnection, ConnectionClosed, connect

__all__ = ["LocustWebSocket", "WebSocketFailure", "WebSocketMixin", "WebSocketUser"]

Data = Union[str, bytes]

_SCHEMES = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}
# Session headers that describe the HTTP exchange itself, not the client: never copied
# into a handshake (the client writes its own Host, Upgrade, Connection and Sec-*).
_NOT_CARRIED = frozenset({
    "host", "connection", "upgrade", "keep-alive", "te", "transfer-encoding",
    "content-length", "content-type", "accept", "accept-encoding", "cookie",
})
BACKLOG = 1000  # unread messages kept per connection; older ones are dropped (and counted)
_READ_SLICE = 0.01  # seconds spent finishing a message on one of several ready connections


class WebSocketFailure(RescheduleTask):
    """An exchange failed and was recorded as a failure row; raised to end the task.

    Locust treats it as the task's ``return``: no traceback, no exceptions-table
    entry, the user waits and runs its next task.  ``cause`` is what happened
    (``ConnectionClosed``, ``TimeoutError``, ``HandshakeRefused``, ``TlsError``,
    ``OSError``).
    """

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


class LocustWebSocket:
    """One WebSocket of a Locust user; every exchange is a ``WS`` request row.

    Open it with ``self.connect(path)``.  Operations on a connection that is not
    open (its handshake failed, the server closed it, or it was closed) first open
    it again, which is a new connect row.
    """

    # Thousands per load generator: no per-instance dict.
    __slots__ = ("_backlog", "_conn", "_headers", "_pushes", "_subprotocols", "dropped", "name",
                 "subprotocol", "url", "user")

    def __init__(self, user: WebSocketMixin, url: str, name: str,
                 headers: List[Tuple[str, str]], subprotocols: Optional[List[str]]) -> None:
        self.user = user
        self.url = url
        self.name = name  # of the connect row; message rows default to "<name> <operation>"
        self._headers = headers
        self._subprotocols = subprotocols
        self._conn: Optional[ClientConnection] = None
        self._backlog: Optional[Deque[Data]] = None  # made for the first unread message
        self._pushes: Optional[Tuple[Union[str, Callable[[Data], str]],
                                     Callable[[Data], Optional[float]]]] = None
        self.dropped = 0  # unread messages dropped past BACKLOG
        self.subprotocol: Optional[str] = None

    # -- opening -------------------------------------------------------------------

    @property
    def open(self) -> bool:
        return self._conn is not None and not self._conn.closed

    def _connect(self) -> Optional[Exception]:
        """One handshake, one connect row; what went wrong, if anything."""
        user = self.user
        given = {name.lower() for name, _ in self._headers}  # these win over the session's
        headers = self._headers + [(name, value) for name, value in
                                   user._session_headers(self.url) if name.lower() not in given]
        started = time.perf_counter()
        try:
            conn = connect(self.url, subprotocols=self._subprotocols, headers=headers,
                           timeout=user.ws_timeout, ssl_context=user.ws_ssl_context)
            self._greet(conn)
        except Exception as exc:  # refused, TLS, unreachable, timed out: all a failed row
            self._fire(self.name, started, 0, exc)
            return exc
        self._conn = conn
        self.subprotocol = conn.subprotocol
        if self not in user.websockets:  # (read while the user waits; closed: left out)
            user.websockets.append(self)
        self._fire(self.name, started, 0)
        return None

    def _greet(self, conn: ClientConnection) -> None:
        """What a protocol on top exchanges before the connection counts as open
        (timed in the connect row); it closes ``conn`` before it raises."""

    def _ready(self) -> ClientConnection:
        if not self.open:
            failed = self._connect()
            if failed is not None:
                raise WebSocketFailure(failed)
        assert self._conn is not None
        return self._conn

    # -- exchanges -----------------------------------------------------------------

    def send(self, data: Data, name: Optional[str] = None) -> None:
        """Send one message (``str``: text, bytes: binary).  With ``name``, a row
        timing the hand-over to the socket; a failure is always a row."""
        conn = self._ready()
        started = time.perf_counter()
        try:
            conn.send(data)
        except ConnectionClosed as exc:
            self._fail(name or f"{self.name} send", started, exc)
        if name is not None:
            self._fire(name, started, len(data))

    def receive(self, timeout: Optional[float] = None, name: Optional[str] = None) -> Data:
        """The next message not yet read (``timeout``: the user's ``ws_timeout``).
        With ``name``, a row timing the wait; a timeout or a close is a failure."""
        conn = self._ready()
        started = time.perf_counter()
        if self._backlog:
            message = self._backlog.popleft()
        else:
            try:
                message = conn.recv(self._timeout(timeout))
            except (ConnectionClosed, TimeoutError) as exc:
                self._fail(name or f"{self.name} receive", started, exc)
        if name is not None:
            self._fire(name, started, len(message))
        return message

    def request(self, data: Data, name: Optional[str] = None,
                match: Optional[Callable[[Data], bool]] = None,
                timeout: Optional[float] = None) -> Data:
        """Send ``data``, then wait for the first reply for which ``match(reply)`` is
        true (any reply without ``match``); a row named ``name`` (default
        ``"<connection name> request"``) with the time from send to that reply.
        Other messages arriving meanwhile are handled as pushes.  A timeout or
        a close is a failure."""
        conn = self._ready()
        row = name or f"{self.name} request"
        started = time.perf_counter()
        deadline = time.monotonic() + self._timeout(timeout)
        try:
            conn.send(data)
            while True:
                reply = conn.recv(max(0.0, deadline - time.monotonic()))
                if match is None or match(reply):
                    break
                self._push(reply)
        except ConnectionClosed as exc:
            self._fail(row, started, exc)
        except TimeoutError:
            self._fail(row, started, TimeoutError(
                f"no {'matching ' if match else ''}reply within {self._timeout(timeout):g} s"))
        self._fire(row, started, len(reply))
        return reply

    def time_pushes(self, name: Union[str, Callable[[Data], str]],
                    sent_at: Callable[[Data], Optional[float]]) -> None:
        """Time the messages nobody asked for: for each, ``sent_at(message)`` is the
        ``time.time()`` at which the app sent it (a timestamp it put in the message),
        or ``None`` for a message that is not to be timed (kept for ``receive``).
        Each timed message is a row ``name`` (or ``name(message)``) with the
        latency in ms (the app's and this machine's clocks must agree)."""
        self._pushes = (name, sent_at)

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Close handshake; no row.  The next operation opens the connection again."""
        conn, self._conn = self._conn, None
        self._backlog = None
        if self in self.user.websockets:  # a task opening one per run must not grow the list
            self.user.websockets.remove(self)
        if conn is not None:
            conn.close(code, reason, timeout=self.user.ws_close_timeout)

    def __enter__(self) -> LocustWebSocket:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    # -- while the user waits ------------------------------------------------------

    def _read(self, timeout: float) -> None:
        """Read for up to ``timeout`` s (pings answered, messages handled as pushes);
        a close the user did not ask for is a failure on the connect row."""
        assert self._conn is not None
        started = time.perf_counter()
        try:
            self._push(self._conn.recv(timeout))
        except TimeoutError:
            pass
        except ConnectionClosed as exc:
            self._fire(self.name, started, 0, exc)

    def _push(self, message: Data) -> None:
        if self._pushes is not None:
            name, sent_at = self._pushes
            stamp = sent_at(message)
            if stamp is not None:
                self.user.environment.events.request.fire(
                    request_type="WS", name=name if isinstance(name, str) else name(message),
                    response_time=max(0.0, (time.time() - stamp) * 1000),
                    response_length=len(message), exception=None, context=self.user.context())
                return
        if self._backlog is None:
            self._backlog = deque()
        elif len(self._backlog) >= BACKLOG:
            self._backlog.popleft()
            self.dropped += 1
        self._backlog.append(message)

    # -- rows ----------------------------------------------------------------------

    def _timeout(self, timeout: Optional[float]) -> float:
        return self.user.ws_timeout if timeout is None else timeout

    def _fire(self, name: str, started: float, length: int,
              exception: Optional[BaseException] = None) -> None:
        self.user.environment.events.request.fire(
            request_type="WS", name=name, response_time=(time.perf_counter() - started) * 1000,
            response_length=length, exception=exception, context=self.user.context())

    def _fail(self, name: str, started: float, exc: BaseException) -> NoReturn:
        self._fire(name, started, 0, exc)
        raise WebSocketFailure(exc)


class WebSocketMixin:
    """Adds ``connect`` to a Locust user class; put it first:
    ``class Shopper(WebSocketMixin, HttpUser)``.

    Beside ``HttpUser``/``FastHttpUser`` each handshake carries the HTTP session's
    cookies (those its cookie jar would send to the same host and path over
    http(s)) and its default headers (``Authorization``, ``User-Agent``, ...).
    Class settings: ``ws_timeout`` (handshake, ``request`` and ``receive``),
    ``ws_close_timeout``, ``ws_ssl_context`` (``wss://`` trust: ``None`` is the
    system's store; ``ssl.create_default_context(cafile=...)`` for a private CA).
    A subclass that defines ``on_stop`` calls ``super().on_stop()`` to close its
    WebSockets.
    """

    ws_timeout: float = 10.0
    ws_close_timeout: float = 1.0
    ws_ssl_context: Optional[ssl.SSLContext] = None

    # Provided by the Locust user class this is mixed into.
    host: Optional[str]
    environment: Any
    wait_time: Any
    context: Callable[[], Dict[str, Any]]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.websockets: List[LocustWebSocket] = []
        waiting = self.wait_time
        if waiting is not None:
            def wait_time() -> float:  # Locust sleeps what this returns: read until then
                self._wait(waiting())
                return 0.0

            self.wait_time = wait_time

    def connect(self, path: str, name: Optional[str] = None,
                headers: Optional[Sequence[Tuple[str, str]]] = None,
                subprotocols: Optional[List[str]] = None) -> LocustWebSocket:
        """Open a WebSocket to ``path`` on the user's host (``http(s)://`` becomes
        ``ws(s)://``); a connect row ``name`` (default ``path``) timing the
        handshake.  Never raises for a failed handshake: that is a failure row,
        and the connection's next operation tries again."""
        ws = LocustWebSocket(self, self._ws_url(path), name or path, list(headers or ()),
                             subprotocols)
        ws._connect()
        return ws

    def on_stop(self) -> None:
        for ws in list(self.websockets):
            ws.close()
        parent = getattr(super(), "on_stop", None)
        if parent is not None:
            parent()

    def _ws_url(self, path: str) -> str:
        if not self.host:
            raise ValueError("no host to connect to: give --host or set host on the user class")
        parts = urlsplit(self.host)
        scheme = _SCHEMES.get(parts.scheme)
        if scheme is None or not parts.netloc:
            raise ValueError(f"host {self.host!r} is not an http(s):// or ws(s):// URL")
        return f"{scheme}://{parts.netloc}{parts.path.rstrip('/')}/{path.lstrip('/')}"

    def _session_headers(self, url: str) -> List[Tuple[str, str]]:
        """The HTTP session's cookies for ``url`` and its default headers, if any."""
        client = getattr(self, "client", None)
        found: List[Tuple[str, str]] = []
        defaults = getattr(client, "headers", None)  # requests (HttpUser)
        if defaults is None:
            defaults = getattr(self, "default_headers", None)  # FastHttpUser
        for key, value in (defaults or {}).items():
            if key.lower() not in _NOT_CARRIED and not key.lower().startswith("sec-websocket-"):
                found.append((key, value.decode("latin-1") if isinstance(value, bytes)
                              else str(value)))
        jar = getattr(client, "cookies", None)  # requests' jar is a CookieJar too
        if not isinstance(jar, CookieJar):
            jar = getattr(client, "cookiejar", None)  # FastHttpUser
        if isinstance(jar, CookieJar):
            # The jar decides as for an HTTP request to the same place (domain, path,
            # Secure cookies only over wss://, expiry).
            probe = urllib.request.Request("http" + url[2:])
            jar.add_cookie_header(probe)
            cookie = probe.get_header("Cookie")
            if cookie:
                found.append(("Cookie", cookie))
        return found

    def _wait(self, seconds: float) -> None:
        """Spend ``seconds`` reading the open connections (or sleeping without any)."""
        deadline = time.monotonic() + seconds
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            live = [ws for ws in self.websockets if ws.open]
            if not live:
                time.sleep(remaining)  # gevent's under Locust
                return
            if len(live) == 1:
                live[0]._read(remaining)
                continue
            socks = {ws._conn.sock: ws for ws in live if ws._conn is not None}
            pending = [s for s in socks if isinstance(s, ssl.SSLSocket) and s.pending()]
            ready = pending or select.select(list(socks), [], [], remaining)[0]
            for sock in ready:
                socks[sock]._read(min(_READ_SLICE, max(0.0, deadline - time.monotonic())))


class WebSocketUser(WebSocketMixin, User):
    """A Locust user whose tasks use WebSockets (``self.connect(path)``)."""

    abstract = True
