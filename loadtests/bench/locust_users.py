"""How many connected WebSocket users one Locust process holds, wssync.locust vs websocket-client.

Usage (one command, bounded: 10 to 35 s per step, about 12 minutes in all)::

    python loadtests/bench/locust_users.py [--users 2000,4000,8000,10000,12000,14000,16000]
                                           [--seconds 8] [--modes idle,1/s]
                                           [--clients wssync,websocket-client]

For each client, mode and user count it starts a wssync echo server (reactor mode,
pinned to CPU 0) and one headless Locust process (pinned to CPU 1) running that
many users of one class:

- ``wssync``: ``wssync.locust.WebSocketUser`` (``self.connect``, ``ws.request``);
- ``websocket-client``: the common hand-written recipe, a ``User`` holding
  ``websocket.create_connection(url)``, each task ``send`` + ``recv`` and a
  request event fired by hand.

``idle``: each user connects and then only waits (a no-op task every 30 s).
``1/s``: each user sends one 64-byte message per second and waits for its echo
(``constant_throughput(1)``).  Once the server counts every user connected (at
most 20 s after the spawn; ``ready s`` is when, from Locust's start) and a
settling second has passed, the script measures for ``--seconds``: the server's own count of
open WebSockets and of echoed messages (so the rate is the server's, not
Locust's), the Locust process's CPU share of its core and RSS, Locust's failures
and p95.  A step *holds* when every user is connected, nothing failed, Locust's
CPU stayed under 90 % of its core and (``1/s``) the server echoed at least 95 %
of one message per user per second.  A client's ladder stops at its first step
that does not hold.  The machine's load average is printed with the figures:
on a busy machine they are lower bounds.  Writes JSON to results/.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from typing import Any, Dict, List

import common

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")

SERVER_APP = '''
import itertools
from wssync import App

app = App()
echoed = itertools.count()


@app.websocket("/ws")
def echo(ws, message):
    next(echoed)
    ws.send(message)


@app.route("/count")
def count(request):
    return {"websockets": len(app.server.websockets), "echoed": next(echoed)}
'''

LOCUSTFILE = '''
import os, time
from locust import User, constant, constant_throughput, task

MODE = os.environ["BENCH_MODE"]
CLIENT = os.environ["BENCH_CLIENT"]
PAYLOAD = "x" * 64
WAIT = constant(30) if MODE == "idle" else constant_throughput(1)

if CLIENT == "wssync":
    from wssync.locust import WebSocketUser

    class Bench(WebSocketUser):
        wait_time = WAIT

        def on_start(self):
            self.ws = self.connect("/ws")

        @task
        def echo(self):
            if MODE != "idle":
                self.ws.request(PAYLOAD, name="echo")
else:
    import websocket

    class Bench(User):
        wait_time = WAIT

        def fire(self, name, started, length, exception=None):
            self.environment.events.request.fire(
                request_type="WS", name=name, response_time=(time.perf_counter() - started) * 1000,
                response_length=length, exception=exception, context={})

        def on_start(self):
            started = time.perf_counter()
            self.ws = websocket.create_connection(
                self.host.replace("http://", "ws://") + "/ws", timeout=10)
            self.fire("/ws", started, 0)

        @task
        def echo(self):
            if MODE == "idle":
                return
            started = time.perf_counter()
            try:
                self.ws.send(PAYLOAD)
                reply = self.ws.recv()
            except Exception as exc:
                self.fire("echo", started, 0, exc)
                return
            self.fire("echo", started, len(reply))
'''


def _pinned(cpu: int) -> Any:
    return lambda: common.pin(cpu)


def _count(port: int) -> Dict[str, int]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/count", timeout=10) as answer:
        return dict(json.loads(answer.read()))


def step(workdir: str, client: str, mode: str, users: int, seconds: float) -> Dict[str, Any]:
    port = common.free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "wssync", "--app", "bench_app:app", "--host", "127.0.0.1",
         "--port", str(port), "--no-access-log", "--log-level", "warning"],
        cwd=workdir, preexec_fn=_pinned(0), stdout=subprocess.DEVNULL)
    rate = min(users, 1000)  # users spawned per second
    spawn = users / rate
    run_for = int(spawn + 20 + 1 + seconds + 2) + 1  # Locust is stopped once measured
    out = os.path.join(workdir, f"{client}-{mode}-{users}")
    locust = None
    try:
        if not common.wait_port("127.0.0.1", port, 15):
            raise RuntimeError("the server did not start")
        env = {**os.environ, "BENCH_MODE": mode, "BENCH_CLIENT": client}
        started = time.monotonic()
        locust = subprocess.Popen(
            [sys.executable, "-m", "locust", "-f", os.path.join(workdir, "bench_locustfile.py"),
             "--headless", "--host", f"http://127.0.0.1:{port}", "-u", str(users), "-r",
             str(rate), "-t", f"{run_for}s", "--stop-timeout", "3", "--only-summary",
             "--loglevel", "ERROR", "--csv", out],
            cwd=workdir, env=env, preexec_fn=_pinned(1), stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, text=True)
        # Measure once every user is connected (or the spawn has had 20 s more), and settled.
        time.sleep(spawn)
        while _count(port)["websockets"] < users and time.monotonic() < started + spawn + 20:
            time.sleep(0.25)
        all_in = time.monotonic() - started
        time.sleep(1)
        before, cpu_before, t0 = _count(port), common.cpu_seconds([locust.pid]), time.monotonic()
        time.sleep(seconds)
        after, cpu_after, t1 = _count(port), common.cpu_seconds([locust.pid]), time.monotonic()
        status = common.status_fields([locust.pid])
        locust.send_signal(signal.SIGTERM)  # stops the run; the statistics are written
        _, err = locust.communicate(timeout=60)
    finally:
        for proc in (locust, server):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
    rows = {}
    with open(f"{out}_stats.csv", newline="") as f:
        rows = {r["Name"]: r for r in csv.DictReader(f)}
    total = rows.get("Aggregated", {})
    echo = rows.get("echo", {})
    result = {
        "client": client, "mode": mode, "users": users,
        "connected": min(before["websockets"], after["websockets"]),
        "all_connected_s": all_in,
        "echo_per_s": (after["echoed"] - before["echoed"] - 1) / (t1 - t0),
        "locust_cpu": (cpu_after - cpu_before) / (t1 - t0),
        "locust_rss_mib": status["rss_kib"] / 1024,
        "locust_threads": status["threads"],
        "failures": int(total.get("Failure Count") or 0),
        "p95_ms": float(echo.get("95%") or 0) if echo else None,
        "tracebacks": err.count("Traceback"),
    }
    result["holds"] = (result["connected"] >= users and result["failures"] == 0
                       and result["locust_cpu"] < 0.9 and result["tracebacks"] == 0
                       and (mode == "idle" or result["echo_per_s"] >= 0.95 * users))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", default="2000,4000,8000,10000,12000,14000,16000")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--modes", default="idle,1/s")
    parser.add_argument("--clients", default="wssync,websocket-client")
    args = parser.parse_args()
    common.raise_nofile()
    ladder = [int(n) for n in args.users.split(",")]
    results: List[Dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as workdir:
        with open(os.path.join(workdir, "bench_app.py"), "w") as f:
            f.write(SERVER_APP)
        with open(os.path.join(workdir, "bench_locustfile.py"), "w") as f:
            f.write(LOCUSTFILE)
        print(f"load average before: {os.getloadavg()[0]:.2f} (2 cores here: above ~0.5 "
              "someone else is using the machine, and the figures are lower bounds)")
        print(f"{'client':17} {'mode':5} {'users':>6} {'connected':>9} {'echo/s':>8} "
              f"{'locust CPU':>10} {'RSS MiB':>8} {'KiB/user':>8} {'p95 ms':>7} "
              f"{'fails':>6} {'threads':>7} {'ready s':>7} holds  load")
        for mode in args.modes.split(","):
            for client in args.clients.split(","):
                for users in ladder:
                    r = step(workdir, client, mode, users, args.seconds)
                    r["loadavg"] = os.getloadavg()[0]
                    results.append(r)
                    p95 = "-" if r["p95_ms"] is None else f"{r['p95_ms']:.0f}"
                    # Marginal memory: from the previous step of the same ladder.
                    prev = results[-2] if len(results) > 1 else None
                    same = prev is not None and (prev["client"], prev["mode"]) == (client, mode)
                    per_user = ((r["locust_rss_mib"] - prev["locust_rss_mib"]) * 1024
                                / (users - prev["users"])) if same and prev else None
                    r["kib_per_user"] = per_user
                    marginal = "-" if per_user is None else f"{per_user:.1f}"
                    print(f"{client:17} {mode:5} {users:>6} {r['connected']:>9} "
                          f"{r['echo_per_s']:>8.0f} {r['locust_cpu']:>9.0%} "
                          f"{r['locust_rss_mib']:>8.1f} "
                          f"{marginal:>8} {p95:>7} {r['failures']:>6} "
                          f"{r['locust_threads']:>7} {r['all_connected_s']:>7.1f} "
                          f"{'yes' if r['holds'] else 'NO':5} "
                          f"{r['loadavg']:.2f}", flush=True)
                    if not r["holds"]:
                        break
    print("\nmost users held by one Locust process (the last step that held):")
    for mode in args.modes.split(","):
        for client in args.clients.split(","):
            held = [r["users"] for r in results
                    if r["client"] == client and r["mode"] == mode and r["holds"]]
            print(f"  {client:17} {mode:5} {max(held) if held else 0:>6}"
                  + ("" if len(held) < len(ladder) else "  (every step held: try more)"))
    os.makedirs(RESULTS, exist_ok=True)
    path = os.path.join(RESULTS, f"locust_users-{time.strftime('%Y%m%d-%H%M%S')}.json")
    with open(path, "w") as f:
        json.dump({"argv": sys.argv, "results": results}, f, indent=1)
    print(f"written: {path}")


if __name__ == "__main__":
    main()
