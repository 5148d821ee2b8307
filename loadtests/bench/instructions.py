"""Server CPU instructions per request and per message, counted by callgrind.

Wall-clock benchmarks on a shared or busy machine drift by tens of percent;
instruction counts do not: ``valgrind --tool=callgrind`` counts the same total
for the same code and input whatever else the machine does.  This runs the
bench app (``apps/wssync_app.py``) under callgrind once per wssync checkout and
mode, drives a fixed load from this process, and reports instructions per
operation with the checkouts side by side::

    python3 loadtests/bench/instructions.py --checkout before=/tmp/before \\
        --checkout after=. [--requests 3000] [--messages 3000]

Each run does ``--requests`` keep-alive GETs of ``/`` and then ``--messages``
13-byte WebSocket echoes over 50 connections, one in flight on each (so one
``select()`` round serves many, as under wrk); three runs per checkout and mode
(no load, HTTP only, both) and the differences divided by the operations give
the per-operation counts.  Python and valgrind must be the same for
every checkout; the C masking accelerator is used if the checkout built it.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
APPS = os.path.join(HERE, "apps")
MASK = b"\x01\x02\x03\x04"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited early: {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise SystemExit("server did not start listening")


def recv_until(sock: socket.socket, marker: bytes, buf: bytearray) -> bytes:
    while marker not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise SystemExit("server closed the connection")
        buf += chunk
    end = buf.index(marker) + len(marker)
    data = bytes(buf[:end])
    del buf[:end]
    return data


CONNECTIONS = 50  # as wrk -c50 and wsload.py: one select() round serves many of them


def connections(port: int) -> List[socket.socket]:
    return [socket.create_connection(("127.0.0.1", port)) for _ in range(CONNECTIONS)]


def http_load(port: int, count: int) -> None:
    """``count`` requests: one in flight on each of the connections at a time."""
    request = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"
    socks = connections(port)
    buffers = [bytearray() for _ in socks]
    for _ in range(count // CONNECTIONS):
        for sock in socks:
            sock.sendall(request)
        for sock, buf in zip(socks, buffers):
            recv_until(sock, b"Hello, World!", buf)
    for sock in socks:
        sock.close()


def masked_text(payload: bytes) -> bytes:
    body = bytes(b ^ MASK[i % 4] for i, b in enumerate(payload))
    return bytes((0x81, 0x80 | len(payload))) + MASK + body


def ws_load(port: int, count: int) -> None:
    """``count`` 13-byte echoes: one in flight on each of the connections at a time."""
    payload = b"0123456789abc"
    frame = masked_text(payload)
    echo = bytes((0x81, len(payload))) + payload
    socks = connections(port)
    buffers = [bytearray() for _ in socks]
    for sock, buf in zip(socks, buffers):
        sock.sendall(b"GET /ws HTTP/1.1\r\nHost: bench\r\nUpgrade: websocket\r\n"
                     b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                     b"Sec-WebSocket-Version: 13\r\n\r\n")
        recv_until(sock, b"\r\n\r\n", buf)
    for _ in range(count // CONNECTIONS):
        for sock in socks:
            sock.sendall(frame)
        for sock, buf in zip(socks, buffers):
            recv_until(sock, echo, buf)
    for sock in socks:
        sock.close()


def run(checkout: str, threads: int, requests: int, messages: int, workdir: str) -> int:
    """Total instructions of one server process under callgrind."""
    port = free_port()
    out = os.path.join(workdir, f"callgrind.{os.getpid()}.{port}")
    # A fixed hash seed, so dict and set layouts (and instruction counts) repeat.
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.abspath(checkout), APPS]),
               PYTHONHASHSEED="0")
    imported = subprocess.run([sys.executable, "-c", "import wssync; print(wssync.__file__)"],
                              env=env, cwd=APPS, capture_output=True, text=True).stdout.strip()
    if not imported.startswith(os.path.abspath(checkout) + os.sep):
        raise SystemExit(f"{checkout}: the server would import wssync from {imported}")
    proc = subprocess.Popen(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable, "-m",
         "wssync", "--app", "wssync_app:app", "--host", "127.0.0.1", "--port", str(port),
         "--threads", str(threads), "--no-access-log", "--log-level", "warning"],
        # Not started from the repository root: ``-m`` puts the working directory
        # first on sys.path, and ./wssync would win over the checkout measured.
        env=env, cwd=APPS, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_listening(port, proc)
        http_load(port, requests)
        ws_load(port, messages)
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=300)
    match = re.search(rb"Collected : (\d+)", err)
    if match is None:
        raise SystemExit(f"no instruction count from callgrind:\n{err.decode(errors='replace')}")
    os.unlink(out)
    return int(match.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkout", action="append", required=True, metavar="NAME=DIR",
                        help="a wssync checkout to measure (repeat)")
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--threads", default="0,4", help="modes to measure (default: 0,4)")
    args = parser.parse_args()
    checkouts: List[Tuple[str, str]] = [tuple(c.split("=", 1)) for c in args.checkout]  # type: ignore[misc]
    results: Dict[Tuple[str, int, str], float] = {}
    with tempfile.TemporaryDirectory() as workdir:
        for threads in (int(t) for t in args.threads.split(",")):
            for name, directory in checkouts:
                base = run(directory, threads, 0, 0, workdir)
                http_only = run(directory, threads, args.requests, 0, workdir)
                both = run(directory, threads, args.requests, args.messages, workdir)
                results[(name, threads, "http")] = (http_only - base) / args.requests
                results[(name, threads, "ws13")] = (both - http_only) / args.messages
                print(f"{name:10} threads={threads}: http {results[(name, threads, 'http')]:,.0f}"
                      f" instr/req, ws13 {results[(name, threads, 'ws13')]:,.0f} instr/msg",
                      flush=True)
    first = checkouts[0][0]
    for name, _ in checkouts[1:]:
        for threads in (int(t) for t in args.threads.split(",")):
            for workload in ("http", "ws13"):
                ratio = results[(name, threads, workload)] / results[(first, threads, workload)]
                print(f"{workload:5} threads={threads}: {name}/{first} instructions per op "
                      f"{ratio:.3f}")


if __name__ == "__main__":
    main()
