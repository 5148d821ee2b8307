"""Unit tests for ``wssync.http.body.BodyStream``: the bounded pipe between the reactor
(which feeds a request body) and the thread reading it as ``wsgi.input``."""

from __future__ import annotations

import threading
from typing import List

import pytest
from helpers import wait_until

from wssync.errors import RequestBodyError
from wssync.http.body import BodyStream


def make(capacity: int = 1024) -> tuple[BodyStream, List[BodyStream]]:
    asked: List[BodyStream] = []
    return BodyStream(capacity, 10.0, asked.append), asked


def test_file_methods_over_pieces() -> None:
    stream, _ = make()
    for piece in (b"line one\nli", b"ne two\n", b"tail"):
        stream.feed(piece)
    stream.end()
    assert stream.readline() == b"line one\n"
    assert stream.readline(3) == b"lin"
    assert stream.read(6) == b"e two\n"
    assert list(stream) == [b"tail"]
    assert stream.read() == b"" and stream.read(10) == b""


def test_read_and_readinto_wait_for_full_sizes() -> None:
    stream, _ = make()
    stream.feed(b"ab")
    stream.feed(b"cd")
    buffer = bytearray(3)
    assert stream.readinto(buffer) == 3 and bytes(buffer) == b"abc"
    stream.feed(b"ef")
    stream.end()
    assert stream.read(10) == b"def"  # fewer only at the end


def test_a_reader_blocks_until_bytes_arrive_and_asks_the_reactor_once() -> None:
    stream, asked = make()
    got: List[bytes] = []
    reader = threading.Thread(target=lambda: got.append(stream.read(5)))
    reader.start()
    assert wait_until(lambda: asked == [stream])  # the first wait asks (100 Continue)
    stream.feed(b"12")
    stream.feed(b"345")
    reader.join(10)
    assert got == [b"12345"] and asked == [stream]


def test_a_full_stream_asks_again_once_half_is_read() -> None:
    stream, asked = make(capacity=8)
    stream.feed(b"12345678")
    assert stream.room() == 0
    assert stream.stop_filling()
    assert stream.read(2) == b"12" and asked == []  # still more than half full
    assert stream.read(2) == b"34" and asked == [stream]


def test_failure_wakes_a_waiting_reader_and_every_later_read_raises() -> None:
    stream, _ = make()
    errors: List[BaseException] = []

    def read() -> None:
        try:
            stream.read(10)
        except RequestBodyError as exc:
            errors.append(exc)

    reader = threading.Thread(target=read)
    reader.start()
    stream.feed(b"abc")
    stream.fail(RequestBodyError(400, "the client went away"))
    reader.join(10)
    assert len(errors) == 1 and isinstance(errors[0], OSError)
    with pytest.raises(RequestBodyError):
        stream.readline()


def test_discard_ends_the_body_for_the_reader() -> None:
    stream, _ = make()
    stream.feed(b"unread")
    stream.discard()
    assert stream.read() == b"" and stream.room() == stream.capacity


def test_a_wait_without_bytes_is_bounded() -> None:
    stream = BodyStream(16, 0.05, lambda _stream: None)
    with pytest.raises(RequestBodyError) as info:
        stream.read(1)
    assert info.value.status == 408

