"""A Django view served by ``python -m wssync --app mysite.wsgi:application``: requests/s
and the database connections the server still holds afterwards, per wssync checkout.

Builds a Django project once (``startproject``, one view reading the ORM on SQLite,
``migrate``), then for each round and each checkout, alternating: starts the server
pinned to the server CPU with that checkout first on ``PYTHONPATH``, runs ``wrk``
on the load CPU, and counts the server's open descriptors on ``db.sqlite3`` once
the load has stopped (Django's default ``CONN_MAX_AGE = 0`` means none should
stay open).  Prints medians and the ratio to the first checkout.  Needs Django,
``wrk`` and ``taskset``::

    python3 loadtests/bench/django_wsgi.py --checkout before=/tmp/before --checkout after=.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Tuple

import common

VIEW = """\
from django.http import HttpResponse
from django.urls import path

from django.contrib.auth.models import User


def hello(request):
    return HttpResponse(f"Hello, {User.objects.count()} users")


urlpatterns = [path("", hello)]
"""


def build_project(directory: str) -> None:
    def run(*args: str) -> None:
        subprocess.run([sys.executable, *args], cwd=directory, check=True,
                       stdout=subprocess.DEVNULL)

    run("-m", "django", "startproject", "mysite", ".")
    with open(os.path.join(directory, "mysite", "urls.py"), "w") as urls:
        urls.write(VIEW)
    run("manage.py", "migrate", "-v", "0")


def db_descriptors(pid: int) -> int:
    count = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            count += os.path.basename(os.readlink(f"/proc/{pid}/fd/{fd}")) == "db.sqlite3"
        except OSError:
            pass
    return count


def measure(checkout: str, project: str, threads: int, seconds: float) -> Tuple[float, int]:
    port = common.free_port()
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    env["PYTHONPATH"] = os.path.abspath(checkout)
    proc = subprocess.Popen(
        ["taskset", "-c", str(common.SERVER_CPU), sys.executable, "-m", "wssync", "--app",
         "mysite.wsgi:application", "--host", "127.0.0.1", "--port", str(port), "--threads",
         str(threads), "--no-access-log", "--log-level", "warning"],
        cwd=project, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        if not common.wait_port("127.0.0.1", port, 60):
            raise SystemExit("server did not start within 60 s")
        url = f"http://127.0.0.1:{port}/"
        wrk = ["taskset", "-c", str(common.LOAD_CPU), "wrk", "-t1", "-c16"]
        subprocess.run([*wrk, "-d1s", url], check=True, capture_output=True)  # warm-up
        out = subprocess.run([*wrk, f"-d{seconds}s", url], check=True, capture_output=True,
                             text=True).stdout
        match = re.search(r"Requests/sec:\s+([0-9.]+)", out)
        if match is None or "Non-2xx" in out:
            raise SystemExit(f"wrk: {out}")
        time.sleep(0.5)  # the last responses' close() has run
        return float(match.group(1)), db_descriptors(proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkout", action="append", required=True, metavar="NAME=DIR")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=4)
    args = parser.parse_args()
    checkouts = [tuple(c.split("=", 1)) for c in args.checkout]
    rates: Dict[str, List[float]] = {name: [] for name, _ in checkouts}
    held: Dict[str, List[int]] = {name: [] for name, _ in checkouts}
    with tempfile.TemporaryDirectory() as project:
        build_project(project)
        for n in range(args.rounds):
            order = checkouts if n % 2 == 0 else checkouts[::-1]
            for name, directory in order:
                rate, descriptors = measure(directory, project, args.threads, args.seconds)
                rates[name].append(rate)
                held[name].append(descriptors)
                print(f"round {n + 1} {name}: {rate:.0f} req/s, {descriptors} database "
                      f"connections held after the load", flush=True)
    first = checkouts[0][0]
    for name, _ in checkouts:
        ratios = [a / b for a, b in zip(rates[name], rates[first])]
        print(f"{name}: median {statistics.median(rates[name]):.0f} req/s, "
              f"{statistics.median(ratios):.2f}x {first}, connections held {held[name]}")


if __name__ == "__main__":
    main()
