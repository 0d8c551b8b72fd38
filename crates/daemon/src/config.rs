//! How runs are driven: the data folder, the bounds, the GPUs, and the
//! executors by the name a step's `executor:` gives. [`Config`] is what a
//! binary hands over (its values already layered from flags, environment
//! and files); the daemon builds the store, the executors, the GPU
//! inventory and the API token from it.
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

/// The daemon's settings, as the binary resolved them.
#[derive(Debug, Clone)]
pub struct Config {
    /// The data folder: the SQLite database, the keys, the runs' files.
    pub data: PathBuf,
    /// The database: `sqlite://PATH` or `postgres://…`.
    pub db: String,
    /// Most attempts running at once.
    pub max_running: usize,
    /// How long a stopped step may take to exit before SIGKILL.
    pub grace: Duration,
    /// The host's GPU ids; `None`: what `nvidia-smi` reports.
    pub gpus: Option<Vec<String>>,
    /// Keep the containers of finished steps.
    pub keep_containers: bool,
    /// The program, with its arguments, that starts process steps so they
    /// outlive this weir (the binary's `weir supervise`); `None`: they are
    /// waited for in this process, and lost when it dies.
    pub supervisor: Option<(PathBuf, Vec<String>)>,
    /// The MLflow server runs and registrations are mirrored to, unless a
    /// pipeline names its own.
    pub mlflow: Option<crate::MlflowTarget>,
    /// Finished runs older than this are pruned (`weir gc`, and hourly).
    pub retention: Option<Duration>,
}

/// Why the daemon's parts could not be built from a [`Config`].
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The store could not be opened.
    #[error("cannot open the store at {db}: {source}")]
    Store {
        /// The database URL.
        db: String,
        /// The cause.
        source: weir_store::Error,
    },
    /// An executor or the GPU inventory failed.
    #[error(transparent)]
    Executor(#[from] weir_executor::Error),
    /// A key or token file could not be read or made.
    #[error("{path}: {source}")]
    Secret {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
}

impl Config {
    /// Opens the store.
    pub async fn store(&self) -> Result<weir_store::Store, ConfigError> {
        weir_store::Store::connect(&self.db)
            .await
            .map_err(|source| ConfigError::Store {
                db: self.db.clone(),
                source,
            })
    }

    /// How the daemon (`weir serve`) drives runs: Docker when it answers
    /// (docker steps fail with a clear reason while it does not), the GPUs
    /// given or found.
    pub async fn daemon_options(&self) -> Result<Options, ConfigError> {
        let gpus = self.gpu_ids()?;
        self.options(Docker::IfReachable, gpus).await
    }

    /// How `weir run` and `weir resume` drive runs of `pipeline`: Docker
    /// only when it has docker steps (then an engine that does not answer
    /// is one clear error), the GPUs only when it asks for some or they
    /// were given.
    pub async fn options_for(
        &self,
        pipeline: &weir_model::Pipeline,
    ) -> Result<Options, ConfigError> {
        use weir_model::pipeline::{Executor, StepKind};
        let containers = || {
            pipeline.steps.iter().filter_map(|s| match &s.kind {
                StepKind::Container(c) => Some(c),
                _ => None,
            })
        };
        let docker = if containers().any(|c| c.executor == Executor::Docker) {
            Docker::Required
        } else {
            Docker::Skip
        };
        let gpus = if containers().any(|c| c.resources.gpus.is_some()) || self.gpus.is_some() {
            self.gpu_ids()?
        } else {
            Vec::new()
        };
        self.options(docker, gpus).await
    }

    /// The API token: `WEIR_TOKEN`, else `DATA/token`, made at the first
    /// start (mode 0600).
    pub fn token(&self) -> Result<String, ConfigError> {
        if let Ok(token) = std::env::var("WEIR_TOKEN")
            && !token.is_empty()
        {
            return Ok(token);
        }
        let path = self.data.join("token");
        weir_store::secret_file(&path).map_err(|source| ConfigError::Secret {
            path: path.display().to_string(),
            source,
        })
    }

    fn gpu_ids(&self) -> Result<Vec<String>, ConfigError> {
        Ok(weir_executor::inventory(self.gpus.as_deref())?
            .into_iter()
            .map(|g| g.index)
            .collect())
    }

    async fn options(&self, docker: Docker, gpus: Vec<String>) -> Result<Options, ConfigError> {
        let data =
            std::env::current_dir().map_or_else(|_| self.data.clone(), |d| d.join(&self.data));
        let executors =
            Executors::connect(&data, docker, self.keep_containers, self.supervisor.clone())
                .await?;
        Ok(Options {
            data,
            max_running: self.max_running,
            grace: self.grace,
            executors,
            gpus,
            usage: Default::default(),
            mlflow: self.mlflow.clone(),
            retention: self.retention,
        })
    }
}

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
    /// The MLflow server runs and registrations are mirrored to, unless a
    /// pipeline names its own.
    pub mlflow: Option<crate::MlflowTarget>,
    /// Finished runs older than this are pruned (`weir gc`, and hourly).
    pub retention: Option<Duration>,
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
    /// always (started by `supervisor` when there is one), Docker as
    /// `docker` says.
    pub async fn connect(
        data: &Path,
        docker: Docker,
        keep_containers: bool,
        supervisor: Option<(PathBuf, Vec<String>)>,
    ) -> Result<Executors, weir_executor::Error> {
        let runs = data.join("runs");
        let processes = match supervisor {
            Some((program, args)) => ProcessExecutor::supervised(runs, program, args),
            None => ProcessExecutor::new(runs),
        };
        let mut executors = Executors::default().with(processes);
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
