#!/usr/bin/env bash
# The crash suite, bench/chaos.py, in every setting it has: the daemon
# SIGKILLed KILLS times under the mixed workload on SQLite and on
# PostgreSQL (with a Docker step when the test image is there), PostgreSQL
# stopped for 5 s and for 30 s mid-run, SQLite locked by another process
# for 5 s, and (as root) the data folder's disk full for 5 s. Each run
# prints its figures and fails on any broken guarantee.
#   bench/chaos.sh [KILLS]      CI runs 10; the figures in notes use 100.
# The PostgreSQL runs use a cluster of their own (port 54331), since they
# stop it; it is stopped again at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

kills="${1:-10}"
weir="${WEIR:-${CARGO_TARGET_DIR:-target}/debug/weir}"
export WEIR_PG_DIR=/var/tmp/weir-chaos-pg WEIR_PG_PORT=54331
pg="$(scripts/postgres)"
trap 'scripts/postgres stop || true' EXIT
docker=()
if docker image inspect weir-test/busybox:latest >/dev/null 2>&1; then
  docker=(--docker)
fi
chaos() { echo "== bench/chaos.py $*"; python3 bench/chaos.py --weir "$weir" "$@"; }

chaos --kills "$kills" "${docker[@]}"
chaos --kills "$kills" "${docker[@]}" --db "$pg"
stop="scripts/postgres stop" start="scripts/postgres >/dev/null"
chaos --kills 0 --db "$pg" --outage 5 --pg-stop "$stop" --pg-start "$start"
chaos --kills 0 --db "$pg" --outage 30 --pg-stop "$stop" --pg-start "$start"
chaos --kills 0 --lock 5
if [ "$(id -u)" = 0 ]; then
  chaos --kills 0 --full 5 --full-log-inside
fi
