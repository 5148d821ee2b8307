"""``BodyStream``: a request body handed to application code as it arrives.

The reactor thread puts the body's bytes in (:meth:`BodyStream.feed`, then
:meth:`~BodyStream.end` or :meth:`~BodyStream.fail`); a worker thread reads them
out with the file methods a WSGI application uses on ``wsgi.input`` (``read``,
``readline``, ``readinto``, iteration), blocking until bytes arrive.  Room is
bounded: the reactor stops reading the client while the stream is full and is
asked back (through the ``notify`` callable it was given) once the reader has
taken half of it.  This module never touches a socket, a selector or the
reactor itself.
"""

from __future__ import annotations

import collections
import io
import threading
import time
from typing import Any, Callable, Deque, List, Optional

from ..errors import RequestBodyError


class BodyStream(io.RawIOBase):
    """A bounded, thread-safe pipe for one request body.

    ``notify(stream)`` is called from the reading thread when the reactor
    should look at the stream again: the reader waits for the first time (an
    ``Expect: 100-continue`` may be answered now), or it has made room in a
    stream the reactor had to stop filling.  ``timeout`` (seconds, 0 for none)
    bounds one wait for bytes, as a safety net: the connection enforces the
    body's own deadline and fails the stream when it passes.
    """

    def __init__(self, capacity: int, timeout: float,
                 notify: Callable[[BodyStream], None]) -> None:
        super().__init__()
        self.capacity = max(1, capacity)
        self._timeout = timeout or None
        self._notify = notify
        self._chunks: Deque[bytes] = collections.deque()
        self._offset = 0  # bytes of the first chunk already read
        self._size = 0  # bytes held and not yet read
        self._ended = False
        self._error: Optional[RequestBodyError] = None
        self._full = False  # the reactor stopped filling: tell it once there is room
        self._asked = False  # the reader has waited at least once
        self._cond = threading.Condition(threading.Lock())

    # -- the reactor's side ------------------------------------------------------------

    def room(self) -> int:
        """Bytes that may be fed before the stream is full (a racy read is fine:
        the reader only ever makes more room)."""
        return self.capacity - self._size

    def feed(self, data: bytes) -> None:
        with self._cond:
            if self._ended or self._error is not None:
                return
            self._chunks.append(data)
            self._size += len(data)
            self._cond.notify()

    def stop_filling(self) -> bool:
        """The reactor stops reading the client until notified; False if the
        reader made room meanwhile (then it should go on)."""
        with self._cond:
            if self._size * 2 <= self.capacity:
                return False
            self._full = True
            return True

    def end(self) -> None:
        """The whole body has been fed."""
        with self._cond:
            self._ended = True
            self._cond.notify_all()

    def fail(self, error: RequestBodyError) -> None:
        """The body cannot be completed: every read from now on raises ``error``."""
        with self._cond:
            if self._ended:
                return
            self._error = error
            self._drop()
            self._cond.notify_all()

    def discard(self) -> None:
        """The application is done with the body: drop what it did not read
        (later reads see the end of the body)."""
        with self._cond:
            self._ended = True
            self._drop()
            self._cond.notify_all()

    def _drop(self) -> None:
        self._chunks.clear()
        self._offset = self._size = 0

    # -- the application's side --------------------------------------------------------

    def readable(self) -> bool:
        return True

    def _wait(self) -> bool:
        """Wait (holding the lock) until bytes are there; False at the end of the body."""
        while not self._size:
            if self._error is not None:
                raise self._error
            if self._ended:
                return False
            if not self._asked:
                self._asked = True
                self._call_notify()
                continue  # the lock was released: look again before waiting
            started = time.monotonic()
            self._cond.wait(self._timeout)
            if (not self._size and not self._ended and self._error is None
                    and self._timeout is not None
                    and time.monotonic() - started >= self._timeout):
                raise RequestBodyError(408, "request body not received in time")
        return True

    def _call_notify(self) -> None:
        # The lock is held: release it around the call, which may block briefly
        # on the hand-off to the reactor.
        self._cond.release()
        try:
            self._notify(self)
        finally:
            self._cond.acquire()

    def _take(self, limit: int) -> bytes:
        """Up to ``limit`` held bytes (the lock is held and there are some)."""
        chunks = self._chunks
        first = chunks[0]
        offset = self._offset
        available = len(first) - offset
        if limit >= available:
            data = first[offset:] if offset else first
            chunks.popleft()
            self._offset = 0
        else:
            data = first[offset:offset + limit]
            self._offset = offset + limit
        self._size -= len(data)
        if self._full and self._size * 2 <= self.capacity:
            self._full = False
            self._call_notify()
        return data

    def read(self, size: Optional[int] = -1) -> bytes:
        """``size`` bytes, fewer only at the end of the body; all of the rest
        for a negative or missing ``size``."""
        if size is None or size < 0:
            return self.readall()
        parts: List[bytes] = []
        with self._cond:
            while size and self._wait():
                data = self._take(size)
                parts.append(data)
                size -= len(data)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def readall(self) -> bytes:
        parts: List[bytes] = []
        with self._cond:
            while self._wait():
                parts.append(self._take(self._size))
        return b"".join(parts)

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data = self.read(len(view))
        view[:len(data)] = data
        return len(data)

    def readline(self, size: Optional[int] = -1) -> bytes:
        """One line with its ``\\n`` (at most ``size`` bytes), or the rest of the body."""
        limit = -1 if size is None else size
        parts: List[bytes] = []
        with self._cond:
            while limit and self._wait():
                first = self._chunks[0]
                end = first.find(b"\n", self._offset)
                want = (len(first) if end < 0 else end + 1) - self._offset
                if 0 <= limit < want:
                    want = limit
                data = self._take(want)
                parts.append(data)
                limit -= len(data)
                if end >= 0 and data.endswith(b"\n"):
                    break
        return b"".join(parts)
