"""The relay between a supervisor and its workers: framing on bytes, and the hub
with worker links on real socketpairs and a real reactor."""

from __future__ import annotations

import socket
import threading
from typing import Any, Dict, Iterator, List, Tuple

import pytest
from helpers import wait_until

from wssync.io.reactor import Reactor
from wssync.scale.relay import (
    READY,
    RECORD,
    RELAY_BUFFER,
    STATS,
    FrameReader,
    RelayHub,
    WorkerLink,
    encode_frame,
)


def test_frames_split_anywhere_come_out_whole() -> None:
    stream = encode_frame(RECORD, b"one") + encode_frame(STATS, b"{}") + \
        encode_frame(READY, b"")
    reader = FrameReader(max_body=100)
    frames: List[Tuple[int, bytes]] = []
    for i in range(len(stream)):
        frames += reader.feed(stream[i:i + 1])
    assert frames == [(RECORD, b"one"), (STATS, b"{}"), (READY, b"")]


@pytest.mark.parametrize("data", [encode_frame(RECORD, b"x" * 101), b"\x09\x00\x00\x00\x00"])
def test_a_corrupt_stream_is_refused(data: bytes) -> None:
    with pytest.raises(ValueError):
        FrameReader(max_body=100).feed(data)


class Relay:
    """A hub and three worker links, each end on its own real reactor thread."""

    def __init__(self) -> None:
        self.hub_reactor = Reactor()
        self.ready: List[int] = []
        self.hub = RelayHub(self.hub_reactor, 1 << 20, lambda pid, info: self.ready.append(pid))
        self.reactors = [self.hub_reactor]
        self.links: List[WorkerLink] = []
        self.delivered: Dict[int, List[bytes]] = {}
        for pid in (1, 2, 3):
            ours, theirs = socket.socketpair()
            self.hub.attach(pid, ours)
            reactor = Reactor()
            self.reactors.append(reactor)
            link = WorkerLink(reactor, theirs, 1 << 20, lambda: None)
            self.delivered[pid] = []
            link.start(self.delivered[pid].append)
            self.links.append(link)
        self.threads = [threading.Thread(target=r.run) for r in self.reactors]
        for thread in self.threads:
            thread.start()

    def on(self, index: int, fn: Any, *args: Any) -> None:
        """Run ``fn`` on link ``index``'s reactor (0 is the hub's) and wait for it."""
        done = threading.Event()

        def run() -> None:
            fn(*args)
            done.set()

        self.reactors[index].call_soon_threadsafe(run)
        assert done.wait(5)

    def close(self) -> None:
        for reactor in self.reactors:
            reactor.stop()
        for thread in self.threads:
            thread.join(5)
        for reactor in self.reactors:
            reactor.close()


@pytest.fixture
def relay() -> Iterator[Relay]:
    r = Relay()
    yield r
    r.close()


def test_records_reach_every_other_worker_in_order(relay: Relay) -> None:
    records = [f"record {n}".encode() for n in range(200)]
    for record in records:
        relay.on(1, relay.links[0].publish, record)
    assert wait_until(lambda: len(relay.delivered[2]) == len(relay.delivered[3]) == 200)
    assert relay.delivered[2] == relay.delivered[3] == records
    assert relay.delivered[1] == []  # not back to its publisher
    assert relay.links[0].stats()["published"] == 200
    assert relay.links[1].stats()["received"] == 200


def test_ready_and_statistics_go_up_and_the_table_comes_down(relay: Relay) -> None:
    relay.on(2, relay.links[1].ready, {"pid": 2})
    relay.on(2, relay.links[1].report, {"connections": 7})
    assert wait_until(lambda: relay.ready == [2] and relay.hub.counts.get(2) == {"connections": 7})
    relay.on(0, relay.hub.send_view, {"workers": [{"pid": 2}]})
    assert wait_until(lambda: all(link.view == {"workers": [{"pid": 2}]}
                                for link in relay.links))


def test_a_worker_far_behind_misses_records_counted_not_queued() -> None:
    hub_reactor = Reactor()
    hub = RelayHub(hub_reactor, 1 << 20, lambda pid, info: None)
    publisher_end, publisher_hub_end = socket.socketpair()
    stuck_hub_end, stuck_end = socket.socketpair()  # nobody reads stuck_end
    hub.attach(1, publisher_hub_end)
    hub.attach(2, stuck_hub_end)
    record = b"x" * (1 << 20)
    try:
        publisher_end.setblocking(False)
        for _ in range(RELAY_BUFFER // len(record) + 8):
            frame = encode_frame(RECORD, record)
            view = memoryview(frame)
            while view:
                try:
                    view = view[publisher_end.send(view):]
                except BlockingIOError:
                    hub_reactor.call_later(0.01, hub_reactor.stop)
                    hub_reactor.run()
        for _ in range(50):
            hub_reactor.call_later(0.01, hub_reactor.stop)
            hub_reactor.run()
        assert hub.dropped >= 1
        assert hub.relayed == RELAY_BUFFER // len(record) + 8
    finally:
        hub.close_all()
        hub_reactor.close()
        for sock in (publisher_end, stuck_end):
            sock.close()
