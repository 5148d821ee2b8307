"""WSGI "Hello, World!" for waitress and gunicorn (``wsgi_app:app``)."""

from __future__ import annotations

from typing import Any, Callable, Dict, Iterable, List, Tuple

HELLO = b"Hello, World!"
HEADERS = [("Content-Type", "text/plain"), ("Content-Length", str(len(HELLO)))]


def app(environ: Dict[str, Any],
        start_response: Callable[[str, List[Tuple[str, str]]], Any]) -> Iterable[bytes]:
    start_response("200 OK", list(HEADERS))
    return [HELLO]
