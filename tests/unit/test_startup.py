"""What a server checks and loads around serving (``wssync._startup``), without serving.

Certificate reloads: files are staged (copied privately and checked) and
loaded into a context on the reactor's thread while one serves; a load handed
to a reactor that stopped before running it is done when serving ends.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import socket
import ssl
import threading
from pathlib import Path

import pytest
from conftest import TlsFiles

from wssync._startup import (
    CertificateReloads,
    bind_error,
    serving_line,
    serving_url,
    stage_certificates,
    tag_worker_logs,
)
from wssync.errors import BindError
from wssync.io.reactor import Reactor


def presented(context: ssl.SSLContext) -> bytes:
    """The certificate ``context`` holds (DER), as a handshake would present it."""
    ours, theirs = socket.socketpair()
    thread = threading.Thread(target=lambda: _serve_one(context, theirs))
    thread.start()
    client = ssl.create_default_context()
    client.check_hostname = False
    client.verify_mode = ssl.CERT_NONE
    with client.wrap_socket(ours) as sock:
        cert = sock.getpeercert(binary_form=True)
    thread.join(10)
    assert cert is not None
    return cert


def _serve_one(context: ssl.SSLContext, sock: socket.socket) -> None:
    with context.wrap_socket(sock, server_side=True):
        pass


def der(path: Path) -> bytes:
    return ssl.PEM_cert_to_DER_cert(path.read_text())


def test_staging_copies_privately_and_refuses_bad_files(tls_files: TlsFiles) -> None:
    staged = stage_certificates(str(tls_files.cert), str(tls_files.key), None)
    assert os.stat(staged.directory).st_mode & 0o077 == 0
    assert staged.keyfile is not None and os.stat(staged.keyfile).st_mode & 0o077 == 0
    assert Path(staged.certfile).read_bytes() == tls_files.cert.read_bytes()
    shutil.rmtree(staged.directory)
    with pytest.raises(ssl.SSLError):
        stage_certificates(str(tls_files.cert), str(tls_files.other_key), None)


def test_a_load_handed_to_a_reactor_that_never_ran_it_is_done_when_serving_ends(
        tls_files: TlsFiles) -> None:
    context = tls_files.server_context()
    reloads = CertificateReloads()
    reactor = Reactor()
    try:
        reloads.serving(reactor)  # serving: loads wait for the reactor's thread
        staged = stage_certificates(str(tls_files.renewed_cert), str(tls_files.renewed_key),
                                    None)
        reloads.load(context, staged)
        assert presented(context) == der(tls_files.cert)  # not loaded off the reactor
        reloads.serving(None)  # the reactor stopped before it got to the load
        assert presented(context) == der(tls_files.renewed_cert)
        assert not os.path.exists(staged.directory)  # the private copy is gone
    finally:
        reactor.close()


def test_a_load_while_nothing_serves_is_done_at_once(tls_files: TlsFiles) -> None:
    context = tls_files.server_context()
    staged = stage_certificates(str(tls_files.renewed_cert), str(tls_files.renewed_key), None)
    CertificateReloads().load(context, staged)
    assert presented(context) == der(tls_files.renewed_cert)
    assert not os.path.exists(staged.directory)


def test_a_reload_that_comes_while_another_waits_replaces_it(tls_files: TlsFiles) -> None:
    context = tls_files.server_context()
    reloads = CertificateReloads()
    reactor = Reactor()
    try:
        reloads.serving(reactor)
        first = stage_certificates(str(tls_files.cert), str(tls_files.key), None)
        reloads.load(context, first)
        newest = stage_certificates(str(tls_files.renewed_cert), str(tls_files.renewed_key),
                                    None)
        reloads.load(context, newest)
        assert not os.path.exists(first.directory)  # one copy waits, not two
        assert os.path.exists(newest.directory)
        reloads.serving(None)
        assert presented(context) == der(tls_files.renewed_cert)
        assert not os.path.exists(newest.directory)
    finally:
        reactor.close()


# -- the words around listening ----------------------------------------------------------


@pytest.mark.parametrize("host, tls, url, note", [
    ("127.0.0.1", False, "http://127.0.0.1:8080/", "only this machine can connect"),
    ("::1", True, "https://[::1]:8080/", "only this machine can connect"),
    ("localhost", False, "http://localhost:8080/", "only this machine can connect"),
    ("0.0.0.0", False, "http://127.0.0.1:8080/", "listening on all interfaces (0.0.0.0:8080)"),
    ("::", True, "https://[::1]:8080/", "listening on all interfaces ([::]:8080)"),
    ("192.0.2.10", False, "http://192.0.2.10:8080/", ""),
])
def test_the_start_up_url_is_one_a_browser_here_can_open(host: str, tls: bool, url: str,
                                                         note: str) -> None:
    assert serving_url(host, 8080, tls) == (url, note)


def test_the_start_up_line_spells_the_hint_for_the_command_line_or_the_code() -> None:
    line = serving_line("serving on", "127.0.0.1", 8080, None, False, True, True, "HTTP")
    assert line == ("serving on http://127.0.0.1:8080/ (Ctrl-C to quit): HTTP; only this "
                    "machine can connect (--host 0.0.0.0 to be reachable from the network)")
    line = serving_line("serving on", "127.0.0.1", 8080, None, False, False, False, "HTTP")
    assert line == ("serving on http://127.0.0.1:8080/: HTTP; only this machine can connect "
                    "(host=\"0.0.0.0\" to be reachable from the network)")
    assert serving_line("serving on", "", 0, "/run/app.sock", False, True, True, "HTTP") == \
        "serving on unix:/run/app.sock (Ctrl-C to quit): HTTP"


def test_bind_errors_keep_their_kind_and_errno() -> None:
    error = bind_error(PermissionError(errno.EACCES, "Permission denied"), "::", 443, None,
                       True)
    assert isinstance(error, PermissionError) and isinstance(error, BindError)
    assert error.errno == errno.EACCES
    assert str(error) == ("no permission to listen on [::]:443: ports below 1024 need "
                          "privileges; use a port above 1023 (--port 8080) or run with the "
                          "privilege to bind low ports (root or CAP_NET_BIND_SERVICE)")
    error = bind_error(OSError(errno.EADDRINUSE, "in use"), "", 0, "/run/app.sock", False)
    assert str(error) == "another server listens on /run/app.sock; stop it or choose " \
                         "another uds path"
    error = bind_error(socket.gaierror(-2, "Name or service not known"), "nohost.invalid", 80,
                       None, True)
    assert str(error) == "cannot listen on nohost.invalid:80: 'nohost.invalid' is not an " \
                         "address or a known host name"


def test_worker_log_lines_say_which_worker(caplog: pytest.LogCaptureFixture) -> None:
    previous = logging.getLogRecordFactory()
    try:
        tag_worker_logs(3)
        with caplog.at_level(logging.INFO, logger="wssync.test"):
            logging.getLogger("wssync.test").info("serving %d", 5)
            logging.getLogger("wssync.test").info(ValueError("not a string"))
    finally:
        logging.setLogRecordFactory(previous)
    assert [r.getMessage() for r in caplog.records] == ["[worker 3] serving 5",
                                                        "[worker 3] not a string"]
