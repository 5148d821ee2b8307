"""The servers under test: how to start each one (pinned to the server CPU), check
it answers correctly, measure its process tree, and stop it.

Every server serves the same thing (see ``apps/``): ``GET /`` gives
``Hello, World!`` as text/plain, ``/ws`` echoes WebSocket messages, and
``GET /broadcast?seq=N`` (where supported) sends a 100-byte text message to
every WebSocket client.  Servers with ``tls_args`` also serve it over TLS (HTTPS
and WSS on the one port) when started with a certificate and key, for the TLS
workloads.  The ``flask-mp`` servers serve one Flask app (``apps/flask_app.py``)
instead, whose ``GET /`` gives the same answer.

The multi-process workloads (:data:`MP_WORKLOADS`) start every server unpinned
(``taskset -c`` with every CPU): a server with two worker processes is meant to use
both cores, so a pinned one would measure nothing.
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
# Several processes serving one port (``--workers``), against the multi-process
# set-ups users would deploy instead; every server unpinned (see above).
HTTP_MP, FLASK_MP, BALANCE, BROADCAST_MP = "http-mp", "flask-mp", "balance", "broadcast-mp"
MP_WORKLOADS = (HTTP_MP, FLASK_MP, BALANCE, BROADCAST_MP)
# WSGI hello on a thread pool of 8 in one pinned process: the Flask app
# (``apps/flask_app.py``) and the bare WSGI callable (``apps/wsgi_app.py``).
FLASK, WSGI = "flask", "wsgi"
THREADED_WORKLOADS = (FLASK, WSGI)
WS_WORKLOADS = frozenset({WS13, WS16K, IDLE, BROADCAST, WSS13, IDLE_TLS, BALANCE,
                          BROADCAST_MP})
TLS_WS_WORKLOADS = frozenset({WSS13, IDLE_TLS})
# The Socket.IO app (``apps/socketio_app.py``), measured by socketio_idle.py and
# socketio_acks.py, not by run.py: one Socket.IO client for every server.
SIO_IDLE, SIO_ACKS, SIO_ACKS_MP = "sio-idle", "sio-acks", "sio-acks-mp"

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
    stats_path: Optional[str] = None  # wssync with workers: Server.stats() as JSON here
    # (certfile, keyfile) -> the arguments that turn TLS on; None: no TLS workloads
    tls_args: Optional[Callable[[str, str], List[str]]] = None

    def available(self) -> Optional[str]:
        """None if it can run here, else why not."""
        for module in self.requires:
            if importlib.util.find_spec(module) is None:
                return f"module {module!r} is not installed (run.py --install)"
        return None


def _wssync(threads: int, workers: Optional[int] = None,
            app: str = "wssync_app:app") -> Callable[[str, int], List[str]]:
    extra = [] if workers is None else ["--workers", str(workers)]
    return lambda host, port: ["-m", "wssync", "--app", app, "--host", host,
                               "--port", str(port), "--threads", str(threads), *extra,
                               "--no-access-log", "--log-level", "warning"]


def _gunicorn(worker_class: str, workers: int, app: str,
              *extra: str) -> Callable[[str, int], List[str]]:
    return lambda host, port: ["-m", "gunicorn", "-k", worker_class, "-w", str(workers),
                               *extra, "-b", f"{host}:{port}", "--log-level", "warning", app]


def _tls_flags(cert_flag: str, key_flag: str) -> Callable[[str, str], List[str]]:
    return lambda cert, key: [cert_flag, cert, key_flag, key]


def _uvicorn(loop: str) -> Callable[[str, int], List[str]]:
    return lambda host, port: ["-m", "uvicorn", "asgi_app:app", "--host", host, "--port",
                               str(port), "--http", "httptools", "--ws", _uvicorn_ws_impl(),
                               "--loop", loop, "--no-access-log", "--log-level", "warning",
                               "--lifespan", "off"]


def _threaded(workload: str, app: str, requires: List[str]) -> List[ServerSpec]:
    """The servers of one THREADED_WORKLOADS app, each with 8 threads in one process."""
    what = "the Flask app" if workload == FLASK else "the WSGI callable"
    return [
        ServerSpec(f"wssync-t8-{workload}", f"wssync --threads 8, {what}",
                   frozenset({workload}), ["wssync", *requires], _wssync(8, app=app)),
        ServerSpec(f"gthread-t8-{workload}", f"gunicorn -k gthread -w 1 --threads 8, {what}",
                   frozenset({workload}), ["gunicorn", *requires],
                   _gunicorn("gthread", 1, app, "--threads", "8")),
        ServerSpec(f"waitress-t8-{workload}", f"waitress, threads=8, {what}",
                   frozenset({workload}), ["waitress", *requires],
                   lambda host, port: ["-m", "waitress", "--threads=8",
                                       f"--listen={host}:{port}", app],
                   log_ignore=r"waitress.queue:Task queue depth"),
        # A Rust HTTP server for Python apps: its event loop on one thread, the
        # application on 8 blocking threads.
        ServerSpec(f"granian-t8-{workload}",
                   f"granian --interface wsgi, 1 runtime thread, 8 blocking threads, {what}",
                   frozenset({workload}), ["granian", *requires],
                   lambda host, port: ["-m", "granian", "--interface", "wsgi", "--host", host,
                                       "--port", str(port), "--workers", "1",
                                       "--runtime-threads", "1", "--blocking-threads", "8",
                                       "--log-level", "warning", app],
                   # granian finds 8 threads many for one core: the set-up compared
                   log_ignore=r"Configuration allows spawning up to"),
    ]


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
               _gunicorn("gthread", 1, "wsgi_app:app", "--threads", "4"),
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
    # The floor under any Python server: finds request heads and echoes frames, no more.
    ServerSpec("ceiling", "pure-Python selectors loop: fixed answer, unmask and echo",
               frozenset({HTTP, WS13}), [],
               lambda host, port: ["ceiling_app.py", "--host", host, "--port", str(port)]),
    # -- several processes (MP_WORKLOADS, unpinned) --------------------------------------
    ServerSpec("wssync-w2", "wssync --workers 2, reactor mode",
               frozenset({HTTP_MP, BALANCE, BROADCAST_MP}), ["wssync"], _wssync(0, 2),
               stats_path="/stats"),
    ServerSpec("wssync-w1", "wssync --workers 1 (one process), reactor mode",
               frozenset({HTTP_MP, BROADCAST_MP}), ["wssync"], _wssync(0, 1)),
    # uvicorn's documented production set-up: gunicorn managing uvicorn workers
    # (httptools and uvloop, as uvicorn[standard] picks them)
    ServerSpec("gunicorn-uvicorn-w2", "gunicorn -k uvicorn.workers.UvicornWorker -w 2",
               frozenset({HTTP_MP}), ["gunicorn", "uvicorn", "httptools"],
               _gunicorn("uvicorn.workers.UvicornWorker", 2, "asgi_app:app")),
    ServerSpec("wssync-w2t4", "wssync --workers 2 --threads 4, the Flask app (WSGI)",
               frozenset({FLASK_MP}), ["wssync", "flask"], _wssync(4, 2, "flask_app:app")),
    ServerSpec("gthread-w2", "gunicorn -k gthread -w 2 --threads 4, the Flask app",
               frozenset({FLASK_MP}), ["gunicorn", "flask"],
               _gunicorn("gthread", 2, "flask_app:app", "--threads", "4")),
    ServerSpec("waitress-flask", "waitress, threads=4, the Flask app", frozenset({FLASK_MP}),
               ["waitress", "flask"],
               lambda host, port: ["-m", "waitress", "--threads=4", f"--listen={host}:{port}",
                                   "flask_app:app"],
               # as above; and wrk's 100 connections are exactly its default connection limit
               log_ignore=r"waitress.queue:Task queue depth|reached the connection limit"),
    # -- the Socket.IO app (socketio_idle.py, socketio_acks.py) -------------------------
    ServerSpec("sio-wssync", "wssync, reactor mode, the Flask-SocketIO app",
               frozenset({SIO_IDLE, SIO_ACKS}), ["wssync", "flask_socketio"],
               _wssync(0, app="socketio_app:app"), has_http=False),
    ServerSpec("sio-wssync-t8", "wssync --threads 8, the Flask-SocketIO app",
               frozenset({SIO_IDLE, SIO_ACKS}), ["wssync", "flask_socketio"],
               _wssync(8, app="socketio_app:app"), has_http=False),
    # Flask-SocketIO's documented threading deployment: one worker (sessions are not
    # sticky across gunicorn workers), a thread per WebSocket
    ServerSpec("sio-gthread", "gunicorn -k gthread -w 1 --threads 100, threading mode",
               frozenset({SIO_IDLE, SIO_ACKS}), ["gunicorn", "flask_socketio", "simple_websocket"],
               _gunicorn("gthread", 1, "socketio_app:app", "--threads", "100"), has_http=False),
    ServerSpec("sio-gevent", "gunicorn -k GeventWebSocketWorker -w 1, gevent mode",
               frozenset({SIO_IDLE, SIO_ACKS}), ["gunicorn", "flask_socketio", "geventwebsocket"],
               _gunicorn("geventwebsocket.gunicorn.workers.GeventWebSocketWorker", 1,
                         "socketio_app:app", "-e", "BENCH_SIO_ASYNC_MODE=gevent"),
               has_http=False),
    # gunicorn's default of 1,000 connections per worker raised past the idle count
    ServerSpec("sio-gevent-wc", "the same, --worker-connections 10000",
               frozenset({SIO_IDLE, SIO_ACKS}), ["gunicorn", "flask_socketio", "geventwebsocket"],
               _gunicorn("geventwebsocket.gunicorn.workers.GeventWebSocketWorker", 1,
                         "socketio_app:app", "-e", "BENCH_SIO_ASYNC_MODE=gevent",
                         "--worker-connections", "10000"), has_http=False),
    ServerSpec("sio-wssync-w1", "wssync --workers 1, reactor mode, the Flask-SocketIO app",
               frozenset({SIO_ACKS_MP}), ["wssync", "flask_socketio"],
               _wssync(0, 1, "socketio_app:app"), has_http=False),
    ServerSpec("sio-wssync-w2", "wssync --workers 2, reactor mode, the Flask-SocketIO app",
               frozenset({SIO_ACKS_MP}), ["wssync", "flask_socketio"],
               _wssync(0, 2, "socketio_app:app"), has_http=False),
]
SERVERS += _threaded(FLASK, "flask_app:app", ["flask"]) + _threaded(WSGI, "wsgi_app:app", [])
BY_NAME = {spec.name: spec for spec in SERVERS}

# Directories put first on the servers' PYTHONPATH (run.py puts a snapshot of the wssync
# package there, so that a working tree edited during a run cannot mix two versions).
PYTHONPATH_PREFIX: List[str] = []

_LOG_PROBLEM = re.compile(r"Traceback|ERROR|CRITICAL|Exception|WARNING|Error", re.IGNORECASE)


class ServerProcess:
    """One running server, pinned to ``cpus`` with ``taskset`` (default
    ``common.SERVER_CPU``); with ``tls`` (certificate and key files) it serves HTTPS
    and WSS instead, and :attr:`ssl_context` is a client context that trusts that
    certificate."""

    def __init__(self, spec: ServerSpec, log_path: str, host: str = "127.0.0.1",
                 python: str = sys.executable, port: Optional[int] = None,
                 tls: Optional[TlsFiles] = None, cpus: Optional[str] = None) -> None:
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
        self.cpus = cpus or str(common.SERVER_CPU)
        argv = ["taskset", "-c", self.cpus, python, *spec.argv(host, self.port)]
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

    def cpu_by_process(self) -> Dict[int, float]:
        """utime + stime of each process of the tree (the first: the one started), by pid."""
        return common.cpu_by_process(self.pid)

    def stats(self, timeout: float = 10.0) -> Dict[str, Any]:
        """The answer of the spec's ``stats_path`` (``Server.stats()``) on a new connection."""
        if self.spec.stats_path is None:
            raise ValueError(f"{self.spec.name} has no statistics route")
        status, body, _ = common.http_get(self.host, self.port, self.spec.stats_path,
                                          timeout=timeout, ssl_context=self.ssl_context)
        if status != 200:
            raise RuntimeError(f"{self.spec.stats_path} answered {status} {body[:60]!r}")
        answer: Dict[str, Any] = json.loads(body)
        return answer

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


def cpus_for(spec: ServerSpec, workload: str) -> str:
    """Where ``spec`` runs for ``workload``: unpinned for the multi-process workloads
    (and for a server that only takes part in those), else ``common.SERVER_CPU``."""
    if workload in MP_WORKLOADS or not spec.workloads - frozenset(MP_WORKLOADS):
        return common.ALL_CPUS
    return str(common.SERVER_CPU)


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
