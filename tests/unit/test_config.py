"""``Config`` and the one table of settings it shares with the CLI and README.rst."""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from typing import Any, Dict

import pytest

from wssync.client import connect
from wssync.config import SETTINGS, Config, default
from wssync.http.parser import RequestParser
from wssync.websocket.frames import FrameParser
from wssync.websocket.protocol import WebSocketProtocol

README = Path(__file__).resolve().parents[2] / "README.rst"
_UNITS = {"bytes": 1, "KiB": 1024, "MiB": 1024 ** 2, "GiB": 1024 ** 3, "s": 1}


def _readme_defaults() -> Dict[str, Any]:
    text = README.read_text(encoding="utf-8")
    section = text.split("Limits and defaults\n===", 1)[1]
    borders = [m.start() for m in re.finditer(r"^=+  =+  =+$", section, re.M)]
    body = section[borders[1]:borders[2]]  # between the header's rule and the last one
    rows = re.findall(r"^``(\w+)``\s+(\S+(?: (?:bytes|KiB|MiB|GiB|s)\b)?)", body, re.M)
    out: Dict[str, Any] = {}
    for name, cell in rows:
        number, _, unit = cell.partition(" ")
        if SETTINGS.get(name, SETTINGS["backlog"]).kind == "text":
            out[name] = cell.strip('"')  # ("": empty)
        elif number in ("True", "False"):
            out[name] = number == "True"
        else:
            out[name] = float(number) * _UNITS[unit or "bytes"]
    return out


def test_readme_table_lists_every_setting_with_its_default() -> None:
    documented = _readme_defaults()
    assert list(documented) == list(SETTINGS)
    for name, setting in SETTINGS.items():
        assert documented[name] == setting.default, name


def test_defaults_and_overrides() -> None:
    config = Config(max_write_buffer=1024, compression=False, ping_interval=None)
    assert config.max_write_buffer == 1024
    assert config.compression is False
    assert config.ping_interval == SETTINGS["ping_interval"].default  # None: the default
    assert config.max_queue == 16
    assert Config().max_send_queue == SETTINGS["max_send_queue"].default


@pytest.mark.parametrize("settings, error", [
    ({"max_wirte_buffer": 1}, TypeError),
    ({"send_timeout": -1}, ValueError),
    ({"max_queue": 0}, ValueError),
    ({"compression": 1}, ValueError),
    ({"max_headers": True}, ValueError),
    ({"max_body_size": "10"}, ValueError),
])
def test_bad_settings_are_refused(settings: Dict[str, Any], error: type) -> None:
    with pytest.raises(error):
        Config(**settings)


# -- validation -----------------------------------------------------------------------


@pytest.mark.parametrize("name, low, high", [
    ("compression_window_bits", 9, 15),
    ("compression_client_window_bits", 8, 15),
    ("compression_level", 0, 9),
    ("compression_mem_level", 1, 9),
])
def test_compression_settings_take_zlib_ranges(name: str, low: int, high: int) -> None:
    assert getattr(Config(**{name: low}), name) == low
    assert getattr(Config(**{name: high}), name) == high
    for bad in (low - 1, high + 1):
        with pytest.raises(ValueError, match=name):
            Config(**{name: bad})


def test_unknown_settings_are_named_in_the_type_error() -> None:
    with pytest.raises(TypeError, match="max_frame, ping_intervall"):
        Config(ping_intervall=1, max_frame=2, max_queue=4)


@pytest.mark.parametrize("name, value", [
    ("max_body_size", -1),
    ("max_connections", -1),
    ("keepalive_timeout", -0.5),
    ("ping_interval", -1.0),
])
def test_negative_numbers_are_refused_by_name(name: str, value: float) -> None:
    with pytest.raises(ValueError, match=name):
        Config(**{name: value})


def test_zero_is_a_valid_number() -> None:
    config = Config(ping_interval=0, max_connections=0, compression_level=0)
    assert config.ping_interval == 0.0 and isinstance(config.ping_interval, float)
    assert config.max_connections == 0


@pytest.mark.parametrize("value", [True, False])
def test_flags_take_bools(value: bool) -> None:
    assert Config(compression=value).compression is value


@pytest.mark.parametrize("value", [0, "false", "True", 1.0])
def test_flags_refuse_anything_but_bools(value: Any) -> None:
    with pytest.raises(ValueError, match="compression"):
        Config(compression=value)


def test_numbers_are_stored_as_the_kind_of_their_default() -> None:
    config = Config(max_body_size=2048.0, send_timeout=3)
    assert config.max_body_size == 2048 and type(config.max_body_size) is int
    assert config.send_timeout == 3.0 and type(config.send_timeout) is float


def test_a_plain_config_holds_every_default() -> None:
    config = Config()
    for name, setting in SETTINGS.items():
        value = getattr(config, name)
        assert value == setting.default, name
        assert type(value) is type(setting.default), name


@pytest.mark.parametrize("name", list(SETTINGS))
def test_default_is_the_settings_default(name: str) -> None:
    assert default(name) == SETTINGS[name].default


def test_default_of_an_unknown_name_is_a_key_error() -> None:
    with pytest.raises(KeyError):
        default("max_frame")


# -- the Sans-I/O layers take their defaults from SETTINGS ----------------------------


def test_sans_io_layers_default_to_the_settings() -> None:
    max_message_size = SETTINGS["max_message_size"].default
    assert FrameParser().max_size == max_message_size
    assert FrameParser(expect_masked=False).max_size == max_message_size
    assert WebSocketProtocol().max_message_size == max_message_size
    assert WebSocketProtocol(client=True).max_message_size == max_message_size
    parameter = inspect.signature(connect).parameters["max_message_size"]
    assert parameter.default == max_message_size


def test_request_parser_defaults_to_the_settings() -> None:
    limits = RequestParser().limits
    for name in ("max_body_size", "max_header_size", "max_headers", "max_request_line"):
        assert getattr(limits, name) == SETTINGS[name].default, name


@pytest.mark.parametrize("value", [float("inf"), float("nan"), float("-inf")])
def test_infinite_or_nan_seconds_are_refused(value: float) -> None:
    with pytest.raises(ValueError, match="ping_interval"):
        Config(ping_interval=value)
