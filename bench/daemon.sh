#!/usr/bin/env bash
# The daemon's budgets (DESIGN.md §7), measured on this machine and printed:
#   1. idle resident memory of `weir serve` and its start to ready;
#   2. trigger → first step started over 200 triggers, process executor,
#      SQLite, from the stored run and attempt times;
#   3. signed webhook deliveries per second with wrk (Debian's package),
#      distinct delivery ids, 32 connections (senders deliver concurrently;
#      concurrent deliveries share a commit), 10 s, then the count of
#      stored deliveries against wrk's 2xx (every 2xx stored);
#   4. the same webhook figure on PostgreSQL, when BENCH_PG_URL names a
#      server weir may create a database on (scripts/postgres prints one).
# Usage: bench/daemon.sh   (builds the release binary first)
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh

bench_build
work="$(mktemp -d)"
pid=
trap 'bench_stop; rm -rf "$work"' EXIT
bench_pipelines "$work"
port=18799
bench_serve "$work" "$port" --max-running 4
sleep 2
rss_kb=$(bench_rss_kb)
read -r anon_mb file_mb <<< "$(bench_rss_split)"
echo "idle resident memory: $((rss_kb / 1024)) MB ($rss_kb kB: $anon_mb MB anonymous, $file_mb MB of mapped files, the binary's code); start to ready $ready_ms ms"

token="$(cat "$work/.weir/token")"
read -r t50 t99 <<< "$(bench_trigger_latency "$port" "$token" 200)"
echo "trigger -> first step started over 200 triggers: p50 $t50 ms, p99 $t99 ms (budget p50 < 20 ms)"

bench_webhooks "$port" 10 32
echo "signed webhooks, SQLite: $rate/s, p50 $p50 ms, p99 $p99 ms over 10 s, 32 connections (budget >= 5,000/s, p99 < 20 ms); 2xx $ok, non-2xx $bad, every 2xx stored"
bench_stop

if [ -n "${BENCH_PG_URL:-}" ]; then
  db="weir_bench_$$"
  psql -q "$BENCH_PG_URL" -c "CREATE DATABASE $db" >/dev/null
  trap 'bench_stop; psql -q "$BENCH_PG_URL" -c "DROP DATABASE IF EXISTS $db" >/dev/null; rm -rf "$work"' EXIT
  bench_serve "$work" "$port" --max-running 4 --db "${BENCH_PG_URL%/*}/$db"
  bench_webhooks "$port" 10 32
  echo "signed webhooks, PostgreSQL: $rate/s, p50 $p50 ms, p99 $p99 ms over 10 s, 32 connections; 2xx $ok, non-2xx $bad, every 2xx stored"
fi
