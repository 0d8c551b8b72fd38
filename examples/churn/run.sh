#!/usr/bin/env bash
# The churn example end to end, as CI runs it: builds the images, starts
# `weir serve` on a scratch folder, and walks the model lifecycle with the
# CLI, checking each outcome:
#   1. a first run trains, validates, passes the gate, waits for approval,
#      is approved, registers churn@1 (staging), serves it and smoke-tests it;
#      churn@1 is promoted to production;
#   2. a run on deliberately degraded data is stopped by the gate, and its
#      evidence says which expression failed and why;
#   3. a drift event above the threshold starts a retraining run, which is
#      approved and registers churn@2 (staging); a second event while it runs
#      is coalesced into it, and a third after it, inside the cooldown, is
#      suppressed;
#   4. a replay of the run that produced churn@2 (same pipeline version,
#      params, event and image ids) reproduces its 3 artifacts bit for bit;
#   5. events, registry history, lineage (with the replay), churn@2's model
#      card (checked against its audit entry) and the audit chain (which
#      verifies, online and offline) show all of it;
#   6. with MLFLOW set (an mlflow program, as scripts/mlflow prints), a real
#      MLflow server has every run and churn@2 as its "staging" version.
# Usage: examples/churn/run.sh   (WEIR=path/to/weir to use a built binary,
#        MLFLOW="$(scripts/mlflow)" to mirror to a real MLflow server)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"

"$here/build-image.sh"
DOCKER_BUILDKIT=0 docker build -q -t weir-example/churn:latest "$here" >/dev/null
echo "built weir-example/churn:latest"

if [[ -z "${WEIR:-}" ]]; then
  (cd "$root" && cargo build --quiet --bin weir)
  WEIR="${CARGO_TARGET_DIR:-$root/target}/debug/weir"
fi
work="$(mktemp -d)"
port=18766
cleanup() {
  [[ -n "${pid:-}" ]] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  [[ -n "${mlflow_pid:-}" ]] && kill -- "-$mlflow_pid" 2>/dev/null
  docker rm -f weir-churn-serving >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
cp -r "$here/pipelines" "$work/pipelines"
cd "$work"
# With MLFLOW (an mlflow program: scripts/mlflow), a real MLflow server on
# loopback receives every run and registration (step 6).
if [[ -n "${MLFLOW:-}" ]]; then
  mlflow_port=18767
  mkdir -p mlflow
  setsid "$MLFLOW" server --host 127.0.0.1 --port "$mlflow_port" --workers 1 \
    --backend-store-uri "sqlite:///$work/mlflow/mlflow.db" --default-artifact-root "$work/mlflow/artifacts" \
    > mlflow/server.log 2>&1 &
  mlflow_pid=$!
  for _ in $(seq 240); do
    curl -fsS "http://127.0.0.1:$mlflow_port/health" >/dev/null 2>&1 && break
    sleep 0.5
  done
  printf '[mlflow]\ntracking_uri = "http://127.0.0.1:%s"\nexperiment = "churn"\n' "$mlflow_port" > weir.toml
  echo "MLflow server on http://127.0.0.1:$mlflow_port"
fi
"$WEIR" serve --listen "127.0.0.1:$port" > serve.out 2> serve.log &
pid=$!
for _ in $(seq 100); do
  grep -q "weir serving" serve.out 2>/dev/null && break
  sleep 0.1
done
export WEIR_ADDR="http://127.0.0.1:$port"

# Shows a command and its output, as a user would see them.
show() {
  echo
  echo "\$ weir $*"
  "$WEIR" "$@"
}
fail() { echo "FAILED: $*" >&2; echo "--- daemon log" >&2; tail -30 serve.log >&2; exit 1; }
# Waits until `weir status RUN --output json` satisfies a jq-free Python test.
wait_run() {
  local run="$1" test="$2"
  for _ in $(seq 600); do
    if "$WEIR" status "$run" --output json | python3 -c "import json,sys; r=json.load(sys.stdin); sys.exit(0 if ($test) else 1)"; then
      return 0
    fi
    sleep 0.5
  done
  "$WEIR" status "$run" >&2 || true
  fail "run $run never got to: $test"
}
field() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }

echo "== 1. a first model, trained, gated, approved, registered and served"
run1="$("$WEIR" trigger churn --output json | field '["id"]')"
wait_run "$run1" "r['steps'][4]['state'] == 'waiting'"
show status "$run1"
show approve "$run1" approve --comment "first model; metrics reviewed"
wait_run "$run1" "r['state'] in ('succeeded', 'failed')"
show status "$run1"
[[ "$("$WEIR" status "$run1" --output json | field '["state"]')" == succeeded ]] || fail "run 1 did not succeed"
served="$(curl -fsS "http://127.0.0.1:18765/model.joblib" | sha256sum | cut -d' ' -f1)"
registered="$("$WEIR" models show churn@1 --output json | field '["sha256"]')"
[[ "$served" == "$registered" ]] || fail "the served model is not churn@1"
echo "served model sha256 $served = churn@1"
show models promote churn@1 --alias production

echo
echo "== 2. degraded data: the gate stops it, and says why"
run2="$("$WEIR" trigger churn --param degrade=0.6 --output json | field '["id"]')"
wait_run "$run2" "r['state'] in ('succeeded', 'failed')"
show status "$run2"
[[ "$("$WEIR" status "$run2" --output json | field '["state"]')" == failed ]] || fail "the degraded run was not stopped"
"$WEIR" status "$run2" --output json | field '["steps"][3]["reason"]' | grep -q "is false" || fail "no evidence in the gate's reason"

echo
echo "== 3. drift: a retraining run, then an event inside the cooldown"
decision="$(curl -fsS -H "Authorization: Bearer $(cat .weir/token)" -H 'Content-Type: application/json' \
  -d '{"pipeline": "churn", "metric": "psi", "reference": [0.25, 0.25, 0.25, 0.25], "current": [0.05, 0.15, 0.3, 0.5]}' \
  "$WEIR_ADDR/api/v1/events/drift")"
echo "drift report (psi from two histograms): $decision"
run3="$(python3 -c "import json,sys; d=json.loads(sys.argv[1])['decision']; assert d.startswith('triggered '), d; print(d.split()[1])" "$decision")" ||
  fail "the drift event did not trigger a run"
second="$(curl -fsS -H "Authorization: Bearer $(cat .weir/token)" -H 'Content-Type: application/json' \
  -d '{"pipeline": "churn", "metric": "psi", "value": 0.31}' "$WEIR_ADDR/api/v1/events/drift")"
echo "second drift report: $second"
python3 -c "import json,sys; d=json.loads(sys.argv[1])['decision']; assert d.startswith(('coalesced', 'cooldown')), d" "$second" ||
  fail "the second event was not suppressed"
wait_run "$run3" "r['steps'][4]['state'] == 'waiting'"
show approve "$run3" approve --comment "retrained on drift"
wait_run "$run3" "r['state'] in ('succeeded', 'failed')"
[[ "$("$WEIR" status "$run3" --output json | field '["state"]')" == succeeded ]] || fail "the retraining run did not succeed"
[[ "$("$WEIR" models show churn --alias staging --output json | field '["version"]')" == 2 ]] || fail "staging is not churn@2"
third="$(curl -fsS -H "Authorization: Bearer $(cat .weir/token)" -H 'Content-Type: application/json' \
  -d '{"pipeline": "churn", "metric": "psi", "value": 0.4}' "$WEIR_ADDR/api/v1/events/drift")"
echo "third drift report, after the retraining run ended: $third"
python3 -c "import json,sys; d=json.loads(sys.argv[1])['decision']; assert d.startswith('cooldown'), d" "$third" ||
  fail "the event inside the cooldown was not suppressed"

echo
echo "== 4. replay: what produced churn@2, run again, reproduces it bit for bit"
show replay churn@2 --wait | tee replay.out
tail -1 replay.out | grep -qx "reproduced: 3 of 3 artifacts identical" || fail "churn@2 was not reproduced"

echo
echo "== 5. what weir kept"
show events
show models list
show models history churn
show lineage churn@2
show models card churn@2
show audit verify
"$WEIR" audit export --file audit.jsonl
show audit verify --file audit.jsonl --pubkey "$("$WEIR" audit key)"
if [[ -n "${MLFLOW:-}" ]]; then
  echo
  echo "== 6. MLflow: the runs and registrations, mirrored"
  for _ in $(seq 300); do
    "$WEIR" models show churn@2 --output json | python3 -c "import json,sys; sys.exit(0 if (json.load(sys.stdin).get('mlflow') or {}).get('state') == 'done' else 1)" && break
    sleep 0.2
  done
  show models show churn@2
  accuracy="$("$WEIR" models show churn@2 --output json | field '["metrics"]["accuracy"]')"
  "$(dirname "$MLFLOW")/python" - "http://127.0.0.1:$mlflow_port" "$accuracy" <<'PY' || fail "MLflow does not have churn@2 as staging"
import sys, time
from mlflow import MlflowClient
client = MlflowClient(sys.argv[1])
# The alias follows its version within a second or two.
for _ in range(100):
    version = client.get_model_version_by_alias("churn", "staging")
    if version.tags.get("weir.version") == "2":
        break
    time.sleep(0.2)
run = client.get_run(version.run_id)
print(f"MlflowClient().get_model_version_by_alias('churn', 'staging'): version {version.version}, "
      f"weir.version {version.tags['weir.version']}, run {run.info.run_name} {run.info.status}, "
      f"validate.accuracy {run.data.metrics['validate.accuracy']}")
assert version.tags["weir.version"] == "2", version.tags
assert run.data.metrics["validate.accuracy"] == float(sys.argv[2]), run.data.metrics
assert run.data.tags["weir.pipeline"] == "churn"
PY
fi

echo
echo "churn example: all checks passed"
