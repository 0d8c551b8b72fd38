//! The daemon itself and the one way a run is started: [`Daemon::start_run`]
//! serves manual triggers, schedules, backfills, webhooks, drift and
//! retries alike — the run built by the engine (`new_run`, or `retry_run`
//! over the original's stored version), admitted under its pipeline's
//! `concurrency`, committed with its event and its trigger's audit entry in
//! one transaction, then driven, queued or skipped. Also here: cancelling,
//! the queue, and the daemon's start (recovery) and shutdown.
//!
//! **Invariant:** no run exists without its `run.triggered` audit entry,
//! and every run is started through `start_run`, so the same admission
//! applies whatever started it.

use crate::audit::{Auditor, audit_change};
use crate::catalog::{Loaded, load_pipelines, record_loaded, stored, suggestion};
use crate::clock::now;
use crate::config::Options;
use crate::drive::{Change, Control, drive_with};
use crate::tasks::{TaskKind, Tasks};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use thiserror::Error;
use tokio::sync::{broadcast, mpsc};
use weir_engine::{Admission, Cause, Decision, Run, admit, new_run, replay_run, retry_run};
use weir_model::Pipeline;
use weir_store::Store;

/// Why a run could not be started. Nothing was stored.
#[derive(Debug, Error)]
pub enum TriggerError {
    /// No loaded pipeline has this name.
    #[error("no pipeline '{0}'{1}")]
    UnknownPipeline(String, String),
    /// The pipeline does not accept manual runs (`on.manual: false`).
    #[error("pipeline '{0}' does not accept manual runs (on.manual is false)")]
    ManualDisabled(String),
    /// Params unknown or missing.
    #[error(transparent)]
    Params(#[from] weir_engine::ParamsError),
    /// The run cannot be retried (still running, unknown step, …).
    #[error(transparent)]
    Retry(#[from] weir_engine::RetryError),
    /// The pipeline version the retried run came from cannot be had.
    #[error(transparent)]
    Stored(#[from] crate::catalog::StoredError),
    /// The version's run cannot be replayed.
    #[error(transparent)]
    Replay(#[from] weir_engine::ReplayError),
    /// An image a replay must run, by id, is not on this host.
    #[error(
        "cannot replay {target}: image {image} (step {step} of run {run}) is not on this host; load it (docker load) or replay on the host that has it"
    )]
    MissingImage {
        /// `MODEL@N`.
        target: String,
        /// The image id.
        image: String,
        /// The step that ran it.
        step: String,
        /// The run that ran it.
        run: String,
    },
    /// A backfill of a pipeline without schedules.
    #[error("pipeline '{0}' has no schedule to backfill")]
    NoSchedule(String),
    /// The retried run's work folder could not be copied.
    #[error("cannot copy run {run}'s work folder: {source}")]
    Folder {
        /// The retried run.
        run: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A drift report that cannot be judged.
    #[error("{0}")]
    BadReport(String),
    /// The daemon is shutting down and takes no more runs.
    #[error("weir is shutting down and starts no more runs")]
    ShuttingDown,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] weir_store::Error),
}

/// A run to start.
#[derive(Debug, Clone)]
pub struct StartRun {
    /// The pipeline's name (for a retry, ignored: the original's stored
    /// version is run).
    pub pipeline: String,
    /// Param values (for a retry, ignored: the original's are reused).
    pub params: Vec<(String, String)>,
    /// What starts it. A webhook's delivery and a drift report are stored
    /// as events in the run's transaction.
    pub cause: Cause,
    /// What expressions read as `event` (a webhook's payload, a drift
    /// report, a schedule's slot), or null.
    pub event: serde_json::Value,
    /// Fail the run when it has not finished after this long.
    pub timeout: Option<std::time::Duration>,
    /// A webhook delivery's body, as the SHA-256 (hex) of what was signed,
    /// and since when a delivery of the same body makes this one a replay
    /// (`on.webhook.dedupe`).
    pub same_body: Option<(String, weir_engine::Time)>,
}

impl StartRun {
    /// A run of `pipeline` for `cause`, with no params, event or timeout.
    pub fn new(pipeline: impl Into<String>, cause: Cause) -> StartRun {
        StartRun {
            pipeline: pipeline.into(),
            params: Vec::new(),
            cause,
            event: serde_json::Value::Null,
            timeout: None,
            same_body: None,
        }
    }
}

/// What [`Daemon::start_run`] did.
#[derive(Debug)]
pub enum Started {
    /// It created this run (started, queued or skipped as its pipeline's
    /// `concurrency` says).
    Run(Box<Run>),
    /// Its webhook delivery id was delivered before, which started this run
    /// (`None` while that delivery is still being handled).
    Replay(Option<String>),
}

impl Started {
    /// The run created, or the earlier delivery's.
    pub fn run_id(&self) -> Option<&str> {
        match self {
            Started::Run(run) => Some(&run.id),
            Started::Replay(run) => run.as_deref(),
        }
    }
}

/// What the daemon tells those who follow its runs (`weir run`, later the
/// UI).
#[derive(Debug, Clone)]
pub enum Notice {
    /// A step instance of `run` changed state, committed.
    Changed(Arc<Run>, Change),
    /// A run's loop ended, with the run as last committed.
    Finished(Arc<Run>),
}

/// The daemon: its store, pipelines and the runs it drives.
pub struct Daemon {
    pub(crate) store: Store,
    pub(crate) audit: Auditor,
    /// The pipelines folder, when it serves one (not for `weir run`).
    pub(crate) dir: Option<PathBuf>,
    pub(crate) options: Options,
    pub(crate) pipelines: Mutex<BTreeMap<String, Loaded>>,
    state: Mutex<Active>,
    pub(crate) tasks: Tasks,
    closing: AtomicBool,
    notices: broadcast::Sender<Notice>,
    /// Wakes the MLflow mirror when something is queued for it.
    pub(crate) mirror_wake: Arc<tokio::sync::Notify>,
}

#[derive(Default)]
struct Active {
    /// Runs being driven, by pipeline, with the way to reach their loop.
    running: HashMap<String, Vec<(String, mpsc::Sender<Control>)>>,
    /// Runs waiting for a slot of their pipeline (`on_conflict: queue`).
    queued: HashMap<String, VecDeque<String>>,
}

/// Attempts in flight, GPUs held and runs queued, across the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Busy {
    /// Attempts in flight across all runs.
    pub attempts: usize,
    /// GPUs granted to them.
    pub gpus: usize,
    /// Runs waiting for a slot of their pipeline.
    pub queued: usize,
}

impl Daemon {
    /// Starts the daemon on `store` with the pipelines below `dir`: drives
    /// every run a previous daemon left unfinished, then starts the
    /// scheduler and the folder's watcher. Returns the daemon and the
    /// problems of the files it could not load.
    pub async fn start(
        store: Store,
        dir: &Path,
        options: Options,
    ) -> Result<(Arc<Daemon>, Vec<String>), weir_store::Error> {
        let scan = load_pipelines(dir);
        let commit = crate::catalog::git_commit(dir);
        let mut loaded = Vec::new();
        for (pipeline, path, source) in scan.loaded {
            let hash = store.save_pipeline(&pipeline.name.value, &source).await?;
            loaded.push(Loaded::new(pipeline, path, hash, commit.clone()));
        }
        let daemon = Daemon::new(store, Some(dir.to_owned()), options, loaded)?;
        daemon.recover().await?;
        daemon.keep_unkept_replays().await?;
        // Only now: a slot firing before the recovered runs are registered
        // would not see them, and could exceed `max_runs`.
        daemon.spawn_scheduler();
        daemon.spawn_watcher();
        daemon.spawn_mirror();
        daemon.spawn_gc();
        Ok((daemon, scan.problems))
    }

    /// A daemon for one pipeline file, as `weir run` uses it: no folder,
    /// no scheduler, no watcher, no recovery of other runs. Its runs are
    /// started, stored and audited as `weir serve`'s are.
    pub async fn for_file(
        store: Store,
        path: &Path,
        pipeline: Pipeline,
        source: &str,
        options: Options,
    ) -> Result<Arc<Daemon>, weir_store::Error> {
        let hash = store.save_pipeline(&pipeline.name.value, source).await?;
        let folder = path.parent().unwrap_or(Path::new("."));
        let commit = crate::catalog::git_commit(folder);
        let loaded = Loaded::new(pipeline, path.to_owned(), hash, commit);
        Daemon::new(store, None, options, vec![loaded])
    }

    fn new(
        store: Store,
        dir: Option<PathBuf>,
        options: Options,
        loaded: Vec<Loaded>,
    ) -> Result<Arc<Daemon>, weir_store::Error> {
        let key =
            weir_store::signing_key(&options.data).map_err(|source| weir_store::Error::Folder {
                path: options.data.join("audit.key").display().to_string(),
                source,
            })?;
        let tasks = Tasks::default();
        let audit = Auditor::start(store.clone(), key, &tasks);
        let mut pipelines = BTreeMap::new();
        for loaded in loaded {
            record_loaded(&audit, "pipeline.loaded", &loaded);
            pipelines.insert(loaded.pipeline.name.value.clone(), loaded);
        }
        Ok(Arc::new(Daemon {
            store,
            audit,
            dir,
            options,
            pipelines: Mutex::new(pipelines),
            state: Mutex::new(Active::default()),
            tasks,
            closing: AtomicBool::new(false),
            notices: broadcast::channel(1024).0,
            mirror_wake: Arc::new(tokio::sync::Notify::new()),
        }))
    }

    /// Drives every run a previous daemon left unfinished. A run whose
    /// stored pipeline cannot be had any more is failed with the reason.
    async fn recover(self: &Arc<Self>) -> Result<(), weir_store::Error> {
        for id in self.store.unfinished_runs().await? {
            match stored(&self.store, &id).await {
                Ok((pipeline, _)) => self.spawn(pipeline, id, None),
                Err(crate::catalog::StoredError::Store(e)) => return Err(e),
                Err(why) => {
                    tracing::error!(run = %id, reason = %why, "run failed: it cannot be driven any more");
                    let before = self.store.load_run(&id).await?;
                    let mut after = before.clone();
                    after.abandon(why.to_string(), now());
                    self.store.save_run(&before, &after).await?;
                }
            }
        }
        Ok(())
    }

    /// Stops the daemon: no more runs are started, the scheduler and the
    /// watcher end, every run loop commits its last decision and lets go
    /// of its run (what still runs is taken up at the next start), the
    /// audit queue is appended, and the store is closed — all within
    /// `deadline`. Returns false when something was still running then.
    pub async fn shutdown(&self, deadline: std::time::Duration) -> bool {
        let until = tokio::time::Instant::now() + deadline;
        self.closing.store(true, Ordering::SeqCst);
        let controls: Vec<mpsc::Sender<Control>> = {
            let mut state = self.lock_state();
            state.queued.clear();
            state
                .running
                .values()
                .flatten()
                .map(|(_, control)| control.clone())
                .collect()
        };
        for control in controls {
            let _ = control.send(Control::Detach).await;
        }
        let runs_done = self.tasks.stop_runs(until).await;
        self.audit.close().await;
        let rest_done = self.tasks.stop_rest(until).await;
        self.store.close().await;
        runs_done && rest_done
    }

    /// Attempts in flight, GPUs held and runs queued.
    pub fn busy(&self) -> Busy {
        let queued = self.lock_state().queued.values().map(VecDeque::len).sum();
        Busy {
            attempts: self.options.usage.running(),
            gpus: self.options.usage.gpus_held(),
            queued,
        }
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The loaded pipeline `name`.
    pub fn pipeline(&self, name: &str) -> Option<Loaded> {
        self.lock_pipelines().get(name).cloned()
    }

    /// The loaded pipelines, by name.
    pub fn pipelines(&self) -> Vec<Loaded> {
        self.lock_pipelines().values().cloned().collect()
    }

    /// Every state change of every run from now on, and every run's end.
    pub fn follow(&self) -> broadcast::Receiver<Notice> {
        self.notices.subscribe()
    }

    pub(crate) fn lock_pipelines(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Loaded>> {
        self.pipelines.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_state(&self) -> std::sync::MutexGuard<'_, Active> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The loaded pipeline `name`, or the error that names the nearest.
    pub(crate) fn loaded(&self, name: &str) -> Result<Loaded, TriggerError> {
        let pipelines = self.lock_pipelines();
        match pipelines.get(name) {
            Some(loaded) => Ok(loaded.clone()),
            None => {
                let names: Vec<String> = pipelines.keys().cloned().collect();
                Err(TriggerError::UnknownPipeline(
                    name.to_owned(),
                    suggestion(name, &names),
                ))
            }
        }
    }

    /// Starts a run: the one way every trigger creates one (see the
    /// module's doc). Bad input changes nothing.
    pub async fn start_run(self: &Arc<Self>, start: StartRun) -> Result<Started, TriggerError> {
        if self.closing.load(Ordering::SeqCst) {
            return Err(TriggerError::ShuttingDown);
        }
        let id = uuid::Uuid::now_v7().simple().to_string();
        let at = now();
        let (pipeline, hash, mut run) = match &start.cause {
            Cause::Retry { of, from, actor } => {
                let original = self.store.load_run(of).await?;
                let (pipeline, hash) = stored(&self.store, of).await?;
                let run = retry_run(&pipeline, &original, &id, from.as_deref(), actor, at)?;
                let work = |run: &str| self.options.data.join("runs").join(run).join("work");
                copy_dir(&work(of), &work(&id)).map_err(|source| TriggerError::Folder {
                    run: of.clone(),
                    source,
                })?;
                (pipeline, hash, run)
            }
            Cause::Replay {
                model, version, of, ..
            } => {
                let original = self.store.load_run(of).await?;
                let (pipeline, hash) = stored(&self.store, of).await?;
                let step = self.store.model_version(model, *version).await?.step;
                let run = replay_run(&pipeline, &original, &id, &step, start.cause.clone(), at)?;
                (pipeline, hash, run)
            }
            cause => {
                let loaded = self.loaded(&start.pipeline)?;
                if matches!(cause, Cause::Manual { .. }) && !loaded.pipeline.on.manual {
                    return Err(TriggerError::ManualDisabled(start.pipeline));
                }
                let models = if loaded.pipeline.reads.models {
                    self.store.registry_view().await?
                } else {
                    serde_json::json!({})
                };
                let mut run = new_run(
                    &loaded.pipeline,
                    &id,
                    cause.clone(),
                    &start.params,
                    start.event,
                    models,
                    at,
                )?;
                run.source_commit = loaded.commit.clone();
                (loaded.pipeline, loaded.hash, run)
            }
        };
        if let Some(timeout) = start.timeout {
            run.deadline = chrono::Duration::from_std(timeout).ok().map(|t| at + t);
        }
        let name = pipeline.name.value.clone();
        let active: Vec<String> = self
            .lock_state()
            .running
            .get(&name)
            .map(|runs| runs.iter().map(|(id, _)| id.clone()).collect())
            .unwrap_or_default();
        let admission = admit(&pipeline, &active);
        if admission == Admission::Skip {
            run.skip(
                format!("skipped: {name} already has its maximum of runs in progress"),
                at,
            );
        }
        let same_body = start.same_body;
        // The run, its event and the audit entry of its trigger commit
        // together: none of them exists without the others.
        let audited = serde_json::json!({
            "pipeline": name,
            "trigger": run.cause.kind(),
            "cause": run.cause,
            "params": run.params.iter().cloned().collect::<BTreeMap<String, String>>(),
            "pipeline_hash": hash,
        });
        let entry = weir_store::NewEntry {
            actor: run.cause.actor(),
            action: "run.triggered",
            subject: &id,
            payload: &audited,
            at,
        };
        let decision = Decision::Triggered { run: id.clone() };
        let record = match &run.cause {
            Cause::Webhook { delivery } => Some(weir_store::NewEvent {
                kind: "webhook",
                pipeline: &name,
                delivery: delivery.as_deref(),
                payload: &run.event,
                decision: &decision,
                at,
                same_body: same_body
                    .as_ref()
                    .map(|(sha256, since)| (sha256.as_str(), *since)),
            }),
            Cause::Drift { .. } => Some(weir_store::NewEvent {
                kind: "drift",
                pipeline: &name,
                delivery: None,
                payload: &run.event,
                decision: &decision,
                at,
                same_body: None,
            }),
            _ => None,
        };
        if let Err(existing) = self
            .store
            .create_run_with(
                &run,
                &hash,
                record.as_ref(),
                Some((self.audit.key(), &entry)),
            )
            .await?
        {
            return Ok(Started::Replay(existing));
        }
        tracing::info!(run = %id, pipeline = name, trigger = run.cause.kind(), admission = ?admission, "run created");
        match admission {
            Admission::Start => self.spawn(pipeline, id, Some(run.clone())),
            Admission::Queue => self
                .lock_state()
                .queued
                .entry(name)
                .or_default()
                .push_back(id),
            Admission::Skip => {}
            Admission::CancelThenStart(ids) => {
                for other in ids {
                    let reason =
                        format!("cancelled: run {id} replaced it (on_conflict: cancel-running)");
                    self.cancel(&other, &reason);
                }
                self.spawn(pipeline, id, Some(run.clone()));
            }
        }
        Ok(Started::Run(Box::new(run)))
    }

    /// Asks a run this daemon drives to cancel, with `reason` on what it
    /// stops; false when it drives no such run (finished, or unknown).
    pub fn cancel(self: &Arc<Self>, id: &str, reason: &str) -> bool {
        let mut state = self.lock_state();
        for runs in state.running.values_mut() {
            if let Some(at) = runs.iter().position(|(run, _)| run == id) {
                let (_, control) = runs.remove(at);
                let _ = control.try_send(Control::Cancel(reason.to_owned()));
                return true;
            }
        }
        for queue in state.queued.values_mut() {
            if let Some(at) = queue.iter().position(|run| run == id) {
                queue.remove(at);
                drop(state);
                self.spawn_cancelled(id);
                return true;
            }
        }
        false
    }

    /// Cancels run `id` on `actor`'s request, recorded in the audit log;
    /// false when this daemon drives no such run.
    pub fn cancel_by(self: &Arc<Self>, id: &str, actor: &str) -> bool {
        let cancelled = self.cancel(id, &format!("cancelled by {actor}"));
        if cancelled {
            self.audit
                .record(actor, "run.cancelled", id, serde_json::json!({}));
        }
        cancelled
    }

    /// The key that verifies the audit log.
    pub fn audit_key(&self) -> weir_store::VerifyingKey {
        self.audit.public_key()
    }

    /// The control channel of run `id`, when this daemon drives it.
    pub(crate) fn control(&self, id: &str) -> Option<mpsc::Sender<Control>> {
        self.lock_state()
            .running
            .values()
            .flatten()
            .find(|(run, _)| run == id)
            .map(|(_, control)| control.clone())
    }

    /// Ends a queued run that was cancelled before it started: the engine
    /// marks it cancelled, in a tracked task.
    fn spawn_cancelled(self: &Arc<Self>, id: &str) {
        let daemon = Arc::clone(self);
        let id = id.to_owned();
        self.tasks.spawn(TaskKind::Run, async move {
            let Ok(run) = daemon.store.load_run(&id).await else {
                return;
            };
            let Some(loaded) = daemon.pipeline(&run.pipeline) else {
                return;
            };
            let mut after = run.clone();
            let event = weir_engine::Event::Cancel {
                reason: "cancelled before it started".to_owned(),
            };
            if weir_engine::advance(&mut after, &loaded.pipeline, event, now(), 0).is_ok()
                && let Err(e) = daemon.store.save_run(&run, &after).await
            {
                tracing::error!(run = %id, error = %e, "cannot cancel a queued run");
            }
        });
    }

    /// Drives run `id` in a tracked task (`known`: the run as just
    /// committed, which spares reading it back); when it ends, the
    /// pipeline's next queued run starts.
    pub(crate) fn spawn(self: &Arc<Self>, pipeline: Arc<Pipeline>, id: String, known: Option<Run>) {
        let (control, inbox) = mpsc::channel::<Control>(16);
        let name = pipeline.name.value.clone();
        self.lock_state()
            .running
            .entry(name.clone())
            .or_default()
            .push((id.clone(), control));
        let daemon = Arc::clone(self);
        self.tasks.spawn(TaskKind::Run, async move {
            let notices = daemon.notices.clone();
            let driven = drive_with(
                &daemon.store,
                &pipeline,
                &id,
                &daemon.options,
                known,
                inbox,
                |run, change| {
                    audit_change(&daemon.audit, &pipeline, run, change);
                    crate::metrics::observe_change(&name, run, change);
                    if notices.receiver_count() > 0 {
                        let _ =
                            notices.send(Notice::Changed(Arc::new(run.clone()), change.clone()));
                    }
                },
            )
            .await;
            match &driven {
                Ok(run) if run.state.is_terminal() => tracing::info!(
                    run = %id,
                    pipeline = name,
                    state = %run.state,
                    reason = run.reason.as_deref().unwrap_or(""),
                    "run finished"
                ),
                Ok(_) => tracing::info!(run = %id, "run let go at shutdown"),
                Err(e) => tracing::error!(run = %id, error = %e, "run stopped being driven"),
            }
            if let Ok(run) = &driven
                && run.state.is_terminal()
            {
                crate::metrics::observe_end(run);
                if let Err(e) = daemon.keep_replay(run).await {
                    tracing::error!(run = %id, error = %e, "cannot keep what the replay found; kept at the next start");
                }
                if let Err(e) = daemon.queue_mirror(&pipeline, "run", &id).await {
                    tracing::error!(run = %id, error = %e, "cannot queue the run for MLflow");
                }
            }
            if let Ok(run) = driven
                && notices.receiver_count() > 0
            {
                let _ = notices.send(Notice::Finished(Arc::new(run)));
            }
            let next = {
                let mut state = daemon.lock_state();
                if let Some(runs) = state.running.get_mut(&name) {
                    runs.retain(|(run, _)| run != &id);
                }
                state.queued.get_mut(&name).and_then(VecDeque::pop_front)
            };
            if let Some(next) = next
                && !daemon.closing.load(Ordering::SeqCst)
            {
                daemon.spawn(pipeline, next, None);
            }
        });
    }
}

/// Copies the folder `from` to `to` (absent `from`: nothing to copy).
fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    if !from.is_dir() {
        return Ok(());
    }
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        let target = to.join(entry.file_name());
        if kind.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(entry.path())?, &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}
