"""TLS handshake memory: what does a handshake that never finishes cost the server?

Usage::

    python loadtests/bench/tls_handshake_memory.py [--connections 2000]
        [--send half|nothing|whole|plain] [--max-tls-handshakes N]
        [--wssync-path DIR] [--timeout 120]

Starts wssync with a TLS certificate (made with the ``openssl`` command) and a
long ``tls_handshake_timeout`` (so nothing expires while it measures), warms it
up with a few complete HTTPS requests, then opens ``--connections`` connections
that stall: ``half`` sends half of a real ClientHello, ``nothing`` sends
nothing, ``whole`` sends a whole ClientHello and never answers the server's
reply; ``plain`` opens idle connections to a plain (no TLS) server for
comparison.  Reported: the server's resident set (VmRSS) before, while the
connections are held (once it has settled) and after the client closed them,
and the cost per connection (``kib_per_connection``).  With
``--max-tls-handshakes N`` at most N handshakes are in progress, the server
drops the oldest unfinished one for each new connection past N, and
``held_by_server`` says how many it still had open.  ``--wssync-path`` serves
another checkout (put first on PYTHONPATH), for before/after tables.  Every
wait is bounded (``--timeout`` in all).  Linux only (``/proc``).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional

import common

_APP = """
import json, logging, sys
logging.basicConfig(level=logging.WARNING)
from wssync import App, Server
from wssync.tls import server_context

port, certfile, keyfile, settings = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
app = App()

@app.route("/")
def index(request):
    return "ok\\n"

context = server_context(certfile, keyfile) if certfile else None
Server(app, "127.0.0.1", port, ssl_context=context, **json.loads(settings)).serve_forever()
"""


def _rss_kib(pid: int) -> int:
    return common.status_fields([pid])["rss_kib"]


def _settled_rss(pid: int, deadline: float, quiet: float = 1.0) -> int:
    """The server's RSS once it has not changed by more than 64 KiB for ``quiet`` s."""
    last, since = _rss_kib(pid), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.1)
        now = _rss_kib(pid)
        if abs(now - last) > 64:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            break
    return last


def _client_hello() -> bytes:
    """The bytes of a real ClientHello (TLS over memory, no socket)."""
    tls = common.client_context().wrap_bio(ssl.MemoryBIO(), outgoing := ssl.MemoryBIO())
    try:
        tls.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


def _https_get(port: int, cafile: str) -> None:
    context = common.client_context(cafile)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        tls.sendall(b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        reply = b""
        while True:
            chunk = tls.recv(4096)
            if not chunk:
                break
            reply += chunk
    if not reply.startswith(b"HTTP/1.1 200 "):
        raise RuntimeError(f"warm-up answered {reply[:60]!r}")


def _server_open(sockets: List[socket.socket], wait: float) -> int:
    """How many of ``sockets`` the server still holds open (closed ones read EOF)."""
    time.sleep(wait)
    held = 0
    for sock in sockets:
        sock.setblocking(False)
        try:
            while sock.recv(65536):  # the server's reply to a whole ClientHello
                pass
        except BlockingIOError:
            held += 1  # nothing more to read, and no end: still open
        except OSError:
            pass  # reset: closed by the server
    return held


def run(connections: int, send: str, max_tls_handshakes: Optional[int],
        wssync_path: Optional[str], timeout: float) -> Dict[str, object]:
    deadline = time.monotonic() + timeout
    common.raise_nofile()
    port = common.free_port()
    env = dict(os.environ)
    if wssync_path:
        env["PYTHONPATH"] = os.path.abspath(wssync_path) + os.pathsep + env.get("PYTHONPATH", "")
    tls = send != "plain"
    settings: Dict[str, object] = {"backlog": 4096}
    if tls:
        settings["tls_handshake_timeout"] = timeout + 60  # nothing expires while we measure
    if max_tls_handshakes is not None:
        settings["max_tls_handshakes"] = max_tls_handshakes
    payload = {"half": _client_hello()[:200], "whole": _client_hello()}.get(send, b"")
    sockets: List[socket.socket] = []
    with tempfile.TemporaryDirectory() as cwd:  # not the checkout: import the one asked for
        certfile, keyfile = common.make_test_cert(cwd) if tls else ("", "")
        server = subprocess.Popen([sys.executable, "-c", _APP, str(port), certfile, keyfile,
                                   json.dumps(settings)], cwd=cwd, env=env)
        try:
            if not common.wait_port("127.0.0.1", port, 30):
                raise RuntimeError("server did not start")
            if tls:
                for _ in range(20):  # code paths, the session cache and buffers in place
                    _https_get(port, certfile)
            idle = _settled_rss(server.pid, deadline)
            for _ in range(connections):
                if time.monotonic() > deadline:
                    raise RuntimeError("out of time while connecting")
                sock = socket.create_connection(("127.0.0.1", port), timeout=10)
                sockets.append(sock)
                if payload:
                    sock.sendall(payload)
            held_rss = _settled_rss(server.pid, deadline)
            held = _server_open(sockets, 0.5)
            for sock in sockets:
                sock.close()
            sockets.clear()
            after = _settled_rss(server.pid, deadline)
        finally:
            for sock in sockets:
                sock.close()
            server.terminate()
            server.wait(30)
    return {
        "checkout": wssync_path or "(installed)",
        "send": send,
        "connections": connections,
        "max_tls_handshakes": max_tls_handshakes,
        "held_by_server": held,
        "idle_rss_mib": round(idle / 1024, 1),
        "held_rss_mib": round(held_rss / 1024, 1),
        "after_close_rss_mib": round(after / 1024, 1),
        "kib_per_connection": round((held_rss - idle) / connections, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=2000)
    parser.add_argument("--send", choices=["half", "nothing", "whole", "plain"], default="half")
    parser.add_argument("--max-tls-handshakes", type=int, default=None)
    parser.add_argument("--wssync-path", default=None)
    parser.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args()
    print(json.dumps(run(args.connections, args.send, args.max_tls_handshakes,
                         args.wssync_path, args.timeout)))


if __name__ == "__main__":
    main()
