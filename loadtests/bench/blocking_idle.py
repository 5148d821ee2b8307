"""Idle blocking-style WebSockets: server memory and threads per connection.

Usage::

    python loadtests/bench/blocking_idle.py [--connections 1000] [--rounds 2]
                                            [--python PY] [--servers a,b,...]

Compares, at ``--connections`` idle WebSockets each (one measurement = idle.py's
``run_idle``: server RSS and threads before and after opening them, from holder
processes on the load core), in alternating rounds:

- ``wssync``: callback style (``@app.websocket``), the reference;
- ``wssync-blocking``: ``@app.websocket(..., blocking=True)``, a thread per connection;
- ``wssync-blocking-256k``: the same with ``threading.stack_size(256 KiB)``;
- ``wssync-flask-sock``: a flask-sock app with ``from wssync.flask import Sock``;
- ``gunicorn-flask-sock``: the same app with flask-sock itself under gunicorn gthread
  (1 worker, one thread per WebSocket: ``--threads`` = connections + 10).

The servers run under ``--python`` (which needs wssync, flask, flask-sock and gunicorn:
the bench virtualenv after ``run.py --install``), bounded in time by the connection
count.  Prints one line per measurement and the medians; writes JSON to results/.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any, Callable, Dict, List

import common
import servers
from idle import run_idle


def _wssync_app(app: str) -> Callable[[str, int], List[str]]:
    return lambda host, port: ["-m", "wssync", "--app", app, "--host", host, "--port",
                               str(port), "--no-access-log", "--log-level", "warning",
                               "--max-blocking-websockets", "100000"]


def specs(connections: int) -> Dict[str, servers.ServerSpec]:
    idle = frozenset({servers.IDLE})
    gunicorn_threads = str(connections + 10)
    return {
        "wssync": servers.BY_NAME["wssync"],
        "wssync-blocking": servers.ServerSpec(
            "wssync-blocking", "wssync, blocking-style handler", idle, ["wssync"],
            _wssync_app("wssync_blocking_app:app")),
        "wssync-blocking-256k": servers.ServerSpec(
            "wssync-blocking-256k", "wssync, blocking-style handler, 256 KiB stacks", idle,
            ["wssync"], _wssync_app("wssync_blocking_app:app")),
        "wssync-flask-sock": servers.ServerSpec(
            "wssync-flask-sock", "flask-sock app on wssync.flask.Sock", idle,
            ["wssync", "flask"], _wssync_app("flask_sock_app:app")),
        "gunicorn-flask-sock": servers.ServerSpec(
            "gunicorn-flask-sock", f"flask-sock under gunicorn gthread, 1 worker, "
            f"{gunicorn_threads} threads", idle, ["gunicorn", "flask_sock"],
            lambda host, port: ["-m", "gunicorn", "-k", "gthread", "-w", "1", "--threads",
                                gunicorn_threads, "-b", f"{host}:{port}", "--log-level",
                                "warning", "flask_sock_app:app"]),
    }


ENVIRONMENT: Dict[str, Dict[str, str]] = {
    "wssync-blocking-256k": {"WSSYNC_BENCH_STACK_KIB": "256"},
    "wssync-flask-sock": {"SOCK": "wssync"},
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--servers", default="wssync,wssync-blocking,wssync-blocking-256k,"
                                             "wssync-flask-sock,gunicorn-flask-sock")
    args = parser.parse_args()
    table = specs(args.connections)
    names = args.servers.split(",")
    for name in names:
        if name not in table:
            parser.error(f"unknown server {name!r}: {', '.join(table)}")
    common.pin(common.LOAD_CPU)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    results: Dict[str, List[Dict[str, Any]]] = {name: [] for name in names}
    for round_no in range(args.rounds):
        # Alternate the order so drift on a shared machine does not favour one server.
        for name in names if round_no % 2 == 0 else list(reversed(names)):
            # The server process inherits these (read by the bench apps).
            os.environ.update(ENVIRONMENT.get(name, {}))
            for key in {k for env in ENVIRONMENT.values() for k in env} - set(
                    ENVIRONMENT.get(name, {})):
                os.environ.pop(key, None)
            log = os.path.join(common.RESULTS_DIR, "logs",
                               f"blocking-idle-{stamp}-{name}-{round_no}.log")
            results[name].append(run_idle(table[name], args.connections, log, probes=50,
                                          python=args.python))
    print("\nmedians over rounds:")
    summary: Dict[str, Dict[str, Any]] = {}
    for name in names:
        ok = [r for r in results[name] if "kib_per_conn" in r]
        if not ok:
            print(f"  {name}: no successful round")
            continue
        summary[name] = {
            "kib_per_conn": common.median([r["kib_per_conn"] for r in ok]),
            "threads_added": common.median([r["threads_added"] for r in ok]),
            "opened": common.median([r["opened"] for r in ok]),
        }
        s = summary[name]
        print(f"  {name:22s} {s['kib_per_conn']:8.2f} KiB/conn  threads +{s['threads_added']:.0f}"
              f"  ({s['opened']:.0f} opened)")
    out = os.path.join(common.RESULTS_DIR, f"blocking-idle-{stamp}.json")
    os.makedirs(common.RESULTS_DIR, exist_ok=True)
    with open(out, "w") as f:
        json.dump({"connections": args.connections, "summary": summary, "runs": results}, f,
                  indent=2)
    print(f"written to {out}")
    return 0 if len(summary) == len(names) else 1


if __name__ == "__main__":
    sys.exit(main())
