"""Mixed-load knee: the Locust scenario of ``loadtests/locustfile.py`` against wssync and uvicorn.

From the repository root, after ``python3 loadtests/bench/run.py --install`` (the
bench venv, with Locust)::

    python3 loadtests/bench/mixed.py                                  # 100..900 users, 20 s steps
    python3 loadtests/bench/mixed.py --users 50,100,200,400 --seconds 20 --rounds 2 \
        --servers wssync,uvicorn-uvloop,uvicorn
    python3 loadtests/bench/mixed.py --report loadtests/bench/results/mixed-<time>.json

Servers (each started fresh for every step, pinned to CPU 0 with ``taskset``):

``wssync``
    ``python -m wssync --app target_app:app --threads 0`` (reactor mode) serving
    ``loadtests/target_app.py``.
``uvicorn-uvloop`` / ``uvicorn``
    uvicorn ``--http httptools`` on uvloop / on asyncio, with the newest
    WebSocket implementation it has (``servers._uvicorn_ws_impl``), serving
    ``apps/asgi_target.py``, a raw ASGI twin of ``target_app.py``.

Every server is checked before measuring (same page, 201 on create, 404 JSON on
an unknown item, a ``/ws`` echo); wssync (server and Locust's WebSocket client)
is imported from a copy of ``wssync/`` taken at the start, as ``run.py`` does.

One step = one server at one user count: Locust runs headless on CPU 1
(``locust -f loadtests/locustfile.py --headless -u U -r U/ramp --reset-stats
--csv ... --json-file ... --only-summary``) with ``WAIT_MIN``/``WAIT_MAX`` small
enough that the offered load grows with the users.  When spawning completes
(Locust logs ``Resetting stats``) the measured window opens; ``--seconds`` later
Locust gets SIGTERM and writes its final stats.  So the ramp and the start-up
are left out of every number.  Rounds alternate the servers at every user count
(the order rotates each round); with several rounds each step is the median.
The scenario's other settings (``HTTP_WEIGHT``, ``ECHO_WEIGHT``, ``CHAT_WEIGHT``,
``WS_MESSAGE_SIZE``) pass through from the environment and are recorded.

Recorded per step:

* total RPS: all rows, as Locust's "Aggregated" (HTTP, echo, broadcast, chat
  send, and the few connects that land after the reset);
* HTTP RPS and p95: the GET and POST rows together;
* WS RPS and p95: the ``WS echo`` and ``WS broadcast`` rows together (``chat
  send`` only times a local send; ``connect`` happens during the ramp).  Every
  chat message is one broadcast row per chat user in the room, so WS RPS counts
  deliveries, not messages sent;
* failures (any row);
* server CPU: utime+stime of the server's process tree over the window /
  wall time (1.0 = its whole core), and Locust's own share likewise.  A
  Locust share near 1.0 means the load generator, not the server, set the pace
  (the step is marked LOCUST-BOUND, as it is when Locust warns about its CPU);
* server CPU per request (us/req): server CPU seconds / Locust events in the
  window, the servers' cost per unit of the same mix, meaningful even when
  Locust is the bottleneck;
* the CPU other processes used on each core in the window (``core0/1 other``),
  since another job on a shared machine skews everything.

Percentiles across rows are exact to Locust's resolution, not averages of
percentiles: Locust keeps per row a histogram of response times (rounded to
1 ms below 100 ms, 10 ms below 1 s, 100 ms above) and ``--json-file`` writes
it; the rows of a type are merged into one histogram and its p95 is taken with
the rule Locust uses for its own Aggregated row.  The CSV files are kept for
reading by hand.

The knee of a server, on the ladder of user counts: walking up from the
lowest step, a step "holds" when it had no failures and both its HTTP p95 and
its WS p95 are at most ``--p95-bound-ms``; the lowest step is the knee if it
holds, and each next step replaces it while it holds and its total RPS is at
least ``1 + --growth`` times the current knee's (default: 10% more).  The walk
stops at the first step that fails either test: past the knee, more users
bring no more throughput, or latency beyond the bound.  Use a ladder growing
by ~1.5x or more per step, or 10% growth is within the scenario's noise.  If
the top step is still the knee, the knee is at or beyond the ladder
(``>=``).  If Locust's CPU share was at least ``--saturated`` at the knee or
the step after it, the plateau is Locust's and the table says so.

Results: ``loadtests/bench/results/mixed-<time>.json``, Locust's CSV and JSON per
step in ``results/mixed-<time>/`` and server and Locust logs in
``results/logs/mixed-<time>/`` (``results/`` is git-ignored).  Exit status 1 if
any step had a failure or an error, 130 if interrupted.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Dict, List, Optional, Tuple

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common
import servers
from run import fingerprint, git_state, maybe_reexec, snapshot_wssync, versions

LOADTESTS_DIR = os.path.dirname(common.BENCH_DIR)
LOCUSTFILE = os.path.join(LOADTESTS_DIR, "locustfile.py")
DEFAULT_VENV = os.path.join(common.BENCH_DIR, ".venv")
HOST = "127.0.0.1"
BASELINE = "wssync"
WS_ROWS = ("echo", "broadcast")


def _wssync_target(host: str, port: int) -> List[str]:
    return ["-m", "wssync", "--app", "target_app:app", "--host", host, "--port", str(port),
            "--threads", "0", "--no-access-log", "--log-level", "warning"]


def _uvicorn_target(loop: str) -> Any:
    return lambda host, port: ["-m", "uvicorn", "asgi_target:app", "--host", host, "--port",
                               str(port), "--http", "httptools", "--ws",
                               servers._uvicorn_ws_impl(), "--loop", loop, "--no-access-log",
                               "--log-level", "warning"]


MIXED = frozenset({"mixed"})
SERVERS: Dict[str, servers.ServerSpec] = {spec.name: spec for spec in (
    servers.ServerSpec("wssync", "wssync reactor mode (--threads 0), loadtests/target_app.py",
                       MIXED, ["wssync"], _wssync_target),
    servers.ServerSpec("uvicorn-uvloop", "uvicorn --http httptools --loop uvloop, "
                       "apps/asgi_target.py", MIXED,
                       ["uvicorn", "httptools", "websockets", "uvloop"], _uvicorn_target("uvloop")),
    servers.ServerSpec("uvicorn", "uvicorn --http httptools --loop asyncio, apps/asgi_target.py",
                       MIXED, ["uvicorn", "httptools", "websockets"], _uvicorn_target("asyncio")),
)}


# -- checks -----------------------------------------------------------------------------------


def _request(port: int, method: str, path: str, body: Optional[bytes] = None
             ) -> Tuple[int, bytes, Dict[str, str]]:
    conn = http.client.HTTPConnection(HOST, port, timeout=10)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read(), {k.lower(): v for k, v in resp.getheaders()}
    finally:
        conn.close()


def check_server(port: int, full: bool) -> bytes:
    """GET / and a /ws echo (``full``: also create, read and miss an item); returns the page.

    Raises RuntimeError on a wrong answer."""
    status, page, headers = _request(port, "GET", "/")
    if status != 200 or not headers.get("content-type", "").startswith("text/html") \
            or not page.startswith(b"<!doctype html>"):
        raise RuntimeError(f"GET / gave {status} {headers.get('content-type')} {page[:40]!r}")
    if full:
        status, body, headers = _request(port, "POST", "/api/items", b'{"name":"check","qty":1}')
        created = json.loads(body) if status == 201 else {}
        if headers.get("content-type") != "application/json" or created.get("name") != "check":
            raise RuntimeError(f"POST /api/items gave {status} {body[:80]!r}")
        status, body, _ = _request(port, "GET", f"/api/items/{created['id']}")
        if status != 200 or json.loads(body) != created:
            raise RuntimeError(f"GET /api/items/{created['id']} gave {status} {body[:80]!r}")
        status, body, _ = _request(port, "GET", "/api/items/999999999")
        if status != 404 or json.loads(body) != {"error": "not found"}:
            raise RuntimeError(f"GET of an unknown item gave {status} {body[:80]!r}")
    if len(common.ws_echo_latencies(HOST, port, "/ws", 3, timeout=10)) != 3:
        raise RuntimeError("WebSocket echo on /ws failed")
    return page


# -- Locust output ------------------------------------------------------------------------------


def hist_percentile(hist: Dict[int, int], q: float) -> Optional[float]:
    """Percentile ``q`` (0..1) of a {response time ms: count} histogram: the smallest
    time with at most ``int(n * q)`` samples above it excluded, as Locust computes it."""
    n = sum(hist.values())
    if not n:
        return None
    allowed = int(n * q)
    remaining = n
    for ms in sorted(hist, reverse=True):
        remaining -= hist[ms]
        if remaining <= allowed:
            return float(ms)
    return 0.0


def summarize_rows(rows: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Totals, per-type rates and merged-histogram p95s from Locust's ``--json-file`` rows."""
    starts = [r["start_time"] for r in rows if r.get("start_time")]
    ends = [r["last_request_timestamp"] for r in rows if r.get("last_request_timestamp")]
    window = (max(ends) - min(starts)) if starts and ends else 0.0

    def group(select: Any) -> Dict[str, Any]:
        chosen = [r for r in rows if select(r)]
        hist: Dict[int, int] = {}
        for r in chosen:
            for ms, count in r["response_times"].items():  # JSON made the keys strings
                hist[int(float(ms))] = hist.get(int(float(ms)), 0) + count
        count = sum(r["num_requests"] for r in chosen)
        return {"requests": count, "failures": sum(r["num_failures"] for r in chosen),
                "rps": round(count / window, 1) if window > 0 else None,
                "p50_ms": hist_percentile(hist, 0.50), "p95_ms": hist_percentile(hist, 0.95),
                "p99_ms": hist_percentile(hist, 0.99)}

    return {"window_s": round(window, 2),
            "total": group(lambda r: True),
            "http": group(lambda r: r["method"] != "WS"),
            "ws": group(lambda r: r["method"] == "WS" and r["name"] in WS_ROWS),
            "rows": {f"{r['method']} {r['name']}": {"requests": r["num_requests"],
                                                     "failures": r["num_failures"]}
                     for r in rows}}


class LocustProcess:
    """Locust headless on the load CPU; its log lines are watched for the run's phases."""

    def __init__(self, python: str, port: int, users: int, args: argparse.Namespace,
                 prefix: str, log_path: str, pythonpath: List[str]) -> None:
        env = dict(os.environ)
        env.update(WAIT_MIN=str(args.wait_min), WAIT_MAX=str(args.wait_max),
                   PYTHONUNBUFFERED="1",
                   PYTHONPATH=os.pathsep.join([*pythonpath, env.get("PYTHONPATH", "")]))
        rate = max(1.0, users / args.ramp)
        # -t only bounds a run whose stop signal went missing; the window ends by SIGTERM
        limit = int(args.ramp + args.seconds + 60)
        self.argv = ["taskset", "-c", str(common.LOAD_CPU), python, "-m", "locust",
                     "-f", LOCUSTFILE, "--host", f"http://{HOST}:{port}", "--headless",
                     "-u", str(users), "-r", f"{rate:g}", "-t", f"{limit}s", "--reset-stats",
                     "--csv", prefix, "--json-file", prefix, "--only-summary"]
        self.json_path = prefix + ".json"
        self.reset = threading.Event()
        self.cpu_warning = False
        self.errors: List[str] = []
        self._log = open(log_path, "w")  # noqa: SIM115 (open while Locust runs)
        self.proc = subprocess.Popen(self.argv, cwd=common.REPO_DIR, env=env,
                                     stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     text=True, start_new_session=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._log.write(line)
            if "Resetting stats" in line:
                self.reset.set()
            elif "CPU usage" in line:
                self.cpu_warning = True
            elif "Traceback" in line or "ERROR" in line:
                self.errors.append(line.strip()[:200])

    def cpu(self) -> float:
        return common.cpu_seconds(common.process_tree(self.proc.pid))

    def finish(self, timeout: float = 30.0) -> int:
        """SIGTERM (Locust then stops its users and writes its stats), wait, reap."""
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGTERM)
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self._reader.join(5)
        self._log.close()
        return self.proc.returncode


# -- one step ---------------------------------------------------------------------------------


def run_step(spec: servers.ServerSpec, users: int, args: argparse.Namespace, prefix: str,
             log_dir: str, pythonpath: List[str]) -> Dict[str, Any]:
    rec: Dict[str, Any] = {"server": spec.name, "users": users}
    name = os.path.basename(prefix)
    server = servers.ServerProcess(spec, os.path.join(log_dir, f"{name}-server.log"))
    locust: Optional[LocustProcess] = None
    try:
        if not common.wait_port(HOST, server.port, 30) or not server.alive():
            raise RuntimeError(f"{spec.name} did not start; see {server.log_path}")
        check_server(server.port, full=False)
        locust = LocustProcess(sys.executable, server.port, users, args, prefix,
                               os.path.join(log_dir, f"{name}-locust.log"), pythonpath)
        deadline = time.monotonic() + args.ramp + 30  # + Locust's own start-up
        while not locust.reset.wait(0.1) and time.monotonic() < deadline:
            if locust.proc.poll() is not None:
                raise RuntimeError(f"Locust exited with {locust.proc.returncode} before "
                                   f"its users were spawned; see {locust._log.name}")
        rec["ramp_complete"] = locust.reset.is_set()
        s_cpu0, l_cpu0, core0, t0 = server.cpu(), locust.cpu(), common.core_ticks(), \
            time.monotonic()
        time.sleep(args.seconds)
        s_cpu1, l_cpu1, core1, t1 = server.cpu(), locust.cpu(), common.core_ticks(), \
            time.monotonic()
        rec["locust_exit"] = locust.finish()
        wall = t1 - t0
        rec["server_cpu"] = round((s_cpu1 - s_cpu0) / wall, 3)
        rec["locust_cpu"] = round((l_cpu1 - l_cpu0) / wall, 3)
        for cpu, own in ((common.SERVER_CPU, rec["server_cpu"]),
                         (common.LOAD_CPU, rec["locust_cpu"])):
            procs = common.core_share(core0, core1, cpu, 2)
            # this core's process time not spent by our process (orchestrator included on 1)
            rec[f"core{cpu}_other"] = round(max(0.0, procs - own), 3) if procs is not None \
                else None
        rec["locust_cpu_warning"] = locust.cpu_warning
        if locust.errors:
            rec["locust_log_errors"] = locust.errors[:5]
        with open(locust.json_path) as f:
            rec.update(summarize_rows(json.load(f)))
        done = (rec["total"]["rps"] or 0) * wall
        # what the servers spend per Locust event: comparable even when Locust set the pace
        rec["server_us_per_req"] = round((s_cpu1 - s_cpu0) * 1e6 / done, 1) if done else None
        rec["alive"] = server.alive()
        if not rec["alive"]:
            raise RuntimeError(f"{spec.name} died during the step: {server.crashed}")
    except Exception as exc:
        rec["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        if locust is not None and locust.proc.poll() is None:
            locust.finish()
        rec["stop"] = server.stop()
    return rec


def failures(rec: Dict[str, Any]) -> int:
    return int(rec.get("total", {}).get("failures") or 0)


def one_line(rec: Dict[str, Any]) -> str:
    if "error" in rec:
        return f"  {rec['server']:15} u={rec['users']:<4} ERROR {rec['error']}"
    h, w = rec["http"], rec["ws"]
    return (f"  {rec['server']:15} u={rec['users']:<4} {rec['total']['rps']:>7} rps  "
            f"HTTP {h['rps']:>7}/s p95 {_ms(h['p95_ms'])}  WS {w['rps']:>7}/s p95 "
            f"{_ms(w['p95_ms'])}  fail {failures(rec)}  server {rec['server_cpu']:.0%} "
            f"({_f(rec['server_us_per_req'])} us/req)  locust {rec['locust_cpu']:.0%}"
            + ("" if rec.get("ramp_complete") else "  (ramp did not finish)"))


def _ms(v: Optional[float]) -> str:
    return f"{v:>5.0f} ms" if v is not None else "    - ms"


# -- summary ----------------------------------------------------------------------------------


def median_step(recs: List[Dict[str, Any]]) -> Dict[str, Any]:
    """One (server, users) step: medians over rounds that ran; failures summed."""
    ok = [r for r in recs if "error" not in r]
    out: Dict[str, Any] = {"rounds": len(ok), "errors": len(recs) - len(ok),
                           "failures": sum(failures(r) for r in recs)}
    if not ok:
        return out

    def med(get: Any) -> Optional[float]:
        values = [v for v in (get(r) for r in ok) if v is not None]
        return round(statistics.median(values), 3) if values else None

    out.update(rps=med(lambda r: r["total"]["rps"]), http_rps=med(lambda r: r["http"]["rps"]),
               http_p95=med(lambda r: r["http"]["p95_ms"]), ws_rps=med(lambda r: r["ws"]["rps"]),
               ws_p95=med(lambda r: r["ws"]["p95_ms"]), server_cpu=med(lambda r: r["server_cpu"]),
               locust_cpu=med(lambda r: r["locust_cpu"]),
               server_us_per_req=med(lambda r: r["server_us_per_req"]),
               locust_cpu_warning=any(r.get("locust_cpu_warning") for r in ok),
               core0_other=med(lambda r: r["core0_other"]),
               core1_other=med(lambda r: r["core1_other"]),
               ramp_complete=all(r.get("ramp_complete") for r in ok))
    return out


def find_knee(steps: List[Tuple[int, Dict[str, Any]]], args: argparse.Namespace
              ) -> Dict[str, Any]:
    """The knee of one server's ladder (see the module docstring for the rule)."""

    def fault(s: Dict[str, Any]) -> Optional[str]:
        """Why step ``s`` does not hold, or None."""
        if s["errors"] or s.get("rps") is None:
            return "errors"
        if s["failures"]:
            return f"{s['failures']} failures"
        for kind in ("http", "ws"):
            p95 = s[f"{kind}_p95"]
            if p95 is None or p95 > args.p95_bound_ms:
                return f"{kind.upper()} p95 {_f(p95)} ms > {args.p95_bound_ms:g} ms"
        return None

    knee: Optional[int] = None
    stopped_by: Optional[str] = None
    after: Optional[Dict[str, Any]] = None
    by_users = dict(steps)
    for users, s in steps:
        why = fault(s)
        if why is not None:
            stopped_by = f"{why} at {users} users"
            after = s
            break
        if knee is not None and s["rps"] < (1 + args.growth) * by_users[knee]["rps"]:
            stopped_by = f"RPS grew less than {args.growth:.0%} at {users} users"
            after = s
            break
        knee = users
    if knee is None:
        return {"users": None, "note": "no step holds: lower --users or raise --p95-bound-ms"}
    out = {"users": knee, **by_users[knee], "beyond_ladder": stopped_by is None,
           "stopped_by": stopped_by}
    limits = []
    for label, step in (("knee", by_users[knee]), ("next step", after)):
        if step is not None and ((step.get("locust_cpu") or 0) >= args.saturated
                                 or step.get("locust_cpu_warning")):
            limits.append(f"Locust at {_f(step.get('locust_cpu'), '{:.0%}')} of its core "
                          f"at the {label}")
    if limits:
        out["locust_bound"] = "; ".join(limits)
    return out


def summarize(records: List[Dict[str, Any]], names: List[str], ladder: List[int],
              args: argparse.Namespace) -> Dict[str, Any]:
    steps: Dict[str, List[Tuple[int, Dict[str, Any]]]] = {}
    for n in names:
        steps[n] = [(u, median_step([r for r in records if r["server"] == n
                                     and r["users"] == u])) for u in ladder]
        steps[n] = [(u, s) for u, s in steps[n] if s["rounds"] or s["errors"]]
    knees = {n: find_knee(steps[n], args) for n in names}
    ratios: Dict[str, Dict[str, Optional[float]]] = {}
    base = knees.get(BASELINE)
    for n in names:
        if n == BASELINE or base is None or base.get("users") is None \
                or knees[n].get("users") is None:
            continue
        ratios[n] = {key: _ratio(base.get(key), knees[n].get(key))
                     for key in ("rps", "http_p95", "ws_p95", "server_cpu",
                                 "server_us_per_req")}
    return {"steps": {n: [{"users": u, **s} for u, s in steps[n]] for n in names},
            "knees": knees, "knee_ratios": ratios}


def _ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    return round(a / b, 3) if a is not None and b else None


def _f(v: Any, fmt: str = "{:.0f}") -> str:
    return "-" if v is None else fmt.format(v)


def _bound(s: Dict[str, Any], args: Dict[str, Any]) -> str:
    notes = []
    if (s.get("locust_cpu") or 0) >= args["saturated"] or s.get("locust_cpu_warning"):
        notes.append("LOCUST-BOUND")
    if (s.get("server_cpu") or 0) >= args["saturated"]:
        notes.append("server-bound")
    if not s.get("ramp_complete"):
        notes.append("ramp incomplete")
    return " " + ", ".join(notes) if notes else ""


def format_summary(summary: Dict[str, Any], args: Dict[str, Any]) -> str:
    lines = ["Steps (median over rounds):",
             f"  {'server':15} {'users':>5} {'RPS':>7} {'HTTP/s':>7} {'p95':>5} {'WS/s':>7} "
             f"{'p95':>5} {'fail':>5} {'server':>6} {'us/req':>6} {'locust':>6} "
             f"{'core0/1 other':>13}"]
    for n, steps in summary["steps"].items():
        for s in steps:
            if not s.get("rounds"):
                lines.append(f"  {n:15} {s['users']:>5}  errors in every round")
                continue
            lines.append(
                f"  {n:15} {s['users']:>5} {_f(s['rps']):>7} {_f(s['http_rps']):>7} "
                f"{_f(s['http_p95']):>5} {_f(s['ws_rps']):>7} {_f(s['ws_p95']):>5} "
                f"{s['failures']:>5} {_f(s['server_cpu'], '{:.0%}'):>6} "
                f"{_f(s.get('server_us_per_req')):>6} {_f(s['locust_cpu'], '{:.0%}'):>6} "
                f"{_f(s['core0_other'], '{:.0%}'):>6}/{_f(s['core1_other'], '{:.0%}'):<6}"
                + _bound(s, args))
    lines += ["", f"Knee (last step with >= {args['growth']:.0%} more RPS than the one before "
              f"and p95 <= {args['p95_bound_ms']:g} ms for HTTP and WS, no failures):",
              f"  {'server':15} {'users':>6} {'RPS':>7} {'HTTP p95':>8} {'WS p95':>7} "
              f"{'server CPU':>10} {'us/req':>6} {'locust CPU':>10}  note"]
    for n, k in summary["knees"].items():
        if k.get("users") is None:
            lines.append(f"  {n:15} {'-':>6}  {k['note']}")
            continue
        users = (">=" if k["beyond_ladder"] else "") + str(k["users"])
        note = ("knee not reached within the ladder" if k["beyond_ladder"]
                else f"then: {k['stopped_by']}")
        if k.get("locust_bound"):
            note = f"LOCUST-BOUND ({k['locust_bound']}): Locust set the pace; {note}"
        lines.append(f"  {n:15} {users:>6} {_f(k['rps']):>7} {_f(k['http_p95']):>5} ms "
                     f"{_f(k['ws_p95']):>4} ms {_f(k['server_cpu'], '{:.0%}'):>10} "
                     f"{_f(k.get('server_us_per_req')):>6} "
                     f"{_f(k['locust_cpu'], '{:.0%}'):>10}  {note}")
    if summary["knee_ratios"]:
        lines += ["", f"{BASELINE}/anchor at the knees (RPS: >1 is better for {BASELINE}; "
                  "p95, server CPU and CPU per request: <1 is better):"]
        for n, r in summary["knee_ratios"].items():
            lines.append(f"  {BASELINE}/{n:15} RPS {_f(r['rps'], '{:.2f}')}  HTTP p95 "
                         f"{_f(r['http_p95'], '{:.2f}')}  WS p95 {_f(r['ws_p95'], '{:.2f}')}  "
                         f"server CPU {_f(r['server_cpu'], '{:.2f}')}  us/req "
                         f"{_f(r.get('server_us_per_req'), '{:.2f}')}")
    return "\n".join(lines)


# -- main ---------------------------------------------------------------------------------------


def parse_args(argv: List[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--venv", default=os.environ.get("WSSYNC_BENCH_VENV", DEFAULT_VENV),
                        help="bench virtualenv (default: %(default)s)")
    parser.add_argument("--no-reexec", action="store_true",
                        help="run with this interpreter even if the bench venv exists")
    parser.add_argument("--no-snapshot", action="store_true",
                        help="serve wssync from the working tree, not from a copy")
    parser.add_argument("--report", metavar="JSON", help="print the tables of an earlier run")
    parser.add_argument("--servers", default="wssync,uvicorn-uvloop",
                        help=f"comma-separated, from {', '.join(SERVERS)} "
                             "(default: %(default)s)")
    parser.add_argument("--users", default="100,200,400,600,900",
                        help="the ladder of Locust user counts (default: %(default)s)")
    parser.add_argument("--seconds", type=float, default=20.0,
                        help="measured seconds per step (default: %(default)s)")
    parser.add_argument("--ramp", type=float, default=5.0,
                        help="seconds to spawn the users, left out of the numbers "
                             "(default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--wait-min", type=float, default=0.1,
                        help="WAIT_MIN of the scenario, seconds (default: %(default)s)")
    parser.add_argument("--wait-max", type=float, default=0.3,
                        help="WAIT_MAX of the scenario, seconds (default: %(default)s)")
    parser.add_argument("--p95-bound-ms", type=float, default=100.0,
                        help="p95 (HTTP and WS) above this ends the knee search "
                             "(default: %(default)s)")
    parser.add_argument("--growth", type=float, default=0.10,
                        help="least RPS growth over the previous step (default: %(default)s)")
    parser.add_argument("--saturated", type=float, default=0.90,
                        help="CPU share of its core from which Locust counts as the "
                             "bottleneck (default: %(default)s)")
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if not args.no_reexec:
        maybe_reexec(args.venv, argv, __file__)
    if args.report:
        with open(args.report) as f:
            data = json.load(f)
        print(format_summary(data["summary"], data["meta"]["settings"]))
        return 0
    names = [n.strip() for n in args.servers.split(",") if n.strip()]
    ladder = sorted({int(u) for u in args.users.split(",") if u.strip()})
    for n in names:
        if n not in SERVERS:
            sys.exit(f"unknown server {n!r}; choose from {', '.join(SERVERS)}")
        why = SERVERS[n].available()
        if why:
            sys.exit(f"{n}: {why.split(' (')[0]}")
    try:
        import locust  # noqa: F401  (only to fail early with the fix)
    except ImportError:
        sys.exit(f"locust is not installed in {sys.prefix}: "
                 f"{sys.prefix}/bin/pip install locust gevent")
    if (os.cpu_count() or 1) < 2:
        print("warning: fewer than 2 CPUs: server and Locust share one", flush=True)
    common.raise_nofile()
    common.pin(common.LOAD_CPU)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out_dir = os.path.join(common.RESULTS_DIR, f"mixed-{stamp}")
    log_dir = os.path.join(common.RESULTS_DIR, "logs", f"mixed-{stamp}")
    os.makedirs(out_dir, exist_ok=True)
    os.makedirs(log_dir, exist_ok=True)
    json_path = os.path.join(common.RESULTS_DIR, f"mixed-{stamp}.json")
    code: Dict[str, Any] = {"git": git_state(),
                            "working_tree": fingerprint(os.path.join(common.REPO_DIR, "wssync"))}
    snap: Optional[str] = None
    if not args.no_snapshot:
        snap = tempfile.mkdtemp(prefix="wssync-mixed-snapshot-")  # outside the repository
        code["snapshot"] = snapshot_wssync(snap)
    # target_app.py lives in loadtests/; the uvicorn apps are found in apps/ (the cwd)
    servers.PYTHONPATH_PREFIX[:] = [*([snap] if snap else []), LOADTESTS_DIR]
    locust_path = [snap] if snap else [common.REPO_DIR]

    steps = args.rounds * len(ladder) * len(names)
    estimate = steps * (args.seconds + args.ramp + 5)  # + start, checks, Locust start and stop
    meta: Dict[str, Any] = {
        "started": time.strftime("%Y-%m-%d %H:%M:%S"), "argv": argv,
        "python": sys.version.split()[0], "platform": platform.platform(),
        "cpus": os.cpu_count(), "loadavg_start": os.getloadavg(), "wssync_code": code,
        "versions": {**versions(), "locust": _version("locust")},
        "uvicorn_ws": servers._uvicorn_ws_impl(), "server_cpu": common.SERVER_CPU,
        "load_cpu": common.LOAD_CPU, "ladder": ladder, "servers": names,
        "commands": {n: " ".join(["taskset", "-c", str(common.SERVER_CPU), "python",
                                  *SERVERS[n].argv(HOST, 0)]) for n in names},
        "scenario_env": {k: os.environ[k] for k in ("HTTP_WEIGHT", "ECHO_WEIGHT",
                                                    "CHAT_WEIGHT", "WS_MESSAGE_SIZE")
                         if k in os.environ},
        "settings": vars(args)}
    print(f"mixed: {args.rounds} round(s) x users {ladder} x {names}; {args.seconds:g} s "
          f"measured per step after a {args.ramp:g} s ramp; WAIT {args.wait_min:g}.."
          f"{args.wait_max:g} s; {steps} steps, about {estimate / 60:.1f} min in all", flush=True)
    print(f"wssync under test: {code.get('snapshot') or code['working_tree']} "
          f"({'snapshot of' if snap else 'live'} the working tree); results -> {json_path}",
          flush=True)

    records: List[Dict[str, Any]] = []

    def save(summary: Optional[Dict[str, Any]] = None) -> None:
        with open(json_path, "w") as f:
            json.dump({"meta": meta, "records": records, "summary": summary}, f, indent=1,
                      default=str)

    def on_term(_signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt  # unwinds through every finally: servers and Locust stop

    signal.signal(signal.SIGTERM, on_term)
    interrupted = broken = False
    started = time.monotonic()
    try:
        pages = {}
        for n in names:  # every server must answer right before any measuring
            server = servers.ServerProcess(SERVERS[n], os.path.join(log_dir, f"check-{n}.log"))
            try:
                if not common.wait_port(HOST, server.port, 30):
                    raise RuntimeError(f"{n} did not start; see {server.log_path}")
                pages[n] = check_server(server.port, full=True)
            except Exception as exc:
                broken = True
                print(f"check failed for {n}: {exc}", flush=True)
            finally:
                server.stop()
        if len(set(pages.values())) > 1:
            broken = True
            print("check failed: the servers' pages on / differ", flush=True)
        if broken:
            meta["check_failed"] = True
            save()
            return 2
        print("checks passed: GET /, POST and GET /api/items, 404 item, /ws echo", flush=True)
        for rnd in range(args.rounds):
            order = names[rnd % len(names):] + names[:rnd % len(names)]
            for users in ladder:
                for n in order:
                    name = f"r{rnd + 1}-{n}-u{users}"
                    rec = run_step(SERVERS[n], users, args, os.path.join(out_dir, name),
                                   log_dir, locust_path)
                    rec["round"] = rnd + 1
                    records.append(rec)
                    print(one_line(rec), flush=True)
                    save()
    except KeyboardInterrupt:
        interrupted = True
        meta["interrupted"] = True
        print("\ninterrupted: summarizing the steps completed so far", flush=True)
    finally:
        if snap is not None:
            shutil.rmtree(snap, ignore_errors=True)
    summary = summarize(records, names, ladder, args)
    meta["elapsed_s"] = round(time.monotonic() - started, 1)
    meta["loadavg_end"] = os.getloadavg()
    save(summary)
    print()
    print(format_summary(summary, vars(args)))
    bad = [r for r in records if "error" in r or failures(r)]
    print()
    print(f"results: {json_path}\nlocust:  {out_dir}\nlogs:    {log_dir}\n"
          f"elapsed: {meta['elapsed_s'] / 60:.1f} min")
    if bad:
        print(f"{len(bad)} step(s) had failures or errors: "
              + ", ".join(f"{r['server']} u={r['users']}" for r in bad))
    if interrupted:
        return 130
    return 1 if bad else 0


def _version(dist: str) -> Optional[str]:
    import importlib.metadata

    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


if __name__ == "__main__":
    sys.exit(main())
