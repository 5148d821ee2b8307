"""Locust scenarios mixing HTTP and WebSocket users against ``target_app.py``.

Users:

- ``BrowsingUser`` (HTTP): pages and the JSON API.
- ``EchoUser`` (WebSocket): holds a connection to ``/ws``; each task is one
  send/receive round trip, reported as request type ``WS``, name ``echo``.
- ``ChatUser`` (WebSocket): holds a connection to ``/chat``; sends messages
  carrying a timestamp and reports every broadcast it receives as ``WS``
  ``broadcast`` with the latency measured from that timestamp.

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
from typing import Any, Optional
from urllib.parse import urlsplit

import gevent
from locust import HttpUser, User, between, task

from wssync.client import ClientConnection, ConnectionClosed, connect

WAIT = between(float(os.environ.get("WAIT_MIN", "0.5")), float(os.environ.get("WAIT_MAX", "1.5")))
MESSAGE_SIZE = int(os.environ.get("WS_MESSAGE_SIZE", "64"))
CHAT_HOSTS = [h for h in os.environ.get("CHAT_HOSTS", "").split(",") if h]
_next_host = itertools.cycle(CHAT_HOSTS)


def ws_url(host: str, path: str) -> str:
    parts = urlsplit(host)
    return f"ws://{parts.netloc}{path}"


class WebSocketUser(User):
    """A Locust user holding one WebSocket, with request events for each exchange."""

    abstract = True
    path = "/ws"

    def __init__(self, environment: Any) -> None:
        super().__init__(environment)
        self.ws: Optional[ClientConnection] = None
        if CHAT_HOSTS:
            self.host = next(_next_host)

    def fire(self, name: str, started: float, length: int,
             exception: Optional[BaseException] = None) -> None:
        self.environment.events.request.fire(
            request_type="WS", name=name, response_time=(time.perf_counter() - started) * 1000,
            response_length=length, exception=exception, context={})

    def on_start(self) -> None:
        started = time.perf_counter()
        try:
            self.ws = connect(ws_url(self.host, self.path), timeout=10)
        except Exception as exc:
            self.fire("connect", started, 0, exc)
            raise
        self.fire("connect", started, 0)

    def on_stop(self) -> None:
        if self.ws is not None:
            self.ws.close()
            self.ws = None


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


class EchoUser(WebSocketUser):
    weight = int(os.environ.get("ECHO_WEIGHT", "3"))
    wait_time = WAIT
    path = "/ws"

    @task
    def echo(self) -> None:
        assert self.ws is not None
        payload = "x" * MESSAGE_SIZE
        started = time.perf_counter()
        try:
            self.ws.send(payload)
            reply = self.ws.recv(timeout=10)
            if reply != payload:
                raise ValueError("echo differs from what was sent")
        except Exception as exc:
            self.fire("echo", started, 0, exc)
            if isinstance(exc, ConnectionClosed):
                self.on_start()
            return
        self.fire("echo", started, len(payload))


class ChatUser(WebSocketUser):
    weight = int(os.environ.get("CHAT_WEIGHT", "1"))
    wait_time = WAIT
    path = "/chat"

    def on_start(self) -> None:
        super().on_start()
        self.receiver = gevent.spawn(self.receive_broadcasts)

    def on_stop(self) -> None:
        self.receiver.kill()  # before closing: two greenlets must not read one socket
        super().on_stop()

    def receive_broadcasts(self) -> None:
        assert self.ws is not None
        ws = self.ws
        while True:
            try:
                message = ws.recv()
            except ConnectionClosed:
                return
            try:
                data = json.loads(message)
                sent_at = data["t"]
            except (ValueError, KeyError, TypeError) as exc:
                self.fire("broadcast", time.perf_counter(), 0, exc)
                continue
            # Latency measured from the sender's timestamp inside the message
            # (wall clock, shared by all users of one load-generator machine).
            remote = data.get("via", self.host) != self.host
            self.environment.events.request.fire(
                request_type="WS", name="broadcast remote" if remote else "broadcast",
                response_time=(time.time() - sent_at) * 1000,
                response_length=len(message), exception=None, context={})

    @task
    def say(self) -> None:
        assert self.ws is not None
        started = time.perf_counter()
        message = json.dumps({"t": time.time(), "user": id(self), "via": self.host,
                              "text": "x" * MESSAGE_SIZE})
        try:
            self.ws.send(message)
        except ConnectionClosed as exc:
            self.fire("chat send", started, 0, exc)
            return
        self.fire("chat send", started, len(message))
