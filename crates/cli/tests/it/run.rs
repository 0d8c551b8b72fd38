//! `weir run` and `weir resume` as processes: outcomes and exit codes,
//! Ctrl-C, and a run killed with SIGKILL and resumed.

use crate::{stderr, stdout, weir_in};
use serde_json::Value as Json;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).expect("write test file");
}

fn json(output: &std::process::Output) -> Json {
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}\n{}", stdout(output), stderr(output)))
}

#[test]
fn a_run_succeeds_with_params_metrics_and_retries() {
    let dir = tempfile::tempdir().expect("temp dir");
    write(
        dir.path(),
        "p.yaml",
        "name: local\nparams: { who: world }\ndefaults: { executor: process }\nsteps:\n  hello:\n    run: |\n      echo \"hello ${{ params.who }}\"\n      echo '{\"acc\": 0.9}' > \"$WEIR_OUT/metrics.json\"\n  gate:\n    needs: [hello]\n    gate: [\"steps.hello.metrics.acc > 0.5\"]\n  flaky:\n    needs: [gate]\n    run: test -f marker || { touch marker; exit 3; }\n    retry: { limit: 1, delay: 1s }\n",
    );
    let out = weir_in(
        dir.path(),
        &["run", "p.yaml", "--param", "who=ana", "--output", "json"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let run = json(&out);
    assert_eq!(run["state"], "succeeded");
    assert_eq!(run["params"]["who"], "ana");
    assert_eq!(run["steps"][0]["attempts"][0]["metrics"]["acc"], 0.9);
    assert_eq!(
        run["steps"][1]["evidence"][0]["explanation"],
        "0.9 > 0.5 is true"
    );
    let flaky = &run["steps"][2]["attempts"];
    assert_eq!(flaky[0]["state"], "failed");
    assert_eq!(flaky[0]["reason"], "exit code 3");
    assert_eq!(flaky[1]["state"], "succeeded");
    assert!(
        stderr(&out).contains("flaky: running (attempt 2)"),
        "{}",
        stderr(&out)
    );
    assert!(dir.path().join(".weir/weir.db").exists());
    // The same audit entries as the daemon writes: the pipeline loaded,
    // the trigger (committed with the run), the gate's verdict.
    let id = run["id"].as_str().expect("id").to_owned();
    let data = dir.path().join(".weir");
    let entries = crate::audit_of(&data);
    // The trigger's entry commits with the run, so it may come before the
    // queued load entry.
    let mut actions: Vec<(&str, &str)> = entries
        .iter()
        .map(|e| (e.action.as_str(), e.subject.as_str()))
        .collect();
    actions.sort_unstable();
    let gate = format!("{id}/gate");
    assert_eq!(
        actions,
        [
            ("gate.decided", gate.as_str()),
            ("pipeline.loaded", "local"),
            ("run.triggered", id.as_str()),
        ]
    );
    assert_eq!(run["trigger"], "manual");
    assert_eq!(run["cause"]["kind"], "manual");
}

#[test]
fn a_failing_step_fails_the_run_with_exit_code_1() {
    let dir = tempfile::tempdir().expect("temp dir");
    write(
        dir.path(),
        "p.yaml",
        "name: fails\ndefaults: { executor: process }\nsteps:\n  a: { run: exit 4 }\n  b: { needs: [a], run: echo never }\n",
    );
    let out = weir_in(dir.path(), &["run", "p.yaml"]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(text.contains("a: failed (exit code 4)"), "{text}");
    assert!(text.contains("b: skipped (upstream 'a' failed)"), "{text}");
    assert!(
        text.contains("failed in ") && text.contains(": step 'a' failed: exit code 4"),
        "{text}"
    );
}

#[test]
fn bad_files_and_params_change_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    write(
        dir.path(),
        "p.yaml",
        "name: p\nsteps:\n  a: { run: echo, executor: process, needs: [nope] }\n",
    );
    let out = weir_in(dir.path(), &["run", "p.yaml"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).starts_with("p.yaml:3:"), "{}", stderr(&out));
    assert!(
        !dir.path().join(".weir").exists(),
        "an invalid file must not create a store"
    );

    write(
        dir.path(),
        "q.yaml",
        "name: q\nparams: { lr: \"1\" }\nsteps:\n  a: { run: echo, executor: process }\n",
    );
    let out = weir_in(dir.path(), &["run", "q.yaml", "--param", "lrr=2"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "q.yaml: unknown param 'lrr' (did you mean 'lr'?)\n"
    );
}

/// Starts `weir` with `args` in `dir`, and returns it once a line of its
/// stdout contains `line`.
fn spawn_until(dir: &Path, args: &[&str], line: &str) -> std::process::Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("weir starts");
    let stdout = child.stdout.take().expect("piped");
    let mut lines = BufReader::new(stdout).lines();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(Instant::now() < deadline, "no '{line}' from weir");
        match lines.next() {
            Some(Ok(text)) if text.contains(line) => break,
            Some(Ok(_)) => {}
            _ => panic!("weir ended before '{line}'"),
        }
    }
    // Keep reading in the background so weir never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    child
}

fn pid_alive(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())).is_ok_and(|stat| {
        stat.rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z'))
    })
}

fn eventually_dead(pid: &str) -> bool {
    (0..250).any(|_| {
        let dead = !pid_alive(pid);
        if !dead {
            std::thread::sleep(Duration::from_millis(20));
        }
        dead
    })
}

#[test]
fn ctrl_c_cancels_stops_the_steps_and_exits_130() {
    let dir = tempfile::tempdir().expect("temp dir");
    write(
        dir.path(),
        "p.yaml",
        "name: long\ndefaults: { executor: process }\nsteps:\n  a: { run: echo $$ > pid; sleep 300 }\n  b: { needs: [a], run: echo never }\n",
    );
    let mut child = spawn_until(dir.path(), &["run", "p.yaml"], "a: running");
    let pid_file = dir.path().join(".weir/runs");
    let deadline = Instant::now() + Duration::from_secs(10);
    let pid = loop {
        let found = std::fs::read_dir(&pid_file)
            .ok()
            .and_then(|mut runs| runs.next())
            .and_then(|run| std::fs::read_to_string(run.ok()?.path().join("work/pid")).ok());
        if let Some(pid) = found.filter(|p| !p.trim().is_empty()) {
            break pid;
        }
        assert!(Instant::now() < deadline, "the step did not start");
        std::thread::sleep(Duration::from_millis(20));
    };
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .expect("SIGINT");
    let status = child.wait().expect("weir exits");
    assert_eq!(status.code(), Some(130));
    assert!(eventually_dead(&pid), "the step survived Ctrl-C");
}

#[test]
fn a_run_killed_with_sigkill_resumes_taking_up_the_step_that_ran_on() {
    let dir = tempfile::tempdir().expect("temp dir");
    write(
        dir.path(),
        "p.yaml",
        "name: crash\ndefaults: { executor: process }\nsteps:\n  a: { run: echo a >> \"$WEIR_WORK/a.count\" }\n  b:\n    needs: [a]\n    run: |\n      echo $$ > \"$WEIR_WORK/b.pid.$WEIR_ATTEMPT\"\n      echo b >> \"$WEIR_WORK/b.count\"\n      echo b started\n      sleep ${{ params.nap }}\n  c: { needs: [b], run: echo c >> \"$WEIR_WORK/c.count\" }\nparams: { nap: \"2\" }\n",
    );
    let mut child = spawn_until(
        dir.path(),
        &["run", "p.yaml", "--param", "nap=2"],
        "b: running",
    );
    let runs = dir.path().join(".weir/runs");
    let work = std::fs::read_dir(&runs)
        .expect("run folder")
        .next()
        .expect("one run")
        .expect("entry")
        .path()
        .join("work");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !work.join("b.pid.1").exists() {
        assert!(Instant::now() < deadline, "b did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().expect("SIGKILL");
    child.wait().expect("reaped");
    let orphan = std::fs::read_to_string(work.join("b.pid.1")).expect("pid");
    assert!(
        pid_alive(&orphan),
        "b's first attempt runs on, orphaned, after weir died"
    );

    let out = weir_in(dir.path(), &["resume", "--output", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let run = json(&out);
    assert_eq!(run["state"], "succeeded");
    let count = |name: &str| {
        std::fs::read_to_string(work.join(name))
            .map(|t| t.lines().count())
            .unwrap_or(0)
    };
    assert_eq!(count("a.count"), 1, "a ran again after the crash");
    // b's supervisor outlived weir: resume took b up, it did not start it
    // again.
    assert_eq!(count("b.count"), 1, "b ran twice");
    assert_eq!(count("c.count"), 1);
    let b = &run["steps"][1]["attempts"];
    assert_eq!(b.as_array().map(Vec::len), Some(1), "{b}");
    assert_eq!(b[0]["state"], "succeeded");
    assert_eq!(
        run["steps"][0]["attempts"].as_array().map(Vec::len),
        Some(1)
    );
    assert!(!pid_alive(&orphan), "b's process outlived its attempt");

    let again = weir_in(dir.path(), &["resume"]);
    assert_eq!(again.status.code(), Some(0));
    assert!(
        stderr(&again).starts_with("no unfinished runs"),
        "{}",
        stderr(&again)
    );
}

#[test]
fn a_run_past_its_timeout_is_stopped_and_fails() {
    let dir = tempfile::tempdir().expect("temp dir");
    write(
        dir.path(),
        "p.yaml",
        "name: slow\ndefaults: { executor: process }\nsteps:\n  a: { run: sleep 300 }\n",
    );
    let started = Instant::now();
    let out = weir_in(
        dir.path(),
        &[
            "run",
            "p.yaml",
            "--timeout",
            "1s",
            "--grace",
            "1",
            "--output",
            "json",
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(started.elapsed() < Duration::from_secs(20));
    let run = json(&out);
    assert_eq!(run["state"], "failed");
    assert_eq!(run["reason"], "the run timed out after 1s");
    assert_eq!(run["steps"][0]["state"], "cancelled");
    let out = weir_in(dir.path(), &["run", "p.yaml", "--timeout", "soon"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("expected a number and a unit"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn the_quickstart_runs_in_docker() {
    if std::env::var("WEIR_TEST_DOCKER").as_deref() != Ok("1") {
        eprintln!("docker run test skipped: set WEIR_TEST_DOCKER=1 (and run scripts/test-image)");
        return;
    }
    let data = tempfile::tempdir().expect("temp dir");
    let data_flag = data.path().display().to_string();
    let out = crate::weir(&[
        "run",
        "pipelines/quickstart.yaml",
        "--param",
        "who=ci",
        "--data",
        &data_flag,
        "--output",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let run = json(&out);
    assert_eq!(run["state"], "succeeded");
    let attempt = &run["steps"][0]["attempts"][0];
    assert!(
        attempt["image"]
            .as_str()
            .is_some_and(|i| i.starts_with("sha256:")),
        "{attempt}"
    );
}

#[test]
fn an_unreachable_docker_engine_is_one_clear_error_and_changes_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    write(
        dir.path(),
        "p.yaml",
        "name: boxed\nsteps:\n  a: { image: busybox, run: echo }\n",
    );
    let out = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["run", "p.yaml"])
        .current_dir(dir.path())
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .output()
        .expect("weir runs");
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.starts_with("error: cannot reach the Docker engine at unix:///nonexistent/docker.sock"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(!dir.path().join(".weir").exists());
}

#[test]
fn concurrent_gpu_steps_hold_disjoint_devices() {
    let dir = tempfile::tempdir().expect("temp dir");
    write(
        dir.path(),
        "p.yaml",
        "name: gpus\ndefaults: { executor: process }\nsteps:\n  a: { run: 'echo $CUDA_VISIBLE_DEVICES > a.gpus; sleep 1', resources: { gpus: 1 } }\n  b: { run: 'echo $CUDA_VISIBLE_DEVICES > b.gpus; sleep 1', resources: { gpus: 1 } }\n  both: { needs: [a, b], run: 'echo $CUDA_VISIBLE_DEVICES > both.gpus', resources: { gpus: 2 } }\n  none: { needs: [both], run: 'echo \"[$CUDA_VISIBLE_DEVICES]\" > none.gpus' }\n  greedy: { run: 'true', resources: { gpus: 3 } }\n",
    );
    let out = weir_in(
        dir.path(),
        &[
            "run",
            "p.yaml",
            "--gpus",
            "0,1",
            "--max-running",
            "4",
            "--output",
            "json",
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "greedy cannot run: {}",
        stderr(&out)
    );
    let run = json(&out);
    let work = dir
        .path()
        .join(".weir/runs")
        .join(run["id"].as_str().expect("id"))
        .join("work");
    let read = |name: &str| {
        std::fs::read_to_string(work.join(name))
            .expect("written")
            .trim()
            .to_owned()
    };
    let mut pair = [read("a.gpus"), read("b.gpus")];
    pair.sort();
    assert_eq!(pair, ["0", "1"]);
    assert_eq!(read("both.gpus"), "0,1");
    assert_eq!(read("none.gpus"), "[]", "a step without gpus sees none");
    assert_eq!(
        run["steps"][4]["reason"],
        "asks for 3 GPUs; this host has 2"
    );
    assert_eq!(
        run["steps"][0]["attempts"][0]["gpus"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );
}

/// Reads a step's stored log from a run's store.
fn stored_log(data: &Path, run: &str, step: usize, attempt: u32) -> String {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let store = weir_store::Store::connect(&format!("sqlite://{}/weir.db", data.display()))
            .await
            .expect("store");
        let log = store.read_log(run, step, attempt).await.expect("log");
        store.close().await;
        String::from_utf8_lossy(&log).into_owned()
    })
}

#[test]
fn a_container_outlives_a_killed_weir_and_is_taken_up_again() {
    if std::env::var("WEIR_TEST_DOCKER").as_deref() != Ok("1") {
        eprintln!(
            "docker re-attach test skipped: set WEIR_TEST_DOCKER=1 (and run scripts/test-image)"
        );
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    write(
        dir.path(),
        "p.yaml",
        "name: survive\ndefaults: { image: weir-test/busybox:latest, pull: never }\nsteps:\n  a:\n    run: |\n      echo start >> /weir/work/starts\n      echo first\n      sleep 3\n      echo second\n  b: { needs: [a], run: echo b }\n",
    );
    let mut child = spawn_until(dir.path(), &["run", "p.yaml"], "a: running");
    let data = dir.path().join(".weir");
    let runs = data.join("runs");
    let deadline = Instant::now() + Duration::from_secs(20);
    let run_id = loop {
        let found = std::fs::read_dir(&runs)
            .ok()
            .and_then(|mut d| d.next())
            .and_then(Result::ok);
        if let Some(entry) = found {
            break entry.file_name().to_string_lossy().into_owned();
        }
        assert!(Instant::now() < deadline, "no run folder");
        std::thread::sleep(Duration::from_millis(20));
    };
    // Wait until the first line is stored, so a doubled line would show.
    while !stored_log(&data, &run_id, 0, 1).contains("first") {
        assert!(
            Instant::now() < deadline,
            "the first line never reached the store"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().expect("SIGKILL");
    child.wait().expect("reaped");

    let out = weir_in(dir.path(), &["resume", "--output", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let run = json(&out);
    assert_eq!(run["state"], "succeeded");
    let attempts = run["steps"][0]["attempts"].as_array().expect("attempts");
    assert_eq!(
        attempts.len(),
        1,
        "the container was taken up, not started again: {attempts:?}"
    );
    assert_eq!(attempts[0]["state"], "succeeded");
    assert_eq!(
        stored_log(&data, &run_id, 0, 1),
        "first\nsecond\n",
        "no line lost, none doubled"
    );
    let starts = std::fs::read_to_string(runs.join(&run_id).join("work/starts")).expect("starts");
    assert_eq!(starts, "start\n", "exactly one container ran the step");
    let left = Command::new("docker")
        .args(["ps", "-aq", "--filter", &format!("label=weir.run={run_id}")])
        .output()
        .expect("docker ps");
    assert!(
        String::from_utf8_lossy(&left.stdout).trim().is_empty(),
        "containers left behind"
    );
}
