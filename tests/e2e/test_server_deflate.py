"""permessage-deflate (RFC 7692) end to end over real sockets.

The negotiated extension as a real client sees it, and the checks that must
hold on the *inflated* data: UTF-8 of compressed text (1007) and the message
size limit against a deflate bomb (1009).
"""

from __future__ import annotations

import base64
import os
import socket
import struct
import zlib
from typing import Tuple

import pytest
from helpers import frame
from websockets.sync.client import connect

from wssync import App, Server, WebSocket

KiB = 1024


def _echo_app() -> App:
    app = App()

    @app.websocket("/echo")
    def echo(ws: WebSocket, message: object) -> None:
        ws.send(message)  # type: ignore[arg-type]

    return app


def _deflate(data: bytes) -> bytes:
    """A message's compressed payload: raw deflate, sync-flushed, tail removed (RFC 7692 7.2.1)."""
    compressor = zlib.compressobj(wbits=-15)
    out = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(b"\x00\x00\xff\xff")
    return out[:-4]


def _open_deflate(port: int) -> Tuple[socket.socket, bytes]:
    """A raw client that offers permessage-deflate; the 101 head and the socket."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(f"GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                 f"Sec-WebSocket-Extensions: permessage-deflate\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    return sock, head


def _close_code(sock: socket.socket) -> int:
    """Read server frames until its close frame; the code in it."""
    buf = b""
    while True:
        chunk = sock.recv(65536)
        assert chunk, "connection ended without a close frame"
        buf += chunk
        while len(buf) >= 2:
            opcode, length = buf[0] & 0x0F, buf[1] & 0x7F
            start = 2
            if length == 126:
                length, start = struct.unpack("!H", buf[2:4])[0], 4
            elif length == 127:
                length, start = struct.unpack("!Q", buf[2:10])[0], 10
            if len(buf) < start + length:
                break
            payload, buf = buf[start:start + length], buf[start + length:]
            if opcode == 0x8:
                return int(struct.unpack("!H", payload[:2])[0])


@pytest.fixture
def port(start_server, threads: int) -> int:
    server: Server = start_server(_echo_app(), threads=threads, max_message_size=1024 * KiB)
    return int(server.address[1])


def test_a_real_client_negotiates_and_round_trips(port: int) -> None:
    text = "compressible " * 5000  # 65 KB of text, a few hundred bytes compressed
    with connect(f"ws://127.0.0.1:{port}/echo", compression="deflate") as ws:
        extensions = ws.response.headers["Sec-WebSocket-Extensions"]
        assert extensions.startswith("permessage-deflate")
        ws.send(text)
        assert ws.recv(timeout=10) == text
        ws.send(b"\x00\xff" * 4000)
        assert ws.recv(timeout=10) == b"\x00\xff" * 4000


def test_invalid_utf8_inside_compressed_text_closes_1007(port: int) -> None:
    sock, head = _open_deflate(port)
    with sock:
        assert b"permessage-deflate" in head.lower()
        # Valid as deflate, invalid as UTF-8 once inflated.
        sock.sendall(frame(0x1, rsv=0x40, payload=_deflate(b"valid start \xff\xfe then junk")))
        assert _close_code(sock) == 1007


def test_deflate_bomb_closes_1009_without_inflating_it(port: int) -> None:
    sock, head = _open_deflate(port)
    with sock:
        assert b"permessage-deflate" in head.lower()
        bomb = _deflate(bytes(64 * 1024 * KiB))  # 64 MiB of zeros, ~64 KiB compressed
        assert len(bomb) < 128 * KiB
        sock.sendall(frame(0x2, bomb, rsv=0x40))
        assert _close_code(sock) == 1009  # the 1 MiB limit counts inflated bytes
