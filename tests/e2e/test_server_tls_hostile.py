"""Hostile and odd clients on the TLS port, and real TLS tools against it.

A server with a short TLS handshake deadline (0.5 s) meets clients that send
garbage, stop in the middle of a ClientHello, say nothing, reset mid-handshake,
or come by the thousand and never finish (the log stays a few lines long, and
past ``max_tls_handshakes`` the oldest is dropped); ``openssl s_client`` checks what the
server negotiates (ALPN, versions, compression, renegotiation) and ``curl``
checks keep-alive over HTTPS and the plain-HTTP answer.  What the server does
in each case (its log line, how the connection ends) is in each test's
docstring; no handler ever runs for a connection that did not finish its
handshake.
"""

from __future__ import annotations

import http.client
import logging
import re
import resource
import shutil
import socket
import ssl
import struct
import subprocess
import threading
import time
from typing import Iterator, List, NamedTuple, Optional, Tuple

import pytest
from helpers import read_until_closed, wait_until

from wssync import App, Request, Server
from wssync.io.tls import FIRST_RECORD_PATIENCE

HANDSHAKE_TIMEOUT = 0.5
LINGER_RST = struct.pack("ii", 1, 0)  # SO_LINGER 0: close() sends a reset
TIMED_OUT = f"TLS handshake not done within {HANDSHAKE_TIMEOUT:g} s"
PLAIN_ANSWER = "this port speaks TLS: use https:// or wss://"


class TlsServer(NamedTuple):
    server: Server
    port: int
    calls: List[Tuple[str, object]]  # (path, remote address) of every handler call
    context: ssl.SSLContext  # a client context trusting the test CA


def make_app(calls: List[Tuple[str, object]]) -> App:
    app = App()

    def answer(request: Request) -> str:
        calls.append((request.path, request.remote_addr))
        return f"{request.path} over {request.scheme}\n"

    for path in ("/", "/a", "/b"):
        app.route(path)(answer)
    return app


@pytest.fixture
def tls_server(start_server, threads: int, tls_files,
               caplog: pytest.LogCaptureFixture) -> TlsServer:
    caplog.set_level(logging.DEBUG, logger="wssync")
    calls: List[Tuple[str, object]] = []
    server = start_server(make_app(calls), threads=threads,
                          ssl_context=tls_files.server_context(),
                          tls_handshake_timeout=HANDSHAKE_TIMEOUT)
    return TlsServer(server, server.address[1], calls, tls_files.client_context())


def https_get(tls: TlsServer, path: str = "/") -> Tuple[int, str]:
    """One request on a fresh HTTPS connection (a full handshake each time)."""
    conn = http.client.HTTPSConnection("127.0.0.1", tls.port, timeout=10, context=tls.context)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()


def client_hello(context: ssl.SSLContext) -> bytes:
    """The bytes of a real ClientHello for localhost (TLS over memory, no socket)."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    hello = outgoing.read()
    assert hello[:1] == b"\x16" and len(hello) > 100  # a handshake record
    return hello


def logged(caplog: pytest.LogCaptureFixture, text: str, client_port: Optional[int] = None,
           logger: str = "wssync.tls") -> List[logging.LogRecord]:
    """Records of ``logger`` containing ``text`` (about that client port, if given)."""
    peer = f"('127.0.0.1', {client_port})" if client_port is not None else ""
    return [r for r in caplog.records
            if r.name == logger and text in r.getMessage() and peer in r.getMessage()]


def no_trouble_logged(caplog: pytest.LogCaptureFixture) -> None:
    trouble = [r for r in caplog.records
               if r.name.startswith("wssync") and (r.levelno >= logging.WARNING or r.exc_info)]
    assert not trouble, [r.getMessage() for r in trouble]


def still_serves(tls: TlsServer, calls_before: int = 0) -> None:
    """The hostile connection left nothing behind and ran no handler; others are served."""
    assert wait_until(lambda: tls.server.connections() == []), tls.server.connections()
    assert len(tls.calls) == calls_before, tls.calls
    assert https_get(tls) == (200, "/ over https\n")


# -- garbage, silence, half a ClientHello, resets ------------------------------------------

GARBAGE = {
    "binary": b"\x00\x01\x02garbage\xff\xfe" * 20,
    "another protocol's banner": b"SSH-2.0-OpenSSH_9.2\r\n",
    "a TLS record header with an absurd length": b"\x16\x03\x01\xff\xff" + b"\x00" * 64,
}


@pytest.mark.parametrize("kind", list(GARBAGE))
def test_garbage_instead_of_a_client_hello_is_closed_at_once(tls_server: TlsServer, kind: str,
                                                             caplog) -> None:
    """The server logs "TLS handshake failed: <OpenSSL reason>" at INFO and closes
    the connection as soon as the bytes arrive (long before the handshake deadline:
    the read is bounded by 10 s, the deadline is 0.5 s, so the log line is what
    tells the two apart).  No handler runs; the server goes on serving."""
    with socket.create_connection(("127.0.0.1", tls_server.port), timeout=10) as sock:
        client_port = sock.getsockname()[1]
        sock.sendall(GARBAGE[kind])
        reply = read_until_closed(sock, timeout=10)
    # Closed with nothing said, or with one fatal alert record: no plain answer.
    assert reply == b"" or reply[:1] == b"\x15", reply
    assert wait_until(lambda: logged(caplog, "TLS handshake failed:", client_port))
    assert not logged(caplog, TIMED_OUT, client_port)  # refused for what it sent
    still_serves(tls_server)


@pytest.mark.parametrize("sent", ["nothing", "half a ClientHello", "a whole ClientHello"])
def test_a_handshake_that_stalls_is_dropped_at_the_deadline(tls_server: TlsServer, sent: str,
                                                            caplog) -> None:
    """A client that opens TCP and says nothing, one whose ClientHello stops in
    the middle, and one that sends a whole ClientHello but never its Finished:
    each is dropped when the 0.5 s handshake deadline passes, with the INFO line
    "TLS handshake not done within 0.5 s" and a close (no alert).  No handler runs."""
    hello = client_hello(tls_server.context)
    data = {"nothing": b"", "half a ClientHello": hello[:len(hello) // 2],
            "a whole ClientHello": hello}[sent]
    with socket.create_connection(("127.0.0.1", tls_server.port), timeout=10) as sock:
        client_port = sock.getsockname()[1]
        sock.sendall(data)
        # Closed by the server well within the bound (the deadline is 0.5 s);
        # what the server said before closing is its flight for a whole hello.
        reply = read_until_closed(sock, timeout=10)
    assert bool(reply) == (sent == "a whole ClientHello")
    assert wait_until(lambda: logged(caplog, TIMED_OUT, client_port)), caplog.text
    still_serves(tls_server)


@pytest.mark.parametrize("when", ["after half a ClientHello", "after the server's reply"])
def test_reset_mid_handshake_leaves_the_server_fine(tls_server: TlsServer, when: str,
                                                    caplog) -> None:
    """A client that resets the connection (SO_LINGER 0) in the middle of the
    handshake: the server drops it quietly (a reset is not worth a log line:
    nothing at INFO or above, no traceback), runs no handler, and goes on serving."""
    hello = client_hello(tls_server.context)
    sock = socket.create_connection(("127.0.0.1", tls_server.port), timeout=10)
    try:
        client_port = sock.getsockname()[1]
        if when == "after half a ClientHello":
            sock.sendall(hello[:len(hello) // 2])
            assert wait_until(lambda: any(c["peer_port"] == client_port
                                          for c in tls_server.server.connections()))
        else:
            sock.sendall(hello)
            assert sock.recv(65536)[:1] == b"\x16"  # the server's handshake flight
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RST)
    finally:
        sock.close()
    still_serves(tls_server)
    assert not [r for r in caplog.records if r.name.startswith("wssync")
                and r.levelno >= logging.INFO and str(client_port) in r.getMessage()]
    no_trouble_logged(caplog)


# -- thousands of handshakes that never finish ------------------------------------------------

STALLED = 2000
SUMMARY = re.compile(r"TLS handshakes not done in time: (\d+) more in the last \d+ s, "
                     r"all from 127\.0\.0\.1")


@pytest.fixture
def enough_descriptors() -> Iterator[None]:
    """Room for both ends of every stalled connection in this one process."""
    need = 2 * STALLED + 512
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < need:
        if hard != resource.RLIM_INFINITY and hard < need:
            pytest.skip(f"RLIMIT_NOFILE hard limit {hard} is below the {need} descriptors "
                        f"this test needs")
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def stall(port: int, count: int, payloads: List[bytes]) -> List[socket.socket]:
    """``count`` connections to ``port`` that send ``payloads[n % len]`` and no more."""
    stalled = []
    try:
        for n in range(count):
            sock = socket.create_connection(("127.0.0.1", port), timeout=30)
            stalled.append(sock)
            if payloads[n % len(payloads)]:
                sock.sendall(payloads[n % len(payloads)])
    except BaseException:
        for sock in stalled:
            sock.close()
        raise
    return stalled


@pytest.mark.slow
def test_two_thousand_stalled_handshakes_do_not_stop_others_nor_fill_the_log(
        start_server, threads: int, tls_files, enough_descriptors: None, caplog) -> None:
    """2000 connections that never finish the handshake (half of them silent,
    half stopped in the middle of a ClientHello) arrive while a normal HTTPS
    client keeps asking: every one of its requests is answered, every stalled
    connection is closed by the server at its deadline and runs no handler.
    The log says so in a few lines, not 2000: the first five in full ("TLS
    handshake not done within 0.5 s"), then, when the 10 s interval ends, one
    line with the count of the others ("TLS handshakes not done in time: 1995
    more in the last 10 s, all from 127.0.0.1")."""
    caplog.set_level(logging.DEBUG, logger="wssync")
    calls: List[Tuple[str, object]] = []
    server = start_server(make_app(calls), threads=threads,
                          ssl_context=tls_files.server_context(),
                          tls_handshake_timeout=HANDSHAKE_TIMEOUT, max_tls_handshakes=0)
    tls = TlsServer(server, server.address[1], calls, tls_files.client_context())
    half_hello = client_hello(tls.context)[:200]
    stalled: List[socket.socket] = []
    answers = []
    try:
        for _ in range(STALLED // 100):
            stalled += stall(tls.port, 100, [b"", half_hello])
            answers.append(https_get(tls))
        assert answers == [(200, "/ over https\n")] * (STALLED // 100)
        assert wait_until(lambda: server.connections() == [], 60), len(server.connections())
        for sock in stalled:
            assert read_until_closed(sock, timeout=10) == b""
        # The interval that began with the first expiry ends within 10 s of it.
        assert wait_until(lambda: any(SUMMARY.search(m) for m in caplog.messages), 30)
    finally:
        for sock in stalled:
            sock.close()
    lines = logged(caplog, "TLS handshake")
    full = [r.getMessage() for r in lines if TIMED_OUT in r.getMessage()]
    summaries = [SUMMARY.search(r.getMessage()) for r in lines]
    counted = sum(int(match.group(1)) for match in summaries if match)
    assert len(full) == 5 and len(full) + counted == STALLED, [r.getMessage() for r in lines]
    assert len(lines) <= 8  # the burst, one summary per 10 s interval, nothing else
    assert [path for path, _ in calls] == ["/"] * len(answers)
    no_trouble_logged(caplog)


@pytest.mark.parametrize("sent", ["nothing", "half a ClientHello", "a whole ClientHello"])
def test_past_max_tls_handshakes_the_oldest_unfinished_one_is_dropped(
        start_server, tls_files, caplog, sent: str) -> None:
    """With ``max_tls_handshakes=20`` and a deadline far away, 20 stalled
    handshakes are kept; each new connection drops the oldest unfinished one
    (a WARNING "max_tls_handshakes (20) reached: dropping the oldest unfinished
    handshake (...)" for the first five, then a count), and a real client still
    gets its answer: it is never the oldest for long."""
    caplog.set_level(logging.INFO, logger="wssync")
    calls: List[Tuple[str, object]] = []
    server = start_server(make_app(calls), ssl_context=tls_files.server_context(),
                          tls_handshake_timeout=60, max_tls_handshakes=20)
    tls = TlsServer(server, server.address[1], calls, tls_files.client_context())
    hello = client_hello(tls.context)
    data = {"nothing": b"", "half a ClientHello": hello[:len(hello) // 2],
            "a whole ClientHello": hello}[sent]
    first = stall(tls.port, 20, [data])
    try:
        assert wait_until(lambda: len(server.connections()) == 20)
        later = stall(tls.port, 7, [data])
        first += later
        # The seven oldest are closed (after the server's flight, for a whole hello).
        for sock in first[:7]:
            read_until_closed(sock, timeout=10)  # socket.timeout if it were still open
        assert wait_until(lambda: len(server.connections()) == 20)
        for sock in first[7:]:
            sock.setblocking(False)
            with pytest.raises(BlockingIOError):
                while sock.recv(65536):
                    pass  # the server's flight for a whole hello, and no end after it
        assert https_get(tls) == (200, "/ over https\n")
    finally:
        for sock in first:
            sock.close()
    dropped = logged(caplog, "max_tls_handshakes (20) reached: dropping the oldest "
                             "unfinished handshake")
    assert len(dropped) == 5 and all(r.levelno == logging.WARNING for r in dropped)
    assert calls == [("/", calls[0][1])]


def test_past_max_tls_handshakes_one_that_has_said_nothing_goes_first(
        start_server, tls_files) -> None:
    """Handshakes past the ServerHello (a whole ClientHello: the server has done its
    work) are kept while one that has waited over a second for its first record
    can go: a storm of real clients is not undone by the bound."""
    server = start_server(make_app([]), ssl_context=tls_files.server_context(),
                          tls_handshake_timeout=60, max_tls_handshakes=20)
    tls = TlsServer(server, server.address[1], [], tls_files.client_context())
    hello = client_hello(tls.context)
    answered = stall(tls.port, 10, [hello])  # the oldest: the server answered them
    try:
        assert wait_until(lambda: len(server.connections()) == 10)
        silent = stall(tls.port, 10, [b""])
        assert wait_until(lambda: len(server.connections()) == 20)
        time.sleep(FIRST_RECORD_PATIENCE + 0.2)  # a real client would have said hello
        later = stall(tls.port, 5, [b""])
        silent += later
        for sock in silent[:5]:  # the five oldest that had said nothing
            read_until_closed(sock, timeout=10)
        for sock in answered + silent[5:]:
            sock.setblocking(False)
            with pytest.raises(BlockingIOError):
                while sock.recv(65536):
                    pass  # (the server's flight) and no end after it
    finally:
        for sock in answered + silent:
            sock.close()


# -- openssl s_client -------------------------------------------------------------------------

OPENSSL = shutil.which("openssl")
needs_openssl = pytest.mark.skipif(OPENSSL is None,
                                   reason="the openssl command is not installed")
REQUEST = b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"


def s_client(tls: TlsServer, tls_files, *options: str,
             send: bytes = b"") -> subprocess.CompletedProcess[str]:
    """``openssl s_client`` against the server; ``send`` goes out after the handshake,
    then s_client waits for the server to close (-ign_eof)."""
    assert OPENSSL is not None
    return subprocess.run(
        [OPENSSL, "s_client", "-connect", f"127.0.0.1:{tls.port}", "-servername", "localhost",
         "-CAfile", str(tls_files.ca), "-verify_return_error", "-ign_eof", *options],
        input=send.decode(), capture_output=True, text=True, timeout=60)


@needs_openssl
def test_openssl_negotiates_alpn_http11_without_compression(tls_server: TlsServer,
                                                            tls_files) -> None:
    """Offered ``http/1.1``, the server selects it; the certificate verifies, TLS
    compression is off, and the request is answered."""
    result = s_client(tls_server, tls_files, "-alpn", "http/1.1", send=REQUEST)
    assert result.returncode == 0, result.stderr
    assert "ALPN protocol: http/1.1" in result.stdout
    assert "Verify return code: 0 (ok)" in result.stdout
    assert "Compression: NONE" in result.stdout
    assert "HTTP/1.1 200 OK" in result.stdout and "/ over https" in result.stdout


@needs_openssl
def test_openssl_tls12_works_without_compression(tls_server: TlsServer, tls_files) -> None:
    """``-no_tls1_3``: TLS 1.2 is negotiated and serves; compression is off."""
    result = s_client(tls_server, tls_files, "-no_tls1_3", send=REQUEST)
    assert result.returncode == 0, result.stderr
    assert "New, TLSv1.2, Cipher is" in result.stdout
    assert "Compression: NONE" in result.stdout
    assert "HTTP/1.1 200 OK" in result.stdout and "/ over https" in result.stdout


@needs_openssl
def test_openssl_tls11_is_refused(tls_server: TlsServer, tls_files, caplog) -> None:
    """``-tls1_1`` (the client's security level lowered so it really offers it):
    the server answers with a protocol_version alert, logs "TLS handshake failed:
    UNSUPPORTED_PROTOCOL" and closes; no request gets through."""
    result = s_client(tls_server, tls_files, "-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0",
                      send=REQUEST)
    assert result.returncode != 0
    assert "alert protocol version" in result.stderr, result.stderr
    assert "HTTP/1.1" not in result.stdout
    assert wait_until(lambda: logged(caplog, "TLS handshake failed: UNSUPPORTED_PROTOCOL"))
    still_serves(tls_server)


@needs_openssl
def test_openssl_h2_only_offer_gets_no_alpn_and_plain_http11(tls_server: TlsServer,
                                                             tls_files) -> None:
    """Offering only ``h2``: the server selects no protocol (no ALPN extension in
    its reply) and does not refuse the handshake with no_application_protocol;
    the connection then speaks HTTP/1.1 as usual, so a client that insists on h2
    has to give up by itself."""
    result = s_client(tls_server, tls_files, "-alpn", "h2", send=REQUEST)
    assert result.returncode == 0, result.stderr
    assert "No ALPN negotiated" in result.stdout
    assert "ALPN protocol:" not in result.stdout
    assert "HTTP/1.1 200 OK" in result.stdout


@needs_openssl
def test_openssl_renegotiation_is_refused(tls_server: TlsServer, tls_files, caplog) -> None:
    """On a TLS 1.2 connection, s_client's "R" (renegotiate) is refused: the server
    answers the new ClientHello with a no_renegotiation alert, s_client gives up
    ("no renegotiation") with a handshake_failure alert, and the server closes
    the connection (logged at DEBUG only).  The server goes on serving.

    OpenSSL 3 refuses client-initiated renegotiation by default; the context also
    sets OP_NO_RENEGOTIATION, which is what refuses it with older OpenSSL."""
    assert OPENSSL is not None
    context = tls_server.server.ssl_context
    assert context is not None and context.options & ssl.OP_NO_RENEGOTIATION
    proc = subprocess.Popen(
        [OPENSSL, "s_client", "-connect", f"127.0.0.1:{tls_server.port}", "-servername",
         "localhost", "-CAfile", str(tls_files.ca), "-no_tls1_3"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output: List[str] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            output.append(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        # The handshake is done once the session is printed.
        assert wait_until(lambda: "Extended master secret" in "".join(output), 30), output
        assert proc.stdin is not None
        proc.stdin.write("R\n")
        proc.stdin.flush()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pytest.fail(f"s_client still connected after asking to renegotiate: {output}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        reader.join(10)
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                stream.close()
    text = "".join(output)
    assert "New, TLSv1.2, Cipher is" in text
    assert "RENEGOTIATING" in text
    assert "no renegotiation" in text, text
    assert proc.returncode != 0
    assert wait_until(lambda: tls_server.server.connections() == [])
    assert wait_until(lambda: logged(caplog, "HANDSHAKE_FAILURE", logger="wssync.transport"))
    still_serves(tls_server)


# -- curl ---------------------------------------------------------------------------------------

CURL = shutil.which("curl")
needs_curl = pytest.mark.skipif(CURL is None, reason="the curl command is not installed")


@needs_curl
def test_curl_reuses_one_https_connection_for_two_urls(tls_server: TlsServer,
                                                       tls_files) -> None:
    """Two URLs on one curl command line: one TLS connection, kept alive, HTTP/1.1
    (selected by ALPN although curl also offers h2)."""
    assert CURL is not None
    port = tls_server.port
    result = subprocess.run(
        [CURL, "-v", "-s", "--cacert", str(tls_files.ca), "--resolve",
         f"localhost:{port}:127.0.0.1", f"https://localhost:{port}/a",
         f"https://localhost:{port}/b"],
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "/a over https\n/b over https\n"
    assert "Re-using existing connection" in result.stderr, result.stderr
    assert result.stderr.count("< HTTP/1.1 200") == 2
    assert "ALPN: server accepted http/1.1" in result.stderr
    assert [path for path, _ in tls_server.calls] == ["/a", "/b"]
    first, second = (peer for _, peer in tls_server.calls)
    assert first == second  # the same client port: the same connection


@needs_curl
def test_curl_plain_http_to_the_tls_port_gets_400(tls_server: TlsServer, caplog) -> None:
    """Plain HTTP on the TLS port: the server answers in clear with a 400 whose body
    says to use https:// or wss://, logs "plain HTTP sent to the TLS port" and closes."""
    assert CURL is not None
    result = subprocess.run([CURL, "-s", "-i", f"http://127.0.0.1:{tls_server.port}/"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("HTTP/1.1 400"), result.stdout
    assert PLAIN_ANSWER in result.stdout
    assert wait_until(lambda: logged(caplog, "plain HTTP sent to the TLS port"))
    still_serves(tls_server)
