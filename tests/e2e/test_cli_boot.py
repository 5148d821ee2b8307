"""An app that raises while it loads: ``python -m wssync`` stops with its traceback.

Real processes, alone and with ``--workers 2``: whatever the module raises (a
``KeyError`` for a missing setting, a ``SyntaxError``, the app's own exception)
is printed once, trimmed to the app's frames, the process exits with status 3
(``BOOT_FAILED``) in bounded time and nothing listens on the port afterwards.
A worker that boots and dies later is still restarted.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import List, Set

import pytest
import requests
from helpers import finish, free_port, refused, run_server, wait_listening, wait_until

from wssync.scale.supervisor import BOOT_FAILED

APPS = {
    # name: (source, the line of the user's file the traceback must show, its last line)
    "missing_setting": ("import os\n"
                        "from wssync import App\n"
                        "DATABASE = os.environ['WSSYNC_TEST_NO_SUCH_SETTING']\n"
                        "app = App()\n",
                        'line 3, in <module>', "KeyError: 'WSSYNC_TEST_NO_SUCH_SETTING'"),
    "broken_syntax": ("from wssync import App\n"
                      "app = = App()\n",  # (the same message on every Python)
                      "line 2", "SyntaxError: invalid syntax"),
    "own_error": ("from wssync import App\n"
                  "class ImproperlyConfigured(Exception):\n"
                  "    pass\n"
                  "def configure():\n"
                  "    raise ImproperlyConfigured('SECRET_KEY must not be empty')\n"
                  "configure()\n"
                  "app = App()\n",
                  "line 5, in configure",
                  "own_error.ImproperlyConfigured: SECRET_KEY must not be empty"),
    "exits": ("import sys\n"
              "from wssync import App\n"
              "sys.exit('DATABASE_URL is not set')\n"
              "app = App()\n",
              "line 3, in <module>", "SystemExit: DATABASE_URL is not set"),
}


def boot(tmp_path: Path, name: str, extra: List[str]) -> subprocess.CompletedProcess[str]:
    source = APPS[name][0]
    (tmp_path / f"{name}.py").write_text(source)
    port = free_port()
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "wssync", f"{name}:app", "--port", str(port),
                           *extra], cwd=tmp_path, capture_output=True, text=True, timeout=30,
                          env={k: v for k, v in os.environ.items()
                               if k != "WSSYNC_TEST_NO_SUCH_SETTING"})
    assert time.monotonic() - started < 30  # (the timeout bounds it)
    assert refused(port)  # nothing listens any more
    return proc


@pytest.mark.parametrize("workers", [[], ["--workers", "2"]], ids=["single", "workers"])
@pytest.mark.parametrize("name", sorted(APPS))
def test_an_app_that_raises_while_loading_stops_with_status_3(tmp_path: Path, name: str,
                                                              workers: List[str]) -> None:
    proc = boot(tmp_path, name, workers)
    err = proc.stderr
    assert proc.returncode == BOOT_FAILED == 3, err
    _, line, last = APPS[name]
    assert err.splitlines().count(last) == 1, err  # the traceback's last line
    assert err.count(f'File "{tmp_path / name}.py", {line}') == 1, err
    # Once: the user's frames, not importlib's, not the loader's.
    assert err.count("Traceback (most recent call last)") == (name != "broken_syntax"), err
    assert "importlib" not in err and "_bootstrap" not in err, err
    assert "wssync/cli.py" not in err and "wssync/_boot.py" not in err, err
    assert "wssync/server.py" not in err, err
    assert f"wssync: error: {'worker' if workers else name + ':app'}" in err
    assert f"could not start: {last}" in err


def test_the_traceback_is_printed_once_by_many_workers(tmp_path: Path) -> None:
    for _ in range(3):  # the workers race to fail; one prints, every time
        proc = boot(tmp_path, "missing_setting", ["--workers", "4"])
        assert proc.returncode == BOOT_FAILED, proc.stderr
        assert proc.stderr.count("Traceback (most recent call last)") == 1, proc.stderr


def test_the_worker_printing_the_traceback_is_not_stopped_halfway(tmp_path: Path) -> None:
    # The first worker to fail takes its time to describe the error; another is
    # done sooner and the supervisor then stops every worker: the traceback
    # must come out all the same.
    (tmp_path / "slow_to_say.py").write_text(
        "import os, time\n"
        "class SlowToDescribe(Exception):\n"
        "    def __str__(self):\n"
        "        time.sleep(1.5)\n"
        "        return 'described slowly'\n"
        "try:\n"
        "    os.close(os.open('first', os.O_CREAT | os.O_EXCL))\n"
        "except FileExistsError:  # the second worker: fails later, says it sooner\n"
        "    time.sleep(0.3)\n"
        "    raise RuntimeError('described at once')\n"
        "raise SlowToDescribe()\n")
    proc = subprocess.run([sys.executable, "-m", "wssync", "slow_to_say:app", "--workers", "2",
                           "--port", "0"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode == BOOT_FAILED, proc.stderr
    assert proc.stderr.count("Traceback (most recent call last)") == 1, proc.stderr
    assert proc.stderr.splitlines().count("slow_to_say.SlowToDescribe: described slowly") == 1
    assert "could not start: RuntimeError: described at once (the traceback is printed " \
           "once, by the first worker that failed)" in proc.stderr


def test_a_missing_module_is_still_one_line_with_workers(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "wssync", "nosuchmodule:app", "--workers",
                           "2", "--port", "0"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr == ("wssync: error: cannot import 'nosuchmodule': No module named "
                           "'nosuchmodule' (run from the directory that holds it, or add "
                           "that directory to PYTHONPATH)\n")


def test_a_module_that_imports_a_missing_package_is_a_boot_failure(tmp_path: Path) -> None:
    (tmp_path / "needsdep.py").write_text("from wssync import App\n"
                                          "import wssync_test_not_installed\n"
                                          "app = App()\n")
    proc = subprocess.run([sys.executable, "-m", "wssync", "needsdep:app", "--port", "0"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=30)
    assert proc.returncode == BOOT_FAILED, proc.stderr
    assert 'needsdep.py", line 2, in <module>' in proc.stderr
    assert proc.stderr.endswith("wssync: error: needsdep:app could not start: "
                                "ModuleNotFoundError: No module named "
                                "'wssync_test_not_installed'\n")


def test_a_worker_that_served_and_died_is_restarted(tmp_path: Path) -> None:
    (tmp_path / "dies.py").write_text(
        "import os\n"
        "from wssync import App\n"
        "app = App()\n"
        "@app.route('/pid')\n"
        "def pid(request):\n"
        "    return str(os.getpid())\n"
        "@app.route('/die')\n"
        "def die(request):\n"
        "    os._exit(1)\n")
    port = free_port()
    proc = run_server(["dies:app", "--workers", "2", "--port", str(port)], cwd=tmp_path)
    try:
        wait_listening(port, proc)

        def workers() -> Set[str]:
            with open(f"/proc/{proc.pid}/task/{proc.pid}/children") as children:
                return set(children.read().split())

        assert wait_until(lambda: len(workers()) == 2, timeout=10)
        before = workers()
        with pytest.raises(requests.ConnectionError):
            requests.get(f"http://127.0.0.1:{port}/die", timeout=5)
        # The supervisor has seen it die and started another (before the stop below).
        assert wait_until(lambda: len(workers()) == 2 and workers() != before, timeout=10)

        def served() -> bool:
            try:
                return requests.get(f"http://127.0.0.1:{port}/pid", timeout=2).ok
            except requests.ConnectionError:
                return False

        assert wait_until(served, timeout=10)
        assert proc.poll() is None  # still serving: a crash after booting is restarted
    finally:
        proc.send_signal(signal.SIGTERM)
        err = finish(proc, timeout=30)
    assert proc.returncode == 0, err
    assert "restarting it" in err
