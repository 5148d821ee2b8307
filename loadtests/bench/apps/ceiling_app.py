"""The pure-Python ceiling: the least a Python selectors loop can do per request and
per WebSocket message, to measure how much of wssync's cost is wssync's own.

``python ceiling_app.py --host 127.0.0.1 --port 8000``

HTTP: every request head (found by its blank line; keep-alive, no body, nothing
parsed) gets one fixed ``200`` with ``Hello, World!``.  ``GET /ws`` with a
``Sec-WebSocket-Key`` gets a ``101``; from then on, each client frame (masked,
short or 16-bit length, no fragments, no control frames but close) is unmasked
and echoed unmasked.  No limits, no errors answered, no timeouts: not a server,
a floor under the cost of one.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import selectors
import socket
from typing import Dict

HELLO = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\n"
         b"Hello, World!")
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def switch(head: bytes) -> bytes:
    """The 101 for a handshake head (its key found by a plain search)."""
    start = head.lower().index(b"sec-websocket-key:") + len(b"sec-websocket-key:")
    key = head[start:head.index(b"\r\n", start)].strip()
    accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
    return (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n")


def echo_frames(data: bytearray, sock: socket.socket) -> bool:
    """Echo the whole frames in ``data`` (consumed); False once a close came."""
    out = bytearray()
    while len(data) >= 6:
        opcode, length = data[0] & 0x0F, data[1] & 0x7F
        offset = 2
        if length == 126:
            if len(data) < 8:
                break
            length = int.from_bytes(data[2:4], "big")
            offset = 4
        if len(data) < offset + 4 + length:
            break
        mask = bytes(data[offset:offset + 4])
        payload = data[offset + 4:offset + 4 + length]
        del data[:offset + 4 + length]
        if opcode == 8:
            sock.sendall(bytes(out) + b"\x88\x00")
            return False
        repeats = length // 4 + 1
        key = int.from_bytes(mask * repeats, "big") >> (8 * (4 * repeats - length))
        plain = (int.from_bytes(payload, "big") ^ key).to_bytes(length, "big") if length else b""
        out.append(0x80 | opcode)
        out += bytes([length]) if length < 126 else b"\x7e" + length.to_bytes(2, "big")
        out += plain
    if out:
        sock.sendall(out)
    return True


def serve(host: str, port: int) -> None:
    listener = socket.create_server((host, port), backlog=1024)
    listener.setblocking(False)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    pending: Dict[socket.socket, bytearray] = {}
    websockets: Dict[socket.socket, bytearray] = {}
    while True:
        for key, _ in selector.select():
            sock = key.fileobj
            if sock is listener:
                try:
                    conn, _ = listener.accept()
                except BlockingIOError:
                    continue
                conn.setblocking(False)
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                pending[conn] = bytearray()
                selector.register(conn, selectors.EVENT_READ)
                continue
            assert isinstance(sock, socket.socket)
            try:
                chunk = sock.recv(65536)
            except ConnectionError:
                chunk = b""
            if not chunk:
                selector.unregister(sock)
                pending.pop(sock, None)
                websockets.pop(sock, None)
                sock.close()
                continue
            frames = websockets.get(sock)
            if frames is not None:
                frames += chunk
                if not echo_frames(frames, sock):
                    selector.unregister(sock)
                    del websockets[sock]
                    sock.close()
                continue
            buf = pending[sock]
            buf += chunk
            answers = []
            while True:
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    break
                head = bytes(buf[:end + 4])
                del buf[:end + 4]
                if head.startswith(b"GET /ws "):
                    sock.sendall(b"".join(answers) + switch(head))
                    answers = []
                    websockets[sock] = pending.pop(sock)
                    break
                answers.append(HELLO)
            if answers:
                sock.sendall(b"".join(answers))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    try:
        serve(args.host, args.port)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
