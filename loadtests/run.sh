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

status=0
"$PYTHON" -m locust -f "$here/locustfile.py" --host "http://127.0.0.1:$PORT" --headless \
    -u "$USERS" -r "$SPAWN_RATE" -t "$DURATION" --stop-timeout 5 \
    --csv "$out/stats" --csv-full-history --html "$out/report.html" --only-summary \
    || status=$?

"$PYTHON" - "$out/stats_stats.csv" <<'PY' || status=1
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
types = {r["Type"] for r in rows if r["Name"] != "Aggregated"}
total = next(r for r in rows if r["Name"] == "Aggregated")
print(f"request types: {sorted(types)}; requests: {total['Request Count']}, "
      f"failures: {total['Failure Count']}, RPS: {float(total['Requests/s']):.1f}")
for r in rows:
    print(f"  {r['Type']:5} {r['Name']:22} n={r['Request Count']:>7} fail={r['Failure Count']:>4} "
          f"p50={r['50%']:>5} ms p95={r['95%']:>5} ms rps={float(r['Requests/s']):.1f}")
missing = {"GET", "POST", "WS"} - types
if missing:
    sys.exit(f"missing request types in the stats: {sorted(missing)}")
if int(total["Failure Count"]):
    sys.exit("there were failures")
PY
exit $status
