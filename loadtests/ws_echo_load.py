"""A WebSocket echo load generator: N connections, pre-built masked frames, bounded time.

Usage::

    python loadtests/ws_echo_load.py ws://127.0.0.1:8080/ws --connections 50 --seconds 8 \
        --size 13 --pipeline 1

Each connection keeps ``--pipeline`` messages in flight and counts echoed frames
without parsing payloads in Python (it only reads frame headers), so the
generator stays cheaper than the server under test.  Prints messages per second.
"""

from __future__ import annotations

import argparse
import base64
import os
import selectors
import socket
import struct
import sys
import time
from urllib.parse import urlsplit


def masked_frame(payload: bytes, binary: bool) -> bytes:
    mask = os.urandom(4)
    n = len(payload)
    first = 0x82 if binary else 0x81
    if n < 126:
        header = bytes((first, 0x80 | n))
    elif n < 65536:
        header = struct.pack("!BBH", first, 0x80 | 126, n)
    else:
        header = struct.pack("!BBQ", first, 0x80 | 127, n)
    key = (mask * (n // 4 + 1))[:n]
    body = (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")
    return header + mask + body


def open_connection(host: str, port: int, path: str) -> socket.socket:
    sock = socket.create_connection((host, port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                 f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                 f"Sec-WebSocket-Version: 13\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("closed during handshake")
        head += chunk
    if not head.startswith(b"HTTP/1.1 101"):
        raise ConnectionError(head.split(b"\r\n", 1)[0].decode())
    sock.setblocking(False)
    return sock


class Counter:
    """Counts complete frames in a byte stream from their headers only."""

    def __init__(self) -> None:
        self.buf = b""
        self.skip = 0

    def feed(self, data: bytes) -> int:
        frames = 0
        if self.skip:
            if len(data) <= self.skip:
                self.skip -= len(data)
                if self.skip == 0:
                    frames += 1
                return frames
            data = data[self.skip:]
            self.skip = 0
            frames += 1
        buf = self.buf + data
        pos = 0
        while len(buf) - pos >= 2:
            n = buf[pos + 1] & 0x7F
            header = 2
            if n == 126:
                if len(buf) - pos < 4:
                    break
                n = struct.unpack_from("!H", buf, pos + 2)[0]
                header = 4
            elif n == 127:
                if len(buf) - pos < 10:
                    break
                n = struct.unpack_from("!Q", buf, pos + 2)[0]
                header = 10
            end = pos + header + n
            if end <= len(buf):
                frames += 1
                pos = end
            else:
                self.skip = end - len(buf)
                pos = len(buf)
                break
        self.buf = buf[pos:]
        return frames


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--size", type=int, default=13)
    parser.add_argument("--binary", action="store_true")
    parser.add_argument("--pipeline", type=int, default=1)
    args = parser.parse_args()
    url = urlsplit(args.url)
    host, port, path = url.hostname or "127.0.0.1", url.port or 80, url.path or "/"
    frame = masked_frame(b"x" * args.size, args.binary)
    selector = selectors.DefaultSelector()
    counters = {}
    for _ in range(args.connections):
        sock = open_connection(host, port, path)
        counters[sock] = Counter()
        selector.register(sock, selectors.EVENT_READ)
        sock.sendall(frame * args.pipeline)
    received = 0
    start = time.monotonic()
    deadline = start + args.seconds
    while time.monotonic() < deadline:
        for key, _ in selector.select(0.5):
            sock = key.fileobj
            try:
                data = sock.recv(262144)  # type: ignore[union-attr]
            except BlockingIOError:
                continue
            if not data:
                print("server closed a connection", file=sys.stderr)
                return 1
            frames = counters[sock].feed(data)  # type: ignore[index]
            if frames:
                received += frames
                sock.sendall(frame * frames)  # type: ignore[union-attr]
    elapsed = time.monotonic() - start
    for sock in counters:
        sock.close()
    print(f"{received / elapsed:.0f} msg/s ({received} echoes in {elapsed:.1f} s, "
          f"{args.connections} connections, {args.size} B, pipeline {args.pipeline})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
