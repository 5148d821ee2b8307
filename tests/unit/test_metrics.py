"""The counters of a serving run and their Prometheus exposition, without sockets:
what is counted, the bounded label sets, summing over workers, and the text
format as ``prometheus_client``'s own parser reads it."""

from __future__ import annotations

import re
from typing import Dict, Tuple

import pytest
from prometheus_client.parser import text_string_to_metric_families

from wssync.metrics import (
    CONTENT_TYPE,
    METHODS,
    SPECS,
    Metrics,
    Snapshot,
    close_label,
    combine,
    labels,
    render,
)

Samples = Dict[Tuple[str, Tuple[Tuple[str, str], ...]], float]


def parse(text: bytes) -> Tuple[Dict[str, str], Samples]:
    """(family name -> type, (sample name, sorted labels) -> value), by the
    reference parser: it raises on anything malformed."""
    types: Dict[str, str] = {}
    samples: Samples = {}
    for family in text_string_to_metric_families(text.decode()):
        types[family.name] = family.type
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return types, samples


def test_counts_render_as_prometheus_reads_them() -> None:
    metrics = Metrics()
    metrics.accepted += 3
    metrics.response("GET", 200)
    metrics.response("GET", 200)
    metrics.response("POST", 404)
    metrics.ws_in += 5
    metrics.ws_out += 7
    metrics.ws_bytes_in += 100
    metrics.ws_bytes_out += 200
    metrics.close_sent(1001)
    metrics.close_received(1000)
    metrics.handshake_refused(403)
    metrics.tls_failures["timeout"] += 2
    metrics.slow_drops["hard_limit"] += 1
    types, samples = parse(render(metrics.snapshot()))
    assert samples[("wssync_connections_accepted_total", ())] == 3
    assert samples[("wssync_http_requests_total",
                    (("method", "GET"), ("status", "200")))] == 2
    assert samples[("wssync_http_requests_total",
                    (("method", "POST"), ("status", "404")))] == 1
    assert samples[("wssync_websocket_messages_received_total", ())] == 5
    assert samples[("wssync_websocket_messages_sent_total", ())] == 7
    assert samples[("wssync_websocket_received_bytes_total", ())] == 100
    assert samples[("wssync_websocket_sent_bytes_total", ())] == 200
    assert samples[("wssync_websocket_closes_sent_total", (("code", "1001"),))] == 1
    assert samples[("wssync_websocket_closes_received_total", (("code", "1000"),))] == 1
    assert samples[("wssync_websocket_handshakes_refused_total", (("status", "403"),))] == 1
    assert samples[("wssync_tls_handshake_failures_total", (("reason", "timeout"),))] == 2
    assert samples[("wssync_tls_handshake_failures_total", (("reason", "error"),))] == 0
    assert samples[("wssync_slow_peers_dropped_total", (("reason", "hard_limit"),))] == 1
    assert types["wssync_http_requests"] == "counter"  # (the parser drops _total)


def test_every_metric_follows_the_naming_conventions() -> None:
    for name, spec in SPECS.items():
        assert re.fullmatch(r"wssync_[a-z_]+", name), name
        assert spec.kind in ("counter", "gauge")
        assert name.endswith("_total") == (spec.kind == "counter"), name
        if "bytes" in name:
            assert name.endswith(("_bytes", "_bytes_total")), name
        for label in spec.labels:
            assert re.fullmatch(r"[a-z_]+", label) and not label.startswith("__")
        assert spec.help and "\n" not in spec.help
    assert CONTENT_TYPE.startswith("text/plain; version=0.0.4")


def test_every_metric_has_help_and_type_lines() -> None:
    snapshot: Snapshot = {name: {"": 1} if not spec.labels else {}
                          for name, spec in SPECS.items()}
    text = render(snapshot).decode()
    for name, spec in SPECS.items():
        assert f"# HELP {name} " in text
        assert f"# TYPE {name} {spec.kind}\n" in text
    types, _samples = parse(render(snapshot))
    assert len(types) == len(SPECS)


def test_an_unlabelled_metric_without_a_value_is_left_out() -> None:
    text = render(Metrics().snapshot()).decode()
    assert "wssync_workers" not in text  # (a supervisor's: a single process has none)
    assert "wssync_broker_up" not in text
    assert "wssync_connections_accepted_total 0\n" in text


def test_methods_not_listed_share_one_label() -> None:
    metrics = Metrics()
    for method in (*METHODS, "BREW", "get", "X" * 1000):
        metrics.response(method, 200)
    _types, samples = parse(render(metrics.snapshot()))
    methods = {dict(key[1])["method"] for key in samples
               if key[0] == "wssync_http_requests_total"}
    assert methods == {*METHODS, "other"}
    assert samples[("wssync_http_requests_total",
                    (("method", "other"), ("status", "200")))] == 3


@pytest.mark.parametrize("code, label", [
    (1000, "1000"), (1001, "1001"), (1012, "1012"), (1015, "1015"), (3000, "3xxx"),
    (3999, "3xxx"), (4000, "4xxx"), (4999, "4xxx"), (999, "other"), (2000, "other"),
])
def test_close_codes_are_labelled_by_class_beyond_the_registered_ones(
        code: int, label: str) -> None:
    assert close_label(code) == label


def test_a_peer_cannot_grow_the_close_code_labels() -> None:
    metrics = Metrics()
    for code in range(3000, 5000):
        metrics.close_received(code)
    assert metrics.closes_in == {"3xxx": 1000, "4xxx": 1000}


def test_label_values_are_escaped() -> None:
    value = 'a "quoted" back\\slash\nnew line'
    snapshot: Snapshot = {"wssync_open_connections": {labels(protocol=value): 2}}
    _types, samples = parse(render(snapshot))
    assert samples[("wssync_open_connections", (("protocol", value),))] == 2


def test_workers_combine_counters_summed_with_those_gone_and_live_gauges_only() -> None:
    one: Snapshot = {"wssync_connections_accepted_total": {"": 3},
                     "wssync_http_requests_total": {labels(method="GET", status=200): 2},
                     "wssync_output_buffer_bytes": {"": 10},
                     "wssync_broker_up": {"": 1}}
    two: Snapshot = {"wssync_connections_accepted_total": {"": 4},
                     "wssync_http_requests_total": {labels(method="GET", status=200): 5,
                                                    labels(method="PUT", status=201): 1},
                     "wssync_output_buffer_bytes": {"": 5},
                     "wssync_broker_up": {"": 0}}
    gone: Snapshot = {"wssync_connections_accepted_total": {"": 10}}
    total = combine([one, two, None], gone)
    assert total["wssync_connections_accepted_total"] == {"": 17}
    assert total["wssync_http_requests_total"] == {
        labels(method="GET", status=200): 7, labels(method="PUT", status=201): 1}
    assert total["wssync_output_buffer_bytes"] == {"": 15}
    assert total["wssync_broker_up"] == {"": 0}  # the lowest: one worker is cut off
    parse(render(total))


def test_combining_ignores_what_it_does_not_know() -> None:
    total = combine([{"wssync_from_a_newer_version": {"": 1},
                      "wssync_connections_accepted_total": {"": 1}}])
    assert total == {"wssync_connections_accepted_total": {"": 1}}


def test_non_integral_values_render_as_floats() -> None:
    text = render({"wssync_output_buffer_bytes": {"": 1.5}}).decode()
    assert "wssync_output_buffer_bytes 1.5\n" in text


def test_responses_counts_every_method_and_status_once() -> None:
    metrics = Metrics()
    metrics.http["GET"][200] += 2
    metrics.http["GET"][101] += 1
    metrics.http["BREW"][405] += 1  # an unlisted method: "other"
    metrics.http.other[400] += 1
    assert metrics.responses() == 5
