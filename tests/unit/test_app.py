"""``App`` and ``WebSocketRoute`` on their own: route look-ups without sockets."""

from __future__ import annotations

from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple, Union

import pytest

from wssync.app import App, WebSocketRoute
from wssync.http.request import Headers, Request
from wssync.http.response import Response
from wssync.http.wsgi import WsgiHandler
from wssync.websocket.handle import WebSocket

UPGRADE = [("Host", "example.com"), ("Upgrade", "websocket"), ("Connection", "Upgrade"),
           ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="), ("Sec-WebSocket-Version", "13")]


def make_request(method: str, target: str,
                 headers: Optional[List[Tuple[str, str]]] = None) -> Request:
    fields = list(headers) if headers is not None else [("Host", "example.com")]
    return Request(method, target, "HTTP/1.1", Headers(fields))


def answer(app: App, method: str, target: str) -> Response:
    """The response ``match_http`` gives instead of a handler."""
    result = app.match_http(make_request(method, target))
    assert isinstance(result, Response), f"expected a response, got {result!r}"
    return result


def handler_of(app: App, request: Request) -> Any:
    """The handler of the route ``match_http`` gives (or what it gives instead)."""
    route = app.match_http(request)
    return route if isinstance(route, Response) else route.handler


def header(response: Response, name: str) -> List[str]:
    return [value for key, value in response.headers if key.lower() == name.lower()]


def on_message(ws: WebSocket, message: Union[str, bytes]) -> None:
    pass


def ws_route(subprotocols: Iterable[str] = (),
             origins: Union[str, Iterable[str], Callable[[Optional[str]], bool], None] = None,
             ) -> WebSocketRoute:
    return WebSocketRoute("/ws", on_message, None, None, subprotocols, origins)


# -- HTTP routes ----------------------------------------------------------------------


def test_static_route_returns_its_handler() -> None:
    app = App()

    @app.route("/")
    def index(request: Request) -> str:
        return "index"

    @app.route("/about")
    def about(request: Request) -> str:
        return "about"

    request = make_request("GET", "/about?x=1")
    assert handler_of(app, request) is about
    assert request.path_params == {}
    route = app.match_http(make_request("GET", "/about"))
    # An app's own handler runs in the server's mode and gets its body collected.
    assert not isinstance(route, Response) and not route.blocking and not route.streams_body
    assert handler_of(app, make_request("GET", "/")) is index


def test_route_decorator_returns_the_handler_unchanged() -> None:
    app = App()

    def handler(request: Request) -> str:
        return "ok"

    assert app.route("/x")(handler) is handler


def test_path_params_land_in_request() -> None:
    app = App()

    @app.route("/users/<user_id>/posts/<post>")
    def post(request: Request) -> Dict[str, str]:
        return request.path_params

    request = make_request("GET", "/users/42/posts/hello%20world?sort=new")
    assert handler_of(app, request) is post
    assert request.path_params == {"user_id": "42", "post": "hello world"}


def test_path_param_matches_one_whole_segment() -> None:
    app = App()

    @app.route("/users/<user_id>")
    def user(request: Request) -> str:
        return "user"

    for target in ("/users/1/extra", "/users/", "/users", "/prefix/users/1", "/users/1/"):
        assert answer(app, "GET", target).status == 404, target


def test_literal_text_around_params_is_matched_literally() -> None:
    app = App()

    @app.route("/v1.0/files/<name>.txt")
    def text_file(request: Request) -> str:
        return "file"

    request = make_request("GET", "/v1.0/files/notes.txt")
    assert handler_of(app, request) is text_file
    assert request.path_params == {"name": "notes"}
    # "." is not a regex wildcard, before a parameter or after it.
    assert answer(app, "GET", "/v1x0/files/notes.txt").status == 404
    assert answer(app, "GET", "/v1.0/files/axtxt").status == 404


def test_static_route_wins_over_dynamic() -> None:
    app = App()

    @app.route("/users/<user_id>")
    def user(request: Request) -> str:
        return "user"

    @app.route("/users/me")
    def me(request: Request) -> str:
        return "me"

    request = make_request("GET", "/users/me")
    assert handler_of(app, request) is me
    assert request.path_params == {}


def test_methods_are_matched_case_insensitively_at_registration() -> None:
    app = App()

    @app.route("/items", methods=["post", "Put"])
    def change(request: Request) -> str:
        return "changed"

    assert handler_of(app, make_request("POST", "/items")) is change
    assert handler_of(app, make_request("PUT", "/items")) is change
    assert answer(app, "GET", "/items").status == 405


def test_wrong_method_gets_405_with_allow() -> None:
    app = App()

    @app.route("/items", methods=["POST", "DELETE"])
    def change(request: Request) -> str:
        return "changed"

    response = answer(app, "GET", "/items")
    assert response.status == 405
    assert header(response, "Allow") == ["DELETE, POST"]


def test_405_on_dynamic_route_lists_methods_including_head() -> None:
    app = App()

    @app.route("/items/<item_id>")
    def show(request: Request) -> str:
        return "item"

    response = answer(app, "PATCH", "/items/7")
    assert response.status == 405
    assert header(response, "Allow") == ["GET, HEAD"]


def test_get_route_answers_head() -> None:
    app = App()

    @app.route("/page")
    def page(request: Request) -> str:
        return "page"

    assert handler_of(app, make_request("HEAD", "/page")) is page


def test_route_without_get_does_not_answer_head() -> None:
    app = App()

    @app.route("/submit", methods=["POST"])
    def submit(request: Request) -> str:
        return "ok"

    response = answer(app, "HEAD", "/submit")
    assert response.status == 405
    assert header(response, "Allow") == ["POST"]


def test_explicit_head_handler_is_kept() -> None:
    app = App()

    @app.route("/page", methods=["HEAD"])
    def head(request: Request) -> str:
        return ""

    @app.route("/page")
    def page(request: Request) -> str:
        return "page"

    assert handler_of(app, make_request("HEAD", "/page")) is head
    assert handler_of(app, make_request("GET", "/page")) is page


@pytest.mark.parametrize("path", ["", "users", "users/<user_id>", "ws"])
def test_route_path_must_start_with_slash(path: str) -> None:
    app = App()

    def handler(request: Request) -> str:
        return "x"

    with pytest.raises(ValueError, match="must start with '/'"):
        app.route(path)(handler)
    with pytest.raises(ValueError, match="must start with '/'"):
        app.websocket(path)(on_message)


def test_same_dynamic_pattern_shares_one_table() -> None:
    app = App()

    @app.route("/items/<item_id>")
    def show(request: Request) -> str:
        return "show"

    @app.route("/items/<item_id>", methods=["DELETE"])
    def delete(request: Request) -> str:
        return "delete"

    assert len(app._dynamic) == 1
    get_request = make_request("GET", "/items/3")
    assert handler_of(app, get_request) is show
    assert get_request.path_params == {"item_id": "3"}
    assert handler_of(app, make_request("DELETE", "/items/3")) is delete
    response = answer(app, "POST", "/items/3")
    assert header(response, "Allow") == ["DELETE, GET, HEAD"]


def test_same_static_path_shares_one_table() -> None:
    app = App()

    @app.route("/items")
    def listing(request: Request) -> str:
        return "list"

    @app.route("/items", methods=["POST"])
    def create(request: Request) -> str:
        return "create"

    assert handler_of(app, make_request("GET", "/items")) is listing
    assert handler_of(app, make_request("POST", "/items")) is create


def test_404_when_nothing_matches() -> None:
    app = App()

    @app.route("/known")
    def known(request: Request) -> str:
        return "known"

    @app.route("/users/<user_id>")
    def user(request: Request) -> str:
        return "user"

    response = answer(app, "GET", "/unknown")
    assert response.status == 404
    assert header(response, "Allow") == []
    assert answer(app, "POST", "/also/unknown").status == 404
    assert answer(App(), "GET", "/").status == 404


# -- WebSocket routes seen over plain HTTP ------------------------------------------


def test_get_on_websocket_route_without_upgrade_gets_426() -> None:
    app = App()
    app.websocket("/ws")(on_message)
    app.websocket("/rooms/<room>")(on_message)

    for target in ("/ws", "/rooms/lobby"):
        response = answer(app, "GET", target)
        assert response.status == 426, target
        assert header(response, "Upgrade") == ["websocket"]
        assert header(response, "Sec-WebSocket-Version") == ["13"]


def test_426_also_with_wsgi_mounted() -> None:
    app = App()
    app.websocket("/ws")(on_message)
    app.mount_wsgi(hello_wsgi)

    response = answer(app, "GET", "/ws")
    assert response.status == 426
    assert header(response, "Upgrade") == ["websocket"]
    assert header(response, "Sec-WebSocket-Version") == ["13"]


def test_http_route_on_websocket_path_wins() -> None:
    app = App()
    app.websocket("/ws")(on_message)

    @app.route("/ws")
    def page(request: Request) -> str:
        return "page"

    assert handler_of(app, make_request("GET", "/ws")) is page


# -- WSGI -----------------------------------------------------------------------------


def hello_wsgi(environ: Dict[str, Any], start_response: Callable[..., Any]) -> List[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [f"wsgi {environ['REQUEST_METHOD']} {environ['PATH_INFO']}".encode()]


def test_unmatched_request_goes_to_mounted_wsgi_app() -> None:
    app = App()

    @app.route("/native")
    def native(request: Request) -> str:
        return "native"

    assert app.wsgi is None
    app.mount_wsgi(hello_wsgi)
    assert isinstance(app.wsgi, WsgiHandler)
    assert app.wsgi.wsgi_app is hello_wsgi

    request = make_request("POST", "/flask/page")
    route = app.match_http(request)
    assert not isinstance(route, Response)
    handler = route.handler
    assert handler is app.wsgi
    # WSGI blocks and reads wsgi.input as the body arrives: its route says so.
    assert route.blocking and route.streams_body
    response = handler(request)
    assert isinstance(response, Response)
    assert response.status == 200
    assert response.body == b"wsgi POST /flask/page"
    # Routes of the app itself still come first.
    assert handler_of(app, make_request("GET", "/native")) is native


def test_wrong_method_on_route_is_405_even_with_wsgi_mounted() -> None:
    app = App()
    app.mount_wsgi(hello_wsgi)

    @app.route("/native")
    def native(request: Request) -> str:
        return "native"

    response = answer(app, "POST", "/native")
    assert response.status == 405
    assert header(response, "Allow") == ["GET, HEAD"]


# -- match_websocket ------------------------------------------------------------------


def test_match_websocket_static_route() -> None:
    app = App()

    def connected(ws: WebSocket) -> None:
        pass

    def closed(ws: WebSocket, code: int, reason: str) -> None:
        pass

    returned = app.websocket("/chat", on_connect=connected, on_close=closed,
                             subprotocols=("chat.v2", "chat.v1"),
                             origins=["https://example.com"])(on_message)
    assert returned is on_message

    request = make_request("GET", "/chat", UPGRADE)
    route = app.match_websocket(request)
    assert route is not None
    assert route.path == "/chat"
    assert route.on_message is on_message
    assert route.on_connect is connected
    assert route.on_close is closed
    assert route.subprotocols == ["chat.v2", "chat.v1"]
    assert allowed(route, "https://example.com")
    assert not allowed(route, "https://evil.example")
    assert request.path_params == {}


def test_match_websocket_dynamic_route_sets_params() -> None:
    app = App()

    def room_message(ws: WebSocket, message: Union[str, bytes]) -> None:
        pass

    app.websocket("/ws")(on_message)
    app.websocket("/rooms/<room>/users/<user>")(room_message)

    request = make_request("GET", "/rooms/lobby/users/ann?token=t", UPGRADE)
    route = app.match_websocket(request)
    assert route is not None
    assert route.path == "/rooms/<room>/users/<user>"
    assert route.on_message is room_message
    assert request.path_params == {"room": "lobby", "user": "ann"}


def test_match_websocket_none_when_nothing_matches() -> None:
    app = App()
    app.websocket("/ws")(on_message)
    app.websocket("/rooms/<room>")(on_message)

    @app.route("/page")
    def page(request: Request) -> str:
        return "page"

    for target in ("/other", "/ws/extra", "/rooms/a/b", "/rooms/", "/page"):
        request = make_request("GET", target, UPGRADE)
        assert app.match_websocket(request) is None, target
        assert request.path_params == {}


# -- WebSocketRoute -------------------------------------------------------------------


def opened_by(origin: Optional[str], host: Optional[str] = "example.com",
              scheme: str = "http") -> Request:
    """A handshake for ``host`` over ``scheme`` from a page of ``origin`` (None: no header)."""
    fields = [(name, value) for name, value in UPGRADE if name != "Host"]
    if host is not None:
        fields.append(("Host", host))
    if origin is not None:
        fields.append(("Origin", origin))
    request = make_request("GET", "/ws", fields)
    request.scheme = scheme
    return request


def allowed(route: WebSocketRoute, origin: Optional[str], host: Optional[str] = "example.com",
            scheme: str = "http") -> bool:
    return route.origin_refusal(opened_by(origin, host, scheme)) is None


def test_origin_allowed_with_a_set() -> None:
    route = ws_route(origins={"https://a.example", "https://b.example"})
    assert allowed(route, "https://a.example")
    assert allowed(route, "https://b.example")
    assert not allowed(route, "https://c.example")
    assert not allowed(route, "https://A.example.evil")
    assert not allowed(route, None)
    assert not allowed(route, "http://example.com")  # a list replaces the default
    assert route.origin_refusal(opened_by("https://c.example")) == \
        "origin https://c.example not allowed"
    assert route.origin_refusal(opened_by(None)) == "this WebSocket route needs an Origin header"


def test_one_origin_as_a_string_is_that_origin() -> None:
    route = ws_route(origins="https://a.example")
    assert allowed(route, "https://a.example")
    assert not allowed(route, "a")


def test_origin_allowed_with_a_one_shot_iterable() -> None:
    # A generator is read once, at registration, and still checked every time.
    route = ws_route(origins=(o for o in ["https://a.example"]))
    assert allowed(route, "https://a.example")
    assert allowed(route, "https://a.example")
    assert not allowed(route, "https://b.example")


def test_origin_allowed_with_a_predicate() -> None:
    seen: List[Optional[str]] = []

    def check(origin: Optional[str]) -> bool:
        seen.append(origin)
        return origin is not None and origin.endswith(".example.com")

    route = ws_route(origins=check)
    assert allowed(route, "https://app.example.com")
    assert not allowed(route, "https://example.org")
    assert not allowed(route, None)
    assert seen == ["https://app.example.com", "https://example.org", None]


def test_origin_predicate_result_is_a_bool() -> None:
    answers: Dict[Optional[str], Any] = {"https://yes": "truthy", "https://no": ""}

    def check(origin: Optional[str]) -> Any:
        return answers.get(origin)

    route = ws_route(origins=check)
    assert allowed(route, "https://yes")
    assert not allowed(route, "https://no")
    assert not allowed(route, "https://unknown")


@pytest.mark.parametrize("origins", ["*", ["*"]])
def test_origins_star_allows_every_page(origins: Any) -> None:
    route = ws_route(origins=origins)
    assert allowed(route, "https://anywhere.example")
    assert allowed(route, "null")
    assert allowed(route, None)


SAME = [  # (Origin, Host, scheme of the request)
    ("http://example.com", "example.com", "http"),
    ("http://example.com", "example.com:80", "http"),
    ("http://example.com:80", "example.com", "http"),
    ("HTTP://Example.COM", "EXAMPLE.com", "http"),
    ("https://example.com", "example.com", "https"),
    ("https://example.com", "example.com:443", "https"),
    ("http://127.0.0.1:8000", "127.0.0.1:8000", "http"),
    ("http://[::1]:8000", "[::1]:8000", "http"),
]
OTHER = [
    ("http://evil.example", "example.com", "http"),  # another host
    ("http://example.com.evil.example", "example.com", "http"),
    ("http://example.com:8000", "example.com", "http"),  # another port
    ("http://127.0.0.1:8001", "127.0.0.1:8000", "http"),
    ("https://example.com", "example.com", "http"),  # another scheme
    ("http://example.com", "example.com", "https"),
    ("https://example.com:8000", "example.com:8000", "http"),  # the same port, all the same
    ("ws://example.com", "example.com", "http"),  # no page has a ws: origin
    ("null", "example.com", "http"),  # a sandboxed frame, a file: page
    ("http://user@example.com", "example.com", "http"),
    ("http://example.com/path", "example.com", "http"),
    ("http://example.com:99999", "example.com", "http"),
    ("http://example.com", None, "http"),  # HTTP/1.0 without Host: nothing to compare
    ("http://example.com", "example.com@evil.example", "http"),
]


@pytest.mark.parametrize(("origin", "host", "scheme"), SAME)
def test_by_default_a_page_of_the_servers_own_origin_is_allowed(
        origin: str, host: str, scheme: str) -> None:
    assert allowed(ws_route(), origin, host, scheme)


@pytest.mark.parametrize(("origin", "host", "scheme"), OTHER)
def test_by_default_a_page_of_another_origin_is_refused(
        origin: str, host: Optional[str], scheme: str) -> None:
    assert not allowed(ws_route(), origin, host, scheme)


def test_by_default_a_client_without_origin_is_allowed() -> None:
    """Not a browser: no web page can make it send the user's cookies."""
    assert allowed(ws_route(), None)


def test_the_default_refusal_says_both_origins() -> None:
    refusal = ws_route().origin_refusal(opened_by("https://evil.example", "example.com:8443",
                                                  "https"))
    assert refusal == ("cross-origin WebSocket refused: the page is from https://evil.example, "
                       "this server is https://example.com:8443 (a route's origins= can "
                       "allow it)")


def test_select_subprotocol_takes_clients_first_supported_offer() -> None:
    route = ws_route(subprotocols=["chat.v1", "chat.v2", "json"])
    assert route.select_subprotocol(["chat.v2", "chat.v1"]) == "chat.v2"
    assert route.select_subprotocol(["unknown", "json", "chat.v1"]) == "json"
    assert route.select_subprotocol(["unknown"]) is None
    assert route.select_subprotocol([]) is None


def test_select_subprotocol_without_any_supported() -> None:
    route = ws_route()
    assert route.subprotocols == []
    assert route.select_subprotocol(["chat"]) is None


def test_a_wsgi_handler_routed_on_a_path_keeps_its_blocking_and_streaming() -> None:
    """What a handler declares (WsgiHandler: it blocks, it reads its body as it
    arrives) holds when it is registered with ``route`` too, as for the mount."""
    app = App()
    app.route("/legacy", methods=["POST"])(WsgiHandler(hello_wsgi))
    route = app.match_http(make_request("POST", "/legacy"))
    assert not isinstance(route, Response)
    assert route.blocking and route.streams_body
