"""The application the broker tests serve on every "host": ``/room`` and
``/other`` WebSockets, ``GET /broadcast?count=N&prefix=P[&path=/room]`` to
broadcast ``P0`` .. ``P{N-1}`` from a handler, and ``GET /stats`` for the
broker's counters.  ``python -m wssync --app broker_app:app`` serves it."""

from __future__ import annotations

from typing import Any, Union

from wssync import App, Request, WebSocket


def make_app() -> App:
    app = App()

    @app.route("/broadcast")
    def broadcast(request: Request) -> str:
        assert app.server is not None
        prefix = request.arg("prefix") or ""
        count = request.arg("count") or "1"
        for n in range(int(count) if count.isdigit() else 1):
            app.server.broadcast(f"{prefix}{n}", path=request.arg("path"))
        return "ok"

    @app.route("/stats")
    def stats(request: Request) -> Any:
        assert app.server is not None
        return app.server.stats()["broker"]

    @app.websocket("/room")
    def room(ws: WebSocket, message: Union[str, bytes]) -> None:
        pass  # only listens

    @app.websocket("/other")
    def other(ws: WebSocket, message: Union[str, bytes]) -> None:
        pass

    return app


app = make_app()
