"""The download benchmark's app: the file named by ``DOWNLOAD_FILE`` served by
Flask's ``send_file`` (``/flask``, WSGI: ``download_app:flask_app`` for waitress and
gunicorn) and by wssync's ``Response.file`` (``/native``, with Flask mounted:
``download_app:app``).  ``GET /`` is the suite's "Hello, World!" readiness check."""

from __future__ import annotations

import os
from typing import Any

from flask import Flask, send_file

PATH = os.environ["DOWNLOAD_FILE"]

flask_app = Flask(__name__)


@flask_app.route("/")
def hello() -> Any:
    return "Hello, World!", 200, {"Content-Type": "text/plain"}


@flask_app.route("/flask")
def download() -> Any:
    return send_file(PATH)


try:
    from wssync import App, Request, Response
except ImportError:  # waitress and gunicorn need only flask_app
    pass
else:
    app = App()

    @app.route("/native")
    def native(request: Request) -> Response:
        return Response.file(PATH)

    app.mount_wsgi(flask_app)
