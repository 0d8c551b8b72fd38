//! What `weir run` and `weir resume` share: the local store, progress
//! lines, and the exit code of a finished run.

use crate::config::{ConfigArgs, Layers};
use crate::output::Output;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use weir_api::{self as api, RunState, StepState};
use weir_daemon::{Change, Config, Run};

/// Flags shared by the commands that use the local store. Each also comes
/// from `weir.toml` and its `WEIR_*` variable (see [`crate::config`]).
#[derive(clap::Args)]
pub(crate) struct StoreArgs {
    #[command(flatten)]
    pub(crate) config: ConfigArgs,
    /// The data folder: the SQLite database and the runs' files [default: .weir].
    #[arg(long, env = "WEIR_DATA")]
    data: Option<PathBuf>,
    /// The database: sqlite://PATH (default: DATA/weir.db) or postgres://….
    #[arg(long, env = "WEIR_DB")]
    db: Option<String>,
    /// Most steps running at once (default: the number of CPUs).
    #[arg(long, env = "WEIR_MAX_RUNNING")]
    max_running: Option<usize>,
    /// Seconds a stopped step gets between SIGTERM and SIGKILL [default: 10].
    #[arg(long, env = "WEIR_GRACE")]
    grace: Option<u64>,
    /// The host's GPU ids (`0,1`); default: what nvidia-smi reports.
    #[arg(long, env = "WEIR_GPUS", value_delimiter = ',')]
    gpus: Option<Vec<String>>,
    /// Keep the containers of finished steps, for debugging.
    #[arg(long, env = "WEIR_KEEP_CONTAINERS", num_args = 0..=1, default_missing_value = "true")]
    keep_containers: Option<bool>,
    /// The MLflow server runs and registrations are mirrored to (http://…).
    #[arg(long, env = "WEIR_MLFLOW_TRACKING_URI")]
    mlflow_tracking_uri: Option<String>,
    /// The MLflow experiment runs are logged to [default: the pipeline's name].
    #[arg(long, env = "WEIR_MLFLOW_EXPERIMENT")]
    mlflow_experiment: Option<String>,
    /// Prune finished runs older than this (`30d`), at start and hourly;
    /// runs that registered a model version and the audit log are kept.
    #[arg(long, env = "WEIR_RETENTION")]
    retention: Option<String>,
    /// How to print the finished run.
    #[arg(long, value_enum, default_value_t)]
    pub(crate) output: Output,
}

impl StoreArgs {
    /// The daemon's settings these flags, the environment and `weir.toml`
    /// give, and how to print.
    pub(crate) fn settings(&self) -> anyhow::Result<(Config, Output)> {
        let mut layers = Layers::read(&self.config)?;
        self.resolve(&mut layers)
    }

    /// Resolves the store's settings into `layers`, which the caller may go
    /// on resolving its own settings with.
    pub(crate) fn resolve(&self, layers: &mut Layers) -> anyhow::Result<(Config, Output)> {
        let data = layers.pick(
            "data",
            Some("WEIR_DATA"),
            self.data.clone(),
            |f| f.data.clone(),
            PathBuf::from(".weir"),
        );
        let db = layers.pick(
            "db",
            Some("WEIR_DB"),
            self.db.clone(),
            |f| f.db.clone(),
            format!("sqlite://{}", data.join("weir.db").display()),
        );
        let cpus = std::thread::available_parallelism().map_or(2, usize::from);
        let max_running = layers.pick(
            "max_running",
            Some("WEIR_MAX_RUNNING"),
            self.max_running,
            |f| f.max_running,
            cpus,
        );
        let grace = layers.pick("grace", Some("WEIR_GRACE"), self.grace, |f| f.grace, 10);
        let gpus = layers.pick(
            "gpus",
            Some("WEIR_GPUS"),
            self.gpus.clone().map(Some),
            |f| Some(f.gpus.clone()),
            None,
        );
        let keep_containers = layers.pick(
            "keep_containers",
            Some("WEIR_KEEP_CONTAINERS"),
            self.keep_containers,
            |f| f.keep_containers,
            false,
        );
        let mlflow_tracking_uri = layers.pick(
            "mlflow_tracking_uri",
            Some("WEIR_MLFLOW_TRACKING_URI"),
            self.mlflow_tracking_uri.clone().map(Some),
            |f| f.mlflow.as_ref()?.tracking_uri.clone().map(Some),
            None,
        );
        let mlflow_experiment = layers.pick(
            "mlflow_experiment",
            Some("WEIR_MLFLOW_EXPERIMENT"),
            self.mlflow_experiment.clone().map(Some),
            |f| f.mlflow.as_ref()?.experiment.clone().map(Some),
            None,
        );
        let retention = layers.pick(
            "retention",
            Some("WEIR_RETENTION"),
            self.retention.clone().map(Some),
            |f| f.retention.as_ref()?.runs.clone().map(Some),
            None,
        );
        let retention = match retention {
            None => None,
            Some(text) => {
                let parsed = weir_model::units::Duration::parse(&text).map_err(|e| {
                    anyhow::anyhow!(
                        "retention '{text}' is not a duration ({e}): write 30d, 12h, 90m"
                    )
                })?;
                if parsed.get() < weir_daemon::MIN_RETENTION {
                    anyhow::bail!(
                        "retention '{text}' is too short: runs that just finished are still being written; give at least 1m"
                    );
                }
                Some(parsed.get())
            }
        };
        if max_running == 0 {
            anyhow::bail!("max_running must be at least 1");
        }
        let mlflow = match (mlflow_tracking_uri, mlflow_experiment) {
            (Some(uri), _) if !(uri.starts_with("http://") || uri.starts_with("https://")) => {
                anyhow::bail!(
                    "mlflow tracking_uri '{uri}' is not an MLflow server's address: write http://HOST:PORT or https://…"
                )
            }
            (Some(tracking_uri), experiment) => Some(weir_daemon::MlflowTarget {
                tracking_uri,
                experiment,
            }),
            (None, Some(_)) => {
                anyhow::bail!(
                    "the mlflow experiment is set but its tracking_uri is not: give the server's address too"
                )
            }
            (None, None) => None,
        };
        let config = Config {
            data,
            db,
            max_running,
            grace: Duration::from_secs(grace),
            gpus,
            keep_containers,
            supervisor: supervisor(),
            mlflow,
            retention,
        };
        Ok((config, self.output))
    }
}

/// This very binary as the supervisor of process steps (`weir supervise`),
/// so they outlive a weir that is killed; none when it cannot be found.
fn supervisor() -> Option<(std::path::PathBuf, Vec<String>)> {
    let me = std::env::current_exe().ok()?;
    Some((me, vec!["supervise".to_owned()]))
}

/// Shows each step's new state: on a terminal, one live line per step
/// with its state and elapsed time (indicatif); otherwise one plain line
/// per change (on stderr when stdout carries JSON).
pub(crate) fn progress(output: Output) -> impl FnMut(&Run, &Change) {
    let live = output == Output::Table && std::io::stdout().is_terminal();
    let bars = MultiProgress::new();
    let mut lines: HashMap<usize, ProgressBar> = HashMap::new();
    move |run, change| {
        let step = weir_server::wire::step(&run.steps[change.step]);
        let to = weir_server::wire::step_state(change.to);
        let text = describe(&step, to);
        if !live {
            if output == Output::Json {
                eprintln!("{}: {text}", step.id);
            } else {
                println!("{}: {text}", step.id);
                let _ = std::io::stdout().flush();
            }
            return;
        }
        let width = run.steps.iter().map(|s| s.id.len()).max().unwrap_or(10);
        let line = lines.entry(change.step).or_insert_with(|| {
            let bar = bars.add(ProgressBar::new_spinner());
            bar.set_style(
                ProgressStyle::with_template(&format!(
                    "{{spinner}} {{prefix:{width}}}  {{msg}} ({{elapsed}})"
                ))
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.set_prefix(step.id.clone());
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        if to.is_terminal() {
            let mark = if to == StepState::Succeeded || to == StepState::Skipped {
                "✓"
            } else {
                "✗"
            };
            line.set_style(
                ProgressStyle::with_template(&format!("{mark} {{prefix:{width}}}  {{msg}}"))
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            line.finish_with_message(text);
        } else {
            line.set_message(text);
        }
    }
}

/// The words for a step's new state: `running (attempt 2)`, `succeeded in
/// 12ms`, `failed (exit code 3)`.
fn describe(step: &api::StepRun, state: StepState) -> String {
    match state {
        StepState::Running => match step.attempts.last().map_or(1, |a| a.number) {
            1 => "running".to_owned(),
            n => format!("running (attempt {n})"),
        },
        StepState::Succeeded => match elapsed(step) {
            Some(secs) if secs < 1.0 => format!("succeeded in {}ms", (secs * 1000.0).round()),
            Some(secs) => format!("succeeded in {secs:.2}s"),
            None => "succeeded".to_owned(),
        },
        other => match &step.reason {
            Some(reason) => format!("{other} ({reason})"),
            None => other.to_string(),
        },
    }
}

fn elapsed(step: &api::StepRun) -> Option<f64> {
    let start = step
        .attempts
        .last()
        .and_then(|a| a.started_at)
        .or(step.started_at)?;
    let end = step.finished_at?;
    Some((end - start).num_microseconds()? as f64 / 1e6)
}

/// Prints the finished run and returns its exit code: 0 succeeded, 1
/// failed, 130 cancelled.
pub(crate) fn finish(run: &Run, output: Output) -> anyhow::Result<ExitCode> {
    let run = weir_server::wire::run(run);
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&run)?),
        Output::Table => {
            let took = match (run.started_at, run.finished_at) {
                (Some(start), Some(end)) => format!(
                    " in {:.2}s",
                    (end - start).num_milliseconds() as f64 / 1000.0
                ),
                _ => String::new(),
            };
            match &run.reason {
                Some(reason) => println!("run {} {}{took}: {reason}", run.id, run.state),
                None => println!("run {} {}{took}", run.id, run.state),
            }
        }
    }
    Ok(exit_code(run.state))
}

/// A finished run's exit code: 0 succeeded, 1 failed, 130 cancelled (as
/// for Ctrl-C).
pub(crate) fn exit_code(state: RunState) -> ExitCode {
    match state {
        RunState::Succeeded => ExitCode::SUCCESS,
        RunState::Cancelled => ExitCode::from(130),
        _ => ExitCode::FAILURE,
    }
}

/// A future that completes on Ctrl-C (SIGINT).
pub(crate) async fn ctrl_c() {
    if tokio::signal::ctrl_c().await.is_err() {
        // No signal handling here: never complete.
        std::future::pending::<()>().await;
    }
}

/// A runtime for the commands that drive runs.
pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}
