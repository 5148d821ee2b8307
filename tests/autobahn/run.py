"""Run the Autobahn TestSuite (RFC 6455 compliance) against a wssync echo server.

Usage::

    python tests/autobahn/run.py [--cases '1.*,2.*'] [--exclude-cases '9.*,12.*,13.*']
                                 [--threads N] [--venv DIR] [--outdir DIR] [--timeout SECONDS]
                                 [--strict] [--set NAME=VALUE ...] [--python2 PATH]

Typical runs::

    python tests/autobahn/run.py                      # all but 9.*, 12.*, 13.*; reactor mode
    python tests/autobahn/run.py --threads 4          # the same in thread-pool mode
    python tests/autobahn/run.py --cases '9.*' --timeout 7200   # performance cases (slow)
    python tests/autobahn/run.py --cases '12.*,13.*'  # permessage-deflate
    python tests/autobahn/run.py --cases '*' --exclude-cases ''  # everything
    python tests/autobahn/run.py --tls                # the same over wss://

What it does:

1. Makes (once; reused while its pins match) a Python 2.7 virtualenv with the
   test suite: ``python2.7 -m pip install virtualenv``, ``python2.7 -m
   virtualenv DIR``, then ``DIR/bin/pip install`` of the pins below.  DIR is
   ``--venv``, else ``$WSSYNC_AUTOBAHN_VENV``, else
   ``${XDG_CACHE_HOME:-~/.cache}/wssync-autobahn/venv``.  The interpreter is
   ``--python2``, else ``$(pyenv root)/versions/2.7.18/bin/python2.7``, else
   ``python2.7`` on PATH.  Only PyPI is needed.
2. Starts ``echo_server.py`` (beside this file) with this interpreter on
   127.0.0.1 and a free port: ``--threads 0`` is reactor mode, ``N`` thread-pool
   mode; ``--set NAME=VALUE`` passes other server settings through.
3. Writes a fuzzingclient spec (``spec.json`` in the output directory) and runs
   ``wstest -m fuzzingclient -s spec.json``, killed after ``--timeout`` seconds.
4. Reads the report's ``index.json`` and prints, per section (the case id's
   first number), the count of each behavior and of each closing behavior,
   then every case whose behavior or closing behavior is neither OK nor
   INFORMATIONAL.  The server is stopped in every case.

The report (``index.html`` and one ``wssync_case_X_Y_Z.{json,html}`` per case,
with the expected and received events and the wire log), ``wstest.log`` and
``server.log`` stay in the output directory: ``--outdir``, else a new
``wssync-autobahn-*`` directory under the system's temp dir.

``--exclude-cases`` defaults to ``9.*,12.*,13.*`` (9: slow performance
cases; 12, 13: permessage-deflate) when ``--cases`` is not given, and to
nothing when it is.  Patterns are the suite's (``*`` wildcards, comma
separated).

Exit status: 0 all good; 1 a case whose behavior is FAILED or UNIMPLEMENTED
or whose closing behavior is FAILED or UNCLEAN (with ``--strict`` also a
behavior of NON-STRICT or a closing behavior of WRONG CODE or FAILED BY
CLIENT), or a case that was asked for but did not run; 2 the run itself failed
(virtualenv, server start, wstest crash or timeout, no report).

Pinned packages (``PINS``) and why: PyPI's ``autobahntestsuite`` is Python 2
only (it imports ``autobahn`` 0.10.x APIs long gone from Python 3 releases).
25.10.1 is the maintainers' 2025 repackaging of 0.8.2 (same test cases, only
the copyright line differs) that pins its direct dependencies exactly to the
last Python 2.7 releases that work together (Twisted 19.10.0, autobahn 0.10.9,
txaio 2.1.0, cryptography 3.3.2, pyOpenSSL 19.1.0, klein 17.10.0, Werkzeug
1.0.1, Jinja2 2.11.3, setuptools 44.0.0, ...).  Its transitive dependencies are
not pinned upstream, so the rest of a known-good ``pip freeze`` is pinned here
too (attrs 21.4.0, Automat 22.10.0, hyperlink 21.0.0, wsaccel 0.6.6, ujson
2.0.3, ...): newer releases of those have dropped Python 2.7 (pip mostly skips
them through Requires-Python, but not every old sdist declares it).
virtualenv is pinned to 20.15.1, the last release that runs on 2.7.  The
``autobahn[accelerate]`` extra (wsaccel: C UTF-8 validation and masking, which
keeps the 16 MiB cases fast) is built from its sdist, so the first install
needs a C compiler and the Python 2.7 headers (pyenv's build has them).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import IO, Any, Dict, List, Optional, Sequence, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
ECHO_SERVER = os.path.join(HERE, "echo_server.py")
AGENT = "wssync"
DEFAULT_EXCLUDE = "9.*,12.*,13.*"

VIRTUALENV_PIN = "virtualenv==20.15.1"
PINS = [
    "autobahntestsuite==25.10.1",
    "autobahn[twisted,accelerate]==0.10.9",
    "argparse==1.4.0",
    "attrs==21.4.0",
    "Automat==22.10.0",
    "cffi==1.15.1",
    "constantly==15.1.0",
    "cryptography==3.3.2",
    "enum34==1.1.10",
    "hyperlink==21.0.0",
    "idna==2.10",
    "incremental==16.10.1",
    "ipaddress==1.0.23",
    "Jinja2==2.11.3",
    "klein==17.10.0",
    "linecache2==1.0.0",
    "MarkupSafe==1.1.1",
    "pyasn1==0.5.1",
    "pyasn1-modules==0.3.0",
    "pycparser==2.21",
    "PyHamcrest==1.10.1",
    "pyOpenSSL==19.1.0",
    "service-identity==18.1.0",
    "setuptools==44.0.0",
    "six==1.16.0",
    "traceback2==1.4.0",
    "Twisted==19.10.0",
    "txaio==2.1.0",
    "typing==3.10.0.0",
    "ujson==2.0.3",
    "unittest2==1.1.0",
    "Werkzeug==1.0.1",
    "wsaccel==0.6.6",
    "zope.interface==4.6.0",
]
MARKER = ".wssync-autobahn-pins"  # in the virtualenv: the pins it was built with

BEHAVIORS = ["OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED"]
CLOSE_BEHAVIORS = ["OK", "INFORMATIONAL", "WRONG CODE", "FAILED BY CLIENT", "UNCLEAN", "FAILED"]
GOOD = {"OK", "INFORMATIONAL"}
FATAL = {"FAILED", "UNIMPLEMENTED"}
FATAL_CLOSE = {"FAILED", "UNCLEAN"}


class RunError(Exception):
    """The run itself could not be done (exit status 2)."""


def log(message: str) -> None:
    print(f"[autobahn] {message}", flush=True)


# -- the Python 2.7 virtualenv --------------------------------------------------------


def default_venv() -> str:
    env = os.environ.get("WSSYNC_AUTOBAHN_VENV")
    if env:
        return env
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "wssync-autobahn", "venv")


def find_python2() -> str:
    root = os.environ.get("PYENV_ROOT")
    if not root and shutil.which("pyenv"):
        try:
            root = subprocess.run(["pyenv", "root"], capture_output=True, text=True,
                                  timeout=30, check=True).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            root = None
    if not root and os.path.isdir(os.path.expanduser("~/.pyenv")):
        root = os.path.expanduser("~/.pyenv")
    if root:
        candidate = os.path.join(root, "versions", "2.7.18", "bin", "python2.7")
        if os.path.exists(candidate):
            return candidate
    found = shutil.which("python2.7")
    if found:
        return found
    raise RunError("no Python 2.7: install it with `pyenv install 2.7.18` or pass --python2")


def run_step(command: Sequence[str], what: str, timeout: float = 1800) -> None:
    log(f"{what}: {' '.join(command)}")
    try:
        proc = subprocess.run(list(command), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise RunError(f"{what}: timed out after {timeout:.0f} s") from None
    except OSError as exc:
        raise RunError(f"{what}: {exc}") from None
    if proc.returncode != 0:
        tail = "\n".join(proc.stdout.splitlines()[-30:])
        raise RunError(f"{what} failed (exit {proc.returncode}):\n{tail}")


def ensure_venv(venv: str, python2: Optional[str]) -> str:
    """The path of ``wstest`` in ``venv``, creating and filling the venv if needed."""
    wstest = os.path.join(venv, "bin", "wstest")
    marker = os.path.join(venv, MARKER)
    wanted = "\n".join(PINS) + "\n"
    try:
        with open(marker) as f:
            if f.read() == wanted and os.path.exists(wstest):
                log(f"reusing the Python 2.7 virtualenv {venv}")
                return wstest
    except OSError:
        pass
    interpreter = python2 or find_python2()
    venv_python = os.path.join(venv, "bin", "python")
    if not os.path.exists(venv_python):
        probe = subprocess.run([interpreter, "-c", "import virtualenv"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if probe.returncode != 0:
            run_step([interpreter, "-m", "pip", "install", "--disable-pip-version-check",
                      VIRTUALENV_PIN], "installing virtualenv for Python 2.7")
        os.makedirs(os.path.dirname(os.path.abspath(venv)), exist_ok=True)
        run_step([interpreter, "-m", "virtualenv", venv], "creating the virtualenv")
    requirements = os.path.join(venv, "wssync-autobahn-requirements.txt")
    with open(requirements, "w") as f:
        f.write(wanted)
    run_step([venv_python, "-m", "pip", "install", "--disable-pip-version-check",
              "-r", requirements], "installing the Autobahn TestSuite")
    if not os.path.exists(wstest):
        raise RunError(f"the install did not produce {wstest}")
    with open(marker, "w") as f:
        f.write(wanted)
    return wstest


# -- the echo server ------------------------------------------------------------------


def source_state() -> str:
    """Which wssync the echo server runs: the checkout's commit and local changes."""
    root = os.path.dirname(os.path.dirname(HERE))
    try:
        head = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=30).stdout.strip()
        changed = subprocess.run(["git", "-C", root, "status", "--porcelain", "--", "wssync"],
                                 capture_output=True, text=True, timeout=30).stdout.split("\n")
    except (OSError, subprocess.SubprocessError):
        return f"wssync in {root}"
    files = [line[3:] for line in changed if line.strip()]
    dirty = f", uncommitted changes in {', '.join(files)}" if files else ""
    return f"wssync in {root} at {head or '?'}{dirty}"


class EchoServer:
    """``echo_server.py`` in a subprocess; its stderr goes to ``server.log``."""

    def __init__(self, threads: int, settings: List[str], logfile: str,
                 tls: Optional[Tuple[str, str]] = None) -> None:
        command = [sys.executable, ECHO_SERVER, "--host", "127.0.0.1", "--port", "0",
                   "--threads", str(threads)]
        if tls is not None:
            command += ["--certfile", tls[0], "--keyfile", tls[1]]
        for setting in settings:
            command += ["--set", setting]
        self._log = open(logfile, "wb")  # noqa: SIM115 (open while the server runs)
        log("starting the echo server: " + " ".join(command))
        self.proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=self._log)
        self.port = self._read_port()

    def _read_port(self, timeout: float = 30.0) -> int:
        stdout = self.proc.stdout
        assert stdout is not None
        result: List[bytes] = []
        reader = threading.Thread(target=lambda: result.append(stdout.readline()), daemon=True)
        reader.start()
        reader.join(timeout)
        line = result[0].decode("utf-8", "replace").strip() if result else ""
        match = re.fullmatch(r"LISTENING (\S+) (\d+)", line)
        if not match:
            self.stop()
            raise RunError(f"the echo server did not start (said {line!r}); "
                           f"see {self._log.name}")
        return int(match.group(2))

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 20.0) -> Optional[int]:
        """Stop it (SIGTERM: graceful, then SIGKILL); its exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log(f"the echo server did not stop within {timeout:.0f} s; killing it")
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._log.close()
        return self.proc.returncode


def self_signed(outdir: str) -> Tuple[str, str]:
    """A certificate and key for 127.0.0.1 in ``outdir`` (the suite does not verify it)."""
    cert, key = os.path.join(outdir, "cert.pem"), os.path.join(outdir, "key.pem")
    try:
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                        key, "-out", cert, "-days", "1", "-subj", "/CN=127.0.0.1"],
                       check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        raise RunError(f"cannot make a certificate with openssl: {exc}") from None
    return cert, key


# -- wstest ---------------------------------------------------------------------------


def split_patterns(text: str) -> List[str]:
    return [p.strip() for p in text.split(",") if p.strip()]


def write_spec(path: str, outdir: str, port: int, cases: List[str],
               exclude: List[str], scheme: str = "ws") -> None:
    spec = {
        "outdir": outdir,
        "servers": [{"agent": AGENT, "url": f"{scheme}://127.0.0.1:{port}"}],
        "cases": cases,
        "exclude-cases": exclude,
        "exclude-agent-cases": {},
    }
    with open(path, "w") as f:
        json.dump(spec, f, indent=2)
        f.write("\n")


class WstestRun:
    """Facts gathered from wstest's output while it runs."""

    def __init__(self) -> None:
        self.planned: Optional[int] = None
        self.started = 0
        self.last_case = ""
        self.connection_failures: List[str] = []
        self.traceback = False


def _pump(stream: IO[bytes], logfile: IO[bytes], facts: WstestRun, echo: bool) -> None:
    for raw in iter(stream.readline, b""):
        logfile.write(raw)
        logfile.flush()
        line = raw.decode("utf-8", "replace").rstrip()
        if echo:
            print(line, flush=True)
        match = re.search(r"Ok, will run (\d+) test cases", line)
        if match:
            facts.planned = int(match.group(1))
        match = re.search(r"Running test case ID (\S+)", line)
        if match:
            facts.started += 1
            facts.last_case = match.group(1)
        if line.startswith("Connection to ") and " failed " in line:
            facts.connection_failures.append(line)
        if line.startswith("Traceback"):
            facts.traceback = True


def run_wstest(wstest: str, spec: str, logpath: str, timeout: float, server: EchoServer,
               echo: bool, progress_every: float = 60.0) -> WstestRun:
    facts = WstestRun()
    command = [wstest, "-m", "fuzzingclient", "-s", spec]
    log(f"running {' '.join(command)} (timeout {timeout:.0f} s; output in {logpath})")
    with open(logpath, "wb") as logfile:
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                cwd=os.path.dirname(spec), start_new_session=True)
        assert proc.stdout is not None
        pump = threading.Thread(target=_pump, args=(proc.stdout, logfile, facts, echo),
                                daemon=True)
        pump.start()
        start = time.monotonic()
        next_progress = start + progress_every
        server_gone = False
        try:
            while True:
                try:
                    proc.wait(timeout=1.0)
                    break
                except subprocess.TimeoutExpired:
                    pass
                now = time.monotonic()
                if now - start > timeout:
                    raise RunError(f"wstest timed out after {timeout:.0f} s "
                                   f"({facts.started} cases started, last {facts.last_case})")
                if not server_gone and not server.alive():
                    server_gone = True
                    log(f"the echo server exited ({server.proc.returncode}) during case "
                        f"{facts.last_case}; wstest goes on without it")
                if now >= next_progress and not echo:
                    next_progress = now + progress_every
                    planned = facts.planned if facts.planned is not None else "?"
                    log(f"progress: {facts.started}/{planned} cases started, "
                        f"at {facts.last_case} ({now - start:.0f} s)")
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            pump.join(5.0)
            proc.stdout.close()
    if proc.returncode != 0:
        raise RunError(f"wstest exited with status {proc.returncode}; see {logpath}")
    return facts


# -- the report -----------------------------------------------------------------------


def case_key(case_id: str) -> Tuple[int, ...]:
    return tuple(int(part) if part.isdigit() else 0 for part in case_id.split("."))


def summarize(results: Dict[str, Dict[str, Any]], outdir: str, strict: bool) -> int:
    """Print the tables and the cases that are not OK; the number that fail the run."""
    sections: Dict[int, Dict[str, collections.Counter[str]]] = {}
    for case_id, result in results.items():
        section = sections.setdefault(case_key(case_id)[0], {
            "behavior": collections.Counter(), "close": collections.Counter()})
        section["behavior"][result.get("behavior", "?")] += 1
        section["close"][result.get("behaviorClose", "?")] += 1

    behaviors = BEHAVIORS + sorted({b for s in sections.values() for b in s["behavior"]}
                                   - set(BEHAVIORS))
    closes = CLOSE_BEHAVIORS + sorted({b for s in sections.values() for b in s["close"]}
                                      - set(CLOSE_BEHAVIORS))
    for title, key, columns in (("behavior", "behavior", behaviors),
                                ("closing behavior (behaviorClose)", "close", closes)):
        print(f"\nPer section, {title}:")
        header = ["section", "cases", *columns]
        widths = [max(len(h), 7) for h in header]
        print("  ".join(h.rjust(w) for h, w in zip(header, widths)))
        totals: collections.Counter[str] = collections.Counter()
        for number in sorted(sections):
            counts = sections[number][key]
            totals.update(counts)
            row = [str(number), str(sum(counts.values())), *(str(counts[c]) for c in columns)]
            print("  ".join(v.rjust(w) for v, w in zip(row, widths)))
        row = ["total", str(sum(totals.values())), *(str(totals[c]) for c in columns)]
        print("  ".join(v.rjust(w) for v, w in zip(row, widths)))

    bad_behaviors = FATAL | ({"NON-STRICT"} if strict else set())
    bad_closes = FATAL_CLOSE | ({"WRONG CODE", "FAILED BY CLIENT"} if strict else set())
    failures = 0
    others = []
    for case_id in sorted(results, key=case_key):
        result = results[case_id]
        behavior = result.get("behavior", "?")
        close = result.get("behaviorClose", "?")
        if behavior in GOOD and close in GOOD:
            continue
        fatal = (behavior in bad_behaviors or close in bad_closes
                 or behavior not in BEHAVIORS or close not in CLOSE_BEHAVIORS)
        failures += fatal
        others.append((case_id, behavior, close, result.get("remoteCloseCode"),
                       result.get("duration"), result.get("reportfile", ""), fatal))
    if others:
        print(f"\nCases not OK/INFORMATIONAL ({len(others)}; report files in {outdir}):")
        for case_id, behavior, close, code, duration, report, fatal in others:
            print(f"  {'*' if fatal else ' '} {case_id:<9} behavior={behavior:<14} "
                  f"behaviorClose={close:<16} remoteCloseCode={code} duration={duration}ms "
                  f"{report}")
        print("  (* counts as a failure" + ("" if strict else "; --strict adds NON-STRICT, "
                                            "WRONG CODE, FAILED BY CLIENT") + ")")
    else:
        print("\nEvery case is OK or INFORMATIONAL.")
    return failures


# -- main -----------------------------------------------------------------------------


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Run the Autobahn TestSuite fuzzing client against a wssync echo server.",
        epilog="See the module docstring (tests/autobahn/run.py) for details and pins.")
    parser.add_argument("--cases", default=None,
                        help="comma-separated case patterns (default: '*')")
    parser.add_argument("--exclude-cases", default=None,
                        help=f"comma-separated patterns to skip (default: '{DEFAULT_EXCLUDE}' "
                             "without --cases, none with it)")
    parser.add_argument("--threads", type=int, default=0,
                        help="server threads: 0 reactor mode, N thread-pool mode (default: 0)")
    parser.add_argument("--venv", default=None,
                        help=f"the Python 2.7 virtualenv for the suite (default: {default_venv()})")
    parser.add_argument("--python2", default=None, help="the Python 2.7 interpreter to use")
    parser.add_argument("--outdir", default=None,
                        help="report directory (default: a new temp dir, kept)")
    parser.add_argument("--timeout", type=float, default=3600.0,
                        help="seconds wstest may run before it is killed (default: 3600)")
    parser.add_argument("--strict", action="store_true",
                        help="NON-STRICT, WRONG CODE and FAILED BY CLIENT fail the run too")
    parser.add_argument("--set", dest="settings", action="append", default=[],
                        metavar="NAME=VALUE", help="an extra server setting (repeatable)")
    parser.add_argument("--verbose", "-v", action="store_true", help="show wstest's output")
    parser.add_argument("--tls", action="store_true",
                        help="run over wss:// (a self-signed certificate made with openssl)")
    parser.add_argument("--setup-only", action="store_true",
                        help="only make the virtualenv, then exit")
    return parser.parse_args(argv)


def _interrupt(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    if args.threads < 0:
        print("--threads must be 0 or more", file=sys.stderr)
        return 2
    cases = split_patterns(args.cases if args.cases is not None else "*")
    if args.exclude_cases is not None:
        exclude = split_patterns(args.exclude_cases)
    else:
        exclude = split_patterns(DEFAULT_EXCLUDE) if args.cases is None else []
    # A SIGTERM to the runner unwinds like Ctrl-C, so the server is always stopped.
    signal.signal(signal.SIGTERM, _interrupt)

    started = time.monotonic()
    server: Optional[EchoServer] = None
    try:
        wstest = ensure_venv(os.path.abspath(args.venv or default_venv()), args.python2)
        if args.setup_only:
            log(f"the suite is ready: {wstest}")
            return 0
        if args.outdir:
            outdir = os.path.abspath(args.outdir)
            os.makedirs(outdir, exist_ok=True)
            stale = os.path.join(outdir, "index.json")
            if os.path.exists(stale):
                os.remove(stale)
        else:
            outdir = tempfile.mkdtemp(prefix="wssync-autobahn-")
        log(f"cases {cases}, excluded {exclude}, server threads {args.threads}, "
            f"report in {outdir}")
        tls = self_signed(outdir) if args.tls else None
        scheme = "wss" if tls else "ws"
        server = EchoServer(args.threads, args.settings, os.path.join(outdir, "server.log"),
                            tls)
        log(f"echo server pid {server.proc.pid} on {scheme}://127.0.0.1:{server.port} "
            f"({source_state()})")
        spec = os.path.join(outdir, "spec.json")
        write_spec(spec, outdir, server.port, cases, exclude, scheme)
        wstest_started = time.monotonic()
        facts = run_wstest(wstest, spec, os.path.join(outdir, "wstest.log"), args.timeout,
                           server, args.verbose)
        log(f"wstest took {time.monotonic() - wstest_started:.1f} s")
        server_alive = server.alive()
        status = server.stop()
        server = None
        if not server_alive:
            log(f"the echo server had exited before the end (status {status}); "
                f"see {outdir}/server.log")

        index = os.path.join(outdir, "index.json")
        try:
            with open(index) as f:
                results = json.load(f).get(AGENT, {})
        except (OSError, ValueError) as exc:
            raise RunError(f"no report: {exc}") from None
        failures = summarize(results, outdir, args.strict)
        missing = 0
        if facts.planned is not None and len(results) < facts.planned:
            missing = facts.planned - len(results)
            log(f"only {len(results)} of {facts.planned} planned cases have a result")
        passed = not failures and not missing
        for line in facts.connection_failures:
            log(f"wstest: {line}")
            passed = False
        if not server_alive:
            passed = False
        log(f"report: {os.path.join(outdir, 'index.html')}")
        log(f"{'PASSED' if passed else 'FAILED'}: {len(results)} cases in "
            f"{time.monotonic() - started:.1f} s")
        # The plain closing line: cases passed, cases failed (or asked for but not run).
        print(f"autobahn: {len(results) - failures} passed, {failures + missing} failed",
              flush=True)
        return 0 if passed else 1
    except RunError as exc:
        log(f"error: {exc}")
        return 2
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    sys.exit(main())
