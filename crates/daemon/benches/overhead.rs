//! Orchestration overhead per step (DESIGN.md §7: under 5 ms above a bare
//! spawn of `true`), with every transition committed to SQLite.
//!
//! W0: chains of 10 and 100 `true` steps, whose difference is the marginal
//! cost of a chained step. W1: a chain of 200 `true` steps with the process executor, once with the
//! program named as users name it (found on PATH) and once by its absolute
//! path. W2: a fan-out
//! 1 → 200 → 1 with at most 2 steps at a time. The floor — spawning and
//! waiting for `true` directly, serially for W1 and two at a time for W2 —
//! is measured in the same run. Each workload runs 5 times; the medians
//! and the overhead per step are printed.
//!
//! `cargo bench -p weir-daemon --bench overhead`

#![allow(missing_docs)] // a benchmark binary

use std::fmt::Write as _;
use std::process::Command;
use std::time::{Duration, Instant};
use weir_daemon::{Docker, Executors, Options, drive, now};
use weir_store::Store;

const ROUNDS: usize = 5;

fn chain(n: usize, program: &str) -> String {
    let mut yaml = String::from("name: w1\ndefaults: { executor: process }\nsteps:\n");
    for i in 0..n {
        let needs = if i == 0 {
            String::new()
        } else {
            format!(", needs: [s{}]", i - 1)
        };
        let _ = writeln!(yaml, "  s{i}: {{ command: [\"{program}\"]{needs} }}");
    }
    yaml
}

fn fan(n: usize) -> String {
    let mut yaml = String::from(
        "name: w2\ndefaults: { executor: process }\nsteps:\n  first: { command: [\"true\"] }\n",
    );
    let mut middle = Vec::new();
    for i in 0..n {
        let _ = writeln!(yaml, "  m{i}: {{ command: [\"true\"], needs: [first] }}");
        middle.push(format!("m{i}"));
    }
    let _ = writeln!(
        yaml,
        "  last: {{ command: [\"true\"], needs: [{}] }}",
        middle.join(", ")
    );
    yaml
}

/// Spawns and waits for `true` `n` times on `threads` threads.
fn floor(n: usize, threads: usize) -> Duration {
    let start = Instant::now();
    std::thread::scope(|scope| {
        for t in 0..threads {
            let count = n / threads + usize::from(t < n % threads);
            scope.spawn(move || {
                for _ in 0..count {
                    let status = Command::new("true").status().expect("true runs");
                    assert!(status.success());
                }
            });
        }
    });
    start.elapsed()
}

/// Runs `yaml` once through the engine, store and process executor.
async fn weir(yaml: &str, max_running: usize) -> Duration {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::connect(&format!("sqlite://{}/weir.db", dir.path().display()))
        .await
        .expect("store");
    let pipeline = weir_model::validate(yaml).pipeline.expect("valid");
    let hash = store
        .save_pipeline(&pipeline.name.value, yaml)
        .await
        .expect("saved");
    let run = weir_engine::new_run(
        &pipeline,
        "bench",
        weir_engine::Cause::manual("bench"),
        &[],
        serde_json::Value::Null,
        serde_json::json!({}),
        now(),
    )
    .expect("run");
    store.create_run(&run, &hash).await.expect("created");
    let options = Options {
        data: dir.path().to_owned(),
        max_running,
        grace: Duration::from_secs(1),
        executors: Executors::connect(dir.path(), Docker::Skip, false, None)
            .await
            .expect("executors"),
        gpus: Vec::new(),
        usage: Default::default(),
        mlflow: None,
        retention: None,
    };
    let start = Instant::now();
    let done = drive(
        &store,
        &pipeline,
        "bench",
        &options,
        std::future::pending(),
        |_, _| {},
    )
    .await
    .expect("driven");
    let took = start.elapsed();
    assert_eq!(done.state, weir_engine::RunState::Succeeded);
    store.close().await;
    took
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let n = 200;
    // `true` as users name it, found on PATH, and by its absolute path: the
    // same cost when weir finds programs itself.
    let absolute = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|dir| dir.join("true"))
        .find(|p| p.is_file())
        .map_or_else(|| "/usr/bin/true".to_owned(), |p| p.display().to_string());
    // The marginal cost of a chained step: the 100-step chain less the
    // 10-step one, over the 90 steps between (the run's fixed costs,
    // opening the store and the first commit, cancel out).
    let (mut short, mut long) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        short.push(runtime.block_on(weir(&chain(10, "true"), 1)));
        long.push(runtime.block_on(weir(&chain(100, "true"), 1)));
    }
    let (short, long) = (median(short), median(long));
    let bare = ms(floor(90, 1)) / 90.0;
    println!(
        "W0 chains of 10 and 100, command true: {:.1} ms and {:.1} ms, marginal {:.2} ms/step; bare spawn {bare:.2} ms",
        ms(short),
        ms(long),
        (ms(long) - ms(short)) / 90.0,
    );
    let by_path = format!("W1 chain of 200, command {absolute}");
    for (name, yaml, steps, parallel) in [
        ("W1 chain of 200, command true", chain(n, "true"), n, 1),
        (by_path.as_str(), chain(n, &absolute), n, 1),
        ("W2 fan-out 1 -> 200 -> 1, 2 at a time", fan(n), n + 2, 2),
    ] {
        let mut weir_times = Vec::new();
        let mut floor_times = Vec::new();
        for _ in 0..ROUNDS {
            floor_times.push(floor(steps, parallel));
            weir_times.push(runtime.block_on(weir(&yaml, parallel)));
        }
        let (w, f) = (median(weir_times), median(floor_times));
        let per_step = ms(w) / steps as f64;
        let floor_per_step = ms(f) / steps as f64;
        println!(
            "{name}: weir {:.1} ms total, {per_step:.2} ms/step; bare spawn {:.1} ms, {floor_per_step:.2} ms/step; overhead {:.2} ms/step ({:.2}x the floor)",
            ms(w),
            ms(f),
            per_step - floor_per_step,
            per_step / floor_per_step,
        );
    }
}
