//! One attempt, from the engine's `Start` to the report of its exit: the
//! prepared step mapped to the executor's [`Launch`], handed to the
//! executor its step names, its log streamed into the store, its declared
//! artifacts hashed; and, after a crash, what the executors still have of a
//! run's unfinished attempts ([`recover`]).
//!
//! **Invariant:** `Started` is reported once the process or container
//! exists and always before `Exited`; every attempt started here reports
//! `Exited` exactly once, whatever fails on the way.

use crate::config::{Options, out_dir, run_dir};
use crate::register::{register_version, registration, sha256_file};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::task::TaskTracker;
use weir_engine::{Event, Outcome, Prepared, Run, prepare};
use weir_executor::{AttemptIo, AttemptKey, Executor, Exit, Found, Launch, Pull};
use weir_model::Pipeline;
use weir_model::pipeline::StepKind;
use weir_store::Store;

/// What attempt tasks report to the loop.
pub(crate) enum Report {
    /// The attempt's process or container exists.
    Started(usize, u32),
    /// It ended so; the loop answers on the sender, when there is one,
    /// once that exit is committed (then what is left of it is released).
    Exited(usize, u32, Box<Outcome>, Option<oneshot::Sender<()>>),
}

/// An attempt a previous process left that an executor can take up.
pub(crate) struct TakeUp {
    /// The executor that has it.
    executor: Arc<dyn Executor>,
    /// What it found.
    found: Found,
    /// Log bytes of it the store already has.
    pub(crate) skip: u64,
}

impl TakeUp {
    /// The instance and attempt it is.
    pub(crate) fn attempt(&self) -> (usize, u32) {
        (self.found.key.step, self.found.key.attempt)
    }
}

/// Why an attempt could not be handed to an executor; it fails with this.
#[derive(Debug, thiserror::Error)]
enum LaunchError {
    #[error("{0}")]
    Prepare(#[from] weir_engine::PrepareError),
    #[error("a {0} step has no process")]
    NoProcess(&'static str),
    #[error("no Docker engine: connect weir to one, or run this step with 'executor: process'")]
    NoDocker,
    #[error("no executor '{0}' in this weir")]
    NoExecutor(&'static str),
    #[error("secret {0} is not set in weir's environment")]
    Secret(String),
}

/// An attempt ready to hand over: its executor, its launch, and the
/// artifacts to hash once it succeeds.
struct Ready {
    executor: Arc<dyn Executor>,
    launch: Launch,
    artifacts: Vec<String>,
}

/// What starts the attempts of one run.
pub(crate) struct Starter<'a> {
    pub(crate) store: &'a Store,
    pub(crate) pipeline: &'a Pipeline,
    pub(crate) options: &'a Options,
    pub(crate) reports: mpsc::Sender<Report>,
    /// The run's attempt tasks, which the loop waits for before it ends.
    pub(crate) tasks: TaskTracker,
}

impl Starter<'_> {
    /// Starts attempt `attempt` of instance `step` in a task of its own —
    /// or, with `take_up`, takes up what a previous process left of it —
    /// and returns the sender that stops it.
    pub(crate) fn start(
        &self,
        run: &Run,
        step: usize,
        attempt: u32,
        take_up: Option<TakeUp>,
    ) -> watch::Sender<Option<String>> {
        let (stop, stopped) = watch::channel(None);
        let reports = self.reports.clone();
        let kind = &self.pipeline.steps[run.steps[step].step].kind;
        if let StepKind::Register(register) = kind {
            let new = registration(self.pipeline, run, step, register, self.options);
            let store = self.store.clone();
            self.tasks.spawn(async move {
                let _ = reports.send(Report::Started(step, attempt)).await;
                let outcome = match new {
                    Ok(new) => register_version(&store, new).await,
                    Err(error) => Outcome::failed(error.to_string()),
                };
                let _ = reports
                    .send(Report::Exited(step, attempt, Box::new(outcome), None))
                    .await;
            });
            return stop;
        }
        let launch = self.launch(run, step, attempt);
        let store = self.store.clone();
        let run_id = run.id.clone();
        self.tasks.spawn(async move {
            let Ready {
                executor,
                launch,
                artifacts,
            } = match launch {
                Ok(ready) => ready,
                Err(error) => {
                    let outcome = Outcome::failed(error.to_string());
                    let _ = reports
                        .send(Report::Exited(step, attempt, Box::new(outcome), None))
                        .await;
                    return;
                }
            };
            // Started is reported once the process or container exists, and
            // always before Exited.
            let (started, on_start) = oneshot::channel::<()>();
            let announce = {
                let reports = reports.clone();
                tokio::spawn(async move {
                    if on_start.await.is_ok() {
                        let _ = reports.send(Report::Started(step, attempt)).await;
                    }
                })
            };
            let (logs, mut chunks) = mpsc::channel::<Vec<u8>>(64);
            let writer = {
                let store = store.clone();
                let run_id = run_id.clone();
                // A take-up continues the log at the byte the store has.
                let mut at = take_up
                    .as_ref()
                    .filter(|t| t.executor.name() == executor.name())
                    .map_or(0, |t| t.skip);
                tokio::spawn(async move {
                    while let Some(chunk) = chunks.recv().await {
                        store_chunk(&store, &run_id, step, attempt, at, &chunk).await;
                        at += chunk.len() as u64;
                    }
                })
            };
            let io = AttemptIo {
                logs,
                stop: stopped,
                started,
            };
            let exit = match take_up {
                Some(take_up) if take_up.executor.name() == executor.name() => {
                    take_up
                        .executor
                        .reattach(&take_up.found, &launch, take_up.skip, io)
                        .await
                }
                _ => executor.launch(&launch, io).await,
            };
            let _ = announce.await;
            let _ = writer.await;
            let outcome = hash_artifacts(outcome(exit), launch.work.clone(), artifacts).await;
            let (committed, on_commit) = oneshot::channel();
            let _ = reports
                .send(Report::Exited(
                    step,
                    attempt,
                    Box::new(outcome),
                    Some(committed),
                ))
                .await;
            // Not before: a weir that dies first finds the attempt ended
            // (an exited container, a recorded exit), not lost.
            if on_commit.await.is_ok() {
                executor.release(&launch).await;
            }
        });
        stop
    }

    /// The executor, launch and declared artifacts of a container step's
    /// attempt: its templates rendered, its secrets read from weir's
    /// environment.
    fn launch(&self, run: &Run, step: usize, attempt: u32) -> Result<Ready, LaunchError> {
        let kind = &self.pipeline.steps[run.steps[step].step].kind;
        if !matches!(kind, StepKind::Container(_)) {
            return Err(LaunchError::NoProcess(kind.name()));
        }
        let prepared = prepare(run, self.pipeline, step)?;
        let name = prepared.executor.name();
        let executor = match self.options.executors.get(name) {
            Some(executor) => Arc::clone(executor),
            None if name == "docker" => return Err(LaunchError::NoDocker),
            None => return Err(LaunchError::NoExecutor(name)),
        };
        let secrets = prepared
            .secrets
            .iter()
            .map(|name| {
                std::env::var(name)
                    .map(|value| (name.clone(), value))
                    .map_err(|_| LaunchError::Secret(name.clone()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let Prepared {
            command,
            image,
            pull,
            env,
            cpus,
            memory,
            artifacts,
            ..
        } = prepared;
        let launch = Launch {
            key: AttemptKey {
                run: run.id.clone(),
                step,
                attempt,
            },
            pipeline: run.pipeline.clone(),
            step: run.steps[step].id.clone(),
            params: run.params.clone(),
            argv: command.argv(),
            image,
            pull: match pull {
                weir_model::pipeline::Pull::IfNotPresent => Pull::IfNotPresent,
                weir_model::pipeline::Pull::Always => Pull::Always,
                weir_model::pipeline::Pull::Never => Pull::Never,
            },
            env,
            secrets,
            gpus: granted(run, step, attempt),
            cpus,
            memory,
            work: run_dir(self.options, run).join("work"),
            out: out_dir(self.options, run, step, attempt),
            grace: self.options.grace,
        };
        Ok(Ready {
            executor,
            launch,
            artifacts,
        })
    }
}

/// Stores one chunk of an attempt's log, trying again with backoff while
/// the store is away (the executor waits meanwhile: its output stays with
/// the process's file or Docker's log); the write is idempotent, so a
/// retry after a lost answer stores nothing twice. A closed store (the
/// daemon's end) gives up: the next weir takes the attempt up from the
/// byte the store has.
async fn store_chunk(store: &Store, run: &str, step: usize, attempt: u32, at: u64, chunk: &[u8]) {
    let mut delay = std::time::Duration::from_millis(100);
    loop {
        match store.append_log(run, step, attempt, at, chunk).await {
            Ok(()) => return,
            Err(e) if e.is_closed() => return,
            Err(e) => {
                tracing::warn!(run, step, error = %e, retry_in = ?delay, "cannot store a step log yet");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(std::time::Duration::from_secs(5));
            }
        }
    }
}

/// The engine's view of an executor's exit.
fn outcome(exit: Exit) -> Outcome {
    Outcome {
        exit_code: exit.exit_code,
        metrics: exit.metrics,
        outputs: exit.outputs,
        image: exit.image,
        artifacts: BTreeMap::new(),
        error: exit.error,
    }
}

/// Adds the SHA-256 of each artifact the step declares to a successful
/// outcome, for lineage; a declared artifact the step did not write fails it.
async fn hash_artifacts(mut outcome: Outcome, work: PathBuf, declared: Vec<String>) -> Outcome {
    let succeeded = outcome.error.is_none() && outcome.exit_code == Some(0);
    if !succeeded || declared.is_empty() {
        return outcome;
    }
    let hashed = tokio::task::spawn_blocking(move || {
        declared
            .into_iter()
            .map(|path| match sha256_file(&work.join(&path)) {
                Ok(sha) => Ok((path, sha)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    Err(ArtifactError::Missing(path))
                }
                Err(source) => Err(ArtifactError::Unreadable { path, source }),
            })
            .collect::<Result<BTreeMap<_, _>, ArtifactError>>()
    })
    .await
    .unwrap_or_else(|e| Err(ArtifactError::Task(e)));
    match hashed {
        Ok(artifacts) => outcome.artifacts = artifacts,
        Err(error) => outcome.error = Some(error.to_string()),
    }
    outcome
}

/// Why a step's declared artifacts could not be hashed: the step fails
/// with it.
#[derive(Debug, thiserror::Error)]
enum ArtifactError {
    #[error("declared artifact '{0}' was not written to $WEIR_WORK/{0}")]
    Missing(String),
    #[error("cannot hash artifact '{path}': {source}")]
    Unreadable {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot hash artifacts: {0}")]
    Task(tokio::task::JoinError),
}

/// The GPUs granted to an attempt.
pub(crate) fn granted(run: &Run, step: usize, attempt: u32) -> Vec<String> {
    run.steps[step]
        .attempts
        .iter()
        .find(|a| a.number == attempt)
        .map(|a| a.gpus.clone())
        .unwrap_or_default()
}

/// What became of the attempts a previous process left unfinished, asked
/// of every executor. What an executor can take up (a container, running
/// or exited; a process step whose supervisor lives or whose exit is
/// recorded) is: its log continues where the store left off and its exit
/// is collected. Anything else is lost (weir's failure, not the step's),
/// after what may still run of it — a process step whose supervisor died
/// with weir — is discarded, so no attempt runs twice. What is left of
/// attempts whose exit was committed but not yet released is discarded.
pub(crate) async fn recover(run: &Run, options: &Options) -> (Vec<Event>, Vec<TakeUp>) {
    if run.steps.iter().all(|s| s.attempts.is_empty()) {
        // A new run: nothing of it can be out there.
        return (Vec::new(), Vec::new());
    }
    let unfinished: Vec<(usize, u32)> = run
        .steps
        .iter()
        .enumerate()
        .flat_map(|(step, instance)| {
            instance
                .attempts
                .iter()
                .filter(|a| !a.state.is_terminal())
                .map(move |a| (step, a.number))
        })
        .collect();
    let mut found: Vec<(Arc<dyn Executor>, Found)> = Vec::new();
    for executor in options.executors.all() {
        match executor.find(&run.id).await {
            Ok(list) => found.extend(list.into_iter().map(|f| (Arc::clone(executor), f))),
            Err(e) => tracing::warn!(
                run = %run.id,
                executor = executor.name(),
                error = %e,
                "cannot look for the attempts a previous weir left"
            ),
        }
    }
    for (executor, f) in &found {
        if !unfinished.contains(&(f.key.step, f.key.attempt)) {
            executor.discard(f).await;
        }
    }
    let mut lost = Vec::new();
    let mut take_up = Vec::new();
    for (step, attempt) in unfinished {
        let mut taken: Option<TakeUp> = None;
        for (executor, f) in &found {
            if f.key.step != step || f.key.attempt != attempt {
                continue;
            }
            if f.resumable && taken.is_none() {
                taken = Some(TakeUp {
                    executor: Arc::clone(executor),
                    found: f.clone(),
                    skip: 0,
                });
            } else {
                executor.discard(f).await;
            }
        }
        match taken {
            Some(t) => take_up.push(t),
            None => lost.push(Event::Lost { step, attempt }),
        }
    }
    (lost, take_up)
}
