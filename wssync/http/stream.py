"""A response body sent chunk by chunk, as fast as the peer reads it.

:class:`ResponseStream` asks the application layer for a streamed body's next
chunk (a handler's iterator may block, so the application decides where it
runs), frames each as the response's head said (chunked or counted), and asks
again once the transport has room.  It runs on the reactor thread for one
:class:`~wssync.http.connection.HttpConnection` and never touches a socket
beyond its transport's ``write``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Iterable, Optional, cast

if TYPE_CHECKING:
    from .connection import HttpConnection
    from .writer import BodyFramer

log = logging.getLogger("wssync.http")


class ResponseStream:
    """One streamed response body on its way out."""

    __slots__ = ("body", "chunks", "conn", "framer", "waiting")

    def __init__(self, conn: HttpConnection, body: object, framer: BodyFramer) -> None:
        self.conn = conn
        self.body = body  # what the handler returned, closed at the end
        self.chunks = iter(cast(Iterable[bytes], body))  # framed as a stream: not bytes
        self.framer = framer
        self.waiting = False  # a chunk was asked for and has not come

    def pull(self) -> None:
        """Ask for the next chunk while the peer keeps up."""
        conn = self.conn
        if conn._stream is not self or conn._paused or self.waiting:
            return
        self.waiting = True
        conn.app.next_chunk(conn, self.chunks, self._on_chunk)

    def _on_chunk(self, chunk: Optional[bytes], exc: Optional[BaseException]) -> None:
        self.waiting = False
        conn = self.conn
        transport = conn.transport
        if conn._stream is not self or transport is None or transport.closed:
            return
        if exc is not None:
            # Headers are gone already: the only honest signal is to cut the connection.
            log.error("error while streaming a response body", exc_info=exc)
            self.close()
            transport.abort()
            return
        if chunk is None:
            self.close()
            transport.write(self.framer.end())
            conn._finish_response()
            return
        for part in self.framer.data(chunk):
            transport.write(part)
        self.pull()

    def close(self) -> None:
        """Close the handler's body (once), sent or not."""
        conn = self.conn
        if conn._stream is self:
            conn._stream = None
            conn._close_body(self.body)
