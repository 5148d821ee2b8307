"""The floors of the house, enforced: which subpackage may import which, no import
circles, and no module over 500 lines.

Read from the source with ``ast`` (nothing is imported).  Imports under
``if TYPE_CHECKING:`` are for the type checker only and are free; every other
import counts, lazy ones inside functions too, since a circle closed at run time
is still a circle.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, Iterator, List, Set

PACKAGE = Path(__file__).resolve().parents[2] / "wssync"
MAX_LINES = 500

# Each floor and the floors it may import.  Lower floors never import higher ones.
FLOORS: Dict[str, Set[str]] = {
    "base": {"base"},
    "io": {"base", "io"},
    "edge": {"base", "io", "edge"},
    "http": {"base", "io", "edge", "http"},
    "websocket": {"base", "io", "http", "websocket"},
    "scale": {"base", "io", "scale"},
    "client": {"base", "http", "websocket", "client"},
    "app": {"base", "io", "edge", "http", "websocket", "scale", "app"},
    "face": {"base", "io", "edge", "http", "websocket", "scale", "app", "client", "face"},
}
BASE = {"config", "errors", "contract", "_version", "_speedups", "metrics"}
APP = {"app", "bridge", "hub", "flask", "socketio", "socketio_polling", "sticky"}
# wssync.locust is on the face floor: it composes the client with Locust, and the app
# floor (server side) may not import the client.


def floor(module: str) -> str:
    """The floor of ``module`` (a dotted name below ``wssync``)."""
    head = module.split(".")[0]
    if head in ("io", "edge", "http", "websocket", "scale", "client"):
        return head
    if head in BASE:
        return "base"
    if head in APP:
        return "app"
    return "face"  # server, cli, demo, the package itself and its public re-exports


def modules() -> Dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _runtime_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node except what sits under ``if TYPE_CHECKING:``."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for other in node.orelse:
                yield other
                yield from _runtime_nodes(other)
            continue
        yield node
        yield from _runtime_nodes(node)


def imports(module: str, path: Path, known: Dict[str, Path]) -> Set[str]:
    """The wssync modules ``module`` imports at run time (dotted, below ``wssync``)."""
    is_package = path.name == "__init__.py"
    package = module.split(".") if is_package else module.split(".")[:-1]
    if module == "":
        package = []
    found: Set[str] = set()
    for node in _runtime_nodes(ast.parse(path.read_text(encoding="utf-8"))):
        targets: List[str] = []
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                stem = ".".join(base + (node.module.split(".") if node.module else []))
            elif node.module and node.module.split(".")[0] == "wssync":
                stem = node.module[len("wssync."):] if "." in node.module else ""
            else:
                continue
            for alias in node.names:
                name = f"{stem}.{alias.name}".lstrip(".")
                targets.append(name if name in known else stem)
        elif isinstance(node, ast.Import):
            targets = [a.name[len("wssync."):] for a in node.names
                       if a.name.startswith("wssync.")]
        found.update(t for t in targets if t in known and t != module)
    return found


def graph() -> Dict[str, Set[str]]:
    known = modules()
    return {module: imports(module, path, known) for module, path in known.items()}


def test_every_module_imports_only_its_own_floor_and_below() -> None:
    wrong = []
    for module, targets in graph().items():
        allowed = FLOORS[floor(module)]
        for target in targets:
            # A subpackage's __init__ is its docstring: importing it is importing nothing.
            if floor(target) not in allowed:
                wrong.append(f"{module} ({floor(module)}) imports {target} ({floor(target)})")
    assert not wrong, "\n".join(sorted(wrong))


def test_no_import_circles() -> None:
    edges = graph()
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    circles: List[List[str]] = []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in edges[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for node in edges:
        if node not in index:
            visit(node)
    assert not circles, circles


def test_no_module_is_over_the_size_limit() -> None:
    sizes = {module: len(path.read_text(encoding="utf-8").splitlines())
             for module, path in modules().items()}
    assert {m: n for m, n in sizes.items() if n > MAX_LINES} == {}


def test_the_checker_sees_relative_lazy_and_package_imports() -> None:
    """The rules above would pass vacuously if imports went unseen."""
    edges = graph()
    assert "io.reactor" in edges["io.transport"]
    assert "http.parser" in edges["http.connection"]
    assert floor("server") == "face" and floor("io.tls") == "io" and floor("errors") == "base"
    assert "server" in edges[""]  # wssync/__init__.py
