"""Broadcast memory: a thread broadcasts large messages; how much does the server hold?

Usage::

    python loadtests/bench/broadcast_memory.py --readers 10 [--count 1000] [--size 65536]
        [--threads 0] [--setting max_write_buffer=67108864] [--wssync-path DIR]

Starts wssync with ``apps/wssync_burst_app.py`` (pinned to CPU 0), connects
``--readers`` WebSocket clients from reader processes (CPU 1), then asks for a
burst: a plain thread in the server calls ``server.broadcast`` ``--count`` times
with ``--size``-byte messages.  Readers check that each connection receives
every message, in order (each starts with its sequence number).  Reported:

* ``peak_rss_growth``: the kernel's peak resident set (VmHWM, reset just before
  the burst with /proc/PID/clear_refs) minus the resident set before it;
* ``peak_in_flight``: the most bytes seen at once in the kernel's socket
  buffers of these connections (server Send-Q plus client Recv-Q, from ``ss``,
  sampled every 50 ms): what the network path holds, which no server can avoid;
* delivery: messages received in order, connections dropped, duration.

``--rcvbuf``, ``--read-chunk`` and ``--read-pause`` make the readers slow
clients (a small receive window, small reads, pauses), so the server must hold
what they have not taken yet: the case where sharing one frame between
receivers, or copying it per receiver, shows.

``--wssync-path`` serves another checkout of wssync (put first on PYTHONPATH),
for before/after tables.  Linux only (``/proc``, ``ss``, ``taskset``).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import select
import socket
import subprocess
import sys
import threading
import time
from typing import Any, Dict, List, Optional, Tuple

import common

_LAUNCH = """
import json, logging, sys
logging.basicConfig(level=logging.WARNING)  # warnings only: an access log would fill the pipe
from wssync import Server
from wssync_burst_app import app
settings = json.loads(sys.argv[3])
Server(app, "127.0.0.1", int(sys.argv[1]), threads=int(sys.argv[2]), **settings).serve_forever()
"""


class _Stream:
    """Counts the data frames of one connection and checks their sequence numbers
    without keeping payloads (the reader hands back only the first 8 bytes of each)."""

    __slots__ = ("bad", "closed", "count", "frames", "reader")

    def __init__(self) -> None:
        self.reader = common.FrameReader(keep=8)
        self.frames: List[Tuple[int, bytes]] = []
        self.count = 0
        self.bad = 0
        self.closed = False

    def feed(self, data: bytes) -> None:
        frames = self.frames
        self.reader.feed(data, frames)
        for opcode, prefix in frames:
            if opcode == common.OP_CLOSE:
                self.closed = True
            elif opcode in (common.OP_TEXT, common.OP_BINARY):
                if prefix != b"%08d" % self.count:
                    self.bad += 1
                self.count += 1
        frames.clear()


def _connect(port: int, rcvbuf: int) -> Tuple[socket.socket, bytes]:
    sock = socket.socket()
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", port))
    sock.sendall(common.handshake_request("127.0.0.1", port, "/ws"))
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("closed during the handshake")
        head += chunk
    end = head.index(b"\r\n\r\n") + 4
    common.check_handshake(head[:end])
    return sock, head[end:]


def _reader(port: int, readers: int, count: int, ctrl: Any, rcvbuf: int, chunk: int,
            pause: float) -> None:
    common.pin(common.LOAD_CPU)
    socks: Dict[int, socket.socket] = {}
    streams: Dict[int, _Stream] = {}
    ep = select.epoll()
    for _ in range(readers):
        sock, leftover = _connect(port, rcvbuf)
        sock.setblocking(False)
        socks[sock.fileno()] = sock
        streams[sock.fileno()] = stream = _Stream()
        stream.feed(leftover)
        ep.register(sock.fileno(), select.EPOLLIN)
    ctrl.send("ready")
    buf = bytearray(chunk)
    view = memoryview(buf)
    done_at: Optional[float] = None
    deadline = time.monotonic() + 600
    open_fds = set(socks)
    while open_fds and time.monotonic() < deadline:
        if ctrl.poll() and ctrl.recv() == "stop":
            break
        for fd, _ in ep.poll(0.2):
            try:
                got = socks[fd].recv_into(buf)
            except BlockingIOError:
                continue
            except OSError:
                got = 0
            if not got:
                ep.unregister(fd)
                open_fds.discard(fd)
                streams[fd].closed = True
                continue
            streams[fd].feed(bytes(view[:got]))
        if pause:
            time.sleep(pause)  # a slow client: at most one chunk per socket per pause
        if done_at is None and all(s.count >= count or s.closed for s in streams.values()):
            done_at = time.monotonic()
            break
    ctrl.send({"received": sum(min(s.count, count) for s in streams.values()),
               "complete": sum(1 for s in streams.values() if s.count >= count and not s.bad),
               "dropped": sum(1 for s in streams.values() if s.closed and s.count < count),
               "out_of_order": sum(s.bad for s in streams.values()), "done_at": done_at})
    for sock in socks.values():
        sock.close()


def _status_kib(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def _in_flight(port: int) -> int:
    """Bytes in kernel socket buffers on both ends of this server's connections."""
    out = subprocess.run(["ss", "-tnH", "state", "established"], capture_output=True,
                         text=True).stdout
    total = 0
    for line in out.splitlines():
        parts = line.split()
        if len(parts) < 4:
            continue
        recv_q, send_q, local, peer = int(parts[0]), int(parts[1]), parts[2], parts[3]
        if local.endswith(f":{port}"):
            total += send_q  # the server's unsent or unacknowledged bytes
        elif peer.endswith(f":{port}"):
            total += recv_q  # bytes a reader has not read yet
    return total


def run(readers: int, count: int, size: int, threads: int, settings: Dict[str, Any],
        wssync_path: Optional[str], procs: int, producer: str = "thread", rcvbuf: int = 0,
        chunk: int = 1 << 20, pause: float = 0.0) -> Dict[str, Any]:
    common.raise_nofile()
    common.pin(common.LOAD_CPU)
    port = common.free_port()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (wssync_path, common.APPS_DIR, common.REPO_DIR, env.get("PYTHONPATH")) if p)
    server = subprocess.Popen(
        ["taskset", "-c", str(common.SERVER_CPU), sys.executable, "-c", _LAUNCH, str(port),
         str(threads), json.dumps(settings)], env=env, stdin=subprocess.DEVNULL,
        cwd=common.APPS_DIR,  # not the repository root: "-c" would import ./wssync from there
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    result: Dict[str, Any] = {"readers": readers, "count": count, "size": size,
                              "threads": threads, "producer": producer, "settings": settings,
                              "reader_rcvbuf": rcvbuf, "read_chunk": chunk, "read_pause": pause,
                              "wssync_path": wssync_path or common.REPO_DIR}
    pipes: List[Any] = []
    children: List[multiprocessing.Process] = []
    try:
        if not common.wait_port("127.0.0.1", port, 20):
            raise RuntimeError("server did not start")
        per = [readers // procs + (1 if i < readers % procs else 0) for i in range(procs)]
        for n in per:
            if not n:
                continue
            parent, child = multiprocessing.Pipe()
            proc = multiprocessing.Process(target=_reader,
                                           args=(port, n, count, child, rcvbuf, chunk, pause))
            proc.start()
            pipes.append(parent)
            children.append(proc)
        for pipe in pipes:
            if pipe.recv() != "ready":
                raise RuntimeError("a reader failed to connect")
        time.sleep(0.5)
        rss0 = _status_kib(server.pid, "VmRSS")
        with open(f"/proc/{server.pid}/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current resident set
        peak_flight = 0
        stop = threading.Event()

        def sample() -> None:
            nonlocal peak_flight
            while not stop.is_set():
                peak_flight = max(peak_flight, _in_flight(port))
                stop.wait(0.05)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        start = time.monotonic()
        status, body, _ = common.http_get(
            "127.0.0.1", port, f"/burst?count={count}&size={size}&from={producer}", timeout=120)
        if status != 200:
            raise RuntimeError(f"/burst answered {status} {body[:60]!r}")
        reports = [pipe.recv() for pipe in pipes]
        stop.set()
        sampler.join()
        hwm = _status_kib(server.pid, "VmHWM")
        done = [r["done_at"] for r in reports if r["done_at"]]
        result.update({
            "rss_before_mib": round(rss0 / 1024, 1),
            "peak_rss_growth_mib": round((hwm - rss0) / 1024, 1),
            "peak_in_flight_mib": round(peak_flight / 2**20, 1),
            "burst_mib": round(count * size / 2**20, 1),
            "received": sum(r["received"] for r in reports),
            "expected": readers * count,
            "complete_connections": sum(r["complete"] for r in reports),
            "dropped_connections": sum(r["dropped"] for r in reports),
            "out_of_order": sum(r["out_of_order"] for r in reports),
            "seconds": round(max(done) - start, 2) if len(done) == len(reports) else None,
            "server_alive": server.poll() is None,
        })
        flight = result["peak_in_flight_mib"]
        result["growth_per_in_flight"] = round(result["peak_rss_growth_mib"] / flight, 2) \
            if flight else None
    except Exception as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        common.stop_children(pipes, children, "stop")
        server.terminate()
        try:
            _, err = server.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            _, err = server.communicate()
        problems = [line for line in err.decode(errors="replace").splitlines()
                    if "Traceback" in line or "Error" in line or "WARNING" in line]
        if problems:
            result["server_log_problems"] = problems[:5]
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--readers", type=int, default=10)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--size", type=int, default=65536)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--producer", choices=["thread", "handler"], default="thread",
                        help="broadcast from a plain thread, or from the request handler")
    parser.add_argument("--procs", type=int, default=0,
                        help="reader processes (default: 1 per 250 readers, at least 2)")
    parser.add_argument("--rcvbuf", type=int, default=0,
                        help="readers' SO_RCVBUF (default: the system's; small = a slow path)")
    parser.add_argument("--read-chunk", type=int, default=1 << 20,
                        help="bytes a reader takes per recv (default 1 MiB)")
    parser.add_argument("--read-pause", type=float, default=0.0,
                        help="seconds a reader process sleeps after each round (slow clients)")
    parser.add_argument("--setting", action="append", default=[], metavar="NAME=INT",
                        help="a Server setting for this run (repeatable)")
    parser.add_argument("--wssync-path", help="serve the wssync package found in this directory")
    parser.add_argument("--json", help="also write the result here")
    args = parser.parse_args()
    settings = {}
    for item in args.setting:
        name, _, value = item.partition("=")
        settings[name] = int(value)
    procs = args.procs or max(2, (args.readers + 249) // 250)
    result = run(args.readers, args.count, args.size, args.threads, settings,
                 args.wssync_path, procs, args.producer, args.rcvbuf, args.read_chunk,
                 args.read_pause)
    print(json.dumps(result, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0 if "error" not in result else 1


if __name__ == "__main__":
    sys.exit(main())
