"""``Config`` and the one table of settings it shares with the CLI and README.rst."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Dict

import pytest

from wssync.config import SETTINGS, Config

README = Path(__file__).resolve().parent.parent / "README.rst"
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
        if number in ("True", "False"):
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
