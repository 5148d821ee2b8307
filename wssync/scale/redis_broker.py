"""Broadcasts across hosts through Redis pub/sub: the ``redis://`` broker.

:class:`RedisBroker` carries broadcast records (see :mod:`wssync.scale.broker`)
between every server subscribed to one Redis channel.  It owns two threads and
two Redis connections: a publisher draining a bounded queue with ``PUBLISH``
and a subscriber that ``SUBSCRIBE``\\ s and hands each record to the server.
The reactor only appends to the queue; it never waits on Redis.

Pub/sub delivers at most once: while Redis is unreachable records are dropped
(and counted), both threads reconnect with back-off, and the loss and the
recovery are each logged once.  This module knows nothing of WebSockets or
the reactor and must not touch either; it needs the ``redis`` client library
(``pip install 'wssync[redis]'``), imported only when a broker is made.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import Any, Deque, Dict, List, Optional, Tuple
from urllib.parse import parse_qsl, urlencode, urlsplit

from .broker import Deliver

log = logging.getLogger("wssync.redis")

DEFAULT_CHANNEL = "wssync"
MAX_QUEUED = 10_000  # records waiting for the publisher thread
MAX_QUEUED_BYTES = 16 * 1024 * 1024  # and their bytes; beyond either, records are dropped
SOCKET_TIMEOUT = 5.0  # a Redis that answers nothing for this long is taken for dead
HEALTH_INTERVAL = 5.0  # an idle connection is pinged this often (a silent one is dead)
BACKOFF_FIRST, BACKOFF_MAX = 0.1, 5.0  # reconnect delays: doubling from the first
JOIN_TIMEOUT = 5.0  # close() waits at most this long for each thread
# How long the subscriber waits for a message before it looks whether it should
# stop: close() waits about this long for it (a socket read cannot be woken).
_POLL = 0.25
_BATCH = 512  # records sent in one pipeline round trip

_PUBLISHER, _SUBSCRIBER = "publisher", "subscriber"


def _import_redis() -> Any:
    try:
        import redis
        import redis.backoff
        import redis.retry
    except ImportError:
        raise ImportError("the redis broker needs the redis client library: "
                          "pip install 'wssync[redis]'") from None
    return redis


def split_url(url: str) -> Tuple[str, str, str]:
    """``(client_url, display_url, channel)``: the URL for the client without
    ``channel``, the URL to show (no password) and the channel name."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    channels = [value for key, value in query if key == "channel"]
    if len(channels) > 1 or (channels and not channels[0]):
        raise ValueError(f"broker URL {url!r}: give one non-empty channel=NAME")
    channel = channels[0] if channels else DEFAULT_CHANNEL
    base = url.partition("?")[0]
    rest = urlencode([(key, value) for key, value in query if key != "channel"])
    client_url = f"{base}?{rest}" if rest else base
    if parts.password is not None:
        user, _, host = parts.netloc.rpartition("@")
        base = base.replace(parts.netloc, f"{user.partition(':')[0]}:***@{host}", 1)
    shown = urlencode([(key, "***" if key == "password" else value) for key, value in query],
                      safe="*")
    display_url = f"{base}?{shown}" if shown else base
    return client_url, display_url, channel


class RedisBroker:
    """Shares broadcasts with every server subscribed to ``channel`` on one Redis.

    ``url`` is a redis-py URL (``redis://[:password@]host:port/db``,
    ``rediss://`` for TLS, ``unix:///path?db=0``) with an optional
    ``channel=NAME`` query parameter (default ``wssync``).  Nothing connects
    before :meth:`start`, so a server may fork after making it.
    """

    def __init__(self, url: str, *, max_queued: int = MAX_QUEUED,
                 max_queued_bytes: int = MAX_QUEUED_BYTES,
                 socket_timeout: float = SOCKET_TIMEOUT,
                 health_interval: float = HEALTH_INTERVAL) -> None:
        self._redis = _import_redis()
        self._client_url, self.url, self.channel = split_url(url)
        self._redis.ConnectionPool.from_url(self._client_url)  # a bad URL raises now
        self.max_queued = max_queued
        self.max_queued_bytes = max_queued_bytes
        self.socket_timeout = socket_timeout
        self.health_interval = health_interval
        self._cond = threading.Condition(threading.Lock())
        self._queue: Deque[bytes] = collections.deque()
        self._queued_bytes = 0
        self._published = self._received = self._dropped = 0
        self._up: Dict[str, Optional[bool]] = {}  # None: not tried yet
        self._down = False  # a connection was lost (or never made): publish() drops
        self._logged_down = False
        self._closing = threading.Event()
        self._threads: List[threading.Thread] = []
        self._deliver: Optional[Deliver] = None

    # -- the Broker interface -----------------------------------------------------------

    def start(self, deliver: Deliver) -> None:
        """Connect and subscribe on two new threads (reconnecting until :meth:`close`)."""
        if self._threads:
            raise RuntimeError("the Redis broker is already started")
        self._deliver = deliver
        self._closing.clear()
        self._up = {_PUBLISHER: None, _SUBSCRIBER: None}
        self._down = self._logged_down = False
        self._threads = [
            threading.Thread(target=self._publisher, name="wssync-redis-publisher", daemon=True),
            threading.Thread(target=self._subscriber, name="wssync-redis-subscriber",
                             daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def publish(self, record: bytes) -> None:
        """Queue ``record`` for the publisher thread; drop it (counted) while Redis
        is down or the queue is full.  Never waits on Redis."""
        size = len(record)
        with self._cond:
            if self._down or self._closing.is_set() or len(self._queue) >= self.max_queued \
                    or self._queued_bytes + size > self.max_queued_bytes:
                self._dropped += 1
                return
            self._queue.append(record)
            self._queued_bytes += size
            if len(self._queue) == 1:
                self._cond.notify()

    def close(self) -> None:
        """Stop both threads (each joined for at most ``JOIN_TIMEOUT`` seconds, even
        while Redis is unreachable) and close the connections."""
        self._closing.set()
        with self._cond:
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(JOIN_TIMEOUT)
            if thread.is_alive():
                log.warning("the Redis %s thread did not stop in time", thread.name)
        self._threads = []
        with self._cond:
            self._dropped += len(self._queue)
            self._queue.clear()
            self._queued_bytes = 0

    def stats(self) -> Dict[str, Any]:
        with self._cond:
            connected = bool(self._up) and all(self._up.values())
            return {"broker": "redis", "url": self.url, "channel": self.channel,
                    "connected": connected, "published": self._published,
                    "received": self._received, "dropped": self._dropped}

    # -- connection state ---------------------------------------------------------------------

    def _client(self) -> Any:
        redis = self._redis
        return redis.Redis.from_url(
            self._client_url, socket_timeout=self.socket_timeout,
            socket_connect_timeout=min(self.socket_timeout, 2.0), socket_keepalive=True,
            # No retry inside the client: a failure is ours to see, count and log.
            retry=redis.retry.Retry(redis.backoff.NoBackoff(), 0))

    def _set_up(self, role: str, up: bool, error: Optional[BaseException] = None) -> None:
        """Record one connection's state; log only when the whole broker changes
        between connected and not (once each way, not once per record)."""
        with self._cond:
            if self._up.get(role) == up:
                return
            was = all(self._up.values())
            self._up[role] = up
            now = all(self._up.values())
            message = ""
            if not up:
                self._down = True
                self._dropped += len(self._queue)  # they would go to a dead connection
                self._queue.clear()
                self._queued_bytes = 0
                if not self._logged_down:  # lost, or not reachable from the start
                    self._logged_down = True
                    message = "lost its connection" if was else "is unreachable"
            elif now:
                self._down = False
                message = "reconnected" if self._logged_down else "connected"
                self._logged_down = False
        if not up and message:
            log.warning("Redis at %s %s (%s): broadcasts stay on this server until it is "
                        "back", self.url, message, error or "no answer")
        elif message:
            log.info("Redis at %s %s: broadcasting on channel %r", self.url, message,
                     self.channel)

    def _backoff(self, delay: float) -> float:
        """Sleep ``delay`` (cut short by close); the next, doubled delay."""
        self._closing.wait(delay)
        return min(delay * 2, BACKOFF_MAX)

    # -- the publisher thread -----------------------------------------------------------------

    def _publisher(self) -> None:
        errors = self._redis.RedisError, OSError
        client: Any = None
        delay = BACKOFF_FIRST
        last_io = 0.0
        while not self._closing.is_set():
            if client is None:
                try:
                    client = self._client()
                    client.ping()
                except errors as exc:
                    self._close_client(client)
                    client = None
                    self._set_up(_PUBLISHER, False, exc)
                    delay = self._backoff(delay)
                    continue
                delay = BACKOFF_FIRST
                last_io = time.monotonic()
                self._set_up(_PUBLISHER, True)
            batch = self._take(timeout=self.health_interval)
            try:
                if time.monotonic() - last_io >= self.health_interval:
                    client.ping()  # an idle connection may have died quietly
                if batch:
                    pipe = client.pipeline(transaction=False)
                    for record in batch:
                        pipe.publish(self.channel, record)
                    pipe.execute()
                    with self._cond:
                        self._published += len(batch)
                last_io = time.monotonic()
            except errors as exc:
                with self._cond:
                    self._dropped += len(batch)
                self._close_client(client)
                client = None
                self._set_up(_PUBLISHER, False, exc)
                delay = self._backoff(delay)
        self._close_client(client)

    def _take(self, timeout: float) -> List[bytes]:
        """Up to ``_BATCH`` queued records, in order (waits up to ``timeout`` for one)."""
        with self._cond:
            if not self._queue and not self._closing.is_set():
                self._cond.wait(timeout)
            queue = self._queue
            batch = [queue.popleft() for _ in range(min(len(queue), _BATCH))]
            self._queued_bytes -= sum(map(len, batch))
            return batch

    @staticmethod
    def _close_client(client: Any) -> None:
        if client is not None:
            try:
                client.close()
            except Exception:  # closing a broken connection: nothing left to do
                pass

    # -- the subscriber thread ----------------------------------------------------------------

    def _subscriber(self) -> None:
        errors = self._redis.RedisError, OSError
        delay = BACKOFF_FIRST
        while not self._closing.is_set():
            client: Any = None
            pubsub: Any = None
            try:
                client = self._client()
                pubsub = client.pubsub()
                pubsub.subscribe(self.channel)
                self._confirm(pubsub)
                delay = BACKOFF_FIRST
                self._set_up(_SUBSCRIBER, True)
                self._listen(pubsub)
            except errors as exc:
                self._set_up(_SUBSCRIBER, False, exc)
                delay = self._backoff(delay)
            finally:
                if pubsub is not None:
                    try:
                        pubsub.close()
                    except Exception:  # a broken connection: nothing left to do
                        pass
                self._close_client(client)

    def _confirm(self, pubsub: Any) -> None:
        """Wait for Redis to confirm the subscription: a connection that takes
        no commands (a stopped server accepts TCP) fails here, not silently."""
        deadline = time.monotonic() + self.socket_timeout
        while not self._closing.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                raise self._redis.TimeoutError("no answer to SUBSCRIBE")
            message = pubsub.get_message(timeout=min(left, _POLL))
            if message is not None and message.get("type") == "subscribe":
                return

    def _listen(self, pubsub: Any) -> None:
        """Deliver messages until close; raises when the connection fails or
        stays silent (no answer to a ping within ``socket_timeout``)."""
        deliver = self._deliver
        assert deliver is not None
        last_heard = time.monotonic()
        pinged = False
        while not self._closing.is_set():
            message = pubsub.get_message(timeout=min(_POLL, self.health_interval))
            now = time.monotonic()
            if message is None:
                if pinged and now - last_heard >= self.health_interval + self.socket_timeout:
                    raise self._redis.TimeoutError("no answer to PING")
                if not pinged and now - last_heard >= self.health_interval:
                    pubsub.ping()
                    pinged = True
                continue
            last_heard, pinged = now, False
            if message.get("type") == "message":
                with self._cond:
                    self._received += 1
                try:
                    deliver(message["data"])
                except Exception:  # the server's fault, not Redis's: keep listening
                    log.exception("delivering a broadcast from Redis failed")
