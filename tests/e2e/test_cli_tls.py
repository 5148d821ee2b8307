"""``python -m wssync --certfile ...``: HTTPS and WSS from the command line.

Real processes with the test CA's certificates (the ``tls_files`` fixture):
serving, key passwords from the environment, the one-line errors for files and
passwords a user got wrong, client certificates, and SIGHUP reloading a
renewed certificate for new connections while open ones keep theirs.
"""

from __future__ import annotations

import http.client
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import pytest
from helpers import finish, free_port, run_server, wait_listening, wait_until
from test_bind_errors import ROOT, unprivileged

from wssync.client import connect

PASSWORD_VAR = "WSSYNC_TEST_KEY_PASSWORD"


def tls_args(port: int, *extra: str) -> List[str]:
    return ["--host", "127.0.0.1", "--port", str(port), "--no-access-log", *extra]


def stop(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGTERM)
    err = finish(proc)
    assert proc.returncode == 0, err
    return err


def der(pem_file: Path) -> bytes:
    return ssl.PEM_cert_to_DER_cert(pem_file.read_text())


def https_get(port: int, context: ssl.SSLContext,
              path: str = "/health") -> Tuple[int, bytes, bytes]:
    """Status, body and the server's certificate (DER) of one request on a new connection."""
    conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=10, context=context)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        body = response.read()
        assert isinstance(conn.sock, ssl.SSLSocket)
        cert = conn.sock.getpeercert(binary_form=True)
        assert cert is not None
        return response.status, body, cert
    finally:
        conn.close()


def cli_error(args: List[str], env: Optional[Dict[str, str]] = None) -> str:
    """Run ``python -m wssync ARGS`` expecting a user error: exit 2, one line, no traceback.

    Without a terminal and with nothing on stdin, so that a password prompt
    could never wait for an answer.
    """
    proc = subprocess.run([sys.executable, "-m", "wssync", *args], env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=30, start_new_session=True)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("wssync: error: ")
    return lines[0]


class StderrLines:
    """The server's stderr, read while it runs (``finish`` then waits on stdout only)."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stderr is not None
        self._pipe = proc.stderr
        proc.stderr = None
        self._lines: List[str] = []
        self._thread = threading.Thread(target=self._read, name="stderr-reader", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        for line in self._pipe:
            self._lines.append(line)

    @property
    def text(self) -> str:
        return "".join(self._lines)

    def close(self) -> None:
        self._thread.join(10)
        self._pipe.close()


# -- serving -------------------------------------------------------------------------------------


@pytest.mark.parametrize("threads", ["0", "2"])
def test_certfile_and_keyfile_serve_https_and_wss(tls_files, threads: str) -> None:
    port = free_port()
    proc = run_server(tls_args(port, "--threads", threads, "--certfile", str(tls_files.cert),
                               "--keyfile", str(tls_files.key)))
    try:
        wait_listening(port, proc)
        status, body, cert = https_get(port, tls_files.client_context())
        assert (status, body) == (200, b"ok\n")
        assert cert == der(tls_files.cert)
        with connect(f"wss://localhost:{port}/ws", ssl_context=tls_files.client_context()) as ws:
            ws.send("over tls")
            assert ws.recv(timeout=10) == "over tls"
    finally:
        err = stop(proc)
    assert f"serving on https://127.0.0.1:{port}/ (Ctrl-C to quit): HTTPS and WSS" in err


def test_encrypted_key_with_password_from_the_environment(tls_files) -> None:
    port = free_port()
    proc = run_server(tls_args(port, "--certfile", str(tls_files.cert),
                               "--keyfile", str(tls_files.encrypted_key),
                               "--ssl-password-env", PASSWORD_VAR),
                      env={**os.environ, PASSWORD_VAR: "secret"})
    try:
        wait_listening(port, proc)
        assert https_get(port, tls_files.client_context())[:2] == (200, b"ok\n")
    finally:
        stop(proc)


@pytest.mark.parametrize("case, message", [
    ("wrong password", "cannot use the certificate"),
    ("variable not set", f"--ssl-password-env: ${PASSWORD_VAR} is not set"),
    ("no --ssl-password-env", "is encrypted: give its password with --ssl-password-env"),
])
def test_a_wrong_or_missing_key_password_is_a_one_line_error(tls_files, case: str,
                                                             message: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != PASSWORD_VAR}
    args = ["--port", "0", "--certfile", str(tls_files.cert),
            "--keyfile", str(tls_files.encrypted_key)]
    if case == "wrong password":
        env[PASSWORD_VAR] = "not the password"
    if case != "no --ssl-password-env":
        args += ["--ssl-password-env", PASSWORD_VAR]
    line = cli_error(args, env=env)
    assert message in line
    if case == "wrong password":
        assert "a wrong password" in line  # the hint of what to check


@pytest.mark.parametrize("missing", ["certfile", "keyfile", "ca-certs"])
def test_a_missing_file_is_named_in_a_one_line_error(tls_files, tmp_path: Path,
                                                     missing: str) -> None:
    files = {"certfile": str(tls_files.cert), "keyfile": str(tls_files.key),
             "ca-certs": str(tls_files.ca)}
    files[missing] = str(tmp_path / "nothere.pem")
    args = ["--port", "0", "--client-cert", "required"]
    for option, name in files.items():
        args += [f"--{option}", name]
    line = cli_error(args)
    assert f"cannot read {tmp_path / 'nothere.pem'}: no such file" in line


def test_a_certificate_without_its_key_says_so(tls_files) -> None:
    line = cli_error(["--port", "0", "--certfile", str(tls_files.cert)])
    assert line == f"wssync: error: {tls_files.cert} holds no private key: give --keyfile"


def test_a_certificate_and_key_in_one_file_need_no_keyfile(tls_files, tmp_path: Path) -> None:
    both = tmp_path / "both.pem"
    both.write_text(tls_files.cert.read_text() + tls_files.key.read_text())
    port = free_port()
    proc = run_server(tls_args(port, "--certfile", str(both)))
    try:
        wait_listening(port, proc)
        assert https_get(port, tls_files.client_context())[:2] == (200, b"ok\n")
    finally:
        stop(proc)


def test_an_unreadable_key_file_is_the_one_named(tls_files) -> None:
    # A root-only key, the server started as another user: the key is what it
    # cannot read, not the certificate.
    directory = Path(tempfile.mkdtemp(prefix="wssync-keys-"))
    try:
        directory.chmod(0o755)
        cert, key = directory / "cert.pem", directory / "key.pem"
        shutil.copy(tls_files.cert, cert)
        shutil.copy(tls_files.key, key)
        cert.chmod(0o644)
        key.chmod(0o600 if os.geteuid() == 0 else 0o000)
        command = unprivileged([sys.executable, "-m", "wssync", "--port", "0", "--certfile",
                                str(cert), "--keyfile", str(key)])
        proc = subprocess.run(command, capture_output=True, text=True, timeout=30, cwd="/",
                              stdin=subprocess.DEVNULL,
                              env=dict(os.environ, PYTHONPATH=str(ROOT)))
    finally:
        shutil.rmtree(directory)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr == f"wssync: error: cannot read {key}: Permission denied\n"


@pytest.mark.parametrize("option", [["--keyfile", "KEY"], ["--ca-certs", "CA"],
                                    ["--client-cert", "required"]])
def test_tls_options_without_certfile_are_an_error(tls_files, option: List[str]) -> None:
    value = {"KEY": str(tls_files.key), "CA": str(tls_files.ca)}.get(option[1], option[1])
    line = cli_error(["--port", "0", option[0], value])
    assert "--keyfile, --ca-certs and --client-cert need --certfile" in line


# -- client certificates -------------------------------------------------------------------------


def handshake_then_read(port: int, context: ssl.SSLContext) -> bytes:
    """Shake hands, then read what the server says first."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            context.wrap_socket(raw, server_hostname="localhost") as sock:
        return sock.recv(1024)


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2],
                         ids=["tls1.3", "tls1.2"])
def test_required_client_certificate(tls_files, version: ssl.TLSVersion) -> None:
    """Without a certificate the handshake is refused with an alert (TLS 1.2:
    handshake_failure, and the client's handshake itself fails; TLS 1.3:
    certificate_required, which the client sees at its first read, since its side
    of the handshake completed first), the server logs "TLS handshake failed:
    PEER_DID_NOT_RETURN_A_CERTIFICATE" and closes, and no request reaches the app;
    with the client certificate the request is answered.

    The server closes at once, with the client's last handshake record unread, so
    the close is a reset: a client that writes its request before reading may
    get that reset (an EOF error) instead of the alert."""
    port = free_port()
    proc = run_server(["--host", "127.0.0.1", "--port", str(port), "--certfile",
                       str(tls_files.cert), "--keyfile", str(tls_files.key),
                       "--client-cert", "required", "--ca-certs", str(tls_files.ca)])
    try:
        wait_listening(port, proc)
        anonymous = tls_files.client_context()
        anonymous.maximum_version = version
        with pytest.raises(ssl.SSLError) as refused:
            handshake_then_read(port, anonymous)
        assert refused.value.reason == ("TLSV13_ALERT_CERTIFICATE_REQUIRED"
                                        if version == ssl.TLSVersion.TLSv1_3
                                        else "SSLV3_ALERT_HANDSHAKE_FAILURE")
        with pytest.raises((ssl.SSLError, ConnectionError)):
            https_get(port, anonymous)  # a request sent right away fails too
        identified = tls_files.client_context()
        identified.maximum_version = version
        identified.load_cert_chain(str(tls_files.client_cert), str(tls_files.client_key))
        assert https_get(port, identified)[:2] == (200, b"ok\n")
    finally:
        err = stop(proc)
    assert err.count("TLS handshake failed: PEER_DID_NOT_RETURN_A_CERTIFICATE") == 2
    assert err.count('"GET /health HTTP/1.1" 200') == 1  # only the identified client's


# -- SIGHUP: reloading a renewed certificate --------------------------------------------------


def kept_connection(port: int, context: ssl.SSLContext) -> http.client.HTTPSConnection:
    conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=10, context=context)
    conn.request("GET", "/health")
    assert conn.getresponse().read() == b"ok\n"
    return conn


def peer_cert(conn: http.client.HTTPSConnection) -> Optional[bytes]:
    assert isinstance(conn.sock, ssl.SSLSocket)
    return conn.sock.getpeercert(binary_form=True)


def start_with_copies(tls_files, tmp_path: Path) -> Tuple[subprocess.Popen[str], int, Path,
                                                            Path]:
    """The server with copies of its certificate and key that the test may overwrite."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    shutil.copy(tls_files.cert, cert)
    shutil.copy(tls_files.key, key)
    port = free_port()
    # A long keep-alive: the kept connection must outlive a slow test.
    proc = run_server(tls_args(port, "--certfile", str(cert), "--keyfile", str(key),
                               "--keepalive-timeout", "120"))
    return proc, port, cert, key


def test_sighup_reloads_a_renewed_certificate_for_new_connections(tls_files,
                                                                  tmp_path: Path) -> None:
    """After the renewed files are copied in and SIGHUP is sent, new connections get
    the renewed certificate; a connection opened before keeps its certificate and
    goes on working."""
    proc, port, cert, key = start_with_copies(tls_files, tmp_path)
    context = tls_files.client_context()
    old, renewed = der(tls_files.cert), der(tls_files.renewed_cert)
    assert old != renewed
    try:
        wait_listening(port, proc)
        kept = kept_connection(port, context)
        assert peer_cert(kept) == old
        shutil.copy(tls_files.renewed_cert, cert)
        shutil.copy(tls_files.renewed_key, key)
        proc.send_signal(signal.SIGHUP)
        assert wait_until(lambda: https_get(port, context)[2] == renewed, 20, interval=0.1)
        kept.request("GET", "/health")  # the old connection, still open
        assert kept.getresponse().read() == b"ok\n"
        assert peer_cert(kept) == old
        kept.close()
        assert proc.poll() is None
    finally:
        err = stop(proc)
    assert f"certificate reloaded from {cert}" in err


@pytest.mark.parametrize("breakage", ["garbage certificate", "key of another certificate",
                                      "key file removed"])
def test_sighup_with_broken_files_logs_and_keeps_the_old_certificate(tls_files,
                                                                     tmp_path: Path,
                                                                     breakage: str) -> None:
    """A SIGHUP while the files are broken logs "SIGHUP: certificate not reloaded,
    the old one stays: ..." and the server goes on serving with the old one, to
    open and new connections alike."""
    proc, port, cert, key = start_with_copies(tls_files, tmp_path)
    log = StderrLines(proc)
    context = tls_files.client_context()
    old = der(tls_files.cert)
    try:
        wait_listening(port, proc)
        kept = kept_connection(port, context)
        if breakage == "garbage certificate":
            cert.write_text("-----BEGIN CERTIFICATE-----\nnot base64 at all\n")
        elif breakage == "key of another certificate":
            shutil.copy(tls_files.other_key, key)
        else:
            key.unlink()
        proc.send_signal(signal.SIGHUP)
        assert wait_until(lambda: "SIGHUP: certificate not reloaded, the old one stays"
                          in log.text, 20), log.text
        assert proc.poll() is None
        status, body, served = https_get(port, context)
        assert (status, body, served) == (200, b"ok\n", old)
        kept.request("GET", "/health")
        assert kept.getresponse().read() == b"ok\n"
        kept.close()
    finally:
        stop(proc)
        log.close()
    assert "Traceback" not in log.text
    assert "certificate reloaded" not in log.text
