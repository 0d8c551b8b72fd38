//! What `weir run` and `weir resume` share: the local store, progress
//! lines, and the exit code of a finished run.

use crate::config::{ConfigArgs, Layers};
use crate::output::Output;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;
use weir_daemon::{Change, Docker, Executors, Options};
use weir_engine::{Run, RunState, StepState};
use weir_model::Pipeline;
use weir_model::pipeline::{Executor, StepKind};
use weir_store::Store;

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
    /// How to print the finished run.
    #[arg(long, value_enum, default_value_t)]
    pub(crate) output: Output,
}

impl StoreArgs {
    /// The settings these flags, the environment and `weir.toml` give.
    pub(crate) fn settings(&self) -> anyhow::Result<Settings> {
        let mut layers = Layers::read(&self.config)?;
        self.resolve(&mut layers)
    }

    /// Resolves the store's settings into `layers`, which the caller may go
    /// on resolving its own settings with.
    pub(crate) fn resolve(&self, layers: &mut Layers) -> anyhow::Result<Settings> {
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
        if max_running == 0 {
            anyhow::bail!("max_running must be at least 1");
        }
        Ok(Settings {
            data,
            db,
            max_running,
            grace,
            gpus,
            keep_containers,
            output: self.output,
        })
    }
}

/// The resolved settings of the local store and how runs are driven.
pub(crate) struct Settings {
    pub(crate) data: PathBuf,
    pub(crate) db: String,
    max_running: usize,
    grace: u64,
    gpus: Option<Vec<String>>,
    keep_containers: bool,
    pub(crate) output: Output,
}

impl Settings {
    pub(crate) async fn store(&self) -> anyhow::Result<Store> {
        Store::connect(&self.db)
            .await
            .map_err(|e| anyhow::anyhow!("cannot open the store at {}: {e}", self.db))
    }

    /// How the daemon drives runs: a Docker engine when one answers (steps
    /// that need it fail with a clear reason otherwise), the GPUs given or
    /// found.
    pub(crate) async fn daemon_options(&self) -> anyhow::Result<Options> {
        let gpus = self.gpu_ids()?;
        self.with(Docker::IfReachable, gpus).await
    }

    /// How to drive runs of `pipeline`: with a Docker engine when it has
    /// docker steps (an engine that cannot be reached is one clear error).
    pub(crate) async fn options(&self, pipeline: &Pipeline) -> anyhow::Result<Options> {
        let needs_docker = pipeline
            .steps
            .iter()
            .any(|s| matches!(&s.kind, StepKind::Container(c) if c.executor == Executor::Docker));
        let wants_gpus = pipeline
            .steps
            .iter()
            .any(|s| matches!(&s.kind, StepKind::Container(c) if c.resources.gpus.is_some()));
        let gpus = if wants_gpus || self.gpus.is_some() {
            self.gpu_ids()?
        } else {
            Vec::new()
        };
        let docker = if needs_docker {
            Docker::Required
        } else {
            Docker::Skip
        };
        self.with(docker, gpus).await
    }

    /// The host's GPU ids: the ones given, else what nvidia-smi reports.
    fn gpu_ids(&self) -> anyhow::Result<Vec<String>> {
        Ok(weir_executor::inventory(self.gpus.as_deref())?
            .into_iter()
            .map(|g| g.index)
            .collect())
    }

    /// Options from these settings, with the executors and GPUs found.
    async fn with(&self, docker: Docker, gpus: Vec<String>) -> anyhow::Result<Options> {
        let data = absolute(&self.data);
        let executors = Executors::connect(&data, docker, self.keep_containers).await?;
        Ok(Options {
            data,
            max_running: self.max_running,
            grace: Duration::from_secs(self.grace),
            executors,
            gpus,
            usage: Default::default(),
        })
    }
}

fn absolute(path: &Path) -> PathBuf {
    std::env::current_dir().map_or_else(|_| path.to_owned(), |dir| dir.join(path))
}

/// Shows each step's new state: on a terminal, one live line per step
/// with its state and elapsed time (indicatif); otherwise one plain line
/// per change (on stderr when stdout carries JSON).
pub(crate) fn progress(output: Output) -> impl FnMut(&Run, &Change) {
    let live = output == Output::Table && std::io::stdout().is_terminal();
    let bars = MultiProgress::new();
    let mut lines: HashMap<usize, ProgressBar> = HashMap::new();
    move |run, change| {
        let step = &run.steps[change.step];
        let text = describe(step, change.to);
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
        if change.to.is_terminal() {
            let mark = if change.to == StepState::Succeeded || change.to == StepState::Skipped {
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
fn describe(step: &weir_engine::StepRun, state: StepState) -> String {
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

fn elapsed(step: &weir_engine::StepRun) -> Option<f64> {
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
    match output {
        Output::Json => {
            // As the API answers a run: `trigger` is the kind of its cause.
            let mut value = serde_json::to_value(run)?;
            if let Some(map) = value.as_object_mut() {
                map.insert("trigger".to_owned(), run.cause.kind().into());
                map.insert("retry_of".to_owned(), run.retry_of().into());
            }
            println!("{}", serde_json::to_string_pretty(&value)?);
        }
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
    Ok(match run.state {
        RunState::Succeeded => ExitCode::SUCCESS,
        RunState::Cancelled => ExitCode::from(130),
        _ => ExitCode::FAILURE,
    })
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
