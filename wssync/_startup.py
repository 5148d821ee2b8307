"""What a ``Server`` checks and sets up around serving.

Its constructor's arguments (a ``ValueError`` names the bad one at once, not
when serving starts), the broker a ``--broker`` URL names, logging for an
application that configured none, the refusal to serve while the command line
imports an ``--app`` module, taking over the stop signals, loading renewed
certificates, and the words around listening: why a bind failed and what to do
(the same sentences for the command line and an embedded ``Server``), the
start-up line's URL, and which worker a log line comes from.  Nothing here
opens a socket or runs a reactor.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import ipaddress
import logging
import os
import shutil
import signal
import socket
import ssl
import tempfile
import threading
from typing import (
    Any,
    Callable,
    Deque,
    Dict,
    Iterator,
    List,
    NamedTuple,
    Optional,
    Tuple,
    Union,
)

from .config import Config
from .edge.forwarded import trusted_peers
from .errors import BindError, ServingWhileImported
from .io.reactor import Reactor
from .scale.broker import Broker
from .scale.supervisor import worker_count

log = logging.getLogger("wssync.server")

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_serving_refused: Optional[str] = None  # why serving is refused right now (see below)


def check_arguments(port: int, threads: int, uds_mode: int, workers: int) -> int:
    """Refuse impossible ``Server`` arguments; returns the number of workers."""
    if threads < 0:
        raise ValueError("threads must be 0 (reactor mode) or more")
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"port must be a number from 0 to 65535, not {port!r}")
    if isinstance(uds_mode, bool) or not isinstance(uds_mode, int) \
            or not 0 <= uds_mode <= 0o777:
        raise ValueError(f"uds_mode must be a file mode from 0 to 0o777, not {uds_mode!r}")
    if isinstance(workers, bool) or not isinstance(workers, int):
        raise ValueError(f"workers must be a number, not {workers!r}")
    return worker_count(workers)


def check_settings(config: Config, ssl_context: Optional[ssl.SSLContext]) -> None:
    """Refuse settings that cannot work together."""
    trusted_peers(config.forwarded_allow_ips)  # a ValueError names a bad entry now
    if config.proxy_protocol and ssl_context is not None:
        raise ValueError("proxy_protocol with TLS at wssync is not supported: terminate "
                         "TLS at the proxy, or let the proxy pass TLS through without a "
                         "PROXY header")


def broker_from(broker: Union[str, Broker, None]) -> Optional[Broker]:
    """The broker a ``--broker`` URL names (``redis://host:port/db``, also
    ``rediss://`` and ``unix://``, needing the ``wssync[redis]`` extra), or the
    broker object given."""
    if not isinstance(broker, str):
        return broker
    scheme = broker.partition("://")[0].lower()
    if scheme in ("redis", "rediss", "unix"):
        from .scale.redis_broker import RedisBroker

        return RedisBroker(broker)
    raise ValueError(f"unknown broker {broker!r}: use redis://host:port/db")


@contextlib.contextmanager
def refuse_to_serve(module: str) -> Iterator[None]:
    """While importing ``module`` for the command line, starting a server is an error.

    A module whose last line is ``Server(app, port=8080).serve_forever()`` would
    otherwise start its own server, with its own port and threads, while
    ``python -m wssync --app module:app --port 8081`` waits for the import.
    """
    global _serving_refused
    _serving_refused = module
    try:
        yield
    finally:
        _serving_refused = None


def check_serving_allowed() -> None:
    if _serving_refused is not None:
        raise ServingWhileImported(
            f"module {_serving_refused!r} starts a server while being imported; --app needs "
            f"a module that only defines the app: put the Server(...) call under "
            f"'if __name__ == \"__main__\":'")


def bind_error(exc: OSError, host: str, port: int, uds: Optional[str],
               flags: bool) -> BindError:
    """Why the server could not listen, and what to do, as one line: ``flags``
    names the command line's options (``--port 8080``), else ``Server``'s
    arguments (``port=8080``)."""
    def option(name: str, value: str = "") -> str:
        if flags:
            return f"--{name} {value}".rstrip()
        if not value:
            return {"uds": "uds path"}.get(name, name)
        return f'{name}="{value}"' if name == "host" else f"{name}={value}"

    if uds is not None:
        if isinstance(exc, FileExistsError):
            text = f"{uds} exists and is not a socket; remove it or choose another {option('uds')}"
        elif exc.errno == errno.EADDRINUSE:
            text = f"another server listens on {uds}; stop it or choose another {option('uds')}"
        elif exc.errno == errno.ENOENT:
            text = (f"cannot listen on {uds}: the directory {os.path.dirname(uds) or '.'} "
                    f"does not exist")
        else:
            text = f"cannot listen on {uds}: {exc.strerror or exc}"
        return BindError.of(exc, text)
    where = display_address(host, port)
    if isinstance(exc, PermissionError):
        text = (f"no permission to listen on {where}: ports below 1024 need privileges; use "
                f"a port above 1023 ({option('port', '8080')}) or run with the privilege to "
                f"bind low ports (root or CAP_NET_BIND_SERVICE)")
    elif exc.errno == errno.EADDRINUSE:
        text = f"{where} is already in use; stop the other server or choose another " \
               f"{option('port')}"
    elif exc.errno == errno.EADDRNOTAVAIL:
        text = (f"cannot listen on {where}: {host} is not an address of this machine; "
                f"{option('host', '127.0.0.1')} for this machine only, "
                f"{option('host', '0.0.0.0')} for every interface")
    elif isinstance(exc, socket.gaierror):
        text = f"cannot listen on {where}: {host!r} is not an address or a known host name"
    else:
        text = f"cannot listen on {where}: {exc.strerror or exc}"
    return BindError.of(exc, text)


def display_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def serving_url(host: str, port: int, tls: bool) -> Tuple[str, str]:
    """A URL a browser on this machine can open, and what to add about who
    else can reach it (empty for a specific address)."""
    scheme = "https" if tls else "http"
    note = ""
    shown = host
    if host in ("0.0.0.0", "::", ""):
        shown = "127.0.0.1" if host == "0.0.0.0" else "::1"
        note = f"listening on all interfaces ({display_address(host or '0.0.0.0', port)})"
    elif _is_loopback(host):
        note = "only this machine can connect"
    if ":" in shown:
        shown = f"[{shown}]"
    return f"{scheme}://{shown}:{port}/", note


def serving_line(start: str, host: str, port: int, uds: Optional[str], tls: bool,
                 flags: bool, interrupt: bool, how: str, reach: bool = True) -> str:
    """The start-up line: ``start`` (serving on, listening on), a URL to click,
    how to stop (``interrupt``: Ctrl-C stops it), ``how`` it serves, and (with
    ``reach``) who can connect."""
    if uds is not None:
        where, note = f"unix:{uds}", ""
    else:
        where, note = serving_url(host, port, tls)
        if note.startswith("only"):
            hint = "--host 0.0.0.0" if flags else 'host="0.0.0.0"'
            note += f" ({hint} to be reachable from the network)"
    stop = " (Ctrl-C to quit)" if interrupt else ""
    return f"{start} {where}{stop}: {how}" + (f"; {note}" if note and reach else "")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def tag_worker_logs(index: int) -> None:
    """Every log record this process makes from now on says which worker made it
    (``[worker 1] ...``), whatever the handler's format."""
    make = logging.getLogRecordFactory()
    tag = f"[worker {index}] "

    def tagged(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make(*args, **kwargs)
        record.msg = tag + (record.msg if isinstance(record.msg, str) else str(record.msg))
        return record

    logging.setLogRecordFactory(tagged)


def default_logging() -> None:
    """Log like the command line when the application configured no logging."""
    package = logging.getLogger("wssync")
    if logging.getLogger().handlers or package.handlers:
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    package.addHandler(handler)
    if package.level == logging.NOTSET:
        package.setLevel(logging.INFO)


def take_over_signals(signums: Tuple[int, ...],
                      handler: Callable[[int, Any], None]) -> Callable[[], None]:
    """On the main thread, let ``handler`` have each of ``signums`` the application
    left alone; returns the undo."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    installed: Dict[int, Any] = {}
    for signum in signums:
        previous = signal.getsignal(signum)
        # The application's own handler stays; defaults, and the SIG_IGN a
        # shell gives background jobs, are ours to replace.
        if previous in (signal.SIG_DFL, signal.SIG_IGN, signal.default_int_handler, None):
            installed[signum] = signal.SIG_DFL if previous is None else previous
            signal.signal(signum, handler)

    def restore() -> None:
        for signum, previous in installed.items():
            signal.signal(signum, previous)

    return restore


class StagedCertificates(NamedTuple):
    """Renewed certificate files, copied and checked: what the context will load."""

    directory: str  # private (0700), removed once loaded
    certfile: str
    keyfile: Optional[str]
    password: Union[str, Callable[[], str], None]  # a callable asks its source once
    source: str  # the certificate file named by the caller, for the log


def stage_certificates(certfile: str, keyfile: Optional[str],
                       password: Union[str, Callable[[], str], None]) -> StagedCertificates:
    """Copy the files into a private directory, ask for the password once, and
    check them there (``ssl.SSLError`` or ``OSError`` if they do not load).

    The context loads the very bytes that were checked: files replaced between
    the check and the load (a renewal writing them in place) cannot reach the
    context half-loaded.  OpenSSL installs a chain's certificate before its key
    is checked, so a failed load would leave the live context with a new
    certificate and the old key, and every new handshake would fail.
    """
    directory = tempfile.mkdtemp(prefix="wssync-cert-")
    try:
        staged_cert = _copy_private(certfile, directory, "cert.pem")
        staged_key = _copy_private(keyfile, directory, "key.pem") if keyfile else None
        secret = _asked_once(password) if callable(password) else password
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(staged_cert, staged_key, secret)
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise
    return StagedCertificates(directory, staged_cert, staged_key, secret, certfile)


def _asked_once(password: Callable[[], str]) -> Callable[[], str]:
    """``password``, asked at most once (and only if a key is encrypted): the
    load then uses the answer the check had."""
    answers: List[str] = []

    def once() -> str:
        if not answers:
            answers.append(password())
        return answers[0]

    return once


def _copy_private(path: str, directory: str, name: str) -> str:
    with open(path, "rb") as source:
        data = source.read()
    copy = os.path.join(directory, name)
    fd = os.open(copy, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as target:
        target.write(data)
    return copy


def load_certificates(context: ssl.SSLContext, staged: StagedCertificates) -> None:
    """Staged certificate files into ``context`` for its new connections (reactor
    thread, or any thread while no reactor serves it)."""
    try:
        context.load_cert_chain(staged.certfile, staged.keyfile, staged.password)
    except (OSError, ssl.SSLError) as exc:
        log.error("certificate not reloaded: %s", exc)
        return
    finally:
        shutil.rmtree(staged.directory, ignore_errors=True)
    log.info("certificate reloaded from %s; new connections use it", staged.source)


class CertificateReloads:
    """Staged certificates on their way into a server's context.

    While a reactor serves, a context is changed on its thread only (OpenSSL
    reads it for every handshake); otherwise at once.  A load handed to a
    reactor that stops before running it is done when serving ends, so no
    reload is lost and no private copy is left behind; a reload that comes
    while another waits replaces it.  Lock-free (a deque):
    a reload may come from a signal handler on the reactor's own thread.
    """

    def __init__(self) -> None:
        self._reactor: Optional[Reactor] = None
        self._pending: Deque[Tuple[ssl.SSLContext, StagedCertificates]] = collections.deque()

    def serving(self, reactor: Optional[Reactor]) -> None:
        """Loads go to ``reactor`` from now on; None (serving ended): at once,
        with what is still pending."""
        self._reactor = reactor
        if reactor is None:
            self._load_pending()

    def load(self, context: ssl.SSLContext, staged: StagedCertificates) -> None:
        reactor = self._reactor
        if reactor is None:
            load_certificates(context, staged)
            return
        # Only the newest reload matters: what waits is replaced, not queued
        # behind (so at most one private copy waits, however often it comes).
        while self._pending:
            try:
                _, superseded = self._pending.popleft()
            except IndexError:
                break  # the reactor took it meanwhile
            shutil.rmtree(superseded.directory, ignore_errors=True)
        self._pending.append((context, staged))
        reactor.call_soon_threadsafe(self._load_pending)
        if self._reactor is None:
            self._load_pending()  # serving ended meanwhile: its last drain may have missed it

    def _load_pending(self) -> None:
        while True:
            try:
                context, staged = self._pending.popleft()
            except IndexError:
                return
            load_certificates(context, staged)
