#!/usr/bin/env bash
# Start the target app, run Locust headless for a bounded time, keep CSV + HTML, fail on
# any failed request or when HTTP or WS rows are missing from the stats.
#
#   bash loadtests/run.sh                      # 50 users, 60 s
#   USERS=200 SPAWN_RATE=20 DURATION=5m THREADS=4 bash loadtests/run.sh
#   bash loadtests/run.sh --smoke              # 20 users for 20 s (what CI runs)
#
# Results land in loadtests/results/ (stats CSV, history, failures, report.html).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
USERS="${USERS:-50}"
SPAWN_RATE="${SPAWN_RATE:-10}"
DURATION="${DURATION:-60s}"
THREADS="${THREADS:-0}"
PORT="${PORT:-8089}"
if [ "${1:-}" = "--smoke" ]; then
    USERS=20 SPAWN_RATE=20 DURATION=20s
fi
PYTHON="${PYTHON:-python}"
# The server runs from loadtests/: a relative interpreter path must not break it.
case "$PYTHON" in
    */*) PYTHON="$(cd "$(dirname "$PYTHON")" && pwd)/$(basename "$PYTHON")" ;;
    *) PYTHON="$(command -v "$PYTHON")" ;;
esac
out="$here/results"
mkdir -p "$out"
rm -f "$out"/stats_*.csv "$out"/report.html

(cd "$here" && exec "$PYTHON" -m wssync --app target_app:app --host 127.0.0.1 --port "$PORT" \
    --threads "$THREADS" --no-access-log --log-level warning) &
server=$!
trap 'kill -TERM $server 2>/dev/null || true; wait $server 2>/dev/null || true' EXIT

for _ in $(seq 100); do
    if "$PYTHON" -c "import socket; socket.create_connection(('127.0.0.1', $PORT), 0.2).close()" \
        2>/dev/null; then break; fi
    sleep 0.1
done
if ! kill -0 "$server" 2>/dev/null; then
    echo "run.sh: the server did not start (see its error above)" >&2
    exit 1
fi

status=0
"$PYTHON" -m locust -f "$here/locustfile.py" --host "http://127.0.0.1:$PORT" --headless \
    -u "$USERS" -r "$SPAWN_RATE" -t "$DURATION" --stop-timeout 5 \
    --csv "$out/stats" --csv-full-history --html "$out/report.html" --only-summary \
    --json-file "$out/final" \
    || status=$?

# Our summary reads the final statistics Locust prints its table from (the CSV
# files are written on a timer and can miss the last requests).
"$PYTHON" - "$out/final.json" <<'PY' || status=1
import json, sys

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
if missing:
    sys.exit(f"missing request types in the stats: {sorted(missing)}")
if failures:
    sys.exit("there were failures")
PY
exit $status
