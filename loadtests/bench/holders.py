"""Processes that open and hold many WebSocket client connections.

Used by ``idle.py`` (hold N idle connections) and ``broadcast.py`` (N clients
waiting for a broadcast).  One process holds at most ``per_proc`` sockets
(RLIMIT_NOFILE is per process) and binds its own loopback source address
(127.0.0.2, 127.0.0.3, ...) so that each has a full ephemeral port range.
Holders answer pings, count and check data messages, and obey commands on a
pipe: ``stats``, ``reset`` (with the payload to expect), ``wait`` (until every
held connection received a message since the reset, bounded; the answer lists
when each connection got it) and ``close``.
With an ``ssl_context`` the connections are WSS (a full TLS handshake each).
"""

from __future__ import annotations

import multiprocessing
import select
import ssl
import time
from typing import Any, Dict, List, Optional

import common


def holder_main(host: str, port: int, path: str, count: int, cpu: int, source_ip: str,
                concurrency: int, timeout: float, ctrl: Any,
                ssl_context: Optional[ssl.SSLContext] = None) -> None:
    common.pin(cpu)
    common.raise_nofile()
    start = time.monotonic()
    try:
        opened, failures = common.open_ws_many(host, port, path, count, concurrency=concurrency,
                                               timeout=timeout, source_ip=source_ip,
                                               nodelay=True, ssl_context=ssl_context)
    except OSError as exc:
        ctrl.send({"opened": 0, "failures": {str(exc): 1}, "seconds": 0.0})
        return
    ctrl.send({"opened": len(opened), "failures": failures,
               "seconds": time.monotonic() - start})
    Holder(opened, ctrl).run()


class Holder:
    def __init__(self, opened: List[Any], ctrl: Any) -> None:
        self.ctrl = ctrl
        self.ep = select.epoll()
        self.socks: Dict[int, Any] = {}
        self.readers: Dict[int, common.FrameReader] = {}
        self.got: Dict[int, int] = {}
        self.closed = 0
        self.closed_by_server = 0
        self.pings = 0
        self.expect: Optional[bytes] = None
        self.reset(None)
        for sock, leftover in opened:
            fd = sock.fileno()
            self.socks[fd] = sock
            self.readers[fd] = common.FrameReader()
            self.ep.register(fd, select.EPOLLIN)
            if leftover:
                self._frames(fd, leftover)
        self.ctrl_fd = ctrl.fileno()
        self.ep.register(self.ctrl_fd, select.EPOLLIN)

    def reset(self, expect: Optional[bytes]) -> None:
        self.expect = expect
        self.msgs = 0
        self.bad = 0
        self.dups = 0
        self.got = {}
        self.rx_at: Dict[int, float] = {}  # each connection's first message since the reset
        self.first_rx: Optional[float] = None
        self.last_rx: Optional[float] = None

    def stats(self) -> Dict[str, Any]:
        return {"open": len(self.socks), "closed": self.closed,
                "closed_by_server": self.closed_by_server, "msgs": self.msgs,
                "conns_got": len(self.got), "bad": self.bad, "dups": self.dups,
                "first_rx": self.first_rx, "last_rx": self.last_rx, "pings": self.pings}

    def run(self) -> None:
        waiting_until: Optional[float] = None
        while True:
            timeout = 1.0
            if waiting_until is not None:
                if len(self.got) >= len(self.socks) or time.monotonic() >= waiting_until:
                    self.ctrl.send({**self.stats(), "rx": list(self.rx_at.values())})
                    waiting_until = None
                    continue
                timeout = max(0.0, min(0.05, waiting_until - time.monotonic()))
            for fd, _events in self.ep.poll(timeout):
                if fd == self.ctrl_fd:
                    try:
                        command = self.ctrl.recv()
                    except EOFError:
                        self.close_all()
                        return
                    kind = command[0]
                    if kind == "stats":
                        self.ctrl.send(self.stats())
                    elif kind == "reset":
                        self.reset(command[1])
                        self.ctrl.send(True)
                    elif kind == "wait":
                        waiting_until = time.monotonic() + command[1]
                    elif kind == "close":
                        stats = self.stats()
                        start = time.monotonic()
                        stats["unanswered"] = self.close_all(command[1])
                        stats["close_seconds"] = time.monotonic() - start
                        self.ctrl.send(stats)
                        return
                    continue
                self._read(fd)

    def _read(self, fd: int) -> None:
        sock = self.socks.get(fd)
        if sock is None:
            return
        try:
            data = (common.recv_tls(sock, 65536) if isinstance(sock, ssl.SSLSocket)
                    else sock.recv(65536))
        except common.WOULD_BLOCK:
            return
        except OSError:
            data = b""
        if not data:
            self._drop(fd)
            return
        self._frames(fd, data)

    def _frames(self, fd: int, data: bytes) -> None:
        frames: List[Any] = []
        self.readers[fd].feed(data, frames)
        now = time.monotonic()
        for opcode, payload in frames:
            if opcode in (common.OP_TEXT, common.OP_BINARY):
                self.msgs += 1
                n = self.got.get(fd, 0) + 1
                self.got[fd] = n
                if n > 1:
                    self.dups += 1
                else:
                    self.rx_at[fd] = now
                if self.expect is not None and payload != self.expect:
                    self.bad += 1
                if self.first_rx is None:
                    self.first_rx = now
                self.last_rx = now
            elif opcode == common.OP_PING:
                self.pings += 1
                try:
                    self.socks[fd].send(common.masked_frame(common.OP_PONG, payload))
                except OSError:
                    pass
            elif opcode == common.OP_CLOSE:
                self.closed_by_server += 1
                try:
                    self.socks[fd].send(common.masked_frame(common.OP_CLOSE, payload[:2]))
                except OSError:
                    pass
                self._drop(fd)
                return

    def _drop(self, fd: int) -> None:
        sock = self.socks.pop(fd, None)
        if sock is None:
            return
        self.readers.pop(fd, None)
        try:
            self.ep.unregister(fd)
        except (OSError, ValueError):
            pass
        sock.close()
        self.closed += 1

    def close_all(self, graceful: float = 0.0) -> int:
        """Close every connection; with ``graceful`` seconds, send a close frame first and
        give the server that long to answer and close (as a polite client would)."""
        if graceful > 0:
            frame = common.masked_frame(common.OP_CLOSE, b"\x03\xe8")  # 1000
            for fd, sock in list(self.socks.items()):
                try:
                    sock.send(frame)
                except OSError:
                    self._drop(fd)
            deadline = time.monotonic() + graceful
            while self.socks and time.monotonic() < deadline:
                for fd, _events in self.ep.poll(0.05):
                    sock = self.socks.get(fd)
                    if sock is None:
                        continue
                    try:
                        data = (common.recv_tls(sock, 65536) if isinstance(sock, ssl.SSLSocket)
                                else sock.recv(65536))
                    except common.WOULD_BLOCK:
                        continue
                    except OSError:
                        data = b""
                    if not data:  # the server closed after answering: done
                        self._drop(fd)
                        self.closed -= 1
        unanswered = len(self.socks)
        for sock in self.socks.values():
            sock.close()
        self.socks.clear()
        self.ep.close()
        return unanswered


class HolderPool:
    """``count`` client connections spread over ``ceil(count / per_proc)`` processes."""

    def __init__(self, host: str, port: int, path: str, count: int, *, per_proc: int = 5000,
                 cpu: int = common.LOAD_CPU, concurrency: int = 48, timeout: float = 180.0,
                 ssl_context: Optional[ssl.SSLContext] = None) -> None:
        self.count = count
        procs = max(1, -(-count // per_proc))
        shares = [count // procs + (1 if i < count % procs else 0) for i in range(procs)]
        ctx = multiprocessing.get_context("fork")
        self.pipes: List[Any] = []
        self.procs: List[Any] = []
        self.timeout = timeout
        for i, share in enumerate(shares):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=holder_main, daemon=True,
                               args=(host, port, path, share, cpu, f"127.0.0.{2 + i}",
                                     concurrency, timeout, child, ssl_context))
            proc.start()
            child.close()
            self.pipes.append(parent)
            self.procs.append(proc)

    def wait_opened(self) -> Dict[str, Any]:
        """Block until every holder finished opening (bounded by the open timeout)."""
        opened, seconds = 0, 0.0
        failures: Dict[str, int] = {}
        for pipe in self.pipes:
            if not pipe.poll(self.timeout + 30):
                raise RuntimeError("a holder process did not report")
            report = pipe.recv()
            opened += report["opened"]
            seconds = max(seconds, report["seconds"])
            for k, v in report["failures"].items():
                failures[k] = failures.get(k, 0) + v
        return {"opened": opened, "failures": failures, "seconds": seconds}

    def _all(self, command: Any, timeout: float = 30.0) -> List[Any]:
        for pipe in self.pipes:
            pipe.send(command)
        out = []
        for pipe in self.pipes:
            if not pipe.poll(timeout):
                raise RuntimeError(f"a holder process did not answer {command[0]!r}")
            out.append(pipe.recv())
        return out

    @staticmethod
    def _sum(stats: List[Dict[str, Any]]) -> Dict[str, Any]:
        out: Dict[str, Any] = {}
        for key in ("open", "closed", "closed_by_server", "msgs", "conns_got", "bad", "dups",
                    "pings", "unanswered"):
            if key in stats[0]:
                out[key] = sum(s[key] for s in stats)
        if "close_seconds" in stats[0]:
            out["close_seconds"] = max(s["close_seconds"] for s in stats)
        firsts = [s["first_rx"] for s in stats if s["first_rx"] is not None]
        lasts = [s["last_rx"] for s in stats if s["last_rx"] is not None]
        if "rx" in stats[0]:  # a wait's answer: when each connection got its message
            out["rx"] = [t for s in stats for t in s["rx"]]
        out["first_rx"] = min(firsts) if firsts else None
        out["last_rx"] = max(lasts) if lasts else None
        return out

    def stats(self) -> Dict[str, Any]:
        return self._sum(self._all(("stats",)))

    def reset(self, expect: Optional[bytes]) -> None:
        self._all(("reset", expect))

    def wait_all(self, timeout: float) -> Dict[str, Any]:
        """Until every held connection got a message since the reset (or ``timeout``)."""
        return self._sum(self._all(("wait", timeout), timeout + 30))

    def close(self, graceful: float = 10.0) -> Dict[str, Any]:
        """Close all; ``graceful`` > 0: close handshakes first, bounded by that many seconds."""
        try:
            result = self._sum(self._all(("close", graceful), graceful + 60))
        except (RuntimeError, OSError):
            result = {}
        for proc in self.procs:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
                proc.join(2)
        return result
