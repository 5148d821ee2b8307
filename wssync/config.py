"""Server settings: every limit and timeout with its documented default.

Only data and validation live here, and this module imports nothing else of
the package: every layer, the Sans-I/O parsers and the client included, takes
its defaults from :data:`SETTINGS`, so each default is written once.
"""

from __future__ import annotations

import math
from typing import Any, Dict, NamedTuple, Tuple

_KiB = 1024
_MiB = 1024 * 1024


class Setting(NamedTuple):
    """One tunable: its default, what kind of value it takes, and its help text."""

    default: Any
    kind: str  # "bytes", "seconds", "count", "flag" or "text": how the CLI reads it
    help: str


# The one list of settings: Config, the command line and its environment
# variables (WSSYNC_<NAME>) and README.rst all take names and defaults from here.
SETTINGS: Dict[str, Setting] = {
    # HTTP
    "max_request_line": Setting(8190, "bytes", "longest request line; longer gets 414"),
    "max_header_size": Setting(64 * _KiB, "bytes", "largest request head; larger gets 431"),
    "max_headers": Setting(100, "count", "most header fields in a request; more gets 431"),
    "max_body_size": Setting(10 * _MiB, "bytes", "largest request body; larger gets 413"),
    "keepalive_timeout": Setting(5.0, "seconds", "how long an idle keep-alive connection is kept"),
    "header_timeout": Setting(10.0, "seconds", "time to receive a whole request head; then 408"),
    "body_timeout": Setting(30.0, "seconds", "time to receive a whole request body; then 408"),
    "body_buffer_size": Setting(256 * _KiB, "bytes",
                                "WSGI request bodies: bytes read ahead of the application "
                                "before the client is no longer read"),
    "max_unread_body": Setting(256 * _KiB, "bytes",
                               "WSGI request bodies: an unread rest up to this is read and "
                               "discarded to keep the connection; a larger one closes it"),
    # WebSocket
    "max_message_size": Setting(16 * _MiB, "bytes",
                                "largest WebSocket message; larger closes with 1009"),
    "ping_interval": Setting(20.0, "seconds", "between keepalive pings; 0 disables them"),
    "ping_timeout": Setting(20.0, "seconds", "wait for a pong, then close with 1011"),
    "close_timeout": Setting(5.0, "seconds", "wait for the peer's close frame, then drop it"),
    "compression": Setting(True, "flag", "accept permessage-deflate offers (RFC 7692)"),
    "compression_level": Setting(6, "count",
                                 "zlib level for outgoing messages; 0 sends them uncompressed"),
    "compression_mem_level": Setting(8, "count", "zlib memLevel 1-9: memory per connection vs. "
                                                 "speed"),
    "compression_window_bits": Setting(15, "count", "our deflate window, 9-15 (2**bits bytes)"),
    "compression_client_window_bits": Setting(15, "count",
                                              "deflate window 8-15 we ask clients to keep within"),
    # Thread-pool mode: how much work may wait for a worker
    "max_queue": Setting(16, "count", "thread-pool mode: messages of one WebSocket waiting for "
                                      "its handler before that peer is no longer read"),
    "max_queue_bytes": Setting(1 * _MiB, "bytes", "thread-pool mode: bytes of one WebSocket's "
                                                  "waiting messages before it is no longer read"),
    "max_queued_tasks": Setting(10000, "count", "thread-pool mode: handler calls queued or "
                                                "running, all connections together, before new "
                                                "connections wait to be accepted"),
    "max_blocking_websockets": Setting(
        1000, "count", "blocking-style WebSocket handlers running at once, a thread each; more "
                       "handshakes get 503 with Retry-After. An idle one costs ~25 KiB (the "
                       "thread's stack is reserved address space, touched only as used), so "
                       "1000 stay within ~25 MiB and a small share of the machine's threads"),
    "max_send_queue": Setting(4 * _MiB, "bytes", "bytes other threads may hand the reactor to "
                                                 "send (WebSocket.send, broadcast) before such a "
                                                 "thread waits"),
    # Transport
    "write_high_water": Setting(256 * _KiB, "bytes",
                                "buffered output for a peer before we stop reading it"),
    "max_write_buffer": Setting(4 * _MiB, "bytes",
                                "soft limit: a peer more than this behind whose backlog does not "
                                "shrink for slow_peer_timeout is dropped (a reading peer is kept)"),
    "max_write_buffer_hard": Setting(64 * _MiB, "bytes",
                                     "hard limit: a peer already behind that falls this far "
                                     "behind is dropped at once (one write to a peer that has "
                                     "caught up is never cut)"),
    "slow_peer_timeout": Setting(10.0, "seconds",
                                 "how long a backlog above max_write_buffer may go without "
                                 "shrinking before the peer is dropped"),
    "send_timeout": Setting(60.0, "seconds",
                            "a peer that takes no bytes this long while output waits is dropped"),
    "max_connections": Setting(0, "count", "open connections; more get 503 (0: as many as file "
                                           "descriptors allow)"),
    "backlog": Setting(1024, "count", "the listening socket's accept queue"),
    "tls_handshake_timeout": Setting(10.0, "seconds", "TLS only: a client that has not "
                                                      "finished its handshake by then is "
                                                      "dropped"),
    "max_tls_handshakes": Setting(1000, "count", "TLS only: handshakes in progress at once, per "
                                                 "process; past it a new connection drops the "
                                                 "oldest unfinished one (a stalled handshake "
                                                 "holds 11-45 KiB); 0: no limit"),
    "shutdown_grace": Setting(10.0, "seconds", "how long a stop waits for in-flight work"),
    "max_requests": Setting(0, "count", "workers only: a worker that has served this many "
                                        "requests (WebSocket handshakes included) is "
                                        "replaced by a new one; 0 never"),
    "max_requests_jitter": Setting(0, "count", "workers only: each worker's max_requests is "
                                               "raised by a random 0 to this, so workers are "
                                               "not all replaced at once"),
    "close_spread": Setting(5.0, "seconds", "a worker replaced (SIGHUP, max_requests) closes "
                                            "its WebSockets with 1012 at random moments over "
                                            "this long, at most half of shutdown_grace, so "
                                            "clients do not all reconnect at once"),
    "slow_callback_warning": Setting(0.25, "seconds",
                                     "reactor mode: a handler that holds the reactor this long "
                                     "is named in a warning; 0 disables the watch"),
    # Behind a proxy
    "forwarded_allow_ips": Setting("127.0.0.1", "text",
                                   "comma-separated IPs and networks of proxies whose "
                                   "X-Forwarded-For, X-Forwarded-Proto and Forwarded headers "
                                   "are believed; '*' trusts every peer, 'unix' peers on a "
                                   "Unix socket"),
    "proxy_protocol": Setting(False, "flag", "every connection starts with a PROXY protocol "
                                             "header (v1 or v2, HAProxy's send-proxy) naming "
                                             "the client; without one it is closed"),
    "proxy_protocol_timeout": Setting(5.0, "seconds", "proxy_protocol only: a connection "
                                                      "whose PROXY header has not arrived by "
                                                      "then is closed"),
    # Operations
    "metrics": Setting("", "text", "HOST:PORT to serve Prometheus metrics on, at /metrics "
                                   "(summed over workers by the supervisor); empty: none"),
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
    body_buffer_size: int
    max_unread_body: int
    max_message_size: int
    ping_interval: float
    ping_timeout: float
    close_timeout: float
    compression: bool
    compression_level: int
    compression_mem_level: int
    compression_window_bits: int
    compression_client_window_bits: int
    max_queue: int
    max_queue_bytes: int
    max_queued_tasks: int
    max_blocking_websockets: int
    max_send_queue: int
    write_high_water: int
    max_write_buffer: int
    max_write_buffer_hard: int
    slow_peer_timeout: float
    send_timeout: float
    max_connections: int
    backlog: int
    tls_handshake_timeout: float
    max_tls_handshakes: int
    shutdown_grace: float
    max_requests: int
    max_requests_jitter: int
    close_spread: float
    slow_callback_warning: float
    forwarded_allow_ips: str
    proxy_protocol: bool
    proxy_protocol_timeout: float
    metrics: str

    def __init__(self, **settings: Any) -> None:
        unknown = set(settings) - set(SETTINGS)
        if unknown:
            raise TypeError(f"unknown setting(s): {', '.join(sorted(unknown))}")
        for name, setting in SETTINGS.items():
            default = setting.default
            value = settings.get(name, default)
            if value is None:
                value = default
            if isinstance(default, bool):
                if not isinstance(value, bool):
                    raise ValueError(f"{name} must be True or False, not {value!r}")
            elif isinstance(default, str):
                if not isinstance(value, str):
                    raise ValueError(f"{name} must be a string, not {value!r}")
            elif (not isinstance(value, (int, float)) or isinstance(value, bool)
                    or not math.isfinite(value) or value < 0):
                # inf or NaN would reach the reactor as a timer it cannot schedule.
                raise ValueError(f"{name} must be a finite non-negative number, not {value!r}")
            setattr(self, name, type(default)(value))
        if self.max_queue < 1:
            raise ValueError("max_queue must be at least 1")
        # zlib's ranges (a 9-bit floor for our window: zlib cannot deflate with 8).
        for name, low, high in (("compression_window_bits", 9, 15),
                                ("compression_client_window_bits", 8, 15),
                                ("compression_level", 0, 9), ("compression_mem_level", 1, 9)):
            if not low <= getattr(self, name) <= high:
                raise ValueError(f"{name} must be {low}-{high}, not {getattr(self, name)}")
        if self.metrics:
            try:
                host_port(self.metrics)
            except ValueError as exc:
                raise ValueError(f"metrics: {exc}") from None


def host_port(value: str) -> Tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` for an IPv6 address) as ``(host, port)``;
    ``ValueError`` if it is not that."""
    host, _, port = value.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"expected HOST:PORT, not {value!r}")
    return host, int(port)


def default(name: str) -> Any:
    """The documented default of setting ``name`` (for layers used without a server)."""
    return SETTINGS[name].default
