#!/usr/bin/env python3
"""The crash suite: a mixed workload on a real `weir serve`, the daemon
SIGKILLed at random instants and restarted, or its database taken away;
then every guarantee checked against the store, the API and what the steps
themselves wrote.

The workload (pipelines/mixed.yaml, written by this script): a chain and a
fan-out of process steps (and a Docker step with --docker), a step that
fails once and is retried, an approval, a registration; started by hand,
by signed webhooks (some sent twice with the same delivery id) and by
drift reports. Each step appends `STEP ATTEMPT start|end` to a ledger in
its run's work folder and prints numbered lines.

The checks, printed with their figures:
  - every acknowledged trigger is stored: each 2xx run, delivery and
    drift report is there, with its run;
  - no run is left non-terminal;
  - no attempt started twice, no attempt the store does not know started,
    no two attempts of a step running at the same time;
  - no finished step run again: an attempt that ended (its `end` is in the
    ledger) is never recorded lost and started anew;
  - logs line for line: every attempt that ran to its exit has exactly
    the lines it printed, none lost or doubled;
  - the audit chain verifies;
  - no answer was a 500, and while the database was away the API said
    503 in the error shape.

  bench/chaos.py --weir target/debug/weir --kills 10 [--db postgres://…]
  bench/chaos.py --weir … --outage 5 --pg-stop 'CMD' --pg-start 'CMD' --db postgres://…
  bench/chaos.py --weir … --lock 5            (SQLite held by another process)

Exit status 0 when every check holds.
"""

import argparse
import hashlib
import hmac
import json
import os
import random
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

LINES = 12
SECRET = "chaos-secret"
TOKEN = "chaos-token-" + "0" * 52


def pipeline(docker):
    def step(body_lines, extra=""):
        return (
            '      echo "$WEIR_STEP $WEIR_ATTEMPT start" >> "$WEIR_WORK/ledger"\n'
            f'      i=1; while [ $i -le {LINES} ]; do echo "$WEIR_STEP line $i"; i=$((i+1)); sleep 0.04; done\n'
            + extra
            + '      echo "$WEIR_STEP $WEIR_ATTEMPT end" >> "$WEIR_WORK/ledger"\n'
        )

    text = (
        "name: mixed\n"
        "on:\n"
        "  webhook: { secret_env: CHAOS_SECRET }\n"
        "  drift:\n"
        "    - { metric: psi, above: 0.2 }\n"
        "defaults: { executor: process }\n"
        "steps:\n"
        "  ingest:\n    run: |\n" + step("") +
        "  shard:\n    needs: [ingest]\n    matrix: { part: [a, b, c] }\n    run: |\n" + step("") +
        "  flaky:\n    needs: [shard]\n    retry: { limit: 2, delay: 100ms }\n    run: |\n"
        + step("", '      if [ "$WEIR_ATTEMPT" = 1 ]; then echo "$WEIR_STEP $WEIR_ATTEMPT end" >> "$WEIR_WORK/ledger"; exit 3; fi\n')
    )
    train_needs = "[flaky]"
    if docker:
        text += (
            "  boxed:\n    needs: [ingest]\n    executor: docker\n    image: weir-test/busybox:latest\n    run: |\n"
            + step("")
        )
        train_needs = "[flaky, boxed]"
    text += (
        f"  train:\n    needs: {train_needs}\n    run: |\n"
        + step("", '      echo model > "$WEIR_WORK/model.bin"; echo \'{"acc": 0.9}\' > "$WEIR_OUT/metrics.json"\n')
        + "  approve: { needs: [train], approval: {} }\n"
        "  register:\n    needs: [approve]\n    register: { model: chaos, artifact: model.bin, alias: staging }\n"
    )
    return text


class Api:
    def __init__(self, base):
        self.base = base
        self.statuses = []
        self.lock = threading.Lock()

    def call(self, method, path, body=None, headers=None, auth=True, timeout=15):
        data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        request = urllib.request.Request(self.base + path, data=data, method=method)
        if auth:
            request.add_header("Authorization", f"Bearer {TOKEN}")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        for k, v in (headers or {}).items():
            request.add_header(k, v)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as answer:
                status, text = answer.status, answer.read()
        except urllib.error.HTTPError as e:
            status, text = e.code, e.read()
        with self.lock:
            self.statuses.append((method, path, status, text[:300]))
        try:
            return status, json.loads(text) if text else None
        except ValueError:
            return status, text


DAEMONS = []  # every Daemon made, for run() to kill at the end


class Daemon:
    def __init__(self, args, work, port):
        DAEMONS.append(self)
        self.args, self.work, self.port = args, work, port
        self.proc = None
        # Beside the work folder, not in it: that one may be made full.
        self.log_path = work.rstrip("/") + ".serve.log"
        if args.full_log_inside:
            self.log_path = os.path.join(work, "serve.log")
        self.log = open(self.log_path, "ab")

    def start(self):
        env = dict(os.environ, CHAOS_SECRET=SECRET, WEIR_TOKEN=TOKEN, WEIR_LOG=os.environ.get("WEIR_LOG", "warn"))
        cmd = [self.args.weir, "serve", "--listen", f"127.0.0.1:{self.port}"]
        if self.args.db:
            cmd += ["--db", self.args.db]
        started = time.monotonic()
        self.proc = subprocess.Popen(cmd, cwd=self.work, env=env, stdout=self.log, stderr=self.log)
        api = Api(f"http://127.0.0.1:{self.port}")
        while True:
            try:
                status, _ = api.call("GET", "/healthz", auth=False, timeout=2)
                if status == 200:
                    return time.monotonic() - started
            except OSError:
                pass
            if self.proc.poll() is not None:
                raise SystemExit(f"weir serve exited with {self.proc.returncode}; see {self.log_path}")
            if time.monotonic() - started > 60:
                raise SystemExit("weir serve did not become healthy within 60 s")
            time.sleep(0.02)

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Workload:
    """What was sent, and what the daemon acknowledged."""

    def __init__(self, api, rng):
        self.api, self.rng = api, rng
        self.runs = set()  # run ids acknowledged, by any trigger
        self.deliveries = {}  # delivery id -> run id
        self.drifts = 0  # drift reports acknowledged
        self.sent = 0
        self.next_delivery = 0

    def fire(self):
        for _ in range(self.rng.randint(1, 3)):
            self.manual()
        for _ in range(self.rng.randint(0, 2)):
            self.webhook()
        if self.rng.random() < 0.4:
            self.drift()

    def manual(self):
        self.sent += 1
        try:
            status, body = self.api.call("POST", "/api/v1/runs", {"pipeline": "mixed"})
        except OSError:
            return
        if 200 <= status < 300:
            self.runs.add(body["id"])

    def webhook(self):
        replay = self.deliveries and self.rng.random() < 0.3
        delivery = self.rng.choice(sorted(self.deliveries)) if replay else f"d-{os.getpid()}-{self.next_delivery}"
        self.next_delivery += not replay
        body = json.dumps({"ref": delivery}).encode()
        signature = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        self.sent += 1
        try:
            status, answer = self.api.call(
                "POST", "/api/v1/hooks/mixed", body,
                headers={"X-Weir-Signature-256": signature, "X-Weir-Delivery": delivery}, auth=False)
        except OSError:
            return
        if 200 <= status < 300:
            run = answer.get("run")
            if delivery in self.deliveries and self.deliveries[delivery] != run:
                fail(f"delivery {delivery} answered run {run} after {self.deliveries[delivery]}")
            self.deliveries[delivery] = run
            if run:
                self.runs.add(run)

    def drift(self):
        self.sent += 1
        try:
            status, answer = self.api.call(
                "POST", "/api/v1/events/drift", {"pipeline": "mixed", "metric": "psi", "value": 0.5})
        except OSError:
            return
        if 200 <= status < 300:
            self.drifts += 1
            if answer.get("run"):
                self.runs.add(answer["run"])

    def approve_waiting(self):
        try:
            status, runs = self.api.call("GET", "/api/v1/runs?limit=1000")
        except OSError:
            return 0
        if status != 200:
            return 0
        open_runs = 0
        for summary in runs:
            if summary["state"] in ("succeeded", "failed", "cancelled", "skipped"):
                continue
            open_runs += 1
            try:
                status, run = self.api.call("GET", f"/api/v1/runs/{summary['id']}")
                if status != 200:
                    continue
                for step in run["steps"]:
                    if step["id"] == "approve" and step["state"] == "waiting":
                        self.api.call("POST", f"/api/v1/runs/{run['id']}/steps/approve/approval",
                                      {"approved": True, "comment": "chaos"})
            except OSError:
                pass
        return open_runs


FAILURES = []


def fail(message):
    FAILURES.append(message)
    print(f"FAIL: {message}", flush=True)


def log_of(api, run, step, attempt):
    text, offset = "", 0
    while True:
        status, chunk = api.call("GET", f"/api/v1/runs/{run}/steps/{urllib.request.quote(step, safe='')}/logs?attempt={attempt}&offset={offset}")
        if status != 200:
            return None
        text += chunk["data"]
        if chunk["next"] == offset or not chunk["data"]:
            return text
        offset = chunk["next"]


def check(api, work, workload, data, strict_logs=True):
    status, runs = api.call("GET", "/api/v1/runs?limit=1000")
    ids = {r["id"] for r in runs}
    print(f"runs: {len(ids)} stored, {len(workload.runs)} acknowledged, {workload.sent} triggers sent")
    for run in sorted(workload.runs - ids):
        fail(f"acknowledged run {run} is not stored")
    status, events = api.call("GET", "/api/v1/events?limit=1000")
    webhook_runs = {e["run_id"] for e in events if e["kind"] == "webhook" and e["outcome"] == "triggered"}
    for delivery, run in workload.deliveries.items():
        if run and run not in webhook_runs:
            fail(f"acknowledged delivery {delivery} (run {run}) has no stored event")
    drift_events = sum(1 for e in events if e["kind"] == "drift")
    if drift_events < workload.drifts:
        fail(f"{workload.drifts} drift reports acknowledged, {drift_events} stored")
    counts = {"attempts": 0, "lost": 0, "taken_up_or_ran": 0, "logs_checked": 0}
    for run_id in sorted(ids):
        status, run = api.call("GET", f"/api/v1/runs/{run_id}")
        if run["state"] not in ("succeeded", "failed", "cancelled", "skipped"):
            fail(f"run {run_id} left {run['state']}")
        ledger = {}
        order = {}  # (step, attempt) -> [line number of start, of end]
        path = os.path.join(data, "runs", run_id, "work", "ledger")
        if os.path.exists(path):
            for n, line in enumerate(open(path)):
                step, attempt, what = line.rsplit(" ", 2)
                what = what.strip()
                ledger.setdefault((step, int(attempt)), []).append(what)
                order.setdefault((step, int(attempt)), {})[what] = n
        # Two attempts of one step at once: one started while another that
        # went on to its end had started and not yet ended.
        for (step, a), marks in order.items():
            for (other, b), theirs in order.items():
                if other == step and a != b and "end" in marks and "start" in marks and "start" in theirs:
                    if marks["start"] < theirs["start"] < marks["end"]:
                        fail(f"{run_id} {step} attempt {b} started while attempt {a} still ran")
        for step in run["steps"]:
            known = {a["number"]: a for a in step["attempts"]}
            for (sid, number), marks in ledger.items():
                if sid != step["id"]:
                    continue
                if marks.count("start") > 1:
                    fail(f"{run_id} {sid} attempt {number} started {marks.count('start')} times")
                if number not in known:
                    fail(f"{run_id} {sid} attempt {number} ran but the store has no such attempt")
                elif "end" in marks and known[number]["state"] == "lost":
                    fail(f"{run_id} {sid} attempt {number} ended but was recorded lost and run again")
            for a in step["attempts"]:
                counts["attempts"] += 1
                if a["state"] == "lost":
                    counts["lost"] += 1
                    marks = ledger.get((step["id"], a["number"]), [])
                    # Lost means never started, or its process died with
                    # weir: one that ran on was lost in vain.
                    kind = "ran" if marks else "never ran"
                    counts.setdefault(f"lost ({kind})", 0)
                    counts[f"lost ({kind})"] += 1
                    print(f"  lost: {run_id} {step['id']} attempt {a['number']} ({kind})")
                    continue
                if a["state"] not in ("succeeded", "failed") or step["id"] in ("approve", "register"):
                    continue
                if not strict_logs:
                    # With the disk full a step's own writes fail: its log
                    # is what it managed to print.
                    continue
                if "end" not in ledger.get((step["id"], a["number"]), []):
                    continue
                expected = "".join(f"{step['id']} line {i}\n" for i in range(1, LINES + 1))
                log = log_of(api, run_id, step["id"], a["number"])
                counts["logs_checked"] += 1
                if log != expected:
                    fail(f"{run_id} {step['id']} attempt {a['number']}: log differs: {log!r}")
    detail = ", ".join(f"{k} {v}" for k, v in counts.items() if k.startswith("lost ("))
    print(f"attempts: {counts['attempts']}, lost: {counts['lost']} ({detail or 'none'}), logs checked line for line: {counts['logs_checked']}")
    # A debug build checks each signature slowly: give it time.
    status, verified = api.call("GET", "/api/v1/audit/verify", timeout=600)
    if status != 200 or not verified.get("verified"):
        fail(f"audit chain does not verify: {verified}")
    else:
        print(f"audit: {verified.get('entries')} entries, chain verifies")
    five_hundreds = [s for s in api.statuses if s[2] >= 500 and s[2] != 503]
    for method, path, status, text in five_hundreds[:10]:
        fail(f"{method} {path} answered {status}: {text!r}")


def wait_all_terminal(workload, limit):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if workload.approve_waiting() == 0:
            return True
        time.sleep(0.3)
    return False


def outage(api, workload, seconds, take, give, probe_name):
    """Takes the database away (`take`) for `seconds` while runs are in
    flight, then gives it back (`give`, on a timer of its own, so a probe
    waiting for the database never holds the outage open), probing the API
    until it is back; what it answered is returned."""
    answers = []
    take()
    back = threading.Event()

    def restore():
        give()
        back.set()

    threading.Timer(seconds, restore).start()
    while not back.is_set():
        for method, path, body, auth in (
            ("GET", "/healthz", None, False),
            ("POST", "/api/v1/runs", {"pipeline": "mixed"}, True),
            ("GET", "/api/v1/runs?limit=5", None, True),
        ):
            try:
                status, answer = api.call(method, path, body, auth=auth, timeout=30)
            except OSError as e:
                fail(f"{probe_name}: {method} {path} got no answer: {e}")
                continue
            answers.append((method, path, status))
            # /healthz is a probe's plain text; the API speaks its error shape.
            if status == 503 and path.startswith("/api/") and not (isinstance(answer, dict) and "error" in answer and {"code", "message"} <= set(answer["error"])):
                fail(f"{probe_name}: {method} {path} 503 outside the error shape: {answer!r}")
            if status in (200, 201, 202) and method == "POST":
                workload.runs.add(answer["id"])
        time.sleep(0.5)
    return answers


def shell(command):
    """A callable that runs `command`, for outage()."""
    return lambda: subprocess.run(command, shell=True, check=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weir", required=True)
    parser.add_argument("--db", help="postgres://… (a fresh database is made in it); SQLite in the work folder otherwise")
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--seed", type=int, default=int(time.time()))
    parser.add_argument("--docker", action="store_true", help="add a Docker step (needs weir-test/busybox)")
    parser.add_argument("--outage", type=float, help="stop the database this many seconds mid-run")
    parser.add_argument("--pg-stop")
    parser.add_argument("--pg-start")
    parser.add_argument("--lock", type=float, help="hold the SQLite database locked this many seconds mid-run")
    parser.add_argument("--full", type=float, help="fill the data folder's file system (a 64 MiB tmpfs; needs root) this many seconds mid-run")
    parser.add_argument("--full-log-inside", action="store_true", help="with --full: the daemon's own log on the full disk too")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    args.weir = os.path.abspath(args.weir)
    rng = random.Random(args.seed)
    work = tempfile.mkdtemp(prefix="weir-chaos-")
    if args.full:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", work], check=True)
    print(f"seed {args.seed}, work folder {work}, db {'postgres' if args.db else 'sqlite'}", flush=True)
    os.makedirs(os.path.join(work, "pipelines"))
    with open(os.path.join(work, "pipelines", "mixed.yaml"), "w") as f:
        f.write(pipeline(args.docker))
    if args.db:
        name = f"chaos_{os.getpid()}"
        subprocess.run(["psql", args.db, "-qc", f"CREATE DATABASE {name}"], check=True)
        args.db = args.db.rsplit("/", 1)[0] + "/" + name
    data = os.path.join(work, ".weir")
    port = free_port()
    daemon = Daemon(args, work, port)
    api = Api(f"http://127.0.0.1:{port}")
    workload = Workload(api, rng)
    startups, kills = [], 0
    for cycle in range(args.kills):
        startups.append(daemon.start())
        workload.fire()
        workload.approve_waiting()
        time.sleep(rng.uniform(0.05, 2.0))
        daemon.kill()
        kills += 1
    startups.append(daemon.start())
    if args.outage:
        workload.fire()
        time.sleep(1.0)
        answers = outage(api, workload, args.outage, shell(args.pg_stop), shell(args.pg_start), f"outage {args.outage}s")
        codes = sorted({s for _, _, s in answers})
        print(f"during the {args.outage:g} s outage: {len(answers)} probes answered {codes}")
        if 503 not in codes:
            fail("no 503 while the database was away")
        workload.fire()
    if args.lock:
        workload.fire()
        time.sleep(1.0)
        db = sqlite3.connect(os.path.join(data, "weir.db"), timeout=30, check_same_thread=False)

        def release():
            db.rollback()
            db.close()

        answers = outage(api, workload, args.lock, lambda: db.execute("BEGIN EXCLUSIVE"), release, f"lock {args.lock}s")
        codes = sorted({s for _, _, s in answers})
        print(f"during the {args.lock:g} s lock: {len(answers)} probes answered {codes}")
        workload.fire()
    if args.full:
        workload.fire()
        time.sleep(1.0)
        filler = os.path.join(work, "filler")
        fill = f"dd if=/dev/zero of={filler} bs=1M 2>/dev/null; sync; true"
        answers = outage(api, workload, args.full, shell(fill), shell(f"rm -f {filler}"), f"disk full {args.full}s")
        codes = sorted({s for _, _, s in answers})
        print(f"while the disk was full for {args.full:g} s: {len(answers)} probes answered {codes}")
        workload.fire()
    if not wait_all_terminal(workload, 180):
        fail("runs still open 180 s after the last restart")
    check(api, work, workload, data, strict_logs=not args.full)
    if not args.db:
        verdict = sqlite3.connect(os.path.join(data, "weir.db")).execute("PRAGMA integrity_check").fetchone()[0]
        if verdict != "ok":
            fail(f"the SQLite database is damaged: {verdict}")
        else:
            print("SQLite integrity check: ok")
    daemon.proc.send_signal(signal.SIGTERM)
    daemon.proc.wait(timeout=30)
    daemon.log.flush()
    with open(daemon.log_path, errors="replace") as f:
        waits = sum(1 for line in f if "the store is away" in line or "cannot store a step log yet" in line)
    print(f"writes that waited for the store: {waits}")
    print(f"kills: {kills}, start-up to healthy: median {statistics.median(startups) * 1000:.0f} ms, max {max(startups) * 1000:.0f} ms")
    if FAILURES:
        print(f"{len(FAILURES)} check(s) failed; work folder kept: {work}, daemon's log: {daemon.log_path}")
        return 1
    print("every check holds")
    daemon.log.close()
    if args.full:
        # The supervisor may take a moment to leave the folder.
        for _ in range(20):
            if subprocess.run(["umount", work], capture_output=True).returncode == 0:
                break
            time.sleep(0.5)
        else:
            # Still held: detach it now, it goes when the last user leaves.
            subprocess.run(["umount", "-l", work])
    if not args.keep:
        subprocess.run(["rm", "-rf", work, daemon.log_path])
    return 0


def run():
    """main(), and whatever weir serve it started is killed however it
    ends (a failed check, an exception, Ctrl-C)."""
    try:
        return main()
    finally:
        for daemon in DAEMONS:
            if daemon.proc and daemon.proc.poll() is None:
                daemon.proc.kill()
                daemon.proc.wait()


if __name__ == "__main__":
    sys.exit(run())
