"""Idle Socket.IO clients: how many each server holds, its memory per client and its threads.

Usage (from the repository root; re-executes itself with the bench venv)::

    python3 loadtests/bench/socketio_idle.py [--clients 5000] [--servers sio-wssync,...]

The same Flask-SocketIO app (``apps/socketio_app.py``: one ``echo`` event, pings
every 5 s) under wssync (reactor mode and ``--threads 8``), gunicorn's gthread
worker (``-w 1 --threads 100``, Flask-SocketIO's documented threading deployment)
and gunicorn's gevent-websocket worker (gevent mode).  Each server is started
fresh, pinned to CPU 0, with RLIMIT_NOFILE raised to the hard limit; this script
and its clients run on CPU 1.  Per server: python-socketio's client checks that
the default transports (polling, then the upgrade) and websocket-only connect;
then the server's RSS (every process of its tree) and threads; then ``--clients``
clients of the minimal WebSocket-only client (``socketio_client.py``) connect in
batches of ``--batch`` (each handshake bounded by ``--timeout``); after every
client that stayed connected has answered at least one ping (bounded by three
ping intervals) RSS and threads again: KiB per client still connected ("held";
"opened": handshakes that succeeded, some perhaps closed by the server since),
threads added.
Results: ``results/socketio_idle-<time>.json`` and ``.txt``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from typing import Any, Dict, List, Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common
import servers
from run import DEFAULT_VENV, maybe_reexec

if __name__ == "__main__" and "--no-reexec" not in sys.argv:
    # the bench venv has the servers and the clients' libraries
    maybe_reexec(os.environ.get("WSSYNC_BENCH_VENV", DEFAULT_VENV), sys.argv[1:], __file__)

import socketio_client as sio  # needs the bench venv's websockets

PING_INTERVAL = 5.0  # apps/socketio_app.py


async def _hold_and_measure(server: servers.ServerProcess, args: argparse.Namespace,
                            result: Dict[str, Any]) -> None:
    clients, failures, seconds = await sio.open_many(server.host, server.port, args.clients,
                                                     batch=args.batch, timeout=args.timeout)
    result["connected"] = len(clients)
    result["failures"] = failures
    result["open_seconds"] = round(seconds, 1)
    holders = [asyncio.ensure_future(c.hold()) for c in clients]
    try:
        # every connected client through at least one ping cycle (bounded)
        deadline = time.monotonic() + 3 * PING_INTERVAL + 5
        while time.monotonic() < deadline:
            if all(c.pings or not c.open for c in clients):
                break
            await asyncio.sleep(0.5)
        await asyncio.sleep(1.0)
        result["pinged"] = sum(1 for c in clients if c.pings)
        result["still_open"] = sum(1 for c in clients if c.open)
        closes: Dict[str, int] = {}
        for c in clients:
            if not c.open:
                key = f"{c.ws.close_code} {c.ws.close_reason or ''}".strip()
                closes[key] = closes.get(key, 0) + 1
        result["closed_after_handshake"] = closes  # close code (None: no close frame)
        after = server.status()
        result["after"] = after
        n = max(1, result["still_open"])
        result["kib_per_client"] = round((after["rss_kib"] - result["before"]["rss_kib"]) / n, 1)
        result["threads_added"] = after["threads"] - result["before"]["threads"]
        cpu0 = server.cpu()
        await asyncio.sleep(args.hold)
        result["idle_cpu_pct"] = round(100 * (server.cpu() - cpu0) / args.hold, 1)
        result["still_open_end"] = sum(1 for c in clients if c.open)
        result["server_alive"] = server.alive()
    finally:
        await asyncio.gather(*(c.close() for c in clients))
        for h in holders:
            h.cancel()
        await asyncio.gather(*holders, return_exceptions=True)


def run_one(spec: servers.ServerSpec, args: argparse.Namespace, log: str) -> Dict[str, Any]:
    result: Dict[str, Any] = {"server": spec.name, "description": spec.description,
                              "clients": args.clients}
    server = servers.ServerProcess(spec, log)
    result["command"] = " ".join(server.argv)
    try:
        sio.wait_ready(server)
        result["transports"] = sio.check_transports(server.host, server.port)
        time.sleep(0.5)
        result["before"] = server.status()
        asyncio.run(_hold_and_measure(server, args, result))
    except Exception as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        result["stop"] = server.stop()
    return result


def table(results: List[Dict[str, Any]]) -> str:
    head = (f"{'server':<15} {'held':>10} {'opened':>6} {'failed':>16} {'pinged':>7} "
            f"{'RSS MiB':>15} "
            f"{'KiB/client':>10} {'threads':>11} {'idle CPU':>8}  transports")
    lines = [head, "-" * len(head)]
    for r in results:
        if "after" not in r:
            lines.append(f"{r['server']:<15} failed: {r.get('error')}")
            continue
        fails = ",".join(f"{k} {v}" for k, v in r["failures"].items()) or "0"
        tr = " ".join(f"{k}:{'ok' if v.get('ok') else 'FAIL'}"
                      for k, v in r.get("transports", {}).items())
        lines.append(
            f"{r['server']:<15} {r['still_open']:>5}/{r['clients']:<4} {r['connected']:>6} "
            f"{fails:>16} "
            f"{r['pinged']:>7} {r['before']['rss_kib'] / 1024:>6.1f} -> "
            f"{r['after']['rss_kib'] / 1024:>5.1f} {r['kib_per_client']:>10.1f} "
            f"{r['before']['threads']:>4} -> {r['after']['threads']:<4} "
            f"{r['idle_cpu_pct']:>7.1f}%  {tr}")
    return "\n".join(lines)


def goals(results: List[Dict[str, Any]]) -> List[str]:
    by = {r["server"]: r for r in results if "kib_per_client" in r}
    out = []
    for name in ("sio-wssync", "sio-wssync-t8"):
        r = by.get(name)
        if r is None:
            continue
        out.append(f"{name}: every client connected: "
                   f"{'yes' if r['still_open'] == r['clients'] else 'NO'} "
                   f"({r['still_open']}/{r['clients']}); threads added {r['threads_added']}")
        for anchor in sio.ANCHORS:
            a = by.get(anchor)
            if a is not None and r["kib_per_client"] > 0:
                out.append(f"  KiB/client {anchor}/{name} = "
                           f"{a['kib_per_client'] / r['kib_per_client']:.2f}x "
                           f"({a['kib_per_client']} / {r['kib_per_client']})")
    return out


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=5000)
    parser.add_argument("--batch", type=int, default=500,
                        help="handshakes started at once (default: %(default)s)")
    parser.add_argument("--timeout", type=float, default=10.0,
                        help="seconds one client may take to connect (default: %(default)s)")
    parser.add_argument("--hold", type=float, default=3.0,
                        help="seconds the server's idle CPU is read over (default: %(default)s)")
    parser.add_argument("--servers", default=",".join(sio.PINNED))
    parser.add_argument("--no-reexec", action="store_true",
                        help="run with this interpreter even if the bench venv exists "
                             "(else: $WSSYNC_BENCH_VENV or loadtests/bench/.venv)")
    args = parser.parse_args(argv)
    names = [n for n in args.servers.split(",") if n]
    for n in names:
        if n not in servers.BY_NAME or servers.SIO_IDLE not in servers.BY_NAME[n].workloads:
            parser.error(f"unknown server {n!r}; choose from {', '.join(sio.PINNED)}")
    nofile = common.raise_nofile()
    if nofile < args.clients + 100:
        print(f"warning: RLIMIT_NOFILE is {nofile}", flush=True)
    common.pin(common.LOAD_CPU)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = os.path.join(common.RESULTS_DIR, f"socketio_idle-{stamp}")
    results = []
    for n in names:
        spec = servers.BY_NAME[n]
        why = spec.available()
        if why:
            print(f"skipping {n}: {why}", flush=True)
            continue
        print(f"{n}: {spec.description}", flush=True)
        log = os.path.join(common.RESULTS_DIR, "logs", f"socketio_idle-{stamp}-{n}.log")
        results.append(run_one(spec, args, log))
        print(table(results[-1:]).splitlines()[-1], flush=True)
    text = table(results) + "\n\n" + "\n".join(goals(results))
    meta = {"argv": sys.argv[1:], "started": stamp, "python": sys.version.split()[0],
            "rlimit_nofile": nofile, "server_cpu": common.SERVER_CPU,
            "load_cpu": common.LOAD_CPU, "ping_interval_s": PING_INTERVAL,
            "client": "websockets asyncio client, engine.io v4 WebSocket transport only"}
    sio.save(base, {"meta": meta, "results": results}, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
