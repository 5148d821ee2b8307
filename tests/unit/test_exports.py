"""The public API, pinned: what ``wssync`` and ``wssync.client`` export and what README.rst
documents.  A name that disappears or changes shape here is a break for users."""

from __future__ import annotations

import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest

import wssync
import wssync.client
from wssync import errors

README = Path(__file__).resolve().parents[2] / "README.rst"

PACKAGE_API = {
    "App", "BlockingWebSocket", "CloseCode", "ConnectionClosed", "HandshakeRefused", "Headers",
    "HttpError", "ProtocolError", "Request", "RequestBodyError", "Response", "SendTimeout",
    "Server",
    "ServingWhileImported", "TlsError", "WebSocket", "WssyncError", "__version__",
}
CLIENT_API = {"ClientConnection", "ConnectionClosed", "HandshakeRefused", "TlsError", "connect"}


def test_package_exports_exactly_the_public_api() -> None:
    assert set(wssync.__all__) == PACKAGE_API
    for name in wssync.__all__:
        assert getattr(wssync, name) is not None


def test_client_exports_exactly_its_api() -> None:
    assert set(wssync.client.__all__) == CLIENT_API
    assert wssync.client.ConnectionClosed is wssync.ConnectionClosed
    assert wssync.client.HandshakeRefused is wssync.HandshakeRefused


def test_every_public_error_is_a_wssync_error_with_its_hint_first() -> None:
    for name in ("HttpError", "ProtocolError", "HandshakeRefused", "ConnectionClosed",
                 "ServingWhileImported", "TlsError", "RequestBodyError", "SendTimeout"):
        assert issubclass(getattr(wssync, name), wssync.WssyncError), name
    assert issubclass(wssync.SendTimeout, TimeoutError)  # what a blocking socket raises
    assert wssync.HttpError(404, "gone").status == 404
    assert wssync.ProtocolError(1002, "bad").code == 1002
    assert wssync.HandshakeRefused(403, "no").status == 403
    assert wssync.ConnectionClosed(1001, "bye").code == 1001
    assert issubclass(wssync.ServingWhileImported, RuntimeError)
    assert wssync.RequestBodyError(413, "too large").status == 413
    assert issubclass(wssync.RequestBodyError, ConnectionError)  # a broken upload
    assert errors.HttpError is wssync.HttpError


def test_flask_adapter_exports_flask_socks_names() -> None:
    pytest.importorskip("flask")
    import wssync.flask

    assert set(wssync.flask.__all__) == {"ConnectionClosed", "Sock", "WebSocket"}
    closed = wssync.flask.ConnectionClosed(1001, "bye")
    assert (closed.reason, closed.message) == (1001, "bye")  # simple-websocket's names
    # One error family: code that catches wssync's ConnectionClosed catches it too.
    assert isinstance(closed, wssync.ConnectionClosed) and closed.code == 1001
    assert list(inspect.signature(wssync.flask.Sock.route).parameters)[1:] == ["path", "bp",
                                                                              "kwargs"]
    assert list(inspect.signature(wssync.flask.WebSocket.close).parameters)[1:] == [
        "reason", "message"]


def test_importing_wssync_does_not_import_flask() -> None:
    code = "import sys, wssync, wssync.client; assert 'flask' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_close_codes_are_the_rfc_numbers() -> None:
    assert wssync.CloseCode.NORMAL_CLOSURE == 1000
    assert wssync.CloseCode.GOING_AWAY == 1001
    assert wssync.CloseCode.PROTOCOL_ERROR == 1002
    assert wssync.CloseCode.INVALID_DATA == 1007
    assert wssync.CloseCode.MESSAGE_TOO_BIG == 1009
    assert wssync.CloseCode.INTERNAL_ERROR == 1011


def test_documented_signatures() -> None:
    def params(fn: object) -> list:
        return list(inspect.signature(fn).parameters)  # type: ignore[arg-type]

    assert params(wssync.Server) == ["app", "host", "port", "threads", "ssl_context", "uds",
                                     "uds_mode", "broker", "workers", "settings"]
    assert params(wssync.Response) == ["body", "status", "headers", "content_type"]
    assert params(wssync.App.route)[1:] == ["path", "methods"]
    assert params(wssync.App.websocket)[1:] == ["path", "on_connect", "on_close", "on_drain",
                                                "subprotocols", "origins", "blocking"]
    assert params(wssync.WebSocket.close)[1:] == ["code", "reason"]
    assert params(wssync.WebSocket.send)[1:] == ["message", "timeout"]
    assert params(wssync.WebSocket.ping)[1:] == ["payload", "timeout"]
    assert params(wssync.WebSocket.drain)[1:] == ["timeout"]
    assert params(wssync.Server.broadcast)[1:] == ["message", "path", "wait", "timeout"]
    assert params(wssync.client.connect) == ["url", "subprotocols", "headers", "timeout",
                                            "max_message_size", "ssl_context"]


def test_documented_members_exist() -> None:
    members = {
        wssync.App: ["route", "websocket", "mount_wsgi", "server"],
        wssync.Server: ["serve_forever", "start", "stop", "broadcast", "connections",
                        "websockets", "address", "bind", "reload_certificates", "stats",
                        "supervise"],
        wssync.WebSocket: ["send", "ping", "close", "path", "headers", "request", "subprotocol",
                           "remote_address", "closed", "close_code", "close_reason", "data",
                           "buffered_amount", "drain"],
        wssync.BlockingWebSocket: ["receive", "__iter__", "send", "ping", "close", "closed",
                                   "close_code"],
        wssync.Request: ["method", "path", "raw_path", "query_string", "query", "arg",
                         "headers", "body", "text", "json", "version", "remote_addr",
                         "path_params", "keep_alive", "scheme"],
        wssync.Headers: ["get", "get_all", "items", "tokens", "by_name", "compact"],
        wssync.Response: ["json", "html"],
    }
    app_attributes = vars(wssync.App())  # set in __init__, not on the class
    for cls, names in members.items():
        for name in names:
            assert (hasattr(cls, name) or name in getattr(cls, "__slots__", ())
                    or (cls is wssync.App and name in app_attributes)), f"{cls.__name__}.{name}"


def test_readme_names_only_exported_classes() -> None:
    text = README.read_text(encoding="utf-8")
    for name in re.findall(r"``(?:from wssync import )?([A-Z][A-Za-z]+)\(", text):
        if name in PACKAGE_API:
            continue
        assert hasattr(wssync.client, name) or name in {"Flask", "SocketIO"} or \
            name in {"Sock"}, name  # wssync.flask's (test_flask_adapter_exports...)


def test_every_import_path_readme_names_still_resolves() -> None:
    """Modules moved into subpackages; the paths users copied from README keep working."""
    import importlib

    text = README.read_text(encoding="utf-8")
    imports = re.findall(r"from (wssync[\w.]*) import ([\w, ]+)", text)
    dotted = re.findall(r"\b(wssync(?:\.[a-z_]+)+)\.([A-Z]\w+|server_context)\b", text)
    assert imports and dotted
    for module, names in imports + dotted:
        if module.startswith("wssync.locust"):
            continue  # imports Locust, which monkey-patches this process: test_locust.py
        loaded = importlib.import_module(module)
        for name in names.split(","):
            assert hasattr(loaded, name.strip()), f"{module}.{name.strip()}"
