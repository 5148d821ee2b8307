"""The command line: ``python -m wssync [options] [APP]``.

Parses options, loads the user's app (or the demo), and runs a ``Server`` in
the foreground with SIGINT/SIGTERM mapped to a graceful stop.  Errors a user
can fix in the options or files get one readable line and exit status 2, never
a traceback; an app that raises while it loads is a boot failure: its
traceback, trimmed to the app's frames, and exit status 3.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import re
import signal
import ssl
import sys
from typing import Any, Callable, Dict, List, Mapping, NoReturn, Optional, Tuple, Union

from ._boot import CliError, check_spec, load_app, report_boot_failure
from ._startup import LOG_FORMAT
from ._version import __version__
from .app import App
from .config import SETTINGS
from .errors import BindError
from .io.tls import server_context
from .scale import reloader
from .scale.supervisor import BOOT_FAILED, worker_count
from .server import Server

ENV_PREFIX = "WSSYNC_"
_SIZE = re.compile(r"([0-9]+)\s*(|k|kb|kib|m|mb|mib|g|gb|gib)", re.IGNORECASE)
_UNITS = {"": 1, "k": 1024, "m": 1024 ** 2, "g": 1024 ** 3}
# Other servers' names for a setting, accepted as the same flag.
_ALIASES = {"shutdown_grace": ["--graceful-timeout"]}
__all__ = ["CliError", "build_parser", "environment_defaults", "load_app", "main",
           "settings_from"]


def parse_size(text: str) -> int:
    """``65536``, ``64KiB``, ``4M``, ``1GiB``: bytes (units are powers of 1024)."""
    match = _SIZE.fullmatch(text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(f"not a size in bytes: {text!r} (e.g. 65536, 64KiB, "
                                         f"4MiB)")
    return int(match.group(1)) * _UNITS[match.group(2)[:1].lower()]


def parse_port(text: str) -> int:
    digits = text.strip()
    if not (digits.isascii() and digits.isdigit()) or int(digits) > 65535:
        raise argparse.ArgumentTypeError(f"not a port (0-65535): {text!r}")
    return int(digits)


def parse_mode(text: str) -> int:
    """``660``, ``0660`` or ``0o660``: a file mode in octal."""
    digits = text.strip().lower()
    digits = digits[2:] if digits.startswith("0o") else digits
    if not 1 <= len(digits) <= 4 or any(c not in "01234567" for c in digits) \
            or int(digits, 8) > 0o777:
        raise argparse.ArgumentTypeError(f"not a file mode in octal (e.g. 660): {text!r}")
    return int(digits, 8)


def parse_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}")
    return value


def parse_flag(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"not true or false: {text!r}")


_PARSERS: Dict[str, Callable[[str], Any]] = {
    "bytes": parse_size, "seconds": parse_seconds, "count": int, "flag": parse_flag,
    "text": str,
}
_METAVARS = {"bytes": "BYTES", "seconds": "SECONDS", "count": "N", "text": "LIST",
             "metrics": "HOST:PORT"}  # (by kind; a name here wins)


def _describe(value: Any, kind: str) -> str:
    if kind == "bytes" and value >= 1024 and value % 1024 == 0:
        for unit, size in (("GiB", 1024 ** 3), ("MiB", 1024 ** 2), ("KiB", 1024)):
            if value % size == 0:
                return f"{value // size}{unit}"
    return str(value).lower() if kind == "flag" else str(value)


class _Parser(argparse.ArgumentParser):
    """Argument errors in three lines, not the whole usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"usage: {self.prog} [options] [APP]\nwssync: error: {message}\n"
                     f"see '{self.prog} --help'\n")


def build_parser() -> argparse.ArgumentParser:
    # The same parser serves ``python -m wssync`` and the ``wssync`` console script.
    invoked = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    parser = _Parser(
        prog="wssync" if invoked == "wssync" else "python -m wssync",
        usage="%(prog)s [options] [APP]",
        description="Serve HTTP/1.1 and WebSocket on one port.",
        epilog=f"Every option can also come from the environment: {ENV_PREFIX}PORT=8080, "
               f"{ENV_PREFIX}MAX_WRITE_BUFFER=1MiB, {ENV_PREFIX}COMPRESSION=false ... "
               f"(the option's name in capitals, dashes as underscores); an option on the "
               f"command line wins.  Sizes take KiB, MiB or GiB.",
    )
    parser.add_argument("app_spec", nargs="?", metavar="APP",
                        help="the wssync.App or WSGI application to serve, MODULE:ATTRIBUTE "
                             "(as --app; default: the built-in demo)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on: 0.0.0.0 to be reachable from the network, "
                             "'::' for IPv6 and IPv4 (default: 127.0.0.1, this machine only)")
    parser.add_argument("--port", type=parse_port, default=80,
                        help="port to listen on, 0-65535 (default: 80)")
    parser.add_argument("--uds", metavar="PATH",
                        help="listen on this Unix domain socket instead of --host and --port "
                             "(a stale socket file there is replaced; removed at exit)")
    parser.add_argument("--uds-mode", type=parse_mode, default=0o660, metavar="MODE",
                        help="file mode of the --uds socket, in octal (default: 660)")
    parser.add_argument("--threads", type=int, default=0,
                        help="worker threads for handlers; 0 runs them on the reactor "
                             "thread, so they must not block (default: 0)")
    parser.add_argument("--workers", type=int, default=1, metavar="N",
                        help="processes serving the port, each a full server with its own "
                             "threads; 0: one per CPU (default: 1). Each worker loads the app; "
                             "SIGHUP restarts them one at a time (new code, new certificates) "
                             "without closing the port")
    parser.add_argument("--app", metavar="MODULE:ATTRIBUTE",
                        help="the wssync.App or WSGI application to serve "
                             "(default: the built-in demo)")
    parser.add_argument("--log-level", default="info", type=str.lower,
                        choices=["debug", "info", "warning", "error", "critical"],
                        help="log level, in any case (default: info)")
    parser.add_argument("--no-access-log", action="store_true",
                        help="do not log each HTTP request")
    parser.add_argument("--broker", metavar="URL",
                        help="share broadcasts with every server using this broker: "
                             "redis://host:port/db (needs the wssync[redis] extra)")
    parser.add_argument("--reload", action="store_true",
                        help="restart when the app's Python files change (development only)")
    parser.add_argument("--version", action="version", version=f"wssync {__version__}")
    tls = parser.add_argument_group("TLS (HTTPS and WSS on the same port)")
    tls.add_argument("--certfile", metavar="FILE",
                     help="the server's certificate chain (PEM); turns TLS on. SIGHUP reloads "
                          "it (and the key) for new connections")
    tls.add_argument("--keyfile", metavar="FILE",
                     help="the private key (PEM), if not in --certfile")
    tls.add_argument("--ssl-password-env", metavar="VAR",
                     help="name of the environment variable holding the key's password")
    tls.add_argument("--ca-certs", metavar="FILE",
                     help="CA certificates (PEM) that client certificates must chain to")
    tls.add_argument("--client-cert", choices=["none", "optional", "required"], default="none",
                     help="ask clients for a certificate (default: none)")
    limits = parser.add_argument_group("limits and timeouts (every Server setting)")
    for name, setting in SETTINGS.items():
        flags = ["--" + name.replace("_", "-"), *_ALIASES.get(name, [])]
        text = f"{setting.help} (default: {_describe(setting.default, setting.kind)})"
        if setting.kind == "flag":
            limits.add_argument(*flags, dest=name, action=argparse.BooleanOptionalAction,
                                default=None, help=text)
        else:
            limits.add_argument(*flags, dest=name, type=_PARSERS[setting.kind], default=None,
                                metavar=_METAVARS.get(name, _METAVARS[setting.kind]), help=text)
    return parser


def environment_defaults(parser: argparse.ArgumentParser,
                         environ: Mapping[str, str]) -> Dict[str, Any]:
    """Option values from ``WSSYNC_*`` variables, as defaults the command line overrides."""
    values: Dict[str, Any] = {}
    for action in parser._actions:
        name = action.dest
        raw = environ.get(ENV_PREFIX + name.upper())
        if raw is None or name in ("help", "version") or not action.option_strings:
            continue
        if name in SETTINGS:
            convert: Callable[[str], Any] = _PARSERS[SETTINGS[name].kind]
        elif isinstance(action, argparse._StoreTrueAction):
            convert = parse_flag
        else:
            convert = action.type if callable(action.type) else str
        try:
            value = convert(raw)
        except (argparse.ArgumentTypeError, ValueError) as exc:
            raise CliError(f"{ENV_PREFIX}{name.upper()}: {exc}") from None
        if action.choices is not None and value not in action.choices:
            raise CliError(f"{ENV_PREFIX}{name.upper()}: {raw!r} is not one of "
                           f"{', '.join(map(str, action.choices))}")
        values[name] = value
    return values


def settings_from(args: argparse.Namespace) -> Dict[str, Any]:
    """The Server settings the command line (or environment) set."""
    return {name: getattr(args, name) for name in SETTINGS if getattr(args, name) is not None}


def _password(args: argparse.Namespace) -> Union[str, Callable[[], str]]:
    """The key's password.  Without --ssl-password-env an encrypted key is an
    error: OpenSSL would prompt on the terminal, and a SIGHUP reload would then
    block the server waiting for an answer."""
    if not args.ssl_password_env:
        def not_given() -> str:  # called by OpenSSL only for an encrypted key
            raise CliError(f"the key in {args.keyfile or args.certfile} is encrypted: give "
                           f"its password with --ssl-password-env VAR")

        return not_given
    password = os.environ.get(args.ssl_password_env)
    if password is None:
        raise CliError(f"--ssl-password-env: ${args.ssl_password_env} is not set")
    return password


def tls_context(args: argparse.Namespace) -> Optional[ssl.SSLContext]:
    """The server's TLS context from the command line, or None without --certfile."""
    if not args.certfile:
        if args.keyfile or args.ca_certs or args.client_cert != "none":
            raise CliError("--keyfile, --ca-certs and --client-cert need --certfile")
        return None
    files = [name for name in (args.certfile, args.keyfile, args.ca_certs) if name]
    try:
        return server_context(args.certfile, args.keyfile, _password(args), args.ca_certs,
                              args.client_cert)
    except OSError as exc:  # (not ssl.SSLError, which is one too)
        if isinstance(exc, ssl.SSLError):
            raise CliError(_unusable(args, exc)) from None
        # OpenSSL does not say which file: the first one that cannot be opened.
        name, reason = exc.filename, exc.strerror
        if name is None:
            name, reason = next(((f, r) for f, r in map(_unreadable, files) if r),
                                (args.certfile, reason))
        raise CliError(f"cannot read {name}: {reason}") from None


def _unreadable(name: str) -> Tuple[str, Optional[str]]:
    """``name`` and why it cannot be opened for reading (None: it can)."""
    try:
        with open(name, "rb"):
            return name, None
    except FileNotFoundError:
        return name, "no such file"
    except OSError as exc:
        return name, exc.strerror or str(exc)


def _unusable(args: argparse.Namespace, exc: ssl.SSLError) -> str:
    """Why OpenSSL refused files it could read, as far as the files tell."""
    if not args.keyfile:
        try:
            with open(args.certfile, "rb") as cert:
                has_key = b"PRIVATE KEY-----" in cert.read(1 << 20)
        except OSError:
            has_key = True
        if not has_key:
            return f"{args.certfile} holds no private key: give --keyfile"
    return (f"cannot use the certificate {args.certfile}: {exc.reason or exc.strerror or exc} "
            f"(a wrong password, a key that does not match, or not PEM?)")


def reload_on_sighup(server: Server, args: argparse.Namespace) -> None:
    """SIGHUP: load the renewed certificate files for new connections."""

    def reload(_signum: int, _frame: Any) -> None:
        try:
            server.reload_certificates(args.certfile, args.keyfile, _password(args))
        except (CliError, OSError, ssl.SSLError) as exc:
            logging.getLogger("wssync.server").error(
                "SIGHUP: certificate not reloaded, the old one stays: %s", exc)

    signal.signal(signal.SIGHUP, reload)


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    try:
        defaults = environment_defaults(parser, os.environ)
    except CliError as exc:
        print(f"wssync: error: {exc}", file=sys.stderr)
        return 2
    env_app = defaults.pop("app", None)  # APP on the command line wins over it
    parser.set_defaults(**defaults)
    args = parser.parse_args(argv)
    if args.app_spec and args.app:
        parser.error(f"the app is given twice: {args.app_spec} (APP) and {args.app} (--app); "
                     f"give one")
    args.app = args.app_spec or args.app or env_app
    if args.reload:
        if args.workers != 1:  # 0 too: one per CPU is meant for more than one
            print("wssync: error: --reload restarts one server process; it cannot be "
                  "combined with --workers", file=sys.stderr)
            return 2
        if not reloader.in_child():
            return reloader.run_parent(sys.argv[1:] if argv is None else argv)
        reloader.ignore_terminal_interrupt()
    logging.basicConfig(level=args.log_level.upper(), format=LOG_FORMAT)
    if args.no_access_log:
        logging.getLogger("wssync.access").setLevel(logging.WARNING)
    try:
        workers = worker_count(args.workers)
        if args.app:
            check_spec(args.app)
        # With workers, each one loads the app after the fork (a SIGHUP then
        # serves new code, and nothing the app opens is shared between processes).
        app = App() if workers > 1 else _app(args)
    except (CliError, ValueError) as exc:  # (ValueError: worker_count's)
        print(f"wssync: error: {exc}", file=sys.stderr)
        return 2
    except (Exception, SystemExit) as exc:  # the app raised (or exited) while loading
        report_boot_failure(exc, args.app or "the app")
        return BOOT_FAILED
    try:
        context = tls_context(args)  # with workers: checked here, loaded by each
        server = Server(app, args.host, args.port, threads=args.threads, ssl_context=context,
                        uds=args.uds, uds_mode=args.uds_mode, broker=args.broker,
                        workers=workers, **settings_from(args))
    except (CliError, ImportError, TypeError, ValueError) as exc:
        print(f"wssync: error: {exc}", file=sys.stderr)
        return 2
    server._flags = True  # messages name --port, not port=
    try:
        server.bind()
    except BindError as exc:
        print(f"wssync: error: {exc}", file=sys.stderr)
        return 2
    if workers > 1:
        def prepare(worker: Server) -> None:
            # What the app raises is the worker's boot failure (a traceback);
            # mistakes in the options stay one line.
            try:
                worker.app = _app(args)
                worker.ssl_context = tls_context(args)
            except CliError as exc:
                print(f"wssync: error: {exc}", file=sys.stderr)
                raise SystemExit(BOOT_FAILED) from None

        return server.supervise(prepare)  # SIGTERM, SIGINT: every worker drains
    if context is not None:
        reload_on_sighup(server, args)
    reloading = reloader.watch_while_serving(server.stop) if args.reload else None
    server.serve_forever()  # SIGINT and SIGTERM stop it gracefully
    return reloader.RESTART if reloading is not None and reloading() else 0


def _app(args: argparse.Namespace) -> App:
    if args.app:
        return reloader.load_or_wait(load_app, args.app) if args.reload \
            else load_app(args.app)
    from .demo import create_app

    return create_app()
