"""Small helpers shared by the end-to-end tests (plain functions, no fixtures)."""

from __future__ import annotations

import socket


def raw_exchange(port: int, data: bytes, half_close: bool = False,
                 timeout: float = 5.0) -> bytes:
    """Send ``data`` on a fresh connection (then half-close if asked) and read
    until the server closes it."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)
