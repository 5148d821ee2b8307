"""A throw-away ``redis-server`` for the benchmarks that share broadcasts through
Redis: a free loopback port, no persistence, pinned to a chosen CPU, its CPU
time readable, always stopped."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from typing import Optional

import common


def available() -> Optional[str]:
    """None if redis-server and the redis client library are here, else why not."""
    if shutil.which("redis-server") is None:
        return "redis-server is not installed (apt-get install redis-server)"
    try:
        import redis  # noqa: F401
    except ImportError:
        return "the redis client library is not installed (pip install 'wssync[redis]')"
    return None


class RedisProcess:
    def __init__(self, cpu: int = common.LOAD_CPU) -> None:
        self.port = common.free_port()
        self.directory = tempfile.mkdtemp(prefix="wssync-bench-redis-")
        self.proc = subprocess.Popen(
            ["taskset", "-c", str(cpu), "redis-server", "--port", str(self.port), "--bind",
             "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", self.directory],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 15
        while not self._pong():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("redis-server did not start")
            time.sleep(0.02)

    def url(self, channel: str = "bench") -> str:
        return f"redis://127.0.0.1:{self.port}/0?channel={channel}"

    def _pong(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def sched_ns(self) -> int:
        return common.sched_ns([self.proc.pid])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        shutil.rmtree(self.directory, ignore_errors=True)
        if os.path.exists(self.directory):
            raise RuntimeError(f"could not remove {self.directory}")
