"""The Redis broker on its own, against a real redis-server: records flow between
brokers in order, the bounds drop and count, an outage is logged once, and the
broker reconnects and re-subscribes."""

from __future__ import annotations

import logging
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Iterator, List

import pytest
from conftest import RedisServer
from helpers import free_port, wait_until

from wssync.scale.redis_broker import RedisBroker, split_url

LOGGER = "wssync.redis"


class Inbox:
    """What a broker delivered, in arrival order (deliveries come from its thread)."""

    def __init__(self) -> None:
        self.records: List[bytes] = []
        self._lock = threading.Lock()

    def __call__(self, record: bytes) -> None:
        with self._lock:
            self.records.append(record)

    def __len__(self) -> int:
        with self._lock:
            return len(self.records)


@pytest.fixture
def brokers() -> Iterator[List[RedisBroker]]:
    """A list to put brokers in; each is closed after the test."""
    made: List[RedisBroker] = []
    yield made
    for broker in made:
        broker.close()


def started(made: List[RedisBroker], url: str, inbox: Inbox, **options: float) -> RedisBroker:
    broker = RedisBroker(url, **options)  # type: ignore[arg-type]
    made.append(broker)
    broker.start(inbox)
    return broker


def connected(*brokers: RedisBroker) -> bool:
    return all(broker.stats()["connected"] for broker in brokers)


def records(count: int, prefix: bytes = b"") -> List[bytes]:
    return [prefix + b"record %d" % n for n in range(count)]


def test_records_flow_between_brokers_in_publish_order(redis_server: RedisServer,
                                                       brokers: List[RedisBroker]) -> None:
    one_inbox, two_inbox = Inbox(), Inbox()
    one = started(brokers, redis_server.url(), one_inbox)
    two = started(brokers, redis_server.url(), two_inbox)
    assert wait_until(lambda: connected(one, two))
    sent_one, sent_two = records(500, b"one "), records(500, b"two ")
    for a, b in zip(sent_one, sent_two):
        one.publish(a)
        two.publish(b)
    assert wait_until(lambda: len(one_inbox) == len(two_inbox) == 1000)
    for inbox in (one_inbox, two_inbox):
        # Both see every record, their own too (the server filters its own by
        # origin); each publisher's records in the order it published them.
        assert [r for r in inbox.records if r.startswith(b"one ")] == sent_one
        assert [r for r in inbox.records if r.startswith(b"two ")] == sent_two
    stats = one.stats()
    assert stats == {"broker": "redis", "url": redis_server.url(), "channel": "wssync",
                     "connected": True, "published": 500, "received": 1000, "dropped": 0}


def test_a_channel_is_shared_only_by_its_subscribers(redis_server: RedisServer,
                                                     brokers: List[RedisBroker]) -> None:
    red_inbox, blue_inbox = Inbox(), Inbox()
    red = started(brokers, redis_server.url("red"), red_inbox)
    blue = started(brokers, redis_server.url("blue"), blue_inbox)
    assert (red.channel, blue.channel) == ("red", "blue")
    assert wait_until(lambda: connected(red, blue))
    red.publish(b"for red")
    blue.publish(b"for blue")
    assert wait_until(lambda: len(red_inbox) == len(blue_inbox) == 1)
    assert red_inbox.records == [b"for red"] and blue_inbox.records == [b"for blue"]


def test_url_parts() -> None:
    client, shown, channel = split_url("redis://:secret@db.example:6380/2?channel=chat")
    assert (client, shown, channel) == ("redis://:secret@db.example:6380/2",
                                        "redis://:***@db.example:6380/2?channel=chat", "chat")
    client, shown, channel = split_url("redis://user:pw@host/0")
    assert (client, shown, channel) == ("redis://user:pw@host/0", "redis://user:***@host/0",
                                        "wssync")
    client, shown, channel = split_url("unix:///run/redis.sock?db=1&password=pw")
    assert client == "unix:///run/redis.sock?db=1&password=pw"
    assert shown == "unix:///run/redis.sock?db=1&password=***" and channel == "wssync"
    for bad in ("redis://host/0?channel=", "redis://host/0?channel=a&channel=b"):
        with pytest.raises(ValueError, match="channel"):
            split_url(bad)


def test_nothing_connects_before_start_and_the_queue_is_bounded() -> None:
    pytest.importorskip("redis")
    # Nothing listens on this port: an unstarted broker must not notice.
    broker = RedisBroker(f"redis://127.0.0.1:{free_port()}/0", max_queued=3,
                         max_queued_bytes=10 * 9)
    assert not [t for t in threading.enumerate() if t.name.startswith("wssync-redis")]
    for record in records(5):  # 8 or 9 bytes each: the count bound drops 2
        broker.publish(record)
    assert broker.stats()["dropped"] == 2
    broker.publish(b"x" * 70)  # fits the count? no: 3 queued already
    assert broker.stats()["dropped"] == 3
    broker.close()  # never started: what was queued is dropped too
    assert broker.stats()["dropped"] == 6
    small = RedisBroker(f"redis://127.0.0.1:{free_port()}/0", max_queued_bytes=20)
    small.publish(b"a" * 15)
    small.publish(b"b" * 10)  # over the byte bound
    small.publish(b"c" * 5)
    assert small.stats()["dropped"] == 1


def test_an_outage_drops_logs_once_and_recovers(redis_server: RedisServer,
                                                brokers: List[RedisBroker],
                                                caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    one_inbox, two_inbox = Inbox(), Inbox()
    one = started(brokers, redis_server.url(), one_inbox)
    two = started(brokers, redis_server.url(), two_inbox)
    assert wait_until(lambda: connected(one, two))
    one.publish(b"before")
    assert wait_until(lambda: len(two_inbox) == 1)
    caplog.clear()

    redis_server.kill()  # SIGKILL: the connections are reset, nobody says goodbye
    assert wait_until(lambda: not connected(one) and not connected(two))
    for record in records(200):
        one.publish(record)  # the reactor's call: returns at once, drops while down
    assert one.stats()["dropped"] >= 200
    lost = [r for r in caplog.records if r.name == LOGGER and r.levelno == logging.WARNING]
    # Once per broker, however many records and reconnect attempts failed.
    assert wait_until(lambda: len(caplog.records) > 0)
    assert len([r for r in lost if "127.0.0.1" in r.getMessage()]) == 2, \
        [r.getMessage() for r in lost]
    assert all("lost its connection" in r.getMessage() for r in lost)

    redis_server.start()  # the same port: both reconnect and subscribe again
    assert wait_until(lambda: connected(one, two), timeout=30)
    back = [r for r in caplog.records if r.name == LOGGER and r.levelno == logging.INFO]
    assert [r.getMessage().split(" ")[3] for r in back] == ["reconnected:", "reconnected:"]
    warnings = [r for r in caplog.records if r.name == LOGGER and r.levelno == logging.WARNING]
    assert len(warnings) == 2  # no more while reconnecting
    two.publish(b"after")
    assert wait_until(lambda: len(one_inbox) == len(two_inbox) == 2)
    # What was published during the outage is lost, as documented; nothing else.
    assert one_inbox.records == two_inbox.records == [b"before", b"after"]


def test_unreachable_from_the_start_logs_once_and_closes_promptly(
        brokers: List[RedisBroker], caplog: pytest.LogCaptureFixture) -> None:
    pytest.importorskip("redis")
    caplog.set_level(logging.INFO, logger=LOGGER)
    broker = started(brokers, f"redis://127.0.0.1:{free_port()}/0", Inbox())
    assert wait_until(lambda: broker.stats()["dropped"] > 0 or
                      any(r.name == LOGGER for r in caplog.records))
    for record in records(50):
        broker.publish(record)
    assert wait_until(lambda: broker.stats()["dropped"] == 50)
    warnings = [r for r in caplog.records if r.name == LOGGER]
    assert len(warnings) == 1 and "is unreachable" in warnings[0].getMessage()
    broker.close()  # bounded joins, even though both threads are in back-off
    assert not [t for t in threading.enumerate() if t.name.startswith("wssync-redis")]
    assert not broker.stats()["connected"]


def test_a_stopped_redis_is_noticed_and_survived(redis_server: RedisServer,
                                                 brokers: List[RedisBroker]) -> None:
    # SIGSTOP keeps every TCP connection open but answers nothing: only the
    # socket timeout and the health pings can tell.
    inbox = Inbox()
    broker = started(brokers, redis_server.url(), inbox, socket_timeout=0.5,
                     health_interval=0.5)
    assert wait_until(lambda: connected(broker))
    assert redis_server.proc is not None
    redis_server.proc.send_signal(signal.SIGSTOP)
    try:
        assert wait_until(lambda: not connected(broker), timeout=30)
        broker.publish(b"while stopped")
        assert broker.stats()["dropped"] >= 1
    finally:
        redis_server.proc.send_signal(signal.SIGCONT)
    assert wait_until(lambda: connected(broker), timeout=30)
    broker.publish(b"resumed")
    assert wait_until(lambda: b"resumed" in inbox.records)


def test_without_the_redis_library_the_error_says_what_to_install() -> None:
    code = ("import sys; sys.modules['redis'] = None\n"
            "import wssync\n"
            "from wssync._startup import broker_from\n"
            "try:\n"
            "    broker_from('redis://127.0.0.1:6379/0')\n"
            "except ImportError as exc:\n"
            "    print(exc)\n"
            "from wssync.cli import main\n"
            "sys.exit(main(['--port', '0', '--broker', 'redis://127.0.0.1:6379/0']))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=30)
    assert "pip install 'wssync[redis]'" in done.stdout
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "pip install 'wssync[redis]'" in done.stderr


# -- health checks: a connection that goes silent without closing ---------------------------


class FreezableProxy:
    """A TCP relay on loopback between the broker and Redis whose connections the
    test can freeze one at a time: bytes are then taken and dropped in both
    directions, with both sockets left open, as a network path that dies
    silently.  Only a health check can tell."""

    class Link:
        def __init__(self, client: socket.socket, upstream: socket.socket) -> None:
            self.client, self.upstream = client, upstream
            self.frozen = False
            self.subscriber = False  # it sent SUBSCRIBE

    def __init__(self, target_port: int) -> None:
        self._target = target_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.links: List[FreezableProxy.Link] = []
        # While set, a connection is frozen as it sends SUBSCRIBE (which is lost):
        # Redis took the connection and its set-up, then went silent.
        self.freeze_subscribers = False
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, name="proxy-accept", daemon=True).start()

    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self._target))
            link = FreezableProxy.Link(client, upstream)
            with self._lock:
                self.links.append(link)
            for source, sink, up in ((client, upstream, True), (upstream, client, False)):
                threading.Thread(target=self._pump, args=(link, source, sink, up),
                                 name="proxy-pump", daemon=True).start()

    def _pump(self, link: Link, source: socket.socket, sink: socket.socket, up: bool) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                if up and b"SUBSCRIBE" in data.upper():
                    link.subscriber = True
                    link.frozen = link.frozen or self.freeze_subscribers
                if not link.frozen:
                    sink.sendall(data)
        except OSError:
            pass
        for sock in (source, sink):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def live(self, subscriber: bool) -> List[Link]:
        with self._lock:
            return [link for link in self.links if link.subscriber == subscriber
                    and not link.frozen]

    def close(self) -> None:
        self._listener.close()
        with self._lock:
            for link in self.links:
                link.client.close()
                link.upstream.close()


@pytest.fixture
def proxy(redis_server: RedisServer) -> Iterator[FreezableProxy]:
    made = FreezableProxy(redis_server.port)
    yield made
    made.close()


def test_a_subscriber_whose_connection_goes_silent_is_noticed_by_its_ping(
        redis_server: RedisServer, proxy: FreezableProxy, brokers: List[RedisBroker],
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    inbox, other_inbox = Inbox(), Inbox()
    broker = started(brokers, proxy.url(), inbox, socket_timeout=0.5, health_interval=0.5)
    other = started(brokers, redis_server.url(), other_inbox)  # straight to Redis
    assert wait_until(lambda: connected(broker, other) and len(proxy.live(True)) == 1)
    other.publish(b"before")
    assert wait_until(lambda: len(inbox) == 1)

    proxy.freeze_subscribers = True  # and so do the next ones, for now
    proxy.live(True)[0].frozen = True  # only the subscriber's path dies
    other.publish(b"during")  # goes to the dead path: lost, as documented
    # Noticed after health_interval + socket_timeout of silence (1 s here).
    assert wait_until(lambda: not connected(broker), timeout=5)
    # A subscription Redis never confirms is no connection: the broker stays down
    # through several attempts on the silent path.
    assert not wait_until(lambda: connected(broker), timeout=2)
    proxy.freeze_subscribers = False
    assert wait_until(lambda: connected(broker), timeout=15)  # a new subscription
    other.publish(b"after")
    assert wait_until(lambda: b"after" in inbox.records, timeout=15)
    assert inbox.records == [b"before", b"after"]
    lost = [r.getMessage() for r in caplog.records
            if r.levelno == logging.WARNING and str(proxy.port) in r.getMessage()]
    assert len(lost) == 1 and "lost its connection" in lost[0] and "no answer" in lost[0]


def test_an_idle_publisher_whose_connection_goes_silent_is_noticed_by_its_ping(
        redis_server: RedisServer, proxy: FreezableProxy, brokers: List[RedisBroker]) -> None:
    inbox = Inbox()
    broker = started(brokers, proxy.url(), Inbox(), socket_timeout=0.5, health_interval=0.5)
    listener = started(brokers, redis_server.url(), inbox)
    assert wait_until(lambda: connected(broker, listener) and len(proxy.live(False)) == 1)

    proxy.live(False)[0].frozen = True  # only the publisher's path dies, while it is idle
    assert wait_until(lambda: not connected(broker), timeout=15)
    assert wait_until(lambda: connected(broker), timeout=15)
    dropped = broker.stats()["dropped"]
    broker.publish(b"after")  # goes out on the new connection, not into the dead one
    assert wait_until(lambda: inbox.records == [b"after"], timeout=15)
    assert broker.stats()["dropped"] == dropped


def test_both_connections_failing_log_once(brokers: List[RedisBroker],
                                          caplog: pytest.LogCaptureFixture) -> None:
    pytest.importorskip("redis")
    caplog.set_level(logging.INFO, logger=LOGGER)
    broker = started(brokers, f"redis://127.0.0.1:{free_port()}/0", Inbox())
    time.sleep(1.0)  # both threads fail, again and again with back-off
    assert not broker.stats()["connected"]
    assert [r.getMessage().split(") ")[0].split(" (")[0] for r in caplog.records
            if r.name == LOGGER] == [f"Redis at {broker.url} is unreachable"]


def test_records_sent_into_a_silent_connection_are_counted_as_dropped(
        redis_server: RedisServer, proxy: FreezableProxy, brokers: List[RedisBroker]) -> None:
    inbox = Inbox()
    broker = started(brokers, proxy.url(), Inbox(), socket_timeout=0.5, health_interval=30)
    listener = started(brokers, redis_server.url(), inbox)
    assert wait_until(lambda: connected(broker, listener) and len(proxy.live(False)) == 1)
    proxy.live(False)[0].frozen = True
    for record in records(3):
        broker.publish(record)  # the batch times out on the dead path
    assert wait_until(lambda: broker.stats()["dropped"] == 3, timeout=15)
    assert wait_until(lambda: connected(broker), timeout=15)
    broker.publish(b"after")
    assert wait_until(lambda: inbox.records == [b"after"], timeout=15)
    assert broker.stats()["published"] == 1
