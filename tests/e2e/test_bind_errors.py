"""An embedded ``Server`` that cannot listen says where and what to do, as the CLI does.

The error is a ``wssync.errors.BindError``: a ``WssyncError`` and still the
``OSError`` subclass the failure was, so ``except OSError`` (or
``PermissionError``) callers keep working.  Real sockets; the privileged port
is tried as an unprivileged user.
"""

from __future__ import annotations

import errno
import os
import shutil
import socket
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import List

import pytest

from wssync import App, Server, WssyncError
from wssync.errors import BindError

ROOT = Path(__file__).resolve().parents[2]


def unprivileged(command: List[str]) -> List[str]:
    """``command`` as a user without the privilege to bind low ports (skips if
    there is no way to be one here)."""
    if os.geteuid() != 0:
        return command
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root and no setpriv to drop privileges")
    drop = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups"]
    probe = subprocess.run([*drop, sys.executable, "-c", "import wssync"], capture_output=True,
                           timeout=30, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    if probe.returncode != 0:
        pytest.skip("the unprivileged user cannot run this interpreter")
    return [*drop, *command]


def test_port_in_use() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        for call in ("bind", "start", "serve_forever"):
            server = Server(App(), port=port)
            with pytest.raises(BindError) as info:
                getattr(server, call)()
            assert str(info.value) == (f"127.0.0.1:{port} is already in use; stop the other "
                                       f"server or choose another port")
            assert isinstance(info.value, OSError) and isinstance(info.value, WssyncError)
            assert info.value.errno == errno.EADDRINUSE


def test_unix_socket_in_a_directory_that_does_not_exist(tmp_path: Path) -> None:
    path = tmp_path / "no" / "such" / "app.sock"
    with pytest.raises(FileNotFoundError) as info:  # what it was, still
        Server(App(), uds=str(path)).bind()
    assert str(info.value) == (f"cannot listen on {path}: the directory {path.parent} does "
                               f"not exist")
    assert isinstance(info.value, BindError)


def test_unix_socket_path_that_is_a_file(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("keep me")
    with pytest.raises(FileExistsError) as info:
        Server(App(), uds=str(path)).bind()
    assert str(info.value) == (f"{path} exists and is not a socket; remove it or choose "
                               f"another uds path")
    assert path.read_text() == "keep me"


def test_an_address_this_machine_does_not_have() -> None:
    with pytest.raises(BindError) as info:
        Server(App(), host="192.0.2.1", port=0).bind()  # TEST-NET-1: nobody's
    assert str(info.value) == ("cannot listen on 192.0.2.1:0: 192.0.2.1 is not an address of "
                               "this machine; host=\"127.0.0.1\" for this machine only, "
                               "host=\"0.0.0.0\" for every interface")


def test_privileged_port_as_a_user_names_the_address_and_the_fix(tmp_path: Path) -> None:
    script = textwrap.dedent("""
        from wssync import App, Server
        try:
            Server(App(), port=80).serve_forever()
        except PermissionError as exc:  # what callers caught before, still caught
            print(type(exc).__name__, exc)
    """)
    proc = subprocess.run(unprivileged([sys.executable, "-c", script]), capture_output=True,
                          text=True, timeout=30, env=dict(os.environ, PYTHONPATH=str(ROOT)),
                          cwd="/")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ("BindError no permission to listen on 127.0.0.1:80: "
                           "ports below 1024 need privileges; use a port above 1023 "
                           "(port=8080) or run with the privilege to bind low ports (root or "
                           "CAP_NET_BIND_SERVICE)\n")
