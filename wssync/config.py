"""Server settings: every limit and timeout with its documented default.

Only data and validation live here; nothing reads these values but the layers
that enforce them.
"""

from __future__ import annotations

from typing import Any, Dict

from .http_parser import ParserLimits
from .permessage_deflate import DeflateSettings

_DEFAULTS: Dict[str, Any] = {
    # HTTP
    "max_request_line": 8190,  # bytes; longer gets 414
    "max_header_size": 65536,  # bytes of request head; larger gets 431
    "max_headers": 100,  # header fields; more gets 431
    "max_body_size": 10 * 1024 * 1024,  # bytes; larger gets 413
    "keepalive_timeout": 5.0,  # seconds an idle keep-alive connection is kept
    "header_timeout": 10.0,  # seconds to receive a whole request head
    "body_timeout": 30.0,  # seconds to receive a whole request body
    # WebSocket
    "max_message_size": 16 * 1024 * 1024,  # bytes of one message; larger gets 1009
    "ping_interval": 20.0,  # seconds between keepalive pings; 0 disables them
    "ping_timeout": 20.0,  # seconds to wait for the pong; then close 1011
    "close_timeout": 5.0,  # seconds to wait for the peer's close frame
    "compression": True,  # accept permessage-deflate offers (RFC 7692)
    "compression_level": 6,  # zlib level for outgoing messages, 0 sends them uncompressed
    "compression_mem_level": 8,  # zlib memLevel 1-9: memory per connection vs. speed
    "compression_window_bits": 15,  # our deflate window 9-15 (2**bits bytes)
    "compression_client_window_bits": 15,  # window 8-15 we ask clients to keep within
    # Transport
    "write_high_water": 256 * 1024,  # bytes buffered before we stop reading the peer
    "max_write_buffer": 64 * 1024 * 1024,  # bytes buffered before a peer is dropped
    "send_timeout": 60.0,  # seconds a peer may take no bytes while we have some for it
    "max_connections": 0,  # 0: as many as file descriptors allow
    "backlog": 1024,
    "shutdown_grace": 10.0,  # seconds stop() waits for in-flight work
}


class Config:
    """All tunables of a server; unknown names are a ``TypeError``."""

    max_request_line: int
    max_header_size: int
    max_headers: int
    max_body_size: int
    keepalive_timeout: float
    header_timeout: float
    body_timeout: float
    max_message_size: int
    ping_interval: float
    ping_timeout: float
    close_timeout: float
    compression: bool
    compression_level: int
    compression_mem_level: int
    compression_window_bits: int
    compression_client_window_bits: int
    write_high_water: int
    max_write_buffer: int
    send_timeout: float
    max_connections: int
    backlog: int
    shutdown_grace: float

    def __init__(self, **settings: Any) -> None:
        unknown = set(settings) - set(_DEFAULTS)
        if unknown:
            raise TypeError(f"unknown setting(s): {', '.join(sorted(unknown))}")
        for name, default in _DEFAULTS.items():
            value = settings.get(name, default)
            if value is None:
                value = default
            if isinstance(default, bool):
                if not isinstance(value, bool):
                    raise ValueError(f"{name} must be True or False, not {value!r}")
            elif not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{name} must be a non-negative number, not {value!r}")
            setattr(self, name, type(default)(value))
        self.parser_limits = ParserLimits(
            self.max_request_line, self.max_header_size, self.max_headers, self.max_body_size
        )
        self.deflate = DeflateSettings(
            self.compression, self.compression_window_bits, self.compression_client_window_bits,
            self.compression_level, self.compression_mem_level,
        )

    @staticmethod
    def defaults() -> Dict[str, Any]:
        return dict(_DEFAULTS)
