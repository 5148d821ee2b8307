"""WebSocket echo load generator: pre-built masked frames, frames counted from headers only.

Usage (standalone, against a running server)::

    python loadtests/bench/wsload.py ws://127.0.0.1:8080/ws --connections 50 \
        --size 13 --pipeline 8 --seconds 8 [--binary] [--procs 1]
    python loadtests/bench/wsload.py wss://127.0.0.1:8443/ws [--cafile cert.pem] ...

Each of ``--connections`` connections (split over ``--procs`` processes, all
pinned to the load CPU) keeps ``--pipeline`` messages in flight: every echoed
frame that arrives is answered with one more pre-built masked frame (one
``send`` per batch).  Payloads are never unmasked, copied or compared in the
hot loop: only frame headers are read to count complete frames.  Every
process measures its own CPU time in the measured window so the caller can
check that the generator is not the bottleneck.

Over TLS (``wss://``, or ``ssl_context`` in :func:`run_echo`) the same loop runs
on ``ssl.SSLSocket``s: the handshakes happen while connecting, before the
window; each read also takes what OpenSSL already decrypted (``pending()``),
and a write the TLS layer could not finish is retried with the same bytes
first.  Each connection does a full handshake (no session reuse); the
certificate is checked against ``--cafile`` when given, else not at all.
"""

from __future__ import annotations

import argparse
import errno
import multiprocessing
import resource
import select
import socket
import ssl
import struct
import sys
import time
from typing import Any, Callable, Dict, List, Optional
from urllib.parse import urlsplit

import common

EPOLLIN, EPOLLOUT = select.EPOLLIN, select.EPOLLOUT


class Conn:
    """One echo connection: its frame reader (headers only) and unsent output."""

    __slots__ = ("out", "reader", "sock", "writing")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.reader = common.FrameReader(keep=0)  # counts data frames, skips their payloads
        self.out = b""  # bytes the kernel did not take yet
        self.writing = False  # registered for EPOLLOUT


def _answer_pings(conn: Conn, control: List[Any]) -> None:
    """Queue a pong for each ping among the control frames read; forget the others."""
    for opcode, payload in control:
        if opcode == common.OP_PING:
            conn.out += common.masked_frame(common.OP_PONG, payload)
    control.clear()


def _cpu_self() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def worker(host: str, port: int, path: str, connections: int, frame: bytes, pipeline: int,
           cpu: int, ctrl: Any, ssl_context: Optional[ssl.SSLContext] = None) -> None:
    """A generator process: connect, report ready, run the window it is told, report."""
    common.pin(cpu)
    try:
        opened, failures = common.open_ws_many(host, port, path, connections, concurrency=16,
                                               timeout=30.0, max_failures=10,
                                               ssl_context=ssl_context)
    except OSError as exc:
        ctrl.send({"error": f"connect: {exc}"})
        return
    if len(opened) < connections:
        ctrl.send({"error": f"opened {len(opened)}/{connections}: {failures}"})
        for sock, _ in opened:
            sock.close()
        return
    ctrl.send({"ready": True})
    if not ctrl.poll(60):
        return
    command = ctrl.recv()
    if command.get("abort"):
        return
    t_start, t_end = command["start"], command["end"]
    result = run_loop(opened, frame, pipeline, t_start, t_end, tls=ssl_context is not None)
    for sock, _ in opened:
        sock.close()
    ctrl.send(result)


def run_loop(opened: List[Any], frame: bytes, pipeline: int, t_start: float,
             t_end: float, tls: bool = False) -> Dict[str, Any]:
    """Echo until ``t_end``; count frames and own CPU between ``t_start`` and ``t_end``.
    ``tls``: the sockets are ``ssl.SSLSocket``s."""
    ep = select.epoll()
    conns: Dict[int, Conn] = {}
    batches: Dict[int, bytes] = {}
    control: List[Any] = []  # control frames (the reader hands back no data frames)
    closed = 0
    errors: Dict[str, int] = {}
    for sock, leftover in opened:
        conn = Conn(sock)
        fd = sock.fileno()
        conns[fd] = conn
        ep.register(fd, EPOLLIN)
        if leftover:
            conn.reader.feed(leftover, control)
            _answer_pings(conn, control)
        conn.out += frame * pipeline
    for fd, conn in conns.items():
        _flush(ep, fd, conn)
    received = 0
    counted = 0
    cpu_start: Optional[float] = None
    in_window = False
    monotonic = time.monotonic
    recv_size = 262144
    would_block = common.WOULD_BLOCK
    recv_tls = common.recv_tls
    while True:
        now = monotonic()
        if not in_window and now >= t_start:
            in_window = True
            counted = received
            cpu_start = _cpu_self()
        if now >= t_end:
            break
        for fd, events in ep.poll(min(0.05, max(0.0, t_end - now))):
            conn = conns[fd]
            if events & EPOLLOUT:
                _flush(ep, fd, conn)
            if not events & (EPOLLIN | select.EPOLLERR | select.EPOLLHUP):
                continue
            try:
                data = recv_tls(conn.sock, recv_size) if tls else conn.sock.recv(recv_size)
            except would_block:
                continue
            except OSError as exc:
                data = b""
                name = (f"TLS {exc.reason}" if isinstance(exc, ssl.SSLError) and exc.reason
                        else errno.errorcode.get(exc.errno or 0, "recv"))
                errors[name] = errors.get(name, 0) + 1
            if not data:
                closed += 1
                ep.unregister(fd)
                del conns[fd]
                if not conns:
                    break
                continue
            n = conn.reader.feed(data, control)
            if control:
                _answer_pings(conn, control)
            if n:
                received += n
                batch = batches.get(n)
                if batch is None:
                    batch = batches[n] = frame * n
                conn.out = conn.out + batch if conn.out else batch
            if conn.out:
                _flush(ep, fd, conn)
        if not conns:
            break
    cpu_end = _cpu_self()
    end = monotonic()
    _close_all(ep, conns, tls=tls)
    ep.close()
    return {"messages": received - counted, "cpu": cpu_end - (cpu_start or cpu_end),
            "window": end - max(t_start, 0.0) if in_window else 0.0, "closed": closed,
            "errors": errors, "total_messages": received}


def _close_all(ep: select.epoll, conns: Dict[int, Conn], timeout: float = 3.0,
               tls: bool = False) -> None:
    """Send every connection a close frame, read until the server closes (bounded)."""
    close = common.masked_frame(common.OP_CLOSE, struct.pack("!H", 1000))
    for fd, conn in conns.items():
        conn.out += close
        _flush(ep, fd, conn)
    deadline = time.monotonic() + timeout
    while conns and time.monotonic() < deadline:
        for fd, events in ep.poll(0.05):
            conn = conns[fd]
            if events & EPOLLOUT:
                _flush(ep, fd, conn)
            try:
                data = (common.recv_tls(conn.sock, 262144) if tls
                        else conn.sock.recv(262144))
            except common.WOULD_BLOCK:
                continue
            except OSError:
                data = b""
            if not data:
                ep.unregister(fd)
                del conns[fd]
                conn.sock.close()
    for conn in conns.values():
        conn.sock.close()


def _flush(ep: select.epoll, fd: int, conn: Conn) -> None:
    out = conn.out
    if not out:
        return
    try:
        sent = conn.sock.send(out)
    except common.WOULD_BLOCK:
        # TLS: OpenSSL wants this write retried starting with the same bytes: they stay
        sent = 0
    except OSError:
        conn.out = b""
        return
    if sent == len(out):
        conn.out = b""
        if conn.writing:
            conn.writing = False
            ep.modify(fd, EPOLLIN)
    else:
        conn.out = out[sent:]
        if not conn.writing:
            conn.writing = True
            ep.modify(fd, EPOLLIN | EPOLLOUT)


def run_echo(host: str, port: int, path: str, *, connections: int = 50, size: int = 13,
             binary: bool = False, pipeline: int = 8, warmup: float = 1.0,
             seconds: float = 8.0, procs: int = 1, cpu: int = common.LOAD_CPU,
             on_start: Optional[Callable[[], None]] = None,
             on_end: Optional[Callable[[], None]] = None,
             ssl_context: Optional[ssl.SSLContext] = None) -> Dict[str, Any]:
    """Run the echo load (over TLS with ``ssl_context``); ``on_start``/``on_end`` fire at
    the measured window's edges (the caller samples the server's CPU there).  Returns
    totals over all processes."""
    frame = common.masked_frame(common.OP_BINARY if binary else common.OP_TEXT,
                                (b"x" * size))
    ctx = multiprocessing.get_context("fork")
    per = [connections // procs + (1 if i < connections % procs else 0) for i in range(procs)]
    workers = []
    pipes = []
    try:
        for share in per:
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=worker, args=(host, port, path, share, frame, pipeline,
                                                    cpu, child, ssl_context), daemon=True)
            proc.start()
            child.close()
            workers.append(proc)
            pipes.append(parent)
        for pipe in pipes:
            if not pipe.poll(60):
                raise RuntimeError("a generator process did not connect within 60 s")
            msg = pipe.recv()
            if "error" in msg:
                raise RuntimeError(f"generator: {msg['error']}")
        t0 = time.monotonic() + 0.05
        t_start, t_end = t0 + warmup, t0 + warmup + seconds
        for pipe in pipes:
            pipe.send({"start": t_start, "end": t_end})
        _sleep_until(t_start)
        if on_start:
            on_start()
        _sleep_until(t_end)
        if on_end:
            on_end()
        results = []
        for pipe in pipes:
            if not pipe.poll(30):
                raise RuntimeError("a generator process did not report within 30 s")
            results.append(pipe.recv())
    finally:
        common.stop_children(pipes, workers, {"abort": True})
    messages = sum(r["messages"] for r in results)
    gen_cpu = sum(r["cpu"] for r in results)
    errors: Dict[str, int] = {}
    for r in results:
        for k, v in r["errors"].items():
            errors[k] = errors.get(k, 0) + v
    return {"messages": messages, "seconds": seconds, "msg_per_s": messages / seconds,
            "gen_cpu": gen_cpu, "gen_cpu_share": gen_cpu / seconds,
            "closed": sum(r["closed"] for r in results), "errors": errors,
            "total_messages": sum(r["total_messages"] for r in results)}


def _sleep_until(when: float) -> None:
    while True:
        left = when - time.monotonic()
        if left <= 0:
            return
        time.sleep(min(left, 0.5))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--size", type=int, default=13)
    parser.add_argument("--binary", action="store_true")
    parser.add_argument("--pipeline", type=int, default=8)
    parser.add_argument("--procs", type=int, default=1)
    parser.add_argument("--cpu", type=int, default=common.LOAD_CPU)
    parser.add_argument("--cafile", help="wss://: check the server's certificate against "
                                         "this PEM file (default: no check)")
    args = parser.parse_args()
    url = urlsplit(args.url)
    tls = url.scheme == "wss"
    common.raise_nofile()
    common.pin(args.cpu)
    result = run_echo(url.hostname or "127.0.0.1", url.port or (443 if tls else 80),
                      url.path or "/",
                      connections=args.connections, size=args.size, binary=args.binary,
                      pipeline=args.pipeline, warmup=args.warmup, seconds=args.seconds,
                      procs=args.procs, cpu=args.cpu,
                      ssl_context=common.client_context(args.cafile) if tls else None)
    print(f"{result['msg_per_s']:.0f} msg/s ({result['messages']} echoes in "
          f"{args.seconds:.1f} s, {args.connections} connections, {args.size} B, pipeline "
          f"{args.pipeline}); generator CPU {100 * result['gen_cpu_share']:.0f}% of a core; "
          f"closed {result['closed']}, errors {result['errors']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
