//! The latency histograms `/metrics` serves besides the store's counts:
//! how long steps and runs take (by pipeline and outcome), how long runs
//! wait before their first step, how long a webhook delivery takes to be
//! answered, and how long a commit of a run's state takes. They live in
//! one registry per process (the daemon is one per process), filled where
//! the durations are known, and rendered in Prometheus' text format.

use prometheus::{Encoder as _, HistogramOpts, HistogramVec, Registry, TextEncoder};
use std::sync::LazyLock;
use std::time::Duration;

/// Buckets for things that take from milliseconds to hours (steps, runs).
const LONG: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0,
    1800.0, 3600.0, 7200.0, 21600.0, 86400.0,
];

/// Buckets for the daemon's own work (commits, deliveries).
const SHORT: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// The daemon's histograms.
pub(crate) struct Metrics {
    registry: Registry,
    /// `weir_step_duration_seconds{pipeline, outcome}`.
    pub(crate) step: HistogramVec,
    /// `weir_run_duration_seconds{pipeline, outcome}`.
    pub(crate) run: HistogramVec,
    /// `weir_run_queue_wait_seconds{pipeline}`.
    pub(crate) queue_wait: HistogramVec,
    /// `weir_webhook_intake_seconds{outcome}`.
    pub(crate) webhook: HistogramVec,
    /// `weir_store_commit_seconds{outcome}`.
    pub(crate) commit: HistogramVec,
}

fn histogram(
    registry: &Registry,
    name: &str,
    help: &str,
    buckets: &[f64],
    labels: &[&str],
) -> HistogramVec {
    let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
    // The options are constants: a failure here is a programming error
    // caught by the first test that scrapes.
    let vec = HistogramVec::new(opts, labels).unwrap_or_else(|e| panic!("histogram {name}: {e}"));
    if let Err(e) = registry.register(Box::new(vec.clone())) {
        panic!("histogram {name}: {e}");
    }
    vec
}

/// The process's histograms.
pub(crate) static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let registry = Registry::new();
    Metrics {
        step: histogram(
            &registry,
            "weir_step_duration_seconds",
            "Step instances from their first start to their end, by pipeline and outcome.",
            LONG,
            &["pipeline", "outcome"],
        ),
        run: histogram(
            &registry,
            "weir_run_duration_seconds",
            "Runs from their creation to their end, by pipeline and outcome.",
            LONG,
            &["pipeline", "outcome"],
        ),
        queue_wait: histogram(
            &registry,
            "weir_run_queue_wait_seconds",
            "Runs from their creation to their first step decided (a slot of the pipeline, the daemon's capacity), by pipeline.",
            LONG,
            &["pipeline"],
        ),
        webhook: histogram(
            &registry,
            "weir_webhook_intake_seconds",
            "Webhook deliveries from their arrival to their answer, by outcome (accepted, replay, refused).",
            SHORT,
            &["outcome"],
        ),
        commit: histogram(
            &registry,
            "weir_store_commit_seconds",
            "Commits of a run's state to the store, by outcome (ok, error).",
            SHORT,
            &["outcome"],
        ),
        registry,
    }
});

/// Seconds, as histograms take them.
pub(crate) fn seconds(from: weir_engine::Time, to: weir_engine::Time) -> f64 {
    (to - from).to_std().unwrap_or(Duration::ZERO).as_secs_f64()
}

/// Records a webhook delivery answered after `took`, with `outcome`
/// (`accepted`, `replay`, `refused`).
pub fn observe_webhook(outcome: &str, took: Duration) {
    METRICS
        .webhook
        .with_label_values(&[outcome])
        .observe(took.as_secs_f64());
}

/// The histograms in Prometheus' text format, to append to `/metrics`.
pub fn render() -> String {
    let mut out = Vec::new();
    if let Err(e) = TextEncoder::new().encode(&METRICS.registry.gather(), &mut out) {
        tracing::error!(error = %e, "cannot render the histograms");
    }
    String::from_utf8(out).unwrap_or_default()
}

/// Records what a run's state change says: a step instance that ended.
pub(crate) fn observe_change(pipeline: &str, run: &weir_engine::Run, change: &crate::Change) {
    let instance = &run.steps[change.step];
    if change.to.is_terminal()
        && let (Some(from), Some(to)) = (instance.started_at, instance.finished_at)
    {
        METRICS
            .step
            .with_label_values(&[pipeline, change.to.as_str()])
            .observe(seconds(from, to));
    }
}

/// Records a run that ended: its duration and how long it waited.
pub(crate) fn observe_end(run: &weir_engine::Run) {
    if let Some(to) = run.finished_at {
        METRICS
            .run
            .with_label_values(&[run.pipeline.as_str(), run.state.as_str()])
            .observe(seconds(run.created_at, to));
    }
    if let Some(started) = run.started_at {
        METRICS
            .queue_wait
            .with_label_values(&[run.pipeline.as_str()])
            .observe(seconds(run.created_at, started));
    }
}
