"""``--reload``: restart the server when the application's Python files change.

For development only.  A parent process runs the command line again as a
child (same arguments, ``WSSYNC_RELOADER_CHILD`` set to its pid) and starts a new child
whenever the last one exits with :data:`RESTART`.  The child watches the
files of every imported module that lives outside the standard library and
site-packages, polling their modification times once a second; on a change
it says so in one line, stops its server gracefully and exits with
:data:`RESTART`.  An app that fails to import (a syntax error mid-edit) is
reported and the child waits for the next change instead of exiting.

The parent never imports the application and never touches a socket: each
child binds the port anew (the listening socket has ``SO_REUSEADDR``, and
the previous child has closed it before exiting).  It owns the signals:
SIGINT (Ctrl-C) and SIGTERM become one SIGTERM to the child, which the
child answers with a graceful stop; the child ignores the SIGINT a terminal
sends to the whole foreground process group, so that one Ctrl-C is one stop.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import sysconfig
import threading
import traceback
from types import TracebackType
from typing import Any, Callable, Dict, Iterable, List, Optional, Set, TypeVar

from ..errors import WssyncError

CHILD_ENV = "WSSYNC_RELOADER_CHILD"
RESTART = 3  # the child's exit status that asks the parent for a new child
POLL_INTERVAL = 1.0

T = TypeVar("T")


def in_child() -> bool:
    """Whether this process is a reloader's child (it serves; the parent only restarts)."""
    return os.environ.get(CHILD_ENV, "").isdigit()


def _parent_alive() -> bool:
    # The parent wrote its pid: once it is gone our parent is someone else, even if
    # it died before we first looked.
    return str(os.getppid()) == os.environ.get(CHILD_ENV)


def _say(text: str) -> None:
    print(f"wssync: {text}", file=sys.stderr, flush=True)


# -- the parent ---------------------------------------------------------------------


def run_parent(argv: List[str]) -> int:
    """Run ``python -m wssync ARGV`` as a child until it exits other than to restart.

    Returns the exit status for the command line: 0 after a stop by signal,
    otherwise the last child's (a child killed by a signal counts as 1).
    """
    command = [sys.executable, "-m", "wssync", *argv]
    env = dict(os.environ, **{CHILD_ENV: str(os.getpid())})
    child: Optional[subprocess.Popen[bytes]] = None
    stopping = False

    def on_signal(_signum: int, _frame: Any) -> None:
        nonlocal stopping
        stopping = True
        if child is not None and child.poll() is None:
            child.send_signal(signal.SIGTERM)  # a second signal: the child stops at once

    previous = {signum: signal.signal(signum, on_signal)
                for signum in (signal.SIGINT, signal.SIGTERM)}
    _say("--reload: the server restarts when its Python files change (for development "
         "only, never in production)")
    try:
        while not stopping:
            child = subprocess.Popen(command, env=env)
            status = child.wait()
            if status != RESTART:
                break
        assert child is not None
        status = child.wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if stopping and status in (0, RESTART, -signal.SIGTERM):
        return 0
    return status if status >= 0 else 1


# -- the child ----------------------------------------------------------------------


def ignore_terminal_interrupt() -> None:
    """In the child: Ctrl-C reaches the whole process group, but only the parent
    decides; it passes the stop on as SIGTERM.  A handler of our own (not
    SIG_IGN) also keeps the server from taking SIGINT over."""
    signal.signal(signal.SIGINT, lambda _signum, _frame: None)


def _library_prefixes() -> List[str]:
    """Where the standard library and installed packages live: never watched."""
    paths = sysconfig.get_paths()
    prefixes = {paths[name] for name in ("stdlib", "platstdlib", "purelib", "platlib")
                if name in paths}
    prefixes.update((sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix))
    return sorted(os.path.join(os.path.realpath(p), "") for p in prefixes)


class Watcher:
    """Modification times of the application's files, compared at each :meth:`changed`.

    The files are those of the modules in ``sys.modules`` outside the
    library prefixes, looked up anew at each poll (a Django project imports
    its views at the first request), plus any given explicitly.  A file is
    first seen at the poll that finds it; a later poll that finds another
    modification time reports it.
    """

    def __init__(self, extra_files: Iterable[str] = ()) -> None:
        self._prefixes = _library_prefixes()
        self._extra = {os.path.realpath(f) for f in extra_files}
        self._mtimes: Dict[str, int] = {}
        self._verdicts: Dict[str, Optional[str]] = {}  # module __file__ -> watched path
        self.changed()  # the files as they are now, before the server answers anyone

    def files(self) -> Set[str]:
        found = set(self._extra)
        for module in list(sys.modules.values()):
            name = getattr(module, "__file__", None)
            if not isinstance(name, str):
                continue
            path = self._verdicts.get(name, "")
            if path == "":
                path = self._verdicts[name] = self._watched(name)
            if path is not None:
                found.add(path)
        return found

    def _watched(self, name: str) -> Optional[str]:
        path = os.path.realpath(os.path.abspath(name))
        if path.endswith((".pyc", ".pyo")) or not os.path.isfile(path):
            return None  # sourceless, or a frozen or zipped module
        if any(path.startswith(prefix) for prefix in self._prefixes):
            return None
        return path

    def changed(self) -> Optional[str]:
        """The first watched file whose modification time moved since the last poll."""
        for path in sorted(self.files()):
            try:
                mtime = os.stat(path).st_mtime_ns
            except OSError:
                continue  # an editor may replace the file: the new one is seen next poll
            seen = self._mtimes.setdefault(path, mtime)
            if seen != mtime:
                self._mtimes[path] = mtime
                return path
        return None


def _display(path: str) -> str:
    relative = os.path.relpath(path)
    return path if relative.startswith("..") else relative


def _wait_for_change(watcher: Watcher, gone: threading.Event) -> Optional[str]:
    """Poll until a file changes (its path) or ``gone`` is set or the parent dies (None)."""
    while not gone.wait(POLL_INTERVAL):
        if not _parent_alive():
            return None  # the parent was killed: nobody would restart us
        path = watcher.changed()
        if path is not None:
            return path
    return None


def watch_while_serving(stop: Callable[[], None]) -> Callable[[], bool]:
    """Watch on a background thread; on a change (or the parent's death) call ``stop``.

    Returns a function telling whether the stop was for a reload.
    """
    watcher = Watcher()
    gone = threading.Event()
    changed: List[str] = []

    def run() -> None:
        path = _wait_for_change(watcher, gone)
        if gone.is_set():
            return
        if path is not None:
            changed.append(path)
            _say(f"detected change in {_display(path)}, reloading")
        # Until serving has ended: a stop asked before the reactor ran would be lost.
        while not gone.is_set():
            stop()
            gone.wait(0.5)

    threading.Thread(target=run, name="wssync-reloader", daemon=True).start()

    def reloading() -> bool:
        gone.set()
        return bool(changed)

    return reloading


def _files_in(exc: BaseException) -> Set[str]:
    """The files an error points at (its traceback, a SyntaxError's file), causes too:
    a module that failed to import is no longer in ``sys.modules``."""
    files: Set[str] = set()
    seen: Set[int] = set()
    current: Optional[BaseException] = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, SyntaxError) and current.filename:
            files.add(current.filename)
        tb: Optional[TracebackType] = current.__traceback__
        files.update(frame.filename for frame in traceback.extract_tb(tb))
        current = current.__cause__ or current.__context__
    return {f for f in files if os.path.isfile(f)}


def _module_missing(exc: BaseException, module_name: str) -> bool:
    """Whether ``exc`` (or what caused it) says the app's module itself does not exist."""
    current: Optional[BaseException] = exc
    for _ in range(10):
        if current is None:
            return False
        if isinstance(current, ModuleNotFoundError) and current.name \
                and (module_name + ".").startswith(current.name + "."):
            return True
        current = current.__cause__ or current.__context__
    return False


def load_or_wait(load: Callable[[str], T], spec: str) -> T:
    """``load(spec)``; when the app's code fails, report it and wait for an edit.

    After the edit the process exits with :data:`RESTART`, so the parent
    imports everything afresh in a new child.  A module that does not exist at
    all is re-raised: there is no file to wait for.
    """
    try:
        return load(spec)
    except Exception as exc:
        if _module_missing(exc, spec.partition(":")[0]):
            raise
        if isinstance(exc, WssyncError):
            _say(f"error: {exc}")
        elif isinstance(exc, SyntaxError):  # its file, line and caret say it all
            sys.stderr.write("".join(traceback.format_exception_only(type(exc), exc)))
        else:
            traceback.print_exception(type(exc), exc, exc.__traceback__)
        watcher = Watcher(_files_in(exc))
    _say("waiting for a change to the app's files to reload")
    path = _wait_for_change(watcher, threading.Event())
    if path is None:
        raise SystemExit(1)
    _say(f"detected change in {_display(path)}, reloading")
    raise SystemExit(RESTART)
