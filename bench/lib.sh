# Shared by the daemon benchmarks (bench/daemon.sh, bench/history.sh):
# source it, then call the functions. Each figure is measured from outside,
# against a real `weir serve` in a folder of its own.

# Builds the release binary; sets $weir to its absolute path, so a daemon
# can start from its work folder whether CARGO_TARGET_DIR is relative or not.
bench_build() {
  cargo build --release --quiet --bin weir
  weir="$(cd "${CARGO_TARGET_DIR:-target}/release" && pwd)/weir"
}

# Writes the benchmarks' pipelines into DIR/pipelines: `bench`, one step of
# `true` found on PATH, and `hooked`, which takes signed webhooks and whose
# one step is skipped, so a delivery costs its intake and its run's
# decisions only.
bench_pipelines() {
  mkdir -p "$1/pipelines"
  cat > "$1/pipelines/bench.yaml" <<'YAML'
name: bench
on:
  webhook: { secret_env: BENCH_HOOK_SECRET }
defaults: { executor: process }
steps:
  one: { command: ["true"] }
YAML
  cat > "$1/pipelines/hooked.yaml" <<'YAML'
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
}

# Starts `weir serve` in DIR on PORT with any further arguments, and waits
# until /healthz answers; sets $pid and $ready_ms (spawn to first answer).
bench_serve() {
  local dir="$1" port="$2"
  shift 2
  local t0
  t0=$(date +%s%N)
  (cd "$dir" && BENCH_HOOK_SECRET=bench exec "$weir" serve --listen "127.0.0.1:$port" "$@" >> serve.log 2>&1) &
  pid=$!
  for _ in $(seq 2000); do
    curl -sf "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
    sleep 0.005
  done
  ready_ms=$(( ($(date +%s%N) - t0) / 1000000 ))
}

bench_stop() {
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

# Prints "p50 p99" (ms) of trigger -> first step started over N manual
# triggers of `bench`, from the stored run and attempt times.
bench_trigger_latency() {
  python3 - "$1" "$2" "$3" <<'PY'
import json, sys, time, urllib.request
from datetime import datetime
port, token, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
# Loopback only: no proxy from the environment.
urllib.request.install_opener(urllib.request.build_opener(urllib.request.ProxyHandler({})))
def call(method, path, body=None):
    req = urllib.request.Request(f"http://127.0.0.1:{port}/api/v1{path}", method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req) as r:
        return json.load(r)
ids = [call("POST", "/runs", {"pipeline": "bench"})["id"] for _ in range(n)]
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
print(f"{p(0.5):.1f} {p(0.99):.1f}")
PY
}

# Prints the median time (ms) of N GETs of PATH (a full URL), with TOKEN.
bench_get_ms() {
  python3 - "$1" "$2" "$3" <<'PY'
import sys, time, urllib.request
url, token, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
urllib.request.install_opener(urllib.request.build_opener(urllib.request.ProxyHandler({})))
times = []
for _ in range(n):
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    t0 = time.perf_counter()
    with urllib.request.urlopen(req) as r:
        r.read()
    times.append((time.perf_counter() - t0) * 1000)
times.sort()
print(f"{times[len(times) // 2]:.2f}")
PY
}

# Sends signed deliveries to `hooked` on PORT for SECONDS over CONNS
# connections with wrk (Debian's package), each under a delivery id of its
# own; sets $rate (per second), $p50 and $p99 (ms), $ok (2xx) and $bad.
# Fails unless every 2xx is a stored delivery (the requests still in flight
# when wrk stops, at most one per connection, are stored but not counted).
bench_webhooks() {
  local port="$1" seconds="$2" conns="$3" work
  if ! command -v wrk >/dev/null; then
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null
  fi
  work="$(mktemp -d)"
  local body='{"ref":"refs/heads/main","after":"0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c"}'
  local sig
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
  headers["X-Weir-Delivery"] = string.format("%s-%d-%d", tostring(tid), counter, os.time())
  return wrk.format("POST", "/api/v1/hooks/hooked", headers, '$body')
end
done = function(summary, latency, requests)
  io.write(string.format("WRK %d %d %.3f %.3f\n", summary.requests, summary.errors.status, latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
LUA
  local before out requests
  before=$(bench_triggered "$port")
  out="$(wrk -t2 -c"$conns" -d"${seconds}s" -s "$work/hook.lua" "http://127.0.0.1:$port")"
  rm -rf "$work"
  read -r _ requests bad p50 p99 <<< "$(grep '^WRK' <<< "$out")"
  rate=$(grep 'Requests/sec' <<< "$out" | awk '{ printf "%.0f", $2 }')
  ok=$((requests - bad))
  local stored=$(( $(bench_triggered "$port") - before ))
  if (( stored < ok || stored > ok + conns )); then
    echo "FAILED: $ok deliveries answered 2xx but $stored stored as triggered" >&2
    return 1
  fi
}

# Webhook deliveries stored as triggered, from /metrics.
bench_triggered() {
  curl -s "http://127.0.0.1:$1/metrics" | awk '/^weir_events_total\{kind="webhook",outcome="triggered"\}/ { n = $2 } END { print n + 0 }'
}

# Resident memory of $pid, in kB.
bench_rss_kb() {
  awk '/VmRSS/ { print $2 }' "/proc/$pid/status"
}

# Resident memory of $pid split, in MB: "ANON FILE" — its own memory, and
# the pages of files it maps (mostly the binary's code, shared with every
# weir process and reclaimable).
bench_rss_split() {
  awk '/^Rss:/ { rss = $2 } /^Anonymous:/ { anon = $2 } END { printf "%.1f %.1f\n", anon / 1024, (rss - anon) / 1024 }' "/proc/$pid/smaps_rollup"
}
