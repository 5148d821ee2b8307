"""The command line: ``python -m wssync [options]``.

Parses options, loads the user's app (or the demo), and runs a ``Server`` in
the foreground with SIGINT/SIGTERM mapped to a graceful stop.  Errors a user
can fix get one readable line and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import logging
import signal
import sys
from typing import Any, List, Optional

from . import __version__
from .app import App
from .config import Config
from .server import Server

_DEFAULTS = Config.defaults()


class CliError(Exception):
    """A mistake in how the server was started; printed as one line."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m wssync",
        description="Serve HTTP/1.1 and WebSocket on one port.",
    )
    parser.add_argument("--host", default="0.0.0.0",
                        help="address to listen on; '::' for IPv6 and IPv4 (default: 0.0.0.0)")
    parser.add_argument("--port", type=int, default=80, help="port to listen on (default: 80)")
    parser.add_argument("--threads", type=int, default=0,
                        help="worker threads for handlers; 0 runs them on the reactor "
                             "thread, so they must not block (default: 0)")
    parser.add_argument("--app", metavar="MODULE:ATTRIBUTE",
                        help="the wssync.App or WSGI application to serve "
                             "(default: the built-in demo)")
    parser.add_argument("--max-message-size", type=int, default=_DEFAULTS["max_message_size"],
                        help="largest WebSocket message in bytes; larger closes with 1009 "
                             "(default: %(default)s)")
    parser.add_argument("--max-body-size", type=int, default=_DEFAULTS["max_body_size"],
                        help="largest HTTP request body in bytes; larger gets 413 "
                             "(default: %(default)s)")
    parser.add_argument("--ping-interval", type=float, default=_DEFAULTS["ping_interval"],
                        help="seconds between WebSocket keepalive pings, 0 to disable "
                             "(default: %(default)s)")
    parser.add_argument("--log-level", default="info",
                        choices=["debug", "info", "warning", "error", "critical"],
                        help="log level (default: info)")
    parser.add_argument("--no-access-log", action="store_true",
                        help="do not log each HTTP request")
    parser.add_argument("--version", action="version", version=f"wssync {__version__}")
    return parser


def load_app(spec: str) -> App:
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise CliError(f"--app takes MODULE:ATTRIBUTE, not {spec!r}")
    if "" not in sys.path:
        sys.path.insert(0, "")  # like `python -m`, find modules in the current directory
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise CliError(f"cannot import {module_name!r}: {exc}") from None
    try:
        app: Any = getattr(module, attribute)
    except AttributeError:
        raise CliError(f"module {module_name!r} has no attribute {attribute!r}") from None
    if isinstance(app, App):
        return app
    if callable(app):  # a WSGI application (Flask, Django, ...): serve it beside ours
        wrapper = App()
        wrapper.mount_wsgi(app)
        return wrapper
    raise CliError(f"{spec} is a {type(app).__name__}, not a wssync.App or WSGI callable")


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.no_access_log:
        logging.getLogger("wssync.access").setLevel(logging.WARNING)
    try:
        if args.app:
            app = load_app(args.app)
        else:
            from .demo import create_app

            app = create_app()
        server = Server(app, args.host, args.port, threads=args.threads,
                        max_message_size=args.max_message_size,
                        max_body_size=args.max_body_size,
                        ping_interval=args.ping_interval)
        server.bind()
    except CliError as exc:
        print(f"wssync: error: {exc}", file=sys.stderr)
        return 2
    except (TypeError, ValueError) as exc:
        print(f"wssync: error: {exc}", file=sys.stderr)
        return 2
    except PermissionError:
        print(f"wssync: error: no permission to listen on port {args.port}; "
              f"use a port above 1023 (--port 8080) or run with the privilege to bind "
              f"low ports (root or CAP_NET_BIND_SERVICE)", file=sys.stderr)
        return 2
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            print(f"wssync: error: {args.host}:{args.port} is already in use; "
                  f"choose another --port", file=sys.stderr)
        else:
            print(f"wssync: error: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}",
                  file=sys.stderr)
        return 2

    def on_signal(signum: int, _frame: Any) -> None:
        logging.getLogger("wssync.server").info("%s received, stopping",
                                                 signal.Signals(signum).name)
        server.stop()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    server.serve_forever()
    return 0
