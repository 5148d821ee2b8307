"""The two shapes on either side of a transport: ``BaseProtocol``, what a protocol
object offers the transport that feeds it (asyncio's shape), and ``WriteLimits``,
the output policy every transport of a listener shares.

Declarations only: this module must not hold state or behaviour.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, NamedTuple, Optional, Protocol

if TYPE_CHECKING:
    from .transport import Transport


class WriteLimits(NamedTuple):
    """Output-buffer policy of every connection.

    A peer is dropped for what it does not take, never for reading slowly:
    when it takes no bytes at all for ``send_timeout``; when its backlog is
    above ``max_buffer`` at two checks ``slow_timeout`` apart and did not
    shrink between them (it falls further behind for good); or when a write
    to a peer already above ``high_water`` takes its backlog past
    ``hard_limit`` (memory).  A peer that has caught up may take one write of
    any size, and control writes (:meth:`Transport.write_control`) never drop.
    """

    high_water: int  # above this, stop reading the peer and pause the protocol
    max_buffer: int  # soft limit: a backlog above it must shrink (checked every slow_timeout)
    send_timeout: float  # seconds without any progress while output waits; 0: none
    hard_limit: int = 64 * 1024 * 1024  # a peer already behind is dropped past this
    slow_timeout: float = 10.0  # seconds between two checks of a backlog above max_buffer


class BaseProtocol(Protocol):
    """What a protocol object offers its transport (the asyncio shape)."""

    name: str

    def connection_made(self, transport: Transport) -> None: ...
    def data_received(self, data: bytes) -> None: ...
    def eof_received(self) -> None: ...
    def connection_lost(self, exc: Optional[BaseException]) -> None: ...
    def pause_writing(self) -> None: ...
    def resume_writing(self) -> None: ...
    def shutdown(self) -> None: ...


# Makes the protocol object of a new connection.
ProtocolFactory = Callable[[], BaseProtocol]
