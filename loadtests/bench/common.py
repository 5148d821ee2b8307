"""Shared pieces of the benchmark suite: /proc readings, CPU pinning, WebSocket
client frames and handshakes, a many-connection opener, and the TLS test certificate.

Everything here is standard library only and Linux-specific (/proc, epoll,
sched_setaffinity).
"""

from __future__ import annotations

import base64
import errno
import math
import os
import resource
import select
import socket
import ssl
import struct
import subprocess
import time
from typing import Any, Dict, Iterable, List, Optional, Tuple

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
APPS_DIR = os.path.join(BENCH_DIR, "apps")
RESULTS_DIR = os.path.join(BENCH_DIR, "results")
REPO_DIR = os.path.dirname(os.path.dirname(BENCH_DIR))

SERVER_CPU = 0  # the server under test runs here
LOAD_CPU = 1  # load generators, the orchestrator and its helpers run here
# Every CPU we may use, read before anything pins this process: where multi-process
# servers (and, for their workloads, wrk) run, free to use both cores.
ALL_CPUS = ",".join(str(cpu) for cpu in sorted(os.sched_getaffinity(0)))

CLK_TCK = os.sysconf("SC_CLK_TCK")
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)

# What a non-blocking recv/send may raise instead of moving bytes: on a plain socket
# BlockingIOError; on an SSLSocket also a want-read/want-write (OSErrors, but not
# BlockingIOErrors), e.g. a recv that only consumed a TLS 1.3 session ticket.
WOULD_BLOCK = (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError)


# -- process and machine ------------------------------------------------------------


def raise_nofile() -> int:
    """Raise RLIMIT_NOFILE's soft limit to the hard limit; returns the new limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    return soft


def pin(cpu: int) -> None:
    """Pin the calling process (and its future children) to one CPU, if it exists."""
    try:
        if cpu in os.sched_getaffinity(0) or cpu < (os.cpu_count() or 1):
            os.sched_setaffinity(0, {cpu})
    except OSError:
        pass


def _children_map() -> Dict[int, List[int]]:
    children: Dict[int, List[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(b")") + 2:].split()[1])
        children.setdefault(ppid, []).append(int(name))
    return children


def process_tree(pid: int) -> List[int]:
    """``pid`` and all its descendants (gunicorn's worker is a child of the arbiter)."""
    children = _children_map()
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, ()))
    return out


def cpu_seconds(pids: Iterable[int]) -> float:
    """utime + stime of ``pids`` from /proc/PID/stat, in seconds (10 ms resolution)."""
    ticks = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(b")") + 2:].split()
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / CLK_TCK


def cpu_by_process(pid: int) -> Dict[int, float]:
    """utime + stime (seconds) of ``pid`` and of each of its descendants, by pid."""
    return {p: cpu_seconds([p]) for p in process_tree(pid)}


def sched_ns(pids: Iterable[int]) -> int:
    """On-CPU nanoseconds of every live thread of ``pids`` (/proc/PID/task/*/schedstat):
    finer than :func:`cpu_seconds` for short windows, blind to threads that exited."""
    total = 0
    for pid in pids:
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                    total += int(f.read().split()[0])
            except (OSError, ValueError, IndexError):
                continue
    return total


def status_fields(pids: Iterable[int]) -> Dict[str, int]:
    """VmRSS (KiB) and Threads summed over ``pids`` from /proc/PID/status."""
    rss = threads = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        rss += int(line.split()[1])
                    elif line.startswith("Threads:"):
                        threads += int(line.split()[1])
        except OSError:
            continue
    return {"rss_kib": rss, "threads": threads}


def core_ticks() -> Dict[int, Tuple[int, ...]]:
    """Per CPU: (busy, total, user+nice+system, irq+softirq) ticks from /proc/stat."""
    out: Dict[int, Tuple[int, ...]] = {}
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu") and line[3].isdigit():
                parts = line.split()
                v = [int(x) for x in parts[1:]]
                total = sum(v[:8])  # guest time is already in user
                idle = v[3] + v[4]  # idle + iowait
                out[int(parts[0][3:])] = (total - idle, total, v[0] + v[1] + v[2], v[5] + v[6])
    return out


def core_share(before: Dict[int, Tuple[int, ...]], after: Dict[int, Tuple[int, ...]],
               cpu: int, field: int = 0) -> Optional[float]:
    """Fraction of ``cpu``'s time in ``field`` (0: busy, 2: processes, 3: interrupts)
    between two :func:`core_ticks` readings."""
    if cpu not in before or cpu not in after:
        return None
    total = after[cpu][1] - before[cpu][1]
    return (after[cpu][field] - before[cpu][field]) / total if total else None


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_port(host: str, port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection((host, port), 0.5).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


def percentile(values: List[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1))
    return ordered[k]


def median(values: List[float]) -> float:
    ordered = sorted(values)
    n = len(ordered)
    if not n:
        return float("nan")
    mid = n // 2
    return ordered[mid] if n % 2 else (ordered[mid - 1] + ordered[mid]) / 2


# -- TLS -------------------------------------------------------------------------------


def make_test_cert(directory: str, host: str = "127.0.0.1") -> Tuple[str, str]:
    """A self-signed certificate for ``host`` (ECDSA P-256, subjectAltName IP:``host``)
    and its key, made with the ``openssl`` command in ``directory``; (certfile, keyfile).
    """
    cert = os.path.join(directory, "cert.pem")
    key = os.path.join(directory, "key.pem")
    cmd = ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
           "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key, "-out", cert,
           "-days", "2", "-subj", f"/CN={host}", "-addext", f"subjectAltName=IP:{host}"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except OSError as exc:
        raise RuntimeError(f"cannot run openssl to make the test certificate: {exc}") from None
    if proc.returncode:
        raise RuntimeError(f"openssl failed ({proc.returncode}): {proc.stderr.strip()[-300:]}")
    return cert, key


def client_context(cafile: Optional[str] = None) -> ssl.SSLContext:
    """A client context that trusts ``cafile`` (the test certificate: its name and chain
    are checked), or that checks nothing without one.  No ALPN, no session reuse: every
    connection does a full handshake, as a new client would."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if cafile:
        context.load_verify_locations(cafile)
    else:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def tls_session(sock: Any) -> Optional[str]:
    """"TLSv1.3 TLS_AES_256_GCM_SHA384" for an SSLSocket, None for a plain one."""
    if not isinstance(sock, ssl.SSLSocket):
        return None
    cipher = sock.cipher()
    return f"{sock.version()} {cipher[0] if cipher else '?'}"


def recv_tls(sock: Any, size: int) -> bytes:
    """recv, then what OpenSSL already decrypted beyond it: the socket will not signal
    those bytes again.  Raises like ``sock.recv`` (see :data:`WOULD_BLOCK`)."""
    data: bytes = sock.recv(size)
    if data:
        pending = sock.pending()
        while pending:
            more = sock.recv(pending)
            if not more:
                break
            data += more
            pending = sock.pending()
    return data


# -- WebSocket client side ------------------------------------------------------------

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
MASK = b"\x37\xfa\x21\x3d"


def masked_frame(opcode: int, payload: bytes, mask: bytes = MASK) -> bytes:
    """One final client frame (clients must mask; the mask is fixed: we only benchmark)."""
    n = len(payload)
    first = 0x80 | opcode
    if n < 126:
        header = bytes((first, 0x80 | n))
    elif n < 65536:
        header = struct.pack("!BBH", first, 0x80 | 126, n)
    else:
        header = struct.pack("!BBQ", first, 0x80 | 127, n)
    key = (mask * (n // 4 + 1))[:n]
    body = (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")
    return header + mask + body


def handshake_request(host: str, port: int, path: str) -> bytes:
    """An upgrade request that offers no extension, so permessage-deflate stays off."""
    key = base64.b64encode(os.urandom(16)).decode()
    return (f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            f"Sec-WebSocket-Version: 13\r\n\r\n").encode()


class HandshakeError(ConnectionError):
    pass


def check_handshake(head: bytes) -> None:
    status = head.split(b"\r\n", 1)[0]
    if not status.startswith(b"HTTP/1.1 101"):
        raise HandshakeError(status.decode("latin-1"))
    if b"\r\nsec-websocket-extensions:" in head.lower():
        raise HandshakeError("server negotiated an extension nobody offered")


def connect_ws(host: str, port: int, path: str, timeout: float = 10.0,
               ssl_context: Optional[ssl.SSLContext] = None) -> Tuple[socket.socket, bytes]:
    """A blocking WebSocket connection (over TLS with ``ssl_context``); returns the
    socket and bytes read past the head."""
    sock = socket.create_connection((host, port), timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if ssl_context is not None:
        try:
            sock = ssl_context.wrap_socket(sock, server_hostname=host)
        except OSError:
            sock.close()
            raise
    sock.sendall(handshake_request(host, port, path))
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        if not chunk:
            sock.close()
            raise HandshakeError("closed during the handshake")
        head += chunk
        if len(head) > 65536:
            sock.close()
            raise HandshakeError("response head too large")
    end = head.index(b"\r\n\r\n") + 4
    try:
        check_handshake(head[:end])
    except HandshakeError:
        sock.close()
        raise
    return sock, head[end:]


_U64 = struct.Struct("!Q").unpack_from


class FrameReader:
    """The suite's one parser of server frames (unmasked), incremental across reads.

    ``keep`` is how much of each data frame's payload (opcodes 0-7) to hand back:
    ``None`` all of it (a frame split across reads is carried until complete), ``0``
    nothing (data frames are only counted; their payloads are skipped, never copied:
    the echo generator's hot loop), ``N`` the first N bytes (the rest is skipped).
    Control frames (ping, pong, close: at most 125 bytes) are always handed back whole.
    Headers are read in place (byte indexing, ``struct`` for 64-bit lengths), with no
    per-byte loop; only an incomplete frame is carried over, in a bytearray.
    """

    __slots__ = ("buf", "keep", "need", "op", "prefix", "skip")

    def __init__(self, keep: Optional[int] = None) -> None:
        self.keep = keep
        self.buf = bytearray()  # the start of an incomplete frame, carried to the next read
        self.need = 0  # bytes ``buf`` must hold before parsing it again is worth it
        self.skip = 0  # payload bytes still to come of a data frame being skipped
        self.op = 0  # that frame's opcode
        self.prefix = b""  # and its first ``keep`` payload bytes

    def feed(self, data: bytes, out: List[Tuple[int, bytes]]) -> int:
        """Parse ``data``, the next bytes read: append ``(opcode, payload)`` of each frame
        it completes to ``out`` (data frames only if ``keep`` is not 0) and return how many
        of them are text or binary frames."""
        keep = self.keep
        messages = 0
        pos = 0
        size = len(data)
        skip = self.skip
        if skip:  # the rest of a data frame's payload (then ``buf`` is empty)
            take = skip if skip < size else size
            if keep and len(self.prefix) < keep:
                self.prefix += data[:min(take, keep - len(self.prefix))]
            if skip > size:
                self.skip = skip - size
                return 0
            self.skip = 0
            pos = skip
            op = self.op
            if op == 1 or op == 2:
                messages = 1
            if keep:
                out.append((op, self.prefix))
                self.prefix = b""
        buf = self.buf
        if buf:
            buf += data
            if len(buf) < self.need:
                return messages
            data = bytes(buf)
            buf.clear()
            size = len(data)
        while size - pos >= 2:
            b1 = data[pos + 1]
            if b1 < 126:  # unmasked, 0-125 bytes
                start = pos + 2
                end = start + b1
            elif b1 == 126:  # unmasked, a 16-bit length
                if size - pos < 4:
                    need = 4
                    break
                start = pos + 4
                end = start + ((data[pos + 2] << 8) | data[pos + 3])
            else:  # a 64-bit length, or masked (from a server a protocol error: read past it)
                n = b1 & 0x7F
                head = 2 if n < 126 else 4 if n == 126 else 10
                if b1 & 0x80:
                    head += 4
                if size - pos < head:
                    need = head
                    break
                if n == 126:
                    n = (data[pos + 2] << 8) | data[pos + 3]
                elif n == 127:
                    n = _U64(data, pos + 2)[0]
                start = pos + head
                end = start + n
            op = data[pos] & 0x0F
            if end > size:
                if op < 8 and keep is not None:  # skip the rest of its payload
                    self.skip = end - size
                    self.op = op
                    if keep:
                        self.prefix = data[start:start + keep]
                    return messages
                need = end - pos  # carry it until it is complete
                break
            if op == 1 or op == 2:
                messages += 1
                if keep != 0:
                    out.append((op, data[start:end] if keep is None else
                                data[start:min(end, start + keep)]))
            elif op >= 8:
                out.append((op, data[start:end]))
            elif keep != 0:
                out.append((op, data[start:end] if keep is None else
                            data[start:min(end, start + keep)]))
            pos = end
        else:
            need = 2
        if pos < size:
            buf += data[pos:]
            self.need = need
        return messages


def recv_frame(sock: socket.socket, reader: FrameReader, pending: List[Tuple[int, bytes]],
               deadline: float) -> Tuple[int, bytes]:
    """The next data or close frame on a blocking socket, answering pings."""
    while True:
        while pending:
            opcode, payload = pending.pop(0)
            if opcode == OP_PING:
                sock.sendall(masked_frame(OP_PONG, payload))
                continue
            if opcode == OP_PONG:
                continue
            return opcode, payload
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        data = sock.recv(262144)
        if not data:
            raise ConnectionError("server closed the connection")
        reader.feed(data, pending)


def ws_echo_latencies(host: str, port: int, path: str, count: int,
                      payload: bytes = b"Hello, World!", timeout: float = 30.0,
                      ssl_context: Optional[ssl.SSLContext] = None,
                      info: Optional[Dict[str, Any]] = None) -> List[float]:
    """``count`` sequential echo round trips on one new connection; seconds each.
    ``info["tls"]`` gets the TLS version and cipher, if ``info`` is given."""
    sock, leftover = connect_ws(host, port, path, ssl_context=ssl_context)
    if info is not None:
        info["tls"] = tls_session(sock)
    reader = FrameReader()
    pending: List[Tuple[int, bytes]] = []
    reader.feed(leftover, pending)
    frame = masked_frame(OP_TEXT, payload)
    deadline = time.monotonic() + timeout
    out = []
    try:
        for _ in range(count):
            start = time.perf_counter()
            sock.sendall(frame)
            opcode, echoed = recv_frame(sock, reader, pending, deadline)
            out.append(time.perf_counter() - start)
            if opcode != OP_TEXT or echoed != payload:
                raise ConnectionError(f"bad echo: opcode {opcode}, {echoed[:40]!r}")
    finally:
        try:
            sock.sendall(masked_frame(OP_CLOSE, struct.pack("!H", 1000)))
        except OSError:
            pass
        sock.close()
    return out


def _http_connection(host: str, port: int, timeout: float,
                     ssl_context: Optional[ssl.SSLContext]) -> Any:
    import http.client

    if ssl_context is not None:
        return http.client.HTTPSConnection(host, port, timeout=timeout, context=ssl_context)
    return http.client.HTTPConnection(host, port, timeout=timeout)


def http_latencies(host: str, port: int, count: int, path: str = "/",
                   expect: Optional[bytes] = b"Hello, World!",
                   timeout: float = 30.0,
                   ssl_context: Optional[ssl.SSLContext] = None) -> List[float]:
    """``count`` sequential keep-alive GETs on one connection; seconds each."""
    conn = _http_connection(host, port, timeout, ssl_context)
    out = []
    deadline = time.monotonic() + timeout
    try:
        for _ in range(count):
            if time.monotonic() > deadline:
                raise TimeoutError("HTTP latency probe ran out of time")
            start = time.perf_counter()
            conn.request("GET", path)
            resp = conn.getresponse()
            body = resp.read()
            out.append(time.perf_counter() - start)
            if resp.status != 200 or (expect is not None and body != expect):
                raise ConnectionError(f"bad response: {resp.status} {body[:40]!r}")
            if resp.will_close:
                conn.close()
    finally:
        conn.close()
    return out


def read_to_eof(sock: socket.socket) -> bytes:
    """Everything the peer sends until it closes (a ``Connection: close`` answer)."""
    parts = []
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return b"".join(parts)
        parts.append(chunk)


def http_get(host: str, port: int, path: str, timeout: float = 30.0,
             ssl_context: Optional[ssl.SSLContext] = None,
             info: Optional[Dict[str, Any]] = None) -> Tuple[int, bytes, Dict[str, str]]:
    """One GET; ``info["tls"]`` gets the TLS version and cipher, if ``info`` is given."""
    conn = _http_connection(host, port, timeout, ssl_context)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        if info is not None:
            info["tls"] = tls_session(conn.sock)
        body = resp.read()
        return resp.status, body, {k.lower(): v for k, v in resp.getheaders()}
    finally:
        conn.close()


_CONNECTING, _TLS_HANDSHAKE, _UPGRADING = 0, 1, 2


def open_ws_many(host: str, port: int, path: str, count: int, *, concurrency: int = 64,
                 timeout: float = 120.0, source_ip: Optional[str] = None,
                 nodelay: bool = True, max_failures: Optional[int] = None,
                 ssl_context: Optional[ssl.SSLContext] = None,
                 ) -> Tuple[List[Tuple[socket.socket, bytes]], Dict[str, int]]:
    """Open ``count`` WebSocket connections with at most ``concurrency`` handshakes in flight.

    Returns the non-blocking sockets (each with the bytes read past its 101 head)
    and a tally of failures by kind.  Failed attempts are retried until
    ``max_failures`` (default: ``count``) or ``timeout`` runs out.  With
    ``ssl_context`` every connection does its TLS handshake first (non-blocking,
    on the same epoll) and the sockets returned are ``ssl.SSLSocket``s.
    """
    request = handshake_request(host, port, path)
    ep = select.epoll()
    # fd -> [sock, stage, head bytes]; stage: _CONNECTING, _TLS_HANDSHAKE, _UPGRADING
    pending: Dict[int, List[object]] = {}
    done: List[Tuple[socket.socket, bytes]] = []
    failures: Dict[str, int] = {}
    max_failures = count if max_failures is None else max_failures
    deadline = time.monotonic() + timeout

    def fail(fd: int, kind: str) -> None:
        sock = pending.pop(fd)[0]
        try:
            ep.unregister(fd)
        except (OSError, ValueError):
            pass
        sock.close()  # type: ignore[attr-defined]
        failures[kind] = failures.get(kind, 0) + 1

    try:
        while len(done) < count and time.monotonic() < deadline:
            if sum(failures.values()) > max_failures:
                break
            while len(pending) < concurrency and len(done) + len(pending) < count:
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.setblocking(False)
                if nodelay:
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                try:
                    if source_ip:
                        sock.setsockopt(socket.SOL_IP, IP_BIND_ADDRESS_NO_PORT, 1)
                        sock.bind((source_ip, 0))
                    err = sock.connect_ex((host, port))
                except OSError as exc:
                    sock.close()
                    kind = errno.errorcode.get(exc.errno or 0, str(exc))
                    failures[kind] = failures.get(kind, 0) + 1
                    if exc.errno in (errno.EMFILE, errno.ENFILE):
                        raise
                    time.sleep(0.01)
                    break
                if err not in (0, errno.EINPROGRESS):
                    sock.close()
                    kind = errno.errorcode.get(err, str(err))
                    failures[kind] = failures.get(kind, 0) + 1
                    time.sleep(0.01)
                    break
                pending[sock.fileno()] = [sock, _CONNECTING, b""]
                ep.register(sock.fileno(), select.EPOLLOUT)
            for fd, _events in ep.poll(0.2):
                entry = pending.get(fd)
                if entry is None:
                    continue
                sock = entry[0]  # type: ignore[assignment]
                if entry[1] == _CONNECTING:
                    err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if err:
                        fail(fd, errno.errorcode.get(err, str(err)))
                        continue
                    if ssl_context is not None:
                        # same fd, still non-blocking; the handshake starts below
                        sock = ssl_context.wrap_socket(sock, server_hostname=host,
                                                       do_handshake_on_connect=False)
                        entry[0] = sock
                        entry[1] = _TLS_HANDSHAKE
                    else:
                        entry[1] = _UPGRADING
                        try:
                            sock.send(request)  # small: it goes out whole on a fresh socket
                        except OSError as exc:
                            fail(fd, errno.errorcode.get(exc.errno or 0, "send"))
                            continue
                        ep.modify(fd, select.EPOLLIN)
                        continue
                if entry[1] == _TLS_HANDSHAKE:
                    try:
                        sock.do_handshake()  # type: ignore[attr-defined]
                    except ssl.SSLWantReadError:
                        ep.modify(fd, select.EPOLLIN)
                        continue
                    except ssl.SSLWantWriteError:
                        ep.modify(fd, select.EPOLLOUT)
                        continue
                    except ssl.SSLError as exc:
                        fail(fd, f"TLS: {exc.reason or exc}"[:60])
                        continue
                    except OSError as exc:
                        fail(fd, errno.errorcode.get(exc.errno or 0, "TLS handshake"))
                        continue
                    entry[1] = _UPGRADING
                    try:
                        sock.send(request)  # one small record on a fresh connection
                    except OSError as exc:
                        fail(fd, errno.errorcode.get(exc.errno or 0, "send"))
                        continue
                    ep.modify(fd, select.EPOLLIN)
                    continue
                try:
                    data = (recv_tls(sock, 65536) if ssl_context is not None
                            else sock.recv(65536))
                except WOULD_BLOCK:
                    continue
                except OSError as exc:
                    fail(fd, errno.errorcode.get(exc.errno or 0, "recv"))
                    continue
                if not data:
                    fail(fd, "closed in handshake")
                    continue
                head = entry[2] + data  # type: ignore[operator]
                entry[2] = head
                if b"\r\n\r\n" not in head:
                    continue
                end = head.index(b"\r\n\r\n") + 4
                try:
                    check_handshake(head[:end])
                except HandshakeError as exc:
                    fail(fd, str(exc)[:60])
                    continue
                ep.unregister(fd)
                del pending[fd]
                done.append((sock, head[end:]))
    finally:
        for entry in pending.values():
            entry[0].close()  # type: ignore[attr-defined]
        if pending:
            failures["unfinished"] = failures.get("unfinished", 0) + len(pending)
        ep.close()
    return done, failures


def stop_children(pipes: List[Any], procs: List[Any], message: Any) -> None:
    """Tell child processes to stop over their pipes, then reap them (kill if stuck)."""
    for pipe in pipes:
        try:
            pipe.send(message)
        except OSError:
            pass
    for proc in procs:
        proc.join(5)
        if proc.is_alive():
            proc.kill()
            proc.join(1)
