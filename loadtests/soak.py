"""Soak: a long mixed HTTP + WebSocket + broadcast load; does the server stay flat?

Usage (from the repository root, with the ``load`` extra installed)::

    python loadtests/soak.py --duration 1800 --threads 0   # 30 minutes, reactor mode
    python loadtests/soak.py --duration 1800 --threads 4   # thread-pool mode
    python loadtests/soak.py --duration 300 --workers 2    # two worker processes

Starts ``python -m wssync --app target_app:app`` (pinned to CPU 0 where there
are two; with ``--workers N`` unpinned, N workers under a supervisor) and drives
it from this process (CPU 1) with a bounded, steady load:

* HTTP keep-alive clients: ``GET /``, ``POST`` and ``GET /api/items``;
* WebSocket churn: connect to ``/ws``, echo 20 messages, close, again;
* a chat room: 50 clients on ``/chat``, one message broadcast to all every 50 ms;
* 200 idle WebSockets held for the whole run (keepalive pings only);
* hostile churn: connections reset mid-request and mid-handshake.

Every ``--interval`` seconds it samples the server's RSS, open file
descriptors and threads (summed over the supervisor and its workers, and each
process's RSS on its own: ``rss_supervisor_kib``, ``rss_worker0_kib``, ...),
and the HTTP and WebSocket echo latency (p50, p99) and error counts of that
interval, and writes them to ``soak-<mode>.csv`` and a chart
``soak-<mode>.png`` in ``--out`` (default ``loadtests/results/``).  With
workers the chat's broadcasts cross between them through the relay.

The verdict (exit status 1 on failure): after a warm-up (``--warmup``, default
a fifth of the run), the samples are split in two halves.  Memory "keeps
growing" when the second half's highest RSS passes the first half's highest by
more than ``--tolerance-mib`` (default 2 MiB) plus 2 %: a server that has
levelled off makes no new highs (with workers: the total and each process).
The same rule holds for file descriptors (tolerance 10) and threads
(tolerance 0).  Any load error fails the run too.
"""

from __future__ import annotations

import argparse
import csv
import http.client
import json
import os
import random
import socket
import subprocess
import sys
import threading
import time
from typing import Any, Dict, List, Optional

import websocket  # websocket-client: an independent client

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)


class Stats:
    """Latencies and errors of the current interval (swapped out at each sample)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> Dict[str, Any]:
        with self.lock:
            old = getattr(self, "data", None)
            self.data: Dict[str, Any] = {"http": [], "ws": [], "errors": 0, "broadcasts": 0,
                                         "last_error": ""}
        return old or {}

    def add(self, kind: str, seconds: float) -> None:
        with self.lock:
            self.data[kind].append(seconds)

    def error(self, what: str) -> None:
        with self.lock:
            self.data["errors"] += 1
            self.data["last_error"] = what

    def count(self, key: str, n: int = 1) -> None:
        with self.lock:
            self.data[key] += n


def _pct(values: List[float], q: float) -> Optional[float]:
    if not values:
        return None
    ordered = sorted(values)
    return round(1000 * ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))], 2)


class Load:
    def __init__(self, port: int, stop: threading.Event, stats: Stats) -> None:
        self.port = port
        self.stop = stop
        self.stats = stats
        self.url = f"ws://127.0.0.1:{port}"

    def _ws(self, path: str, timeout: float = 10) -> websocket.WebSocket:
        return websocket.create_connection(self.url + path, timeout=timeout)

    def http_client(self) -> None:
        while not self.stop.is_set():
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            try:
                for i in range(100):
                    if self.stop.is_set():
                        break
                    start = time.monotonic()
                    if i % 10 == 0:
                        conn.request("POST", "/api/items", body=json.dumps({"n": i}),
                                     headers={"Content-Type": "application/json"})
                        expected = 201
                    else:
                        conn.request("GET", "/" if i % 2 else "/api/items")
                        expected = 200
                    resp = conn.getresponse()
                    resp.read()
                    if resp.status != expected:
                        self.stats.error(f"HTTP {resp.status}")
                    self.stats.add("http", time.monotonic() - start)
                    self.stop.wait(0.002)
            except (OSError, http.client.HTTPException) as exc:
                if not self.stop.is_set():
                    self.stats.error(f"http: {exc!r}")
            finally:
                conn.close()

    def ws_churn(self) -> None:
        while not self.stop.is_set():
            try:
                ws = self._ws("/ws")
                try:
                    for i in range(20):
                        start = time.monotonic()
                        ws.send(f"echo {i}")
                        if ws.recv() != f"echo {i}":
                            self.stats.error("wrong echo")
                        self.stats.add("ws", time.monotonic() - start)
                        self.stop.wait(0.005)
                finally:
                    ws.close()
            except (OSError, websocket.WebSocketException) as exc:
                if not self.stop.is_set():
                    self.stats.error(f"ws: {exc!r}")

    def chat(self, members: int) -> None:
        clients: List[websocket.WebSocket] = []
        try:
            for _ in range(members):
                clients.append(self._ws("/chat"))
            readers = [threading.Thread(target=self._chat_reader, args=(ws,), daemon=True)
                       for ws in clients]
            for reader in readers:
                reader.start()
            speaker = clients[0]
            n = 0
            while not self.stop.wait(0.05):
                n += 1
                speaker.send(json.dumps({"n": n, "pad": "x" * 200}))
                self.stats.count("broadcasts")
        except (OSError, websocket.WebSocketException) as exc:
            if not self.stop.is_set():
                self.stats.error(f"chat: {exc!r}")
        finally:
            for ws in clients:
                ws.close()

    def _chat_reader(self, ws: websocket.WebSocket) -> None:
        ws.settimeout(None)
        try:
            while not self.stop.is_set():
                ws.recv()
        except (OSError, websocket.WebSocketException):
            pass

    def idle(self, count: int) -> None:
        held = []
        try:
            for _ in range(count):
                held.append(self._ws("/ws"))
            while not self.stop.wait(1.0):
                for ws in held:
                    # websocket-client answers pings only when reading
                    ws.settimeout(0)
                    try:
                        ws.recv()
                    except (BlockingIOError, websocket.WebSocketTimeoutException, OSError,
                            websocket.WebSocketException):
                        pass
        except (OSError, websocket.WebSocketException) as exc:
            if not self.stop.is_set():
                self.stats.error(f"idle: {exc!r}")
        finally:
            for ws in held:
                try:
                    ws.close()
                except (OSError, websocket.WebSocketException):
                    pass

    def hostile(self) -> None:
        """Resets mid-request and mid-handshake: must leave nothing behind."""
        rng = random.Random(1)
        while not self.stop.wait(0.05):
            try:
                sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
                if rng.random() < 0.5:
                    sock.sendall(b"GET /api/items HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                else:
                    sock.sendall(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
                sock.close()  # RST
            except OSError as exc:
                self.stats.error(f"hostile: {exc!r}")


def _children(pid: int) -> List[int]:
    out: List[int] = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out.extend(int(child) for child in f.read().split())
    except OSError:
        pass
    return sorted(out)


def _tree_sample(pid: int) -> Dict[str, Any]:
    """RSS, fds and threads summed over ``pid`` and its children (a supervisor's
    workers), and each one's RSS: ``rss_supervisor_kib``, ``rss_worker0_kib``..."""
    children = _children(pid)
    total: Dict[str, Any] = _proc_sample(pid)
    if children:
        total["rss_supervisor_kib"] = total["rss_kib"]
        for index, child in enumerate(children):
            try:
                sample = _proc_sample(child)
            except OSError:  # exited between the listing and the reading
                continue
            total[f"rss_worker{index}_kib"] = sample["rss_kib"]
            for key in ("rss_kib", "threads", "fds"):
                total[key] += sample[key]
        total["pids"] = " ".join(str(p) for p in [pid, *children])
    return total


def _proc_sample(pid: int) -> Dict[str, int]:
    out = {"rss_kib": 0, "threads": 0}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                out["rss_kib"] = int(line.split()[1])
            elif line.startswith("Threads:"):
                out["threads"] = int(line.split()[1])
    out["fds"] = len(os.listdir(f"/proc/{pid}/fd"))
    return out


def verdict(rows: List[Dict[str, Any]], warmup: float, tolerance_mib: float) -> List[str]:
    """Reasons the run failed (empty: it passed); see the module docstring."""
    problems = []
    errors = sum(r["errors"] for r in rows)
    if errors:
        problems.append(f"{errors} load errors")
    steady = [r for r in rows if r["t"] >= warmup]
    if len(steady) < 4:
        return [*problems, "too few samples after the warm-up to judge"]
    half = len(steady) // 2
    first, second = steady[:half], steady[half:]
    per_process = [key for key in rows[-1] if key.startswith("rss_") and key != "rss_kib"]
    checks = [("rss_kib", tolerance_mib * 1024), ("fds", 10), ("threads", 0)]
    checks += [(key, tolerance_mib * 1024) for key in per_process]
    for key, tolerance in checks:
        top1 = max(r.get(key, 0) for r in first)
        top2 = max(r.get(key, 0) for r in second)
        allowed = top1 + tolerance + (0.02 * top1 if key.startswith("rss_") else 0)
        if top2 > allowed:
            problems.append(f"{key} keeps growing: {top1} in the first half after warm-up, "
                            f"{top2} in the second (allowed {allowed:.0f})")
    return problems


def chart(rows: List[Dict[str, Any]], path: str, title: str) -> Optional[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed: no chart"
    minutes = [r["t"] / 60 for r in rows]
    fig, axes = plt.subplots(3, 1, figsize=(9, 8), sharex=True)
    axes[0].plot(minutes, [r["rss_kib"] / 1024 for r in rows], label="RSS (MiB)")
    axes[0].set_ylabel("RSS MiB")
    axes[0].set_title(title)
    axes[1].plot(minutes, [r["fds"] for r in rows], label="fds")
    axes[1].plot(minutes, [r["threads"] for r in rows], label="threads")
    axes[1].set_ylabel("count")
    axes[1].legend()
    for key, label in (("http_p99_ms", "HTTP p99"), ("ws_p99_ms", "WS echo p99"),
                       ("http_p50_ms", "HTTP p50")):
        axes[2].plot(minutes, [r[key] if r[key] is not None else float("nan") for r in rows],
                     label=label)
    axes[2].set_ylabel("ms")
    axes[2].set_xlabel("minutes")
    axes[2].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=1800, help="seconds (default 1800)")
    parser.add_argument("--threads", type=int, default=0, help="server --threads (default 0)")
    parser.add_argument("--workers", type=int, default=1,
                        help="server --workers (default 1; more: unpinned)")
    parser.add_argument("--interval", type=float, default=10.0, help="seconds between samples")
    parser.add_argument("--warmup", type=float, default=None,
                        help="seconds not judged (default: a fifth of the run)")
    parser.add_argument("--tolerance-mib", type=float, default=2.0)
    parser.add_argument("--out", default=os.path.join(HERE, "results"))
    args = parser.parse_args()
    warmup = args.warmup if args.warmup is not None else args.duration / 5
    mode = f"threads{args.threads}" if args.threads else "reactor"
    if args.workers > 1:
        mode += f"-workers{args.workers}"
    os.makedirs(args.out, exist_ok=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    two_cores = (os.cpu_count() or 1) >= 2
    # Several workers are meant to use every core; one server process gets its own.
    prefix = ["taskset", "-c", "0"] if two_cores and args.workers == 1 else []
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")]))
    server = subprocess.Popen(
        [*prefix, sys.executable, "-m", "wssync", "--app", "target_app:app", "--host",
         "127.0.0.1", "--port", str(port), "--threads", str(args.threads),
         "--workers", str(args.workers), "--no-access-log",
         "--log-level", "warning"], cwd=HERE, env=env, stdin=subprocess.DEVNULL)
    if two_cores:
        os.sched_setaffinity(0, {1})
    stop = threading.Event()
    stats = Stats()
    rows: List[Dict[str, Any]] = []
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit("soak: the server did not start") from None
                time.sleep(0.1)
        load = Load(port, stop, stats)
        workers = [threading.Thread(target=load.http_client, daemon=True) for _ in range(4)]
        workers += [threading.Thread(target=load.ws_churn, daemon=True) for _ in range(2)]
        workers += [threading.Thread(target=load.chat, args=(50,), daemon=True),
                    threading.Thread(target=load.idle, args=(200,), daemon=True),
                    threading.Thread(target=load.hostile, daemon=True)]
        for worker in workers:
            worker.start()
        start = time.monotonic()
        stats.reset()
        while time.monotonic() - start < args.duration:
            time.sleep(args.interval)
            if server.poll() is not None:
                raise SystemExit(f"soak: the server exited with {server.returncode}")
            data = stats.reset()
            row: Dict[str, Any] = {"t": round(time.monotonic() - start, 1),
                                   **_tree_sample(server.pid)}
            row.update({"http_requests": len(data["http"]), "ws_echoes": len(data["ws"]),
                        "broadcasts": data["broadcasts"], "errors": data["errors"],
                        "http_p50_ms": _pct(data["http"], 50),
                        "http_p99_ms": _pct(data["http"], 99),
                        "ws_p50_ms": _pct(data["ws"], 50), "ws_p99_ms": _pct(data["ws"], 99)})
            rows.append(row)
            print(json.dumps(row) + (f"  last error: {data['last_error']}"
                                     if data["errors"] else ""), flush=True)
    finally:
        stop.set()
        server.terminate()
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    csv_path = os.path.join(args.out, f"soak-{mode}.csv")
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[-1]) if rows else ["t"],
                                extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    note = chart(rows, os.path.join(args.out, f"soak-{mode}.png"),
                 f"wssync soak, {mode}, {args.duration / 60:.0f} min")
    problems = verdict(rows, warmup, args.tolerance_mib)
    steady = [r for r in rows if r["t"] >= warmup] or rows
    summary = {
        "mode": mode, "minutes": round(args.duration / 60, 1), "samples": len(rows),
        "rss_mib_after_warmup": [round(min(r["rss_kib"] for r in steady) / 1024, 1),
                                 round(max(r["rss_kib"] for r in steady) / 1024, 1)],
        "rss_mib_end": round(rows[-1]["rss_kib"] / 1024, 1) if rows else None,
        # each process (with workers): first sample and last, MiB
        "rss_mib_by_process": {key[4:-4]: [round(rows[0].get(key, 0) / 1024, 1),
                                           round(rows[-1][key] / 1024, 1)]
                               for key in (rows[-1] if rows else {})
                               if key.startswith("rss_") and key != "rss_kib"},
        "fds_range": [min(r["fds"] for r in steady), max(r["fds"] for r in steady)],
        "threads_range": [min(r["threads"] for r in steady), max(r["threads"] for r in steady)],
        "http_requests": sum(r["http_requests"] for r in rows),
        "ws_echoes": sum(r["ws_echoes"] for r in rows),
        "broadcasts": sum(r["broadcasts"] for r in rows),
        "worst_http_p99_ms": max((r["http_p99_ms"] or 0) for r in rows) if rows else None,
        "worst_ws_p99_ms": max((r["ws_p99_ms"] or 0) for r in rows) if rows else None,
        "csv": csv_path, "chart": note or csv_path[:-4] + ".png",
        "verdict": "pass" if not problems else "fail", "problems": problems,
    }
    print(json.dumps(summary, indent=2))
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
