"""The broadcast record: what travels between servers through a broker."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wssync._startup import broker_from
from wssync.scale.broker import MAX_PATH, decode_record, encode_record, new_origin


@given(st.one_of(st.none(), st.text(max_size=50)), st.one_of(st.text(), st.binary()))
def test_a_record_decodes_to_what_was_encoded(path, message):
    origin = new_origin()
    assert decode_record(encode_record(origin, path, message)) == (origin, path, message)


def test_origins_differ():
    assert new_origin() != new_origin()


@pytest.mark.parametrize("record", [
    b"",                                                   # no header
    b"12345678\x01\x00",                                   # header cut short
    b"12345678\x01\x00\x05ab",                             # path longer than the record
    b"12345678\x03\xff\xffpayload",                        # unknown kind
    b"12345678\x01\xff\xff\xff\xfe",                       # text that is not UTF-8
])
def test_malformed_records_are_refused(record):
    with pytest.raises(ValueError):
        decode_record(record)


def test_a_path_too_long_is_refused():
    with pytest.raises(ValueError):
        encode_record(new_origin(), "x" * (MAX_PATH + 1), "m")


def test_an_unknown_broker_url_is_refused():
    with pytest.raises(ValueError, match="redis://"):
        broker_from("kafka://localhost:9092")
