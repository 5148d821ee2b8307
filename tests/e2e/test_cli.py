"""``python -m wssync`` as a user runs it: real processes, real ports, real signals."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

import pytest
import requests
from helpers import finish, free_port, run_server, wait_listening
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from wssync.cli import build_parser, environment_defaults, parse_size, settings_from
from wssync.config import SETTINGS


def cli_error(args: List[str], cwd: Optional[Path] = None,
              env: Optional[Dict[str, str]] = None) -> str:
    """Run ``python -m wssync ARGS`` expecting a user error: exit 2, no traceback; stderr."""
    proc = subprocess.run([sys.executable, "-m", "wssync", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    return proc.stderr


@pytest.mark.parametrize("threads", ["0", "2"])
def test_demo_app_serves_page_echo_and_stats(threads: str) -> None:
    port = free_port()
    proc = run_server(["--host", "127.0.0.1", "--port", str(port), "--threads", threads])
    try:
        wait_listening(port, proc)
        base = f"http://127.0.0.1:{port}"
        page = requests.get(base + "/", timeout=5)
        assert page.status_code == 200
        assert "new WebSocket(" in page.text and '"/ws"' in page.text
        assert requests.get(base + "/health", timeout=5).status_code == 200
        with connect(f"ws://127.0.0.1:{port}/ws", open_timeout=5) as ws:
            ws.send("hello")
            assert ws.recv(timeout=5) == "hello"
            ws.send(b"\x00\xff")
            assert ws.recv(timeout=5) == b"\x00\xff"
            with requests.Session() as session:
                stats = session.get(base + "/stats", timeout=5).json()
        protocols = {c["protocol"] for c in stats["connections"]}
        assert protocols == {"http", "websocket"}
        assert {c["server_port"] for c in stats["connections"]} == {port}
        assert stats["websocket"] == 1
        ws_entry = next(c for c in stats["connections"] if c["protocol"] == "websocket")
        assert ws_entry["path"] == "/ws" and ws_entry["transport"] == "tcp"
    finally:
        proc.send_signal(signal.SIGTERM)
        err = finish(proc)
    assert proc.returncode == 0, err
    assert "GET /health" in err  # access log


def test_sigint_closes_websockets_with_1001() -> None:
    port = free_port()
    proc = run_server(["--host", "127.0.0.1", "--port", str(port)])
    try:
        wait_listening(port, proc)
        with connect(f"ws://127.0.0.1:{port}/ws", open_timeout=5) as ws:
            proc.send_signal(signal.SIGINT)
            with pytest.raises(ConnectionClosed) as info:
                ws.recv(timeout=5)
            assert info.value.rcvd is not None and info.value.rcvd.code == 1001
    finally:
        finish(proc)
    assert proc.returncode == 0


def test_privileged_port_gives_one_line_error() -> None:
    command = [sys.executable, "-m", "wssync", "--port", "80", "--host", "127.0.0.1"]
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root and no setpriv to drop privileges")
        drop = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups"]
        probe = subprocess.run([*drop, sys.executable, "-c", "import wssync"],
                               capture_output=True, timeout=30, env=env)
        if probe.returncode != 0:
            pytest.skip("the unprivileged user cannot run this interpreter")
        command = [*drop, *command]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=30, env=env)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr == ("wssync: error: no permission to listen on 127.0.0.1:80: ports "
                           "below 1024 need privileges; use a port above 1023 (--port 8080) or "
                           "run with the privilege to bind low ports (root or "
                           "CAP_NET_BIND_SERVICE)\n")


def test_port_in_use_gives_one_line_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        err = cli_error(["--host", "127.0.0.1", "--port", str(port)])
    assert err == (f"wssync: error: 127.0.0.1:{port} is already in use; stop the other "
                   f"server or choose another --port\n")


@pytest.mark.parametrize("workers", [[], ["--workers", "2"]], ids=["single", "workers"])
def test_a_metrics_address_in_use_gives_one_line_error(workers: List[str]) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        address = f"127.0.0.1:{sock.getsockname()[1]}"
        err = cli_error(["--port", "0", "--metrics", address, *workers])
    assert err == (f"wssync: error: cannot listen for metrics on {address}: Address already "
                   f"in use; choose another metrics address (--metrics HOST:PORT)\n")


HINTS = ("from wssync import App\n"
         "app = App()\n"
         "def create_app():\n"
         "    return App()\n"
         "def wsgi(environ, start_response):\n"
         "    start_response('200 OK', [])\n"
         "    return [b'wsgi']\n"
         "def handler(request):\n"
         "    return 'one argument'\n")


@pytest.mark.parametrize("spec, message", [
    ("nosuchmodule:app", "cannot import 'nosuchmodule': No module named 'nosuchmodule' (run "
                         "from the directory that holds it, or add that directory to "
                         "PYTHONPATH)"),
    ("json:decoder", "json:decoder is a module, not a wssync.App or WSGI callable"),
    ("justamodule", "the app is given as MODULE:ATTRIBUTE, not 'justamodule' "
                    "(e.g. justamodule:app)"),
    ("hints.py:app", "'hints.py:app' names a file, not a module: did you mean 'hints:app'?"),
    ("pkg/hints.py:app", "'pkg/hints.py:app' names a file, not a module: did you mean "
                         "'pkg.hints:app'?"),
    ("hints:App", "hints:App is a class; did you mean an instance, such as `app = App()`?"),
    ("hints:create_app", "hints:create_app takes no arguments: a factory, not an app; did "
                         "you mean what it returns, such as `app = create_app()`?"),
    ("hints:ap", "module 'hints' has no attribute 'ap'; did you mean 'app'?"),
    ("hints:creat_app", "module 'hints' has no attribute 'creat_app'; did you mean "
                        "'create_app'?"),
    ("hints:application", "module 'hints' has no attribute 'application'; did you mean "
                          "'app'?"),  # no close name: the module's App
    ("hints:handler", "hints:handler is a function, not a wssync.App or WSGI callable"),
])
@pytest.mark.parametrize("how", ["positional", "--app"])
def test_bad_app_gives_readable_error(tmp_path: Path, spec: str, message: str,
                                      how: str) -> None:
    (tmp_path / "hints.py").write_text(HINTS)
    args = [spec] if how == "positional" else ["--app", spec]
    assert cli_error([*args, "--port", "0"], cwd=tmp_path) == f"wssync: error: {message}\n"


def test_a_wsgi_function_is_served(tmp_path: Path) -> None:
    (tmp_path / "hints.py").write_text(HINTS)
    port = free_port()
    proc = run_server(["hints:wsgi", "--port", str(port)], cwd=tmp_path)
    try:
        wait_listening(port, proc)
        assert requests.get(f"http://127.0.0.1:{port}/", timeout=5).text == "wsgi"
    finally:
        proc.send_signal(signal.SIGTERM)
        finish(proc)


# -- the command line users know: APP, short errors, log levels ------------------------


def test_app_as_the_positional_argument_like_uvicorn_and_gunicorn(tmp_path: Path) -> None:
    (tmp_path / "hints.py").write_text(HINTS)
    port = free_port()
    proc = run_server(["hints:app", "--port", str(port), "--log-level", "DEBUG"], cwd=tmp_path,
                      env={**os.environ, "WSSYNC_APP": "nosuchmodule:app"})  # APP wins
    try:
        wait_listening(port, proc)
        assert requests.get(f"http://127.0.0.1:{port}/nowhere", timeout=5).status_code == 404
    finally:
        proc.send_signal(signal.SIGTERM)
        err = finish(proc)
    assert proc.returncode == 0, err
    assert "nosuchmodule" not in err and "Traceback" not in err


def usage_error(args: List[str]) -> str:
    proc = subprocess.run([sys.executable, "-m", "wssync", *args], capture_output=True,
                          text=True, timeout=30)
    assert proc.returncode == 2, proc.stderr
    return proc.stderr


@pytest.mark.parametrize("args, message", [
    (["a:app", "--app", "b:app"], "the app is given twice: a:app (APP) and b:app (--app); "
                                  "give one"),
    (["a:app", "b:app"], "unrecognized arguments: b:app"),
    (["--bogus"], "unrecognized arguments: --bogus"),
    (["--log-level", "loud"], "argument --log-level: invalid choice: 'loud' (choose from "
                              "'debug', 'info', 'warning', 'error', 'critical')"),
    (["--port", "99999"], "argument --port: not a port (0-65535): '99999'"),
])
def test_argument_errors_are_three_short_lines(args: List[str], message: str) -> None:
    assert usage_error(args) == (f"usage: python -m wssync [options] [APP]\n"
                                 f"wssync: error: {message}\n"
                                 f"see 'python -m wssync --help'\n")


def test_usage_names_the_program_the_user_ran(tmp_path: Path) -> None:
    script = tmp_path / "wssync"  # what the console script pip installs looks like
    script.write_text(f"#!{sys.executable}\nimport sys\nfrom wssync.cli import main\n"
                      f"sys.exit(main())\n")
    script.chmod(0o755)
    proc = subprocess.run([str(script), "--bogus"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert proc.stderr == ("usage: wssync [options] [APP]\nwssync: error: unrecognized "
                           "arguments: --bogus\nsee 'wssync --help'\n")
    help_text = subprocess.run([str(script), "--help"], capture_output=True, text=True,
                               timeout=30).stdout
    assert help_text.startswith("usage: wssync [options] [APP]\n")
    assert "--graceful-timeout" in help_text
    assert "--metrics HOST:PORT" in help_text


@pytest.mark.parametrize("level", ["DEBUG", "Warning", "info"])
def test_log_levels_in_any_case(level: str) -> None:
    args = build_parser().parse_args(["--log-level", level])
    assert args.log_level == level.lower()
    parser = build_parser()
    parser.set_defaults(**environment_defaults(parser, {"WSSYNC_LOG_LEVEL": level}))
    assert parser.parse_args([]).log_level == level.lower()


def test_graceful_timeout_is_gunicorns_name_for_shutdown_grace() -> None:
    assert settings_from(build_parser().parse_args(["--graceful-timeout", "3"])) == \
        {"shutdown_grace": 3.0}
    assert settings_from(build_parser().parse_args(["--shutdown-grace", "4"])) == \
        {"shutdown_grace": 4.0}
    assert build_parser().parse_args(["x:app"]).app_spec == "x:app"


def test_user_app_module(tmp_path: Path) -> None:
    (tmp_path / "myapp.py").write_text(
        "from wssync import App\n"
        "app = App()\n"
        "@app.route('/hi')\n"
        "def hi(request):\n"
        "    return {'hi': request.arg('name')}\n"
        "@app.websocket('/shout')\n"
        "def shout(ws, message):\n"
        "    ws.send(message.upper())\n"
    )
    port = free_port()
    proc = run_server(["--app", "myapp:app", "--host", "127.0.0.1", "--port", str(port),
                       "--no-access-log"], cwd=tmp_path)
    try:
        wait_listening(port, proc)
        assert requests.get(f"http://127.0.0.1:{port}/hi?name=x", timeout=5).json() == {"hi": "x"}
        with connect(f"ws://127.0.0.1:{port}/shout", open_timeout=5) as ws:
            ws.send("hey")
            assert ws.recv(timeout=5) == "HEY"
    finally:
        proc.send_signal(signal.SIGTERM)
        err = finish(proc)
    assert "GET /hi" not in err


# -- every Server setting on the command line and in the environment ------------------


def test_every_setting_has_a_flag_with_its_default() -> None:
    help_text = " ".join(build_parser().format_help().split())
    for name in SETTINGS:
        assert f"--{name.replace('_', '-')}" in help_text, name
    assert "--max-write-buffer BYTES soft limit" in help_text
    assert "(default: 4MiB)" in help_text


def test_flags_parse_sizes_seconds_and_switches() -> None:
    args = build_parser().parse_args(["--max-write-buffer", "1MiB", "--max-queue", "3",
                                      "--ping-timeout", "2.5", "--no-compression",
                                      "--max-message-size", "65536"])
    assert settings_from(args) == {"max_write_buffer": 1 << 20, "max_queue": 3,
                                   "ping_timeout": 2.5, "compression": False,
                                   "max_message_size": 65536}
    assert settings_from(build_parser().parse_args([])) == {}  # Config keeps its defaults


@pytest.mark.parametrize("text, value", [("512", 512), ("64KiB", 65536), ("4m", 4 << 20),
                                         ("1 GiB", 1 << 30), ("2kb", 2048)])
def test_sizes(text: str, value: int) -> None:
    assert parse_size(text) == value


def test_environment_fills_what_the_command_line_does_not_set() -> None:
    parser = build_parser()
    parser.set_defaults(**environment_defaults(parser, {
        "WSSYNC_MAX_QUEUE": "7", "WSSYNC_MAX_WRITE_BUFFER": "2MiB", "WSSYNC_PORT": "8081",
        "WSSYNC_COMPRESSION": "false", "WSSYNC_NO_ACCESS_LOG": "yes", "HOME": "/x"}))
    args = parser.parse_args(["--max-queue", "5"])
    assert args.port == 8081 and args.no_access_log is True
    assert settings_from(args) == {"max_queue": 5, "max_write_buffer": 2 << 20,
                                   "compression": False}


@pytest.mark.parametrize("argv, env, message", [
    (["--max-write-buffer", "lots"], {}, "not a size in bytes"),
    (["--max-queue", "0"], {}, "max_queue must be at least 1"),
    (["--send-timeout", "-1"], {}, "non-negative"),
    ([], {"WSSYNC_MAX_QUEUE": "many"}, "WSSYNC_MAX_QUEUE"),
    ([], {"WSSYNC_LOG_LEVEL": "loud"}, "WSSYNC_LOG_LEVEL"),
])
def test_bad_setting_gives_one_line_error(argv: List[str], env: Dict[str, str],
                                          message: str) -> None:
    assert message in cli_error(["--port", "0", *argv], env={**os.environ, **env})


def test_settings_reach_the_running_server(tmp_path: Path) -> None:
    (tmp_path / "cfgapp.py").write_text(
        "from wssync import App\n"
        "app = App()\n"
        "@app.route('/config')\n"
        "def config(request):\n"
        "    c = app.server.config\n"
        "    return {'max_write_buffer': c.max_write_buffer, 'max_queue': c.max_queue,\n"
        "            'send_timeout': c.send_timeout, 'threads': app.server.threads}\n"
    )
    port = free_port()
    proc = run_server(["--app", "cfgapp:app", "--host", "127.0.0.1", "--port", str(port),
                       "--max-write-buffer", "1MiB", "--send-timeout", "7"], cwd=tmp_path,
                      env={**os.environ, "WSSYNC_MAX_QUEUE": "3", "WSSYNC_THREADS": "2"})
    try:
        wait_listening(port, proc)
        got = requests.get(f"http://127.0.0.1:{port}/config", timeout=5).json()
        assert got == {"max_write_buffer": 1 << 20, "max_queue": 3, "send_timeout": 7.0,
                       "threads": 2}
    finally:
        proc.send_signal(signal.SIGTERM)
        finish(proc)


# -- ports, and modules that serve on import --------------------------------------


@pytest.mark.parametrize("port", ["99999", "65536", "-5", "http", "\u0668\u0660"])
def test_port_out_of_range_is_refused(port: str) -> None:
    assert "not a port (0-65535)" in cli_error(["--port", port])


def test_app_module_that_serves_on_import_is_reported(tmp_path: Path) -> None:
    own_port = free_port()
    (tmp_path / "eager.py").write_text(
        "from wssync import App, Server\n"
        "app = App()\n"
        f"Server(app, host='127.0.0.1', port={own_port}).serve_forever()\n"
    )
    err = cli_error(["--app", "eager:app", "--host", "127.0.0.1", "--port", str(free_port())],
                    cwd=tmp_path)
    assert "starts a server while being imported" in err
    assert "__name__" in err


# -- behind proxies, and on Unix domain sockets ------------------------------------------


def test_proxy_flags_and_environment() -> None:
    parser = build_parser()
    parser.set_defaults(**environment_defaults(parser, {
        "WSSYNC_FORWARDED_ALLOW_IPS": "10.0.0.0/8, 127.0.0.1", "WSSYNC_UDS": "/tmp/x.sock"}))
    args = parser.parse_args(["--proxy-protocol", "--proxy-protocol-timeout", "2",
                              "--uds-mode", "0o600"])
    assert settings_from(args) == {"forwarded_allow_ips": "10.0.0.0/8, 127.0.0.1",
                                   "proxy_protocol": True, "proxy_protocol_timeout": 2.0}
    assert args.uds == "/tmp/x.sock" and args.uds_mode == 0o600
    args = parser.parse_args(["--forwarded-allow-ips", "*", "--uds-mode", "666"])
    assert settings_from(args)["forwarded_allow_ips"] == "*" and args.uds_mode == 0o666
    assert build_parser().parse_args([]).uds_mode == 0o660


@pytest.mark.parametrize("argv, message", [
    (["--forwarded-allow-ips", "127.0.0.1,proxy.example"], "'proxy.example' is not an IP"),
    (["--uds-mode", "999"], "not a file mode"),
    (["--uds-mode", "rw"], "not a file mode"),
])
def test_bad_proxy_options_give_one_line_errors(argv: List[str], message: str) -> None:
    assert message in cli_error(["--port", "0", *argv])


def test_uds_on_a_file_that_is_not_a_socket(tmp_path: Path) -> None:
    target = tmp_path / "notes.txt"
    target.write_text("keep me")
    err = cli_error(["--uds", str(target)])
    assert err == f"wssync: error: {target} exists and is not a socket; remove it or " \
                  f"choose another --uds\n"
    assert target.read_text() == "keep me"


# -- what the server says when it starts and stops ----------------------------------------


def other_address() -> Optional[str]:
    """An address of this machine that is not loopback, if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # (no packet is sent)
        except OSError:
            return None
        address = probe.getsockname()[0]
    return None if address.startswith("127.") or address == "0.0.0.0" else address


def test_by_default_only_this_machine_can_connect() -> None:
    port = free_port()
    proc = run_server(["--port", str(port)])
    try:
        wait_listening(port, proc)
        address = other_address()
        if address is not None:
            with pytest.raises(OSError):
                socket.create_connection((address, port), timeout=2).close()
        # wait_listening's probe may still be counted as open if SIGINT comes
        # before the reactor reads its close: a request the server answers and
        # closes itself comes after that close in the reactor's order.
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(b"GET /missing HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            while sock.recv(4096):
                pass
    finally:
        proc.send_signal(signal.SIGINT)
        err = finish(proc)
    assert proc.returncode == 0, err
    assert (f"serving on http://127.0.0.1:{port}/ (Ctrl-C to quit): HTTP and WebSocket, "
            f"reactor mode: handlers run on the reactor thread and must not block; only this "
            f"machine can connect (--host 0.0.0.0 to be reachable from the network)\n") in err
    assert "SIGINT received, stopping: no open connections to wait for; Ctrl-C again to " \
           "stop now\n" in err


def test_all_interfaces_is_said_with_an_address_to_click() -> None:
    port = free_port()
    proc = run_server(["--host", "0.0.0.0", "--port", str(port), "--threads", "2"])
    try:
        wait_listening(port, proc)
        address = other_address()
        if address is not None:
            socket.create_connection((address, port), timeout=2).close()
    finally:
        proc.send_signal(signal.SIGTERM)
        err = finish(proc)
    assert (f"serving on http://127.0.0.1:{port}/ (Ctrl-C to quit): HTTP and WebSocket, "
            f"thread-pool mode: handlers run on 2 worker threads; listening on all interfaces "
            f"(0.0.0.0:{port})\n") in err
    # (The probe's connection may not have been seen closing yet.)
    assert re.search(r"SIGTERM received, stopping: (no open connections to wait for|waiting "
                     r"up to 10 s for 1 open connection); a second SIGTERM stops now\n", err)


def test_ctrl_c_says_what_the_stop_waits_for_and_a_second_one_stops_now(
        tmp_path: Path) -> None:
    (tmp_path / "slowapp.py").write_text(
        "import time\n"
        "from wssync import App\n"
        "app = App()\n"
        "@app.route('/slow')\n"
        "def slow(request):\n"
        "    time.sleep(30)\n"
        "    return 'late'\n")
    port = free_port()
    proc = run_server(["slowapp:app", "--port", str(port), "--threads", "4",
                       "--graceful-timeout", "25"], cwd=tmp_path)
    sockets = []
    try:
        wait_listening(port, proc)
        for _ in range(3):
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            sock.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
            sockets.append(sock)
        time.sleep(0.5)  # the three requests reach their handlers
        proc.send_signal(signal.SIGINT)
        time.sleep(0.5)
        assert proc.poll() is None  # waiting for the three
        proc.send_signal(signal.SIGINT)
        err = finish(proc, timeout=10)  # not the 25 s of grace
    finally:
        for sock in sockets:
            sock.close()
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert "SIGINT received, stopping: waiting up to 25 s for 3 open connections; Ctrl-C " \
           "again to stop now\n" in err
    assert "SIGINT received again, stopping now\n" in err


def test_worker_lines_say_which_worker_and_ctrl_c_speaks_of_no_signal() -> None:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "wssync", "--workers", "2", "--port",
                             str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        wait_listening(port, proc)
        for _ in range(4):
            assert requests.get(f"http://127.0.0.1:{port}/health", timeout=5).ok
        time.sleep(0.5)
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
        err = finish(proc, timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert (f"listening on http://127.0.0.1:{port}/ (Ctrl-C to quit): 2 workers, reactor; "
            f"only this machine can connect (--host 0.0.0.0 to be reachable from the "
            f"network)\n") in err
    worker_lines = [line for line in err.splitlines()
                    if " wssync.server: " in line or " wssync.access: " in line]
    worker_lines = [line for line in worker_lines if "listening on" not in line]
    assert len(worker_lines) >= 4 + 2 * 3, err  # requests; serving, stopping, stopped
    for line in worker_lines:
        assert "[worker 0] " in line or "[worker 1] " in line, line
        assert "SIGTERM" not in line and "SIGQUIT" not in line and "SIGINT" not in line, line
    assert sum("[worker 0] serving on http://127.0.0.1:" in line for line in worker_lines) == 1
    assert any("stopping: no open connections to wait for" in line for line in worker_lines)
