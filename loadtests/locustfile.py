"""Locust scenarios mixing HTTP and WebSocket users against ``target_app.py``.

Users:

- ``BrowsingUser`` (HTTP): pages and the JSON API.
- ``EchoUser`` (WebSocket): holds a connection to ``/ws``; each task is one
  round trip, reported as request type ``WS``, name ``echo`` (send to reply).
- ``ChatUser`` (WebSocket): holds a connection to ``/chat``; sends messages
  carrying a timestamp and reports every broadcast it receives as ``WS``
  ``broadcast`` with the latency measured from that timestamp.

Both are ``wssync.locust.WebSocketUser``: the handshakes are ``WS /ws`` and
``WS /chat`` rows, and a connection the server closes is a failure, then a
reconnect on the user's next task.

Weights and pacing come from the environment (defaults in brackets):
``HTTP_WEIGHT`` [6], ``ECHO_WEIGHT`` [3], ``CHAT_WEIGHT`` [1], ``WAIT_MIN`` [0.5],
``WAIT_MAX`` [1.5] seconds between tasks, ``WS_MESSAGE_SIZE`` [64] bytes.
``CHAT_HOSTS`` (comma-separated base URLs, e.g. two servers sharing Redis)
spreads the WebSocket users over those servers, one after the other; chat
broadcasts are then reported as ``broadcast`` (sent through the same server)
and ``broadcast remote`` (sent through another one).
Locust's own options (``-u``, ``-r``, ``-t``, ``--host``, tags, ...) apply as usual.

Run headless against a running server::

    locust -f loadtests/locustfile.py --host http://127.0.0.1:8080 --headless -u 50 -r 10 -t 30s
"""

from __future__ import annotations

import itertools
import json
import os
import random
import time
from typing import Any, Optional, Union

from locust import HttpUser, between, task

from wssync.locust import WebSocketUser

WAIT = between(float(os.environ.get("WAIT_MIN", "0.5")), float(os.environ.get("WAIT_MAX", "1.5")))
MESSAGE_SIZE = int(os.environ.get("WS_MESSAGE_SIZE", "64"))
CHAT_HOSTS = [h for h in os.environ.get("CHAT_HOSTS", "").split(",") if h]
_next_host = itertools.cycle(CHAT_HOSTS)


class BrowsingUser(HttpUser):
    weight = int(os.environ.get("HTTP_WEIGHT", "6"))
    wait_time = WAIT

    @task(5)
    def page(self) -> None:
        self.client.get("/")

    @task(5)
    def list_items(self) -> None:
        self.client.get("/api/items")

    @task(2)
    def create_item(self) -> None:
        with self.client.post("/api/items", json={"name": "widget", "qty": random.randint(1, 9)},
                              catch_response=True) as response:
            if response.status_code != 201:
                response.failure(f"status {response.status_code}")
            else:
                self.last_id = response.json()["id"]

    @task(2)
    def read_item(self) -> None:
        item_id = getattr(self, "last_id", None)
        if item_id is not None:
            self.client.get(f"/api/items/{item_id}", name="/api/items/[id]")


class SpreadUser(WebSocketUser):
    """A WebSocket user on the next of ``CHAT_HOSTS``, if given (else ``--host``)."""

    abstract = True
    wait_time = WAIT

    def __init__(self, environment: Any) -> None:
        super().__init__(environment)
        if CHAT_HOSTS:
            self.host = next(_next_host)


class EchoUser(SpreadUser):
    weight = int(os.environ.get("ECHO_WEIGHT", "3"))

    def on_start(self) -> None:
        self.ws = self.connect("/ws")

    @task
    def echo(self) -> None:
        payload = "x" * MESSAGE_SIZE
        self.ws.request(payload, name="echo", match=lambda reply: reply == payload)


class ChatUser(SpreadUser):
    weight = int(os.environ.get("CHAT_WEIGHT", "1"))

    def on_start(self) -> None:
        self.ws = self.connect("/chat")
        self.ws.time_pushes(self.broadcast_row, self.sent_at)

    def sent_at(self, message: Union[str, bytes]) -> Optional[float]:
        # Latency measured from the sender's timestamp inside the message (wall
        # clock, shared by all users of one load-generator machine).
        return float(json.loads(message)["t"])

    def broadcast_row(self, message: Union[str, bytes]) -> str:
        remote = json.loads(message).get("via", self.host) != self.host
        return "broadcast remote" if remote else "broadcast"

    @task
    def say(self) -> None:
        message = json.dumps({"t": time.time(), "user": id(self), "via": self.host,
                              "text": "x" * MESSAGE_SIZE})
        self.ws.send(message, name="chat send")
