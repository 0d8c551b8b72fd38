//! The daemon's core, apart from HTTP: the loaded pipelines, triggering
//! runs under each pipeline's `concurrency`, cancelling them, and driving
//! every unfinished run after a restart.

use crate::clock::now;
use crate::config::Options;
use crate::drive::{Control, drive_with};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use thiserror::Error;
use tokio::sync::{mpsc, oneshot};
use weir_engine::{Admission, Run, RunState, admit, new_run};
use weir_model::Pipeline;
use weir_store::Store;

/// A pipeline file the daemon serves.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The validated pipeline, shared by the runs started from it (a
    /// trigger, a scheduler tick or a webhook copies a pointer, not it).
    pub pipeline: Arc<Pipeline>,
    /// Its file.
    pub path: PathBuf,
    /// The SHA-256 of its text, as stored.
    pub hash: String,
    /// The git commit of the pipelines folder when it was loaded, if the
    /// folder is in a git repository.
    pub commit: Option<String>,
    /// Whether its text mentions `models` at all: a run of a pipeline that
    /// cannot read the registry spares reading it at creation.
    pub reads_models: bool,
}

impl Loaded {
    fn new(
        pipeline: Pipeline,
        path: PathBuf,
        hash: String,
        source: &str,
        commit: Option<String>,
    ) -> Loaded {
        Loaded {
            reads_models: source.contains("models"),
            pipeline: Arc::new(pipeline),
            path,
            hash,
            commit,
        }
    }
}

/// Why a trigger was refused.
#[derive(Debug, Error)]
pub enum TriggerError {
    /// No loaded pipeline has this name.
    #[error("no pipeline '{0}'{1}")]
    UnknownPipeline(String, String),
    /// The pipeline does not accept manual runs (`on.manual: false`).
    #[error("pipeline '{0}' does not accept manual runs (on.manual is false)")]
    ManualDisabled(String),
    /// Params unknown or missing.
    #[error("{}", .0.join("; "))]
    Params(Vec<String>),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] weir_store::Error),
}

/// What became of a webhook delivery.
#[derive(Debug)]
pub enum Delivered {
    /// It started this run.
    Started(Box<Run>),
    /// Its id was delivered before, which started this run (`None` while
    /// that delivery is still being handled).
    Replay(Option<String>),
}

/// Why an approval could not be decided.
#[derive(Debug, Error)]
pub enum DecideError {
    /// The run or step is not in a state to be decided; says why.
    #[error("{0}")]
    Refused(String),
    /// The store failed (an unknown run is [`weir_store::Error::NoSuchRun`]).
    #[error(transparent)]
    Store(#[from] weir_store::Error),
}

/// The daemon: its store, pipelines and the runs it drives.
pub struct Daemon {
    store: Store,
    audit: crate::audit::Auditor,
    dir: PathBuf,
    options: Options,
    pipelines: Mutex<BTreeMap<String, Loaded>>,
    state: Mutex<Active>,
}

#[derive(Default)]
struct Active {
    /// Runs being driven, by pipeline, with the way to reach their loop.
    running: HashMap<String, Vec<(String, mpsc::Sender<Control>)>>,
    /// Runs waiting for a slot of their pipeline (`on_conflict: queue`).
    queued: HashMap<String, VecDeque<String>>,
}

/// At most this many missed slots of one schedule run after downtime
/// (`catchup: all`), and at most this many slots per backfill.
pub const CATCHUP_CAP: usize = 100;

/// What a look at the pipelines folder found.
#[derive(Debug, Default)]
pub struct Scan {
    /// The valid pipelines, with their file and text.
    pub loaded: Vec<(Pipeline, PathBuf, String)>,
    /// One line per problem of the other files (`path:line:col: message`).
    pub problems: Vec<String>,
    /// The files that did not load.
    pub failed: Vec<PathBuf>,
}

/// Loads every `*.yaml`/`*.yml` below `dir`.
pub fn load_pipelines(dir: &Path) -> Scan {
    let mut files = Vec::new();
    collect(dir, &mut files);
    files.sort();
    let mut scan = Scan::default();
    let mut names: HashMap<String, PathBuf> = HashMap::new();
    for path in files {
        let shown = path.display().to_string();
        let source = match std::fs::read_to_string(&path) {
            Ok(source) => source,
            Err(e) => {
                scan.problems.push(format!("{shown}: cannot read: {e}"));
                scan.failed.push(path);
                continue;
            }
        };
        let validated = weir_model::validate(&source);
        scan.problems.extend(
            validated
                .diagnostics
                .iter()
                .filter(|d| d.is_error())
                .map(|d| format!("{shown}:{d}")),
        );
        let Some(pipeline) = validated.pipeline else {
            scan.failed.push(path);
            continue;
        };
        if let Some(other) = names.get(&pipeline.name.value) {
            scan.problems.push(format!(
                "{shown}:{}: pipeline name '{}' is already used by {}",
                pipeline.name.pos,
                pipeline.name.value,
                other.display()
            ));
            scan.failed.push(path);
            continue;
        }
        names.insert(pipeline.name.value.clone(), path.clone());
        scan.loaded.push((pipeline, path, source));
    }
    scan
}

/// What each pipeline file looks like from outside (size and modification
/// time): a change of it is a reason to load the folder again.
fn fingerprint(dir: &Path) -> Vec<(PathBuf, u64, Option<std::time::SystemTime>)> {
    let mut files = Vec::new();
    collect(dir, &mut files);
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let meta = std::fs::metadata(&path).ok();
            let len = meta.as_ref().map_or(0, std::fs::Metadata::len);
            let modified = meta.and_then(|m| m.modified().ok());
            (path, len, modified)
        })
        .collect()
}

/// How a reload changed the served pipelines.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Reload {
    /// Pipelines new or changed, now served in their new version.
    pub changed: Vec<String>,
    /// Pipelines whose file is gone, no longer served.
    pub removed: Vec<String>,
    /// Pipelines whose file no longer validates: the last good version
    /// stays.
    pub kept: Vec<String>,
    /// The problems of the files that did not load.
    pub problems: Vec<String>,
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let hidden = entry.file_name().to_string_lossy().starts_with('.');
        if hidden {
            continue;
        }
        if path.is_dir() {
            collect(&path, out);
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml")
        ) {
            out.push(path);
        }
    }
}

impl Daemon {
    /// Starts the daemon on `store` with the pipelines below `dir`, and
    /// drives every run a previous daemon left unfinished. Returns the
    /// daemon and the problems of the files it could not load.
    pub async fn start(
        store: Store,
        dir: &Path,
        options: Options,
    ) -> Result<(Arc<Daemon>, Vec<String>), weir_store::Error> {
        let scan = load_pipelines(dir);
        let commit = git_commit(dir);
        let problems = scan.problems;
        let mut pipelines = BTreeMap::new();
        for (pipeline, path, source) in scan.loaded {
            let hash = store.save_pipeline(&pipeline.name.value, &source).await?;
            pipelines.insert(
                pipeline.name.value.clone(),
                Loaded::new(pipeline, path, hash, &source, commit.clone()),
            );
        }
        let key =
            weir_store::signing_key(&options.data).map_err(|source| weir_store::Error::Folder {
                path: options.data.join("audit.key").display().to_string(),
                source,
            })?;
        let audit = crate::audit::Auditor::start(store.clone(), key);
        for loaded in pipelines.values() {
            record_loaded(&audit, "pipeline.loaded", loaded);
        }
        let daemon = Arc::new(Daemon {
            store,
            audit,
            dir: dir.to_owned(),
            options,
            pipelines: Mutex::new(pipelines),
            state: Mutex::new(Active::default()),
        });
        daemon.spawn_scheduler();
        daemon.spawn_watcher();
        for id in daemon.store.unfinished_runs().await? {
            let run = daemon.store.load_run(&id).await?;
            let hash = daemon.store.run_pipeline_hash(&id).await?;
            let Some(source) = daemon.store.pipeline_source(&hash).await? else {
                continue;
            };
            if let Some(pipeline) = weir_model::validate(&source).pipeline {
                daemon.spawn(Arc::new(pipeline), run.id, None);
            }
        }
        Ok((daemon, problems))
    }

    /// Loads the pipelines folder again: new and changed files are served
    /// from now on (runs in progress go on with the version they started
    /// with), removed files are no longer served, and a file that no longer
    /// validates keeps its last good version.
    pub async fn reload(&self) -> Result<Reload, weir_store::Error> {
        let scan = load_pipelines(&self.dir);
        let commit = git_commit(&self.dir);
        let mut report = Reload {
            problems: scan.problems,
            ..Reload::default()
        };
        let mut next = BTreeMap::new();
        for (pipeline, path, source) in scan.loaded {
            let name = pipeline.name.value.clone();
            let hash = self.store.save_pipeline(&name, &source).await?;
            let same = self
                .pipeline(&name)
                .is_some_and(|old| old.hash == hash && old.path == path);
            if !same {
                report.changed.push(name.clone());
            }
            next.insert(
                name,
                Loaded::new(pipeline, path, hash, &source, commit.clone()),
            );
        }
        let mut pipelines = self.lock_pipelines();
        for (name, old) in pipelines.iter() {
            if next.contains_key(name) {
                continue;
            }
            if scan.failed.contains(&old.path) {
                report.kept.push(name.clone());
                next.insert(name.clone(), old.clone());
            } else {
                report.removed.push(name.clone());
            }
        }
        for name in &report.changed {
            record_loaded(&self.audit, "pipeline.loaded", &next[name]);
        }
        for name in &report.kept {
            record_loaded(&self.audit, "pipeline.rejected", &next[name]);
        }
        for name in &report.removed {
            record_loaded(&self.audit, "pipeline.removed", &pipelines[name]);
        }
        *pipelines = next;
        Ok(report)
    }

    /// Watches the pipelines folder: once a second, a change of any file's
    /// size or modification time reloads it. Polling rather than inotify
    /// sees edits through bind mounts, network file systems and editors'
    /// rename-on-save alike.
    fn spawn_watcher(self: &Arc<Self>) {
        let daemon = Arc::downgrade(self);
        let mut seen = fingerprint(&self.dir);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
            loop {
                tick.tick().await;
                let Some(daemon) = daemon.upgrade() else {
                    return;
                };
                let now = fingerprint(&daemon.dir);
                if now == seen {
                    continue;
                }
                seen = now;
                match daemon.reload().await {
                    Ok(report) => log_reload(&report),
                    Err(e) => tracing::error!(error = %e, "pipelines could not be reloaded"),
                }
            }
        });
    }

    /// Attempts in flight across all runs, GPUs held, and runs queued.
    pub fn load(&self) -> (usize, usize, usize) {
        let queued = self.lock_state().queued.values().map(VecDeque::len).sum();
        (
            self.options.usage.running(),
            self.options.usage.gpus_held(),
            queued,
        )
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

    fn lock_pipelines(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Loaded>> {
        self.pipelines.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_state(&self) -> std::sync::MutexGuard<'_, Active> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts a run of `name` with `params`, as `trigger` (`manual`, …),
    /// under the pipeline's `concurrency`. The run is stored before this
    /// returns; bad params change nothing.
    pub async fn trigger(
        self: &Arc<Self>,
        name: &str,
        params: &[(String, String)],
        trigger: &str,
    ) -> Result<Run, TriggerError> {
        self.trigger_with(name, params, trigger, serde_json::Value::Null)
            .await
    }

    /// A manual run of `name` started by `actor` (a token's name), which
    /// the audit log records.
    pub async fn trigger_by(
        self: &Arc<Self>,
        name: &str,
        params: &[(String, String)],
        actor: &str,
    ) -> Result<Run, TriggerError> {
        let started = self
            .begin(
                name,
                params,
                "manual",
                serde_json::Value::Null,
                None,
                Some(actor),
            )
            .await?;
        Ok(started.unwrap_or_else(|_| unreachable!("no delivery id to collide")))
    }

    /// [`Daemon::trigger`] with the event that caused it (a webhook's
    /// payload, a drift report), which expressions read as `event`.
    pub async fn trigger_with(
        self: &Arc<Self>,
        name: &str,
        params: &[(String, String)],
        trigger: &str,
        event: serde_json::Value,
    ) -> Result<Run, TriggerError> {
        let started = self.begin(name, params, trigger, event, None, None).await?;
        Ok(started.unwrap_or_else(|_| unreachable!("no delivery id to collide")))
    }

    /// Starts a run for webhook delivery `delivery` of `name`, storing the
    /// delivery as an event in the same transaction as the run. A delivery
    /// id seen before starts nothing: the answer is the run it created.
    pub async fn deliver(
        self: &Arc<Self>,
        name: &str,
        delivery: Option<&str>,
        payload: serde_json::Value,
    ) -> Result<Delivered, TriggerError> {
        Ok(
            match self
                .begin(name, &[], "webhook", payload, Some(delivery), None)
                .await?
            {
                Ok(run) => Delivered::Started(Box::new(run)),
                Err(existing) => Delivered::Replay(existing),
            },
        )
    }

    /// Creates and starts a run; with `delivery`, stores the webhook event
    /// with it, or answers the run of an earlier delivery with the same id.
    async fn begin(
        self: &Arc<Self>,
        name: &str,
        params: &[(String, String)],
        trigger: &str,
        event: serde_json::Value,
        delivery: Option<Option<&str>>,
        actor: Option<&str>,
    ) -> Result<Result<Run, Option<String>>, TriggerError> {
        let loaded = self.lock_pipelines().get(name).cloned();
        let Some(loaded) = loaded else {
            let names: Vec<String> = self.lock_pipelines().keys().cloned().collect();
            let hint = suggestion(name, &names);
            return Err(TriggerError::UnknownPipeline(name.to_owned(), hint));
        };
        if trigger == "manual" && !loaded.pipeline.on.manual {
            return Err(TriggerError::ManualDisabled(name.to_owned()));
        }
        let id = uuid_v7();
        let models = if loaded.reads_models {
            self.store.registry_view().await?
        } else {
            serde_json::json!({})
        };
        let mut run = new_run(&loaded.pipeline, &id, trigger, params, event, models, now())
            .map_err(TriggerError::Params)?;
        run.source_commit = loaded.commit.clone();
        let active: Vec<String> = self
            .lock_state()
            .running
            .get(name)
            .map(|runs| runs.iter().map(|(id, _)| id.clone()).collect())
            .unwrap_or_default();
        let admission = admit(&loaded.pipeline, &active);
        if admission == Admission::Skip {
            run.state = RunState::Cancelled;
            run.reason = Some(format!(
                "skipped: {name} already has its maximum of runs in progress"
            ));
            run.finished_at = Some(now());
        }
        // The run, the delivery and the audit entry of the trigger commit
        // together: none of them exists without the others.
        let payload = serde_json::json!({
            "pipeline": name,
            "trigger": trigger,
            "params": run.params.iter().cloned().collect::<BTreeMap<String, String>>(),
            "pipeline_hash": loaded.hash,
            "delivery": delivery.flatten(),
        });
        let entry = weir_store::NewEntry {
            actor: actor.unwrap_or(trigger),
            action: "run.triggered",
            subject: &id,
            payload: &payload,
            at: run.created_at,
        };
        let decision = format!("triggered {id}");
        let record = delivery.map(|delivery| weir_store::NewEvent {
            kind: "webhook",
            pipeline: name,
            delivery,
            payload: &run.event,
            decision: &decision,
            at: run.created_at,
        });
        let audit = Some((self.audit.key(), &entry));
        if let Err(existing) = self
            .store
            .create_run_with(&run, &loaded.hash, record.as_ref(), audit)
            .await?
        {
            return Ok(Err(existing));
        }
        tracing::info!(run = %id, pipeline = name, trigger, admission = ?admission, "run created");
        match admission {
            Admission::Start => self.spawn(loaded.pipeline, id, Some(run.clone())),
            Admission::Queue => self
                .lock_state()
                .queued
                .entry(name.to_owned())
                .or_default()
                .push_back(id),
            Admission::Skip => {}
            Admission::CancelThenStart(ids) => {
                for other in ids {
                    let reason =
                        format!("cancelled: run {id} replaced it (on_conflict: cancel-running)");
                    self.cancel(&other, &reason);
                }
                self.spawn(loaded.pipeline, id, Some(run.clone()));
            }
        }
        Ok(Ok(run))
    }

    /// Asks a run this daemon drives to cancel, with `reason` on what it
    /// stops; false when it drives no such run (finished, or unknown).
    pub fn cancel(&self, id: &str, reason: &str) -> bool {
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
    pub fn cancel_by(&self, id: &str, actor: &str) -> bool {
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

    /// Decides approval step `step` of run `id`: approved, or rejected, by
    /// `by`. Answers once the decision is committed, with the run as it is
    /// then.
    pub async fn decide(
        &self,
        id: &str,
        step: &str,
        approved: bool,
        by: &str,
        comment: Option<String>,
    ) -> Result<Run, DecideError> {
        let control = self
            .lock_state()
            .running
            .values()
            .flatten()
            .find(|(run, _)| run == id)
            .map(|(_, control)| control.clone());
        let Some(control) = control else {
            let run = self.store.load_run(id).await?;
            return Err(DecideError::Refused(format!(
                "run {id} is {}: only a running run's approvals can be decided",
                run.state
            )));
        };
        let (reply, answer) = oneshot::channel();
        let asked = Control::Decide {
            step: step.to_owned(),
            approved,
            by: by.to_owned(),
            comment,
            reply,
        };
        let gone = || DecideError::Refused(format!("run {id} ended before the decision was taken"));
        control.send(asked).await.map_err(|_| gone())?;
        answer
            .await
            .map_err(|_| gone())?
            .map_err(DecideError::Refused)?;
        tracing::info!(run = id, step, approved, by, "approval decided");
        let run = self.store.load_run(id).await?;
        let decision = run
            .step(step)
            .and_then(|s| s.reason.clone())
            .unwrap_or_default();
        self.audit.record(
            by,
            "approval.decided",
            &format!("{id}/{step}"),
            serde_json::json!({ "approved": approved, "decision": decision }),
        );
        Ok(run)
    }

    /// Points `alias` of `model` at `version`, by `actor`; returns the
    /// version it pointed at before.
    pub async fn promote(
        &self,
        model: &str,
        version: i64,
        alias: &str,
        actor: &str,
    ) -> Result<Option<i64>, weir_store::Error> {
        let before = self
            .store
            .promote(model, version, alias, actor, now())
            .await?;
        tracing::info!(model, version, alias, actor, "alias moved");
        self.audit.record(
            actor,
            "alias.moved",
            &format!("{model}/{alias}"),
            serde_json::json!({ "version": version, "from_version": before }),
        );
        Ok(before)
    }

    /// The lineage of `model@version`: the version (artifact hash,
    /// metrics), the run that registered it (pipeline file hash, git
    /// commit, params, trigger, the event that started it and the commit
    /// it names), and every step that led to the register step with the
    /// image it ran and the hashes of its declared artifacts.
    pub async fn lineage(
        &self,
        model: &str,
        version: i64,
    ) -> Result<serde_json::Value, weir_store::Error> {
        let registered = self.store.model_version(model, version).await?;
        let run = self.store.load_run(&registered.run_id).await?;
        let hash = self.store.run_pipeline_hash(&run.id).await?;
        let source = self.store.pipeline_source(&hash).await?.unwrap_or_default();
        let pipeline = weir_model::validate(&source).pipeline;
        let target = run.step(&registered.step).map(|s| s.step);
        let led_there = |step: usize| match (&pipeline, target) {
            (Some(pipeline), Some(target)) => {
                step == target || weir_model::Dag::new(pipeline).is_upstream(step, target)
            }
            _ => true,
        };
        let steps: Vec<serde_json::Value> = run
            .steps
            .iter()
            .filter(|s| led_there(s.step))
            .map(|s| {
                let attempt = s
                    .attempts
                    .iter()
                    .rev()
                    .find(|a| a.state == weir_engine::AttemptState::Succeeded)
                    .or_else(|| s.attempts.last());
                let kind = pipeline
                    .as_ref()
                    .and_then(|p| p.steps.get(s.step))
                    .map_or("step", |step| step.kind.name());
                serde_json::json!({
                    "id": s.id,
                    "kind": kind,
                    "state": s.state,
                    "reason": s.reason,
                    "attempt": attempt.map(|a| a.number),
                    "image": attempt.and_then(|a| a.image.clone()),
                    "artifacts": attempt.map(|a| a.artifacts.clone()).unwrap_or_default(),
                    "outputs": attempt.map(|a| a.outputs.clone()).unwrap_or_default(),
                    "metrics": attempt.map(|a| a.metrics.clone()).unwrap_or_default(),
                })
            })
            .collect();
        let event = self.store.run_event(&run.id).await?;
        let event_commit = run
            .event
            .get("after")
            .or_else(|| run.event.pointer("/head_commit/id"))
            .and_then(serde_json::Value::as_str);
        let params: BTreeMap<&str, &str> = run
            .params
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        Ok(serde_json::json!({
            "model": registered.model,
            "version": registered.version,
            "artifact": registered.artifact,
            "sha256": registered.sha256,
            "metrics": registered.metrics,
            "registered_at": registered.created_at,
            "run": {
                "id": run.id,
                "pipeline": run.pipeline,
                "pipeline_hash": hash,
                "source_commit": run.source_commit,
                "trigger": run.trigger,
                "retry_of": run.retry_of,
                "params": params,
                "event": event.map(|e| serde_json::json!({ "id": e.id, "kind": e.kind, "decision": e.decision })),
                "event_commit": event_commit,
                "created_at": run.created_at,
            },
            "steps": steps,
        }))
    }

    /// Starts a new run that retries run `id` (finished) from the same
    /// pipeline version, params and event, reusing the steps that
    /// succeeded before `from` (default: before the ones that failed) and
    /// the files they left in the work folder.
    pub async fn retry(
        self: &Arc<Self>,
        id: &str,
        from: Option<&str>,
        actor: &str,
    ) -> Result<Run, TriggerError> {
        let original = self.store.load_run(id).await?;
        let hash = self.store.run_pipeline_hash(id).await?;
        let source = self.store.pipeline_source(&hash).await?.unwrap_or_default();
        let Some(pipeline) = weir_model::validate(&source).pipeline else {
            return Err(TriggerError::Params(vec![format!(
                "run {id}: its pipeline version {hash} no longer validates"
            )]));
        };
        let new_id = uuid_v7();
        let run = weir_engine::retry_run(&pipeline, &original, &new_id, from, now())
            .map_err(|e| TriggerError::Params(vec![e]))?;
        let work = |run: &str| self.options.data.join("runs").join(run).join("work");
        copy_dir(&work(id), &work(&new_id)).map_err(|e| {
            TriggerError::Params(vec![format!("cannot copy run {id}'s work folder: {e}")])
        })?;
        self.store.create_run(&run, &hash).await?;
        tracing::info!(run = %new_id, retry_of = id, from, "retry created");
        self.audit.record(
            actor,
            "run.triggered",
            &new_id,
            serde_json::json!({
                "pipeline": run.pipeline,
                "trigger": "retry",
                "retry_of": id,
                "from": from,
                "pipeline_hash": hash,
            }),
        );
        self.spawn(Arc::new(pipeline), new_id, Some(run.clone()));
        Ok(run)
    }

    /// Drives a queued run that was cancelled before it started: the engine
    /// marks it cancelled and it ends at once.
    fn spawn_cancelled(&self, id: &str) {
        let store = self.store.clone();
        let id = id.to_owned();
        let pipelines = self.pipelines();
        tokio::spawn(async move {
            let Ok(run) = store.load_run(&id).await else {
                return;
            };
            let Some(loaded) = pipelines
                .into_iter()
                .find(|l| l.pipeline.name.value == run.pipeline)
            else {
                return;
            };
            let mut after = run.clone();
            let event = weir_engine::Event::Cancel {
                reason: "cancelled before it started".to_owned(),
            };
            if weir_engine::advance(&mut after, &loaded.pipeline, event, now(), 0).is_ok() {
                let _ = store.save_run(&run, &after).await;
            }
        });
    }

    /// Fires the pipelines' schedules: every second, each schedule's due
    /// slots (`weir_engine::schedule::due`) are claimed in the store — a
    /// slot fires once, whatever restarts happen — and started as runs.
    /// With several nodes on one PostgreSQL, only the node holding the
    /// scheduler's advisory lock fires.
    fn spawn_scheduler(self: &Arc<Self>) {
        let daemon = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
            let mut leading: Option<weir_store::Leadership> = None;
            loop {
                tick.tick().await;
                let Some(daemon) = daemon.upgrade() else {
                    return;
                };
                // One node fires schedules; the others wait to take over.
                let held = match &mut leading {
                    Some(lead) => lead.holds().await,
                    None => false,
                };
                if !held {
                    leading = match daemon.store.lead().await {
                        Ok(lead) => lead,
                        Err(e) => {
                            tracing::error!(error = %e, "cannot ask to lead the schedules");
                            None
                        }
                    };
                    if leading.is_some() {
                        tracing::info!("this node fires the schedules");
                    }
                }
                if leading.is_none() {
                    continue;
                }
                if let Err(e) = daemon.fire_schedules(now()).await {
                    tracing::error!(error = %e, "schedules could not be fired");
                }
            }
        });
    }

    /// Fires what is due at `now` for every schedule of every pipeline.
    pub async fn fire_schedules(
        self: &Arc<Self>,
        at: weir_engine::Time,
    ) -> Result<usize, weir_store::Error> {
        let mut fired = 0;
        for loaded in self.pipelines() {
            let name = loaded.pipeline.name.value.clone();
            for schedule in &loaded.pipeline.on.schedule {
                let Ok(cron) = weir_model::parse_cron(&schedule.cron.value) else {
                    continue;
                };
                let mark = match self
                    .store
                    .schedule_mark(&name, &schedule.cron.value)
                    .await?
                {
                    Some(mark) => mark,
                    // First sight of this schedule: nothing before now is missed.
                    None => at,
                };
                let due = weir_engine::schedule::due(
                    &cron,
                    schedule.timezone,
                    schedule.catchup,
                    mark,
                    at,
                    CATCHUP_CAP,
                );
                for slot in due.fire {
                    if self.fire_slot(&name, slot, "schedule").await?.is_some() {
                        fired += 1;
                    }
                }
                self.store
                    .set_schedule_mark(&name, &schedule.cron.value, due.mark)
                    .await?;
            }
        }
        Ok(fired)
    }

    /// Starts a run for `slot` of `name` unless that slot was fired before;
    /// the run's `event` is `{"slot": …}`.
    async fn fire_slot(
        self: &Arc<Self>,
        name: &str,
        slot: weir_engine::Time,
        trigger: &str,
    ) -> Result<Option<String>, weir_store::Error> {
        if !self.store.claim_slot(name, slot).await? {
            return Ok(None);
        }
        let event = serde_json::json!({ "slot": slot.to_rfc3339() });
        match self.trigger_with(name, &[], trigger, event).await {
            Ok(run) => {
                self.store.slot_run(name, slot, &run.id).await?;
                Ok(Some(run.id))
            }
            Err(TriggerError::Store(e)) => Err(e),
            Err(e) => {
                tracing::warn!(pipeline = name, %slot, error = %e, "schedule slot not started");
                Ok(None)
            }
        }
    }

    /// One run per slot of `name`'s schedules in `[from, to]` (at most
    /// [`CATCHUP_CAP`]), each keyed by its slot: a slot that ran already,
    /// by schedule or an earlier backfill, is not run again. Returns the
    /// slots with the runs started, and how many were skipped.
    pub async fn backfill(
        self: &Arc<Self>,
        name: &str,
        from: weir_engine::Time,
        to: weir_engine::Time,
    ) -> Result<(Vec<(weir_engine::Time, String)>, usize), TriggerError> {
        let Some(loaded) = self.pipeline(name) else {
            let names: Vec<String> = self.lock_pipelines().keys().cloned().collect();
            return Err(TriggerError::UnknownPipeline(
                name.to_owned(),
                suggestion(name, &names),
            ));
        };
        let mut slots: Vec<weir_engine::Time> = Vec::new();
        for schedule in &loaded.pipeline.on.schedule {
            if let Ok(cron) = weir_model::parse_cron(&schedule.cron.value) {
                slots.extend(weir_engine::schedule::between(
                    &cron,
                    schedule.timezone,
                    from,
                    to,
                    CATCHUP_CAP,
                ));
            }
        }
        if loaded.pipeline.on.schedule.is_empty() {
            return Err(TriggerError::Params(vec![format!(
                "pipeline '{name}' has no schedule to backfill"
            )]));
        }
        slots.sort();
        slots.dedup();
        slots.truncate(CATCHUP_CAP);
        let mut started = Vec::new();
        let mut skipped = 0;
        for slot in slots {
            match self.fire_slot(name, slot, "backfill").await? {
                Some(run) => started.push((slot, run)),
                None => skipped += 1,
            }
        }
        Ok((started, skipped))
    }

    /// Decides a drift report for `name`: a rule of `on.drift` for `metric`
    /// whose threshold `value` passes starts a retraining run, unless a
    /// drift-triggered run is still queued or running (the report joins it)
    /// or one started within the rule's cooldown. The report is stored with
    /// the decision, which is returned.
    pub async fn drift(
        self: &Arc<Self>,
        name: &str,
        metric: &str,
        value: f64,
        report: serde_json::Value,
    ) -> Result<String, TriggerError> {
        let Some(loaded) = self.pipeline(name) else {
            let names: Vec<String> = self.lock_pipelines().keys().cloned().collect();
            return Err(TriggerError::UnknownPipeline(
                name.to_owned(),
                suggestion(name, &names),
            ));
        };
        let at = now();
        let rules: Vec<_> = loaded
            .pipeline
            .on
            .drift
            .iter()
            .filter(|r| r.metric.value == metric)
            .collect();
        let decision = if rules.is_empty() {
            format!("no rule for metric '{metric}'")
        } else if let Some(rule) = rules.iter().find(|r| value > r.above) {
            let last = self.store.last_run_by(name, "drift").await?;
            let active = last
                .as_ref()
                .filter(|r| r.state == "queued" || r.state == "running");
            let cooling = last.as_ref().zip(rule.cooldown).filter(|(r, cooldown)| {
                chrono::Duration::from_std(cooldown.get()).is_ok_and(|c| at - r.created_at < c)
            });
            if let Some(run) = active {
                format!("coalesced into {}", run.id)
            } else if let Some((run, cooldown)) = cooling {
                format!(
                    "cooldown: {} started {} ago, within {cooldown}",
                    run.id,
                    human(at - run.created_at)
                )
            } else {
                let run = self
                    .trigger_with(name, &[], "drift", report.clone())
                    .await?;
                format!("triggered {}", run.id)
            }
        } else {
            let above = rules.iter().map(|r| r.above).fold(f64::NAN, f64::min);
            format!("below threshold ({metric} {value} <= {above})")
        };
        tracing::info!(pipeline = name, metric, value, decision, "drift event");
        self.store
            .record_event(
                "drift",
                Some(name),
                run_of(&decision),
                &report,
                &decision,
                at,
            )
            .await?;
        Ok(decision)
    }

    /// Records gate verdicts and registrations as a run makes them.
    fn audit_change(&self, pipeline: &Pipeline, run: &Run, change: &crate::drive::Change) {
        use weir_engine::StepState;
        use weir_model::pipeline::StepKind;
        let instance = &run.steps[change.step];
        let subject = format!("{}/{}", run.id, instance.id);
        match &pipeline.steps[instance.step].kind {
            StepKind::Gate(_) if matches!(change.to, StepState::Succeeded | StepState::Failed) => {
                self.audit.record(
                    "weir",
                    "gate.decided",
                    &subject,
                    serde_json::json!({
                        "holds": change.to == StepState::Succeeded,
                        "evidence": instance.evidence,
                    }),
                );
            }
            StepKind::Register(register) if change.to == StepState::Succeeded => {
                let outputs = instance
                    .last_attempt()
                    .map(|a| a.outputs.clone())
                    .unwrap_or_default();
                let version = outputs.get("version").cloned().unwrap_or_default();
                let actor = format!("run {}", run.id);
                self.audit.record(
                    &actor,
                    "model.registered",
                    &format!("{}@{version}", register.model.value),
                    serde_json::json!({ "sha256": outputs.get("sha256"), "step": subject }),
                );
                if let Some(alias) = &register.alias {
                    self.audit.record(
                        &actor,
                        "alias.moved",
                        &format!("{}/{}", register.model.value, alias.value),
                        serde_json::json!({ "version": version }),
                    );
                }
            }
            _ => {}
        }
    }

    /// Drives run `id` in a task (`known`: the run as just committed, which
    /// spares reading it back); when it ends, the pipeline's next queued
    /// run starts.
    fn spawn(self: &Arc<Self>, pipeline: Arc<Pipeline>, id: String, known: Option<Run>) {
        let (control, inbox) = mpsc::channel::<Control>(16);
        let name = pipeline.name.value.clone();
        self.lock_state()
            .running
            .entry(name.clone())
            .or_default()
            .push((id.clone(), control));
        let daemon = Arc::clone(self);
        tokio::spawn(async move {
            match drive_with(
                &daemon.store,
                &pipeline,
                &id,
                &daemon.options,
                known,
                inbox,
                |run, change| daemon.audit_change(&pipeline, run, change),
            )
            .await
            {
                Ok(run) => tracing::info!(
                    run = %id,
                    pipeline = name,
                    state = %run.state,
                    reason = run.reason.as_deref().unwrap_or(""),
                    "run finished"
                ),
                Err(e) => tracing::error!(run = %id, error = %e, "run stopped being driven"),
            }
            let next = {
                let mut state = daemon.lock_state();
                if let Some(runs) = state.running.get_mut(&name) {
                    runs.retain(|(run, _)| run != &id);
                }
                state.queued.get_mut(&name).and_then(VecDeque::pop_front)
            };
            if let Some(next) = next {
                daemon.spawn(pipeline, next, None);
            }
        });
    }
}

/// The commit checked out in the git repository holding `dir`, if any
/// (`git rev-parse HEAD`; no git, or not a repository: none).
fn git_commit(dir: &Path) -> Option<String> {
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["rev-parse", "HEAD"])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    let commit = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (out.status.success() && commit.len() >= 40).then_some(commit)
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

fn record_loaded(audit: &crate::audit::Auditor, action: &'static str, loaded: &Loaded) {
    audit.record(
        "weir",
        action,
        &loaded.pipeline.name.value,
        serde_json::json!({ "hash": loaded.hash, "file": loaded.path.display().to_string() }),
    );
}

fn log_reload(report: &Reload) {
    for problem in &report.problems {
        tracing::warn!(problem = %problem, "pipeline file does not validate");
    }
    for name in &report.kept {
        tracing::warn!(pipeline = %name, "pipeline file has errors; the last good version stays active");
    }
    for name in &report.changed {
        tracing::info!(pipeline = %name, "pipeline loaded");
    }
    for name in &report.removed {
        tracing::info!(pipeline = %name, "pipeline file removed; no longer served");
    }
}

fn suggestion(name: &str, names: &[String]) -> String {
    weir_model::did_you_mean(name, names.iter().map(String::as_str))
}

/// The run a decision names (`triggered RUN`, `coalesced into RUN`).
fn run_of(decision: &str) -> Option<&str> {
    decision
        .strip_prefix("triggered ")
        .or_else(|| decision.strip_prefix("coalesced into "))
}

fn human(d: chrono::Duration) -> String {
    let secs = d.num_seconds().max(0);
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m", secs / 60),
        _ => format!("{}h{}m", secs / 3600, secs % 3600 / 60),
    }
}

fn uuid_v7() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}
