"""What one broadcast costs in Redis and in a subscribed wssync server: the figures a
paper estimate of a many-host deployment needs.

Usage::

    python loadtests/bench/redis_costs.py [--records 100000] [--subscribers 1,2]

Starts a redis-server (CPU 1) and, per step, that many wssync servers subscribed
to it (``--broker``, CPU 0, no WebSocket clients: only the cost of receiving).
One publisher, a :class:`wssync.scale.redis_broker.RedisBroker` in this process (CPU 1,
as a server's reactor would: ``publish()`` from one thread, records of a
100-byte text broadcast), sends ``--records`` records as fast as its queue
takes them.  Reported:

* ``raw_publish_per_s``: plain redis-py ``PUBLISH`` calls, one round trip each;
* ``publish_per_s``: the broker's rate (its thread pipelines what is queued);
* ``redis_us_per_record``: redis-server CPU per published record (each record
  goes to every subscriber, the publisher's own subscription included);
* ``server_us_per_record``: a subscribed server's CPU per record it received
  and decoded (with nobody to send it to; add the per-recipient cost of
  ``broadcast.py`` for the fan-out);
* whether every server received every record (pub/sub drops nothing while the
  subscribers keep up).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from typing import Any, Dict, List

import common
import redis_server
import servers

RECORD_PAYLOAD = "x" * 100


def wait_for(predicate: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return bool(predicate())


def broker_stats(server: servers.ServerProcess) -> Dict[str, Any]:
    status, body, _ = common.http_get(server.host, server.port, "/stats")
    if status != 200:
        raise RuntimeError(f"/stats answered {status}")
    return dict(json.loads(body)["broker"])


def raw_publish_rate(url: str, count: int) -> float:
    import redis

    client = redis.Redis.from_url(url.partition("?")[0])
    record = b"r" * 111
    start = time.perf_counter()
    for _ in range(count):
        client.publish("raw-bench", record)
    seconds = time.perf_counter() - start
    client.close()
    return count / seconds


def run_step(subscribers: int, records: int, log_dir: str) -> Dict[str, Any]:
    from wssync.scale.broker import encode_record, new_origin
    from wssync.scale.redis_broker import RedisBroker

    redis = redis_server.RedisProcess()
    procs: List[servers.ServerProcess] = []
    broker = None
    result: Dict[str, Any] = {"subscribers": subscribers, "records": records}
    try:
        spec = dataclasses.replace(
            servers.BY_NAME["wssync"], name="wssync-redis-subscriber",
            argv=lambda host, port: [*servers.BY_NAME["wssync"].argv(host, port),
                                     "--broker", redis.url()])
        procs = [servers.ServerProcess(spec, os.path.join(log_dir, f"redis-costs-{i}.log"))
                 for i in range(subscribers)]
        for server in procs:
            server.wait_ready()
        result["raw_publish_per_s"] = round(raw_publish_rate(redis.url(), 20000))
        received: List[int] = []
        broker = RedisBroker(redis.url())
        broker.start(lambda record: received.append(1))
        if not wait_for(lambda: broker.stats()["connected"] and  # type: ignore[union-attr]
                        all(broker_stats(s)["connected"] for s in procs), 30):
            raise RuntimeError("the brokers did not connect")
        record = encode_record(new_origin(), None, RECORD_PAYLOAD)
        server_cpu0 = [server.sched_ns() for server in procs]
        redis_cpu0 = redis.sched_ns()
        start = time.perf_counter()
        sent = 0
        while sent < records:
            stats = broker.stats()
            if sent - stats["published"] - stats["dropped"] > 5000:
                time.sleep(0.0005)  # the queue holds 10,000: stay under it
                continue
            for _ in range(min(1000, records - sent)):
                broker.publish(record)
                sent += 1
        wait_for(lambda: broker.stats()["published"] + broker.stats()["dropped"]  # type: ignore[union-attr]
                 >= records, 60)
        published_s = time.perf_counter() - start
        done = wait_for(lambda: all(broker_stats(s)["received"] >= records for s in procs), 120)
        received_s = time.perf_counter() - start
        redis_ms = (redis.sched_ns() - redis_cpu0) / 1e6
        server_ms = [(server.sched_ns() - before) / 1e6
                     for server, before in zip(procs, server_cpu0)]
        final = broker.stats()
        result.update(
            publish_per_s=round(final["published"] / published_s),
            published=final["published"], dropped=final["dropped"],
            all_received=done and all(broker_stats(s)["received"] == final["published"]
                                      for s in procs),
            receive_per_s=round(records / received_s),
            redis_us_per_record=round(1000 * redis_ms / max(final["published"], 1), 2),
            server_us_per_record=round(1000 * common.median(server_ms) / records, 2),
            own_subscription_received=len(received))
    finally:
        if broker is not None:
            broker.close()
        for server in procs:
            server.stop()
        redis.stop()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--subscribers", default="1,2",
                        help="wssync servers subscribed, one step each (comma-separated)")
    parser.add_argument("--json")
    args = parser.parse_args()
    why = redis_server.available()
    if why:
        parser.error(why)
    common.pin(common.LOAD_CPU)
    log_dir = os.path.join(common.RESULTS_DIR, "logs")
    os.makedirs(log_dir, exist_ok=True)
    results = []
    for subscribers in (int(n) for n in args.subscribers.split(",")):
        r = run_step(subscribers, args.records, log_dir)
        print(json.dumps(r), flush=True)
        results.append(r)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0 if all(r.get("all_received") for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
