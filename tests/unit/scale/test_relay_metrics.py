"""The supervisor's sum of its workers' metrics: reports travel over the relay
beside the counts (not into the table sent back down), and a worker gone
leaves its counters behind, never its gauges."""

from __future__ import annotations

from typing import Any, Dict, Iterator

import pytest
from helpers import wait_until
from test_relay import Relay

from wssync.metrics import labels


@pytest.fixture
def relay() -> Iterator[Relay]:
    r = Relay()
    yield r
    r.close()


def report(accepted: int, open_http: int) -> Dict[str, Any]:
    return {"connections": open_http, "metrics": {
        "wssync_connections_accepted_total": {"": accepted},
        "wssync_http_requests_total": {labels(method="GET", status=200): accepted},
        "wssync_open_connections": {labels(protocol="http"): open_http},
        "wssync_broker_up": {"": 1},
        "wssync_broker_records_dropped_total": {"": 1},
    }}


def test_the_supervisor_sums_live_workers_and_keeps_what_gone_ones_counted(
        relay: Relay) -> None:
    relay.on(1, relay.links[0].report, report(10, 2))
    relay.on(2, relay.links[1].report, report(5, 1))
    assert wait_until(lambda: len(relay.hub.metrics) == 2)
    assert relay.hub.counts[1] == {"connections": 2}  # (the table stays small)
    total = relay.hub.cluster_metrics(restarts=0, workers=2)
    assert total["wssync_connections_accepted_total"] == {"": 15}
    assert total["wssync_open_connections"] == {labels(protocol="http"): 3}
    assert total["wssync_broker_up"] == {"": 1}
    assert total["wssync_broker_records_dropped_total"] == {"": 2}
    assert total["wssync_workers"] == {"": 2}

    relay.on(0, relay.hub.detach, 1)  # worker 1 is gone
    total = relay.hub.cluster_metrics(restarts=1, workers=1)
    assert total["wssync_connections_accepted_total"] == {"": 15}
    assert total["wssync_http_requests_total"] == {labels(method="GET", status=200): 15}
    assert total["wssync_open_connections"] == {labels(protocol="http"): 1}
    assert total["wssync_worker_restarts_total"] == {"": 1}

    relay.on(3, relay.links[2].report, report(4, 0))  # its successor, from zero
    assert wait_until(lambda: 3 in relay.hub.metrics)
    total = relay.hub.cluster_metrics(restarts=1, workers=2)
    assert total["wssync_connections_accepted_total"] == {"": 19}
    assert total["wssync_broker_records_dropped_total"] == {"": 3}


def test_a_report_without_metrics_adds_nothing(relay: Relay) -> None:
    relay.on(1, relay.links[0].report, {"connections": 1})
    assert wait_until(lambda: 1 in relay.hub.counts)
    assert relay.hub.metrics == {}
    total = relay.hub.cluster_metrics(restarts=0, workers=3)
    assert total["wssync_workers"] == {"": 3}
    assert total["wssync_broker_records_dropped_total"] == {"": 0}
