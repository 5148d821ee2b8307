"""The wssync echo server that the Autobahn TestSuite's fuzzing client tests.

Usage::

    python tests/autobahn/echo_server.py [--host 127.0.0.1] [--port 9001] [--threads N]
                                         [--max-message-size BYTES] [--set NAME=VALUE ...]
                                         [--certfile PEM --keyfile PEM]

A WebSocket route ``/`` sends every message back unchanged (text as text,
binary as binary).  Keepalive pings are off (``ping_interval=0``): the suite
counts any unexpected frame against the server.  ``--threads 0`` runs the
handler on the reactor thread, ``--threads N`` on a pool of N threads.
``--set NAME=VALUE`` passes any other server setting (see
``wssync.config.Config``; numbers, ``true`` or ``false``), e.g. ``--set
compression=false``.

Once listening it prints ``LISTENING <host> <port>`` on stdout (so ``--port 0``
can pick a free port); SIGTERM or SIGINT stop it gracefully.  ``run.py`` starts
this script; it is not a test module.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from typing import Any, Dict, List, Optional, Union

# Run from a checkout without installing: the repository root is two levels up.
_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from wssync import App, Server, WebSocket  # noqa: E402


def create_app() -> App:
    app = App()

    @app.websocket("/")
    def echo(ws: WebSocket, message: Union[str, bytes]) -> None:
        ws.send(message)

    return app


def _setting(text: str) -> Any:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"--set takes NAME=VALUE, not {text!r}")
    parsed: Any
    if value.strip().lower() in ("true", "false"):
        parsed = value.strip().lower() == "true"
    else:
        try:
            parsed = int(value)
        except ValueError:
            try:
                parsed = float(value)
            except ValueError:
                raise argparse.ArgumentTypeError(
                    f"{name}: {value!r} is not a number, true or false") from None
    return name.strip(), parsed


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--threads", type=int, default=0,
                        help="0: reactor mode; N: thread-pool mode with N threads")
    parser.add_argument("--max-message-size", type=int, default=64 * 1024 * 1024,
                        help="largest message in bytes (default: 64 MiB; the suite sends 16 MiB)")
    parser.add_argument("--set", dest="settings", type=_setting, action="append", default=[],
                        metavar="NAME=VALUE", help="any other server setting")
    parser.add_argument("--certfile", help="serve wss:// with this certificate (PEM)")
    parser.add_argument("--keyfile", help="its private key (PEM)")
    parser.add_argument("--log-level", default="warning",
                        choices=["debug", "info", "warning", "error", "critical"])
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    settings: Dict[str, Any] = {"max_message_size": args.max_message_size, "ping_interval": 0}
    settings.update(dict(args.settings))
    context = None
    if args.certfile:
        from wssync.io.tls import server_context

        context = server_context(args.certfile, args.keyfile)
    server = Server(create_app(), args.host, args.port, threads=args.threads,
                    ssl_context=context, **settings)
    server.bind()
    host, port = server.address[:2]

    def on_signal(signum: int, _frame: Any) -> None:
        server.stop()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    print(f"LISTENING {host} {port}", flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
