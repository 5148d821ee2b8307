"""Broadcast: one 100-byte message to N connected WebSocket clients, on an HTTP trigger.

Usage::

    python loadtests/bench/broadcast.py --clients 10000 [--server wssync] [--repeats 5]

Starts the server (CPU 0), connects ``--clients`` WebSocket clients from holder
processes (CPU 1), then ``--repeats`` times: resets the holders with the
payload to expect, sends ``GET /broadcast?seq=K`` on a keep-alive connection
and waits until every client received exactly that payload (bounded).  Per
repeat it records

* ``trigger_ms``: the trigger's round trip.  Every app broadcasts inside the
  request handler and answers afterwards, so for these single-threaded servers
  this is the time to encode and hand all N frames to the kernel;
* ``deliver_ms``: trigger sent -> the last client read its message
  (CLOCK_MONOTONIC is shared by all processes);
* ``server_cpu_ms``: the server's on-CPU time from trigger to the last
  delivery, from /proc/PID/task/*/schedstat (ns), and as a cross-check the
  utime+stime ticks of /proc/PID/stat summed over all repeats;
* received / wrong payload / duplicate counts (verification).
"""

from __future__ import annotations

import argparse
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
                  verbose: bool = True) -> Dict[str, Any]:
    common.raise_nofile()
    result: Dict[str, Any] = {"server": spec.name, "clients": clients, "repeats": []}
    server = servers.ServerProcess(spec, log_path, python=python)
    pool: Optional[HolderPool] = None
    conn: Optional[http.client.HTTPConnection] = None
    try:
        server.wait_ready()
        t0 = time.monotonic()
        pool = HolderPool(server.host, server.port, spec.ws_path, clients)
        opened = pool.wait_opened()
        result["open_seconds"] = round(time.monotonic() - t0, 2)
        result["opened"] = opened["opened"]
        result["open_failures"] = opened["failures"]
        if opened["opened"] < clients:
            raise RuntimeError(f"only {opened['opened']}/{clients} clients connected")
        time.sleep(1.0)
        conn = http.client.HTTPConnection(server.host, server.port, timeout=wait)
        ticks0 = server.cpu()
        for seq in range(1, repeats + 1):
            expect = broadcast_message(seq)
            pool.reset(expect)
            time.sleep(0.2)
            cpu0 = server.sched_ns()
            start = time.monotonic()
            conn.request("GET", f"/broadcast?seq={seq}")
            resp = conn.getresponse()
            body = resp.read()
            trigger = time.monotonic() - start
            if resp.status != 200:
                raise RuntimeError(f"trigger answered {resp.status} {body[:60]!r}")
            stats = pool.wait_all(wait)
            cpu1 = server.sched_ns()
            last = stats["last_rx"]
            rep = {"seq": seq, "trigger_ms": round(trigger * 1000, 2),
                   "deliver_ms": round((last - start) * 1000, 2) if last else None,
                   "first_ms": round((stats["first_rx"] - start) * 1000, 2)
                   if stats["first_rx"] else None,
                   "server_cpu_ms": round((cpu1 - cpu0) / 1e6, 2),
                   "received": stats["conns_got"], "bad": stats["bad"], "dups": stats["dups"],
                   "open": stats["open"]}
            result["repeats"].append(rep)
            if verbose:
                print(f"  broadcast {spec.name} #{seq}: {rep}", flush=True)
            if resp.will_close:
                conn.close()
        ticks = server.cpu() - ticks0
        reps: List[Dict[str, Any]] = result["repeats"]
        delivered = [r["deliver_ms"] for r in reps if r["deliver_ms"] is not None]
        result["summary"] = {
            "deliver_ms": common.median(delivered) if delivered else None,
            "trigger_ms": common.median([r["trigger_ms"] for r in reps]),
            "server_cpu_ms": common.median([r["server_cpu_ms"] for r in reps]),
            "cpu_us_per_recipient": round(1000 * common.median(
                [r["server_cpu_ms"] for r in reps]) / clients, 3),
            "ticks_cpu_ms_per_repeat": round(1000 * ticks / repeats, 1),
            "all_received": all(r["received"] == clients and not r["bad"] and not r["dups"]
                                for r in reps),
            "min_received": min(r["received"] for r in reps),
        }
        result["server_alive"] = server.alive()
    except Exception as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        if conn is not None:
            conn.close()
        if pool is not None:
            closing = pool.close()
            result["close_seconds"] = closing.get("close_seconds")
            result["close_unanswered"] = closing.get("unanswered")
        result["stop"] = server.stop()
    if verbose:
        print(format_broadcast(result), flush=True)
    return result


def format_broadcast(r: Dict[str, Any]) -> str:
    s = r.get("summary")
    if not s:
        return f"broadcast {r['server']}: failed: {r.get('error')}"
    return (f"broadcast {r['server']}: {r['clients']} clients, median deliver "
            f"{s['deliver_ms']:.1f} ms, trigger {s['trigger_ms']:.1f} ms, server CPU "
            f"{s['server_cpu_ms']:.1f} ms ({s['cpu_us_per_recipient']:.2f} us/recipient; ticks "
            f"{s['ticks_cpu_ms_per_repeat']:.0f} ms), all received: {s['all_received']}"
            + (f", error {r['error']}" if r.get("error") else ""))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=10000)
    names = [s.name for s in servers.SERVERS if "broadcast" in s.workloads]
    parser.add_argument("--server", default="wssync", choices=names)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--json")
    args = parser.parse_args()
    return servers.run_standalone(
        parser, args, "broadcast",
        lambda spec, log: run_broadcast(spec, args.clients, log, repeats=args.repeats,
                                        python=args.python))


if __name__ == "__main__":
    sys.exit(main())
