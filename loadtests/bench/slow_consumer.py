"""Slow consumers: a synchronous producer must be paced by a slow WebSocket reader.

"Blocking code behaves like blocking code": a thread that sends to a reader slower
than itself should wait for that reader, never drop it, and the server's memory
should stay bounded.  This compares wssync with the ``websockets`` library's
threaded sync server (``websockets.sync.server.serve``), with the same clients.

Usage (from the repository root, with the dev virtualenv)::

    .venv/bin/python loadtests/bench/slow_consumer.py            # ~2.5 minutes
    .venv/bin/python loadtests/bench/slow_consumer.py --quick    # a smoke run, ~35 s
    .venv/bin/python loadtests/bench/slow_consumer.py --only stream --variants websockets-sync
        [--rate 4] [--fast-rate 8] [--slow-rate 2] [--chunk 16384] [--timeout 120]
        [--ping-interval 0] [--wssync-setting NAME=VALUE ...] [--wssync-path DIR]

Scenarios (the server side is ``apps/slow_consumer_app.py``):

* **stream**: one client on ``/stream`` sends ``"go"``; the handler sends 64 binary
  messages of 1 MiB (message i is the byte i repeated), then closes with 1000.  The
  client reads the raw socket in ``--chunk`` pieces through a token bucket at
  ``--rate`` MiB/s, so the server's socket buffers fill as behind a slow link.
  Variants: ``wssync-blocking`` (``@app.websocket(..., blocking=True)``, reactor mode),
  ``wssync-pool`` (a callback ``on_message`` on a pool thread, ``threads=4``),
  ``websockets-sync``.
* **broadcast**: 10 clients on ``/feed`` (8 fast at ``--fast-rate``, 2 slow at
  ``--slow-rate`` MiB/s); once the server counts them all, ``GET /go`` starts a
  plain thread in the server that sends 1,000 messages of 64 KiB to every one.
  Variants: ``wssync-wait`` (``server.broadcast(..., wait=True)``: paced by the
  slowest live receiver), ``wssync-nowait`` (``wait=False``: fire and forget; a
  receiver too far behind for too long may be dropped), ``websockets-sync`` (the
  producer calls ``ws.send`` on each connection in turn).

Each client checks every message (order and content).  Reported per variant:
bytes delivered (complete or not), clients dropped (the connection ended before
every message arrived), the server's peak RSS growth (the larger of VmHWM, reset
with /proc/PID/clear_refs just before the producer starts, and VmRSS sampled every
50 ms, minus VmRSS at that moment), and the producer's time (measured in the
server, from its first send to the return of its last).  A table per scenario
goes to stdout, everything (with each server's warnings) to
``loadtests/bench/results/slow_consumer-<time>.json``, the servers' logs next to it.

What it must not do: listen or connect anywhere but 127.0.0.1; leave a server
running (every server is its own subprocess, so its RSS is its own, and is killed
in a ``finally``); run unbounded (every wait has a deadline, each variant at most
``--timeout`` seconds); or work around a server's misbehaviour: a drop, a hang or
an error is what it reports.  Linux only (/proc, taskset).
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

import common
from apps.slow_consumer_app import feed_filler, feed_message, stream_payload

HOST = "127.0.0.1"  # loopback only, for the servers and the clients
MiB = 1 << 20
APP = os.path.join(common.APPS_DIR, "slow_consumer_app.py")
STREAM, BROADCAST = "stream", "broadcast"


# -- what is run ----------------------------------------------------------------------


@dataclass(frozen=True)
class Variant:
    name: str
    scenario: str  # STREAM or BROADCAST
    server: str  # "wssync" or "websockets": which library the app serves with
    path: str  # where the clients connect
    threads: int = 0  # wssync's pool size
    broadcast_wait: bool = False  # wssync: broadcast(wait=...)
    description: str = ""


VARIANTS = [
    Variant("wssync-blocking", STREAM, "wssync", "/stream",
            description="blocking=True handler: for i in range(n): ws.send(...)"),
    Variant("wssync-pool", STREAM, "wssync", "/stream2", threads=4,
            description="callback on_message on a pool thread (threads=4): ws.send loop"),
    Variant("websockets-sync", STREAM, "websockets", "/stream",
            description="websockets.sync.server handler: ws.send loop"),
    Variant("wssync-wait", BROADCAST, "wssync", "/feed", broadcast_wait=True,
            description="server.broadcast(msg, path='/feed', wait=True) from a thread"),
    Variant("wssync-nowait", BROADCAST, "wssync", "/feed", broadcast_wait=False,
            description="server.broadcast(msg, path='/feed', wait=False) from a thread"),
    Variant("websockets-sync", BROADCAST, "websockets", "/feed",
            description="a thread calls ws.send(msg) on every connection in turn"),
]


@dataclass(frozen=True)
class Params:
    stream_count: int
    stream_size: int
    rate: float  # bytes/s of the stream's reader
    feed_clients: int
    slow_clients: int
    feed_count: int
    feed_size: int
    fast_rate: float  # bytes/s
    slow_rate: float  # bytes/s
    chunk: int  # bytes per recv
    timeout: float  # seconds per variant, all waits included
    ping_interval: float  # the servers' keepalive pings; 0: none
    wssync_path: Optional[str]
    wssync_settings: Tuple[str, ...]  # NAME=VALUE: more wssync Server settings


# -- the clients ---------------------------------------------------------------------


class TokenBucket:
    """At most ``rate`` bytes/s on average, in bursts of at most ``burst`` bytes.  A
    reader that waits here before each recv takes bytes as a slow consumer (or a slow
    link) would: what it does not take stays in the kernel's buffers, then the server's."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.tokens = float(burst)
        self.last = time.monotonic()

    def wait(self, want: int, deadline: float) -> None:
        """Sleep until ``want`` bytes may be read (or ``deadline``); 0 rate: no limit."""
        if self.rate <= 0:
            return
        while True:
            now = time.monotonic()
            self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
            self.last = now
            if self.tokens >= want or now >= deadline:
                return
            time.sleep(min((want - self.tokens) / self.rate, deadline - now))

    def spend(self, size: int) -> None:
        self.tokens -= size  # a recv may return less than was allowed, never more


@dataclass
class ClientResult:
    rate: float  # bytes/s it was limited to
    messages: int = 0
    bytes: int = 0  # payload bytes of data messages received
    bad: int = 0  # messages out of order or with the wrong content
    close_code: Optional[int] = None  # the server's close frame, if one came
    ended: str = "not started"  # complete, closed, eof, timeout, error: ...
    first_byte: Optional[float] = None  # time.monotonic() readings
    last_message: Optional[float] = None

    def complete(self, expected: int) -> bool:
        return self.messages == expected and self.bad == 0

    def dropped(self, expected: int) -> bool:
        """The connection ended (not our deadline) before every message arrived."""
        return not self.complete(expected) and self.ended != "timeout"


Check = Callable[[int, bytes], bool]  # (message index, payload) -> as expected?


class SlowClient(threading.Thread):
    """A blocking WebSocket client on a raw socket that reads at a limited rate,
    checks every data message, answers pings and close frames.

    With ``go`` it waits for that event after the handshake, then sends ``"go"``.
    With ``close_when_done`` it closes (1000) itself once ``expected`` messages came;
    otherwise it reads until the server closes.
    """

    def __init__(self, port: int, path: str, check: Check, expected: int, rate: float,
                 chunk: int, deadline: float, go: Optional[threading.Event] = None,
                 close_when_done: bool = False) -> None:
        super().__init__(name=f"client-{path}", daemon=True)
        self.port, self.path, self.check, self.expected = port, path, check, expected
        self.chunk, self.deadline, self.go = chunk, deadline, go
        self.close_when_done = close_when_done
        self.result = ClientResult(rate)
        self.connected = threading.Event()  # set once the handshake is done (or failed)
        self.sock: Optional[socket.socket] = None

    def run(self) -> None:
        try:
            self._run()
        except Exception as exc:
            self.result.ended = f"error: {type(exc).__name__}: {exc}"
        finally:
            self.connected.set()  # a waiter learns of a failed handshake at once
            if self.sock is not None:
                self.sock.close()

    def _run(self) -> None:
        result = self.result
        result.ended = "connecting"
        sock, leftover = common.connect_ws(HOST, self.port, self.path, timeout=10)
        self.sock = sock
        self.connected.set()
        if self.go is not None:
            if not self.go.wait(max(0.0, self.deadline - time.monotonic())):
                result.ended = "timeout"
                return
            sock.sendall(common.masked_frame(common.OP_TEXT, b"go"))
        result.ended = "reading"
        reader = common.FrameReader()  # whole payloads: every byte is checked
        frames: List[Tuple[int, bytes]] = []
        reader.feed(leftover, frames)
        bucket = TokenBucket(result.rate, self.chunk)
        buf = bytearray(self.chunk)
        view = memoryview(buf)
        while not self._handle(frames):
            frames.clear()
            bucket.wait(self.chunk, self.deadline)
            left = self.deadline - time.monotonic()
            if left <= 0:
                result.ended = "timeout"
                return
            sock.settimeout(left)
            try:
                got = sock.recv_into(buf, self.chunk)
            except socket.timeout:
                result.ended = "timeout"
                return
            except OSError as exc:  # a reset: the server dropped us
                result.ended = f"error: {type(exc).__name__}: {exc}"
                return
            if not got:
                result.ended = "eof"  # closed without a close frame
                return
            if result.first_byte is None:
                result.first_byte = time.monotonic()
            bucket.spend(got)
            reader.feed(bytes(view[:got]), frames)

    def _handle(self, frames: List[Tuple[int, bytes]]) -> bool:
        """Take the parsed frames; True once this connection is done."""
        result = self.result
        assert self.sock is not None
        for opcode, payload in frames:
            if opcode in (common.OP_TEXT, common.OP_BINARY):
                if not self.check(result.messages, payload):
                    result.bad += 1
                result.messages += 1
                result.bytes += len(payload)
                result.last_message = time.monotonic()
                if self.close_when_done and result.messages >= self.expected:
                    self.sock.sendall(common.masked_frame(common.OP_CLOSE,
                                                          struct.pack("!H", 1000)))
                    result.ended = "complete"
                    self._drain()
                    return True
            elif opcode == common.OP_PING:
                self.sock.sendall(common.masked_frame(common.OP_PONG, payload))
            elif opcode == common.OP_CLOSE:
                result.close_code = struct.unpack("!H", payload[:2])[0] \
                    if len(payload) >= 2 else 1005
                # echo the code (an empty close answers a close without one)
                self.sock.sendall(common.masked_frame(common.OP_CLOSE, payload[:2]))
                result.ended = "closed"
                self._drain()
                return True
        return False

    def _drain(self) -> None:
        """Read (unlimited) until the server closes the TCP connection, for 2 s at most:
        the closing handshake is not what is measured."""
        assert self.sock is not None
        self.sock.settimeout(2)
        try:
            while self.sock.recv(65536):
                pass
        except OSError:
            pass


def stream_check(size: int) -> Check:
    return lambda index, payload: payload == stream_payload(index, size)


def feed_check(size: int) -> Check:
    filler = feed_filler(size)
    return lambda index, payload: payload == feed_message(index, filler)


# -- the server under test -----------------------------------------------------------


def _status_kib(pid: int, name: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(name + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {name} in /proc/{pid}/status")


class ServerProcess:
    """``apps/slow_consumer_app.py`` serving one variant: a subprocess pinned to the
    server CPU, whose stdout events a thread collects and whose stderr goes to a log."""

    def __init__(self, variant: Variant, params: Params, log_path: str) -> None:
        argv = [sys.executable, APP, "--server", variant.server,
                "--threads", str(variant.threads),
                "--stream-count", str(params.stream_count),
                "--stream-size", str(params.stream_size),
                "--feed-count", str(params.feed_count), "--feed-size", str(params.feed_size),
                "--ping-interval", str(params.ping_interval)]
        if variant.broadcast_wait:
            argv.append("--broadcast-wait")
        if variant.server == "wssync":
            for setting in params.wssync_settings:
                argv += ["--setting", setting]
        if shutil.which("taskset"):  # taskset execs: the pid stays the server's
            argv = ["taskset", "-c", str(common.SERVER_CPU), *argv]
        env = dict(os.environ)
        # the checkout's wssync (or --wssync-path's), not whatever is installed
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (params.wssync_path or common.REPO_DIR, env.get("PYTHONPATH")) if p)
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 (closed in stop())
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=self._log, env=env, cwd=common.APPS_DIR,
                                     start_new_session=True)
        self.events: List[Dict[str, Any]] = []
        self._cond = threading.Condition()
        self._eof = False
        threading.Thread(target=self._read_events, name="server-events", daemon=True).start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read_events(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                continue  # not one of ours
            event["at"] = time.monotonic()
            with self._cond:
                self.events.append(event)
                self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def wait_for(self, predicate: Callable[[Dict[str, Any]], bool],
                 timeout: float) -> Optional[Dict[str, Any]]:
        """The first event that satisfies ``predicate``, waiting up to ``timeout``
        seconds; None if none came (or the server exited)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for event in self.events:
                    if predicate(event):
                        return event
                left = deadline - time.monotonic()
                if left <= 0 or self._eof:
                    return None
                self._cond.wait(left)

    def port(self, timeout: float = 30.0) -> int:
        event = self.wait_for(lambda e: e["event"] == "listening", timeout)
        if event is None:
            raise RuntimeError(f"the server did not start (exit code {self.proc.poll()}); "
                               f"see {self.log_path}")
        return int(event["port"])

    def stop(self) -> Dict[str, Any]:
        """Stop it (SIGTERM, then SIGKILL after 10 s); what its log says that matters."""
        alive = self.proc.poll() is None
        if alive:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()
        with open(self.log_path, errors="replace") as f:
            lines = f.read().splitlines()
        problems = [line for line in lines
                    if any(word in line for word in ("WARNING", "ERROR", "Traceback", "Error"))]
        return {"alive_at_end": alive, "exit_code": self.proc.returncode,
                "log": os.path.relpath(self.log_path, common.REPO_DIR),
                "log_drop_lines": sum(1 for line in lines if "dropping" in line),
                "log_problems": problems[:20]}


class MemoryWatch:
    """The server's peak resident set from now on: VmHWM (reset now through
    /proc/PID/clear_refs) and VmRSS sampled every 50 ms, whichever is higher."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.rss0_kib = _status_kib(pid, "VmRSS")
        try:
            with open(f"/proc/{pid}/clear_refs", "w") as f:
                f.write("5")  # VmHWM := VmRSS now
            self.hwm_reset = True
        except OSError:
            self.hwm_reset = False  # sampling alone then
        self.peak_kib = self.rss0_kib
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="rss", daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(0.05):
            try:
                self.peak_kib = max(self.peak_kib, _status_kib(self.pid, "VmRSS"))
            except (OSError, RuntimeError):
                return  # the server is gone

    def finish(self) -> Dict[str, Any]:
        self._stop.set()
        self._thread.join()
        peak = self.peak_kib
        if self.hwm_reset:
            try:
                peak = max(peak, _status_kib(self.pid, "VmHWM"))
            except (OSError, RuntimeError):
                pass
        return {"rss_before_mib": round(self.rss0_kib / 1024, 1),
                "peak_rss_growth_mib": round((peak - self.rss0_kib) / 1024, 1),
                "hwm_reset": self.hwm_reset}


def _producer_event(server: ServerProcess, timeout: float) -> Dict[str, Any]:
    event = server.wait_for(lambda e: e["event"] in ("producer", "producer_error"), timeout)
    if event is None:
        return {"producer_s": None, "producer_error": "no report from the producer"}
    return {"producer_s": event.get("seconds"), "producer_error": event.get("error")}


def _settle() -> None:
    time.sleep(0.3)  # let the server finish setting the connections up before the baseline


# -- the scenarios -------------------------------------------------------------------


def run_stream(variant: Variant, params: Params, log_dir: str) -> Dict[str, Any]:
    result: Dict[str, Any] = {"variant": variant.name, "description": variant.description}
    server = ServerProcess(variant, params, os.path.join(log_dir, f"stream-{variant.name}.log"))
    go = threading.Event()
    client: Optional[SlowClient] = None
    memory: Optional[MemoryWatch] = None
    try:
        deadline = time.monotonic() + params.timeout
        port = server.port()
        client = SlowClient(port, variant.path, stream_check(params.stream_size),
                            params.stream_count, params.rate, params.chunk, deadline, go=go)
        client.start()
        if not client.connected.wait(15) or client.sock is None:
            raise RuntimeError(f"the client did not connect: {client.result.ended}")
        _settle()
        memory = MemoryWatch(server.pid)
        go.set()
        client.join(max(0.0, deadline - time.monotonic()) + 5)
        result.update(_producer_event(server, 10))
    except Exception as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        go.set()
        if memory is not None:
            result.update(memory.finish())
        result["server"] = server.stop()
        if client is not None:
            client.join(5)  # the server is gone: its socket has ended
    if client is not None:
        r = client.result
        result.update({
            "expected_messages": params.stream_count,
            "expected_bytes": params.stream_count * params.stream_size,
            "client": asdict(r), "bytes": r.bytes, "messages": r.messages,
            "in_order": r.bad == 0, "complete": r.complete(params.stream_count),
            "dropped": int(r.dropped(params.stream_count)), "close_code": r.close_code,
            "ended": r.ended,
            "client_s": _span(r.first_byte, r.last_message),
        })
    return result


def run_broadcast(variant: Variant, params: Params, log_dir: str) -> Dict[str, Any]:
    result: Dict[str, Any] = {"variant": variant.name, "description": variant.description}
    server = ServerProcess(variant, params,
                           os.path.join(log_dir, f"broadcast-{variant.name}.log"))
    clients: List[SlowClient] = []
    memory: Optional[MemoryWatch] = None
    started: Optional[float] = None
    n = params.feed_clients
    try:
        deadline = time.monotonic() + params.timeout
        port = server.port()
        check = feed_check(params.feed_size)
        for i in range(n):
            rate = params.slow_rate if i >= n - params.slow_clients else params.fast_rate
            clients.append(SlowClient(port, variant.path, check, params.feed_count, rate,
                                      params.chunk, deadline, close_when_done=True))
        for client in clients:
            client.start()
        for client in clients:
            if not client.connected.wait(15) or client.sock is None:
                raise RuntimeError(f"a client did not connect: {client.result.ended}")
        # the server counts them itself: a client's 101 may come before its registration
        if server.wait_for(lambda e: e["event"] == "connected" and e["count"] >= n, 15) is None:
            raise RuntimeError(f"the server did not report {n} /feed connections")
        _settle()
        memory = MemoryWatch(server.pid)
        started = time.monotonic()
        status, body, _ = common.http_get(HOST, port, "/go", timeout=10)
        if status != 200:
            raise RuntimeError(f"GET /go answered {status} {body[:80]!r}")
        for client in clients:
            client.join(max(0.0, deadline - time.monotonic()) + 5)
        result.update(_producer_event(server, 10))
    except Exception as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        if memory is not None:
            result.update(memory.finish())
        result["server"] = server.stop()
        for client in clients:
            client.join(5)
    result.update(_broadcast_summary(clients, params, started))
    return result


def _span(start: Optional[float], end: Optional[float]) -> Optional[float]:
    return round(end - start, 2) if start is not None and end is not None else None


def _broadcast_summary(clients: List[SlowClient], params: Params,
                       started: Optional[float]) -> Dict[str, Any]:
    expected = params.feed_count
    slow = clients[len(clients) - params.slow_clients:] if params.slow_clients else []
    fast = clients[:len(clients) - len(slow)]
    out: Dict[str, Any] = {"expected_messages": expected,
                           "expected_bytes_each": expected * params.feed_size}
    for label, group in (("fast", fast), ("slow", slow)):
        got = [c.result.bytes for c in group]
        out[f"{label}_clients"] = len(group)
        out[f"{label}_min_bytes"] = min(got) if got else 0
        out[f"{label}_total_bytes"] = sum(got)
        out[f"{label}_complete"] = sum(1 for c in group if c.result.complete(expected))
        out[f"{label}_dropped"] = sum(1 for c in group if c.result.dropped(expected))
        lasts = [c.result.last_message for c in group if c.result.last_message is not None]
        out[f"{label}_last_message_s"] = _span(started, max(lasts)) if lasts else None
    out["dropped"] = out["fast_dropped"] + out["slow_dropped"]
    out["complete"] = out["fast_complete"] + out["slow_complete"]
    out["bad_messages"] = sum(c.result.bad for c in clients)
    out["clients"] = [asdict(c.result) for c in clients]
    return out


# -- output --------------------------------------------------------------------------


def _mib(n: Optional[float]) -> str:
    return "-" if n is None else f"{n / MiB:.1f}"


def _num(value: Any) -> str:
    return "-" if value is None else str(value)


def print_table(title: str, headers: List[str], rows: List[List[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    print(f"\n{title}")
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths)))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)))


def _notes(result: Dict[str, Any]) -> str:
    """The error, the log's drop lines and first problem, in a few words."""
    parts = []
    if result.get("error"):
        parts.append(result["error"])
    if result.get("producer_error"):
        parts.append(f"producer: {result['producer_error']}")
    server = result.get("server", {})
    if server.get("log_drop_lines"):
        parts.append(f"log: {server['log_drop_lines']} 'dropping' lines")
    elif server.get("log_problems"):
        parts.append(f"log: {server['log_problems'][0][-90:]}")
    return "; ".join(parts)


def print_stream(results: List[Dict[str, Any]], params: Params) -> None:
    total = params.stream_count * params.stream_size
    rows = []
    for r in results:
        status = "complete" if r.get("complete") else "incomplete"
        if not r.get("complete") and "ended" in r:
            status += f" ({r['ended']})"
        rows.append([r["variant"], f"{_mib(r.get('bytes'))}/{_mib(total)}",
                     f"{_num(r.get('messages'))}/{params.stream_count}",
                     "yes" if r.get("in_order") else "no", status, _num(r.get("close_code")),
                     _num(r.get("dropped")), _num(r.get("peak_rss_growth_mib")),
                     _num(r.get("producer_s")), _num(r.get("client_s")), _notes(r)])
    print_table(f"stream: {params.stream_count} x {_mib(params.stream_size)} MiB to one reader "
                f"at {_mib(params.rate)} MiB/s (reading it all takes ~{total / params.rate:.0f} s)",
                ["variant", "delivered MiB", "messages", "in order", "status", "close",
                 "dropped", "peak RSS +MiB", "producer s", "client s", "notes"], rows)


def print_broadcast(results: List[Dict[str, Any]], params: Params) -> None:
    each = params.feed_count * params.feed_size
    rows = []
    for r in results:
        fast, slow = r.get("fast_clients", 0), r.get("slow_clients", 0)
        status = "complete" if r.get("complete") == fast + slow else "incomplete"
        rows.append([r["variant"],
                     f"{_mib(r.get('fast_min_bytes'))}/{_mib(r.get('fast_total_bytes'))}",
                     f"{_mib(r.get('slow_min_bytes'))}/{_mib(r.get('slow_total_bytes'))}",
                     f"{_num(r.get('complete'))}/{fast + slow} {status}",
                     _num(r.get("dropped")), _num(r.get("peak_rss_growth_mib")),
                     _num(r.get("producer_s")), _num(r.get("fast_last_message_s")),
                     _num(r.get("slow_last_message_s")), _notes(r)])
    print_table(f"broadcast: {params.feed_count} x {params.feed_size // 1024} KiB "
                f"({_mib(each)} MiB each) to {params.feed_clients - params.slow_clients} "
                f"readers at {_mib(params.fast_rate)} MiB/s and {params.slow_clients} at "
                f"{_mib(params.slow_rate)} MiB/s",
                ["variant", "fast min/total MiB", "slow min/total MiB", "complete",
                 "dropped", "peak RSS +MiB", "producer s", "fast done s", "slow done s",
                 "notes"], rows)


def _environment(wssync_path: Optional[str]) -> Dict[str, Any]:
    def read(path: str) -> Optional[str]:
        try:
            with open(path) as f:
                return f.read().strip()
        except OSError:
            return None

    def git(*args: str) -> Optional[str]:
        try:
            out = subprocess.run(["git", *args], cwd=common.REPO_DIR, capture_output=True,
                                 text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    try:
        websockets_version: Optional[str] = importlib.metadata.version("websockets")
    except importlib.metadata.PackageNotFoundError:
        websockets_version = None
    out: Dict[str, Any] = {"python": sys.version.split()[0], "websockets": websockets_version,
                           "wssync_source": wssync_path or common.REPO_DIR}
    if wssync_path is None:
        # the checkout's wssync: its commit, and which of its files differ from it
        out["wssync_commit"] = git("rev-parse", "--short", "HEAD")
        out["wssync_changed_files"] = (git("status", "--porcelain", "--", "wssync")
                                       or "").splitlines()
    out.update({"tcp_rmem": read("/proc/sys/net/ipv4/tcp_rmem"),
                "tcp_wmem": read("/proc/sys/net/ipv4/tcp_wmem"),
                "cpus": common.ALL_CPUS, "server_cpu": common.SERVER_CPU,
                "client_cpu": common.LOAD_CPU})
    return out


# -- main ----------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: 16 MiB stream, 200 broadcasts, 60 s timeout")
    parser.add_argument("--only", choices=[STREAM, BROADCAST], help="run one scenario")
    parser.add_argument("--variants", default="",
                        help="comma-separated variant names to run (default: all)")
    parser.add_argument("--rate", type=float, default=4.0, help="stream reader, MiB/s")
    parser.add_argument("--fast-rate", type=float, default=8.0, help="fast readers, MiB/s")
    parser.add_argument("--slow-rate", type=float, default=2.0, help="slow readers, MiB/s")
    parser.add_argument("--clients", type=int, default=10, help="broadcast receivers")
    parser.add_argument("--slow-clients", type=int, default=2, help="of which slow")
    parser.add_argument("--stream-count", type=int, help="stream messages (default 64)")
    parser.add_argument("--stream-size", type=int, default=MiB)
    parser.add_argument("--feed-count", type=int, help="broadcasts (default 1000)")
    parser.add_argument("--feed-size", type=int, default=65536)
    parser.add_argument("--chunk", type=int, default=16384, help="bytes per client recv")
    parser.add_argument("--timeout", type=float, help="seconds per variant (default 120)")
    parser.add_argument("--ping-interval", type=float, default=0.0,
                        help="both servers' keepalive pings, seconds (0: none, so that a "
                             "ping stuck behind a backlog cannot drop a reader)")
    parser.add_argument("--wssync-setting", action="append", default=[], metavar="NAME=VALUE",
                        help="another wssync Server setting, e.g. max_send_queue=524288 "
                             "(a JSON value; repeatable)")
    parser.add_argument("--wssync-path", help="serve the wssync package in this directory")
    parser.add_argument("--json", help="write the results here (default: results/)")
    return parser.parse_args()


def make_params(args: argparse.Namespace) -> Params:
    quick = args.quick
    return Params(
        stream_count=args.stream_count or (16 if quick else 64), stream_size=args.stream_size,
        rate=args.rate * MiB, feed_clients=args.clients,
        slow_clients=min(args.slow_clients, args.clients),
        feed_count=args.feed_count or (200 if quick else 1000), feed_size=args.feed_size,
        fast_rate=args.fast_rate * MiB, slow_rate=args.slow_rate * MiB, chunk=args.chunk,
        timeout=args.timeout or (60.0 if quick else 120.0), ping_interval=args.ping_interval,
        wssync_path=args.wssync_path, wssync_settings=tuple(args.wssync_setting))


def main() -> int:
    args = parse_args()
    params = make_params(args)
    wanted = {name.strip() for name in args.variants.split(",") if name.strip()}
    variants = [v for v in VARIANTS if (not wanted or v.name in wanted)
                and (args.only is None or v.scenario == args.only)]
    if not variants:
        print(f"no variant selected; known: {sorted({v.name for v in VARIANTS})}")
        return 2
    common.pin(common.LOAD_CPU)  # the clients; the servers run on common.SERVER_CPU
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S") + ("-quick" if args.quick else "")
    log_dir = os.path.join(common.RESULTS_DIR, f"slow_consumer-{stamp}")
    os.makedirs(log_dir, exist_ok=True)
    results: Dict[str, Any] = {"params": asdict(params),
                               "environment": _environment(params.wssync_path),
                               STREAM: [], BROADCAST: []}
    for variant in variants:
        print(f"[{variant.scenario}] {variant.name}: {variant.description} ...", flush=True)
        began = time.monotonic()
        run = run_stream if variant.scenario == STREAM else run_broadcast
        outcome = run(variant, params, log_dir)
        outcome["wall_s"] = round(time.monotonic() - began, 1)
        results[variant.scenario].append(outcome)
    if results[STREAM]:
        print_stream(results[STREAM], params)
    if results[BROADCAST]:
        print_broadcast(results[BROADCAST], params)
    path = args.json or os.path.join(common.RESULTS_DIR, f"slow_consumer-{stamp}.json")
    with open(path, "w") as f:
        json.dump(results, f, indent=2)
    print(f"\nresults: {os.path.relpath(path)}; server logs: {os.path.relpath(log_dir)}")
    failed = [r for rs in (results[STREAM], results[BROADCAST]) for r in rs if r.get("error")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
