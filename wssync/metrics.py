"""Counters of one serving run, and their Prometheus text exposition.

:class:`Metrics` holds the plain numbers the layers below bump on objects they
already hold (the listener, a transport, an HTTP or WebSocket connection): an
attribute or a dict entry incremented on the reactor thread, with no lock and
nothing built per request.  Every label set is bounded (method classes, status
codes, close-code classes, fixed reasons), so hostile peers cannot grow it.

A *snapshot* is plain JSON-able data, ``{metric name: {label text: value}}``:
:meth:`Metrics.snapshot` makes one of the counters, the serving layer adds its
gauges, a worker sends it to its supervisor, :func:`combine` sums several and
:func:`render` writes one in the text format 0.0.4.  This module imports
nothing of wssync and never touches a socket.
"""

from __future__ import annotations

import math
from typing import Any, Dict, Iterable, List, Mapping, NamedTuple, Optional, Tuple

Snapshot = Dict[str, Dict[str, float]]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Request methods counted by name; any other is "other" (a client picks the method).
METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS")
TLS_FAILURES = ("timeout", "error", "plaintext", "max_tls_handshakes")
SLOW_DROPS = ("hard_limit", "not_catching_up", "send_timeout")


class Spec(NamedTuple):
    """One metric: its type, help text, label names, and how workers' values combine."""

    kind: str  # "counter" or "gauge"
    help: str
    labels: Tuple[str, ...] = ()
    combine: str = "sum"  # a gauge's value over workers: "sum" or "min"


# Every metric, in the order they are exposed (README's list follows it).
SPECS: Dict[str, Spec] = {
    "wssync_connections_accepted_total": Spec(
        "counter", "Connections accepted on the serving port."),
    "wssync_open_connections": Spec(
        "gauge", "Open connections by the protocol they speak (tls: handshake not done).",
        ("protocol",)),
    "wssync_http_requests_total": Spec(
        "counter", "HTTP responses sent, by request method (other: any other method, or "
                   "a request refused before its method was read) and status code.",
        ("method", "status")),
    "wssync_websocket_messages_received_total": Spec(
        "counter", "WebSocket data messages received."),
    "wssync_websocket_messages_sent_total": Spec(
        "counter", "WebSocket data messages sent (a broadcast counts once per receiver)."),
    "wssync_websocket_received_bytes_total": Spec(
        "counter", "Bytes of WebSocket frames received, as on the wire (control frames "
                   "included, before decompression)."),
    "wssync_websocket_sent_bytes_total": Spec(
        "counter", "Bytes of WebSocket frames sent, as on the wire (control frames "
                   "included, after compression)."),
    "wssync_websocket_closes_received_total": Spec(
        "counter", "WebSocket close frames received, by close code (3xxx and 4xxx: "
                   "application codes).", ("code",)),
    "wssync_websocket_closes_sent_total": Spec(
        "counter", "WebSocket close frames sent, by close code.", ("code",)),
    "wssync_websocket_handshakes_refused_total": Spec(
        "counter", "WebSocket handshakes answered with an HTTP error, by status code.",
        ("status",)),
    "wssync_tls_handshake_failures_total": Spec(
        "counter", "TLS handshakes that failed: not done in time, a TLS error, plain "
                   "HTTP sent to the TLS port, or the oldest dropped for a new one past "
                   "max_tls_handshakes.", ("reason",)),
    "wssync_slow_peers_dropped_total": Spec(
        "counter", "Connections dropped for not taking their output: past the hard "
                   "limit, a backlog not catching up, or no bytes taken for send_timeout.",
        ("reason",)),
    "wssync_output_buffer_bytes": Spec(
        "gauge", "Bytes written and waiting in output buffers for the kernel."),
    "wssync_pool_busy_threads": Spec(
        "gauge", "Threads running a task, per pool (handlers, wsgi, websocket: "
                 "blocking-style WebSocket handlers).", ("pool",)),
    "wssync_pool_queued_tasks": Spec(
        "gauge", "Tasks waiting for a thread, per pool.", ("pool",)),
    "wssync_broker_up": Spec(
        "gauge", "1 while the broker (Redis, or the relay between workers) is connected; "
                 "over workers, the lowest.", combine="min"),
    "wssync_broker_records_dropped_total": Spec(
        "counter", "Broadcast records not passed on because a broker link was too far "
                   "behind or a record too large."),
    "wssync_connections_passed_total": Spec(
        "counter", "Connections passed to the worker that owns their session (out) and "
                   "taken from another worker (in).", ("direction",)),
    "wssync_workers": Spec("gauge", "Worker processes serving (under a supervisor)."),
    "wssync_worker_restarts_total": Spec(
        "counter", "Workers restarted after dying (rolling restarts not counted)."),
}


def labels(**values: object) -> str:
    """The label text of a sample: ``name="value"`` pairs, values escaped."""
    return ",".join(f'{name}="{_escape(str(value))}"' for name, value in values.items())


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def close_label(code: int) -> str:
    """A close code as a label: the registered ones as they are, application
    codes by class, so a peer cannot make a series per code."""
    if 3000 <= code <= 4999:
        return f"{code // 1000}xxx"
    return str(code) if 1000 <= code <= 1015 else "other"


class Tally(Dict[Any, int]):
    """Counts by key: ``tally[key] += 1`` counts a key not seen yet from 0 (the
    miss costs a call once; later counts are plain dict operations in C)."""

    __slots__ = ()

    def __missing__(self, key: Any) -> int:
        return 0


class ByMethod(Dict[str, Tally]):
    """Responses by status, per request method: ``by_method[method][status] += 1``;
    a method not listed in :data:`METHODS` counts in :attr:`other` (and is never
    added: a client cannot grow this)."""

    __slots__ = ("other",)

    def __init__(self) -> None:
        super().__init__((method, Tally()) for method in METHODS)
        self.other = Tally()

    def __missing__(self, method: str) -> Tally:
        return self.other


class Metrics:
    """The counters of one serving run (bumped on its reactor thread only).

    An HTTP response is counted with ``metrics.http[method][status] += 1`` where
    it is sent: a few dict operations in C, no call, once per request."""

    __slots__ = (
        "accepted", "closes_in", "closes_out", "http", "refused", "slow_drops",
        "tls_failures", "ws_bytes_in", "ws_bytes_out", "ws_in", "ws_out",
    )

    def __init__(self) -> None:
        self.accepted = 0
        self.http = ByMethod()  # [method][status] -> responses
        self.ws_in = 0  # messages
        self.ws_out = 0
        self.ws_bytes_in = 0
        self.ws_bytes_out = 0
        self.closes_in: Dict[str, int] = {}  # by close_label
        self.closes_out: Dict[str, int] = {}
        self.refused: Dict[int, int] = {}  # WebSocket handshakes, by status
        self.tls_failures = dict.fromkeys(TLS_FAILURES, 0)
        self.slow_drops = dict.fromkeys(SLOW_DROPS, 0)

    def response(self, method: str, status: int) -> None:
        """An HTTP response was sent (what the hot path writes inline)."""
        self.http[method][status] += 1

    def close_sent(self, code: int) -> None:
        key = close_label(code)
        self.closes_out[key] = self.closes_out.get(key, 0) + 1

    def close_received(self, code: int) -> None:
        key = close_label(code)
        self.closes_in[key] = self.closes_in.get(key, 0) + 1

    def responses(self) -> int:
        """HTTP responses sent so far, 101s included: what a worker's
        ``max_requests`` counts."""
        return sum(sum(statuses.values())
                   for statuses in (*self.http.values(), self.http.other))

    def handshake_refused(self, status: int) -> None:
        self.refused[status] = self.refused.get(status, 0) + 1

    def snapshot(self) -> Snapshot:
        """The counters as a snapshot (gauges are the serving layer's to add)."""
        requests: Dict[str, float] = {labels(method=method, status=status): count
                    for method, statuses in (*self.http.items(), ("other", self.http.other))
                    for status, count in statuses.items()}
        return {
            "wssync_connections_accepted_total": {"": self.accepted},
            "wssync_http_requests_total": requests,
            "wssync_websocket_messages_received_total": {"": self.ws_in},
            "wssync_websocket_messages_sent_total": {"": self.ws_out},
            "wssync_websocket_received_bytes_total": {"": self.ws_bytes_in},
            "wssync_websocket_sent_bytes_total": {"": self.ws_bytes_out},
            "wssync_websocket_closes_received_total": _by("code", self.closes_in),
            "wssync_websocket_closes_sent_total": _by("code", self.closes_out),
            "wssync_websocket_handshakes_refused_total": _by("status", self.refused),
            "wssync_tls_handshake_failures_total": _by("reason", self.tls_failures),
            "wssync_slow_peers_dropped_total": _by("reason", self.slow_drops),
        }


def _by(name: str, counts: Mapping[Any, int]) -> Dict[str, float]:
    return {labels(**{name: key}): count for key, count in counts.items()}


def add_into(total: Snapshot, snapshot: Snapshot, kinds: Iterable[str] = ("counter",)) -> None:
    """Add ``snapshot``'s metrics of ``kinds`` into ``total`` (label by label)."""
    for name, samples in snapshot.items():
        spec = SPECS.get(name)
        if spec is None or spec.kind not in kinds or not isinstance(samples, dict):
            continue  # (a newer worker's metric this process does not know)
        into = total.setdefault(name, {})
        for key, value in samples.items():
            into[key] = into.get(key, 0) + value


def combine(live: Iterable[Optional[Snapshot]], retired: Optional[Snapshot] = None) -> Snapshot:
    """The snapshots of several workers as one: counters summed (with ``retired``,
    the last counts of workers gone), gauges summed or, for ``min`` ones, the lowest."""
    total: Snapshot = {}
    if retired:
        add_into(total, retired)
    lowest: Snapshot = {}
    for snapshot in live:
        if not snapshot:
            continue
        add_into(total, snapshot, ("counter", "gauge"))
        for name, samples in snapshot.items():
            spec = SPECS.get(name)
            if spec is not None and spec.combine == "min" and isinstance(samples, dict):
                into = lowest.setdefault(name, {})
                for key, value in samples.items():
                    into[key] = min(into.get(key, value), value)
    total.update(lowest)
    return total


def render(snapshot: Snapshot) -> bytes:
    """``snapshot`` in the Prometheus text exposition format 0.0.4.

    Every known metric gets its HELP and TYPE lines; one without labels and
    without a value in the snapshot is left out (it does not apply here), and
    an unlabelled counter always has its sample."""
    lines: List[str] = []
    for name, spec in SPECS.items():
        samples = snapshot.get(name)
        if samples is None and not spec.labels:
            continue
        lines.append(f"# HELP {name} {_escape_help(spec.help)}")
        lines.append(f"# TYPE {name} {spec.kind}")
        for key in sorted(samples or ()):
            value = _number((samples or {})[key])
            lines.append(f"{name}{{{key}}} {value}" if key else f"{name} {value}")
    return ("\n".join(lines) + "\n").encode()


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _number(value: float) -> str:
    if isinstance(value, int) or (math.isfinite(value) and value == int(value)):
        return str(int(value))
    return repr(float(value))
