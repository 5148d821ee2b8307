"""Socket.IO acks: ``call("echo", ...)`` round trips per second and server CPU per ack.

Usage (from the repository root; re-executes itself with the bench venv)::

    python3 loadtests/bench/socketio_acks.py [--clients 50] [--seconds 8] [--rounds 3]
    python3 loadtests/bench/socketio_acks.py --servers sio-wssync-w1,sio-wssync-w2 --procs 2

The Flask-SocketIO app of socketio_idle.py (``apps/socketio_app.py``) under wssync
(reactor mode, ``--threads 8``), gunicorn gthread (``-w 1 --threads 100``) and
gunicorn's gevent-websocket worker, and ``wssync --workers 1`` / ``--workers 2``.
``--clients`` clients of the minimal WebSocket-only client (``socketio_client.py``),
spread over ``--procs`` processes, each call ``echo`` with a 13-character string
and wait for its ack, over and over: ``--warmup`` seconds, then ``--seconds``
measured.  Reported per run: acks/s, the server's CPU (utime + stime of every
process of its tree, /proc) per 1,000 acks, p50/p99 round-trip latency, and the
clients' own CPU (near one core per process they are the limit).  The single-process
servers run pinned to CPU 0 and the clients on CPU 1; the ``--workers`` servers and
their clients run unpinned (a server of two processes is meant to use both cores,
as in run.py's multi-process workloads).  Rounds alternate the servers
(round 1: A, B, C...; round 2: A, B, C...); the summary gives medians and the
medians of same-round ratios.  Results: ``results/socketio_acks-<time>.json``
and ``.txt``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
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

PAYLOAD = json.dumps("Hello, World!")


async def _load(host: str, port: int, clients: int, t_go: float, t0: float,
                t1: float) -> Dict[str, Any]:
    opened = await asyncio.gather(*(sio.sio_connect(host, port, 10.0) for _ in range(clients)),
                                  return_exceptions=True)
    conns = [c for c in opened if isinstance(c, sio.SioClient)]
    failures: Dict[str, int] = {}
    for r in opened:
        if not isinstance(r, sio.SioClient):
            kind = sio.failure_kind(r)
            failures[kind] = failures.get(kind, 0) + 1
    latencies: List[float] = []
    errors: Dict[str, int] = {}
    now = time.monotonic
    cpu: Dict[str, float] = {}

    async def loop(c: sio.SioClient) -> None:
        try:
            while True:
                start = now()
                if start >= t1:
                    return
                answer = await c.call(PAYLOAD)
                end = now()
                if t0 <= start and end <= t1:
                    latencies.append(end - start)
                if answer != f"[{PAYLOAD}]":
                    errors["wrong ack"] = errors.get("wrong ack", 0) + 1
        except Exception as exc:
            kind = type(exc).__name__
            errors[kind] = errors.get(kind, 0) + 1

    async def clock() -> None:
        await asyncio.sleep(max(0.0, t0 - now()))
        cpu["t0"] = sum(os.times()[:2])
        await asyncio.sleep(max(0.0, t1 - now()))
        cpu["t1"] = sum(os.times()[:2])

    await asyncio.sleep(max(0.0, t_go - now()))
    await asyncio.gather(clock(), *(loop(c) for c in conns))
    await asyncio.gather(*(c.close() for c in conns))
    return {"connected": len(conns), "failures": failures, "latencies": latencies,
            "errors": errors, "cpu_s": cpu.get("t1", 0.0) - cpu.get("t0", 0.0)}


def _load_process(cpus: Optional[str], args: tuple, out: Any) -> None:
    if cpus is not None:
        os.sched_setaffinity(0, {int(c) for c in cpus.split(",")})
    try:
        out.send(asyncio.run(_load(*args)))
    except Exception as exc:
        out.send({"error": f"{type(exc).__name__}: {exc}"})


def run_one(spec: servers.ServerSpec, args: argparse.Namespace, log: str,
            unpinned: bool) -> Dict[str, Any]:
    result: Dict[str, Any] = {"server": spec.name, "clients": args.clients,
                              "procs": args.procs, "unpinned": unpinned}
    cpus = common.ALL_CPUS if unpinned else None
    server = servers.ServerProcess(spec, log, cpus=cpus)
    result["command"] = " ".join(server.argv)
    children = []
    try:
        sio.wait_ready(server)
        if unpinned:
            # The port answers once one worker is up: the other may still be importing
            # the app, and would then get none of the clients' connections.
            time.sleep(args.boot)
        result["transports"] = sio.check_transports(server.host, server.port)
        t_go = time.monotonic() + 3.0  # every client connected by then
        t0 = t_go + args.warmup
        t1 = t0 + args.seconds
        ctx = multiprocessing.get_context("fork")
        for i in range(args.procs):
            n = args.clients // args.procs + (1 if i < args.clients % args.procs else 0)
            recv, send = ctx.Pipe(duplex=False)
            proc = ctx.Process(target=_load_process, daemon=True,
                               args=(cpus, (server.host, server.port, n, t_go, t0, t1), send))
            proc.start()
            children.append((proc, recv))
        time.sleep(max(0.0, t0 - time.monotonic()))
        cpu0, split0, ticks0 = server.cpu(), server.cpu_by_process(), common.core_ticks()
        time.sleep(max(0.0, t1 - time.monotonic()))
        cpu1, split1, ticks1 = server.cpu(), server.cpu_by_process(), common.core_ticks()
        parts = []
        for _proc, recv in children:
            if not recv.poll(30):
                raise RuntimeError("a load process gave no result")
            parts.append(recv.recv())
        errs = [p["error"] for p in parts if "error" in p]
        if errs:
            raise RuntimeError("; ".join(errs))
        latencies = [x for p in parts for x in p["latencies"]]
        acks = len(latencies)
        result["connected"] = sum(p["connected"] for p in parts)
        result["failures"] = {k: v for p in parts for k, v in p["failures"].items()}
        result["errors"] = {k: v for p in parts for k, v in p["errors"].items()}
        result["acks"] = acks
        result["rate"] = round(acks / args.seconds, 1)
        result["server_cpu_s"] = round(cpu1 - cpu0, 2)
        result["cpu_ms_per_1000"] = round(1000 * 1000 * (cpu1 - cpu0) / acks, 1) if acks else None
        result["client_cpu_pct"] = [round(100 * p["cpu_s"] / args.seconds) for p in parts]
        # by process (a supervisor first, then its workers): how the tree's CPU splits
        result["server_cpu_by_process"] = {
            pid: round((split1[pid] - split0.get(pid, 0.0)) / args.seconds, 2) for pid in split1}
        # Both cores' busy time, and the part of it neither the server nor the clients
        # used (other processes, interrupts): near 2.0 busy, the machine was the limit.
        busy = sum(common.core_share(ticks0, ticks1, cpu) or 0.0 for cpu in ticks1)
        result["cores_busy"] = round(busy, 2)
        result["other_cores"] = round(busy - (cpu1 - cpu0 + sum(p["cpu_s"] for p in parts))
                                      / args.seconds, 2)
        result["latency"] = sio.lat_ms(latencies)
        result["server_alive"] = server.alive()
    except Exception as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        for proc, _ in children:
            proc.join(15)
            if proc.is_alive():
                proc.kill()
        result["stop"] = server.stop()
    return result


def one_line(r: Dict[str, Any]) -> str:
    if "rate" not in r:
        return f"{r['server']:<15} failed: {r.get('error')}"
    lat = r["latency"] or {}
    return (f"{r['server']:<15} {r['connected']:>3}/{r['clients']:<3} {r['rate']:>9.0f} "
            f"{r['cpu_ms_per_1000']:>10.1f} {lat.get('p50_ms', 0):>7.2f} "
            f"{lat.get('p99_ms', 0):>7.2f}  {'/'.join(map(str, r['client_cpu_pct'])):>8} "
            f"{r['cores_busy']:>6.2f} {r['other_cores']:>6.2f}"
            + (f"  errors {r['errors']}" if r["errors"] else ""))


HEAD = (f"{'server':<15} {'clients':>7} {'acks/s':>9} {'CPU ms/1k':>10} {'p50 ms':>7} "
        f"{'p99 ms':>7}  {'client%':>8} {'busy':>6} {'other':>6}")

# (ours, the one compared with): same-round ratios
PAIRS = [(ours, anchor) for ours in ("sio-wssync", "sio-wssync-t8") for anchor in sio.ANCHORS]
PAIRS.append(("sio-wssync-w2", "sio-wssync-w1"))


def summary(records: List[Dict[str, Any]]) -> str:
    names = list(dict.fromkeys(r["server"] for r in records))
    head = HEAD.replace("clients", "   runs")
    lines = ["medians over rounds:", head, "-" * len(head)]
    for n in names:
        ok = [r for r in records if r["server"] == n and "rate" in r]
        if not ok:
            lines.append(f"{n:<15} no successful run")
            continue
        rate = common.median([r["rate"] for r in ok])
        cpu = common.median([r["cpu_ms_per_1000"] for r in ok])
        p50 = common.median([r["latency"]["p50_ms"] for r in ok])
        p99 = common.median([r["latency"]["p99_ms"] for r in ok])
        client = common.median([sum(r["client_cpu_pct"]) for r in ok])
        busy = common.median([r["cores_busy"] for r in ok])
        other = common.median([r["other_cores"] for r in ok])
        lines.append(f"{n:<15} {len(ok):>7} {rate:>9.0f} {cpu:>10.1f} {p50:>7.2f} "
                     f"{p99:>7.2f}  {client:>8.0f} {busy:>6.2f} {other:>6.2f}")
    lines += ["", "same-round ratios (median; acks/s ours/other, CPU per ack other/ours):"]
    rounds = sorted({r["round"] for r in records})
    for ours, other in PAIRS:
        rates, cpus = [], []
        for rnd in rounds:
            a = next((r for r in records if r["round"] == rnd and r["server"] == ours), None)
            b = next((r for r in records if r["round"] == rnd and r["server"] == other), None)
            if a and b and a.get("rate") and b.get("rate"):
                rates.append(a["rate"] / b["rate"])
                cpus.append(b["cpu_ms_per_1000"] / a["cpu_ms_per_1000"])
        if rates:
            lines.append(f"  {ours} / {other}: acks/s {common.median(rates):.2f}x "
                         f"(rounds: {', '.join(f'{x:.2f}' for x in rates)}), "
                         f"CPU/ack {common.median(cpus):.2f}x")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--procs", type=int, default=1,
                        help="client processes sharing --clients (default: %(default)s)")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--boot", type=float, default=4.0,
                        help="seconds a --workers server gets after its first answer, for "
                             "every worker to be up (default: %(default)s)")
    # sio-gevent-wc differs from sio-gevent past 1,000 connections only
    default = [n for n in sio.PINNED + sio.WORKERS if n != "sio-gevent-wc"]
    parser.add_argument("--servers", default=",".join(default))
    parser.add_argument("--no-reexec", action="store_true",
                        help="run with this interpreter even if the bench venv exists "
                             "(else: $WSSYNC_BENCH_VENV or loadtests/bench/.venv)")
    args = parser.parse_args(argv)
    names = [n for n in args.servers.split(",") if n]
    for n in names:
        if n not in sio.PINNED + sio.WORKERS:
            parser.error(f"unknown server {n!r}; choose from {', '.join(sio.PINNED + sio.WORKERS)}")
    nofile = common.raise_nofile()
    common.pin(common.LOAD_CPU)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = os.path.join(common.RESULTS_DIR, f"socketio_acks-{stamp}")
    meta = {"argv": sys.argv[1:], "started": stamp, "python": sys.version.split()[0],
            "rlimit_nofile": nofile, "server_cpu": common.SERVER_CPU,
            "load_cpu": common.LOAD_CPU, "payload": PAYLOAD,
            "client": "websockets asyncio client, engine.io v4 WebSocket transport only",
            "settings": vars(args)}
    records: List[Dict[str, Any]] = []
    print(HEAD, flush=True)
    for rnd in range(1, args.rounds + 1):
        for n in names:
            spec = servers.BY_NAME[n]
            why = spec.available()
            if why:
                print(f"skipping {n}: {why}", flush=True)
                continue
            log = os.path.join(common.RESULTS_DIR, "logs", f"socketio_acks-{stamp}-r{rnd}-{n}.log")
            rec = run_one(spec, args, log, unpinned=n in sio.WORKERS)
            rec["round"] = rnd
            records.append(rec)
            print(f"r{rnd} " + one_line(rec), flush=True)
            sio.save(base, {"meta": meta, "records": records})
    sio.save(base, {"meta": meta, "records": records}, summary(records))
    return 0


if __name__ == "__main__":
    sys.exit(main())
