"""Serving a WSGI application (PEP 3333) for HTTP beside wssync's own routes.

``WsgiHandler`` turns a ``Request`` into a WSGI environ, runs the application,
and gives back a ``Response`` whose body streams the application's iterable
(closed when done, as PEP 3333 requires).  ``wsgi.file_wrapper`` is
:class:`FileWrapper`: a wrapped regular file with a ``Content-Length`` becomes
a :class:`~wssync.http.response.FileBody`, which the connection sends with
``sendfile``; any other is iterated in blocks like a body of its own.  The
server always runs it on a worker thread, since WSGI applications block, and
hands it the request body as it arrives (``wsgi.input`` reads block until the
bytes are there) unless the whole body came with the head.  Nothing here
touches sockets.
"""

from __future__ import annotations

import io
import logging
import os
import stat
import sys
from functools import partial
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Tuple

from .request import Request
from .response import FileBody, Response
from .writer import without_length

log = logging.getLogger("wssync.wsgi")

Environ = Dict[str, Any]
WsgiApp = Callable[[Environ, Callable[..., Any]], Iterable[bytes]]

EXTENSION = "wssync"  # the key of a framework adapter in the application's ``extensions``
_IN_MEMORY: Tuple[type, ...] = (type(iter([])), type(iter(())))  # cannot block nor fail

# Hop-by-hop headers belong to the connection, which the server manages.
_HOP_BY_HOP = frozenset(("connection", "keep-alive", "proxy-authenticate",
                         "proxy-authorization", "te", "trailers", "transfer-encoding",
                         "upgrade"))


class _StartResponse:
    """The ``start_response`` callable of one request, and what it was told."""

    __slots__ = ("headers", "headers_sent", "status", "written")

    def __init__(self) -> None:
        self.status: Optional[int] = None
        self.headers: List[Tuple[str, str]] = []
        self.headers_sent = False
        self.written: List[bytes] = []

    def __call__(self, status: str, headers: List[Tuple[str, str]],
                 exc_info: Any = None) -> Callable[[bytes], None]:
        if exc_info is not None:
            try:
                if self.headers_sent:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None  # break the reference cycle, as PEP 3333 asks
        elif self.status is not None:
            raise AssertionError("start_response called twice without exc_info")
        code = status.split(" ", 1)[0]
        if len(code) != 3 or not code.isdigit():
            raise ValueError(f"invalid WSGI status {status!r}")
        kept = []
        for field in headers:
            name, value = field
            if not isinstance(name, str) or not isinstance(value, str):
                raise TypeError("WSGI header names and values must be str")
            lower = name.lower()
            if lower in _HOP_BY_HOP:
                raise ValueError(f"hop-by-hop header {name!r} not allowed from WSGI")
            if lower != "date":  # the server sends its own: two would contradict
                kept.append(field)
        self.status = int(code)
        self.headers = kept
        return self.write

    def write(self, data: bytes) -> None:
        """The legacy ``write`` callable: data is kept and sent before the iterable."""
        if self.status is None:
            raise AssertionError("write() before start_response()")
        self.written.append(bytes(data))


class FileWrapper:
    """``environ['wsgi.file_wrapper']``: a file-like object as a response body.

    Iterated, it reads ``block_size`` bytes at a time (any object with
    ``read``); returned as it is from a request with a ``Content-Length``, a
    regular file with a descriptor goes out with ``sendfile`` from its current
    position instead.  ``close()`` closes the file-like object.
    """

    __slots__ = ("block_size", "filelike")

    def __init__(self, filelike: Any, block_size: int = 8192) -> None:
        self.filelike = filelike
        self.block_size = block_size if block_size > 0 else 8192

    def __iter__(self) -> Iterator[bytes]:
        read = self.filelike.read
        while True:
            block = read(self.block_size)
            if not block:
                return
            yield block

    def close(self) -> None:
        close = getattr(self.filelike, "close", None)
        if close is not None:
            close()

    def file_body(self, length: int) -> Optional[FileBody]:
        """The rest of the file, ``length`` bytes of it, as a body sent with
        ``sendfile``; None where that cannot apply (no descriptor, not a
        regular file)."""
        try:
            fd = self.filelike.fileno()
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return None
            # A buffered file may have read ahead: its own position is the truth.
            offset = self.filelike.tell() if hasattr(self.filelike, "tell") else \
                os.lseek(fd, 0, os.SEEK_CUR)
        except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation included
            return None
        return FileBody(fd, offset, length, self.close)


def build_environ(request: Request, server_name: str, server_port: str) -> Environ:
    environ: Environ = {
        "REQUEST_METHOD": request.method,
        "SCRIPT_NAME": "",
        "PATH_INFO": request.path,
        "QUERY_STRING": request.query_string,
        "SERVER_NAME": server_name,
        "SERVER_PORT": server_port,
        "SERVER_PROTOCOL": request.version,
        "SERVER_SOFTWARE": "wssync",
        "REMOTE_ADDR": "",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": request.scheme,
        # Either way the input ends where the body ends (a chunked one has no
        # CONTENT_LENGTH): read() up to b"" is safe, as the flag tells frameworks.
        "wsgi.input": request.body_stream or io.BytesIO(request.body),
        "wsgi.input_terminated": True,
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
        "wsgi.file_wrapper": FileWrapper,
    }
    # The client (behind a trusted proxy, the one its headers name); REMOTE_ADDR
    # stays empty for a Unix socket's peer that no proxy named.
    peer = request.remote_addr
    if isinstance(peer, tuple):
        environ["REMOTE_ADDR"] = peer[0]
        if peer[1]:  # 0: a proxy named the client without its port
            environ["REMOTE_PORT"] = str(peer[1])
    for name, value in request.headers.items():
        key = name.upper()
        if "_" in key:
            # CGI turns "-" into "_": a header already using "_" could pose as
            # another (X_Forwarded_For vs X-Forwarded-For). Drop it, as others do.
            continue
        key = key.replace("-", "_")
        if key == "CONTENT_TYPE" or key == "CONTENT_LENGTH":
            environ[key] = value
            continue
        key = "HTTP_" + key
        environ[key] = environ[key] + "," + value if key in environ else value
    return environ


def request_environ(request: Request) -> Environ:
    """The environ of ``request``, its server name and port from ``Host`` (else the
    listening socket's address)."""
    host = request.headers.get("host") or ""
    local = request.local_addr
    name, _, port = host.rpartition(":") if host.count(":") == 1 else (host, "", "")
    if not name:
        name = local[0] if isinstance(local, tuple) else "localhost"
    if not port:
        port = str(local[1]) if isinstance(local, tuple) else \
            ("443" if request.scheme == "https" else "80")
    return build_environ(request, name, port)


def _declared_length(headers: List[Tuple[str, str]]) -> int:
    """The application's Content-Length, or -1 when it gave none (or not a number)."""
    for name, value in headers:
        if len(name) == 14 and name.lower() == "content-length":
            value = value.strip()
            # (int() refuses thousands of digits: no body is that long anyway)
            ok = value.isdigit() and value.isascii() and len(value) <= 18
            return int(value) if ok else -1
    return -1


class WsgiHandler:
    """An HTTP handler that runs a WSGI application; it blocks, so it runs on a worker."""

    blocking = True
    streams_body = True  # wsgi.input is read as the body arrives

    def __init__(self, wsgi_app: WsgiApp) -> None:
        self.wsgi_app = wsgi_app

    def websocket_routes(self) -> Any:
        """WebSocket routes the application declares: what a framework adapter
        (:class:`wssync.flask.Sock`) left in its ``extensions`` under
        :data:`EXTENSION`, with a ``match_websocket(request)``; else None."""
        extensions = getattr(self.wsgi_app, "extensions", None)
        return extensions.get(EXTENSION) if isinstance(extensions, dict) else None

    def __call__(self, request: Request) -> Response:
        environ = request_environ(request)
        start = _StartResponse()
        result = self.wsgi_app(environ, start)
        if type(result) is FileWrapper and start.status is not None and not start.written:
            length = _declared_length(start.headers)
            file_body = result.file_body(length) if length >= 0 else None
            if file_body is not None:
                start.headers_sent = True
                return Response(file_body, start.status, start.headers)
        try:
            chunks = iter(result)
            first = b""
            done = True
            # Headers go out with the first non-empty chunk (PEP 3333), so an
            # application may still change them with exc_info until then.
            for chunk in chunks:
                if chunk:
                    first, done = chunk, False
                    break
            if start.status is None:
                raise AssertionError("WSGI application did not call start_response")
            start.headers_sent = True
            prefix = b"".join(start.written) + first
            # A body already in memory (a list, or Django's HttpResponse, which
            # iterates one) is joined and closed here, on the thread that ran the
            # application: close() ends the request there (Django's
            # request_finished closes that thread's database connections).
            in_memory = isinstance(result, (list, tuple)) or type(chunks) in _IN_MEMORY
            if done or in_memory:
                body = prefix if done else prefix + b"".join(chunks)
                _close(result)
                if request.method == "HEAD" and not body:
                    # No body is sent: the application's length is the one GET would send.
                    return Response(iter(()), start.status, start.headers)
                return Response(body, start.status, without_length(start.headers))
            if len(prefix) == _declared_length(start.headers):
                # All the body the application said it would send (Flask's usual
                # answer: one chunk behind an iterator) goes out whole, without
                # two more trips between this thread and the reactor to ask for
                # nothing; the rest of the iterator (the code after its last
                # yield) and its close() run here once the answer is on its way.
                answer = Response(prefix, start.status, without_length(start.headers))
                answer._after = partial(_finish_sent, chunks, result)
                return answer
            return Response(_Body(prefix, chunks, result), start.status, start.headers)
        except BaseException:
            _close(result)
            raise


class _Body:
    """A streamed answer: its first bytes, then the application's other chunks.

    ``close()`` closes the application's iterable once, whether or not it was
    started: a HEAD answer, or a client gone before the first chunk, never
    iterates it, and PEP 3333 still asks for its close().
    """

    __slots__ = ("_chunks", "_prefix", "_result")

    def __init__(self, prefix: bytes, chunks: Iterator[bytes], result: Iterable[bytes]) -> None:
        self._prefix = prefix
        self._chunks = chunks
        self._result: Optional[Iterable[bytes]] = result

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        prefix = self._prefix
        if prefix:
            self._prefix = b""
            return prefix
        for chunk in self._chunks:
            if chunk:
                return chunk
        raise StopIteration

    def close(self) -> None:
        result, self._result = self._result, None
        if result is not None:
            _close(result)


def _finish_sent(chunks: Iterator[bytes], result: Iterable[bytes]) -> None:
    """After an answer complete at its declared length is handed over: the rest of
    the application's iterator, of which nothing more is sent (a chunk past the
    length stops it, as PEP 3333 asks), then its close().  Errors are logged:
    the client has its answer."""
    try:
        for extra in chunks:
            if extra:
                log.warning("WSGI application sent more than its Content-Length; "
                            "the rest was not sent")
                break
    except Exception:
        log.exception("error in a WSGI response iterator after its whole declared body")
    finally:
        try:
            _close(result)
        except Exception:
            log.exception("error closing a WSGI response")


def _close(result: Iterable[bytes]) -> None:
    close = getattr(result, "close", None)
    if close is not None:
        close()
