"""Unit tests for the opening handshake helpers in ``wssync.websocket.handshake`` (RFC 6455 4)."""

from __future__ import annotations

import base64
import hashlib
from typing import List, Optional, Tuple, Union

import pytest

from wssync.errors import HandshakeRefused, HttpError
from wssync.http.connection import HttpConnection
from wssync.http.request import Headers, Request
from wssync.http.response import Response
from wssync.http.upgrade import Switch, upgrade_handler
from wssync.websocket.handshake import (
    GUID,
    accept_key,
    check_response,
    offered_subprotocols,
    parse_response_head,
    response_headers,
    validate_request,
)

KEY = "dGhlIHNhbXBsZSBub25jZQ=="


def make_request(
    extra: Optional[List[Tuple[str, str]]] = None,
    method: str = "GET",
    version: str = "HTTP/1.1",
) -> Request:
    items = [
        ("Host", "example.com"),
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", KEY),
        ("Sec-WebSocket-Version", "13"),
    ]
    items += extra or []
    return Request(method, "/chat", version, Headers(items))


def request_with(
    headers: List[Tuple[str, str]], method: str = "GET", version: str = "HTTP/1.1"
) -> Request:
    return Request(method, "/chat", version, Headers(list(headers)))


def replace_header(name: str, values: List[str]) -> Request:
    """The base request with every ``name`` field replaced by ``values``."""
    base = make_request()
    items = [(n, v) for n, v in base.headers.items() if n.lower() != name.lower()]
    items += [(name, v) for v in values]
    return request_with(items)


def handshake_error(request: Request) -> HttpError:
    with pytest.raises(HttpError) as info:
        validate_request(request)
    return info.value


# -- accept_key ----------------------------------------------------------------------


def test_accept_key_rfc_example() -> None:
    assert accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_accept_key_matches_definition() -> None:
    key = base64.b64encode(bytes(range(16))).decode()
    expected = base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()
    assert accept_key(key) == expected
    assert accept_key(key) != accept_key(KEY)


def test_guid_is_the_rfc_constant() -> None:
    assert GUID == "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


# -- recognised through the upgrade door --------------------------------------------------


def _websocket_handler(conn: HttpConnection, request: Request) -> Union[Response, Switch]:
    raise AssertionError("only looked up here")


def is_handshake(request: Request) -> bool:
    """Whether the HTTP upgrade door gives ``request`` to the WebSocket registration."""
    return upgrade_handler(request, {"websocket": _websocket_handler}) is _websocket_handler


def test_is_handshake_basic() -> None:
    assert is_handshake(make_request())


@pytest.mark.parametrize(
    "connection",
    [
        "Upgrade",
        "upgrade",
        "UPGRADE",
        "keep-alive, Upgrade",
        "Upgrade, keep-alive",
        "keep-alive,upgrade",
        " upgrade ",
    ],
)
def test_is_handshake_connection_token_list_case_insensitive(connection: str) -> None:
    assert is_handshake(replace_header("Connection", [connection]))


def test_is_handshake_upgrade_token_in_repeated_connection_header() -> None:
    assert is_handshake(replace_header("Connection", ["keep-alive", "Upgrade"]))


@pytest.mark.parametrize("upgrade", ["websocket", "WebSocket", "WEBSOCKET", "h2c, websocket"])
def test_is_handshake_upgrade_header_case_insensitive(upgrade: str) -> None:
    assert is_handshake(replace_header("Upgrade", [upgrade]))


def test_is_handshake_header_names_case_insensitive() -> None:
    req = request_with([("UPGRADE", "websocket"), ("connection", "upgrade")])
    assert is_handshake(req)


@pytest.mark.parametrize(
    "connection", ["keep-alive", "close", "upgraded", "Upgrade-Insecure", "no-upgrade"]
)
def test_is_handshake_requires_upgrade_token_in_connection(connection: str) -> None:
    assert not is_handshake(replace_header("Connection", [connection]))


def test_is_handshake_requires_connection_header() -> None:
    assert not is_handshake(replace_header("Connection", []))


@pytest.mark.parametrize("upgrade", ["h2c", "websockets", "web socket"])
def test_is_handshake_requires_websocket_upgrade(upgrade: str) -> None:
    assert not is_handshake(replace_header("Upgrade", [upgrade]))


def test_is_handshake_requires_upgrade_header() -> None:
    assert not is_handshake(replace_header("Upgrade", []))


def test_is_handshake_requires_http_1_1() -> None:
    assert not is_handshake(make_request(version="HTTP/1.0"))


def test_plain_request_is_not_a_handshake() -> None:
    assert not is_handshake(request_with([("Host", "example.com")]))


# -- validate_request ----------------------------------------------------------------------


def test_validate_request_returns_key() -> None:
    assert validate_request(make_request()) == KEY


def test_validate_request_strips_key_whitespace() -> None:
    assert validate_request(replace_header("Sec-WebSocket-Key", ["  " + KEY + " "])) == KEY


@pytest.mark.parametrize("method", ["POST", "PUT", "HEAD", "OPTIONS", "get"])
def test_non_get_is_400(method: str) -> None:
    err = handshake_error(make_request(method=method))
    assert err.status == 400


@pytest.mark.parametrize("versions", [["12"], ["8"], ["14"], ["13, 8"], ["abc"], ["13", "13"]])
def test_unsupported_version_is_426_with_version_header(versions: List[str]) -> None:
    err = handshake_error(replace_header("Sec-WebSocket-Version", versions))
    assert err.status == 426
    assert ("Sec-WebSocket-Version", "13") in err.headers


def test_missing_version_is_refused() -> None:
    err = handshake_error(replace_header("Sec-WebSocket-Version", []))
    assert err.status in (400, 426)
    if err.status == 426:
        assert ("Sec-WebSocket-Version", "13") in err.headers


def test_version_with_whitespace_is_accepted() -> None:
    assert validate_request(replace_header("Sec-WebSocket-Version", [" 13 "])) == KEY


def test_missing_key_is_400() -> None:
    assert handshake_error(replace_header("Sec-WebSocket-Key", [])).status == 400


def test_repeated_key_is_400() -> None:
    assert handshake_error(replace_header("Sec-WebSocket-Key", [KEY, KEY])).status == 400


@pytest.mark.parametrize(
    "key",
    [
        "",
        "not base64!",
        "dGhlIHNhbXBsZSBub25jZQ",  # missing padding
        base64.b64encode(b"x" * 15).decode(),  # 15 bytes
        base64.b64encode(b"x" * 17).decode(),  # 17 bytes
        base64.b64encode(b"x" * 8).decode(),  # short
        "dGhlIHNhbXBsZSBub25jZQ==dGhl",  # trailing junk
        "dGhlIHNhbXBs ZSBub25jZQ==",  # inner space
        "dGhlIHNhbXBsZSBub25jZQé=",  # non-ASCII
    ],
)
def test_invalid_key_is_400(key: str) -> None:
    assert handshake_error(replace_header("Sec-WebSocket-Key", [key])).status == 400


def test_any_16_byte_key_is_accepted() -> None:
    key = base64.b64encode(b"\xff" * 16).decode()
    assert validate_request(replace_header("Sec-WebSocket-Key", [key])) == key


def test_handshake_error_fields() -> None:
    err = HttpError(400, "bad")
    assert err.status == 400
    assert err.message == "bad"
    assert err.headers == []
    assert str(err) == "400 bad"


# -- subprotocols and the response ---------------------------------------------------------


def test_offered_subprotocols_none() -> None:
    assert offered_subprotocols(Headers()) == []


def test_offered_subprotocols_single_list_keeps_order() -> None:
    headers = Headers([("Sec-WebSocket-Protocol", "chat, superchat")])
    assert offered_subprotocols(headers) == ["chat", "superchat"]


def test_offered_subprotocols_across_repeated_headers() -> None:
    headers = Headers(
        [
            ("Sec-WebSocket-Protocol", "v2.json, v1.json"),
            ("Host", "x"),
            ("sec-websocket-protocol", " mqtt ,, wamp "),
        ]
    )
    assert offered_subprotocols(headers) == ["v2.json", "v1.json", "mqtt", "wamp"]


def test_offered_subprotocols_keep_case() -> None:
    assert offered_subprotocols(Headers([("Sec-WebSocket-Protocol", "Chat.V1")])) == ["Chat.V1"]


def test_response_headers_without_subprotocol() -> None:
    headers = dict(response_headers(KEY, None))
    assert headers == {
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Accept": "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=",
    }


def test_response_headers_with_subprotocol() -> None:
    headers = response_headers(KEY, "chat")
    assert ("Sec-WebSocket-Protocol", "chat") in headers
    assert [n for n, _ in headers].count("Sec-WebSocket-Protocol") == 1


def test_validated_key_feeds_response_accept() -> None:
    key = validate_request(make_request())
    assert dict(response_headers(key, None))["Sec-WebSocket-Accept"] == accept_key(KEY)


# -- the client's check of the server's answer -------------------------------------


def _answer(*lines: str, status: str = "101 Switching Protocols") -> Tuple[int, Headers]:
    head = "\r\n".join([f"HTTP/1.1 {status}", *lines]).encode("latin-1")
    return parse_response_head(head)


GOOD = ("Upgrade: websocket", "Connection: Upgrade", f"Sec-WebSocket-Accept: {accept_key(KEY)}")


def test_a_correct_answer_is_accepted() -> None:
    assert check_response(*_answer(*GOOD), KEY) is None
    chosen = check_response(*_answer(*GOOD, "Sec-WebSocket-Protocol: chat"), KEY, ["chat"])
    assert chosen == "chat"


@pytest.mark.parametrize("lines, status, message", [
    (GOOD, "200 OK", "instead of 101"),
    (GOOD[1:], "101 Switching Protocols", "Upgrade: websocket"),
    ((GOOD[0], GOOD[2]), "101 Switching Protocols", "Connection: upgrade"),
    (GOOD[:2], "101 Switching Protocols", "Sec-WebSocket-Accept"),
    ((*GOOD[:2], f"Sec-WebSocket-Accept: {accept_key('x' + KEY[1:])}"), "101 Switching Protocols",
     "Sec-WebSocket-Accept"),
    ((*GOOD, GOOD[2]), "101 Switching Protocols", "Sec-WebSocket-Accept"),
    ((*GOOD, "Sec-WebSocket-Extensions: permessage-deflate"), "101 Switching Protocols",
     "extension"),
    ((*GOOD, "Sec-WebSocket-Protocol: other"), "101 Switching Protocols", "subprotocol"),
])
def test_a_wrong_answer_is_refused(lines: Tuple[str, ...], status: str, message: str) -> None:
    with pytest.raises(HandshakeRefused, match=message):
        check_response(*_answer(*lines, status=status), KEY, ["chat"])

