"""Loading ``MODULE:ATTRIBUTE`` and reporting an app that cannot boot (``wssync._boot``).

Real modules written to a temporary directory and imported; the end-to-end
view (real processes, exit statuses, the port) is tests/e2e/test_cli_boot.py.
"""

from __future__ import annotations

import sys
import uuid
from pathlib import Path
from typing import Iterator

import pytest

from wssync import App
from wssync._boot import BootReport, CliError, boot_failure_text, load_app, summary


@pytest.fixture
def modules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A directory on sys.path for throw-away modules (their names are unique)."""
    monkeypatch.syspath_prepend(str(tmp_path))
    before = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - before:
        del sys.modules[name]


def module(directory: Path, source: str) -> str:
    name = f"boot_{uuid.uuid4().hex}"
    (directory / f"{name}.py").write_text(source)
    return name


def test_an_app_and_a_wsgi_callable_load(modules: Path) -> None:
    name = module(modules, "from wssync import App\napp = App()\n"
                           "def wsgi(environ, start_response):\n    return []\n")
    assert isinstance(load_app(f"{name}:app"), App)
    assert isinstance(load_app(f"{name}:wsgi"), App)  # wrapped


def test_the_traceback_keeps_only_the_apps_frames_and_its_causes(modules: Path) -> None:
    name = module(modules, "def settings():\n"
                           "    return {}['SECRET_KEY']\n"
                           "try:\n"
                           "    settings()\n"
                           "except KeyError as exc:\n"
                           "    raise RuntimeError('not configured') from exc\n")
    with pytest.raises(RuntimeError) as info:
        load_app(f"{name}:app")
    text = boot_failure_text(info.value)
    path = modules / f"{name}.py"
    assert f'File "{path}", line 2, in settings' in text  # the cause, trimmed too
    assert f'File "{path}", line 6, in <module>' in text
    assert "direct cause of the following exception" in text
    assert "importlib" not in text and "_bootstrap" not in text
    assert "_boot.py" not in text and "test_boot.py" not in text
    assert text.rstrip().endswith("RuntimeError: not configured")
    assert summary(info.value) == "RuntimeError: not configured"


def test_a_failure_inside_wssync_alone_keeps_its_frames() -> None:
    try:
        App().route("no-slash")(lambda request: "x")
    except Exception as exc:  # (raised by wssync itself, called from here)
        text = boot_failure_text(exc)
    else:
        pytest.skip("the route was accepted")
    assert "test_boot.py" in text and "wssync" in text


def test_a_submodule_that_does_not_exist_is_one_line(modules: Path) -> None:
    with pytest.raises(CliError) as info:
        load_app("json.nosuch:app")
    assert str(info.value).startswith("cannot import 'json.nosuch': No module named "
                                      "'json.nosuch'")


def test_the_report_token_goes_to_one_failing_worker_until_one_boots() -> None:
    report = BootReport()
    try:
        assert report.take()
        assert not report.take()  # the second worker failing says one line
        report.booted()
        assert report.take()  # a later failure (a rolling restart) prints again
        report.booted()
        report.booted()
        assert report.take() and not report.take()  # one token, however many booted
    finally:
        report.close()
