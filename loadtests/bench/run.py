"""wssync benchmark suite: wssync against established Python servers, same apps, same load.

On a fresh Linux machine (2+ CPUs, Python 3.9+, ``wrk`` and ``taskset`` installed,
e.g. ``apt-get install wrk util-linux``), from the repository root::

    python3 loadtests/bench/run.py --install            # venv + wssync (editable) + anchors
    python3 loadtests/bench/run.py                       # plain workloads, 5 rounds of 8 s
    python3 loadtests/bench/run.py --only tls            # the TLS workloads
    python3 loadtests/bench/run.py --only workers        # several processes (--workers 2)
    python3 loadtests/bench/run.py --only threads        # WSGI on 8 threads: flask, wsgi
    python3 loadtests/bench/run.py --rounds 3 --seconds 5 --only http,ws13 \
        --servers wssync,uvicorn,tornado
    python3 loadtests/bench/run.py --report loadtests/bench/results/bench-<time>.json
    git worktree add /tmp/before HEAD~5 && (cd /tmp/before && python3 setup.py build_ext -i)
    python3 loadtests/bench/run.py --baseline /tmp/before --servers wssync,uvicorn
    python3 loadtests/bench/socketio_idle.py             # 5,000 idle Socket.IO clients
    python3 loadtests/bench/socketio_acks.py --rounds 5  # Socket.IO acks/s, --workers 2

``--install`` creates the bench virtualenv (``--venv``, default
``loadtests/bench/.venv``, git-ignored as ``.venv/``) and pip-installs this
project in editable mode plus the anchors: waitress, gunicorn,
uvicorn[standard] (httptools, uvloop, websockets), tornado, websockets,
matplotlib, Locust (for ``mixed.py``), and Flask-SocketIO with gevent-websocket
(for ``socketio_idle.py`` and ``socketio_acks.py``: one Flask-SocketIO app under
wssync, gunicorn gthread and gunicorn's gevent-websocket worker).  Later runs
re-execute themselves with that venv's interpreter (``--no-reexec`` to use the
current one); servers whose packages are missing are skipped with a note.

What runs (every server is started fresh for every measurement, pinned to CPU 0
with ``taskset -c 0``; wrk, the Python load generators and this script run on
CPU 1; RLIMIT_NOFILE is raised to the hard limit for all of them):

``http``
    ``wrk -t1 -c50 -d{seconds}s --latency`` against ``GET /`` ("Hello, World!",
    text/plain), after a 1 s warm-up; requests/s from wrk, and the server's CPU
    (utime+stime of its process tree from /proc/PID/stat) per request.
``ws13`` / ``ws16k``
    WebSocket echo with ``wsload.py``: 50 connections, 13-byte text or 16 KiB
    binary messages, ``--pipeline13`` / ``--pipeline16k`` messages in flight per
    connection, 1 s warm-up then ``{seconds}`` measured; msg/s and server CPU
    per message.  13-byte messages default to one in flight: each connection
    waits for its echo, as an interactive client does (deeper pipelines let a
    thread-per-connection server read many messages per thread switch, which
    hides its per-message cost: ``--pipeline13 8`` measures that batched case).
    The generator's own CPU share is recorded: near 100% of its core it would
    be the bottleneck (then raise the pipeline or ``--gen-procs`` on a machine
    with more cores).
``idle``
    ``idle.py``: ``--idle-connections`` held WebSockets; server KiB and threads
    per connection, and HTTP / WebSocket latency (p50/p99 of 200 sequential
    requests) beside them.  The thread-per-connection websockets-sync server is
    capped at 2,000 connections (3 threads each).
``broadcast``
    ``broadcast.py``: ``--broadcast-clients`` clients, ``GET /broadcast`` makes the
    server send one 100-byte message to all; time until handed to the kernel
    (trigger round trip) and until the last client read it, server CPU, and a
    check that every client got exactly the right payload.

The TLS workloads (not run by default: ``--only tls`` selects all three,
``--only all`` plain, TLS and workers, or name them, e.g. ``--only http,https``) serve
the same apps over TLS with one self-signed certificate, made once per run with
the ``openssl`` command (ECDSA P-256, subjectAltName IP:127.0.0.1) in a
temporary directory removed at the end.  Every server gets the same files
(wssync ``--certfile/--keyfile``, uvicorn ``--ssl-certfile/--ssl-keyfile``,
gunicorn ``--certfile/--keyfile``, the other apps an ``ssl.SSLContext``); the
TLS version and cipher each one negotiated are in the JSON and the summary.
Handshakes happen before the measured window (keep-alive connections); the
Python clients check the certificate, wrk does not check it.

``https``
    As ``http``, with wrk against ``https://127.0.0.1:PORT/``.  Servers: wssync
    (both modes), gunicorn gthread, uvicorn (asyncio and uvloop), tornado.
``wss13``
    As ``ws13`` over TLS (``wsload.py`` with ``ssl.SSLSocket``s: 50
    connections, ``--pipeline13`` in flight).  Servers: wssync reactor,
    uvicorn, tornado, websockets asyncio and sync.
``idle-tls``
    As ``idle`` with ``--idle-tls-connections`` (default 5,000) WSS connections,
    the probes over HTTPS / WSS: KiB per connection includes the server's TLS
    state (asyncio's TLS layer alone keeps a 256 KiB buffer per connection, so
    19,000 would need gigabytes per anchor).  Same servers as ``wss13``.

The WSGI thread-pool workloads (not run by default: ``--only threads``) serve one app
from one pinned process with 8 threads, wrk as for ``http``: ``flask`` (``apps/flask_app.py``)
and ``wsgi`` (the bare callable of ``apps/wsgi_app.py``), each under wssync
``--threads 8``, gunicorn gthread ``-w 1 --threads 8``, waitress ``threads=8`` and granian
(``--interface wsgi``, one runtime thread, 8 blocking threads).  The ``ceiling`` server
(``apps/ceiling_app.py``, ``http`` and ``ws13``) is a floor, not an anchor: a pure-Python
selectors loop that only finds request heads and echoes unmasked frames.

The multi-process workloads (not run by default: ``--only workers`` selects all
four) compare ``wssync --workers 2`` with the multi-process set-ups users deploy
instead.  A server of two processes is meant to use both cores, so here every server
runs unpinned (``taskset -c`` with all CPUs), single-process ones too, and wrk runs
unpinned with two threads (``--mp-wrk-cpus 1`` pins it to CPU 1 instead): the kernel
shares the two cores between the server and the load, as on a real host.  Recorded
besides the rate: wrk's CPU (``gen``: in cores), the server tree's CPU per request,
the supervisor's (or arbiter's) share, how the workers split the tree's CPU and, for
wssync, how they split the connections (``GET /stats`` midway: the supervisor's
table), and ``other``: CPU both cores gave to anything else (other jobs).

``http-mp``
    ``wrk -t{mp-wrk-threads} -c{mp-connections}`` (default ``-t2 -c100``) against
    ``GET /``: ``wssync --workers 2`` (``wssync-w2``) against gunicorn managing two
    uvicorn workers (``gunicorn -k uvicorn.workers.UvicornWorker -w 2``, httptools and
    uvloop: uvicorn's recommended production set-up) and ``wssync --workers 1``.
``flask-mp``
    The same load against one Flask app (``apps/flask_app.py``) served over WSGI by
    ``wssync --workers 2 --threads 4`` (``wssync-w2t4``), ``gunicorn -k gthread -w 2
    --threads 4`` (``gthread-w2``) and waitress (4 threads, one process).
``balance``
    How ``wssync --workers 2`` spreads connections, each asking ``GET /stats``
    which pid accepted it: ``--balance-sequential`` (200) new connections one after
    another on an idle server; ``--balance-bursts`` (5) bursts of
    ``--balance-connections`` (100) connections started at once, as wrk starts its
    connections; and ``--balance-held`` (1,000) WebSockets opened 64 at a time and
    held (counted by the supervisor's table).  Metric: the busiest worker's share in
    the bursts (0.5 is an even split; secondary: one by one).
``broadcast-mp``
    ``broadcast.py`` against ``wssync --workers 2`` (the clients spread over both
    workers; the trigger reaches one, the relay in the supervisor carries the
    broadcast to the other) and ``--workers 1``: time until the last client has the
    message, p99 over the clients, and the CPU of supervisor and workers.

Servers: wssync reactor (``--threads 0``), wssync thread pool (4 threads, HTTP
only), waitress (4 threads), gunicorn gthread (1 worker, 4 threads), uvicorn
with httptools on asyncio and on uvloop, tornado, and the websockets library's
asyncio and threaded sync servers (WebSocket only).  No client offers
permessage-deflate, so compression is off everywhere.

The servers import wssync from a copy of ``wssync/`` taken when the run starts (in
a temporary directory, removed at the end; its fingerprint, the git HEAD and
whether the optional C masking accelerator was in use are in the JSON), so edits
to the working tree during a run cannot mix two versions; ``--no-snapshot``
serves the live tree instead.

For the TLS targets (wssync against uvicorn on ``https``, against the websockets
asyncio server on ``wss13``, and both servers' memory on ``idle-tls``)::

    python3 loadtests/bench/run.py --only tls \
        --servers wssync,wssync-threads,uvicorn,gunicorn-gthread,websockets

``--baseline DIR`` adds ``wssync-before`` (and ``wssync-threads-before``), the same
servers importing wssync from another checkout, so a change is measured against the
code before it in the same rounds (wssync/wssync-before appears among the ratios).

Rounds alternate servers (round 1: A, B, C...; round 2: A, B, C...).  At the end
the script prints medians per server and workload and, for every anchor, the
median of the same-round ratios wssync/anchor, and writes
``loadtests/bench/results/bench-<time>.json`` and ``.png`` (plus server logs in
``results/logs/<time>/``).  The results folder is not git-ignored: do not commit it.

Numbers are only comparable within one run on one machine; on a shared machine
watch the ``core0/1 other`` column (CPU time of other processes on the server / load CPU).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import importlib.metadata
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common
import servers
from servers import (
    BALANCE,
    BROADCAST,
    BROADCAST_MP,
    FLASK,
    FLASK_MP,
    HTTP,
    HTTP_MP,
    HTTPS,
    IDLE,
    IDLE_TLS,
    MP_WORKLOADS,
    THREADED_WORKLOADS,
    WS13,
    WS16K,
    WSGI,
    WSS13,
)

DEFAULT_VENV = os.path.join(common.BENCH_DIR, ".venv")
BASELINES = ("wssync", "wssync-threads", "wssync-w2", "wssync-w2t4", "wssync-t8-flask",
             "wssync-t8-wsgi")

# workload -> (primary metric, unit, higher is better, secondary metric, unit, higher better)
METRICS: Dict[str, Tuple[str, str, bool, str, str, bool]] = {
    HTTP: ("rate", "req/s", True, "cpu_us", "server CPU us/req", False),
    WS13: ("rate", "msg/s", True, "cpu_us", "server CPU us/msg", False),
    WS16K: ("rate", "msg/s", True, "cpu_us", "server CPU us/msg", False),
    IDLE: ("kib_per_conn", "KiB/conn", False, "http_p99_ms", "loaded HTTP p99 ms", False),
    BROADCAST: ("deliver_ms", "ms to deliver", False, "cpu_us", "server CPU us/recipient",
                False),
    HTTPS: ("rate", "req/s", True, "cpu_us", "server CPU us/req", False),
    WSS13: ("rate", "msg/s", True, "cpu_us", "server CPU us/msg", False),
    IDLE_TLS: ("kib_per_conn", "KiB/conn", False, "http_p99_ms", "loaded HTTP p99 ms", False),
    HTTP_MP: ("rate", "req/s", True, "cpu_us", "server CPU us/req", False),
    FLASK_MP: ("rate", "req/s", True, "cpu_us", "server CPU us/req", False),
    FLASK: ("rate", "req/s", True, "cpu_us", "server CPU us/req", False),
    WSGI: ("rate", "req/s", True, "cpu_us", "server CPU us/req", False),
    BALANCE: ("burst_max_share", "busiest worker, burst", False, "seq_max_share",
              "busiest worker, one by one", False),
    BROADCAST_MP: ("deliver_ms", "ms to deliver", False, "cpu_us", "server CPU us/recipient",
                   False),
}
RATE_WORKLOADS = (HTTP, HTTPS, WS13, WSS13, WS16K, HTTP_MP, FLASK_MP, FLASK, WSGI)
BROADCAST_WORKLOADS = (BROADCAST, BROADCAST_MP)
IDLE_WORKLOADS = (IDLE, IDLE_TLS)
# --only shorthands
WORKLOAD_GROUPS = {"plain": servers.ALL_WORKLOADS, "tls": servers.TLS_WORKLOADS,
                   "workers": MP_WORKLOADS, "threads": THREADED_WORKLOADS,
                   "all": servers.ALL_WORKLOADS + servers.TLS_WORKLOADS + MP_WORKLOADS
                   + THREADED_WORKLOADS}


# -- install / venv ---------------------------------------------------------------------------


def venv_python(venv: str) -> str:
    return os.path.join(venv, "bin", "python")


def install(venv: str) -> int:
    if not os.path.exists(venv_python(venv)):
        print(f"creating {venv}", flush=True)
        subprocess.run([sys.executable, "-m", "venv", venv], check=True)
    py = venv_python(venv)
    subprocess.run([py, "-m", "pip", "install", "--upgrade", "pip"], check=True)
    # The anchors are the project's ``bench`` extra (setup.cfg).
    subprocess.run([py, "-m", "pip", "install", "-e", f"{common.REPO_DIR}[bench]"], check=True)
    for tool in ("wrk", "taskset"):
        if subprocess.run(["which", tool], capture_output=True).returncode:
            print(f"note: {tool} is not installed (apt-get install wrk util-linux)")
    print(f"installed; run: python3 {os.path.relpath(__file__)} [options]")
    return 0


def maybe_reexec(venv: str, argv: List[str], script: str = __file__) -> None:
    """Run ``script`` again with the bench venv's interpreter, unless already in it."""
    py = venv_python(venv)
    if not os.path.exists(py):
        return
    if os.path.realpath(sys.prefix) == os.path.realpath(venv):
        return
    os.execv(py, [py, os.path.abspath(script), *argv])


# -- the code under test ----------------------------------------------------------------------


def fingerprint(package_dir: str) -> str:
    """sha1 over the package's files (names and contents; a built extension included)."""
    digest = hashlib.sha1()
    for root, dirs, files in os.walk(package_dir):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(files):
            if not name.endswith(".pyc"):
                path = os.path.join(root, name)
                digest.update(os.path.relpath(path, package_dir).encode())
                with open(path, "rb") as f:
                    digest.update(f.read())
    return digest.hexdigest()[:12]


def snapshot_wssync(dest: str) -> str:
    """Copy the working tree's wssync package to ``dest``; servers import it from there."""
    source = os.path.join(common.REPO_DIR, "wssync")
    shutil.copytree(source, os.path.join(dest, "wssync"),
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return fingerprint(os.path.join(dest, "wssync"))


def masking_impl(prefix: List[str]) -> str:
    """Which WebSocket masking the servers' wssync uses: "C" (optional accelerator) or
    "python"."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([*prefix, env.get("PYTHONPATH", "")])
    code = ("import wssync.websocket.frames as f; "
            "print('C' if getattr(f, '_c_apply_mask', None) else 'python')")
    try:
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                             text=True, timeout=30, cwd=common.APPS_DIR)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"unknown ({exc})"
    return out.stdout.strip() or f"unknown ({out.stderr.strip()[-100:]})"


def git_state() -> Dict[str, str]:
    def git(*cmd: str) -> str:
        try:
            return subprocess.run(["git", "-C", common.REPO_DIR, *cmd], capture_output=True,
                                  text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    return {"head": git("log", "-1", "--format=%h %s")[:120],
            "wssync_changes": git("status", "--short", "--", "wssync")}


# -- wrk ----------------------------------------------------------------------------------------

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def _ms(text: str) -> Optional[float]:
    m = re.match(r"([\d.]+)(us|ms|s|m)$", text)
    return float(m.group(1)) * _UNITS[m.group(2)] if m else None


def parse_wrk(out: str) -> Dict[str, Any]:
    res: Dict[str, Any] = {}
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    res["rps"] = float(m.group(1)) if m else None
    m = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", out)
    if m:
        res["requests"] = int(m.group(1))
        res["duration_s"] = (_ms(m.group(2) + m.group(3)) or 0) / 1000
    for q in ("50", "99"):
        m = re.search(rf"^\s+{q}%\s+(\S+)", out, re.M)
        res[f"p{q}_ms"] = _ms(m.group(1)) if m else None
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    res["socket_errors"] = dict(zip(("connect", "read", "write", "timeout"),
                                    map(int, m.groups()))) if m else {}
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    res["non_2xx"] = int(m.group(1)) if m else 0
    return res


def run_wrk(url: str, seconds: float, connections: int, threads: int = 1,
            cpus: Optional[str] = None,
            midway: Optional[Callable[[], None]] = None) -> Tuple[Dict[str, Any], float, str]:
    """wrk on ``cpus`` (default: the load CPU); returns parsed output, wrk's own CPU
    seconds, raw output.  ``midway`` runs halfway through (a probe under load)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.Popen(["taskset", "-c", cpus or str(common.LOAD_CPU), "wrk",
                             f"-t{threads}", f"-c{connections}", f"-d{seconds:g}s", "--latency",
                             url], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        if midway is not None:
            time.sleep(seconds / 2)
            midway()
        out, err = proc.communicate(timeout=seconds + 60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {err.strip()[:200]}")
    return parse_wrk(out), cpu, out


# -- one measurement ------------------------------------------------------------------------------


class Sampler:
    """Server CPU and per-core ticks at the edges of a measured window."""

    def __init__(self, server: servers.ServerProcess) -> None:
        self.server = server
        self.values: Dict[str, Any] = {}

    def start(self) -> None:
        self.values["procs0"] = self.server.cpu_by_process()
        self.values["cpu0"] = self.server.cpu()
        self.values["core0"] = common.core_ticks()
        self.values["t0"] = time.monotonic()

    def end(self) -> None:
        self.values["procs1"] = self.server.cpu_by_process()
        self.values["cpu1"] = self.server.cpu()
        self.values["core1"] = common.core_ticks()
        self.values["t1"] = time.monotonic()

    def fill(self, rec: Dict[str, Any], ops: int) -> None:
        v = self.values
        cpu = v["cpu1"] - v["cpu0"]
        wall = v["t1"] - v["t0"]
        rec["server_cpu_s"] = round(cpu, 3)
        rec["cpu_us"] = round(cpu * 1e6 / ops, 3) if ops else None
        rec["server_share"] = round(cpu / wall, 3) if wall else None
        busy = common.core_share(v["core0"], v["core1"], common.SERVER_CPU, 0)
        procs = common.core_share(v["core0"], v["core1"], common.SERVER_CPU, 2)
        rec["core0_busy"] = round(busy, 3) if busy is not None else None
        # CPU 0 time of processes other than the server (other jobs on a shared machine)
        rec["core0_other"] = round(max(0.0, procs - cpu / wall), 3) if procs is not None \
            and wall else None
        load = common.core_share(v["core0"], v["core1"], common.LOAD_CPU, 2)
        rec["core1_procs"] = round(load, 3) if load is not None else None
        if wall:
            # the process started first (supervisor, arbiter, or the only one), then
            # each of its children: how the tree's CPU is split
            root = self.server.pid
            before, after = v["procs0"], v["procs1"]
            rec["root_share"] = round((after.get(root, 0.0) - before.get(root, 0.0)) / wall, 3)
            children = [after[pid] - before.get(pid, 0.0) for pid in sorted(after)
                        if pid != root]
            total = sum(children)
            rec["worker_split"] = [round(c / total, 3) for c in children] if total else None
            shares = [common.core_share(v["core0"], v["core1"], cpu, 2)
                      for cpu in sorted(v["core0"])]
            rec["cores_procs"] = round(sum(x for x in shares if x is not None), 3)

    @staticmethod
    def other_mp(rec: Dict[str, Any]) -> None:
        """Cores' worth of CPU (all of them together) used by anything but the server
        and the load generator (needs gen_share in cores)."""
        if rec.get("cores_procs") is not None and rec.get("gen_share") is not None:
            rec["other"] = round(max(0.0, rec["cores_procs"] - (rec["server_share"] or 0)
                                     - rec["gen_share"]), 3)

    @staticmethod
    def load_other(rec: Dict[str, Any]) -> None:
        """CPU 1 time used by processes other than the load generator (needs gen_share)."""
        if rec.get("core1_procs") is not None and rec.get("gen_share") is not None:
            rec["core1_other"] = round(max(0.0, rec["core1_procs"] - rec["gen_share"]), 3)


def measure_http(spec: servers.ServerSpec, args: argparse.Namespace, log: str,
                 tls: Optional[servers.TlsFiles] = None, mp: bool = False) -> Dict[str, Any]:
    """``mp``: the multi-process set-up (server and wrk unpinned, see the docstring)."""
    rec: Dict[str, Any] = {}
    server = servers.ServerProcess(spec, log, tls=tls,
                                   cpus=common.ALL_CPUS if mp else None)
    connections = args.mp_connections if mp else args.connections
    wrk_args: Dict[str, Any] = {"threads": args.mp_wrk_threads,
                                "cpus": args.mp_wrk_cpus or common.ALL_CPUS} if mp else {}
    try:
        server.wait_ready()
        rec["tls_session"] = server.tls_session
        url = f"{'https' if tls else 'http'}://{server.host}:{server.port}/"
        run_wrk(url, 1, connections, **wrk_args)  # warm-up
        midway = None
        if mp and spec.stats_path is not None:
            def midway() -> None:
                rec["conn_split"] = cluster_split(server.stats(), "connections")

        sampler = Sampler(server)
        sampler.start()
        parsed, wrk_cpu, raw = run_wrk(url, args.seconds, connections, midway=midway,
                                       **wrk_args)
        sampler.end()
        requests = parsed.get("requests") or 0
        rec.update(rate=parsed["rps"], requests=requests, p50_ms=parsed["p50_ms"],
                   p99_ms=parsed["p99_ms"], socket_errors=parsed["socket_errors"],
                   non_2xx=parsed["non_2xx"])
        sampler.fill(rec, requests)
        duration = parsed.get("duration_s") or args.seconds
        rec["gen_share"] = round(wrk_cpu / duration, 3)
        if mp:
            Sampler.other_mp(rec)
        else:
            Sampler.load_other(rec)
        errors = sum(parsed["socket_errors"].values()) + parsed["non_2xx"]
        rec["errors"] = errors
        if parsed["rps"] is None:
            rec["error"] = "could not parse wrk output: " + raw[-300:]
        rec["server_alive"] = server.alive()
    except Exception as exc:
        rec["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        rec["stop"] = server.stop()
    return rec


def measure_ws(spec: servers.ServerSpec, args: argparse.Namespace, log: str, size: int,
               binary: bool, pipeline: int,
               tls: Optional[servers.TlsFiles] = None) -> Dict[str, Any]:
    import wsload

    rec: Dict[str, Any] = {"pipeline": pipeline, "size": size}
    server = servers.ServerProcess(spec, log, tls=tls)
    try:
        server.wait_ready()
        rec["tls_session"] = server.tls_session
        sampler = Sampler(server)
        res = wsload.run_echo(server.host, server.port, spec.ws_path,
                              connections=args.connections, size=size, binary=binary,
                              pipeline=pipeline, warmup=1.0, seconds=args.seconds,
                              procs=args.gen_procs, on_start=sampler.start,
                              on_end=sampler.end, ssl_context=server.ssl_context)
        rec.update(rate=round(res["msg_per_s"], 1), messages=res["messages"],
                   gen_share=round(res["gen_cpu_share"], 3), closed=res["closed"],
                   gen_errors=res["errors"])
        sampler.fill(rec, res["messages"])
        Sampler.load_other(rec)
        rec["errors"] = res["closed"] + sum(res["errors"].values())
        rec["server_alive"] = server.alive()
    except Exception as exc:
        rec["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        rec["stop"] = server.stop()
    return rec


def measure_idle(spec: servers.ServerSpec, args: argparse.Namespace, log: str,
                 tls: Optional[servers.TlsFiles] = None) -> Dict[str, Any]:
    import idle

    count = args.idle_tls_connections if tls else args.idle_connections
    r = idle.run_idle(spec, count, log, verbose=False, tls=tls)
    rec: Dict[str, Any] = {"detail": r, "tls_session": r.get("tls_session")}
    if "error" in r:
        rec["error"] = r["error"]
    if "kib_per_conn" in r:
        loaded = r.get("latency_loaded", {})
        rec.update(kib_per_conn=r["kib_per_conn"], opened=r["opened"],
                   threads_added=r["threads_added"], open_seconds=r["open_seconds"],
                   idle_cpu_pct=r["idle_cpu_pct"],
                   http_p50_ms=loaded.get("http", {}).get("p50_ms"),
                   http_p99_ms=loaded.get("http", {}).get("p99_ms"),
                   ws_p50_ms=loaded.get("ws", {}).get("p50_ms"),
                   ws_p99_ms=loaded.get("ws", {}).get("p99_ms"),
                   errors=r.get("dropped", 0) + sum(r.get("open_failures", {}).values()))
    rec["stop"] = r.get("stop")
    return rec


def cluster_split(stats: Dict[str, Any], key: str) -> List[int]:
    """Per serving worker, ``key`` from the supervisor's table in ``Server.stats()``."""
    cluster = stats.get("cluster") or {}
    return [w.get(key, 0) for w in cluster.get("workers", []) if w.get("serving")]


def burst_split(host: str, port: int, path: str, count: int,
                timeout: float = 30.0) -> List[int]:
    """Start ``count`` connections at once (every SYN sent before any is accepted), then
    ask each which process accepted it; the number per pid, largest first."""
    socks = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.setblocking(False)
            sock.connect_ex((host, port))
            socks.append(sock)
        request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        answered: Dict[int, int] = {}
        for sock in socks:
            sock.settimeout(timeout)
            sock.sendall(request.encode())
            head, _, body = common.read_to_eof(sock).partition(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(f"{path} answered {head[:40]!r}")
            pid = json.loads(body)["pid"]
            answered[pid] = answered.get(pid, 0) + 1
    finally:
        for sock in socks:
            sock.close()
    return sorted(answered.values(), reverse=True)


def measure_balance(spec: servers.ServerSpec, args: argparse.Namespace,
                    log: str) -> Dict[str, Any]:
    """How connections spread over the workers: one by one on an idle server, then a
    burst of held WebSockets (see the module docstring)."""
    rec: Dict[str, Any] = {}
    server = servers.ServerProcess(spec, log, cpus=common.ALL_CPUS)
    held: List[Any] = []
    try:
        server.wait_ready()
        answered: Dict[int, int] = {}
        for _ in range(args.balance_sequential):
            pid = server.stats()["pid"]  # a new connection each time
            answered[pid] = answered.get(pid, 0) + 1
        seq = sorted(answered.values(), reverse=True)
        rec["seq_split"] = seq
        rec["seq_max_share"] = round(seq[0] / sum(seq), 3)
        bursts = [burst_split(server.host, server.port, spec.stats_path or "/",
                              args.balance_connections) for _ in range(args.balance_bursts)]
        rec["burst_split"] = bursts
        rec["burst_max_share"] = round(common.median([b[0] / sum(b) for b in bursts]), 3)
        count = args.balance_held
        opened, failures = common.open_ws_many(server.host, server.port, spec.ws_path, count,
                                               concurrency=64)
        held = [sock for sock, _ in opened]
        rec["opened"], rec["open_failures"] = len(held), failures
        # The supervisor's table is refreshed every second: wait until it counts them all.
        deadline = time.monotonic() + 15
        split = cluster_split(server.stats(), "websocket")
        while sum(split) < len(held) and time.monotonic() < deadline:
            time.sleep(0.5)
            split = cluster_split(server.stats(), "websocket")
        rec["held_split"] = split
        rec["held_max_share"] = round(max(split) / sum(split), 3) if sum(split) else None
        rec["errors"] = sum(failures.values()) + (0 if sum(split) == len(held) else 1)
        rec["server_alive"] = server.alive()
    except Exception as exc:
        rec["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        for sock in held:
            sock.close()
        rec["stop"] = server.stop()
    return rec


def measure_broadcast(spec: servers.ServerSpec, args: argparse.Namespace,
                      log: str, mp: bool = False) -> Dict[str, Any]:
    import broadcast

    r = broadcast.run_broadcast(spec, args.broadcast_clients, log,
                                repeats=args.broadcast_repeats, verbose=False,
                                cpus=common.ALL_CPUS if mp else None)
    rec: Dict[str, Any] = {"detail": r}
    if "error" in r:
        rec["error"] = r["error"]
    s = r.get("summary")
    if s:
        rec.update(deliver_ms=s["deliver_ms"], p99_ms=s["p99_ms"], trigger_ms=s["trigger_ms"],
                   server_cpu_ms=s["server_cpu_ms"], cpu_us=s["cpu_us_per_recipient"],
                   ticks_cpu_ms=s["ticks_cpu_ms_per_repeat"], all_received=s["all_received"],
                   errors=0 if s["all_received"] else 1)
    rec["stop"] = r.get("stop")
    return rec


def measure(workload: str, spec: servers.ServerSpec, args: argparse.Namespace,
            log: str) -> Dict[str, Any]:
    if workload in (HTTP, FLASK, WSGI):
        return measure_http(spec, args, log)
    if workload == WS13:
        return measure_ws(spec, args, log, 13, False, args.pipeline13)
    if workload == WS16K:
        return measure_ws(spec, args, log, 16384, True, args.pipeline16k)
    if workload == IDLE:
        return measure_idle(spec, args, log)
    if workload == HTTPS:
        return measure_http(spec, args, log, tls=args.tls_files)
    if workload == WSS13:
        return measure_ws(spec, args, log, 13, False, args.pipeline13, tls=args.tls_files)
    if workload == IDLE_TLS:
        return measure_idle(spec, args, log, tls=args.tls_files)
    if workload in (HTTP_MP, FLASK_MP):
        return measure_http(spec, args, log, mp=True)
    if workload == BALANCE:
        return measure_balance(spec, args, log)
    return measure_broadcast(spec, args, log, mp=workload == BROADCAST_MP)


def one_line(rec: Dict[str, Any]) -> str:
    w = rec["workload"]
    head = f"[r{rec['round']}] {w:9} {rec['server']:17}"
    if rec.get("error") and rec.get(METRICS[w][0]) is None:
        return f"{head} FAILED: {rec['error']}"
    parts = []
    if w in (HTTP_MP, FLASK_MP):
        parts.append(f"{rec['rate']:>9.0f} {METRICS[w][1]}  {rec['cpu_us']:7.2f} us/op  "
                     f"server {rec['server_share']:.2f} cores (supervisor "
                     f"{rec.get('root_share')}, workers' CPU split {rec.get('worker_split')}"
                     + (f", connections {rec['conn_split']}" if rec.get("conn_split") else "")
                     + f")  wrk {rec['gen_share']:.2f} cores  other {rec.get('other')} cores  "
                     f"errors {rec['errors']}")
        if rec.get("p99_ms") is not None:
            parts.append(f"p50/p99 {rec['p50_ms']:.2f}/{rec['p99_ms']:.2f} ms")
    elif w == BALANCE:
        parts.append(f"one by one {rec['seq_split']} (busiest {rec['seq_max_share']}), "
                     f"bursts {rec['burst_split']} (busiest {rec['burst_max_share']}), "
                     f"{rec['opened']} held WebSockets {rec['held_split']} (busiest "
                     f"{rec['held_max_share']}), errors {rec['errors']}")
    elif w in RATE_WORKLOADS:
        parts.append(f"{rec['rate']:>9.0f} {METRICS[w][1]}  {rec['cpu_us']:7.2f} us/op  "
                     f"server {100 * rec['server_share']:3.0f}%  gen "
                     f"{100 * rec['gen_share']:3.0f}%  other on core0/1 "
                     f"{100 * (rec['core0_other'] or 0):3.0f}%/"
                     f"{100 * (rec.get('core1_other') or 0):3.0f}%  errors {rec['errors']}")
        if (rec.get("gen_share") or 0) > GEN_BOUND:
            parts.append("GENERATOR MAY BE THE BOTTLENECK")
        if w in (HTTP, HTTPS) and rec.get("p99_ms") is not None:
            parts.append(f"p50/p99 {rec['p50_ms']:.2f}/{rec['p99_ms']:.2f} ms")
    elif w in IDLE_WORKLOADS:
        parts.append(f"{rec['kib_per_conn']:7.2f} KiB/conn ({rec['opened']} conns, threads "
                     f"+{rec['threads_added']}, open {rec['open_seconds']} s), loaded HTTP p99 "
                     f"{rec['http_p99_ms']} ms, WS p99 {rec['ws_p99_ms']} ms, errors "
                     f"{rec['errors']}")
    else:
        parts.append(f"deliver {rec['deliver_ms']:.1f} ms (p99 {rec['p99_ms']:.1f} ms), "
                     f"trigger {rec['trigger_ms']:.1f} ms, "
                     f"server CPU {rec['server_cpu_ms']:.1f} ms ({rec['cpu_us']:.2f} us/recip), "
                     f"all received {rec['all_received']}")
    stop = rec.get("stop") or {}
    if stop.get("crashed"):
        parts.append(f"CRASHED: {stop['crashed']}")
    if stop.get("forced_kill"):
        parts.append("needed SIGKILL to stop")
    if stop.get("log_problems"):
        parts.append(f"log: {stop['log_problems'][0][:100]}")
    if rec.get("error"):
        parts.append(f"error: {rec['error']}")
    if rec.get("tls_session"):
        parts.append(rec["tls_session"])
    return head + " " + "; ".join(parts)


# -- summary --------------------------------------------------------------------------------


def summarize(records: List[Dict[str, Any]], workloads: List[str],
              names: List[str]) -> Dict[str, Any]:
    medians: Dict[str, Dict[str, Dict[str, Any]]] = {}
    ratios: Dict[str, List[Dict[str, Any]]] = {}
    tls_sessions: Dict[str, List[str]] = {}  # server -> TLS version and cipher(s) seen
    for rec in records:
        session = rec.get("tls_session")
        if session and rec["workload"] in workloads:
            seen = tls_sessions.setdefault(rec["server"], [])
            if session not in seen:
                seen.append(session)
    for w in workloads:
        primary, _, _, secondary, _, _ = METRICS[w]
        medians[w] = {}
        by_server: Dict[str, Dict[int, Dict[str, Any]]] = {}
        for rec in records:
            if rec["workload"] == w and rec.get(primary) is not None:
                by_server.setdefault(rec["server"], {})[rec["round"]] = rec
        for name in names:
            runs = list(by_server.get(name, {}).values())
            if not runs:
                continue
            entry: Dict[str, Any] = {"n": len(runs)}
            for key in (primary, secondary, "server_share", "gen_share", "core0_other",
                        "core1_other",
                        "p99_ms", "trigger_ms", "server_cpu_ms", "threads_added", "opened",
                        "ws_p99_ms", "http_p50_ms", "idle_cpu_pct", "root_share", "other",
                        "burst_max_share", "seq_max_share", "held_max_share"):
                values = [r[key] for r in runs if r.get(key) is not None]
                if values:
                    entry[key] = common.median(values)
                    if key == primary:
                        entry["min"], entry["max"] = min(values), max(values)
            entry["errors"] = sum(r.get("errors") or 0 for r in runs)
            for key in ("worker_split", "conn_split", "seq_split", "burst_split", "held_split"):
                splits = [r[key] for r in runs if r.get(key)]
                if splits:  # every round's, as they came (a median hides an outlier)
                    entry[key + "s"] = splits
            medians[w][name] = entry
        ratios[w] = []
        for base in BASELINES:
            if base not in by_server:
                continue
            for name in names:
                if name in BASELINES or name not in by_server:
                    continue
                row: Dict[str, Any] = {"baseline": base, "anchor": name}
                for key in (primary, secondary):
                    per_round = [by_server[base][r][key] / by_server[name][r][key]
                                 for r in by_server[base]
                                 if r in by_server[name]
                                 and by_server[base][r].get(key) is not None
                                 and by_server[name][r].get(key)]
                    if per_round:
                        row[key] = round(common.median(per_round), 3)
                        row[key + "_rounds"] = len(per_round)
                ratios[w].append(row)
    return {"medians": medians, "ratios": ratios, "tls_sessions": tls_sessions}


def _f(v: Any, digits: int = 1) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.{digits}f}"
    return str(v)


GEN_BOUND = 0.9  # a generator above this share of its CPU may be what limits the rate


def _other(e: Dict[str, Any]) -> str:
    return (f"{100 * (e.get('core0_other') or 0):.0f}%/"
            f"{100 * (e.get('core1_other') or 0):.0f}%")


def _bound(e: Dict[str, Any]) -> str:
    return "%!" if (e.get("gen_share") or 0) > GEN_BOUND else "%"


def format_summary(summary: Dict[str, Any], workloads: List[str]) -> str:
    out = []
    med, ratios = summary["medians"], summary["ratios"]
    rate_w = [w for w in workloads if w in RATE_WORKLOADS and w not in MP_WORKLOADS]
    if rate_w:
        out.append("Medians over rounds (throughput workloads)")
        out.append(f"{'workload':9} {'server':17} {'rate/s':>10} {'(min-max)':>19} "
                   f"{'CPU us/op':>9} {'srv CPU':>7} {'gen CPU':>7} {'core0/1 other':>13} "
                   f"{'HTTP p99':>8} {'errors':>6}")
        for w in rate_w:
            for name, e in med.get(w, {}).items():
                mm = f"({e['min']:,.0f}-{e['max']:,.0f})"
                out.append(f"{w:9} {name:17} {e['rate']:>10,.0f} {mm:>19} "
                           f"{_f(e.get('cpu_us'), 2):>9} "
                           f"{_f(100 * e.get('server_share', 0), 0) + '%':>7} "
                           f"{_f(100 * e.get('gen_share', 0), 0) + _bound(e):>7} "
                           f"{_other(e):>13} "
                           f"{_f(e.get('p99_ms'), 2):>8} {e['errors']:>6}")
        out.append(f"(srv/gen CPU: share of one core used by the server / the load generator; "
                   f"'%!' marks a generator above {100 * GEN_BOUND:.0f}%, possibly the "
                   f"bottleneck; core0/1 other: CPU 0 / CPU 1 time used by other processes)")
    for idle_w in IDLE_WORKLOADS:
        if idle_w not in workloads or not med.get(idle_w):
            continue
        out.append("")
        out.append("Idle connections (medians)" if idle_w == IDLE
                   else "Idle TLS connections: WSS, probes over HTTPS / WSS (medians)")
        out.append(f"{'server':17} {'conns':>6} {'KiB/conn':>9} {'threads+':>8} "
                   f"{'idle CPU%':>9} {'HTTP p50/p99 ms':>16} {'WS p99 ms':>9} {'errors':>6}")
        for name, e in med[idle_w].items():
            http = f"{_f(e.get('http_p50_ms'), 2)}/{_f(e.get('http_p99_ms'), 2)}"
            out.append(f"{name:17} {_f(e.get('opened'), 0):>6} {e['kib_per_conn']:>9.2f} "
                       f"{_f(e.get('threads_added'), 0):>8} {_f(e.get('idle_cpu_pct'), 1):>9} "
                       f"{http:>16} {_f(e.get('ws_p99_ms'), 2):>9} {e['errors']:>6}")
    mp_w = [w for w in (HTTP_MP, FLASK_MP) if w in workloads and med.get(w)]
    if mp_w:
        out.append("")
        out.append("Several processes, server and wrk unpinned (medians; CPU in cores)")
        out.append(f"{'workload':9} {'server':19} {'rate/s':>9} {'(min-max)':>17} "
                   f"{'CPU us/op':>9} {'server':>6} {'superv.':>7} {'wrk':>5} {'other':>5} "
                   f"{'p99 ms':>7} {'errors':>6}")
        for w in mp_w:
            for name, e in med[w].items():
                mm = f"({e['min']:,.0f}-{e['max']:,.0f})"
                out.append(f"{w:9} {name:19} {e['rate']:>9,.0f} {mm:>17} "
                           f"{_f(e.get('cpu_us'), 2):>9} {_f(e.get('server_share'), 2):>6} "
                           f"{_f(e.get('root_share'), 2):>7} {_f(e.get('gen_share'), 2):>5} "
                           f"{_f(e.get('other'), 2):>5} {_f(e.get('p99_ms'), 2):>7} "
                           f"{e['errors']:>6}")
        out.append("Workers' share of the tree's CPU / connections per worker (wssync, "
                   "midway), per round:")
        for w in mp_w:
            for name, e in med[w].items():
                if e.get("worker_splits"):
                    out.append(f"  {w:9} {name:19} CPU {e['worker_splits']}"
                               + (f"  connections {e['conn_splits']}"
                                  if e.get("conn_splits") else ""))
    if BALANCE in workloads and med.get(BALANCE):
        out.append("")
        out.append("Balance over the workers (per round; busiest worker's share, median)")
        for name, e in med[BALANCE].items():
            out.append(f"{name:17} one by one {e.get('seq_splits')} (busiest "
                       f"{_f(e.get('seq_max_share'), 3)})")
            out.append(f"{'':17} bursts {e.get('burst_splits')} (busiest "
                       f"{_f(e.get('burst_max_share'), 3)})")
            out.append(f"{'':17} held WebSockets {e.get('held_splits')} (busiest "
                       f"{_f(e.get('held_max_share'), 3)}); errors {e['errors']}")
    for bw in BROADCAST_WORKLOADS:
        if bw not in workloads or not med.get(bw):
            continue
        out.append("")
        out.append("Broadcast of 100 bytes (medians)" + (
            "; servers unpinned" if bw == BROADCAST_MP else ""))
        out.append(f"{'server':17} {'deliver ms':>10} {'p99 ms':>8} {'trigger ms':>10} "
                   f"{'srv CPU ms':>10} {'us/recipient':>12} {'errors':>6}")
        for name, e in med[bw].items():
            out.append(f"{name:17} {e['deliver_ms']:>10.1f} {_f(e.get('p99_ms')):>8} "
                       f"{_f(e.get('trigger_ms')):>10} "
                       f"{_f(e.get('server_cpu_ms')):>10} {_f(e.get('cpu_us'), 2):>12} "
                       f"{e['errors']:>6}")
    sessions = summary.get("tls_sessions") or {}
    if sessions:
        out.append("")
        out.append("TLS negotiated (same certificate for all): " + "; ".join(
            f"{name} {', '.join(seen)}" for name, seen in sessions.items()))
    out.append("")
    out.append("Median of same-round ratios baseline/anchor "
               "(throughput: >1 = baseline faster; CPU, memory, time: <1 = baseline cheaper)")
    for w in workloads:
        primary, unit, _, secondary, unit2, _ = METRICS[w]
        for row in ratios.get(w, []):
            out.append(f"{w:9} {row['baseline']:>14} / {row['anchor']:17} "
                       f"{unit:>14} {_f(row.get(primary), 2):>6}   "
                       f"{unit2:>24} {_f(row.get(secondary), 2):>6}")
    return "\n".join(out)


def _short(v: float) -> str:
    if v != v:  # NaN: no value (e.g. no HTTP on a WebSocket-only server)
        return "n/a"
    return f"{v / 1000:.1f}k" if abs(v) >= 1000 else f"{v:.3g}"


def plot(summary: Dict[str, Any], workloads: List[str], path: str) -> Optional[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed: no chart"
    med = summary["medians"]
    shown = [w for w in workloads if med.get(w)]
    if not shown:
        return "nothing to plot"
    # At least as wide as the title, whatever the number of workloads shown.
    fig, axes = plt.subplots(2, len(shown), figsize=(max(6.0, 4.2 * len(shown)), 7.5),
                             squeeze=False)
    for col, w in enumerate(shown):
        primary, unit, better_hi, secondary, unit2, _ = METRICS[w]
        names = list(med[w])
        colors = ["tab:red" if n.startswith("wssync") else "tab:gray" for n in names]
        for row, (key, label) in enumerate(((primary, unit), (secondary, unit2))):
            ax = axes[row][col]
            raw = [med[w][n].get(key) for n in names]
            values = [v if v is not None else float("nan") for v in raw]
            bars = ax.bar(range(len(names)), [v if v == v else 0 for v in values],
                          color=colors)
            if row == 0:
                lo = [v - med[w][n].get("min", v) for v, n in zip(values, names)]
                hi = [med[w][n].get("max", v) - v for v, n in zip(values, names)]
                ax.errorbar(range(len(names)), values, yerr=[lo, hi], fmt="none", ecolor="k",
                            capsize=3, linewidth=1)
            ax.set_xticks(range(len(names)))
            ax.set_xticklabels(names, rotation=45, ha="right", fontsize=8)
            arrow = "higher is better" if (row == 0 and better_hi) else "lower is better"
            ax.set_title(f"{w}: {label}\n({arrow})", fontsize=9)
            ax.bar_label(bars, labels=[_short(v) for v in values], fontsize=7)
            ax.tick_params(axis="y", labelsize=8)
    fig.suptitle("wssync benchmark\n(medians over rounds; bars on the top row: min-max)",
                 fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.94))  # leave the two title lines their room
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


# -- main --------------------------------------------------------------------------------


def versions() -> Dict[str, str]:
    out = {}
    for dist in ("wssync", "waitress", "gunicorn", "uvicorn", "httptools", "uvloop", "tornado",
                 "websockets", "matplotlib"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    try:
        out["wrk"] = subprocess.run(["wrk", "--version"], capture_output=True,
                                    text=True).stdout.split("\n")[0].strip()
    except OSError:
        pass
    return out


def tls_commands(names: List[str]) -> Dict[str, str]:
    """What each server's command gets for the TLS workloads (CERT and KEY: the run's files)."""
    out = {}
    for n in names:
        tls_args = servers.BY_NAME[n].tls_args
        if tls_args is not None:
            out[n] = " ".join(tls_args("CERT", "KEY"))
    return out


def report(path: str) -> int:
    """Tables and chart again from a results JSON (e.g. after changing the chart code)."""
    with open(path) as f:
        data = json.load(f)
    records = data["records"]
    workloads = [w for w in METRICS if any(r["workload"] == w for r in records)]
    names = list(dict.fromkeys(r["server"] for r in records))
    summary = summarize(records, workloads, names)
    print(format_summary(summary, workloads))
    png = os.path.splitext(path)[0] + ".png"
    problem = plot(summary, workloads, png)
    print(f"chart: {png}" if problem is None else f"chart: {problem}")
    return 0


def parse_args(argv: List[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--install", action="store_true",
                        help="create the bench venv and install wssync and the anchors")
    parser.add_argument("--venv", default=os.environ.get("WSSYNC_BENCH_VENV", DEFAULT_VENV),
                        help="bench virtualenv (default: %(default)s)")
    parser.add_argument("--no-reexec", action="store_true",
                        help="run with this interpreter even if the bench venv exists")
    parser.add_argument("--no-snapshot", action="store_true",
                        help="serve wssync from the working tree, not from a copy taken at "
                             "the start (edits during the run would then mix versions)")
    parser.add_argument("--report", metavar="JSON",
                        help="only print the tables and redraw the chart of an earlier run")
    parser.add_argument("--baseline", metavar="DIR",
                        help="also run every selected wssync server from the checkout in DIR "
                             "(as <name>-before), for before/after ratios in the same rounds")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=8.0,
                        help="measured seconds per throughput run")
    parser.add_argument("--only", default=",".join(servers.ALL_WORKLOADS),
                        help="workloads, comma-separated (default: %(default)s); also "
                             "'tls' for " + ",".join(servers.TLS_WORKLOADS) + ", 'plain' for "
                             "the default ones, 'all' for both")
    parser.add_argument("--servers", default=",".join(s.name for s in servers.SERVERS),
                        help="servers, comma-separated (default: all)")
    parser.add_argument("--connections", type=int, default=50,
                        help="connections for http/https/ws13/wss13/ws16k (default: "
                             "%(default)s)")
    parser.add_argument("--pipeline13", type=int, default=1,
                        help="13-byte messages in flight per connection (default: %(default)s)")
    parser.add_argument("--pipeline16k", type=int, default=4,
                        help="16 KiB messages in flight per connection (default: %(default)s)")
    parser.add_argument("--gen-procs", type=int, default=1,
                        help="WebSocket generator processes, all on CPU 1 (default: 1)")
    parser.add_argument("--idle-connections", type=int, default=19000)
    parser.add_argument("--idle-tls-connections", type=int, default=5000,
                        help="held WSS connections for idle-tls (default: %(default)s; "
                             "asyncio's TLS keeps a 256 KiB buffer per connection)")
    parser.add_argument("--mp-connections", type=int, default=100,
                        help="wrk connections for http-mp/flask-mp (default: %(default)s)")
    parser.add_argument("--mp-wrk-threads", type=int, default=2,
                        help="wrk threads for http-mp/flask-mp (default: %(default)s)")
    parser.add_argument("--mp-wrk-cpus", default=None,
                        help="taskset CPU list for wrk in http-mp/flask-mp (default: all, "
                             "i.e. unpinned like the servers)")
    parser.add_argument("--balance-connections", type=int, default=100,
                        help="connections started at once in each burst of balance (default: "
                             "%(default)s)")
    parser.add_argument("--balance-bursts", type=int, default=5,
                        help="bursts per balance run (default: %(default)s)")
    parser.add_argument("--balance-held", type=int, default=1000,
                        help="WebSockets opened 64 at a time and held for balance (default: "
                             "%(default)s)")
    parser.add_argument("--balance-sequential", type=int, default=200,
                        help="connections opened one by one for balance (default: "
                             "%(default)s)")
    parser.add_argument("--broadcast-clients", type=int, default=10000)
    parser.add_argument("--broadcast-repeats", type=int, default=5)
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.install:
        return install(args.venv)
    if not args.no_reexec:
        maybe_reexec(args.venv, argv)
    if args.report:
        return report(args.report)
    workloads: List[str] = []
    for w in (w.strip() for w in args.only.split(",") if w.strip()):
        for name in WORKLOAD_GROUPS.get(w, (w,)):
            if name not in METRICS:
                sys.exit(f"unknown workload {name!r}; choose from {', '.join(METRICS)} "
                         f"or {', '.join(WORKLOAD_GROUPS)}")
            if name not in workloads:
                workloads.append(name)
    names = [n.strip() for n in args.servers.split(",") if n.strip()]
    for n in names:
        if n not in servers.BY_NAME:
            sys.exit(f"unknown server {n!r}; choose from {', '.join(servers.BY_NAME)}")
    if args.baseline:
        base_dir = os.path.abspath(args.baseline)
        if not os.path.isfile(os.path.join(base_dir, "wssync", "__init__.py")):
            sys.exit(f"--baseline: no wssync package in {base_dir}")
        for n in [n for n in names if n in BASELINES]:
            before = dataclasses.replace(servers.BY_NAME[n], name=f"{n}-before",
                                         description=f"{n} from {base_dir}",
                                         pythonpath=base_dir)
            servers.SERVERS.append(before)
            servers.BY_NAME[before.name] = before
            names.insert(names.index(n) + 1, before.name)
    if (os.cpu_count() or 1) < 2:
        print("warning: fewer than 2 CPUs: server and load generator share one", flush=True)
    skipped = {}
    for n in names:
        why = servers.BY_NAME[n].available()
        if why:
            skipped[n] = why
            print(f"skipping {n}: {why}", flush=True)
    names = [n for n in names if n not in skipped]
    if any(w in workloads for w in (HTTP, HTTPS, HTTP_MP, FLASK_MP)) and \
            subprocess.run(["which", "wrk"], capture_output=True).returncode:
        sys.exit("wrk is not installed (apt-get install wrk); or leave out http/https with "
                 "--only")
    tls_dir: Optional[str] = None
    args.tls_files = None
    if any(w in servers.TLS_WORKLOADS for w in workloads):
        # one certificate for every server of the run, outside the repository
        tls_dir = tempfile.mkdtemp(prefix="wssync-bench-tls-")
        try:
            args.tls_files = common.make_test_cert(tls_dir)
        except RuntimeError as exc:
            shutil.rmtree(tls_dir, ignore_errors=True)
            sys.exit(f"TLS workloads: {exc}")
    nofile = common.raise_nofile()
    common.pin(common.LOAD_CPU)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    os.makedirs(common.RESULTS_DIR, exist_ok=True)
    log_dir = os.path.join(common.RESULTS_DIR, "logs", stamp)
    os.makedirs(log_dir, exist_ok=True)
    code: Dict[str, Any] = {"git": git_state(),
            "working_tree": fingerprint(os.path.join(common.REPO_DIR, "wssync"))}
    snap: Optional[str] = None
    if not args.no_snapshot:
        # outside the repository: linters and test collectors must not see the copy
        snap = tempfile.mkdtemp(prefix="wssync-bench-snapshot-")
        code["snapshot"] = snapshot_wssync(snap)
        servers.PYTHONPATH_PREFIX[:] = [snap]
    code["masking"] = masking_impl(servers.PYTHONPATH_PREFIX)
    json_path = os.path.join(common.RESULTS_DIR, f"bench-{stamp}.json")
    png_path = os.path.join(common.RESULTS_DIR, f"bench-{stamp}.png")
    meta: Dict[str, Any] = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "argv": argv,
            "python": sys.version.split()[0], "executable": sys.executable,
            "platform": platform.platform(), "cpus": os.cpu_count(),
            "loadavg_start": os.getloadavg(), "rlimit_nofile": nofile, "wssync_code": code,
            "versions": versions(), "uvicorn_ws": servers._uvicorn_ws_impl(),
            "server_cpu": common.SERVER_CPU, "load_cpu": common.LOAD_CPU,
            "commands": {n: " ".join(["taskset", "-c", servers.cpus_for(servers.BY_NAME[n], ""),
                                      "python", *servers.BY_NAME[n].argv("127.0.0.1", 0)])
                         for n in names},
            "tls_args": tls_commands(names) if args.tls_files else None,
            "tls_certificate": "self-signed, ECDSA P-256, subjectAltName IP:127.0.0.1 "
                               "(openssl req -x509)" if args.tls_files else None,
            "skipped": skipped, "settings": {k: v for k, v in vars(args).items()
                                             if k not in ("install", "tls_files")}}
    print(f"wssync under test: {code.get('snapshot') or code['working_tree']} "
          f"({'snapshot of' if not args.no_snapshot else 'live'} the working tree; "
          f"HEAD {code['git']['head'][:60]}"
          f"{', uncommitted changes in wssync/' if code['git']['wssync_changes'] else ''}; "
          f"masking: {code['masking']})",
          flush=True)
    print(f"wssync bench: {args.rounds} rounds x {workloads} x {names}; "
          f"{args.seconds:g} s per throughput run; results -> {json_path}", flush=True)
    records: List[Dict[str, Any]] = []
    started = time.monotonic()

    def save(summary: Optional[Dict[str, Any]] = None) -> None:
        with open(json_path, "w") as f:
            json.dump({"meta": meta, "records": records, "summary": summary}, f, indent=1,
                      default=str)

    plan: List[Tuple[int, str, servers.ServerSpec]] = []
    for rnd in range(1, args.rounds + 1):
        for w in workloads:
            for n in names:
                spec = servers.BY_NAME[n]
                if w not in spec.workloads:
                    continue

                plan.append((rnd, w, spec))
    def on_term(_signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt  # unwinds through every finally: servers and helpers stop

    signal.signal(signal.SIGTERM, on_term)
    interrupted = False
    try:
        for rnd, w, spec in plan:
            log = os.path.join(log_dir, f"r{rnd}-{w}-{spec.name}.log")
            rec = measure(w, spec, args, log)
            rec.update(round=rnd, workload=w, server=spec.name, log=log)
            records.append(rec)
            print(one_line(rec), flush=True)
            save()
    except KeyboardInterrupt:
        interrupted = True
        meta["interrupted"] = True
        print("\ninterrupted: summarizing the runs completed so far", flush=True)
    finally:
        if snap is not None:
            shutil.rmtree(snap, ignore_errors=True)
        if tls_dir is not None:
            shutil.rmtree(tls_dir, ignore_errors=True)
    now = fingerprint(os.path.join(common.REPO_DIR, "wssync"))
    if now != code["working_tree"]:
        code["working_tree_at_end"] = now
        print(f"note: wssync/ changed during the run ({code['working_tree']} -> {now}); "
              + ("the servers ran the snapshot taken at the start"
                 if not args.no_snapshot else "results may mix two versions"), flush=True)
    summary = summarize(records, workloads, names)
    meta["elapsed_s"] = round(time.monotonic() - started, 1)
    meta["loadavg_end"] = os.getloadavg()
    save(summary)
    print()
    print(format_summary(summary, workloads))
    problem = plot(summary, workloads, png_path)
    print()
    print(f"results: {json_path}")
    print(f"chart:   {png_path}" if problem is None else f"chart:   {problem}")
    print(f"logs:    {log_dir}")
    print(f"elapsed: {meta['elapsed_s'] / 60:.1f} min")
    return 130 if interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
