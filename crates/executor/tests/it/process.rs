//! A step as a child process: what it sees, what comes back, how it stops.

use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use weir_executor::{AttemptIo, AttemptKey, Executor, Exit, Launch, ProcessExecutor, Pull};

fn attempt(dir: &Path, line: &str) -> Launch {
    Launch {
        key: AttemptKey {
            run: "run-7".to_owned(),
            step: 0,
            attempt: 2,
        },
        pipeline: "churn".to_owned(),
        step: "train[lr=0.1]".to_owned(),
        params: vec![("lr".to_owned(), "0.1".to_owned())],
        argv: vec!["sh".to_owned(), "-c".to_owned(), line.to_owned()],
        image: None,
        pull: Pull::IfNotPresent,
        env: vec![("MODE".to_owned(), "fast".to_owned())],
        secrets: vec![("TOKEN".to_owned(), "tok-123456".to_owned())],
        gpus: vec!["1".to_owned()],
        cpus: None,
        memory: None,
        work: dir.join("work"),
        out: dir.join("out"),
        grace: Duration::from_millis(500),
    }
}

/// Where an attempt's log goes, and what gives it back whole once the
/// attempt has ended.
fn collect() -> (mpsc::Sender<Vec<u8>>, tokio::task::JoinHandle<String>) {
    let (logs, mut received) = mpsc::channel(64);
    let collector = tokio::spawn(async move {
        let mut all = Vec::new();
        while let Some(chunk) = received.recv().await {
            all.extend(chunk);
        }
        String::from_utf8_lossy(&all).into_owned()
    });
    (logs, collector)
}

/// Runs to the end and returns the exit and the whole log.
async fn run(attempt: &Launch, stop_after: Option<Duration>) -> (Exit, String) {
    let (logs, collector) = collect();
    let (stop, stopped) = watch::channel(None);
    let stopper = stop_after.map(|after| {
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            let _ = stop.send(Some("cancelled by test".to_owned()));
        })
    });
    let io = AttemptIo {
        logs,
        stop: stopped,
        started: tokio::sync::oneshot::channel().0,
    };
    let executor = ProcessExecutor::new(attempt.work.join("runs"));
    let outcome = executor.launch(attempt, io).await;
    if let Some(stopper) = stopper {
        stopper.abort();
    }
    (outcome, collector.await.expect("collector"))
}

/// Launches on `executor`; with `drop_after`, the launch is dropped then
/// (as when weir dies), answering `dropped`.
async fn launch_with(
    executor: &ProcessExecutor,
    attempt: &Launch,
    drop_after: Option<Duration>,
) -> (Exit, String) {
    let (logs, collector) = collect();
    let (_stop, stopped) = watch::channel(None);
    let io = AttemptIo {
        logs,
        stop: stopped,
        started: tokio::sync::oneshot::channel().0,
    };
    let exit = match drop_after {
        Some(after) => tokio::time::timeout(after, executor.launch(attempt, io))
            .await
            .unwrap_or_else(|_| Exit::failed("dropped")),
        None => executor.launch(attempt, io).await,
    };
    (exit, collector.await.expect("collector"))
}

/// Takes up `found` from byte `skip` on, to its end.
async fn reattach(
    executor: &ProcessExecutor,
    found: &weir_executor::Found,
    attempt: &Launch,
    skip: u64,
) -> (Exit, String) {
    let (logs, collector) = collect();
    let (_stop, stopped) = watch::channel(None);
    let io = AttemptIo {
        logs,
        stop: stopped,
        started: tokio::sync::oneshot::channel().0,
    };
    let exit = executor.reattach(found, attempt, skip, io).await;
    (exit, collector.await.expect("collector"))
}

/// Whether the process whose pid is in `pid_file` still runs (a zombie
/// waiting for its parent to reap it has ended).
fn alive(pid_file: &Path) -> bool {
    let pid = std::fs::read_to_string(pid_file).expect("pid written");
    match std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())) {
        // The state is the field after the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z')),
        Err(_) => false,
    }
}

/// Whether the process ends within a few seconds: a signal is delivered
/// when the process is next scheduled, not at once.
async fn gone(pid_file: &Path) -> bool {
    for _ in 0..250 {
        if !alive(pid_file) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

#[tokio::test]
async fn the_step_sees_the_contract_and_nothing_of_the_daemon() {
    let dir = tempfile::tempdir().expect("temp dir");
    // cargo runs the tests with CARGO_MANIFEST_DIR set: a daemon variable
    // that is not in the list a step inherits.
    assert!(std::env::var("CARGO_MANIFEST_DIR").is_ok());
    let a = attempt(dir.path(), "env | sort; pwd");
    let (outcome, log) = run(&a, None).await;
    assert_eq!(outcome.exit_code, Some(0), "{log}");
    assert_eq!(outcome.error, None);
    let work = dir.path().join("work");
    let out = dir.path().join("out");
    for line in [
        "WEIR_RUN_ID=run-7".to_owned(),
        "WEIR_PIPELINE=churn".to_owned(),
        "WEIR_STEP=train[lr=0.1]".to_owned(),
        "WEIR_ATTEMPT=2".to_owned(),
        "WEIR_PARAM_LR=0.1".to_owned(),
        format!("WEIR_WORK={}", work.display()),
        format!("WEIR_OUT={}", out.display()),
        "MODE=fast".to_owned(),
        "TOKEN=***".to_owned(),
        "CUDA_VISIBLE_DEVICES=1".to_owned(),
        work.display().to_string(),
    ] {
        assert!(log.lines().any(|l| l == line), "missing {line} in\n{log}");
    }
    assert!(log.lines().any(|l| l.starts_with("PATH=")));
    assert!(
        !log.contains("CARGO_MANIFEST_DIR"),
        "the daemon's env leaked:\n{log}"
    );
    assert!(!log.contains("tok-123456"));
}

#[tokio::test]
async fn metrics_and_outputs_come_back_and_bad_ones_fail() {
    let dir = tempfile::tempdir().expect("temp dir");
    let line = r#"echo '{"acc": 0.93}' > "$WEIR_OUT/metrics.json"; echo '{"path": "m.pkl"}' > "$WEIR_OUT/outputs.json""#;
    let (outcome, _) = run(&attempt(dir.path(), line), None).await;
    assert_eq!(outcome.error, None);
    assert_eq!(outcome.metrics["acc"], 0.93);
    assert_eq!(outcome.outputs["path"], "m.pkl");

    let dir = tempfile::tempdir().expect("temp dir");
    let (outcome, _) = run(
        &attempt(
            dir.path(),
            r#"echo '{"acc": "good"}' > "$WEIR_OUT/metrics.json""#,
        ),
        None,
    )
    .await;
    assert_eq!(outcome.exit_code, Some(0));
    assert_eq!(
        outcome.error.as_deref(),
        Some("metrics.json: 'acc' is \"good\", but every value must be one of the numbers")
    );
}

#[tokio::test]
async fn exit_codes_and_unstartable_programs_are_reported() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (outcome, log) = run(&attempt(dir.path(), "echo oops >&2; exit 3"), None).await;
    assert_eq!(outcome.exit_code, Some(3));
    assert_eq!(log, "oops\n");
    let mut a = attempt(dir.path(), "");
    a.argv = vec!["/no/such/program".to_owned()];
    let (outcome, _) = run(&a, None).await;
    assert!(
        outcome
            .error
            .as_deref()
            .is_some_and(|e| e.starts_with("cannot start '/no/such/program'"))
    );
}

#[tokio::test]
async fn a_stop_terms_the_whole_group_and_kills_after_the_grace() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pid = dir.path().join("child.pid");
    let line = format!(
        "sleep 300 & echo $! > {}; echo started; wait",
        pid.display()
    );
    let (outcome, log) = run(
        &attempt(dir.path(), &line),
        Some(Duration::from_millis(300)),
    )
    .await;
    assert_eq!(outcome.error.as_deref(), Some("cancelled by test"));
    assert_eq!(log, "started\n");
    assert!(gone(&pid).await, "the background sleep survived");

    // A step that ignores SIGTERM is killed after the grace period.
    let dir = tempfile::tempdir().expect("temp dir");
    let started = std::time::Instant::now();
    let (outcome, _) = run(
        &attempt(dir.path(), "trap '' TERM; sleep 300"),
        Some(Duration::from_millis(200)),
    )
    .await;
    assert_eq!(outcome.error.as_deref(), Some("cancelled by test"));
    assert_eq!(outcome.exit_code, Some(128 + 9));
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn nothing_the_step_left_behind_survives_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pid = dir.path().join("orphan.pid");
    let line = format!(
        "sleep 300 > /dev/null 2>&1 & echo $! > {}; exit 0",
        pid.display()
    );
    let (outcome, _) = run(&attempt(dir.path(), &line), None).await;
    assert_eq!(outcome.exit_code, Some(0));
    assert!(gone(&pid).await, "an orphan of the step is still running");
}

/// What a weir killed mid-step leaves: a process group still running with
/// its out folder's `.weir-attempt`, whose supervisor is gone (no process
/// has its pid). Recovery finds it
/// through the trait, cannot take it up, and discards it.
#[tokio::test]
async fn a_group_left_by_a_dead_weir_is_found_and_discarded() {
    let dir = tempfile::tempdir().expect("temp dir");
    let runs = dir.path().join("runs");
    let out = runs.join("run-9").join("out").join("train-1");
    std::fs::create_dir_all(&out).expect("out");
    let mut child = std::process::Command::new("sh")
        .args(["-c", "sleep 300"])
        .env("WEIR_OUT", &out)
        .process_group(0)
        .spawn()
        .expect("spawn");
    let record = format!("3 1 {} 999999999 0\n", child.id());
    std::fs::write(out.join(".weir-attempt"), record).expect("record");
    std::fs::write(dir.path().join("child.pid"), child.id().to_string()).expect("pid");

    let executor = ProcessExecutor::new(&runs);
    let found = executor.find("run-9").await.expect("find");
    assert_eq!(found.len(), 1, "{found:?}");
    let leftover = &found[0];
    assert_eq!(
        leftover.key,
        AttemptKey {
            run: "run-9".to_owned(),
            step: 3,
            attempt: 1
        }
    );
    assert!(leftover.running && !leftover.resumable, "{leftover:?}");
    assert!(executor.find("run-other").await.expect("find").is_empty());

    executor.discard(leftover).await;
    let _ = child.wait();
    assert!(gone(&dir.path().join("child.pid")).await);
    let again = executor.find("run-9").await.expect("find");
    assert!(again.is_empty(), "{again:?}");
}

/// A step that ended while no weir committed its exit keeps that exit on
/// disk: found ended and resumable, taken up with its log and exit, until
/// released.
#[tokio::test]
async fn an_ended_step_stays_recorded_until_released() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut launch = attempt(dir.path(), "echo one; echo tok-123456 >&2; exit 3");
    launch.out = dir.path().join("runs/run-7/out/train-2");
    let executor = ProcessExecutor::new(dir.path().join("runs"));
    let (exit, log) = launch_with(&executor, &launch, None).await;
    assert_eq!((exit.exit_code, log.as_str()), (Some(3), "one\n***\n"));

    let found = executor.find("run-7").await.expect("find");
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(!found[0].running && found[0].resumable, "{found:?}");
    assert_eq!((found[0].key.step, found[0].key.attempt), (0, 2));
    // Taken up with the first 4 bytes stored already: the rest, once.
    let (exit, log) = reattach(&executor, &found[0], &launch, 4).await;
    assert_eq!((exit.exit_code, log.as_str()), (Some(3), "***\n"));

    executor.release(&launch).await;
    assert!(executor.find("run-7").await.expect("find").is_empty());
    assert!(
        !launch.out.join(".weir-log").exists(),
        "raw log left behind"
    );
}

/// A step whose weir stopped following it mid-run (here: the launch
/// dropped) goes on, is found running and taken up: its log continues
/// from the byte the store has, nothing lost or doubled, and its exit
/// comes back.
#[tokio::test]
async fn a_step_left_running_is_taken_up_with_its_log_whole() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut launch = attempt(
        dir.path(),
        "for i in 1 2 3 4 5 6; do echo line $i; sleep 0.2; done; echo '{\"n\": 6}' > $WEIR_OUT/metrics.json",
    );
    launch.out = dir.path().join("runs/run-7/out/train-2");
    let executor = ProcessExecutor::new(dir.path().join("runs"));
    let (early, _) = launch_with(&executor, &launch, Some(Duration::from_millis(500))).await;
    assert_eq!(early.error.as_deref(), Some("dropped"), "{early:?}");
    let stored = std::fs::read(launch.out.join(".weir-log")).expect("raw log");
    let found = executor.find("run-7").await.expect("find");
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].running && found[0].resumable, "{found:?}");
    let (exit, rest) = reattach(&executor, &found[0], &launch, stored.len() as u64).await;
    assert_eq!(exit.exit_code, Some(0), "{exit:?}");
    assert_eq!(exit.metrics["n"], 6);
    let whole = format!("{}{rest}", String::from_utf8_lossy(&stored));
    let expected: String = (1..=6).map(|i| format!("line {i}\n")).collect();
    assert_eq!(whole, expected);
}

#[tokio::test]
async fn a_secret_is_masked_in_every_encoding_a_step_prints_it_in() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut launch = attempt(
        dir.path(),
        // As Python's quote, quote(safe=''), lower-case hex, JSON, base64
        // inside a longer stream; then stderr, all in one log.
        "printf 's3cr3t/Value%%2Bwith%%3Dsigns%%26more\\n'; \
         printf 's3cr3t%%2fValue%%2bwith%%3dsigns%%26more\\n'; \
         printf '{\"t\": \"s3cr3t\\\\/Value+with=signs&more\"}\\n'; \
         printf 'xy%s' \"$TOKEN\" | base64 -w0; echo; \
         echo \"$TOKEN\" >&2",
    );
    launch.secrets = vec![(
        "TOKEN".to_owned(),
        "s3cr3t/Value+with=signs&more".to_owned(),
    )];
    let (exit, log) = run(&launch, None).await;
    assert_eq!(exit.exit_code, Some(0), "{exit:?} {log}");
    assert!(!log.contains("s3cr3t") && !log.contains("Value"), "{log}");
    assert_eq!(log.matches("***").count(), 5, "{log}");
}

#[tokio::test]
async fn one_masker_over_both_streams_keeps_their_order_and_masks_a_secret_split_across_them() {
    let dir = tempfile::tempdir().expect("temp dir");
    // Half the secret on stdout, the rest on stderr.
    let launch = attempt(
        dir.path(),
        "printf 'tok-12'; sleep 0.2; printf '3456 done\\n' >&2",
    );
    let (exit, log) = run(&launch, None).await;
    assert_eq!(exit.exit_code, Some(0), "{exit:?}");
    assert_eq!(log, "*** done\n");
    // Stderr shorter than the secret comes out before stdout's next
    // line, not spliced in at the end.
    let launch = attempt(
        dir.path(),
        "printf 'ab' >&2; sleep 0.2; echo 'line one'; sleep 0.2; echo 'line two'",
    );
    let (_, log) = run(&launch, None).await;
    assert_eq!(log, "abline one\nline two\n");
}
