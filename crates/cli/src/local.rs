//! What `weir run` and `weir resume` share: the local store, progress
//! lines, and the exit code of a finished run.

use crate::output::Output;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;
use weir_daemon::{Change, Options};
use weir_engine::{Run, RunState, StepState};
use weir_store::Store;

/// Flags shared by the commands that use the local store.
#[derive(clap::Args)]
pub(crate) struct StoreArgs {
    /// The data folder: the SQLite database and the runs' files.
    #[arg(long, env = "WEIR_DATA", default_value = ".weir")]
    pub(crate) data: PathBuf,
    /// The database: sqlite://PATH (default: DATA/weir.db) or postgres://….
    #[arg(long, env = "WEIR_DB")]
    pub(crate) db: Option<String>,
    /// Most steps running at once (default: the number of CPUs).
    #[arg(long)]
    pub(crate) max_running: Option<usize>,
    /// Seconds a stopped step gets between SIGTERM and SIGKILL.
    #[arg(long, default_value_t = 10)]
    pub(crate) grace: u64,
    /// How to print the finished run.
    #[arg(long, value_enum, default_value_t)]
    pub(crate) output: Output,
}

impl StoreArgs {
    pub(crate) async fn store(&self) -> anyhow::Result<Store> {
        let url = match &self.db {
            Some(url) => url.clone(),
            None => format!("sqlite://{}", self.data.join("weir.db").display()),
        };
        Store::connect(&url)
            .await
            .map_err(|e| anyhow::anyhow!("cannot open the store at {url}: {e}"))
    }

    pub(crate) fn options(&self) -> Options {
        let cpus = std::thread::available_parallelism().map_or(2, usize::from);
        Options {
            data: absolute(&self.data),
            max_running: self.max_running.unwrap_or(cpus).max(1),
            grace: Duration::from_secs(self.grace),
        }
    }
}

fn absolute(path: &Path) -> PathBuf {
    std::env::current_dir().map_or_else(|_| path.to_owned(), |dir| dir.join(path))
}

/// Prints a step's new state as one line (to stderr when stdout carries JSON).
pub(crate) fn progress(output: Output) -> impl FnMut(&Run, &Change) {
    move |run, change| {
        let step = &run.steps[change.step];
        let line = match change.to {
            StepState::Running => {
                let attempt = step.attempts.last().map_or(1, |a| a.number);
                if attempt > 1 {
                    format!("{}: running (attempt {attempt})", step.id)
                } else {
                    format!("{}: running", step.id)
                }
            }
            StepState::Succeeded => match elapsed(step) {
                Some(secs) if secs < 1.0 => {
                    format!("{}: succeeded in {}ms", step.id, (secs * 1000.0).round())
                }
                Some(secs) => format!("{}: succeeded in {secs:.2}s", step.id),
                None => format!("{}: succeeded", step.id),
            },
            other => match &step.reason {
                Some(reason) => format!("{}: {other} ({reason})", step.id),
                None => format!("{}: {other}", step.id),
            },
        };
        if output == Output::Json {
            eprintln!("{line}");
        } else {
            println!("{line}");
            let _ = std::io::stdout().flush();
        }
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
        Output::Json => println!("{}", serde_json::to_string_pretty(run)?),
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
