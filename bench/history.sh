#!/usr/bin/env bash
# Whether the daemon's costs stay flat as history grows (DESIGN.md §7):
# the same figures on a fresh store and on one holding RUNS more finished
# runs (default 100,000) of a 10-step pipeline, so ten times as many step
# and attempt rows, each with its log:
#   - start-up to ready (median of 3 starts),
#   - trigger -> first step started over 100 triggers (p50, p99),
#   - /metrics scrape, GET /api/v1/runs first page and filtered pages
#     (median of 50 requests each),
#   - signed webhook deliveries, 5 s with 32 connections (rate, p99),
#   - resident memory of the daemon, idle, after all of the above (it has
#     then driven every run the webhooks started: about 20,000).
# The history is written by SQL that clones one finished run of `history`
# (its run, steps, attempts and logs), each copy older than the last, a
# year of runs in all, while the daemon is stopped; the daemon then starts
# on it as on any store. Audit entries are not cloned (the chain would not
# verify); nothing measured here reads them.
# Usage: bench/history.sh [RUNS]   (builds the release binary first)
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh

runs="${1:-100000}"
bench_build
work="$(mktemp -d)"
pid=
trap 'bench_stop; rm -rf "$work"' EXIT
bench_pipelines "$work"
{
  echo "name: history"
  echo "defaults: { executor: process }"
  echo "steps:"
  for i in $(seq 0 9); do
    needs=""
    [ "$i" -gt 0 ] && needs=", needs: [s$((i - 1))]"
    echo "  s$i: { command: [\"echo\", \"step s$i of a run kept in the history\"]$needs }"
  done
} > "$work/pipelines/history.yaml"
port=18798

# One phase: every figure against the store as it is; prints one line per
# figure, "name value", for the table at the end.
measure() {
  local starts=() token
  for _ in 1 2 3; do
    bench_serve "$work" "$port" --max-running 4
    starts+=("$ready_ms")
    bench_stop
  done
  bench_serve "$work" "$port" --max-running 4
  token="$(cat "$work/.weir/token")"
  echo "ready_ms $(printf '%s\n' "${starts[@]}" | sort -n | sed -n 2p)"
  read -r t50 t99 <<< "$(bench_trigger_latency "$port" "$token" 100)"
  echo "trigger_p50_ms $t50"
  echo "trigger_p99_ms $t99"
  local api="http://127.0.0.1:$port/api/v1"
  echo "metrics_ms $(bench_get_ms "http://127.0.0.1:$port/metrics" "$token" 50)"
  echo "runs_page_ms $(bench_get_ms "$api/runs?limit=50" "$token" 50)"
  echo "runs_pipeline_ms $(bench_get_ms "$api/runs?pipeline=bench&limit=50" "$token" 50)"
  echo "runs_failed_ms $(bench_get_ms "$api/runs?state=failed&limit=50" "$token" 50)"
  echo "runs_history_failed_ms $(bench_get_ms "$api/runs?pipeline=history&state=failed&limit=50" "$token" 50)"
  echo "runs_scheduled_ms $(bench_get_ms "$api/runs?trigger=schedule&limit=50" "$token" 50)"
  # A later page of 50 runs, from a cursor 1,000 runs deep (on the fresh
  # store, as deep as leaves a whole page after it).
  local cursor
  cursor="$(curl -s -H "Authorization: Bearer $token" "$api/runs?limit=1000" |
    python3 -c 'import json, sys; runs = json.load(sys.stdin); print(runs[min(999, len(runs) - 51)]["id"])')"
  echo "runs_next_page_ms $(bench_get_ms "$api/runs?limit=50&after=$cursor" "$token" 50)"
  bench_webhooks "$port" 5 32
  echo "webhooks_per_s $rate"
  echo "webhook_p99_ms $p99"
  sleep 2
  echo "idle_rss_mb $(( $(bench_rss_kb) / 1024 ))"
  echo "idle_anon_mb $(bench_rss_split | cut -d' ' -f1)"
  bench_stop
}

# The run every copy is made from.
bench_serve "$work" "$port" --max-running 4
(cd "$work" && "$weir" trigger history --wait --addr "http://127.0.0.1:$port" >/dev/null)
bench_stop

measure > "$work/fresh.txt"

python3 - "$work/.weir/weir.db" "$runs" <<'PY'
import sqlite3, sys, time
path, n = sys.argv[1], int(sys.argv[2])
db = sqlite3.connect(path, isolation_level=None)
(template,) = db.execute(
    "SELECT id FROM runs WHERE pipeline = 'history' AND state = 'succeeded' LIMIT 1").fetchone()
times = {"created_at", "started_at", "finished_at", "deadline", "not_before", "waiting_until"}
def clone(table, key):
    cols = [r[1] for r in db.execute(f"PRAGMA table_info({table})")]
    def value(c):
        if c == key:
            return "printf('hist-%07d', n.i)"
        if c in times:
            # A year of runs: each copy 315 s older than the one before.
            return (f"CASE WHEN {c} IS NULL THEN NULL ELSE "
                    f"strftime('%Y-%m-%dT%H:%M:%f', {c}, printf('-%d seconds', n.i * 315)) || '+00:00' END")
        return c
    db.execute(
        f"WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?) "
        f"INSERT INTO {table} ({', '.join(cols)}) SELECT {', '.join(value(c) for c in cols)} "
        f"FROM {table}, n WHERE {table}.{key} = ?", (n, template))
t0 = time.time()
db.execute("BEGIN")
for table, key in [("runs", "id"), ("steps", "run_id"), ("attempts", "run_id"), ("logs", "run_id")]:
    clone(table, key)
db.execute("COMMIT")
db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
counts = {t: db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in ("runs", "steps", "attempts", "logs")}
print(f"history written in {time.time() - t0:.0f} s: " + ", ".join(f"{v:,} {k}" for k, v in counts.items()), file=sys.stderr)
PY
# The history is on disk before it is measured, as a year's would be: no
# writeback of the fill competes with the daemon's commits.
sync

measure > "$work/history.txt"

# Retention while the daemon works: about half the history (runs that
# finished more than 182 days ago) pruned by `weir gc`, with webhook
# deliveries arriving meanwhile.
bench_serve "$work" "$port" --max-running 4
gc_start=$(date +%s%N)
(cd "$work" && "$weir" gc --older-than 182d --addr "http://127.0.0.1:$port" > gc.txt 2>&1; echo $(( ($(date +%s%N) - gc_start) / 1000000 )) > gc.ms) &
gc=$!
bench_webhooks "$port" 10 32
wait "$gc"
echo "during weir gc ($(tr -s ' \n' ' ' < "$work/gc.txt"), $(cat "$work/gc.ms") ms): webhooks $rate/s, p99 $p99 ms over 10 s"
bench_stop

echo "figure                        fresh store   with $runs more runs   ratio"
paste -d' ' "$work/fresh.txt" "$work/history.txt" | while read -r name fresh _ full; do
  ratio=$(python3 -c "a, b = float('$fresh'), float('$full'); print(f'{b / a:.2f}x' if a > 0 else '-')")
  printf '%-28s %12s %22s %8s\n' "$name" "$fresh" "$full" "$ratio"
done
echo "(budget: each within 1.5x of the fresh store; webhooks_per_s: higher is better)"
