"""Broadcast: one 100-byte message to N connected WebSocket clients, on an HTTP trigger.

Usage::

    python loadtests/bench/broadcast.py --clients 10000 [--server wssync] [--repeats 5]
    python loadtests/bench/broadcast.py --clients 10000 --redis 2 [--rounds 2]
    python loadtests/bench/broadcast.py --server wssync-w2     # --workers 2, over the relay

``--redis 2`` also runs two separate wssync servers sharing one redis-server
(``--broker``), the clients split over them and the trigger sent to the first,
alternating with the single server in the same run (``run_servers`` takes any
list of listening server processes).

Starts the server (CPU 0), connects ``--clients`` WebSocket clients from holder
processes (CPU 1), then ``--repeats`` times: resets the holders with the
payload to expect, sends ``GET /broadcast?seq=K`` on a keep-alive connection
and waits until every client received exactly that payload (bounded).  Per
repeat it records

* ``trigger_ms``: the trigger's round trip.  Every app broadcasts inside the
  request handler and answers afterwards, so for these single-threaded servers
  this is the time to encode and hand all N frames to the kernel;
* ``deliver_ms``: trigger sent -> the last client read its message
  (CLOCK_MONOTONIC is shared by all processes); ``p50_ms``/``p99_ms`` over the
  clients;
* ``server_cpu_ms``: the server's on-CPU time from trigger to the last
  delivery, from /proc/PID/task/*/schedstat (ns), and as a cross-check the
  utime+stime ticks of /proc/PID/stat summed over all repeats;
* received / wrong payload / duplicate counts (verification).

The multi-process servers (``wssync-w2``: ``--workers 2``, whose trigger reaches
one worker and the relay in the supervisor carries the broadcast to the other;
``wssync-w1``: one process, the figure next to it) run unpinned, as in run.py's
``broadcast-mp`` workload; the clients stay on CPU 1.  Their CPU is that of the
whole process tree (supervisor and workers).
"""

from __future__ import annotations

import argparse
import dataclasses
import http.client
import sys
import time
from typing import Any, Dict, List, Optional

import common
import servers
from holders import HolderPool


def broadcast_message(seq: int) -> bytes:
    """What the apps send for ``seq`` (see apps/*_app.py)."""
    return f"{seq}:".ljust(100, "x")[:100].encode()


def run_broadcast(spec: servers.ServerSpec, clients: int, log_path: str, *, repeats: int = 5,
                  wait: float = 30.0, python: str = sys.executable,
                  verbose: bool = True, cpus: Optional[str] = None) -> Dict[str, Any]:
    """One server (a process, or a supervisor with its workers): every client on its
    port, the trigger too; ``cpus``: where it runs (default: ``common.SERVER_CPU``)."""
    return run_servers(spec.name,
                       [servers.ServerProcess(spec, log_path, python=python, cpus=cpus)],
                       clients, repeats=repeats, wait=wait, verbose=verbose)


def run_redis_broadcast(spec: servers.ServerSpec, clients: int, log_path: str, *,
                        hosts: int = 2, repeats: int = 5, wait: float = 30.0,
                        python: str = sys.executable, verbose: bool = True) -> Dict[str, Any]:
    """``hosts`` separate servers sharing one redis-server (``--broker``), all
    pinned to the server CPU (Redis runs on the load CPU); the clients split over
    them, the broadcast triggered on the first."""
    import redis_server

    redis = redis_server.RedisProcess()
    try:
        with_broker = dataclasses.replace(
            spec, name=f"{spec.name}-redis-x{hosts}",
            argv=lambda host, port: [*spec.argv(host, port), "--broker", redis.url()])
        procs = [servers.ServerProcess(with_broker, log_path.replace(".log", f"-{i}.log"),
                                       python=python) for i in range(hosts)]
        redis_cpu0 = redis.sched_ns()
        result = run_servers(with_broker.name, procs, clients, repeats=repeats, wait=wait,
                             verbose=verbose)
        result["redis_cpu_ms"] = round((redis.sched_ns() - redis_cpu0) / 1e6, 2)
        return result
    finally:
        redis.stop()


def run_servers(name: str, procs: List[servers.ServerProcess], clients: int, *,
                repeats: int = 5, wait: float = 30.0, verbose: bool = True) -> Dict[str, Any]:
    """Clients split evenly over ``procs`` (started, stopped here), the broadcast
    triggered on the first; server CPU summed over all of them.  Any way of
    serving that shares broadcasts between processes (a broker, workers behind
    one port) fits: one entry per listening port."""
    common.raise_nofile()
    result: Dict[str, Any] = {"server": name, "clients": clients, "servers": len(procs),
                              "repeats": []}
    pools: List[HolderPool] = []
    conn: Optional[http.client.HTTPConnection] = None
    trigger = procs[0]
    try:
        for server in procs:
            server.wait_ready()
        t0 = time.monotonic()
        shares = [clients // len(procs) + (1 if i < clients % len(procs) else 0)
                  for i in range(len(procs))]
        for server, share in zip(procs, shares):
            pools.append(HolderPool(server.host, server.port, server.spec.ws_path, share))
        opened = [pool.wait_opened() for pool in pools]
        result["open_seconds"] = round(time.monotonic() - t0, 2)
        result["opened"] = sum(o["opened"] for o in opened)
        result["open_failures"] = [o["failures"] for o in opened]
        if result["opened"] < clients:
            raise RuntimeError(f"only {result['opened']}/{clients} clients connected")
        time.sleep(1.0)
        conn = http.client.HTTPConnection(trigger.host, trigger.port, timeout=wait)
        if len(procs) > 1:
            _warm_up(conn, pools, wait)
        ticks0 = sum(server.cpu() for server in procs)
        for seq in range(1, repeats + 1):
            expect = broadcast_message(seq)
            for pool in pools:
                pool.reset(expect)
            time.sleep(0.2)
            cpu0 = [server.sched_ns() for server in procs]
            start = time.monotonic()
            conn.request("GET", f"/broadcast?seq={seq}")
            resp = conn.getresponse()
            body = resp.read()
            trigger_s = time.monotonic() - start
            if resp.status != 200:
                raise RuntimeError(f"trigger answered {resp.status} {body[:60]!r}")
            stats = _merge([pool.wait_all(wait) for pool in pools])
            cpu = [(server.sched_ns() - before) / 1e6 for server, before in zip(procs, cpu0)]
            last = stats["last_rx"]
            rx = [t - start for t in stats["rx"]]
            rep = {"seq": seq, "trigger_ms": round(trigger_s * 1000, 2),
                   "deliver_ms": round((last - start) * 1000, 2) if last else None,
                   "first_ms": round((stats["first_rx"] - start) * 1000, 2)
                   if stats["first_rx"] else None,
                   "p50_ms": round(common.percentile(rx, 50) * 1000, 2) if rx else None,
                   "p99_ms": round(common.percentile(rx, 99) * 1000, 2) if rx else None,
                   "server_cpu_ms": round(sum(cpu), 2),
                   "cpu_ms_per_server": [round(c, 2) for c in cpu],
                   "received": stats["conns_got"], "bad": stats["bad"], "dups": stats["dups"],
                   "open": stats["open"]}
            result["repeats"].append(rep)
            if verbose:
                print(f"  broadcast {name} #{seq}: {rep}", flush=True)
            if resp.will_close:
                conn.close()
        ticks = sum(server.cpu() for server in procs) - ticks0
        reps: List[Dict[str, Any]] = result["repeats"]
        delivered = [r["deliver_ms"] for r in reps if r["deliver_ms"] is not None]
        result["summary"] = {
            "deliver_ms": common.median(delivered) if delivered else None,
            "p99_ms": common.median([r["p99_ms"] for r in reps if r["p99_ms"] is not None]),
            "trigger_ms": common.median([r["trigger_ms"] for r in reps]),
            "server_cpu_ms": common.median([r["server_cpu_ms"] for r in reps]),
            "cpu_ms_per_server": [common.median([r["cpu_ms_per_server"][i] for r in reps])
                                  for i in range(len(procs))],
            "cpu_us_per_recipient": round(1000 * common.median(
                [r["server_cpu_ms"] for r in reps]) / clients, 3),
            "ticks_cpu_ms_per_repeat": round(1000 * ticks / repeats, 1),
            "all_received": all(r["received"] == clients and not r["bad"] and not r["dups"]
                                for r in reps),
            "min_received": min(r["received"] for r in reps),
        }
        result["server_alive"] = all(server.alive() for server in procs)
    except Exception as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        if conn is not None:
            conn.close()
        closing = [pool.close() for pool in pools]
        result["close_seconds"] = max((c.get("close_seconds") or 0 for c in closing), default=None)
        result["close_unanswered"] = sum(c.get("unanswered") or 0 for c in closing)
        stops = [server.stop() for server in procs]
        result["stop"] = stops[0] if len(stops) == 1 else stops
    if verbose:
        print(format_broadcast(result), flush=True)
    return result


def _merge(stats: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Several pools' wait answers as one."""
    out: Dict[str, Any] = {key: sum(s[key] for s in stats)
                           for key in ("conns_got", "bad", "dups", "open")}
    out["rx"] = [t for s in stats for t in s["rx"]]
    firsts = [s["first_rx"] for s in stats if s["first_rx"] is not None]
    lasts = [s["last_rx"] for s in stats if s["last_rx"] is not None]
    out["first_rx"] = min(firsts) if firsts else None
    out["last_rx"] = max(lasts) if lasts else None
    return out


def _warm_up(conn: http.client.HTTPConnection, pools: List[HolderPool], wait: float) -> None:
    """Broadcast ``seq=0`` until every client of every server has it: the servers
    now share broadcasts (their broker connections are up)."""
    expect = broadcast_message(0)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        for pool in pools:
            pool.reset(expect)
        conn.request("GET", "/broadcast?seq=0")
        conn.getresponse().read()
        got = _merge([pool.wait_all(2.0) for pool in pools])
        if got["conns_got"] == sum(pool.count for pool in pools):
            return
    raise RuntimeError("the servers did not share a broadcast within the wait")


def format_broadcast(r: Dict[str, Any]) -> str:
    s = r.get("summary")
    if not s:
        return f"broadcast {r['server']}: failed: {r.get('error')}"
    return (f"broadcast {r['server']}: {r['clients']} clients, median deliver "
            f"{s['deliver_ms']:.1f} ms (p99 client {s['p99_ms']:.1f} ms), trigger "
            f"{s['trigger_ms']:.1f} ms, server CPU "
            f"{s['server_cpu_ms']:.1f} ms ({s['cpu_us_per_recipient']:.2f} us/recipient; ticks "
            f"{s['ticks_cpu_ms_per_repeat']:.0f} ms), all received: {s['all_received']}"
            + (f", error {r['error']}" if r.get("error") else ""))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=10000)
    names = [s.name for s in servers.SERVERS
             if s.workloads & {servers.BROADCAST, servers.BROADCAST_MP}]
    parser.add_argument("--server", default="wssync", choices=names)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--redis", type=int, default=0, metavar="HOSTS",
                        help="also HOSTS separate wssync servers sharing one redis-server "
                             "(clients split over them), alternating with the single "
                             "server in the same run")
    parser.add_argument("--rounds", type=int, default=1,
                        help="with --redis: alternate single and shared this many times")
    parser.add_argument("--json")
    args = parser.parse_args()
    if not args.redis:
        return servers.run_standalone(
            parser, args, "broadcast",
            lambda spec, log: run_broadcast(spec, args.clients, log, repeats=args.repeats,
                                            python=args.python,
                                            cpus=servers.cpus_for(spec, servers.BROADCAST)))
    import redis_server

    why = redis_server.available()
    if why:
        parser.error(why)

    def alternate(spec: servers.ServerSpec, log: str) -> Dict[str, Any]:
        results: Dict[str, Any] = {"single": [], "redis": []}
        for n in range(args.rounds):
            results["single"].append(run_broadcast(
                spec, args.clients, log.replace(".log", f"-r{n}-single.log"),
                repeats=args.repeats, python=args.python))
            results["redis"].append(run_redis_broadcast(
                spec, args.clients, log.replace(".log", f"-r{n}-redis.log"), hosts=args.redis,
                repeats=args.repeats, python=args.python))
            results["redis"][-1]["note"] = "servers share CPU 0; redis-server on CPU 1"
        for kind in ("single", "redis"):
            for r in results[kind]:
                print(format_broadcast(r) + (f", redis-server CPU {r['redis_cpu_ms']} ms"
                                             if "redis_cpu_ms" in r else ""))
        failed = [r for kind in results.values() for r in kind if "error" in r]
        if failed:
            results["error"] = failed[0]["error"]
        return results

    return servers.run_standalone(parser, args, "broadcast", alternate)


if __name__ == "__main__":
    sys.exit(main())
