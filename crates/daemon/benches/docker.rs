//! The Docker executor's cost (DESIGN.md §7: at most 1.15x `docker run
//! --rm`): 20 sequential one-step runs of `true` in the test image through
//! weir (engine, SQLite store, Docker executor, every transition
//! committed) against 20 `docker run --rm` of the same image, measured in
//! the same run; and the time from a container's start to its first log
//! line in the store. Needs the engine and `scripts/test-image`.
//!
//! `cargo bench -p weir-daemon --bench docker`
#![allow(missing_docs)] // a benchmark binary

use std::process::Command;
use std::time::{Duration, Instant};
use weir_daemon::{Docker, Executors, Options, drive, now};
use weir_store::Store;

const IMAGE: &str = "weir-test/busybox:latest";
const RUNS: usize = 20;

async fn weir_runs(command: &str, n: usize) -> (Duration, Vec<Duration>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::connect(&format!("sqlite://{}/weir.db", dir.path().display()))
        .await
        .expect("store");
    let executors = Executors::connect(dir.path(), Docker::Required, false, None)
        .await
        .expect("a Docker engine");
    let yaml = format!(
        "name: bench\nsteps:\n  one: {{ image: {IMAGE}, pull: never, command: {command} }}\n"
    );
    let pipeline = weir_model::validate(&yaml).pipeline.expect("valid");
    let hash = store.save_pipeline("bench", &yaml).await.expect("saved");
    let options = Options {
        data: dir.path().to_owned(),
        max_running: 1,
        grace: Duration::from_secs(1),
        executors,
        gpus: Vec::new(),
        usage: Default::default(),
        mlflow: None,
        retention: None,
    };
    let mut first_lines = Vec::new();
    let start = Instant::now();
    for i in 0..n {
        let id = format!("bench-{i}");
        let run = weir_engine::new_run(
            &pipeline,
            &id,
            weir_engine::Cause::manual("bench"),
            &[],
            serde_json::Value::Null,
            serde_json::json!({}),
            now(),
        )
        .expect("run");
        store.create_run(&run, &hash).await.expect("created");
        let done = drive(
            &store,
            &pipeline,
            &id,
            &options,
            std::future::pending(),
            |_, _| {},
        )
        .await
        .expect("driven");
        assert_eq!(
            done.state,
            weir_engine::RunState::Succeeded,
            "{:?}",
            done.steps[0].reason
        );
        let started = done.steps[0].attempts[0].started_at;
        if let (Some(started), Some(logged)) = (
            started,
            store.first_log_at(&id, 0, 1).await.expect("log time"),
        ) {
            first_lines.push((logged - started).to_std().unwrap_or_default());
        }
    }
    let took = start.elapsed();
    store.close().await;
    (took, first_lines)
}

fn docker_runs(n: usize) -> Duration {
    let start = Instant::now();
    for _ in 0..n {
        let status = Command::new("docker")
            .args(["run", "--rm", IMAGE, "true"])
            .status()
            .expect("docker runs");
        assert!(status.success());
    }
    start.elapsed()
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples.get(samples.len() / 2).copied().unwrap_or_default()
}

fn main() {
    let present = Command::new("docker")
        .args(["image", "inspect", IMAGE])
        .output()
        .is_ok_and(|o| o.status.success());
    if !present {
        println!(
            "docker benchmark skipped: no Docker engine or no {IMAGE} (run scripts/test-image)"
        );
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    // Warm both paths once (image layers, engine caches).
    docker_runs(1);
    runtime.block_on(weir_runs("[\"true\"]", 1));
    let mut ratios = Vec::new();
    let mut weir_totals = Vec::new();
    let mut docker_totals = Vec::new();
    for _ in 0..3 {
        let d = docker_runs(RUNS);
        let (w, _) = runtime.block_on(weir_runs("[\"true\"]", RUNS));
        ratios.push(w.as_secs_f64() / d.as_secs_f64());
        weir_totals.push(w);
        docker_totals.push(d);
    }
    ratios.sort_by(f64::total_cmp);
    let (w, d) = (median(weir_totals), median(docker_totals));
    println!(
        "{RUNS} one-step runs of true: weir {:.0} ms ({:.1} ms/run), docker run --rm {:.0} ms ({:.1} ms/run); ratio {:.2}x (median of 3 rounds; min {:.2}x, max {:.2}x)",
        w.as_secs_f64() * 1e3,
        w.as_secs_f64() * 1e3 / RUNS as f64,
        d.as_secs_f64() * 1e3,
        d.as_secs_f64() * 1e3 / RUNS as f64,
        ratios[1],
        ratios[0],
        ratios[2],
    );
    let (_, first_lines) = runtime.block_on(weir_runs("[\"echo\", \"hi\"]", RUNS));
    println!(
        "container start to first log line stored: median {:.1} ms over {} runs",
        median(first_lines.clone()).as_secs_f64() * 1e3,
        first_lines.len()
    );
}
