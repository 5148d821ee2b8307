#!/usr/bin/env bash
# Start the target app, run Locust headless for a bounded time, keep CSV + HTML, fail on
# any failed request or when HTTP or WS rows are missing from the stats.
#
#   bash loadtests/run.sh                      # 50 users, 60 s
#   USERS=200 SPAWN_RATE=20 DURATION=5m THREADS=4 bash loadtests/run.sh
#   bash loadtests/run.sh --smoke              # 20 users for 20 s (what CI runs)
#   bash loadtests/run.sh --redis              # two servers sharing a redis-server (needs
#                                              # redis-server and wssync[redis]): WebSocket
#                                              # users alternate between them; chat latency
#                                              # is also reported across servers
#   bash loadtests/run.sh --distributed        # Locust as a master and WORKERS [2] worker
#                                              # processes (one core each)
#
# Results land in loadtests/results/ (stats CSV, history, failures, report.html).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
USERS="${USERS:-50}"
SPAWN_RATE="${SPAWN_RATE:-10}"
DURATION="${DURATION:-60s}"
THREADS="${THREADS:-0}"
PORT="${PORT:-8089}"
WORKERS="${WORKERS:-2}"
REDIS=""
DISTRIBUTED=""
case "${1:-}" in
    --smoke) USERS=20 SPAWN_RATE=20 DURATION=20s ;;
    --redis) REDIS=1 ;;
    --distributed) DISTRIBUTED=1 ;;
esac
PYTHON="${PYTHON:-python}"
# The server runs from loadtests/: a relative interpreter path must not break it.
case "$PYTHON" in
    */*) PYTHON="$(cd "$(dirname "$PYTHON")" && pwd)/$(basename "$PYTHON")" ;;
    *) PYTHON="$(command -v "$PYTHON")" ;;
esac
out="$here/results"
mkdir -p "$out"
rm -f "$out"/stats_*.csv "$out"/report.html

pids=()
redis_pid=""
# The servers stop first, then Redis (else they would log its loss on the way out).
trap 'for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
      for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
      [ -z "$redis_pid" ] || { kill -TERM "$redis_pid" 2>/dev/null; wait "$redis_pid"; } || true' EXIT
broker=()
ports=("$PORT")
if [ -n "$REDIS" ]; then
    REDIS_PORT="${REDIS_PORT:-$((PORT + 2))}"
    redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
        --dir "$out" >"$out/redis.log" 2>&1 &
    redis_pid=$!
    broker=(--broker "redis://127.0.0.1:$REDIS_PORT/0?channel=loadtest")
    ports+=("$((PORT + 1))")
    export CHAT_HOSTS="http://127.0.0.1:$PORT,http://127.0.0.1:$((PORT + 1))"
    for _ in $(seq 100); do
        redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break
        sleep 0.1
    done
fi
for port in "${ports[@]}"; do
    (cd "$here" && exec "$PYTHON" -m wssync --app target_app:app --host 127.0.0.1 \
        --port "$port" --threads "$THREADS" --no-access-log --log-level warning "${broker[@]}") &
    pids+=($!)
done

for port in "${ports[@]}"; do
    for _ in $(seq 100); do
        if "$PYTHON" -c "import socket; socket.create_connection(('127.0.0.1', $port), 0.2).close()" \
            2>/dev/null; then break; fi
        sleep 0.1
    done
done
for pid in "${pids[@]}"; do
    if ! kill -0 "$pid" 2>/dev/null; then
        echo "run.sh: a server did not start (see its error above)" >&2
        exit 1
    fi
done
if [ -n "$REDIS" ]; then
    sleep 1  # both servers subscribe before the first chat message (pub/sub keeps nothing)
fi

status=0
role=()
if [ -n "$DISTRIBUTED" ]; then
    # The workers run the users; the master (headless, bounded by -t) collects their
    # statistics and writes the files. The workers exit when the master stops.
    MASTER_PORT="${MASTER_PORT:-$((PORT + 10))}"
    role=(--master --expect-workers "$WORKERS" --master-bind-host 127.0.0.1
          --master-bind-port "$MASTER_PORT")
    for _ in $(seq "$WORKERS"); do
        "$PYTHON" -m locust -f "$here/locustfile.py" --worker --master-host 127.0.0.1 \
            --master-port "$MASTER_PORT" --loglevel WARNING &
        pids+=($!)
    done
fi
"$PYTHON" -m locust -f "$here/locustfile.py" --host "http://127.0.0.1:$PORT" --headless \
    -u "$USERS" -r "$SPAWN_RATE" -t "$DURATION" --stop-timeout 5 "${role[@]}" \
    --csv "$out/stats" --csv-full-history --html "$out/report.html" --only-summary \
    --json-file "$out/final" \
    || status=$?

# Our summary reads the final statistics Locust prints its table from (the CSV
# files are written on a timer and can miss the last requests).
"$PYTHON" - "$out/final.json" <<'PY' || status=1
import json, os, sys

def percentile(times, q):
    total = sum(times.values())
    seen = 0
    for ms, n in sorted((float(k), v) for k, v in times.items()):
        seen += n
        if seen >= q * total:
            return ms
    return 0.0

rows = json.load(open(sys.argv[1]))
types = {r["method"] for r in rows}
requests = sum(r["num_requests"] for r in rows)
failures = sum(r["num_failures"] for r in rows)
seconds = max((r["last_request_timestamp"] or 0) for r in rows) - min(r["start_time"] for r in rows)
print(f"request types: {sorted(types)}; requests: {requests}, failures: {failures}, "
      f"RPS: {requests / max(seconds, 1e-9):.1f}")
for r in sorted(rows, key=lambda r: (r["method"], r["name"])):
    times = r["response_times"]
    print(f"  {r['method']:5} {r['name']:22} n={r['num_requests']:>7} fail={r['num_failures']:>4} "
          f"p50={percentile(times, 0.5):>5.0f} ms p95={percentile(times, 0.95):>5.0f} ms")
missing = {"GET", "POST", "WS"} - types
if "CHAT_HOSTS" in os.environ and not any(r["name"] == "broadcast remote" for r in rows):
    missing.add("WS broadcast remote")
if missing:
    sys.exit(f"missing request types in the stats: {sorted(missing)}")
if failures:
    sys.exit("there were failures")
PY
exit $status
