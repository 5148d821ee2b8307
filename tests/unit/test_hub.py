"""``Hub`` without sockets: the WebSocket registry, broadcast to a path, broker records
and counts.

Each WebSocket is a real ``WebSocketConnection`` on a :class:`RecordingTransport`
with a real handle; a real reactor (run from the test's thread) takes the
broadcasts the hub hands over, and a recording broker stands in for Redis.
"""

from __future__ import annotations

import threading
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pytest

from tests.helpers import RecordingTransport
from wssync.config import Config
from wssync.http.request import Headers, Request
from wssync.hub import Hub
from wssync.io.pacing import OutputGate
from wssync.io.reactor import BoundedHandoff, Reactor
from wssync.scale.broker import Deliver, decode_record, encode_record, new_origin
from wssync.websocket.connection import WebSocketConnection
from wssync.websocket.frames import Frame, FrameParser, Opcode
from wssync.websocket.handle import WebSocket


class NullApp:
    """The application side of a WebSocket that nobody listens to."""

    def opened(self, conn: Any) -> None: ...
    def message(self, data: Any) -> None: ...
    def closed(self, code: int, reason: str) -> None: ...
    def after_pending(self, fn: Any) -> None: fn()
    def pause_writing(self) -> None: ...
    def resume_writing(self) -> None: ...


class RecordingBroker:
    """A broker that keeps what is published and lets the test deliver records."""

    def __init__(self) -> None:
        self.published: List[bytes] = []
        self.deliver: Optional[Deliver] = None
        self.closed = False

    def start(self, deliver: Deliver) -> None:
        self.deliver = deliver

    def publish(self, record: bytes) -> None:
        self.published.append(record)

    def close(self) -> None:
        self.closed = True

    def stats(self) -> Dict[str, Any]:
        return {"broker": "test", "published": len(self.published), "received": 0,
                "dropped": 7}


@pytest.fixture
def reactor() -> Iterator[Reactor]:
    reactor = Reactor()
    yield reactor
    reactor.close()


@pytest.fixture
def handoff(reactor: Reactor) -> Iterator[BoundedHandoff]:
    handoff = BoundedHandoff(reactor, Config().max_send_queue)
    yield handoff
    handoff.close()


def open_websocket(hub: Hub, handoff: BoundedHandoff,
                   path: str) -> Tuple[WebSocketConnection, RecordingTransport, WebSocket]:
    """A WebSocket on ``path`` that has just opened, registered with ``hub``."""
    config = Config(ping_interval=0)
    conn = WebSocketConnection(config, NullApp())
    transport = RecordingTransport(handoff.reactor, conn)
    conn.connection_made(transport)
    request = Request("GET", path, "HTTP/1.1", Headers([("Host", "example.com")]))
    handle = WebSocket(handoff, conn, request, None, OutputGate(config.write_high_water))
    hub.add(conn, handle)
    return conn, transport, handle


def received(transport: RecordingTransport) -> List[str]:
    """The text messages written to ``transport`` (the server's frames, unmasked)."""
    parser = FrameParser(expect_masked=False)
    parser.feed(b"".join(data for kind, data in transport.events if kind == "write"))
    frames: List[Frame] = []
    while (frame := parser.next_frame()) is not None:
        frames.append(frame)
    return [frame.payload.decode() for frame in frames if frame.opcode == Opcode.TEXT]


def run_handed_over(transport: RecordingTransport) -> None:
    """Let the reactor run what was handed to it (the test thread is not the reactor)."""
    transport.run_until(lambda: False, timeout=0.05)


# -- the registry ---------------------------------------------------------------------


def test_add_and_remove_keep_the_registry(handoff: BoundedHandoff) -> None:
    hub = Hub()
    assert hub.websockets == [] and len(hub) == 0
    first, _, first_handle = open_websocket(hub, handoff, "/chat")
    second, _, second_handle = open_websocket(hub, handoff, "/chat")
    assert hub.websockets == [first_handle, second_handle] and len(hub) == 2
    hub.remove(first)
    assert hub.websockets == [second_handle]
    hub.remove(first)  # twice (or never added): nothing happens
    hub.remove(second)
    assert hub.websockets == [] and len(hub) == 0


def test_websockets_is_a_snapshot(handoff: BoundedHandoff) -> None:
    hub = Hub()
    conn, _, _ = open_websocket(hub, handoff, "/chat")
    snapshot = hub.websockets
    hub.remove(conn)
    assert len(snapshot) == 1 and hub.websockets == []


# -- broadcast ------------------------------------------------------------------------


def test_broadcast_to_a_path_reaches_only_that_path(handoff: BoundedHandoff) -> None:
    hub = Hub()
    hub.start(handoff)
    _, chat_a, _ = open_websocket(hub, handoff, "/chat")
    _, chat_b, _ = open_websocket(hub, handoff, "/chat")
    _, other, _ = open_websocket(hub, handoff, "/other")
    hub.broadcast("to the room", path="/chat")
    hub.broadcast("nobody there", path="/nowhere")
    hub.broadcast("to everyone")
    run_handed_over(chat_a)
    assert received(chat_a) == ["to the room", "to everyone"]
    assert received(chat_b) == ["to the room", "to everyone"]
    assert received(other) == ["to everyone"]


def test_a_removed_websocket_gets_no_broadcast(handoff: BoundedHandoff) -> None:
    hub = Hub()
    hub.start(handoff)
    conn, transport, _ = open_websocket(hub, handoff, "/chat")
    hub.remove(conn)
    hub.broadcast("after it left")
    run_handed_over(transport)
    assert received(transport) == []


def test_broadcast_refuses_what_is_not_a_message(handoff: BoundedHandoff) -> None:
    hub = Hub()
    hub.start(handoff)
    with pytest.raises(TypeError, match="not int"):
        hub.broadcast(42)  # type: ignore[arg-type]


def test_broadcast_before_serving_and_after_close_does_nothing(handoff: BoundedHandoff) -> None:
    hub = Hub()
    _, transport, _ = open_websocket(hub, handoff, "/chat")
    hub.broadcast("too early")
    broker = RecordingBroker()
    hub.start(handoff, broker)
    hub.close()
    assert broker.closed
    hub.broadcast("too late")
    run_handed_over(transport)
    assert received(transport) == [] and broker.published == []


# -- the broker -----------------------------------------------------------------------


def test_a_broadcast_is_published_once_as_a_record(handoff: BoundedHandoff) -> None:
    hub = Hub()
    broker = RecordingBroker()
    hub.start(handoff, broker)
    _, transport, _ = open_websocket(hub, handoff, "/chat")
    hub.broadcast("hello", path="/chat")
    run_handed_over(transport)
    assert received(transport) == ["hello"]
    [record] = broker.published
    _origin, path, message = decode_record(record)
    assert (path, message) == ("/chat", "hello")


def test_records_from_other_servers_are_fanned_out_and_our_own_are_not(
        handoff: BoundedHandoff) -> None:
    hub = Hub()
    broker = RecordingBroker()
    hub.start(handoff, broker)
    _, transport, _ = open_websocket(hub, handoff, "/chat")
    hub.broadcast("mine")
    run_handed_over(transport)
    [own] = broker.published
    assert broker.deliver is not None
    # From another thread, as a broker's subscriber delivers.
    records = [own, encode_record(new_origin(), "/chat", "theirs"), b"garbage",
               encode_record(new_origin(), "/other", "not here")]
    deliver = broker.deliver

    def subscriber() -> None:
        for record in records:
            deliver(record)

    thread = threading.Thread(target=subscriber)
    thread.start()
    thread.join(10)
    run_handed_over(transport)
    assert received(transport) == ["mine", "theirs"]  # our own came back and was dropped


# -- counts ---------------------------------------------------------------------------


def test_counts_split_connections_into_http_and_websocket(handoff: BoundedHandoff) -> None:
    hub = Hub()
    open_websocket(hub, handoff, "/chat")
    open_websocket(hub, handoff, "/chat")
    counts = hub.counts(5)
    assert counts["connections"] == 5 and counts["websocket"] == 2 and counts["http"] == 3
    assert counts["worker"] is None and counts["dropped"] == 0
    assert isinstance(counts["pid"], int)
    stats = hub.stats(5)
    assert stats["broker"] is None and stats["cluster"] is None
    assert {key: stats[key] for key in counts} == counts


def test_stats_carry_the_brokers_counters_and_the_worker_index(
        handoff: BoundedHandoff) -> None:
    hub = Hub()
    hub.worker = 3
    broker = RecordingBroker()
    hub.start(handoff, broker)
    stats = hub.stats(0)
    assert stats["worker"] == 3
    assert stats["broker"] == broker.stats() and stats["dropped"] == 7
