"""README's Troubleshooting section lists every message the start-up code can end with.

The messages are read from the source (``CliError(...)`` in the command line and
the application loader, the sentences of ``_startup.bind_error``): each one's
longest fixed piece must appear in the section, so a new message cannot be
added without saying there what it means and what to do.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Iterator, List

ROOT = Path(__file__).resolve().parents[2]


def troubleshooting() -> str:
    text = (ROOT / "README.rst").read_text(encoding="utf-8")
    start = text.index("\nTroubleshooting\n====")
    end = text.index("\n====", start + 20)
    return re.sub(r"\s+", " ", text[start:text.rindex("\n", 0, end)])


def pieces(node: ast.expr) -> List[str]:
    """The fixed text of a message expression (an f-string's literal parts)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.JoinedStr):
        return [part.value for part in node.values
                if isinstance(part, ast.Constant) and isinstance(part.value, str)]
    if isinstance(node, ast.BinOp):
        return pieces(node.left) + pieces(node.right)
    return []


def is_message(node: ast.stmt) -> bool:
    """``text = ...`` (bind_error's sentences) or ``return f"..."`` (built messages)."""
    if isinstance(node, ast.Assign):
        return any(isinstance(t, ast.Name) and t.id == "text" for t in node.targets)
    return isinstance(node, ast.Return) and isinstance(node.value, ast.JoinedStr)


def messages(module: str) -> Iterator[str]:
    tree = ast.parse((ROOT / "wssync" / module).read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        found: List[str] = []
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
                and node.func.id == "CliError" and node.args:
            found = pieces(node.args[0])
        elif isinstance(node, (ast.Assign, ast.Return)) and is_message(node):
            assert node.value is not None
            found = pieces(node.value)
        # The longest fixed piece names the message; short ones (": ") say nothing.
        words = sorted((re.sub(r"\s+", " ", p).strip(" :;(") for p in found), key=len)
        if words and len(words[-1]) >= 12:
            yield words[-1]


def test_every_start_up_message_is_in_troubleshooting() -> None:
    section = troubleshooting()
    wanted = {message for module in ("cli.py", "_boot.py", "_startup.py")
              for message in messages(module)}
    assert len(wanted) >= 15  # the reading works
    missing = sorted(message for message in wanted if message not in section)
    assert missing == []
