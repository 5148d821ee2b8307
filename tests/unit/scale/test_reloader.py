"""``--reload``: the watcher on its own, then ``python -m wssync --reload`` as a
developer runs it (real processes, edits to real files, real signals)."""

from __future__ import annotations

import importlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Iterator, List, Optional

import pytest
import requests
from helpers import finish, free_port, refused, wait_listening, wait_until
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from wssync.scale.reloader import Watcher

APP = """\
from wssync import App

app = App()

@app.route("/")
def index(request):
    return {answer!r}

@app.websocket("/ws")
def echo(ws, message):
    ws.send(message)
"""


def _touch_later(path: Path) -> None:
    """A new modification time, whatever the file system's timestamp granularity."""
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 2_000_000_000))


@pytest.fixture
def module_dir(tmp_path: Path) -> Iterator[Path]:
    sys.path.insert(0, str(tmp_path))
    yield tmp_path
    sys.path.remove(str(tmp_path))
    for name in [n for n, m in sys.modules.items()
                 if str(getattr(m, "__file__", "")).startswith(str(tmp_path))]:
        del sys.modules[name]


def test_watcher_reports_an_edited_module_once(module_dir: Path) -> None:
    source = module_dir / "watched_one.py"
    source.write_text("X = 1\n")
    importlib.import_module("watched_one")
    watcher = Watcher()
    assert str(source.resolve()) in watcher.files()
    assert watcher.changed() is None
    _touch_later(source)
    assert watcher.changed() == str(source.resolve())
    assert watcher.changed() is None  # reported once, then the new time is the reference


def test_watcher_finds_modules_imported_after_it_started(module_dir: Path) -> None:
    watcher = Watcher()
    late = module_dir / "watched_late.py"
    late.write_text("Y = 2\n")
    importlib.import_module("watched_late")  # as Django imports views at the first request
    assert watcher.changed() is None  # first seen: its time is the reference
    _touch_later(late)
    assert watcher.changed() == str(late.resolve())


def test_watcher_leaves_the_standard_library_and_site_packages_alone() -> None:
    files = Watcher().files()
    assert json.__file__ is not None and pytest.__file__ is not None
    assert os.path.realpath(json.__file__) not in files  # stdlib
    assert os.path.realpath(pytest.__file__) not in files  # site-packages


def test_watcher_watches_extra_files(tmp_path: Path) -> None:
    broken = tmp_path / "broken.py"  # a module that failed to import is not in sys.modules
    broken.write_text("x = (\n")
    watcher = Watcher([str(broken)])
    _touch_later(broken)
    assert watcher.changed() == str(broken.resolve())


# -- end to end --------------------------------------------------------------------


def _env() -> dict[str, str]:
    # The wssync of this checkout in the children too, whatever is installed.
    return dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[3]))


def _start(tmp_path: Path, port: int, extra: Optional[List[str]] = None,
           new_session: bool = False) -> subprocess.Popen[str]:
    """The server with --reload; its stderr goes to ``tmp_path/stderr.txt`` (see
    :func:`_log`)."""
    args = ["--app", "devapp:app", "--host", "127.0.0.1", "--port", str(port), "--reload",
            *(extra or [])]
    with open(tmp_path / "stderr.txt", "w") as stderr:
        return subprocess.Popen([sys.executable, "-m", "wssync", *args], cwd=tmp_path,
                                env=_env(), stdout=subprocess.DEVNULL, stderr=stderr, text=True,
                                start_new_session=new_session)


def _log(tmp_path: Path) -> str:
    """What the server has written to stderr so far."""
    return (tmp_path / "stderr.txt").read_text()


def _answer(port: int) -> Optional[str]:
    try:
        return requests.get(f"http://127.0.0.1:{port}/", timeout=5).text
    except requests.ConnectionError:
        return None  # between two children


def _edit(path: Path, text: str) -> None:
    path.write_text(text)
    _touch_later(path)  # and never the same time as the bytecode cached for the old text


def test_edit_restarts_with_the_new_code_and_a_syntax_error_waits(tmp_path: Path) -> None:
    source = tmp_path / "devapp.py"
    source.write_text(APP.format(answer="first"))
    port = free_port()
    proc = _start(tmp_path, port, ["--threads", "2"])
    try:
        wait_listening(port, proc)
        assert _answer(port) == "first"
        with connect(f"ws://127.0.0.1:{port}/ws", open_timeout=5) as ws:
            _edit(source, APP.format(answer="second version"))
            with pytest.raises(ConnectionClosed):
                ws.recv(timeout=30)
            assert ws.close_code == 1001  # the old child stopped gracefully
        assert wait_until(lambda: _answer(port) == "second version", timeout=30)

        _edit(source, APP.format(answer="third") + "oops = (\n")
        assert wait_until(lambda: "waiting for a change" in _log(tmp_path), timeout=30)
        assert refused(port) and proc.poll() is None  # the child waits, the parent too
        _edit(source, APP.format(answer="fixed at last"))
        assert wait_until(lambda: _answer(port) == "fixed at last", timeout=30)
        with connect(f"ws://127.0.0.1:{port}/ws", open_timeout=5) as ws:
            ws.send("still here")
            assert ws.recv(timeout=5) == "still here"
    finally:
        proc.send_signal(signal.SIGTERM)
        finish(proc, timeout=30)
    err = _log(tmp_path)
    assert proc.returncode == 0, err
    assert "for development only" in err
    assert err.count("wssync: detected change in devapp.py, reloading") == 3, err
    assert "SyntaxError" in err and "devapp.py" in err
    assert "waiting for a change" in err
    assert err.count("serving on http://127.0.0.1") == 3
    assert refused(port)


def test_ctrl_c_stops_parent_and_child_once(tmp_path: Path) -> None:
    (tmp_path / "devapp.py").write_text(APP.format(answer="hi"))
    port = free_port()
    proc = _start(tmp_path, port, new_session=True)
    try:
        wait_listening(port, proc)
        assert _answer(port) == "hi"
        with connect(f"ws://127.0.0.1:{port}/ws", open_timeout=5) as ws:
            os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the group
            with pytest.raises(ConnectionClosed):
                ws.recv(timeout=20)
            assert ws.close_code == 1001
    finally:
        finish(proc, timeout=30)
    err = _log(tmp_path)
    assert proc.returncode == 0, err
    assert err.count("SIGTERM received, stopping") == 1, err  # one stop, not "stop now"
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert refused(port)


def test_a_killed_parent_leaves_no_server_behind(tmp_path: Path) -> None:
    (tmp_path / "devapp.py").write_text(APP.format(answer="hi"))
    port = free_port()
    proc = _start(tmp_path, port)
    try:
        wait_listening(port, proc)
        proc.kill()  # no chance to pass anything on
        proc.wait(timeout=10)
        assert wait_until(lambda: refused(port), timeout=30)
    finally:
        finish(proc)


@pytest.mark.parametrize("args, message", [
    (["--app", "nosuchmodule:app"], "cannot import 'nosuchmodule'"),
    (["--app", "nosuchpackage.sub:app"], "cannot import 'nosuchpackage.sub'"),
])
def test_a_missing_module_is_still_a_one_line_error(tmp_path: Path, args: List[str],
                                                    message: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "wssync", "--port", "0", "--reload", *args],
                          cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("workers", ["2", "0"])
def test_reload_with_workers_is_a_one_line_error(tmp_path: Path, workers: str) -> None:
    (tmp_path / "devapp.py").write_text(APP.format(answer="hi"))
    proc = subprocess.run([sys.executable, "-m", "wssync", "--app", "devapp:app", "--port", "0",
                           "--reload", "--workers", workers], cwd=tmp_path, env=_env(),
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "wssync: error: --reload restarts one server process; it cannot be combined with "
        "--workers"]
