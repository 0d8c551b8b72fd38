//! `weir serve` with the client commands, over real HTTP, as processes.

use crate::{stderr, stdout};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A daemon on a free port, killed when dropped.
struct Daemon {
    child: Child,
    addr: String,
    /// What it wrote on stderr so far (its log lines).
    log: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Daemon {
    /// Its log so far.
    fn log(&self) -> String {
        self.log.lock().expect("log").clone()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(dir: &Path) -> Daemon {
    serve_with(dir, "4")
}

fn serve_with(dir: &Path, max_running: &str) -> Daemon {
    let mut command = Command::new(env!("CARGO_BIN_EXE_weir"));
    command.args([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--max-running",
        max_running,
    ]);
    spawn_daemon(command.current_dir(dir))
}

/// Starts `command` (a `weir serve`) and waits for its address; its
/// stdout is drained and its stderr kept.
fn spawn_daemon(command: &mut Command) -> Daemon {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("weir serve starts");
    let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let errors = BufReader::new(child.stderr.take().expect("piped"));
    let sink = std::sync::Arc::clone(&log);
    std::thread::spawn(move || {
        for line in errors.lines().map_while(Result::ok) {
            let mut log = sink.lock().expect("log");
            log.push_str(&line);
            log.push('\n');
        }
    });
    let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
    let line = lines.next().and_then(Result::ok).unwrap_or_default();
    let Some(addr) = line.rsplit_once(" on ").map(|(_, a)| a.to_owned()) else {
        let _ = child.kill();
        let _ = child.wait();
        std::thread::sleep(Duration::from_millis(100));
        panic!(
            "no address in '{line}'; stderr: {}",
            log.lock().expect("log")
        );
    };
    std::thread::spawn(move || for _ in lines {});
    Daemon { child, addr, log }
}

fn client(dir: &Path, daemon: &Daemon, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(args)
        .args(["--addr", &daemon.addr])
        .current_dir(dir)
        .output()
        .expect("weir runs")
}

/// Triggers a run (`args`: the pipeline and its flags) and returns its id.
fn trigger(dir: &Path, daemon: &Daemon, args: &[&str]) -> String {
    let mut full = vec!["trigger"];
    full.extend_from_slice(args);
    full.extend(["--output", "json"]);
    let out = client(dir, daemon, &full);
    let run: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", stderr(&out)));
    run["id"].as_str().expect("id").to_owned()
}

fn setup(pipeline: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir(dir.path().join("pipelines")).expect("mkdir");
    std::fs::write(dir.path().join("pipelines/p.yaml"), pipeline).expect("write");
    std::fs::write(
        dir.path().join("pipelines/broken.yaml"),
        "name: Broken\nsteps: {}\n",
    )
    .expect("write");
    dir
}

const QUICK: &str = "name: quick\nparams: { who: world }\ndefaults: { executor: process }\nsteps:\n  hello: { run: 'echo hello; echo \"{\\\"acc\\\": 0.9}\" > $WEIR_OUT/metrics.json' }\n  gate: { needs: [hello], gate: ['steps.hello.metrics.acc > 0.5'] }\n  long: { needs: [gate], if: params.who != 'wait', run: 'true' }\n  nap: { needs: [gate], if: params.who == 'wait', run: 'sleep 300' }\n  doze: { needs: [gate], if: params.who == 'slow', run: 'for i in 1 2 3 4 5; do echo doze $i; sleep 0.3; done' }\n  talk: { needs: [gate], if: params.who == 'talk', run: 'for i in 1 2 3; do echo line $i; sleep 0.3; done' }\n";

#[test]
fn trigger_wait_status_runs_and_errors_over_http() {
    let dir = setup(QUICK);
    std::fs::write(
        dir.path().join("pipelines/nightly.yaml"),
        "name: nightly\non:\n  manual: false\n  schedule:\n    - cron: \"0 3 * * *\"\n      timezone: Europe/Berlin\ndefaults: { executor: process }\nsteps:\n  a: { run: 'true' }\n",
    )
    .expect("write");
    let daemon = serve(dir.path());
    let out = client(dir.path(), &daemon, &["trigger", "quick", "--wait"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(stdout(&out).contains("gate: succeeded"), "{}", stdout(&out));

    let out = client(dir.path(), &daemon, &["runs", "--output", "json"]);
    let runs: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(runs[0]["state"], "succeeded");
    let id = runs[0]["id"].as_str().expect("id").to_owned();
    let out = client(dir.path(), &daemon, &["status", &id]);
    assert!(
        stdout(&out).contains("holds: steps.hello.metrics.acc > 0.5 — 0.9 > 0.5 is true"),
        "{}",
        stdout(&out)
    );

    let out = client(dir.path(), &daemon, &["trigger", "quik"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr(&out),
        "error: no pipeline 'quik' (did you mean 'quick'?) (HTTP 404)\n"
    );
    let out = client(
        dir.path(),
        &daemon,
        &["trigger", "quick", "--param", "nope=1"],
    );
    assert!(
        stderr(&out).contains("unknown param 'nope'"),
        "{}",
        stderr(&out)
    );
    let out = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["runs", "--addr", &daemon.addr])
        .env("WEIR_TOKEN", "wrong")
        .current_dir(dir.path())
        .output()
        .expect("runs");
    assert!(
        stderr(&out).contains("missing or wrong bearer token"),
        "{}",
        stderr(&out)
    );
    let out = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["runs", "--addr", "http://127.0.0.1:1"])
        .output()
        .expect("runs");
    assert_eq!(
        stderr(&out),
        "error: cannot reach weir at http://127.0.0.1:1 (connection refused): is 'weir serve' running?\n"
    );

    // Backfill and events as tables.
    let range = [
        "--from",
        "2026-01-01T00:00:00Z",
        "--to",
        "2026-01-03T23:00:00Z",
    ];
    let backfill = |pipeline: &str| {
        let mut args = vec!["backfill", pipeline];
        args.extend(range);
        client(dir.path(), &daemon, &args)
    };
    let out = backfill("nightly");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.starts_with("2026-01-01T02:00:00Z  run "),
        "03:00 in Berlin: {text}"
    );
    assert!(
        text.ends_with("3 run(s) started, 0 slot(s) already run\n"),
        "{text}"
    );
    assert_eq!(
        stdout(&backfill("nightly")),
        "0 run(s) started, 3 slot(s) already run\n"
    );
    let out = backfill("quick");
    assert_eq!(
        stderr(&out),
        "error: pipeline 'quick' has no schedule to backfill (HTTP 422)\n"
    );
    let report = serde_json::json!({"pipeline": "quick", "metric": "psi", "value": 0.5});
    let (status, _) = post_json(dir.path(), &daemon, "/api/v1/events/drift", report);
    assert_eq!(status, 200);
    let events = stdout(&client(dir.path(), &daemon, &["events"]));
    let lines: Vec<&str> = events.lines().collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(
        lines[0].starts_with("ID     KIND     PIPELINE"),
        "{lines:?}"
    );
    assert!(
        lines[1].starts_with("1      drift    quick ")
            && lines[1].ends_with(" no rule for metric 'psi'"),
        "{lines:?}"
    );

    let token =
        std::fs::read_to_string(dir.path().join(".weir/token")).expect("token made at first start");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.path().join(".weir/token"))
        .expect("meta")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(token.len(), 64);
}

#[test]
fn cancel_stops_a_run_and_a_killed_daemon_finishes_its_runs_on_restart() {
    let dir = setup(QUICK);
    let daemon = serve(dir.path());
    let out = client(
        dir.path(),
        &daemon,
        &[
            "trigger", "quick", "--param", "who=wait", "--output", "json",
        ],
    );
    let run: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let id = run["id"].as_str().expect("id").to_owned();
    wait_for(dir.path(), &daemon, &id, |run| {
        run["steps"][3]["state"] == "running"
    });
    let out = client(dir.path(), &daemon, &["cancel", &id]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let run = wait_for(dir.path(), &daemon, &id, |run| run["state"] == "cancelled");
    assert_eq!(run["steps"][3]["state"], "cancelled");

    // A run in flight when the daemon is killed (SIGKILL) is finished by
    // the next daemon: the process step that was running outlived it (its
    // supervisor did) and is taken up, its log continuing line for line.
    let id = trigger(dir.path(), &daemon, &["quick", "--param", "who=slow"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !stdout(&client(dir.path(), &daemon, &["logs", &id, "doze"])).contains("doze 1") {
        assert!(Instant::now() < deadline, "doze never printed");
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(daemon);
    let daemon = serve(dir.path());
    let run = wait_for(dir.path(), &daemon, &id, |run| run["state"] == "succeeded");
    let doze = &run["steps"][4]["attempts"];
    assert_eq!(doze.as_array().map(Vec::len), Some(1), "{doze}");
    assert_eq!(doze[0]["state"], "succeeded", "{doze}");
    assert_eq!(
        stdout(&client(dir.path(), &daemon, &["logs", &id, "doze"])),
        "doze 1\ndoze 2\ndoze 3\ndoze 4\ndoze 5\n",
        "a line lost or doubled across the crash"
    );
    assert_eq!(
        run["steps"][0]["attempts"].as_array().map(Vec::len),
        Some(1),
        "hello ran once"
    );
}

fn wait_for(
    dir: &Path,
    daemon: &Daemon,
    id: &str,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = client(dir, daemon, &["status", id, "--output", "json"]);
        if let Ok(run) = serde_json::from_slice::<serde_json::Value>(&out.stdout)
            && done(&run)
        {
            return run;
        }
        assert!(
            Instant::now() < deadline,
            "run {id} never got there: {}",
            stdout(&out)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn logs_are_served_and_followed() {
    let dir = setup(QUICK);
    let daemon = serve(dir.path());
    let id = trigger(dir.path(), &daemon, &["quick", "--param", "who=talk"]);
    wait_for(dir.path(), &daemon, &id, |run| {
        run["steps"][5]["state"] == "running"
    });
    let out = client(dir.path(), &daemon, &["logs", &id, "talk", "--follow"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "line 1\nline 2\nline 3\n",
        "followed to the end, nothing doubled"
    );
    let out = client(dir.path(), &daemon, &["logs", &id]);
    assert_eq!(
        stdout(&out),
        "== hello (attempt 1) ==\nhello\n== long (attempt 1) ==\n== talk (attempt 1) ==\nline 1\nline 2\nline 3\n"
    );
    let out = client(dir.path(), &daemon, &["logs", &id, "tlak"]);
    assert!(
        stderr(&out).contains("has no step 'tlak'"),
        "{}",
        stderr(&out)
    );
}

/// Log lines written to a pipe or a file are plain text: colours are for a
/// terminal only.
#[test]
fn text_log_lines_off_a_terminal_carry_no_colour_codes() {
    let dir = setup(QUICK);
    let daemon = serve(dir.path());
    let id = trigger(dir.path(), &daemon, &["quick", "--param", "who=talk"]);
    wait_for(dir.path(), &daemon, &id, |run| run["state"] == "succeeded");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !daemon.log().contains("run finished") {
        assert!(Instant::now() < deadline, "no run logged: {}", daemon.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = daemon.log();
    assert!(!log.contains('\u{1b}'), "escape codes in {log:?}");
    assert!(
        log.lines()
            .any(|l| l.contains(" INFO run finished ") && l.contains(&format!("run={id}"))),
        "{log}"
    );
}

const GATED: &str = "name: gated\ndefaults: { executor: process }\nsteps:\n  train: { run: 'echo m > $WEIR_WORK/m.bin' }\n  ok: { needs: [train], approval: {} }\n  register: { needs: [ok], register: { model: m, artifact: m.bin, alias: staging } }\n";

/// SIGTERM right after an approval, a cancellation and a promotion: weir
/// exits promptly, by itself, and every one of them is in the audit chain,
/// which verifies.
#[test]
fn sigterm_right_after_approve_cancel_and_promote_keeps_the_audit_chain() {
    let dir = setup(QUICK);
    std::fs::write(dir.path().join("pipelines/gated.yaml"), GATED).expect("write");
    let mut daemon = serve(dir.path());
    let gated = trigger(dir.path(), &daemon, &["gated"]);
    wait_for(dir.path(), &daemon, &gated, |run| {
        run["steps"][1]["state"] == "waiting"
    });
    let out = client(
        dir.path(),
        &daemon,
        &["approve", &gated, "ok", "--comment", "fine"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    wait_for(dir.path(), &daemon, &gated, |run| {
        run["state"] == "succeeded"
    });
    let id = trigger(dir.path(), &daemon, &["quick", "--param", "who=wait"]);
    wait_for(dir.path(), &daemon, &id, |run| {
        run["steps"][3]["state"] == "running"
    });
    let out = client(dir.path(), &daemon, &["cancel", &id]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = client(
        dir.path(),
        &daemon,
        &["models", "promote", "m@1", "--alias", "production"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let started = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(daemon.child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM");
    let status = daemon.child.wait().expect("exits");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    assert!(
        status.code().is_some(),
        "exited by itself, not killed: {status:?}"
    );
    let data = dir.path().join(".weir");
    let entries = crate::audit_of(&data);
    for (action, subject) in [
        ("approval.decided", format!("{gated}/ok")),
        ("model.registered", "m@1".to_owned()),
        ("run.cancelled", id.clone()),
        ("alias.moved", "m/production".to_owned()),
    ] {
        assert!(
            entries
                .iter()
                .any(|e| e.action == action && e.subject == subject),
            "{action} {subject} missing: {entries:#?}"
        );
    }
}

fn post(
    addr: &str,
    path: &str,
    body: &[u8],
    headers: &[(&str, String)],
) -> (u16, serde_json::Value) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut request = reqwest::Client::new()
            .post(format!("{addr}{path}"))
            .body(body.to_vec());
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let response = request.send().await.expect("answered");
        let status = response.status().as_u16();
        (
            status,
            response.json().await.unwrap_or(serde_json::Value::Null),
        )
    })
}

fn post_json(
    dir: &Path,
    daemon: &Daemon,
    path: &str,
    body: serde_json::Value,
) -> (u16, serde_json::Value) {
    let token = std::fs::read_to_string(dir.join(".weir/token")).expect("token");
    let headers = [
        ("Authorization", format!("Bearer {}", token.trim())),
        ("Content-Type", "application/json".to_owned()),
    ];
    post(&daemon.addr, path, body.to_string().as_bytes(), &headers)
}

#[test]
fn a_daemon_killed_during_a_docker_step_finishes_it_on_restart_without_running_it_twice() {
    if std::env::var("WEIR_TEST_DOCKER").as_deref() != Ok("1") {
        eprintln!(
            "docker daemon restart test skipped: set WEIR_TEST_DOCKER=1 (and run scripts/test-image)"
        );
        return;
    }
    let dir = setup(QUICK);
    std::fs::write(
        dir.path().join("pipelines/boxed.yaml"),
        "name: boxed\ndefaults: { image: weir-test/busybox:latest, pull: never }\nsteps:\n  a:\n    run: |\n      echo start >> /weir/work/starts\n      echo first\n      sleep 3\n      echo second\n  b: { needs: [a], run: echo done }\n",
    )
    .expect("write");
    let daemon = serve(dir.path());
    let id = trigger(dir.path(), &daemon, &["boxed"]);
    wait_for(dir.path(), &daemon, &id, |run| {
        run["steps"][0]["attempts"][0]["state"] == "running"
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    while !stdout(&client(dir.path(), &daemon, &["logs", &id, "a"])).contains("first") {
        assert!(Instant::now() < deadline, "no first line");
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(daemon); // SIGKILL
    let daemon = serve(dir.path());
    let run = wait_for(dir.path(), &daemon, &id, |run| run["state"] == "succeeded");
    assert_eq!(
        run["steps"][0]["attempts"].as_array().map(Vec::len),
        Some(1),
        "taken up, not restarted"
    );
    assert_eq!(
        stdout(&client(dir.path(), &daemon, &["logs", &id, "a"])),
        "first\nsecond\n"
    );
    let starts =
        std::fs::read_to_string(dir.path().join(".weir/runs").join(&id).join("work/starts"))
            .expect("starts");
    assert_eq!(starts, "start\n");
}

#[test]
fn settings_come_from_defaults_then_weir_toml_then_env_then_flags() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = |envs: &[(&str, &str)], args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_weir"))
            .args(["config", "--output", "json"])
            .args(args)
            .env_remove("WEIR_LISTEN")
            .env_remove("WEIR_GRACE")
            .envs(envs.iter().copied())
            .current_dir(dir.path())
            .output()
            .expect("weir config runs");
        assert!(out.status.success(), "{}", stderr(&out));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("JSON")
    };
    let shown = config(&[], &[]);
    assert_eq!(shown["listen"]["value"], "127.0.0.1:8765");
    assert_eq!(shown["listen"]["source"], "default");
    assert_eq!(shown["db"]["value"], "sqlite://.weir/weir.db");

    std::fs::write(
        dir.path().join("weir.toml"),
        "listen = \"127.0.0.1:9100\"\ngrace = 3\ndata = \"state\"\nlog_format = \"json\"\n",
    )
    .expect("write");
    let shown = config(&[], &[]);
    assert_eq!(shown["listen"]["value"], "127.0.0.1:9100");
    assert_eq!(shown["listen"]["source"], "weir.toml");
    assert_eq!(shown["grace"]["value"], "3");
    assert_eq!(shown["log_format"]["value"], "json");
    assert_eq!(
        shown["db"]["value"], "sqlite://state/weir.db",
        "the database follows the data folder the file names"
    );

    let shown = config(&[("WEIR_LISTEN", "127.0.0.1:9200")], &[]);
    assert_eq!(shown["listen"]["value"], "127.0.0.1:9200");
    assert_eq!(shown["listen"]["source"], "env WEIR_LISTEN");
    assert_eq!(shown["grace"]["source"], "weir.toml");

    let shown = config(
        &[("WEIR_LISTEN", "127.0.0.1:9200")],
        &["--listen", "127.0.0.1:9300", "--grace", "7"],
    );
    assert_eq!(shown["listen"]["value"], "127.0.0.1:9300");
    assert_eq!(shown["listen"]["source"], "flag");
    assert_eq!(shown["grace"]["value"], "7");

    // A misspelt key is refused with its line, and nothing starts.
    std::fs::write(
        dir.path().join("weir.toml"),
        "grace = 3\nlisten_on = \"x\"\n",
    )
    .expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["serve"])
        .current_dir(dir.path())
        .output()
        .expect("weir serve runs");
    assert_eq!(out.status.code(), Some(2));
    let text = stderr(&out);
    assert!(
        text.contains("weir.toml: line 2, column 1") && text.contains("unknown field `listen_on`"),
        "{text}"
    );
    assert!(!dir.path().join(".weir").exists(), "nothing was created");

    // A settings file named but missing is an error too.
    let out = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["config", "--config", "missing.toml"])
        .current_dir(dir.path())
        .output()
        .expect("weir config runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("cannot read the settings file missing.toml"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn pipeline_files_are_reloaded_on_change_and_a_broken_edit_keeps_the_last_good_version() {
    let dir = setup(QUICK);
    let daemon = spawn_daemon(
        Command::new(env!("CARGO_BIN_EXE_weir"))
            .args(["serve", "--listen", "127.0.0.1:0", "--log-format", "json"])
            .current_dir(dir.path()),
    );
    let names = |daemon: &Daemon| -> Vec<String> {
        let out = client(dir.path(), daemon, &["pipelines", "--output", "json"]);
        let list: serde_json::Value =
            serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", stderr(&out)));
        let mut names: Vec<String> = list
            .as_array()
            .expect("array")
            .iter()
            .map(|p| format!("{}:{}", p["name"].as_str().unwrap_or(""), p["steps"]))
            .collect();
        names.sort();
        names
    };
    let settle = |daemon: &Daemon, want: &[&str]| {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let have = names(daemon);
            if have == want {
                return;
            }
            assert!(Instant::now() < deadline, "served {have:?}, want {want:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    settle(&daemon, &["quick:6"]);

    // A new file is served; an edit to it changes what is served.
    let extra = dir.path().join("pipelines/extra.yml");
    std::fs::write(
        &extra,
        "name: extra\ndefaults: { executor: process }\nsteps:\n  a: { run: \"true\" }\n",
    )
    .expect("write");
    settle(&daemon, &["extra:1", "quick:6"]);
    std::fs::write(&extra, "name: extra\ndefaults: { executor: process }\nsteps:\n  a: { run: \"true\" }\n  b: { run: \"true\", needs: [a] }\n").expect("write");
    settle(&daemon, &["extra:2", "quick:6"]);

    // A broken edit is logged with its diagnostics; the last good version stays.
    std::fs::write(
        &extra,
        "name: extra\nsteps:\n  a: { run: \"true\", needs: [nope] }\n",
    )
    .expect("write");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !daemon.log().contains("the last good version stays active") {
        assert!(
            Instant::now() < deadline,
            "no reload logged: {}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    settle(&daemon, &["extra:2", "quick:6"]);
    let run = trigger(dir.path(), &daemon, &["extra"]);
    let run = wait_for(dir.path(), &daemon, &run, |run| run["state"] == "succeeded");
    assert_eq!(
        run["steps"].as_array().map(Vec::len),
        Some(2),
        "the good version ran"
    );

    // Every log line is one JSON object; the broken file's problem names its line.
    let log = daemon.log();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: not JSON: {l}")))
        .collect();
    assert!(
        lines.iter().any(|l| l["level"] == "WARN"
            && l["problem"]
                .as_str()
                .is_some_and(|p| p.contains("extra.yml:3:") && p.contains("nope"))),
        "{log}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l["message"] == "run finished" && l["state"] == "succeeded"),
        "{log}"
    );

    // A removed file is no longer served.
    std::fs::remove_file(&extra).expect("rm");
    settle(&daemon, &["quick:6"]);
}

#[test]
fn approve_and_retry_print_their_answers_and_pass_refusals_through() {
    let dir = setup(QUICK);
    std::fs::write(
        dir.path().join("pipelines/gated.yaml"),
        "name: gated\ndefaults: { executor: process }\nsteps:\n  build: { run: echo built }\n  approve: { needs: [build], approval: {} }\n  ship: { needs: [approve], run: echo shipped }\n",
    )
    .expect("write");
    let daemon = serve(dir.path());
    let id = trigger(dir.path(), &daemon, &["gated"]);
    wait_for(dir.path(), &daemon, &id, |run| {
        run["steps"][1]["state"] == "waiting"
    });
    let out = client(
        dir.path(),
        &daemon,
        &["approve", &id, "approve", "--comment", "metrics look right"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        format!("{id} approve: approved by admin: metrics look right\n")
    );
    wait_for(dir.path(), &daemon, &id, |run| run["state"] == "succeeded");
    let out = client(dir.path(), &daemon, &["approve", &id, "approve"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr(&out),
        format!(
            "error: run {id} is succeeded: only a running run's approvals can be decided (HTTP 409)\n"
        )
    );

    let out = client(dir.path(), &daemon, &["retry", &id]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr(&out),
        format!(
            "error: run {id} succeeded: name the step to run again from with --from (HTTP 409)\n"
        )
    );
    let out = client(
        dir.path(),
        &daemon,
        &["retry", &id, "--from", "ship", "--wait"],
    );
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let text = stdout(&out);
    let first = text.lines().next().unwrap_or_default();
    assert!(
        first.starts_with("run ") && first.ends_with(&format!(" retries {id}")),
        "{text}"
    );
    assert!(text.contains("ship: succeeded\n"), "{text}");
}

const REGISTERED: &str = "name: reg\ndefaults: { executor: process }\nsteps:\n  train:\n    run: |\n      echo \"weights of $WEIR_RUN_ID\" > model.bin\n      echo '{\"accuracy\": 0.9}' > \"$WEIR_OUT/metrics.json\"\n  gate:\n    needs: [train]\n    gate: [\"!has(models.churn.production) || steps.train.metrics.accuracy >= models.churn.production.metrics.accuracy\"]\n  register:\n    needs: [gate]\n    register: { model: churn, artifact: model.bin, metrics_from: train, alias: staging }\n";

#[test]
fn register_steps_number_versions_and_aliases_answer_for_past_times() {
    use sha2::Digest as _;
    let dir = setup(QUICK);
    std::fs::write(dir.path().join("pipelines/reg.yaml"), REGISTERED).expect("write");
    std::fs::write(
        dir.path().join("pipelines/noart.yaml"),
        "name: noart\ndefaults: { executor: process }\nsteps:\n  register: { register: { model: churn, artifact: missing.bin } }\n",
    )
    .expect("write");
    let daemon = serve(dir.path());
    let models = |args: &[&str]| -> serde_json::Value {
        let mut full = vec!["models"];
        full.extend_from_slice(args);
        full.extend(["--output", "json"]);
        let out = client(dir.path(), &daemon, &full);
        assert!(out.status.success(), "{}", stderr(&out));
        serde_json::from_slice(&out.stdout).expect("JSON")
    };

    let first = trigger(dir.path(), &daemon, &["reg"]);
    let run = wait_for(dir.path(), &daemon, &first, |run| {
        run["state"] == "succeeded"
    });
    let outputs = &run["steps"][2]["attempts"][0]["outputs"];
    assert_eq!(outputs["version"], 1);
    let file = format!("weights of {first}\n");
    let sha = hex::encode(sha2::Sha256::digest(file.as_bytes()));
    assert_eq!(outputs["sha256"], sha.as_str(), "the artifact's own hash");
    let v1 = models(&["show", "churn@1"]);
    assert_eq!(v1["metrics"]["accuracy"], 0.9);
    assert_eq!(v1["run_id"], first.as_str());

    let out = client(
        dir.path(),
        &daemon,
        &["models", "promote", "churn@1", "--alias", "production"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "churn production -> 1 (was -), by admin\n");
    let promoted_at = chrono::Utc::now();
    std::thread::sleep(Duration::from_millis(20));

    // The second run's gate reads the production version's metrics.
    let second = trigger(dir.path(), &daemon, &["reg"]);
    let run = wait_for(dir.path(), &daemon, &second, |run| {
        run["state"] == "succeeded"
    });
    assert_eq!(run["models"]["churn"]["production"]["version"], 1);
    assert!(
        run["steps"][1]["evidence"][0]["explanation"]
            .as_str()
            .is_some_and(|e| e.contains("0.9 >= 0.9")),
        "{}",
        run["steps"][1]
    );
    assert_eq!(run["steps"][2]["attempts"][0]["outputs"]["version"], 2);
    let out = client(
        dir.path(),
        &daemon,
        &["models", "promote", "churn@2", "--alias", "production"],
    );
    assert!(out.status.success(), "{}", stderr(&out));

    let list = models(&["list"]);
    assert_eq!(list[0]["latest"], 2);
    assert_eq!(
        list[0]["aliases"],
        serde_json::json!({"production": 2, "staging": 2})
    );
    let history = models(&["history", "churn"]);
    let moves: Vec<String> = history
        .as_array()
        .expect("array")
        .iter()
        .map(|m| {
            format!(
                "{} {}->{} by {}",
                m["alias"].as_str().unwrap_or(""),
                m["from_version"],
                m["version"],
                m["actor"].as_str().unwrap_or("")
            )
        })
        .collect();
    assert_eq!(
        moves,
        [
            format!("staging null->1 by run {first}"),
            "production null->1 by admin".to_owned(),
            format!("staging 1->2 by run {second}"),
            "production 1->2 by admin".to_owned(),
        ]
    );
    let then = models(&[
        "show",
        "churn",
        "--alias",
        "production",
        "--at",
        &promoted_at.to_rfc3339(),
    ]);
    assert_eq!(then["version"], 1, "production at the first promotion");
    let now = models(&["show", "churn", "--alias", "production"]);
    assert_eq!(now["version"], 2);
    let before = client(
        dir.path(),
        &daemon,
        &[
            "models",
            "show",
            "churn",
            "--alias",
            "production",
            "--at",
            "2020-01-01T00:00:00Z",
        ],
    );
    assert_eq!(before.status.code(), Some(2));
    assert!(
        stderr(&before).contains("alias 'production' of churn pointed at no version at 2020-01-01"),
        "{}",
        stderr(&before)
    );
    let bad = client(
        dir.path(),
        &daemon,
        &["models", "promote", "churn@9", "--alias", "production"],
    );
    assert!(
        stderr(&bad).contains("no model version 'churn@9'"),
        "{}",
        stderr(&bad)
    );

    // A missing artifact fails the step, naming the file; nothing is registered.
    let id = trigger(dir.path(), &daemon, &["noart"]);
    let run = wait_for(dir.path(), &daemon, &id, |run| run["state"] == "failed");
    assert!(
        run["steps"][0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("artifact 'missing.bin' not found")),
        "{}",
        run["steps"][0]
    );
    assert_eq!(models(&["list"])[0]["versions"], 2);
}

#[test]
fn the_audit_chain_records_what_happened_and_verifies_online_and_offline() {
    let dir = setup(QUICK);
    std::fs::write(dir.path().join("pipelines/reg.yaml"), REGISTERED).expect("write");
    std::fs::write(
        dir.path().join("pipelines/gated.yaml"),
        "name: gated\ndefaults: { executor: process }\nsteps:\n  approve: { approval: {} }\n  wait: { needs: [approve], run: sleep 30 }\n",
    )
    .expect("write");
    let daemon = serve(dir.path());
    let id = trigger(dir.path(), &daemon, &["reg"]);
    wait_for(dir.path(), &daemon, &id, |run| run["state"] == "succeeded");
    assert!(
        client(
            dir.path(),
            &daemon,
            &["models", "promote", "churn@1", "--alias", "production"]
        )
        .status
        .success()
    );
    let gated = trigger(dir.path(), &daemon, &["gated"]);
    wait_for(dir.path(), &daemon, &gated, |run| {
        run["steps"][0]["state"] == "waiting"
    });
    assert!(
        client(
            dir.path(),
            &daemon,
            &["approve", &gated, "approve", "--comment", "ok"]
        )
        .status
        .success()
    );
    wait_for(dir.path(), &daemon, &gated, |run| {
        run["steps"][1]["state"] == "running"
    });
    assert!(
        client(dir.path(), &daemon, &["cancel", &gated])
            .status
            .success()
    );
    wait_for(dir.path(), &daemon, &gated, |run| {
        run["state"] == "cancelled"
    });

    // The writer appends in the background: wait for the cancellation.
    let export = dir.path().join("audit.jsonl");
    let deadline = Instant::now() + Duration::from_secs(10);
    let entries: Vec<serde_json::Value> = loop {
        let out = client(
            dir.path(),
            &daemon,
            &["audit", "export", "--file", export.to_str().expect("utf-8")],
        );
        assert!(out.status.success(), "{}", stderr(&out));
        let text = std::fs::read_to_string(&export).expect("export");
        let entries: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("JSON line"))
            .collect();
        if entries.iter().any(|e| e["action"] == "run.cancelled") {
            break entries;
        }
        assert!(Instant::now() < deadline, "no cancellation in {text}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let seen: Vec<String> = entries
        .iter()
        .map(|e| {
            format!(
                "{} {} {}",
                e["actor"].as_str().unwrap_or(""),
                e["action"].as_str().unwrap_or(""),
                e["subject"].as_str().unwrap_or("")
            )
        })
        .collect();
    for wanted in [
        "weir pipeline.loaded reg".to_owned(),
        format!("admin run.triggered {id}"),
        format!("weir gate.decided {id}/gate"),
        "admin alias.moved churn/production".to_owned(),
        format!("run {id} model.registered churn@1"),
        format!("run {id} alias.moved churn/staging"),
        format!("admin approval.decided {gated}/approve"),
        format!("admin run.cancelled {gated}"),
    ] {
        assert!(seen.contains(&wanted), "no '{wanted}' in {seen:#?}");
    }

    let out = client(dir.path(), &daemon, &["audit", "verify"]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert!(
        stdout(&out).starts_with("audit chain verifies: "),
        "{}",
        stdout(&out)
    );
    let key = stdout(&client(dir.path(), &daemon, &["audit", "key"]))
        .trim()
        .to_owned();
    assert_eq!(key.len(), 64);
    let offline = |file: &Path| {
        Command::new(env!("CARGO_BIN_EXE_weir"))
            .args([
                "audit",
                "verify",
                "--file",
                file.to_str().expect("utf-8"),
                "--pubkey",
                &key,
            ])
            .output()
            .expect("weir runs")
    };
    let out = offline(&export);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert_eq!(
        stdout(&out),
        format!("audit chain verifies: {} entries\n", entries.len())
    );

    // An export edited after the fact fails offline, at the edited entry.
    let text = std::fs::read_to_string(&export).expect("export");
    let edited: Vec<String> = text
        .lines()
        .map(|line| {
            let mut e: serde_json::Value = serde_json::from_str(line).expect("JSON");
            if e["action"] == "approval.decided" {
                e["actor"] = "mallory".into();
            }
            e.to_string()
        })
        .collect();
    let tampered = dir.path().join("tampered.jsonl");
    std::fs::write(&tampered, edited.join("\n")).expect("write");
    let out = offline(&tampered);
    assert_eq!(out.status.code(), Some(1));
    let seq = entries
        .iter()
        .find(|e| e["action"] == "approval.decided")
        .expect("entry")["seq"]
        .clone();
    assert_eq!(
        stdout(&out),
        format!(
            "audit chain broken at entry {seq}: its content does not match its hash (it was edited)\n"
        )
    );
}

#[test]
fn lineage_leads_from_a_version_back_to_its_commit_params_and_artifact_hashes() {
    use sha2::Digest as _;
    let dir = setup(QUICK);
    std::fs::remove_file(dir.path().join("pipelines/broken.yaml")).expect("rm");
    std::fs::write(
        dir.path().join("pipelines/lin.yaml"),
        "name: lin\nparams: { rows: { default: \"10\" } }\ndefaults: { executor: process }\nsteps:\n  prepare:\n    run: seq ${{ params.rows }} > data.csv\n    artifacts: [data.csv]\n  train:\n    needs: [prepare]\n    run: wc -l < data.csv > model.bin\n    artifacts: [model.bin]\n  unrelated: { run: \"true\" }\n  register:\n    needs: [train]\n    register: { model: lin, artifact: model.bin }\n",
    )
    .expect("write");
    let git = |args: &[&str]| {
        let out = Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
            .args(args)
            .current_dir(dir.path().join("pipelines"))
            .output()
            .expect("git runs");
        assert!(out.status.success(), "{}", stderr(&out));
        stdout(&out).trim().to_owned()
    };
    git(&["init", "-q"]);
    git(&["add", "."]);
    git(&["commit", "-qm", "pipelines"]);
    let head = git(&["rev-parse", "HEAD"]);
    let daemon = serve(dir.path());
    let id = trigger(dir.path(), &daemon, &["lin", "--param", "rows=5"]);
    wait_for(dir.path(), &daemon, &id, |run| run["state"] == "succeeded");

    let out = client(
        dir.path(),
        &daemon,
        &["lineage", "lin@1", "--output", "json"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let lineage: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let sha = |text: &str| hex::encode(sha2::Sha256::digest(text.as_bytes()));
    assert_eq!(lineage["sha256"], sha("5\n").as_str());
    assert_eq!(lineage["run"]["id"], id.as_str());
    assert_eq!(lineage["run"]["source_commit"], head.as_str());
    assert_eq!(lineage["run"]["params"]["rows"], "5");
    assert_eq!(lineage["run"]["trigger"], "manual");
    let source = std::fs::read_to_string(dir.path().join("pipelines/lin.yaml")).expect("read");
    assert_eq!(lineage["run"]["pipeline_hash"], sha(&source).as_str());
    let steps: Vec<&str> = lineage["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| s["id"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        steps,
        ["prepare", "train", "register"],
        "only what led to the version"
    );
    assert_eq!(
        lineage["steps"][0]["artifacts"]["data.csv"],
        sha("1\n2\n3\n4\n5\n").as_str()
    );
    assert_eq!(
        lineage["steps"][1]["artifacts"]["model.bin"],
        sha("5\n").as_str()
    );

    let tree = stdout(&client(dir.path(), &daemon, &["lineage", "lin@1"]));
    assert!(
        tree.starts_with(&format!("lin@1  model.bin sha256:{}", &sha("5\n")[..12])),
        "{tree}"
    );
    assert!(tree.contains(&format!("git {}", &head[..12])), "{tree}");
    assert!(
        tree.contains(&format!(
            "artifact data.csv sha256:{}",
            &sha("1\n2\n3\n4\n5\n")[..12]
        )),
        "{tree}"
    );
    assert!(tree.contains("params rows=5"), "{tree}");

    let out = client(dir.path(), &daemon, &["lineage", "lin@1", "--openlineage"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let event: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(event["eventType"], "COMPLETE");
    let run_id = event["run"]["runId"].as_str().expect("runId");
    assert_eq!(
        run_id.replace('-', ""),
        id,
        "the run id as a hyphenated UUID"
    );
    assert_eq!(event["job"]["name"], "lin");
    assert_eq!(event["outputs"][0]["name"], "lin@1");
    assert_eq!(
        event["outputs"][0]["facets"]["weir_model_version"]["sha256"],
        sha("5\n").as_str()
    );
    let inputs: Vec<(&str, &str)> = event["inputs"]
        .as_array()
        .expect("inputs")
        .iter()
        .map(|i| {
            (
                i["name"].as_str().unwrap_or(""),
                i["facets"]["weir_artifact"]["sha256"]
                    .as_str()
                    .unwrap_or(""),
            )
        })
        .collect();
    let data_sha = sha("1\n2\n3\n4\n5\n");
    let data_name = format!("runs/{id}/work/data.csv");
    assert!(
        inputs.contains(&(data_name.as_str(), data_sha.as_str())),
        "{inputs:?}"
    );
    assert_eq!(
        event["run"]["facets"]["weir_run"]["source_commit"],
        head.as_str()
    );

    let missing = client(dir.path(), &daemon, &["lineage", "lin@2"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(
        stderr(&missing).contains("no model version 'lin@2'"),
        "{}",
        stderr(&missing)
    );
}

/// With a certificate and key, the API is served over TLS only; a plain
/// HTTP request gets no answer. Listening beyond loopback without TLS is
/// said on stderr; half a TLS setting is refused before anything starts.
#[test]
fn tls_serves_the_api_and_plain_http_beyond_loopback_is_warned_about() {
    let dir = setup(QUICK);
    let certified =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).expect("certificate");
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&cert, certified.cert.pem()).expect("cert");
    std::fs::write(&key, certified.signing_key.serialize_pem()).expect("key");
    let mut command = Command::new(env!("CARGO_BIN_EXE_weir"));
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--tls-cert"])
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key)
        .current_dir(dir.path());
    let daemon = spawn_daemon(&mut command);
    assert!(
        daemon.addr.starts_with("https://127.0.0.1:"),
        "{}",
        daemon.addr
    );
    let token = std::fs::read_to_string(dir.path().join(".weir/token")).expect("token");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (status, pipelines, plain) = runtime.block_on(async {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let trusted =
            reqwest::Certificate::from_pem(certified.cert.pem().as_bytes()).expect("certificate");
        let client = reqwest::Client::builder()
            .tls_certs_only([trusted])
            .build()
            .expect("client");
        let answer = client
            .get(format!("{}/api/v1/pipelines", daemon.addr))
            .bearer_auth(token.trim())
            .send()
            .await
            .expect("answered over TLS");
        let status = answer.status().as_u16();
        let pipelines: serde_json::Value = answer.json().await.expect("JSON");
        let plain = reqwest::Client::new()
            .get(daemon.addr.replace("https://", "http://") + "/healthz")
            .send()
            .await;
        (status, pipelines, plain)
    });
    assert_eq!(status, 200);
    assert_eq!(pipelines[0]["name"], "quick", "{pipelines}");
    assert!(
        plain.as_ref().map_or(true, |r| !r.status().is_success()),
        "plain HTTP was answered: {plain:?}"
    );
    drop(daemon);

    // 0.0.0.0 without TLS: served, and said.
    let mut command = Command::new(env!("CARGO_BIN_EXE_weir"));
    command
        .args(["serve", "--listen", "0.0.0.0:0"])
        .current_dir(dir.path());
    let daemon = spawn_daemon(&mut command);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !daemon.log.lock().expect("log").contains("over plain HTTP") {
        assert!(
            Instant::now() < deadline,
            "no warning: {}",
            daemon.log.lock().expect("log")
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        daemon
            .log
            .lock()
            .expect("log")
            .contains("weir: warning: serving 0.0.0.0:"),
        "{}",
        daemon.log.lock().expect("log")
    );
    drop(daemon);

    let half = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["serve", "--listen", "127.0.0.1:0", "--tls-cert"])
        .arg(&cert)
        .current_dir(dir.path())
        .output()
        .expect("runs");
    assert_eq!(half.status.code(), Some(2));
    assert_eq!(
        stderr(&half),
        "error: tls_cert is set but tls_key is not: give both, or neither\n"
    );
}

const CARDED: &str = r#"name: carded
params:
  acc: { default: "0.91", description: accuracy the validation reports }
  note: { default: "<script>alert(1)</script>", description: free text for the card }
defaults: { executor: process }
model_card:
  intended_use: "Scores churn risk for ${{ params.acc }}-accurate campaigns"
  limitations: "Validated at ${{ steps.validate.metrics.accuracy }}; ${{ params.note }}"
  owners: ml-platform
steps:
  ingest: { run: 'seq 5 > data.csv', artifacts: [data.csv] }
  train: { needs: [ingest], run: 'wc -l < data.csv > model.bin', artifacts: [model.bin] }
  validate:
    needs: [train]
    run: 'echo "{\"accuracy\": ${{ params.acc }}, \"accuracy.slice.age_lt_40\": 0.88}" > $WEIR_OUT/metrics.json'
  gate: { needs: [validate], gate: ['steps.validate.metrics.accuracy >= 0.9'] }
  approve: { needs: [gate], approval: {} }
  register: { needs: [approve], register: { model: carded, artifact: model.bin, metrics_from: validate } }
"#;

#[test]
fn each_registration_writes_a_model_card_that_the_audit_log_vouches_for() {
    use sha2::Digest as _;
    let dir = setup(QUICK);
    std::fs::write(dir.path().join("pipelines/carded.yaml"), CARDED).expect("write");
    let daemon = serve(dir.path());
    for (acc, comment) in [("0.91", "first"), ("0.95", "better: ship it")] {
        let param = format!("acc={acc}");
        let id = trigger(dir.path(), &daemon, &["carded", "--param", &param]);
        wait_for(dir.path(), &daemon, &id, |run| {
            run["steps"][4]["state"] == "waiting"
        });
        let out = client(
            dir.path(),
            &daemon,
            &["approve", &id, "approve", "--comment", comment],
        );
        assert!(out.status.success(), "{}", stderr(&out));
        wait_for(dir.path(), &daemon, &id, |run| run["state"] == "succeeded");
    }
    // The registration's audit entry is appended just after the run ends.
    let card = |format: &str| {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let out = client(
                dir.path(),
                &daemon,
                &["models", "card", "carded@2", "--format", format],
            );
            if out.status.success() || Instant::now() > deadline {
                return out;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let out = card("json");
    assert!(out.status.success(), "{}", stderr(&out));
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let c = &answer["card"];
    assert_eq!(answer["verified"], true, "{answer}");
    assert_eq!(
        c["card"]["intended_use"],
        "Scores churn risk for 0.95-accurate campaigns"
    );
    assert_eq!(
        c["card"]["limitations"],
        "Validated at 0.95; <script>alert(1)</script>"
    );
    assert_eq!(c["card"]["owners"], "ml-platform");
    assert_eq!(c["metrics"], serde_json::json!({ "accuracy": 0.95 }));
    assert_eq!(c["slices"]["age_lt_40"]["accuracy"], 0.88);
    assert_eq!(c["gates"][0]["holds"], true);
    assert_eq!(
        c["gates"][0]["evidence"][0]["explanation"],
        "0.95 >= 0.9 is true"
    );
    assert_eq!(c["approvals"][0]["actor"], "admin");
    assert_eq!(c["approvals"][0]["comment"], "better: ship it");
    let sha = |text: &str| hex::encode(sha2::Sha256::digest(text.as_bytes()));
    assert_eq!(
        c["steps"][0]["artifacts"]["data.csv"],
        sha("1\n2\n3\n4\n5\n").as_str()
    );
    assert_eq!(c["artifact"]["sha256"], sha("5\n").as_str());
    assert_eq!(c["params"]["acc"], "0.95");
    assert_eq!(c["previous"]["version"], 1);
    assert_eq!(c["previous"]["changes"]["accuracy"]["from"], 0.91);
    let source = std::fs::read_to_string(dir.path().join("pipelines/carded.yaml")).expect("read");
    assert_eq!(c["run"]["pipeline_hash"], sha(&source).as_str());
    let registered = crate::audit_of(&dir.path().join(".weir"))
        .into_iter()
        .find(|e| e.action == "model.registered" && e.subject == "carded@2")
        .expect("the registration is audited");
    let payload: serde_json::Value = serde_json::from_str(&registered.payload).expect("JSON");
    assert_eq!(payload["card_sha256"], answer["sha256"]);
    assert_eq!(
        stderr(&out),
        format!(
            "card sha256 {} matches audit entry {} (model.registered carded@2)\n",
            answer["sha256"].as_str().expect("sha256"),
            registered.seq
        )
    );

    let markdown = stdout(&card("md"));
    assert!(
        markdown.starts_with("# Model card: carded@2\n"),
        "{markdown}"
    );
    assert!(
        markdown.contains("## Intended use\n\nScores churn risk"),
        "{markdown}"
    );
    assert!(
        markdown.contains("| accuracy | 0.95 | 0.91 |"),
        "{markdown}"
    );
    assert!(
        markdown.contains("| age_lt_40 | accuracy | 0.88 |"),
        "{markdown}"
    );
    assert!(
        markdown.contains("approval `approve` approved by admin"),
        "{markdown}"
    );
    let page = stdout(&card("html"));
    assert!(
        page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{page}"
    );
    assert!(!page.contains("<script"), "{page}");

    // A card edited in the database no longer matches its audit entry.
    edit_store(
        dir.path(),
        "UPDATE model_versions SET card = replace(card, 'Scores', 'Sells') WHERE version = 2",
        &[],
    );
    let out = client(dir.path(), &daemon, &["models", "card", "carded@2"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!(
            "does not match the {} recorded by audit entry {}: the card was changed after carded@2 was registered",
            payload["card_sha256"].as_str().expect("sha"),
            registered.seq
        )),
        "{}",
        stderr(&out)
    );
}

const REPLAYED: &str = r#"name: replayed
params: { data: { default: "", description: the data file ingest copies } }
defaults: { executor: process }
steps:
  ingest: { run: 'cp "${{ params.data }}" data.csv', artifacts: [data.csv] }
  train: { needs: [ingest], run: 'sort data.csv | sha256sum > model.bin', artifacts: [model.bin] }
  gate: { needs: [train], gate: ['steps.train.state == "succeeded"'] }
  approve: { needs: [gate], approval: {} }
  register: { needs: [approve], register: { model: replayed, artifact: model.bin } }
  deploy: { needs: [register], run: 'echo deployed >> "${{ params.data }}.deploys"' }
"#;

#[test]
fn a_replay_reproduces_a_version_bit_for_bit_or_names_the_step_where_data_changed() {
    let dir = setup(QUICK);
    std::fs::write(dir.path().join("pipelines/replayed.yaml"), REPLAYED).expect("write");
    let data = dir.path().join("data.txt");
    std::fs::write(&data, "b\na\nc\n").expect("write");
    let daemon = serve(dir.path());
    let param = format!("data={}", data.display());
    let id = trigger(dir.path(), &daemon, &["replayed", "--param", &param]);
    wait_for(dir.path(), &daemon, &id, |run| {
        run["steps"][3]["state"] == "waiting"
    });
    let out = client(dir.path(), &daemon, &["approve", &id, "approve"]);
    assert!(out.status.success(), "{}", stderr(&out));
    wait_for(dir.path(), &daemon, &id, |run| run["state"] == "succeeded");

    let out = client(dir.path(), &daemon, &["replay", "replayed@1", "--wait"]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let text = stdout(&out);
    assert!(
        text.ends_with("reproduced: 2 of 2 artifacts identical\n"),
        "{text}"
    );
    let replay_id = text.split_whitespace().nth(1).expect("run id").to_owned();
    let replay = wait_for(dir.path(), &daemon, &replay_id, |run| {
        run["state"] == "succeeded"
    });
    assert_eq!(replay["cause"]["kind"], "replay", "{replay}");
    assert_eq!(replay["cause"]["of"], id.as_str());
    let reason = |i: usize| {
        replay["steps"][i]["reason"]
            .as_str()
            .unwrap_or("")
            .to_owned()
    };
    assert_eq!(
        replay["steps"][2]["state"], "succeeded",
        "the gate is evaluated again"
    );
    assert_eq!(replay["steps"][3]["state"], "succeeded");
    assert_eq!(
        reason(3),
        format!("replay of replayed@1: approved by admin in run {id}")
    );
    assert_eq!(replay["steps"][4]["state"], "skipped");
    assert_eq!(
        reason(4),
        "replay of replayed@1: nothing is registered again"
    );
    assert_eq!(
        replay["steps"][5]["state"], "skipped",
        "nothing downstream runs"
    );
    let deploys = std::fs::read_to_string(format!("{}.deploys", data.display())).expect("deploys");
    assert_eq!(deploys, "deployed\n", "only the original deployed");
    let model = client(
        dir.path(),
        &daemon,
        &["models", "show", "replayed", "--output", "json"],
    );
    let model: serde_json::Value = serde_json::from_slice(&model.stdout).expect("JSON");
    assert_eq!(
        model["versions"].as_array().map(Vec::len),
        Some(1),
        "{model}"
    );

    // The data file changes: the replay names ingest as where it differs.
    std::fs::write(&data, "b\na\nd\n").expect("write");
    let out = client(
        dir.path(),
        &daemon,
        &["replay", "replayed@1", "--wait", "--output", "json"],
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let found: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(found["reproduced"], false);
    assert_eq!(found["identical"], 0);
    assert_eq!(found["first_difference"]["step"], "ingest", "{found}");
    assert_eq!(
        found["first_difference"]["paths"],
        serde_json::json!(["data.csv"])
    );
    assert_eq!(
        found["summary"],
        "not reproduced: 2 of 2 artifacts differ, from step ingest on (data.csv): step ingest has no upstream step: the data it reads changed"
    );

    let tree = stdout(&client(dir.path(), &daemon, &["lineage", "replayed@1"]));
    let replays: Vec<&str> = tree
        .lines()
        .filter(|l| l.starts_with("replayed by run"))
        .collect();
    assert_eq!(replays.len(), 2, "{tree}");
    assert!(
        replays[0].ends_with("reproduced: 2 of 2 artifacts identical"),
        "{tree}"
    );
    assert!(
        replays[1].contains("not reproduced: 2 of 2 artifacts differ"),
        "{tree}"
    );
    let audited: Vec<serde_json::Value> = crate::audit_of(&dir.path().join(".weir"))
        .into_iter()
        .filter(|e| e.action == "model.replayed" && e.subject == "replayed@1")
        .map(|e| serde_json::from_str(&e.payload).expect("JSON"))
        .collect();
    assert_eq!(audited.len(), 2);
    assert_eq!(audited[0]["reproduced"], true);
    assert_eq!(audited[1]["reproduced"], false);

    let out = client(dir.path(), &daemon, &["replay", "replayed@7"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr(&out),
        "error: no model version 'replayed@7' in the registry (HTTP 404)\n"
    );
}

#[test]
fn a_replay_runs_the_image_ids_of_the_original_and_refuses_when_one_is_gone() {
    if std::env::var("WEIR_TEST_DOCKER").as_deref() != Ok("1") {
        eprintln!(
            "docker replay test skipped: set WEIR_TEST_DOCKER=1 (and run scripts/test-image)"
        );
        return;
    }
    let dir = setup(QUICK);
    // An image of its own, so that removing it disturbs no other test.
    let tag = format!("weir-test/replay:{}", std::process::id());
    let context = dir.path().join("image");
    std::fs::create_dir(&context).expect("mkdir");
    std::fs::write(
        context.join("Dockerfile"),
        format!("FROM weir-test/busybox:latest\nLABEL weir.test={tag}\n"),
    )
    .expect("write");
    let docker = |args: &[&str]| {
        let out = Command::new("docker")
            .args(args)
            .output()
            .expect("docker runs");
        assert!(out.status.success(), "docker {args:?}: {}", stderr(&out));
        stdout(&out).trim().to_owned()
    };
    docker(&["build", "-q", "-t", &tag, context.to_str().expect("utf-8")]);
    let id = docker(&["image", "inspect", "--format", "{{.Id}}", &tag]);
    std::fs::write(
        dir.path().join("pipelines/boxed.yaml"),
        format!("name: boxed\ndefaults: {{ image: \"{tag}\", pull: never }}\nsteps:\n  train: {{ run: 'echo 42 > /weir/work/model.bin', artifacts: [model.bin] }}\n  register: {{ needs: [train], register: {{ model: boxed, artifact: model.bin }} }}\n"),
    )
    .expect("write");
    let daemon = serve(dir.path());
    let run = trigger(dir.path(), &daemon, &["boxed"]);
    wait_for(dir.path(), &daemon, &run, |run| run["state"] == "succeeded");
    // The tag moves to another image: the replay still runs the id.
    docker(&["tag", "weir-test/busybox:latest", &tag]);
    let out = client(
        dir.path(),
        &daemon,
        &["replay", "boxed@1", "--wait", "--output", "json"],
    );
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let found: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let replay = client(
        dir.path(),
        &daemon,
        &[
            "status",
            found["run"].as_str().expect("run"),
            "--output",
            "json",
        ],
    );
    let replay: serde_json::Value = serde_json::from_slice(&replay.stdout).expect("JSON");
    assert_eq!(
        replay["steps"][0]["attempts"][0]["image"],
        id.as_str(),
        "{replay}"
    );
    assert_eq!(replay["cause"]["images"]["train"], id.as_str());

    docker(&["rmi", "-f", &id]);
    let out = client(dir.path(), &daemon, &["replay", "boxed@1"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr(&out),
        format!(
            "error: cannot replay boxed@1: image {id} (step train of run {run}) is not on this host; load it (docker load) or replay on the host that has it (HTTP 409)\n"
        )
    );
    let _ = Command::new("docker").args(["rmi", "-f", &tag]).output();
}

/// A real MLflow server (`mlflow server`, SQLite backend) on `port`,
/// killed when dropped.
struct Mlflow {
    child: std::process::Child,
}

impl Mlflow {
    fn start(program: &str, dir: &Path, port: u16) -> Mlflow {
        use std::os::unix::process::CommandExt as _;
        let child = Command::new(program)
            .process_group(0)
            .args([
                "server",
                "--host",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--workers",
                "1",
            ])
            .arg("--backend-store-uri")
            .arg(format!("sqlite:///{}", dir.join("mlflow.db").display()))
            .arg("--default-artifact-root")
            .arg(dir.join("artifacts"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mlflow server starts");
        // Dropped (killed and waited for) on every way out, a panic too.
        let server = Mlflow { child };
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let health = std::net::TcpStream::connect(("127.0.0.1", port)).and_then(|mut s| {
                use std::io::{Read as _, Write as _};
                s.write_all(b"GET /health HTTP/1.0\r\n\r\n")?;
                let mut answer = String::new();
                s.read_to_string(&mut answer)?;
                Ok(answer)
            });
            if health.is_ok_and(|a| a.starts_with("HTTP/1.1 200") || a.starts_with("HTTP/1.0 200"))
            {
                return server;
            }
            assert!(
                Instant::now() < deadline,
                "mlflow server did not become ready"
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Mlflow {
    fn drop(&mut self) {
        // Its workers are its children: end the whole group.
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Asks MLflow, with its own Python client, what `script` prints.
fn mlflow_client(python: &Path, uri: &str, script: &str) -> String {
    let out = Command::new(python)
        .args([
            "-c",
            &format!("from mlflow import MlflowClient\nc = MlflowClient({uri:?})\n{script}"),
        ])
        .output()
        .expect("python runs");
    assert!(out.status.success(), "{}", stderr(&out));
    stdout(&out).trim().to_owned()
}

#[test]
fn registrations_are_mirrored_to_a_real_mlflow_and_catch_up_after_it_was_away() {
    let Ok(program) = std::env::var("WEIR_TEST_MLFLOW") else {
        eprintln!(
            "MLflow test skipped: set WEIR_TEST_MLFLOW to an mlflow program (scripts/mlflow installs one)"
        );
        return;
    };
    let python = Path::new(&program).with_file_name("python");
    let dir = setup(QUICK);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let uri = format!("http://127.0.0.1:{port}");
    std::fs::write(
        dir.path().join("weir.toml"),
        format!("[mlflow]\ntracking_uri = \"{uri}\"\nexperiment = \"weir-test\"\n"),
    )
    .expect("write");
    std::fs::write(
        dir.path().join("pipelines/mirrored.yaml"),
        "name: mirrored\nparams: { acc: \"0.9\" }\ndefaults: { executor: process }\nsteps:\n  train: { run: 'echo ${{ params.acc }} > model.bin; echo \"{\\\"accuracy\\\": ${{ params.acc }}}\" > $WEIR_OUT/metrics.json', artifacts: [model.bin] }\n  register: { needs: [train], register: { model: mirrored, artifact: model.bin, metrics_from: train, alias: staging } }\n",
    )
    .expect("write");
    let mlflow_dir = dir.path().join("mlflow");
    std::fs::create_dir(&mlflow_dir).expect("mkdir");
    let mlflow = Mlflow::start(&program, &mlflow_dir, port);
    let daemon = serve(dir.path());
    let mirror = |target: &str, done: &dyn Fn(&serde_json::Value) -> bool| {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let out = client(
                dir.path(),
                &daemon,
                &["models", "show", target, "--output", "json"],
            );
            let version: serde_json::Value =
                serde_json::from_slice(&out.stdout).unwrap_or_default();
            if done(&version["mlflow"]) {
                return version;
            }
            assert!(Instant::now() < deadline, "{target}: {version}");
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    let id = trigger(dir.path(), &daemon, &["mirrored", "--param", "acc=0.91"]);
    wait_for(dir.path(), &daemon, &id, |run| run["state"] == "succeeded");
    let first = mirror("mirrored@1", &|m| m["state"] == "done");
    assert_eq!(first["mlflow"]["version"], "1", "{first}");
    let shown = stdout(&client(
        dir.path(),
        &daemon,
        &["models", "show", "mirrored@1"],
    ));
    assert!(
        shown.contains(&format!("mirrored to MLflow as version 1 ({uri})")),
        "{shown}"
    );
    let answer = mlflow_client(
        &python,
        &uri,
        "v = c.get_model_version_by_alias('mirrored', 'staging')\nr = c.get_run(v.run_id)\nprint(v.version, v.tags['weir.version'], r.data.metrics['train.accuracy'], r.data.tags['weir.run_id'], r.info.status)",
    );
    assert_eq!(answer, format!("1 1 0.91 {id} FINISHED"));

    // MLflow goes away: the registration goes on, the mirror waits.
    drop(mlflow);
    let second = trigger(dir.path(), &daemon, &["mirrored", "--param", "acc=0.95"]);
    wait_for(dir.path(), &daemon, &second, |run| {
        run["state"] == "succeeded"
    });
    let waiting = mirror("mirrored@2", &|m| {
        m["state"] == "pending" && m["attempts"].as_i64() >= Some(1)
    });
    assert!(
        waiting["mlflow"]["error"]
            .as_str()
            .unwrap_or_default()
            .contains("does not answer"),
        "{waiting}"
    );
    let shown = stdout(&client(
        dir.path(),
        &daemon,
        &["models", "show", "mirrored@2"],
    ));
    assert!(shown.contains("not mirrored to MLflow yet ("), "{shown}");
    let out = client(
        dir.path(),
        &daemon,
        &["models", "promote", "mirrored@1", "--alias", "production"],
    );
    assert!(out.status.success(), "{}", stderr(&out));

    // Back: what was queued catches up, in order.
    let _mlflow = Mlflow::start(&program, &mlflow_dir, port);
    let second = mirror("mirrored@2", &|m| m["state"] == "done");
    assert_eq!(second["mlflow"]["version"], "2", "{second}");
    let deadline = Instant::now() + Duration::from_secs(60);
    let script = "print(c.get_model_version_by_alias('mirrored', 'staging').version, c.get_model_version_by_alias('mirrored', 'production').version)";
    loop {
        let out = Command::new(&python)
            .args([
                "-c",
                &format!("from mlflow import MlflowClient\nc = MlflowClient({uri:?})\n{script}"),
            ])
            .output()
            .expect("python runs");
        if stdout(&out).trim() == "2 1" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "aliases: {}{}",
            stdout(&out),
            stderr(&out)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let runs = mlflow_client(
        &python,
        &uri,
        "e = c.get_experiment_by_name('weir-test')\nprint(len(c.search_runs([e.experiment_id])))",
    );
    assert_eq!(
        runs, "2",
        "one MLflow run per weir run, however often tried"
    );
}

/// `METHOD path` on the daemon over plain HTTP/1.0 with the daemon's token,
/// and the answer's status line and body.
fn http(
    dir: &Path,
    daemon: &Daemon,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (String, String) {
    use std::io::{Read as _, Write as _};
    let token = std::fs::read_to_string(dir.join(".weir/token")).expect("token");
    let addr = daemon.addr.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    let mut request = format!(
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\nContent-Length: {}\r\n",
        token.trim(),
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).expect("write");
    stream.write_all(body).expect("write");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("read");
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    (
        head.lines().next().unwrap_or_default().to_owned(),
        body.to_owned(),
    )
}

#[test]
fn metrics_carry_latency_histograms_that_promtool_accepts() {
    let Ok(promtool) = which("promtool") else {
        eprintln!("promtool test skipped: install Debian's prometheus package (CI does)");
        return;
    };
    let dir = setup(QUICK);
    std::fs::write(
        dir.path().join("pipelines/hooked.yaml"),
        "name: hooked\non: { webhook: { secret_env: HOOK_SECRET } }\ndefaults: { executor: process }\nsteps:\n  a: { run: 'true' }\n  b: { needs: [a], run: 'exit 3' }\n",
    )
    .expect("write");
    let mut command = Command::new(env!("CARGO_BIN_EXE_weir"));
    command
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("HOOK_SECRET", "s3cret")
        .current_dir(dir.path());
    let daemon = spawn_daemon(&mut command);
    let id = trigger(dir.path(), &daemon, &["quick"]);
    wait_for(dir.path(), &daemon, &id, |run| run["state"] == "succeeded");
    let body = br#"{"ref": "refs/heads/main"}"#;
    let signature = {
        use hmac::{Hmac, KeyInit, Mac};
        let mut mac = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(b"s3cret").expect("key");
        mac.update(body);
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    };
    let headers = [
        ("Content-Type", "application/json"),
        ("X-Weir-Signature-256", signature.as_str()),
        ("X-Weir-Delivery", "d-1"),
    ];
    let (status, answer) = http(
        dir.path(),
        &daemon,
        "POST",
        "/api/v1/hooks/hooked",
        &headers,
        body,
    );
    assert!(status.contains(" 202 "), "{status} {answer}");
    let hooked: serde_json::Value = serde_json::from_str(&answer).expect("JSON");
    let hooked = hooked["run"].as_str().expect("run").to_owned();
    wait_for(dir.path(), &daemon, &hooked, |run| run["state"] == "failed");
    let (status, bad) = http(
        dir.path(),
        &daemon,
        "POST",
        "/api/v1/hooks/hooked",
        &[("X-Weir-Delivery", "d-2")],
        body,
    );
    assert!(status.contains(" 401 "), "{status} {bad}");

    let (status, metrics) = http(dir.path(), &daemon, "GET", "/metrics", &[], b"");
    assert!(status.contains(" 200 "), "{status}");
    for line in [
        "weir_step_duration_seconds_count{outcome=\"succeeded\",pipeline=\"quick\"} ",
        "weir_step_duration_seconds_count{outcome=\"failed\",pipeline=\"hooked\"} 1",
        "weir_run_duration_seconds_count{outcome=\"failed\",pipeline=\"hooked\"} 1",
        "weir_run_queue_wait_seconds_count{pipeline=\"quick\"} 1",
        "weir_webhook_intake_seconds_count{outcome=\"accepted\"} 1",
        "weir_webhook_intake_seconds_count{outcome=\"refused\"} 1",
        "weir_store_commit_seconds_count{outcome=\"ok\"} ",
        "# TYPE weir_run_duration_seconds histogram",
    ] {
        assert!(metrics.contains(line), "no '{line}' in:\n{metrics}");
    }
    let mut check = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs");
    {
        use std::io::Write as _;
        let mut stdin = check.stdin.take().expect("stdin");
        stdin.write_all(metrics.as_bytes()).expect("write");
    }
    let out = check.wait_with_output().expect("promtool ends");
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        stdout(&out),
        stderr(&out)
    );
}

/// The path of `program` on PATH.
fn which(program: &str) -> Result<std::path::PathBuf, ()> {
    let path = std::env::var_os("PATH").ok_or(())?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
        .ok_or(())
}

#[test]
fn gc_prunes_old_finished_runs_but_keeps_registering_runs_and_the_audit_chain() {
    let dir = setup(QUICK);
    std::fs::write(
        dir.path().join("pipelines/reg.yaml"),
        "name: reg\ndefaults: { executor: process }\nsteps:\n  train: { run: 'echo m > model.bin', artifacts: [model.bin] }\n  register: { needs: [train], register: { model: reg, artifact: model.bin } }\n",
    )
    .expect("write");
    let daemon = serve(dir.path());
    let mut old = Vec::new();
    for _ in 0..3 {
        let id = trigger(dir.path(), &daemon, &["quick"]);
        wait_for(dir.path(), &daemon, &id, |run| run["state"] == "succeeded");
        old.push(id);
    }
    let registering = trigger(dir.path(), &daemon, &["reg"]);
    wait_for(dir.path(), &daemon, &registering, |run| {
        run["state"] == "succeeded"
    });
    let recent = trigger(dir.path(), &daemon, &["quick"]);
    wait_for(dir.path(), &daemon, &recent, |run| {
        run["state"] == "succeeded"
    });
    // Every run but the last finished in 2020.
    edit_store(
        dir.path(),
        "UPDATE runs SET finished_at = '2020-01-01T00:00:00.000000+00:00' WHERE id <> $1",
        &[&recent],
    );
    let runs_folder = dir.path().join(".weir/runs");
    assert!(runs_folder.join(&old[0]).is_dir());

    let out = client(
        dir.path(),
        &daemon,
        &["gc", "--older-than", "30d", "--dry-run"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).starts_with("would prune 3 runs finished before "),
        "{}",
        stdout(&out)
    );
    assert!(
        runs_folder.join(&old[0]).is_dir(),
        "a dry run changes nothing"
    );

    let out = client(
        dir.path(),
        &daemon,
        &["gc", "--older-than", "30d", "--output", "json"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let done: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(
        (done["runs"].as_u64(), done["folders"].as_u64()),
        (Some(3), Some(3)),
        "{done}"
    );
    assert!(done["attempts"].as_u64() >= Some(3), "{done}");
    for id in &old {
        let out = client(dir.path(), &daemon, &["status", id]);
        assert_eq!(out.status.code(), Some(2), "{id} is gone");
        assert!(!runs_folder.join(id).exists(), "{id}'s folder is gone");
    }
    for kept in [&registering, &recent] {
        let out = client(dir.path(), &daemon, &["status", kept]);
        assert!(out.status.success(), "{kept} is kept: {}", stderr(&out));
    }
    let out = client(dir.path(), &daemon, &["lineage", "reg@1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = client(dir.path(), &daemon, &["audit", "verify"]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !crate::audit_of(&dir.path().join(".weir"))
        .iter()
        .any(|e| e.action == "store.pruned")
    {
        assert!(Instant::now() < deadline, "the prune is audited");
        std::thread::sleep(Duration::from_millis(100));
    }

    let out = client(dir.path(), &daemon, &["gc", "--older-than", "10s"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("is too short"), "{}", stderr(&out));
    let out = client(dir.path(), &daemon, &["gc", "--older-than", "soon"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("older_than 'soon' is not a duration"),
        "{}",
        stderr(&out)
    );
    let out = client(dir.path(), &daemon, &["gc"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("no retention to prune by"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn runs_list_in_pages_and_by_pipeline_state_and_trigger() {
    let dir = setup(QUICK);
    let daemon = serve(dir.path());
    let mut ids = Vec::new();
    for _ in 0..3 {
        let id = trigger(dir.path(), &daemon, &["quick"]);
        wait_for(dir.path(), &daemon, &id, |run| run["state"] == "succeeded");
        ids.push(id);
    }
    let list = |args: &[&str]| {
        let mut all = vec!["runs", "--output", "json"];
        all.extend_from_slice(args);
        let out = client(dir.path(), &daemon, &all);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        let runs: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).expect("JSON");
        runs.iter()
            .map(|r| r["id"].as_str().unwrap_or_default().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(list(&["--limit", "2"]), [ids[2].clone(), ids[1].clone()]);
    assert_eq!(
        list(&["--limit", "2", "--after", &ids[1]]),
        [ids[0].clone()]
    );
    assert_eq!(
        list(&[
            "--pipeline",
            "quick",
            "--state",
            "succeeded",
            "--trigger",
            "manual"
        ])
        .len(),
        3
    );
    assert!(list(&["--state", "failed"]).is_empty());
    let out = client(dir.path(), &daemon, &["runs", "--trigger", "cron"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("unknown trigger 'cron': one of manual, webhook"),
        "{}",
        stderr(&out)
    );
    let out = client(dir.path(), &daemon, &["runs", "--after", "nope"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("after 'nope' names no run"),
        "{}",
        stderr(&out)
    );
}

/// Runs `sql` with `binds` on the SQLite store of the daemon in `dir`, as
/// someone with the database file would (the daemon keeps running).
fn edit_store(dir: &Path, sql: &str, binds: &[&str]) {
    tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(async {
            use sqlx::ConnectOptions as _;
            let url = format!("sqlite://{}/weir.db", dir.join(".weir").display());
            let mut db = url
                .parse::<sqlx::sqlite::SqliteConnectOptions>()
                .expect("url")
                .connect()
                .await
                .expect("db");
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()));
            for value in binds {
                query = query.bind(*value);
            }
            query.execute(&mut db).await.expect("edited");
        });
}
