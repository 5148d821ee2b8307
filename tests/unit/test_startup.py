"""What a server checks and loads around serving (``wssync._startup``), without serving.

Certificate reloads: files are staged (copied privately and checked) and
loaded into a context on the reactor's thread while one serves; a load handed
to a reactor that stopped before running it is done when serving ends.
"""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import threading
from pathlib import Path

import pytest
from conftest import TlsFiles

from wssync._startup import CertificateReloads, stage_certificates
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
