"""The HTTP request as applications see it: ``Headers`` and ``Request``.

Plain data holders built by the HTTP parser; they do no I/O and know nothing of
sockets or of how the request arrived.
"""

from __future__ import annotations

import io
import json
from typing import Any, Dict, Iterator, List, Optional, Tuple
from urllib.parse import parse_qs, unquote


class Headers:
    """Case-insensitive, ordered, multi-valued header fields.

    Names keep the case they arrived in for :meth:`items`; look-ups ignore
    case.  ``headers["x"]`` and :meth:`get` give the first value,
    :meth:`get_all` every value of a repeated field.
    """

    __slots__ = ("_block", "_index", "_items")

    def __init__(self, items: Optional[List[Tuple[str, str]]] = None) -> None:
        self._items: Optional[List[Tuple[str, str]]] = items if items is not None else []
        self._index: Optional[Dict[str, List[str]]] = None
        self._block = ""

    # The items and the look-up index are built on demand and can be folded
    # back into one string: a WebSocket keeps its handshake's headers for
    # hours, and thousands of idle connections should not each hold dozens
    # of small objects for them.

    def _list(self) -> List[Tuple[str, str]]:
        items = self._items
        if items is None:
            # Names are tokens (no ":"), values start with no whitespace:
            # the first ": " of a folded line always ends the name.
            items = self._items = [
                (name, value) for name, _, value in
                (line.partition(": ") for line in self._block.split("\r\n"))
            ] if self._block else []
        return items

    def by_name(self) -> Dict[str, List[str]]:
        """Every value of each field, under its lower-case name, in arrival
        order; for code that looks up several fields at once (do not change it)."""
        index = self._index
        if index is None:
            index = self._index = {}
            for name, value in self._list():
                index.setdefault(name.lower(), []).append(value)
        return index

    def compact(self) -> None:
        """Fold the fields into one string until they are next looked at
        (for headers kept as long as a connection lives)."""
        if self._items is not None:
            self._block = "\r\n".join(f"{name}: {value}" for name, value in self._items)
            self._items = None
            self._index = None

    def add(self, name: str, value: str) -> None:
        self._list().append((name, value))
        self.by_name().setdefault(name.lower(), []).append(value)

    def get(self, name: str, default: Optional[str] = None) -> Optional[str]:
        values = self.by_name().get(name.lower())
        return values[0] if values else default

    def get_all(self, name: str) -> List[str]:
        return list(self.by_name().get(name.lower(), ()))

    def tokens(self, name: str) -> List[str]:
        """The comma-separated tokens of every ``name`` field, lower-cased."""
        out = []
        for value in self.by_name().get(name.lower(), ()):
            for token in value.split(","):
                token = token.strip()
                if token:
                    out.append(token.lower())
        return out

    def __getitem__(self, name: str) -> str:
        values = self.by_name().get(name.lower())
        if not values:
            raise KeyError(name)
        return values[0]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self.by_name()

    def __iter__(self) -> Iterator[str]:
        return (name for name, _ in self._list())

    def __len__(self) -> int:
        return len(self._list())

    def items(self) -> List[Tuple[str, str]]:
        return list(self._list())

    def __repr__(self) -> str:
        return f"Headers({self._list()!r})"


def client_keep_alive(version: str, connection: Optional[List[str]]) -> bool:
    """What a request's version and ``Connection`` values ask for the connection."""
    if not connection:
        return version == "HTTP/1.1"
    tokens = {token.strip().lower() for value in connection for token in value.split(",")}
    return "close" not in tokens if version == "HTTP/1.1" else "keep-alive" in tokens


class Request:
    """One HTTP request: method, target, headers, body and who sent it."""

    __slots__ = (
        "_path",
        "_query",
        "_query_string",
        "body",
        "body_stream",
        "headers",
        "keep_alive",
        "local_addr",
        "method",
        "path_params",
        "remote_addr",
        "scheme",
        "target",
        "version",
    )

    def __init__(
        self,
        method: str,
        target: str,
        version: str,
        headers: Headers,
        body: bytes = b"",
        remote_addr: Any = None,
        keep_alive: Optional[bool] = None,
    ) -> None:
        self.method = method
        self.target = target
        self.version = version
        self.headers = headers
        self.body = body
        # Where a handler that reads its input as a file finds a body that was
        # not collected first (see wssync.http.body); None for a body in ``body``.
        self.body_stream: Optional[io.RawIOBase] = None
        self.remote_addr = remote_addr
        # What the client asked for the connection (the parser passes it; it is
        # derived here otherwise).  Whether it stays open is the server's
        # decision: wssync.http.writer.frame_response.
        self.keep_alive = keep_alive if keep_alive is not None else client_keep_alive(
            version, headers.by_name().get("connection"))
        self.local_addr: Any = None  # the server's end of the connection
        self.scheme = "http"  # "https" when it came over TLS
        self.path_params: Dict[str, str] = {}
        raw_path, _, query = target.partition("?")
        self._path = raw_path
        self._query_string = query
        self._query: Optional[Dict[str, List[str]]] = None

    @property
    def path(self) -> str:
        """The percent-decoded path, without the query string."""
        raw = self._path
        return unquote(raw, "latin-1") if "%" in raw else raw

    @property
    def raw_path(self) -> str:
        return self._path

    @property
    def query_string(self) -> str:
        return self._query_string

    @property
    def query(self) -> Dict[str, List[str]]:
        """Query parameters, each name mapped to the list of its values."""
        if self._query is None:
            self._query = parse_qs(self._query_string, keep_blank_values=True)
        return self._query

    def arg(self, name: str, default: Optional[str] = None) -> Optional[str]:
        """The first value of query parameter ``name``."""
        values = self.query.get(name)
        return values[0] if values else default

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.body)

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.target} {self.version}>"
