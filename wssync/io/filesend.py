"""File regions in a transport's output queue and how one step of a region goes out.

A region is ``count`` bytes of an open file from ``offset``.  It goes out with
``sendfile`` (the kernel copies, nothing passes through Python) one bounded
step per writable event, or, where ``sendfile`` cannot apply (TLS, or a file
the kernel refuses), read and sent one bounded chunk at a time.  A region never
opens or closes the file (the protocol that queued it owns the descriptor) and
never closes the connection: it raises, and its transport decides.
"""

from __future__ import annotations

import errno
import os
from typing import Callable, Tuple, Type

from ..errors import FileEndedEarly
from .sockops import Buffer

# The most one sendfile() call is asked for: a socket buffer's worth at most is
# taken anyway, and the next step waits for the next writable event.
_SENDFILE_STEP = 4 * 1024 * 1024
# A file region read instead of sent with sendfile (TLS, or a file sendfile
# refuses) is held one chunk at a time: what such a connection holds.
FILE_CHUNK = 128 * 1024
# sendfile() errors that mean "not for this file or socket": read it instead.
_NO_SENDFILE = {errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSOCK}


class FileRegion:
    """``count`` bytes of the open file ``fd`` from ``offset``, waiting in the
    output queue; ``done`` is called once they are all sent."""

    __slots__ = ("count", "done", "fd", "offset", "pending", "sendfile")

    def __init__(self, fd: int, offset: int, count: int, done: Callable[[], None],
                 sendfile: bool) -> None:
        self.fd = fd
        self.offset = offset
        self.count = count
        self.done = done
        self.sendfile = sendfile  # False: read in chunks (at most FILE_CHUNK held)
        self.pending: Buffer = b""  # the unsent rest of the last chunk read

    def step(self, fileno: int, send: Callable[[Buffer], int],
             would_block: Tuple[Type[BaseException], ...]) -> int:
        """Send the next part to the socket ``fileno``: the bytes it took (0 when it
        is full), or -1 when ``send`` (which reports a gone peer so) failed.

        Raises ``OSError`` for a file or socket error, :class:`FileEndedEarly`
        when the file is shorter than the region promised.
        """
        if self.sendfile:
            try:
                sent = os.sendfile(fileno, self.fd, self.offset,
                                   min(self.count, _SENDFILE_STEP))
            except would_block:
                return 0
            except OSError as exc:
                if exc.errno not in _NO_SENDFILE:
                    raise
                # Not for this file (or socket): read it instead.  The socket is
                # still writable, so the next round goes on at once.
                self.sendfile = False
                return 0
            if not sent:
                raise FileEndedEarly(errno.EIO, "file ended early")
            self.offset += sent
            self.count -= sent
            return sent
        # Read a chunk when the last one is sent, send what is left of it.  The
        # chunk stays here, not in the buffer count: it is bounded by
        # FILE_CHUNK, and a peer is not dropped for the file it asked for.
        pending = self.pending
        if not pending:
            pending = os.pread(self.fd, min(self.count, FILE_CHUNK), self.offset)
            if not pending:
                raise FileEndedEarly(errno.EIO, "file ended early")
            self.offset += len(pending)
            self.count -= len(pending)
        sent = send(pending)
        if sent >= 0:
            # A retried TLS write starts at the same byte, as OpenSSL requires.
            self.pending = memoryview(pending)[sent:] if sent < len(pending) else b""
        return sent
