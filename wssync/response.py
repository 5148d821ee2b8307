"""The HTTP response as applications build it: plain data.

How it goes on the wire is :mod:`wssync.http_writer`'s business; nothing here
renders bytes or does I/O.
"""

from __future__ import annotations

import json
from typing import Any, Dict, Iterable, List, Optional, Tuple, Union

Body = Union[bytes, str, Iterable[bytes]]


class Response:
    """Status, headers and a body: ``bytes``, ``str`` (sent as UTF-8) or an iterable of bytes.

    An iterable body is streamed: chunked in HTTP/1.1, until close in HTTP/1.0.
    ``Content-Length`` is set from a ``bytes``/``str`` body automatically.
    """

    __slots__ = ("body", "headers", "status")

    def __init__(
        self,
        body: Body = b"",
        status: int = 200,
        headers: Optional[Union[Dict[str, str], List[Tuple[str, str]]]] = None,
        content_type: Optional[str] = None,
    ) -> None:
        if isinstance(body, str):
            body = body.encode("utf-8")
            if content_type is None:
                content_type = "text/plain; charset=utf-8"
        self.status = status
        if headers is None:
            self.headers: List[Tuple[str, str]] = []
        elif isinstance(headers, dict):
            self.headers = list(headers.items())
        else:
            self.headers = list(headers)
        if content_type is not None:
            self.headers.append(("Content-Type", content_type))
        self.body = body

    @classmethod
    def json(cls, data: Any, status: int = 200,
             headers: Optional[Dict[str, str]] = None) -> Response:
        body = json.dumps(data, separators=(",", ":")).encode("utf-8")
        return cls(body, status, headers, "application/json")

    @classmethod
    def html(cls, text: str, status: int = 200) -> Response:
        return cls(text.encode("utf-8"), status, None, "text/html; charset=utf-8")

    def __repr__(self) -> str:
        return f"<Response {self.status}>"
