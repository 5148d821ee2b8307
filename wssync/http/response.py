"""The HTTP response as applications build it: plain data.

How it goes on the wire is :mod:`wssync.http.writer`'s business; nothing here
renders bytes or sends anything.  :meth:`Response.file` opens the file it
names (and says 404 if there is none); the open file travels in a
:class:`FileBody` until the connection has sent it and closes it.
"""

from __future__ import annotations

import json
import mimetypes
import os
import stat
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple, Union, final

from ..errors import HttpError

Headers = Optional[Union[Dict[str, str], List[Tuple[str, str]]]]


@final  # told apart by ``type(body) is FileBody`` on every response
class FileBody:
    """``size`` bytes of an open regular file from ``offset``: a body the
    connection sends with ``sendfile`` where it can.

    ``fd`` is the file's descriptor; ``close`` is called exactly once, when
    the response has been sent or the connection is gone.  ``ranged`` bodies
    (from :meth:`Response.file`) answer ``Range`` and conditional requests
    with the file's ``mtime`` and ``etag``; others are sent as they are.
    """

    __slots__ = ("_close", "etag", "fd", "mtime", "offset", "ranged", "size")

    def __init__(self, fd: int, offset: int, size: int, close: Callable[[], Any],
                 ranged: bool = False, mtime: Optional[float] = None,
                 etag: Optional[str] = None) -> None:
        self.fd = fd
        self.offset = offset
        self.size = size
        self._close: Optional[Callable[[], Any]] = close
        self.ranged = ranged
        self.mtime = mtime
        self.etag = etag

    def close(self) -> None:
        close, self._close = self._close, None
        if close is not None:
            close()

    def __repr__(self) -> str:
        return f"<FileBody fd={self.fd} offset={self.offset} size={self.size}>"


Body = Union[bytes, str, Iterable[bytes], FileBody]


class Response:
    """Status, headers and a body: ``bytes``, ``str`` (sent as UTF-8) or an iterable of bytes.

    An iterable body is streamed: chunked in HTTP/1.1, until close in HTTP/1.0.
    ``Content-Length`` is set from a ``bytes``/``str`` body automatically.
    """

    # _after: what the handler's thread runs once the answer is handed over (the
    # rest of a WSGI application's iterable, its close()); None for most answers.
    __slots__ = ("_after", "body", "headers", "status")

    def __init__(
        self,
        body: Body = b"",
        status: int = 200,
        headers: Headers = None,
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
        self._after: Optional[Callable[[], None]] = None

    @classmethod
    def json(cls, data: Any, status: int = 200,
             headers: Optional[Dict[str, str]] = None) -> Response:
        body = json.dumps(data, separators=(",", ":")).encode("utf-8")
        return cls(body, status, headers, "application/json")

    @classmethod
    def file(cls, path: Union[str, os.PathLike[str]], content_type: Optional[str] = None,
             status: int = 200, headers: Headers = None, etag: bool = True) -> Response:
        """The file at ``path``, sent without copies through Python (``sendfile``).

        ``Content-Type`` is guessed from the name unless given; ``Content-Length``,
        ``Last-Modified``, ``Accept-Ranges`` and (unless ``etag=False``) an
        ``ETag`` are set.  A GET with one ``Range`` gets 206 (or 416), a
        conditional request may get 304 (see the README's "Files").  A missing
        file or a directory raises ``HttpError(404)``, an unreadable one
        ``HttpError(403)``: raised in a handler, they answer with that status.
        """
        try:
            # A file object, not a bare descriptor: one never sent is closed
            # when it is collected.
            file = open(path, "rb", buffering=0)  # noqa: SIM115 (closed by the connection)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise HttpError(404, "file not found") from None
        except PermissionError:
            raise HttpError(403, "file not readable") from None
        try:
            info = os.fstat(file.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise HttpError(404, "file not found")
        except BaseException:
            file.close()
            raise
        if content_type is None:
            content_type = mimetypes.guess_type(os.fspath(path))[0] \
                or "application/octet-stream"
        tag = f'"{info.st_mtime_ns:x}-{info.st_size:x}"' if etag else None
        body = FileBody(file.fileno(), 0, info.st_size, file.close, ranged=True,
                        mtime=info.st_mtime, etag=tag)
        return cls(body, status, headers, content_type)

    @classmethod
    def html(cls, text: str, status: int = 200) -> Response:
        return cls(text.encode("utf-8"), status, None, "text/html; charset=utf-8")

    def __repr__(self) -> str:
        return f"<Response {self.status}>"
