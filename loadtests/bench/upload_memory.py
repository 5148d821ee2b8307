"""Upload memory: how much does the server hold while a WSGI app reads a large body?

Usage::

    python loadtests/bench/upload_memory.py [--size-mib 1024] [--threads 0]
        [--chunked] [--wssync-path DIR]

Starts wssync serving a plain WSGI application that reads ``wsgi.input`` in
64 KiB pieces and hashes them, uploads ``--size-mib`` MiB generated on the fly
(never held by this process either) with ``Content-Length``, or chunked with
``--chunked``, and checks the application's SHA-256 of what it read.  Reported:
the server's resident set before the upload (``idle_rss_mib``), its peak during
the upload (VmHWM, reset just before with /proc/PID/clear_refs) and the
difference, and the upload's throughput (informational: the machine is shared).
``--wssync-path`` serves another checkout (put first on PYTHONPATH), for
before/after tables; a checkout that collects whole bodies holds the upload in
memory, so mind ``--size-mib`` there.  Linux only (``/proc``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from typing import Dict, Iterator, Optional

import common

_APP = """
import hashlib, json, logging, sys
logging.basicConfig(level=logging.WARNING)
from wssync import App, Server

def hasher(environ, start_response):
    digest, size, stream = hashlib.sha256(), 0, environ["wsgi.input"]
    while True:
        chunk = stream.read(65536)
        if not chunk:
            break
        digest.update(chunk)
        size += len(chunk)
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps({"sha256": digest.hexdigest(), "size": size}).encode()]

app = App()
app.mount_wsgi(hasher)
Server(app, "127.0.0.1", int(sys.argv[1]), threads=int(sys.argv[2]),
       max_body_size=int(sys.argv[3]), body_timeout=600).serve_forever()
"""

_PIECE = 256 * 1024


def _pieces(size: int) -> Iterator[bytes]:
    block = bytes(range(256)) * (_PIECE // 256)
    sent = 0
    while sent < size:
        piece = block[: min(_PIECE, size - sent)]
        sent += len(piece)
        yield piece


def _status_kib(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/{pid}/status")


def _upload(port: int, size: int, chunked: bool) -> Dict[str, object]:
    framing = b"Transfer-Encoding: chunked" if chunked else b"Content-Length: %d" % size
    with socket.create_connection(("127.0.0.1", port), timeout=600) as sock:
        sock.sendall(b"POST /upload HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n"
                     + framing + b"\r\n\r\n")
        for piece in _pieces(size):
            sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
        if chunked:
            sock.sendall(b"0\r\n\r\n")
        reply = common.read_to_eof(sock)
    head, _, body = reply.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200 "):
        raise RuntimeError(f"upload answered {head[:60]!r}")
    answer: Dict[str, object] = json.loads(body)
    return answer


def run(size_mib: int, threads: int, chunked: bool,
        wssync_path: Optional[str]) -> Dict[str, object]:
    size = size_mib * 2**20
    port = common.free_port()
    env = dict(os.environ)
    if wssync_path:
        env["PYTHONPATH"] = os.path.abspath(wssync_path) + os.pathsep + env.get("PYTHONPATH", "")
    with tempfile.TemporaryDirectory() as cwd:  # not the checkout: import the one asked for
        server = subprocess.Popen([sys.executable, "-c", _APP, str(port), str(threads),
                                   str(size + 1)], cwd=cwd, env=env)
        try:
            if not common.wait_port("127.0.0.1", port, 30):
                raise RuntimeError("server did not start")
            _upload(port, 1024, chunked)  # warm up: code paths and buffers in place
            time.sleep(0.3)
            idle = _status_kib(server.pid, "VmRSS")
            with open(f"/proc/{server.pid}/clear_refs", "w") as f:
                f.write("5")  # reset VmHWM to the current resident set
            start = time.monotonic()
            answer = _upload(port, size, chunked)
            seconds = time.monotonic() - start
            peak = _status_kib(server.pid, "VmHWM")
        finally:
            server.terminate()
            server.wait(30)
    expected = hashlib.sha256()
    for piece in _pieces(size):
        expected.update(piece)
    if answer != {"sha256": expected.hexdigest(), "size": size}:
        raise RuntimeError(f"the application read something else: {answer}")
    return {
        "checkout": wssync_path or "(installed)",
        "upload_mib": size_mib,
        "framing": "chunked" if chunked else "content-length",
        "threads": threads,
        "idle_rss_mib": round(idle / 1024, 1),
        "peak_rss_mib": round(peak / 1024, 1),
        "peak_growth_mib": round((peak - idle) / 1024, 1),
        "mib_per_s": round(size_mib / seconds, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--chunked", action="store_true")
    parser.add_argument("--wssync-path", default=None)
    args = parser.parse_args()
    print(json.dumps(run(args.size_mib, args.threads, args.chunked, args.wssync_path)))


if __name__ == "__main__":
    main()
