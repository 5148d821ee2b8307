"""Downloads: a large file fetched over and over, wssync against waitress and gunicorn.

Usage::

    python loadtests/bench/download.py [--size-mib 100] [--seconds 10] [--rounds 3]
        [--connections 2] [--servers wssync-flask,wssync-native,waitress,gunicorn-gthread]

Every server serves the same Flask app (``apps/download_app.py``), whose
``/flask`` view returns ``send_file`` of one ``--size-mib`` file of random
bytes; ``wssync-native`` fetches ``/native``, wssync's own ``Response.file``,
from the same wssync process type.  Each server runs pinned to CPU 0 and is
downloaded from for ``--seconds`` by ``--connections`` keep-alive clients on
CPU 1 (whole-file GETs, read into a reused buffer and checked for length; the
first download of each server is checked byte for byte).  Rounds alternate the
order of the servers.  Reported per server: MiB/s, and server CPU seconds
(user + system, whole process tree) per GiB sent; per round, wssync's ratio to
each anchor (throughput: wssync / anchor; CPU: anchor / wssync, so above 1.0
is better for wssync in both), with medians.

wssync is imported from ``--wssync-path`` (this checkout by default).  Run it
with the bench venv's interpreter (``run.py --install`` makes it), which has
Flask, waitress and gunicorn.  Linux only (``/proc``, ``taskset``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
from typing import Any, Dict, List, Tuple

import common
import servers
from servers import ServerProcess, ServerSpec

MiB = 1024 * 1024
GiB = 1024 * MiB


def _wssync(host: str, port: int) -> List[str]:
    return ["-m", "wssync", "--app", "download_app:app", "--host", host, "--port", str(port),
            "--no-access-log", "--log-level", "warning"]


# (spec, path downloaded)
VARIANTS: Dict[str, Tuple[ServerSpec, str]] = {
    "wssync-flask": (ServerSpec("wssync-flask", "wssync reactor mode, Flask send_file over WSGI",
                                frozenset(), ["wssync", "flask"], _wssync), "/flask"),
    "wssync-native": (ServerSpec("wssync-native", "wssync reactor mode, Response.file",
                                 frozenset(), ["wssync", "flask"], _wssync), "/native"),
    "waitress": (ServerSpec("waitress", "waitress, threads=4, Flask send_file",
                            frozenset(), ["waitress", "flask"],
                            lambda host, port: ["-m", "waitress", "--threads=4",
                                                f"--listen={host}:{port}",
                                                "download_app:flask_app"]), "/flask"),
    "gunicorn-gthread": (ServerSpec("gunicorn-gthread",
                                    "gunicorn -k gthread, 1 worker, 4 threads, Flask send_file",
                                    frozenset(), ["gunicorn", "flask"],
                                    lambda host, port: ["-m", "gunicorn", "-k", "gthread", "-w",
                                                        "1", "--threads", "4", "-b",
                                                        f"{host}:{port}", "--log-level",
                                                        "warning", "download_app:flask_app"]),
                         "/flask"),
}
WSSYNC = ("wssync-flask", "wssync-native")


def _read_head(sock: socket.socket) -> Tuple[bytes, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before the response head")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def _content_length(head: bytes) -> int:
    status = head.split(b"\r\n", 1)[0]
    if b" 200 " not in status + b" ":
        raise RuntimeError(f"unexpected answer: {status!r}")
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    raise RuntimeError("no Content-Length")


def fetch(sock: socket.socket, host: str, path: str, buf: memoryview,
          digest: Any = None) -> int:
    """One GET of ``path`` on a keep-alive socket; body bytes read (all of them)."""
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    head, rest = _read_head(sock)
    length = _content_length(head)
    got = len(rest)
    if digest is not None:
        digest.update(rest)
    while got < length:
        n = sock.recv_into(buf, min(len(buf), length - got))
        if not n:
            raise ConnectionError(f"closed after {got} of {length} bytes")
        if digest is not None:
            digest.update(buf[:n])
        got += n
    if got != length:
        raise RuntimeError(f"read {got} bytes past the {length} announced")
    return got


def measure(server: ServerProcess, path: str, connections: int, seconds: float,
            size: int) -> Dict[str, Any]:
    totals = [0] * connections
    errors: List[str] = []
    stop = time.monotonic() + seconds

    def client(index: int) -> None:
        buf = memoryview(bytearray(4 * MiB))
        try:
            with socket.create_connection((server.host, server.port), timeout=60) as sock:
                while time.monotonic() < stop:
                    totals[index] += fetch(sock, server.host, path, buf)
        except Exception as exc:  # reported, not raised: the round goes on
            errors.append(repr(exc))

    cpu_before = server.cpu()
    start = time.monotonic()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - start
    cpu = server.cpu() - cpu_before
    sent = sum(totals)
    return {"mib_per_s": round(sent / MiB / elapsed, 1), "downloads": sent // size,
            "bytes": sent, "seconds": round(elapsed, 2), "server_cpu_s": round(cpu, 2),
            "cpu_s_per_gib": round(cpu / (sent / GiB), 3) if sent else None,
            "errors": errors}


def check_content(server: ServerProcess, path: str, expected: str) -> None:
    digest = hashlib.sha256()
    with socket.create_connection((server.host, server.port), timeout=60) as sock:
        fetch(sock, server.host, path, memoryview(bytearray(MiB)), digest)
    if digest.hexdigest() != expected:
        raise RuntimeError(f"{server.spec.name}: {path} sent other bytes than the file")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=2)
    parser.add_argument("--servers", default=",".join(VARIANTS))
    parser.add_argument("--wssync-path", default=common.REPO_DIR,
                        help="import wssync from this checkout")
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--json", help="also write the result here")
    args = parser.parse_args()
    names = [n for n in args.servers.split(",") if n]
    for name in names:
        if name not in VARIANTS:
            parser.error(f"unknown server {name!r}; known: {', '.join(VARIANTS)}")
        why = VARIANTS[name][0].available()
        if why:
            parser.error(f"{name}: {why}")
    servers.PYTHONPATH_PREFIX[:] = [os.path.abspath(args.wssync_path)]
    common.pin(common.LOAD_CPU)
    workdir = tempfile.mkdtemp(prefix="wssync-bench-download-")
    file_path = os.path.join(workdir, "download.bin")
    size = args.size_mib * MiB
    digest = hashlib.sha256()
    with open(file_path, "wb") as f:
        for _ in range(args.size_mib):
            block = os.urandom(MiB)
            digest.update(block)
            f.write(block)
    os.environ["DOWNLOAD_FILE"] = file_path
    stamp = time.strftime("%Y%m%d-%H%M%S")
    rounds: List[Dict[str, Dict[str, Any]]] = []
    try:
        for r in range(args.rounds):
            order = names[r % len(names):] + names[:r % len(names)]  # alternate
            results: Dict[str, Dict[str, Any]] = {}
            for name in order:
                spec, path = VARIANTS[name]
                log = os.path.join(common.RESULTS_DIR, "logs", f"download-{stamp}-{name}.log")
                server = ServerProcess(spec, log, python=args.python)
                try:
                    server.wait_ready()
                    check_content(server, path, digest.hexdigest())
                    results[name] = measure(server, path, args.connections, args.seconds,
                                            size)
                finally:
                    results.setdefault(name, {})["stop"] = server.stop()
                row = results[name]
                print(f"round {r + 1} {name:17} {row.get('mib_per_s')} MiB/s  "
                      f"{row.get('cpu_s_per_gib')} CPU s/GiB  {row.get('errors') or ''}",
                      flush=True)
            rounds.append(results)
    finally:
        os.unlink(file_path)
        os.rmdir(workdir)
    summary: Dict[str, Any] = {}
    for ours in [n for n in names if n in WSSYNC]:
        for anchor in [n for n in names if n not in WSSYNC]:
            speed = [r[ours]["mib_per_s"] / r[anchor]["mib_per_s"] for r in rounds
                     if r[ours].get("mib_per_s") and r[anchor].get("mib_per_s")]
            cpu = [r[anchor]["cpu_s_per_gib"] / r[ours]["cpu_s_per_gib"] for r in rounds
                   if r[ours].get("cpu_s_per_gib") and r[anchor].get("cpu_s_per_gib")]
            key = f"{ours} / {anchor}"
            summary[key] = {"throughput": round(statistics.median(speed), 2) if speed else None,
                            "cpu_per_gib": round(statistics.median(cpu), 2) if cpu else None}
            print(f"{key:36} throughput {summary[key]['throughput']}x, "
                  f"CPU per GiB {summary[key]['cpu_per_gib']}x (anchor / wssync)")
    for name in names:
        speeds = [r[name]["mib_per_s"] for r in rounds if r[name].get("mib_per_s")]
        cpus = [r[name]["cpu_s_per_gib"] for r in rounds if r[name].get("cpu_s_per_gib")]
        if speeds and cpus:
            print(f"median {name:17} {statistics.median(speeds):8.1f} MiB/s  "
                  f"{statistics.median(cpus):.3f} CPU s/GiB")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"size_mib": args.size_mib, "seconds": args.seconds,
                       "connections": args.connections, "rounds": rounds,
                       "ratios": summary}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
