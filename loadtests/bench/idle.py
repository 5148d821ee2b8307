"""Idle connections: memory and threads per held WebSocket, and latency beside them.

Usage::

    python loadtests/bench/idle.py --connections 19000 [--server wssync] [--probes 200] [--tls]

Starts the server (pinned to CPU 0), reads its VmRSS and thread count, opens
``--connections`` WebSocket connections from holder processes on CPU 1 (each
holds at most 5000 sockets and uses its own 127.0.0.x source address),
waits for them to settle, reads RSS and threads again and reports KiB per
connection.  With the connections held it measures ``--probes`` sequential
keep-alive HTTP GETs (servers with HTTP) and as many WebSocket echo round trips
on a fresh connection, p50/p99, and the same before opening them.  It also
records the server's CPU while merely holding them.  RLIMIT_NOFILE is raised
to the hard limit here, and so in the server and the holders too.

With ``--tls`` (run.py's ``idle-tls``) the server gets a self-signed certificate
(made with ``openssl`` in a temporary directory) and everything is HTTPS / WSS:
each held connection did a full TLS handshake, so its memory includes the
server's TLS state for it.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional

import common
import servers
from holders import HolderPool


def _lat(values: List[float]) -> Dict[str, float]:
    return {"p50_ms": round(common.percentile(values, 50) * 1000, 3),
            "p99_ms": round(common.percentile(values, 99) * 1000, 3),
            "max_ms": round(max(values) * 1000, 3)}


def probe(server: servers.ServerProcess, count: int) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    try:
        if server.spec.has_http:
            out["http"] = _lat(common.http_latencies(server.host, server.port, count,
                                                     ssl_context=server.ssl_context))
    except (OSError, ConnectionError) as exc:
        out["http_error"] = repr(exc)
    try:
        out["ws"] = _lat(common.ws_echo_latencies(server.host, server.port,
                                                  server.spec.ws_path, count,
                                                  ssl_context=server.ssl_context))
    except (OSError, ConnectionError) as exc:
        out["ws_error"] = repr(exc)
    return out


def run_idle(spec: servers.ServerSpec, connections: int, log_path: str, *, probes: int = 200,
             settle: float = 2.0, hold: float = 3.0, python: str = sys.executable,
             verbose: bool = True, tls: Optional[servers.TlsFiles] = None) -> Dict[str, Any]:
    """One idle measurement of one server (started and stopped here); with ``tls``
    (certificate and key files) over HTTPS / WSS."""
    common.raise_nofile()
    target = connections if spec.idle_cap is None else min(connections, spec.idle_cap)
    result: Dict[str, Any] = {"server": spec.name, "requested": connections, "target": target,
                              "tls": tls is not None}
    server = servers.ServerProcess(spec, log_path, python=python, tls=tls)
    pool: Optional[HolderPool] = None
    try:
        server.wait_ready()
        result["tls_session"] = server.tls_session
        time.sleep(0.5)
        before = server.status()
        result["before"] = before
        result["latency_before"] = probe(server, probes)
        t0 = time.monotonic()
        pool = HolderPool(server.host, server.port, spec.ws_path, target,
                          ssl_context=server.ssl_context)
        opened = pool.wait_opened()
        result["open_seconds"] = round(time.monotonic() - t0, 2)
        result["opened"] = opened["opened"]
        result["open_failures"] = opened["failures"]
        time.sleep(settle)
        after = server.status()
        result["after"] = after
        n = max(1, opened["opened"])
        result["kib_per_conn"] = round((after["rss_kib"] - before["rss_kib"]) / n, 2)
        result["threads_added"] = after["threads"] - before["threads"]
        cpu0 = server.cpu()
        time.sleep(hold)
        result["idle_cpu_pct"] = round(100 * (server.cpu() - cpu0) / hold, 2)
        result["latency_loaded"] = probe(server, probes)
        stats = pool.stats()
        result["still_open"] = stats["open"]
        result["dropped"] = stats["closed"]
        result["pings_answered"] = stats["pings"]
        result["server_alive"] = server.alive()
        closing = pool.close()
        pool = None
        result["close_seconds"] = round(closing.get("close_seconds", float("nan")), 2)
        result["close_unanswered"] = closing.get("unanswered")
        time.sleep(1.0)
        result["after_close"] = server.status()
        result["server_alive"] = result["server_alive"] and server.alive()
    except Exception as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        if pool is not None:
            pool.close()
        result["stop"] = server.stop()
    if verbose:
        print(format_idle(result), flush=True)
    return result


def format_idle(r: Dict[str, Any]) -> str:
    if "kib_per_conn" not in r:
        return f"idle {r['server']}: failed: {r.get('error')}"
    lat_b, lat_l = r.get("latency_before", {}), r.get("latency_loaded", {})

    def lat(d: Dict[str, Any], key: str) -> str:
        v = d.get(key)
        return f"{v['p50_ms']:.2f}/{v['p99_ms']:.2f} ms" if v else "-"

    return (f"idle{' (TLS)' if r.get('tls') else ''} {r['server']}: "
            f"{r['opened']}/{r['target']} conns in {r['open_seconds']} s, "
            f"RSS {r['before']['rss_kib'] / 1024:.1f} -> {r['after']['rss_kib'] / 1024:.1f} MiB "
            f"= {r['kib_per_conn']:.2f} KiB/conn, threads {r['before']['threads']} -> "
            f"{r['after']['threads']}, idle CPU {r['idle_cpu_pct']:.1f}%, "
            f"HTTP p50/p99 {lat(lat_b, 'http')} -> {lat(lat_l, 'http')}, "
            f"WS {lat(lat_b, 'ws')} -> {lat(lat_l, 'ws')}, dropped {r['dropped']}"
            + (f", error {r['error']}" if r.get("error") else ""))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=19000)
    names = [s.name for s in servers.SERVERS if "idle" in s.workloads]
    parser.add_argument("--server", default="wssync", choices=names)
    parser.add_argument("--probes", type=int, default=200)
    parser.add_argument("--tls", action="store_true",
                        help="HTTPS/WSS with a self-signed certificate made for the run")
    parser.add_argument("--python", default=sys.executable,
                        help="interpreter that runs the server (default: this one)")
    parser.add_argument("--json", help="also write the result here")
    args = parser.parse_args()
    tls_dir = tempfile.mkdtemp(prefix="wssync-bench-tls-") if args.tls else None
    try:
        tls = common.make_test_cert(tls_dir) if tls_dir else None
        if tls and servers.BY_NAME[args.server].tls_args is None:
            parser.error(f"{args.server} has no TLS set-up")
        return servers.run_standalone(
            parser, args, "idle-tls" if tls else "idle",
            lambda spec, log: run_idle(spec, args.connections, log, probes=args.probes,
                                       python=args.python, tls=tls))
    finally:
        if tls_dir:
            shutil.rmtree(tls_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
