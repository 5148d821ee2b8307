"""The Socket.IO benchmark app: a plain Flask-SocketIO app with one ``echo`` event
whose return value (its data) is the ack, and nothing else.

Served unchanged by wssync (``python -m wssync --app socketio_app:app``), by
gunicorn's gthread worker (threading mode, the documented deployment) and by
gunicorn's gevent-websocket worker, which sets ``BENCH_SIO_ASYNC_MODE=gevent``
(``gunicorn -e``): gevent is installed in the bench venv, so engine.io's automatic
choice would pick it everywhere, and the threading mode is named instead.
A 5 s ping interval lets the idle benchmark see every client through a ping cycle
in bounded time.
"""

import os

from flask import Flask
from flask_socketio import SocketIO

app = Flask(__name__)
socketio = SocketIO(app, async_mode=os.environ.get("BENCH_SIO_ASYNC_MODE", "threading"),
                    ping_interval=5, ping_timeout=20)


@socketio.on("echo")
def echo(data):
    return data
