"""``python -m wssync`` as a user runs it: real processes, real ports, real signals."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
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
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "--port 8080" in lines[0]
    assert "Traceback" not in proc.stderr


def test_port_in_use_gives_one_line_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        err = cli_error(["--host", "127.0.0.1", "--port", str(port)])
    assert f"127.0.0.1:{port} is already in use" in err  # the address being bound


@pytest.mark.parametrize("spec, message", [
    ("nosuchmodule:app", "cannot import"),
    ("json:nosuchattr", "has no attribute"),
    ("json:decoder", "not a wssync.App"),
    ("justamodule", "MODULE:ATTRIBUTE"),
])
def test_bad_app_gives_readable_error(spec: str, message: str) -> None:
    assert message in cli_error(["--app", spec, "--port", "0"])


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
    assert f"{target} exists and is not a socket" in err
    assert len(err.strip().splitlines()) == 1
    assert target.read_text() == "keep me"
