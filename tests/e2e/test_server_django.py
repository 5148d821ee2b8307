"""A real Django project served by ``python -m wssync --app mysite.wsgi:application``.

The project is made by ``django-admin startproject`` and migrated on SQLite
(see ``helpers.django_project``); the server runs as a subprocess in its
directory, as a developer would start it.  The WebSocket recipe on the same
port is README's, checked by ``test_readme.py``.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, List

import pytest
import requests
from helpers import django_project, finish, free_port, refused, wait_listening, wait_until

pytest.importorskip("django")

VIEWS = """\
import json

from django.http import HttpResponse, JsonResponse
from django.middleware.csrf import get_token
from django.shortcuts import redirect
from django.views.decorators.csrf import csrf_exempt

from notes.models import Note


def index(request):
    return JsonResponse({"notes": [n.text for n in Note.objects.order_by("pk")],
                         "q": request.GET.get("q")})


@csrf_exempt
def api(request):
    if request.method != "POST":
        return HttpResponse(status=405)
    note = Note.objects.create(text=json.loads(request.body)["text"])
    return JsonResponse({"id": note.pk}, status=201)


def form(request):
    if request.method == "POST":
        Note.objects.create(text=request.POST["text"])
        return redirect("/")
    return HttpResponse('<form method="post"><input type="hidden" '
                        'name="csrfmiddlewaretoken" value="%s"><input name="text"></form>'
                        % get_token(request))


def hello(request):
    return HttpResponse("hello, first version")
"""

URLS = """\
from django.urls import path

from notes import views

urlpatterns = [
    path("", views.index),
    path("api/notes", views.api),
    path("form", views.form),
    path("hello", views.hello),
]
"""


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project, made and migrated once; each test works on a copy."""
    return django_project(tmp_path_factory.mktemp("django") / "site",
                          {"notes/views.py": VIEWS, "mysite/urls.py": URLS})


@pytest.fixture
def site(template: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(template, tmp_path / "site"))


def _env() -> Dict[str, str]:
    # This checkout's wssync; the settings module comes from mysite/wsgi.py.
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    return env


def _serve(site: Path, port: int, extra: List[str]) -> subprocess.Popen[str]:
    with open(site / "stderr.txt", "w") as stderr:
        return subprocess.Popen(
            [sys.executable, "-m", "wssync", "--app", "mysite.wsgi:application", "--host",
             "127.0.0.1", "--port", str(port), *extra],
            cwd=site, env=_env(), stdout=subprocess.DEVNULL, stderr=stderr, text=True)


@pytest.mark.parametrize("threads", ["0", "4"])
def test_cli_serves_the_django_project(site: Path, threads: str) -> None:
    port = free_port()
    proc = _serve(site, port, ["--threads", threads])
    base = f"http://127.0.0.1:{port}"
    try:
        wait_listening(port, proc)
        assert requests.get(base + "/?q=caf%C3%A9", timeout=10).json() == {"notes": [],
                                                                          "q": "café"}
        created = requests.post(base + "/api/notes", json={"text": "from the API"}, timeout=10)
        assert created.status_code == 201 and created.json() == {"id": 1}

        with requests.Session() as browser:  # a form with Django's CSRF protection
            page = browser.get(base + "/form", timeout=10)
            match = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
            assert match is not None and "csrftoken" in browser.cookies
            posted = browser.post(base + "/form", data={"csrfmiddlewaretoken": match.group(1),
                                                        "text": "from the form"}, timeout=10)
            assert posted.history[0].status_code == 302  # redirected to the index
            assert posted.json()["notes"] == ["from the API", "from the form"]
        forged = requests.post(base + "/form", data={"text": "no token"}, timeout=10)
        assert forged.status_code == 403 and "CSRF" in forged.text

        missing = requests.get(base + "/nowhere", timeout=10)
        assert missing.status_code == 404 and "Page not found" in missing.text
        assert requests.get(base + "/api/notes", timeout=10).status_code == 405

        # Many clients at once: the views run on worker threads and all land.
        def post(n: int) -> int:
            return requests.post(base + "/api/notes", json={"text": f"n{n}"},
                                 timeout=20).status_code

        with ThreadPoolExecutor(8) as pool:
            assert set(pool.map(post, range(40))) == {201}
        with sqlite3.connect(site / "db.sqlite3") as db:
            assert db.execute("select count(*) from notes_note").fetchone() == (42,)
    finally:
        proc.send_signal(signal.SIGTERM)
        finish(proc)
    err = (site / "stderr.txt").read_text()
    assert proc.returncode == 0, err
    assert '"POST /form HTTP/1.1" 302' in err and "Traceback" not in err


def test_reload_serves_an_edited_view(site: Path) -> None:
    port = free_port()
    proc = _serve(site, port, ["--reload"])
    base = f"http://127.0.0.1:{port}"

    def hello() -> str:
        try:
            return requests.get(base + "/hello", timeout=10).text
        except requests.ConnectionError:
            return ""  # between two children

    try:
        wait_listening(port, proc)
        assert hello() == "hello, first version"  # views.py is imported now, not at start
        views = site / "notes" / "views.py"
        views.write_text(VIEWS.replace("hello, first version", "hello, second version"))
        polls = 0

        def reloaded() -> bool:
            # views.py was imported by the first request: the watcher takes the time
            # it first sees as the reference (an edit before that poll is not a
            # change), so the edit is "saved again" now and then until it shows.
            nonlocal polls
            if polls % 50 == 0:
                stat = views.stat()  # a new time, and never the cached .pyc's
                os.utime(views, ns=(stat.st_atime_ns, stat.st_mtime_ns + 2_000_000_000))
            polls += 1
            return hello() == "hello, second version"

        assert wait_until(reloaded, timeout=60)
    finally:
        proc.send_signal(signal.SIGTERM)
        finish(proc, timeout=30)
    err = (site / "stderr.txt").read_text()
    assert proc.returncode == 0, err
    assert "wssync: detected change in notes/views.py, reloading" in err
    assert refused(port)
