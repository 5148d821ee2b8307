"""The servers under test: how to start each one (pinned to the server CPU), check
it answers correctly, measure its process tree, and stop it.

Every server serves the same thing (see ``apps/``): ``GET /`` gives
``Hello, World!`` as text/plain, ``/ws`` echoes WebSocket messages, and
``GET /broadcast?seq=N`` (where supported) sends a 100-byte text message to
every WebSocket client.  Servers with ``tls_args`` also serve it over TLS (HTTPS
and WSS on the one port) when started with a certificate and key, for the TLS
workloads.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, FrozenSet, List, Optional, Tuple

import common

HTTP, WS13, WS16K, IDLE, BROADCAST = "http", "ws13", "ws16k", "idle", "broadcast"
ALL_WORKLOADS = (HTTP, WS13, WS16K, IDLE, BROADCAST)  # plain: the default selection
# The same over TLS: keep-alive HTTPS hello, 13-byte WSS echo, idle WSS connections.
HTTPS, WSS13, IDLE_TLS = "https", "wss13", "idle-tls"
TLS_WORKLOADS = (HTTPS, WSS13, IDLE_TLS)
WS_WORKLOADS = frozenset({WS13, WS16K, IDLE, BROADCAST, WSS13, IDLE_TLS})
TLS_WS_WORKLOADS = frozenset({WSS13, IDLE_TLS})

TlsFiles = Tuple[str, str]  # (certfile, keyfile) the server is started with


def _uvicorn_ws_impl() -> str:
    """``websockets-sansio`` on uvicorn versions that have it, else ``websockets``."""
    spec = importlib.util.find_spec("uvicorn.protocols.websockets.websockets_sansio_impl")
    return "websockets-sansio" if spec is not None else "websockets"


@dataclass(frozen=True)
class ServerSpec:
    name: str
    description: str
    workloads: FrozenSet[str]
    requires: List[str]  # importable modules it needs
    argv: Callable[[str, int], List[str]]  # (host, port) -> command after the python binary
    has_http: bool = True
    ws_path: str = "/ws"
    idle_cap: Optional[int] = None  # most idle connections worth opening (thread per connection)
    log_ignore: Optional[str] = None  # regex of routine log lines that are no problem
    pythonpath: Optional[str] = None  # import wssync from here, not from the run's snapshot
    # (certfile, keyfile) -> the arguments that turn TLS on; None: no TLS workloads
    tls_args: Optional[Callable[[str, str], List[str]]] = None

    def available(self) -> Optional[str]:
        """None if it can run here, else why not."""
        for module in self.requires:
            if importlib.util.find_spec(module) is None:
                return f"module {module!r} is not installed (run.py --install)"
        return None


def _wssync(threads: int) -> Callable[[str, int], List[str]]:
    return lambda host, port: ["-m", "wssync", "--app", "wssync_app:app", "--host", host,
                               "--port", str(port), "--threads", str(threads),
                               "--no-access-log", "--log-level", "warning"]


def _tls_flags(cert_flag: str, key_flag: str) -> Callable[[str, str], List[str]]:
    return lambda cert, key: [cert_flag, cert, key_flag, key]


def _uvicorn(loop: str) -> Callable[[str, int], List[str]]:
    return lambda host, port: ["-m", "uvicorn", "asgi_app:app", "--host", host, "--port",
                               str(port), "--http", "httptools", "--ws", _uvicorn_ws_impl(),
                               "--loop", loop, "--no-access-log", "--log-level", "warning",
                               "--lifespan", "off"]


SERVERS: List[ServerSpec] = [
    ServerSpec("wssync", "wssync reactor mode (--threads 0)",
               frozenset(ALL_WORKLOADS + TLS_WORKLOADS), ["wssync"], _wssync(0),
               tls_args=_tls_flags("--certfile", "--keyfile")),
    ServerSpec("wssync-threads", "wssync thread-pool mode (--threads 4)",
               frozenset({HTTP, HTTPS}), ["wssync"], _wssync(4),
               tls_args=_tls_flags("--certfile", "--keyfile")),
    ServerSpec("waitress", "waitress, threads=4", frozenset({HTTP}), ["waitress"],
               lambda host, port: ["-m", "waitress", "--threads=4", f"--listen={host}:{port}",
                                   "wsgi_app:app"],
               # waitress logs every time requests wait for one of its 4 threads
               log_ignore=r"waitress.queue:Task queue depth"),
    ServerSpec("gunicorn-gthread", "gunicorn -k gthread, 1 worker, 4 threads",
               frozenset({HTTP, HTTPS}), ["gunicorn"],
               lambda host, port: ["-m", "gunicorn", "-k", "gthread", "-w", "1", "--threads",
                                   "4", "-b", f"{host}:{port}", "--log-level", "warning",
                                   "wsgi_app:app"],
               tls_args=_tls_flags("--certfile", "--keyfile")),
    ServerSpec("uvicorn", "uvicorn --http httptools --loop asyncio",
               frozenset(ALL_WORKLOADS + TLS_WORKLOADS), ["uvicorn", "httptools", "websockets"],
               _uvicorn("asyncio"), tls_args=_tls_flags("--ssl-certfile", "--ssl-keyfile")),
    ServerSpec("uvicorn-uvloop", "uvicorn --http httptools --loop uvloop",
               frozenset(ALL_WORKLOADS + TLS_WORKLOADS),
               ["uvicorn", "httptools", "websockets", "uvloop"],
               _uvicorn("uvloop"), tls_args=_tls_flags("--ssl-certfile", "--ssl-keyfile")),
    ServerSpec("tornado", "tornado RequestHandler + WebSocketHandler, asyncio IOLoop",
               frozenset(ALL_WORKLOADS + TLS_WORKLOADS), ["tornado"],
               lambda host, port: ["tornado_app.py", "--host", host, "--port", str(port)],
               tls_args=_tls_flags("--certfile", "--keyfile")),
    ServerSpec("websockets", "websockets asyncio server (WebSocket only)",
               frozenset({WS13, WS16K, IDLE, BROADCAST, WSS13, IDLE_TLS}), ["websockets"],
               lambda host, port: ["websockets_asyncio_app.py", "--host", host, "--port",
                                   str(port)], has_http=False,
               tls_args=_tls_flags("--certfile", "--keyfile")),
    # A thread per connection: more than a few thousand idle ones would mostly measure
    # thread stacks (and could exhaust the machine's PIDs), so idle is capped.
    ServerSpec("websockets-sync", "websockets threaded sync server (WebSocket only)",
               frozenset({WS13, WS16K, IDLE, WSS13, IDLE_TLS}), ["websockets"],
               lambda host, port: ["websockets_sync_app.py", "--host", host, "--port",
                                   str(port)], has_http=False, idle_cap=2000,
               tls_args=_tls_flags("--certfile", "--keyfile")),
]
BY_NAME = {spec.name: spec for spec in SERVERS}

# Directories put first on the servers' PYTHONPATH (run.py puts a snapshot of the wssync
# package there, so that a working tree edited during a run cannot mix two versions).
PYTHONPATH_PREFIX: List[str] = []

_LOG_PROBLEM = re.compile(r"Traceback|ERROR|CRITICAL|Exception|WARNING|Error", re.IGNORECASE)


class ServerProcess:
    """One running server, pinned to ``common.SERVER_CPU`` with ``taskset``; with ``tls``
    (certificate and key files) it serves HTTPS and WSS instead, and :attr:`ssl_context`
    is a client context that trusts that certificate."""

    def __init__(self, spec: ServerSpec, log_path: str, host: str = "127.0.0.1",
                 python: str = sys.executable, port: Optional[int] = None,
                 tls: Optional[TlsFiles] = None) -> None:
        if tls is not None and spec.tls_args is None:
            raise ValueError(f"{spec.name} has no TLS set-up")
        self.spec = spec
        self.host = host
        self.tls = tls
        self.ssl_context = common.client_context(tls[0]) if tls is not None else None
        self.tls_session: Optional[str] = None  # version and cipher seen by the checks
        self.port = port or common.free_port(host)
        self.log_path = log_path
        os.makedirs(os.path.dirname(log_path), exist_ok=True)
        self._log = open(log_path, "wb")  # noqa: SIM115 (open while the server runs)
        env = dict(os.environ)
        prefix = [spec.pythonpath] if spec.pythonpath else PYTHONPATH_PREFIX
        env["PYTHONPATH"] = os.pathsep.join([*prefix, common.APPS_DIR,
                                             env.get("PYTHONPATH", "")])
        env["PYTHONUNBUFFERED"] = "1"
        argv = ["taskset", "-c", str(common.SERVER_CPU), python, *spec.argv(host, self.port)]
        if tls is not None and spec.tls_args is not None:
            argv += spec.tls_args(*tls)
        self.argv = argv
        self.proc = subprocess.Popen(argv, cwd=common.APPS_DIR, env=env, stdout=self._log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True)
        self.pid = self.proc.pid  # taskset execs the server: same pid
        self.crashed: Optional[str] = None

    # -- readiness ----------------------------------------------------------------------

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Wait for the port, then check a real answer (HTTP hello and/or WS echo)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.spec.name} exited with {self.proc.returncode} "
                                   f"at start; see {self.log_path}")
            if common.wait_port(self.host, self.port, 0.2):
                break
        else:
            raise RuntimeError(f"{self.spec.name} did not listen within {timeout} s")
        info: Dict[str, Any] = {}
        if self.spec.has_http:
            status, body, headers = common.http_get(self.host, self.port, "/",
                                                    ssl_context=self.ssl_context, info=info)
            if status != 200 or body != b"Hello, World!" or \
                    not headers.get("content-type", "").startswith("text/plain"):
                raise RuntimeError(f"{self.spec.name}: GET / gave {status} {body[:60]!r} "
                                   f"{headers.get('content-type')}")
        if self.spec.workloads & (TLS_WS_WORKLOADS if self.tls else WS_WORKLOADS):
            lat = common.ws_echo_latencies(self.host, self.port, self.spec.ws_path, 3,
                                           ssl_context=self.ssl_context, info=info)
            if len(lat) != 3:
                raise RuntimeError(f"{self.spec.name}: WebSocket echo check failed")
        self.tls_session = info.get("tls")

    # -- measurements ---------------------------------------------------------------------

    def pids(self) -> List[int]:
        return common.process_tree(self.pid)

    def cpu(self) -> float:
        """utime + stime of the server's process tree, seconds."""
        return common.cpu_seconds(self.pids())

    def sched_ns(self) -> int:
        return common.sched_ns(self.pids())

    def status(self) -> Dict[str, int]:
        return common.status_fields(self.pids())

    def alive(self) -> bool:
        if self.proc.poll() is None:
            return True
        if self.crashed is None:
            self.crashed = f"exited with status {self.proc.returncode}"
        return False

    # -- stop -------------------------------------------------------------------------------

    def stop(self, timeout: float = 15.0) -> Dict[str, object]:
        """SIGTERM, then SIGKILL after ``timeout``; returns how it went and log problems."""
        was_alive = self.alive()
        forced = False
        stop_seconds = 0.0
        if was_alive:
            start = time.monotonic()
            try:
                os.killpg(self.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                forced = True
                try:
                    os.killpg(self.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(5)
            stop_seconds = time.monotonic() - start
        else:
            # the server died on its own: make sure no worker of its group lingers
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        self._log.close()
        return {"crashed": self.crashed, "forced_kill": forced,
                "stop_seconds": round(stop_seconds, 2), "log_problems": self.log_problems()}

    def log_problems(self, limit: int = 8) -> List[str]:
        try:
            with open(self.log_path, errors="replace") as f:
                lines = [line.rstrip() for line in f if _LOG_PROBLEM.search(line)]
        except OSError:
            return []
        if self.spec.log_ignore:
            ignore = re.compile(self.spec.log_ignore)
            lines = [line for line in lines if not ignore.search(line)]
        if len(lines) > limit:
            lines = [*lines[:limit], f"... {len(lines) - limit} more (see {self.log_path})"]
        return lines


def run_standalone(parser: Any, args: Any, kind: str,
                   run: Callable[[Any, str], Dict[str, Any]]) -> int:
    """Shared ``main`` of the single-workload scripts: check the server, pin
    ourselves to the load core, run, write ``--json``; exit 1 on an error."""
    spec = BY_NAME[args.server]
    why = spec.available()
    if why:
        parser.error(f"{spec.name}: {why}")
    common.pin(common.LOAD_CPU)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    log = os.path.join(common.RESULTS_DIR, "logs", f"{kind}-{stamp}-{spec.name}.log")
    result = run(spec, log)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0 if "error" not in result else 1
