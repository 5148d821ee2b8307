"""Flask "Hello, World!" on ``/`` (``flask_app:app``), the one Flask app every WSGI
server of the ``flask-mp`` workload serves: wssync (as a bare WSGI callable),
gunicorn gthread and waitress."""

from __future__ import annotations

from flask import Flask, Response

app = Flask(__name__)


@app.route("/")
def hello() -> Response:
    return Response("Hello, World!", mimetype="text/plain")
