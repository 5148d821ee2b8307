"""``splice``: two transports joined, so that what one reads the other writes.

Used where a connection is served by another process but cannot be passed to
it whole (a TLS connection, whose keys live here): its clear text goes to that
process over a local socket pair, and back.  Each side's output is the other's
input, with back-pressure (a side above its high-water mark pauses the other's
reading) and the ends passed on: the client's end of input half-closes the
other side, and the server side's end closes the client's connection once its
output is out.  It knows nothing of what the bytes say.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Optional

if TYPE_CHECKING:
    from .protocol import BaseProtocol
    from .transport import Transport


class _Side:
    """The protocol of one transport of a splice."""

    name = "passed"  # (its protocol in the open-connection counts)

    def __init__(self, client: bool) -> None:
        self.client = client  # the client's own connection (else the local pair)
        self.transport: Optional[Transport] = None
        self.other: Optional[_Side] = None

    def connection_made(self, transport: Transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        other = self.other
        if other is not None and other.transport is not None:
            other.transport.write(data)

    def eof_received(self) -> None:
        other = self.other
        if other is None or other.transport is None:
            return
        if self.client:
            other.transport.close_write()  # the client sent all: the server answers
        else:
            other.transport.close()  # the server is done: the client's connection ends

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        other = self.other
        if other is not None and other.transport is not None \
                and not other.transport.is_closing():
            other.transport.close()

    def pause_writing(self) -> None:
        other = self.other
        if other is not None and other.transport is not None:
            other.transport.pause_reading()

    def resume_writing(self) -> None:
        other = self.other
        if other is not None and other.transport is not None:
            other.transport.resume_reading()

    def shutdown(self) -> None:
        """A stop: the exchange ends when the serving side ends it."""


def splice(client: Transport, make_pair: Callable[[BaseProtocol], Transport]) -> None:
    """Join ``client`` (its protocol replaced) with the transport ``make_pair``
    builds around the other side's protocol object (and starts)."""
    near, far = _Side(True), _Side(False)
    near.other, far.other = far, near
    client.set_protocol(near)
    make_pair(far)
