//! How runs are driven: the data folder, the bounds, the GPUs, and the
//! executors by the name a step's `executor:` gives.
//!
//! Adding an executor: its file in `crates/executor/src/`, and one line in
//! [`Executors::connect`] here that registers it.

use crate::load::Usage;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use weir_engine::Run;
use weir_executor::{DockerExecutor, Executor, ProcessExecutor};

/// How a run is driven.
#[derive(Clone)]
pub struct Options {
    /// The data folder: runs' work and out folders live under `runs/`.
    pub data: PathBuf,
    /// Most attempts running at once.
    pub max_running: usize,
    /// How long a stopped step may take to exit before SIGKILL.
    pub grace: Duration,
    /// What runs attempts, by the step's `executor:` value.
    pub executors: Executors,
    /// The host's GPUs, by device id.
    pub gpus: Vec<String>,
    /// What all runs driven with these options hold together.
    pub usage: Arc<Usage>,
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("data", &self.data)
            .field("max_running", &self.max_running)
            .field("grace", &self.grace)
            .field("executors", &self.executors.names())
            .field("gpus", &self.gpus)
            .finish_non_exhaustive()
    }
}

/// Whether a Docker engine must answer for the executors to be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Docker {
    /// Its absence is an error (`weir run` of a pipeline with docker steps).
    Required,
    /// Used when it answers; docker steps fail with a clear reason while
    /// it does not (`weir serve`).
    IfReachable,
    /// Not connected at all (a pipeline with process steps only).
    Skip,
}

/// The executors runs are handed to, by name.
#[derive(Clone, Default)]
pub struct Executors(BTreeMap<&'static str, Arc<dyn Executor>>);

impl Executors {
    /// The executors of a daemon whose data folder is `data`: processes
    /// always, Docker as `docker` says.
    pub async fn connect(
        data: &Path,
        docker: Docker,
        keep_containers: bool,
    ) -> Result<Executors, weir_executor::Error> {
        let mut executors = Executors::default().with(ProcessExecutor::new(data.join("runs")));
        if docker != Docker::Skip {
            match DockerExecutor::connect(keep_containers).await {
                Ok(engine) => executors = executors.with(engine),
                Err(e) if docker == Docker::IfReachable => {
                    tracing::warn!(error = %e, "docker steps will fail until the engine is back");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(executors)
    }

    /// These executors and `executor`, under its name.
    pub fn with(mut self, executor: impl Executor + 'static) -> Executors {
        self.0.insert(executor.name(), Arc::new(executor));
        self
    }

    /// The executor named `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<dyn Executor>> {
        self.0.get(name)
    }

    /// Every executor, by name.
    pub fn all(&self) -> impl Iterator<Item = &Arc<dyn Executor>> {
        self.0.values()
    }

    /// Their names.
    pub fn names(&self) -> Vec<&'static str> {
        self.0.keys().copied().collect()
    }
}

/// Where the attempts of a run keep their files.
pub(crate) fn run_dir(options: &Options, run: &Run) -> PathBuf {
    options.data.join("runs").join(&run.id)
}

/// The out folder of attempt `attempt` of instance `step`.
pub(crate) fn out_dir(options: &Options, run: &Run, step: usize, attempt: u32) -> PathBuf {
    let name: String = run.steps[step]
        .id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' || c == '=' {
                c
            } else {
                '_'
            }
        })
        .collect();
    run_dir(options, run)
        .join("out")
        .join(format!("{name}-{attempt}"))
}
