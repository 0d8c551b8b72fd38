//! The Docker executor against the real engine, with the test image that
//! scripts/test-image builds. Runs when WEIR_TEST_DOCKER=1, and then a
//! missing engine or image is a failure; otherwise it says it was skipped.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use weir_executor::{
    AttemptIo, AttemptKey, DockerExecutor, Executor, Exit, Launch, Pull, container_name,
};

const IMAGE: &str = "weir-test/busybox:latest";

async fn docker() -> Option<DockerExecutor> {
    static SAID: AtomicBool = AtomicBool::new(false);
    if std::env::var("WEIR_TEST_DOCKER").as_deref() != Ok("1") {
        if !SAID.swap(true, Ordering::SeqCst) {
            eprintln!(
                "docker executor tests skipped: set WEIR_TEST_DOCKER=1 (and run scripts/test-image)"
            );
        }
        return None;
    }
    Some(
        DockerExecutor::connect(false)
            .await
            .expect("WEIR_TEST_DOCKER=1 but no Docker engine"),
    )
}

/// A shell line, as a `run:` step is handed over.
fn shell(line: &str) -> Vec<String> {
    vec!["sh".to_owned(), "-c".to_owned(), line.to_owned()]
}

fn attempt(dir: &Path, run: &str, argv: Vec<String>) -> Launch {
    Launch {
        key: AttemptKey {
            run: run.to_owned(),
            step: 0,
            attempt: 1,
        },
        pipeline: "boxed".to_owned(),
        step: "train[lr=0.1]".to_owned(),
        params: vec![("lr".to_owned(), "0.1".to_owned())],
        argv,
        image: Some(IMAGE.to_owned()),
        pull: Pull::Never,
        env: vec![("MODE".to_owned(), "fast".to_owned())],
        secrets: vec![("TOKEN".to_owned(), "tok-987654".to_owned())],
        gpus: Vec::new(),
        cpus: Some(0.5),
        memory: Some(64 << 20),
        work: dir.join("work"),
        out: dir.join("out"),
        grace: Duration::from_secs(1),
    }
}

fn unique(name: &str) -> String {
    format!("{name}{}", std::process::id())
}

/// Runs to the end and releases the container, as weir does once the exit
/// is committed.
async fn run(docker: &DockerExecutor, a: &Launch, stop_after: Option<Duration>) -> (Exit, String) {
    let ended = launch_only(docker, a, stop_after).await;
    docker.release(a).await;
    ended
}

/// Runs to the end, leaving the container.
async fn launch_only(
    docker: &DockerExecutor,
    a: &Launch,
    stop_after: Option<Duration>,
) -> (Exit, String) {
    let (logs, mut received) = mpsc::channel(64);
    let (stop, stopped) = watch::channel(None);
    let collector = tokio::spawn(async move {
        let mut all = Vec::new();
        while let Some(chunk) = received.recv().await {
            all.extend(chunk);
        }
        String::from_utf8_lossy(&all).into_owned()
    });
    let stopper = tokio::spawn(async move {
        match stop_after {
            Some(after) => {
                tokio::time::sleep(after).await;
                let _ = stop.send(Some("cancelled by test".to_owned()));
            }
            None => std::future::pending::<()>().await,
        }
    });
    let io = AttemptIo {
        logs,
        stop: stopped,
        started: tokio::sync::oneshot::channel().0,
    };
    let outcome = docker.launch(a, io).await;
    stopper.abort();
    (outcome, collector.await.expect("collector"))
}

#[tokio::test]
async fn a_container_gets_the_contract_and_stays_until_released() {
    let Some(docker) = docker().await else { return };
    let dir = tempfile::tempdir().expect("temp dir");
    let line = "env | sort; pwd; echo '{\"acc\": 0.5}' > /weir/out/metrics.json; echo out > /weir/work/file; echo err >&2";
    let a = attempt(dir.path(), &unique("contract"), shell(line));
    let (outcome, log) = launch_only(&docker, &a, None).await;
    assert_eq!(outcome.exit_code, Some(0), "{outcome:?}\n{log}");
    assert_eq!(outcome.error, None);
    assert_eq!(outcome.metrics["acc"], 0.5);
    assert!(
        outcome
            .image
            .as_deref()
            .is_some_and(|i| i.starts_with("sha256:")),
        "{:?}",
        outcome.image
    );
    for line in [
        "WEIR_WORK=/weir/work",
        "WEIR_OUT=/weir/out",
        "WEIR_STEP=train[lr=0.1]",
        "WEIR_PARAM_LR=0.1",
        "MODE=fast",
        "TOKEN=***",
        "/weir/work",
        "err",
    ] {
        assert!(log.lines().any(|l| l == line), "missing {line} in\n{log}");
    }
    assert!(!log.contains("tok-987654"));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("work/file")).expect("shared work folder"),
        "out\n"
    );
    // Until its exit is committed the container stays, exited, where a
    // restarted weir finds it and takes it up; release removes it.
    let name = container_name(&a.key.run, &a.step, 1);
    assert!(
        docker.host_config(&name).await.is_some(),
        "removed too soon"
    );
    let found = docker.find(&a.key.run).await.expect("find");
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].resumable && !found[0].running, "{found:?}");
    docker.release(&a).await;
    assert!(
        docker.host_config(&name).await.is_none(),
        "container left behind"
    );
}

#[tokio::test]
async fn argv_steps_and_exit_codes() {
    let Some(docker) = docker().await else { return };
    let dir = tempfile::tempdir().expect("temp dir");
    let a = attempt(
        dir.path(),
        &unique("argv"),
        vec!["sh".into(), "-c".into(), "exit 5".into()],
    );
    let (outcome, _) = run(&docker, &a, None).await;
    assert_eq!(outcome.exit_code, Some(5));
    let a = attempt(
        dir.path(),
        &unique("argv2"),
        vec!["echo".into(), "$HOME".into()],
    );
    let (outcome, log) = run(&docker, &a, None).await;
    assert_eq!(outcome.exit_code, Some(0));
    assert_eq!(log, "$HOME\n", "argv is not shell text");
}

#[tokio::test]
async fn a_stop_terms_then_kills_the_container() {
    let Some(docker) = docker().await else { return };
    let dir = tempfile::tempdir().expect("temp dir");
    let a = attempt(
        dir.path(),
        &unique("stop"),
        shell("trap '' TERM; echo up; sleep 300"),
    );
    let started = std::time::Instant::now();
    let (outcome, log) = run(&docker, &a, Some(Duration::from_secs(2))).await;
    assert_eq!(outcome.error.as_deref(), Some("cancelled by test"));
    assert_eq!(outcome.exit_code, Some(137));
    assert_eq!(log, "up\n");
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(
        docker
            .host_config(&container_name(&a.key.run, &a.step, 1))
            .await
            .is_none()
    );
}

#[tokio::test]
async fn out_of_memory_is_said_with_the_limit() {
    let Some(docker) = docker().await else { return };
    let dir = tempfile::tempdir().expect("temp dir");
    let mut a = attempt(dir.path(), &unique("oom"), shell("tail /dev/zero"));
    a.memory = Some(16 << 20);
    let (outcome, _) = run(&docker, &a, None).await;
    assert_eq!(
        outcome.error.as_deref(),
        Some("out of memory (limit 16Mi)"),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn a_missing_image_names_the_image() {
    let Some(docker) = docker().await else { return };
    let dir = tempfile::tempdir().expect("temp dir");
    let mut a = attempt(dir.path(), &unique("missing"), shell("true"));
    a.image = Some("weir-test/absent:1".to_owned());
    let (outcome, _) = run(&docker, &a, None).await;
    assert_eq!(
        outcome.error.as_deref(),
        Some("image 'weir-test/absent:1' is not on this host and the step says pull: never")
    );
    a.pull = Pull::IfNotPresent;
    let (outcome, log) = run(&docker, &a, None).await;
    let error = outcome.error.unwrap_or_default();
    assert!(
        error.starts_with("cannot pull image 'weir-test/absent:1': "),
        "{error}"
    );
    assert!(
        log.starts_with("[weir] pulling weir-test/absent:1"),
        "{log}"
    );
}

#[tokio::test]
async fn granted_gpus_become_a_device_request_with_limits() {
    let Some(docker) = docker().await else { return };
    let dir = tempfile::tempdir().expect("temp dir");
    let mut a = attempt(dir.path(), &unique("gpus"), shell("true"));
    a.gpus = vec!["0".to_owned(), "2".to_owned()];
    let name = docker.create_only(&a).await.expect("created, not started");
    let host = docker.host_config(&name).await.expect("inspectable");
    // Recovery finds it by the labels weir put on it, and can take it up.
    let found = docker.find(&a.key.run).await.expect("listed");
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(
        (found[0].key.clone(), found[0].handle.as_str()),
        (a.key.clone(), name.as_str())
    );
    assert!(found[0].resumable && !found[0].running, "{found:?}");
    docker.discard(&found[0]).await;
    let requests = host.device_requests.expect("device requests");
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].driver.as_deref(), Some("nvidia"));
    assert_eq!(
        requests[0].device_ids.as_deref(),
        Some(&["0".to_owned(), "2".to_owned()][..])
    );
    assert_eq!(requests[0].capabilities, Some(vec![vec!["gpu".to_owned()]]));
    assert_eq!(host.nano_cpus, Some(500_000_000));
    assert_eq!(host.memory, Some(64 << 20));
    let found = docker.find(&a.key.run).await.expect("listed");
    assert!(found.is_empty(), "discarded containers are gone: {found:?}");
}
