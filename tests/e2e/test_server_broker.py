"""Broadcast across hosts end to end: three wssync servers sharing a real
redis-server (one a ``python -m wssync --broker`` subprocess, two in-process),
a real WebSocket client on each; then Redis is killed and started again."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Callable, Iterator, List, NamedTuple, Union

import pytest
import requests
import websocket  # websocket-client
from broker_app import make_app
from conftest import RedisServer
from helpers import finish, free_port, run_server, wait_listening, wait_until
from websockets.sync.client import ClientConnection, connect

from wssync import Server

HOST = "127.0.0.1"
TIMEOUT = 10.0
TESTS = Path(__file__).resolve().parents[1]


class Client:
    """One WebSocket client of either library: ``recv()`` the next text message."""

    def __init__(self, port: int, path: str, library: str, stack: ExitStack) -> None:
        url = f"ws://{HOST}:{port}{path}"
        self._ws: Union[ClientConnection, websocket.WebSocket]
        if library == "websockets":
            self._ws = stack.enter_context(connect(url, open_timeout=TIMEOUT))
        else:
            self._ws = websocket.create_connection(url, timeout=TIMEOUT)
            stack.callback(self._ws.close)

    def recv(self) -> Any:
        if isinstance(self._ws, ClientConnection):
            return self._ws.recv(timeout=TIMEOUT)
        return self._ws.recv()

    def recv_many(self, count: int) -> List[Any]:
        return [self.recv() for _ in range(count)]


class Hosts(NamedTuple):
    proc: subprocess.Popen[str]  # host A: the command line, a process of its own
    port_a: int
    b: Server  # hosts B and C: in this process, separate servers
    c: Server
    room: List[Client]  # a /room client on A, B and C
    other_b: Client  # a /other client on B


def stats_a(port: int) -> Any:
    return requests.get(f"http://{HOST}:{port}/stats", timeout=TIMEOUT).json()


def all_connected(hosts: Hosts) -> bool:
    return bool(stats_a(hosts.port_a)["connected"] and hosts.b.stats()["broker"]["connected"]
                and hosts.c.stats()["broker"]["connected"])


@pytest.fixture
def hosts(redis_server: RedisServer, start_server: Callable[..., Server],
          threads: int) -> Iterator[Hosts]:
    port = free_port()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(TESTS), *filter(None, [os.environ.get("PYTHONPATH")])]))
    proc = run_server(["--app", "broker_app:app", "--host", HOST, "--port", str(port),
                       "--threads", str(threads), "--broker", redis_server.url("hosts"),
                       "--no-access-log"], env=env)
    stack = ExitStack()
    try:
        wait_listening(port, proc)
        b = start_server(make_app(), threads=threads, broker=redis_server.url("hosts"))
        c = start_server(make_app(), threads=threads, broker=redis_server.url("hosts"))
        room = [Client(port, "/room", "websockets", stack),
                Client(b.address[1], "/room", "websocket-client", stack),
                Client(c.address[1], "/room", "websockets", stack)]
        other_b = Client(b.address[1], "/other", "websockets", stack)
        found = Hosts(proc, port, b, c, room, other_b)
        assert wait_until(lambda: all_connected(found))
        yield found
    finally:
        stack.close()
        if proc.returncode is None:  # (a test may have stopped it and read its log)
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            finish(proc)


def numbered(prefix: str, count: int) -> List[str]:
    return [f"{prefix}{n}" for n in range(count)]


def test_a_broadcast_reaches_every_host_in_order(hosts: Hosts) -> None:
    # From a handler on A (the subprocess): 200 numbered messages to /room.
    answer = requests.get(f"http://{HOST}:{hosts.port_a}/broadcast",
                          params={"count": "200", "prefix": "a", "path": "/room"},
                          timeout=TIMEOUT)
    assert answer.text == "ok"
    for client in hosts.room:
        assert client.recv_many(200) == numbered("a", 200)
    # From a thread of the application on B, with Server.broadcast.
    sender = threading.Thread(target=lambda: [hosts.b.broadcast(m, path="/room")
                                              for m in numbered("b", 200)])
    sender.start()
    sender.join(TIMEOUT)
    for client in hosts.room:
        assert client.recv_many(200) == numbered("b", 200)
    # To every path, from C: /other on B gets this one, its first: path filtering
    # of the 400 above happened on B, the receiving host.
    hosts.c.broadcast("everyone")
    assert hosts.other_b.recv() == "everyone"
    for client in hosts.room:
        assert client.recv() == "everyone"
    # Each server published once per broadcast and received everyone's, its own too.
    assert stats_a(hosts.port_a)["published"] == 200
    assert wait_until(lambda: hosts.c.stats()["broker"]["received"] == 401)
    b_stats = hosts.b.stats()["broker"]
    assert b_stats["published"] == 200 and b_stats["dropped"] == 0
    assert b_stats["channel"] == "hosts" and b_stats["url"].endswith("?channel=hosts")


def test_a_redis_outage_keeps_hosts_serving_and_delivery_resumes(
        hosts: Hosts, redis_server: RedisServer) -> None:
    client_a, client_b, client_c = hosts.room
    # B broadcasts a numbered stream from a thread while Redis is killed under it.
    stop = threading.Event()
    sent: List[str] = []

    def stream() -> None:
        n = 0
        while not stop.is_set() and n < 100_000:
            message = f"s{n}"
            hosts.b.broadcast(message, path="/room")
            sent.append(message)
            n += 1
            stop.wait(0.002)

    sender = threading.Thread(target=stream)
    sender.start()
    try:
        assert wait_until(lambda: len(sent) >= 50)
        redis_server.kill()  # SIGKILL, mid-stream
        assert wait_until(lambda: not hosts.b.stats()["broker"]["connected"])
        seen = len(sent)
        assert wait_until(lambda: len(sent) >= seen + 50)  # B kept broadcasting
    finally:
        stop.set()
        sender.join(TIMEOUT)
    # B's own client got the whole stream, in order: local delivery never
    # depended on Redis.  A's got an in-order part of it (the rest was dropped).
    assert client_b.recv_many(len(sent)) == sent
    assert hosts.b.stats()["broker"]["dropped"] > 0

    # Every host still serves HTTP and local broadcasts during the outage.
    assert hosts.proc.poll() is None
    assert requests.get(f"http://{HOST}:{hosts.port_a}/broadcast",
                        params={"prefix": "local-a", "path": "/room"},
                        timeout=TIMEOUT).text == "ok"
    hosts.c.broadcast("local-c", path="/room")
    received_a: List[str] = []
    while not received_a or received_a[-1] != "local-a0":
        received_a.append(client_a.recv())
    assert [m for m in received_a if m.startswith("s")] == \
        [m for m in sent if m in set(received_a)]  # in order, no duplicates
    assert len(received_a) - 1 < len(sent)
    received_c: List[str] = []
    while not received_c or received_c[-1] != "local-c":
        received_c.append(client_c.recv())
    assert stats_a(hosts.port_a)["dropped"] > 0  # A's local-a0 could not be published

    redis_server.start()  # the same port: every host reconnects and subscribes again
    assert wait_until(lambda: all_connected(hosts), timeout=30)
    hosts.c.broadcast("after", path="/room")
    # Nothing from the outage arrives late: the next message everywhere is "after".
    assert client_a.recv() == "after"
    assert client_b.recv() == "after"
    assert client_c.recv() == "after"

    hosts.proc.send_signal(signal.SIGTERM)
    err = finish(hosts.proc)
    assert hosts.proc.returncode == 0, err
    assert err.count("lost its connection") == 1, err  # once, not once per broadcast
    assert err.count("reconnected") == 1, err
