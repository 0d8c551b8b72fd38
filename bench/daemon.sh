#!/usr/bin/env bash
# The daemon's budgets (DESIGN.md §7), measured on this machine and printed:
#   1. idle resident memory of `weir serve` (budget < 30 MB);
#   2. trigger → first step started over 200 triggers, process executor,
#      SQLite (budget p50 < 20 ms), from the stored run and attempt times;
#   3. signed webhook deliveries per second with wrk (Debian's package),
#      distinct delivery ids, 2 connections, 10 s (budget >= 2,000/s,
#      p99 < 50 ms), then the count of stored events against wrk's 2xx
#      (every 2xx stored; the pipeline's dedupe is off, since every
#      delivery carries the same signed body).
# Usage: bench/daemon.sh   (builds the release binary first)
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --quiet --bin weir
target_dir="${CARGO_TARGET_DIR:-target}"
# Absolute, so the daemon can start from its work folder whether
# CARGO_TARGET_DIR is relative or not.
weir="$(cd "$target_dir/release" && pwd)/weir"
work="$(mktemp -d)"
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT
mkdir -p "$work/pipelines"
cat > "$work/pipelines/bench.yaml" <<'YAML'
name: bench
on:
  webhook: { secret_env: BENCH_HOOK_SECRET }
defaults: { executor: process }
steps:
  one: { command: ["true"] }
YAML
cat > "$work/pipelines/hooked.yaml" <<'YAML'
name: hooked
on:
  manual: false
  # Every delivery carries the same body (one signature for all); with the
  # default dedupe all but the first would be answered as replays.
  webhook: { secret_env: BENCH_HOOK_SECRET, dedupe: 0s }
defaults: { executor: process }
steps:
  noop: { if: "false", command: ["true"] }
YAML
port=18799
(cd "$work" && BENCH_HOOK_SECRET=bench exec "$weir" serve --listen "127.0.0.1:$port" --max-running 4 > serve.log 2>&1) &
pid=$!
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
sleep 2
rss_kb=$(awk '/VmRSS/ { print $2 }' "/proc/$pid/status")
echo "idle resident memory: $((rss_kb / 1024)) MB ($rss_kb kB; budget < 30 MB)"

token="$(cat "$work/.weir/token")"
python3 - "$port" "$token" <<'PY'
import json, sys, time, urllib.request
from datetime import datetime
port, token = sys.argv[1], sys.argv[2]
# Loopback only: no proxy from the environment.
urllib.request.install_opener(urllib.request.build_opener(urllib.request.ProxyHandler({})))
def call(method, path, body=None):
    req = urllib.request.Request(f"http://127.0.0.1:{port}/api/v1{path}", method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req) as r:
        return json.load(r)
ids = [call("POST", "/runs", {"pipeline": "bench"})["id"] for _ in range(200)]
def ts(t): return datetime.fromisoformat(t.replace("Z", "+00:00"))
lat = []
for i in ids:
    while True:
        run = call("GET", f"/runs/{i}")
        if run["state"] in ("succeeded", "failed", "cancelled"): break
        time.sleep(0.05)
    att = run["steps"][0]["attempts"][0]
    lat.append((ts(att["started_at"]) - ts(run["created_at"])).total_seconds() * 1000)
lat.sort()
p = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))]
print(f"trigger -> first step started over {len(lat)} triggers: p50 {p(0.5):.1f} ms, p99 {p(0.99):.1f} ms (budget p50 < 20 ms)")
PY

if ! command -v wrk >/dev/null; then
  apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null
fi
body='{"ref":"refs/heads/main","after":"0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c"}'
sig="sha256=$(printf '%s' "$body" | openssl dgst -sha256 -hmac bench -r | cut -d' ' -f1)"
cat > "$work/hook.lua" <<LUA
-- Each wrk thread numbers its deliveries under its own id, so no two
-- requests share a delivery id (a shared one would be answered as a replay).
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end
counter = 0
request = function()
  counter = counter + 1
  local headers = {}
  headers["Content-Type"] = "application/json"
  headers["X-Weir-Signature-256"] = "$sig"
  headers["X-Weir-Delivery"] = string.format("%s-%d", tostring(tid), counter)
  return wrk.format("POST", "/api/v1/hooks/hooked", headers, '$body')
end
done = function(summary, latency, requests)
  io.write(string.format("WRK %d %d %.3f %.3f\n", summary.requests, summary.errors.status, latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
LUA
out="$(wrk -t2 -c2 -d10s -s "$work/hook.lua" "http://127.0.0.1:$port")"
read -r _ requests bad p50 p99 <<< "$(grep '^WRK' <<< "$out")"
rate=$(grep 'Requests/sec' <<< "$out" | awk '{ print $2 }')
ok=$((requests - bad))
stored=$(curl -s "http://127.0.0.1:$port/metrics" | awk -F' ' '/^weir_events_total\{kind="webhook",outcome="triggered"\}/ { print $2 }')
echo "signed webhooks: $rate/s, p50 $p50 ms, p99 $p99 ms over 10 s (budget >= 2,000/s, p99 < 50 ms); 2xx $ok, non-2xx $bad, events stored as triggered $stored"
# Every 2xx is a stored delivery; the requests still in flight when wrk
# stops (at most one per connection) are stored but not counted by wrk.
if (( stored < ok || stored > ok + 2 )); then
  echo "FAILED: $ok deliveries answered 2xx but $stored stored as triggered" >&2
  exit 1
fi
