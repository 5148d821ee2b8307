"""``Server.reload_certificates``: a renewed certificate for new TLS connections.

Real servers on loopback with the test CA's certificates (``tls_files``), in
both modes: what a new connection is served after a reload, before the server
started and after it stopped, files that are refused at once, files replaced
between the check and the load (the load takes the bytes checked), a password
callback asked once, connections opened before a reload keeping theirs, and a
server without TLS.  The command line's SIGHUP reload is
tests/e2e/test_cli_tls.py.
"""

from __future__ import annotations

import logging
import shutil
import socket
import ssl
import tempfile
import threading
from pathlib import Path
from typing import Callable, List, Set

import pytest
from conftest import TlsFiles
from helpers import wait_until

from wssync import App, Request, Server

pytestmark = pytest.mark.timeout(60)


def make_app() -> App:
    app = App()

    @app.route("/hello")
    def hello(request: Request) -> str:
        return "hello"

    return app


def der(path: object) -> bytes:
    with open(str(path)) as pem:
        return ssl.PEM_cert_to_DER_cert(pem.read())


def served(server: Server, tls_files: TlsFiles, path: str = "/hello",
           body: bytes = b"hello") -> bytes:
    """The certificate a new connection to ``server`` gets (DER); the connection
    is also served a request, so it is known to work."""
    raw = socket.create_connection(("127.0.0.1", server.address[1]), timeout=10)
    with tls_files.client_context().wrap_socket(raw, server_hostname="localhost") as sock:
        cert = sock.getpeercert(binary_form=True)
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
                     .encode())
        answer = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(body), answer
    assert cert is not None
    return cert


def context_serves(context: ssl.SSLContext, tls_files: TlsFiles) -> bytes:
    """The certificate ``context`` presents in a handshake over a socket pair."""
    ours, theirs = socket.socketpair()
    errors: List[BaseException] = []

    def server_side() -> None:
        try:
            with context.wrap_socket(theirs, server_side=True):
                pass
        except (OSError, ssl.SSLError) as exc:
            errors.append(exc)

    thread = threading.Thread(target=server_side)
    thread.start()
    with tls_files.client_context().wrap_socket(ours, server_hostname="localhost") as sock:
        cert = sock.getpeercert(binary_form=True)
    thread.join(10)
    assert cert is not None and not errors, errors
    return cert


def test_new_connections_get_the_renewed_certificate_and_open_ones_keep_theirs(
        start_server: Callable[..., Server], tls_files: TlsFiles, threads: int,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    server = start_server(make_app(), threads, ssl_context=tls_files.server_context())
    assert served(server, tls_files) == der(tls_files.cert)
    raw = socket.create_connection(("127.0.0.1", server.address[1]), timeout=10)
    kept = tls_files.client_context().wrap_socket(raw, server_hostname="localhost")
    server.reload_certificates(str(tls_files.renewed_cert), str(tls_files.renewed_key))
    assert wait_until(lambda: served(server, tls_files) == der(tls_files.renewed_cert), 10)
    assert served(server, tls_files) == der(tls_files.renewed_cert)  # and stays so
    assert kept.getpeercert(binary_form=True) == der(tls_files.cert)
    kept.sendall(b"GET /hello HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
    assert kept.recv(65536).startswith(b"HTTP/1.1 200")
    kept.close()
    assert wait_until(lambda: f"certificate reloaded from {tls_files.renewed_cert}"
                      in caplog.text)


@pytest.mark.parametrize("breakage", ["certificate is not one", "key of another certificate",
                                      "no such key file"])
def test_files_that_do_not_load_are_refused_at_once_and_the_current_one_stays(
        start_server: Callable[..., Server], tls_files: TlsFiles, tmp_path: object,
        breakage: str, caplog: pytest.LogCaptureFixture) -> None:
    server = start_server(make_app(), ssl_context=tls_files.server_context())
    # A good reload first: what stays is the certificate in use, not the first one.
    server.reload_certificates(str(tls_files.renewed_cert), str(tls_files.renewed_key))
    assert wait_until(lambda: served(server, tls_files) == der(tls_files.renewed_cert), 10)
    cert, key = {
        "certificate is not one": (str(tls_files.key), str(tls_files.key)),
        "key of another certificate": (str(tls_files.cert), str(tls_files.other_key)),
        "no such key file": (str(tls_files.cert), str(tls_files.cert) + ".missing"),
    }[breakage]
    with pytest.raises((ssl.SSLError, OSError)):
        server.reload_certificates(cert, key)
    for _ in range(3):
        assert served(server, tls_files) == der(tls_files.renewed_cert)


def staged_copies() -> Set[Path]:
    return set(Path(tempfile.gettempdir()).glob("wssync-cert-*"))


def test_files_replaced_after_the_check_do_not_reach_the_context(
        start_server: Callable[..., Server], tls_files: TlsFiles, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    """A renewal that writes its files in place right after the check: the load
    on the reactor takes the bytes that were checked, never a half-written pair
    (OpenSSL installs a certificate before it finds its key wrong, which would
    leave every new handshake failing)."""
    caplog.set_level(logging.INFO)
    cert, key = tmp_path / "live.pem", tmp_path / "live.key"
    shutil.copy(str(tls_files.renewed_cert), str(cert))
    shutil.copy(str(tls_files.renewed_key), str(key))
    started, release = threading.Event(), threading.Event()
    app = make_app()

    @app.route("/hold")
    def hold(request: Request) -> str:
        started.set()
        release.wait(10)  # holds the reactor (reactor mode): the load waits behind it
        return "held"

    server = start_server(app, ssl_context=tls_files.server_context())
    before = staged_copies()
    holder = threading.Thread(target=served, args=(server, tls_files, "/hold", b"held"))
    holder.start()
    assert started.wait(10)
    server.reload_certificates(str(cert), str(key))  # checked now, loaded once released
    cert.write_bytes(tls_files.cert.read_bytes())  # the renewal goes on: another pair
    key.write_bytes(b"half written")
    release.set()
    holder.join(10)
    assert served(server, tls_files) == der(tls_files.renewed_cert)
    assert wait_until(lambda: f"certificate reloaded from {cert}" in caplog.text, 10)
    assert "certificate not reloaded" not in caplog.text
    assert staged_copies() <= before  # the private copies are removed


def test_a_password_callback_is_asked_once_per_reload(
        start_server: Callable[..., Server], tls_files: TlsFiles) -> None:
    """A second question could get another answer (a secret rotated meanwhile)."""
    asked: List[str] = []

    def password() -> str:
        asked.append("asked")
        return "secret" if len(asked) == 1 else "not the password"

    server = start_server(make_app(), ssl_context=tls_files.server_context())
    server.reload_certificates(str(tls_files.renewed_cert), str(tls_files.renewed_key))
    assert wait_until(lambda: served(server, tls_files) == der(tls_files.renewed_cert), 10)
    # The check on this thread and the load on the reactor's share one answer.
    server.reload_certificates(str(tls_files.cert), str(tls_files.encrypted_key), password)
    assert wait_until(lambda: served(server, tls_files) == der(tls_files.cert), 10)
    assert asked == ["asked"]


def test_a_reload_before_the_server_starts_is_what_it_serves(
        tls_files: TlsFiles) -> None:
    server = Server(make_app(), "127.0.0.1", 0, ssl_context=tls_files.server_context())
    server.reload_certificates(str(tls_files.renewed_cert), str(tls_files.renewed_key))
    with server:
        assert served(server, tls_files) == der(tls_files.renewed_cert)


def test_a_reload_after_the_server_stopped_goes_into_its_context(
        start_server: Callable[..., Server], tls_files: TlsFiles) -> None:
    server = start_server(make_app(), ssl_context=tls_files.server_context())
    assert served(server, tls_files) == der(tls_files.cert)
    server.stop(timeout=10)
    server.reload_certificates(str(tls_files.renewed_cert), str(tls_files.renewed_key))
    assert server.ssl_context is not None
    assert context_serves(server.ssl_context, tls_files) == der(tls_files.renewed_cert)


def test_a_server_without_tls_has_no_certificate_to_reload(
        start_server: Callable[..., Server], tls_files: TlsFiles) -> None:
    server = start_server(make_app())
    with pytest.raises(RuntimeError, match="TLS"):
        server.reload_certificates(str(tls_files.cert), str(tls_files.key))
