"""Shared fixtures: real servers on loopback port 0, always stopped after the test."""

from __future__ import annotations

import threading
from typing import Any, Callable, Iterator, List

import pytest

from wssync import App, Server


@pytest.fixture(params=[0, 4], ids=["reactor", "threads"])
def threads(request: pytest.FixtureRequest) -> int:
    """Run the test once in reactor mode and once in thread-pool mode."""
    return int(request.param)


@pytest.fixture
def start_server() -> Iterator[Callable[..., Server]]:
    """``start_server(app, threads=0, **settings)`` -> a started Server on 127.0.0.1:0."""
    servers: List[Server] = []

    def start(app: App, threads: int = 0, host: str = "127.0.0.1", **settings: Any) -> Server:
        server = Server(app, host, 0, threads=threads, **settings)
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop(timeout=10)


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    """Every test must leave no server thread behind."""
    before = set(threading.enumerate())
    yield
    leaked = [t for t in threading.enumerate()
              if t not in before and t.name.startswith("wssync") and t.is_alive()]
    for thread in leaked:
        thread.join(3)
    leaked = [t for t in leaked if t.is_alive()]
    assert not leaked, f"threads left running: {leaked}"
