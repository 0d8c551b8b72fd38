//! The daemon's core, apart from HTTP: the loaded pipelines, triggering
//! runs under each pipeline's `concurrency`, cancelling them, and driving
//! every unfinished run after a restart.

use crate::drive::{Options, drive, now};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use thiserror::Error;
use tokio::sync::oneshot;
use weir_engine::{Admission, Run, RunState, admit, new_run};
use weir_model::Pipeline;
use weir_store::Store;

/// A pipeline file the daemon serves.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The validated pipeline.
    pub pipeline: Pipeline,
    /// Its file.
    pub path: PathBuf,
    /// The SHA-256 of its text, as stored.
    pub hash: String,
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

/// The daemon: its store, pipelines and the runs it drives.
pub struct Daemon {
    store: Store,
    options: Options,
    pipelines: Mutex<BTreeMap<String, Loaded>>,
    state: Mutex<Active>,
}

#[derive(Default)]
struct Active {
    /// Runs being driven, by pipeline, with their cancel switch.
    running: HashMap<String, Vec<(String, oneshot::Sender<()>)>>,
    /// Runs waiting for a slot of their pipeline (`on_conflict: queue`).
    queued: HashMap<String, VecDeque<String>>,
}

/// At most this many missed slots of one schedule run after downtime
/// (`catchup: all`), and at most this many slots per backfill.
pub const CATCHUP_CAP: usize = 100;

/// Loads every `*.yaml`/`*.yml` below `dir`: the valid pipelines, and one
/// line per problem of the others (`path:line:col: message`).
pub fn load_pipelines(dir: &Path) -> (Vec<(Pipeline, PathBuf, String)>, Vec<String>) {
    let mut files = Vec::new();
    collect(dir, &mut files);
    files.sort();
    let mut loaded = Vec::new();
    let mut problems = Vec::new();
    let mut names: HashMap<String, PathBuf> = HashMap::new();
    for path in files {
        let shown = path.display().to_string();
        let source = match std::fs::read_to_string(&path) {
            Ok(source) => source,
            Err(e) => {
                problems.push(format!("{shown}: cannot read: {e}"));
                continue;
            }
        };
        let validated = weir_model::validate(&source);
        problems.extend(
            validated
                .diagnostics
                .iter()
                .filter(|d| d.is_error())
                .map(|d| format!("{shown}:{d}")),
        );
        if let Some(pipeline) = validated.pipeline {
            if let Some(other) = names.get(&pipeline.name.value) {
                problems.push(format!(
                    "{shown}:{}: pipeline name '{}' is already used by {}",
                    pipeline.name.pos,
                    pipeline.name.value,
                    other.display()
                ));
                continue;
            }
            names.insert(pipeline.name.value.clone(), path.clone());
            loaded.push((pipeline, path, source));
        }
    }
    (loaded, problems)
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
        let (found, problems) = load_pipelines(dir);
        let mut pipelines = BTreeMap::new();
        for (pipeline, path, source) in found {
            let hash = store.save_pipeline(&pipeline.name.value, &source).await?;
            pipelines.insert(
                pipeline.name.value.clone(),
                Loaded {
                    pipeline,
                    path,
                    hash,
                },
            );
        }
        let daemon = Arc::new(Daemon {
            store,
            options,
            pipelines: Mutex::new(pipelines),
            state: Mutex::new(Active::default()),
        });
        daemon.spawn_scheduler();
        for id in daemon.store.unfinished_runs().await? {
            let run = daemon.store.load_run(&id).await?;
            let hash = daemon.store.run_pipeline_hash(&id).await?;
            let Some(source) = daemon.store.pipeline_source(&hash).await? else {
                continue;
            };
            if let Some(pipeline) = weir_model::validate(&source).pipeline {
                daemon.spawn(pipeline, run.id);
            }
        }
        Ok((daemon, problems))
    }

    /// Attempts in flight across all runs, GPUs held, and runs queued.
    pub fn load(&self) -> (usize, usize, usize) {
        let queued = self.lock_state().queued.values().map(VecDeque::len).sum();
        (
            self.options.load.running(),
            self.options.load.gpus_held(),
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

    /// [`Daemon::trigger`] with the event that caused it (a webhook's
    /// payload, a drift report), which expressions read as `event`.
    pub async fn trigger_with(
        self: &Arc<Self>,
        name: &str,
        params: &[(String, String)],
        trigger: &str,
        event: serde_json::Value,
    ) -> Result<Run, TriggerError> {
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
        let mut run = new_run(
            &loaded.pipeline,
            &id,
            trigger,
            params,
            event,
            serde_json::json!({}),
            now(),
        )
        .map_err(TriggerError::Params)?;
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
        self.store.create_run(&run, &loaded.hash).await?;
        match admission {
            Admission::Start => self.spawn(loaded.pipeline, id),
            Admission::Queue => self
                .lock_state()
                .queued
                .entry(name.to_owned())
                .or_default()
                .push_back(id),
            Admission::Skip => {}
            Admission::CancelThenStart(ids) => {
                for other in ids {
                    self.cancel(&other);
                }
                self.spawn(loaded.pipeline, id);
            }
        }
        Ok(run)
    }

    /// Asks a run this daemon drives to cancel; false when it drives no
    /// such run (finished, or unknown).
    pub fn cancel(&self, id: &str) -> bool {
        let mut state = self.lock_state();
        for runs in state.running.values_mut() {
            if let Some(at) = runs.iter().position(|(run, _)| run == id) {
                let (_, switch) = runs.remove(at);
                let _ = switch.send(());
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
    fn spawn_scheduler(self: &Arc<Self>) {
        let daemon = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
            loop {
                tick.tick().await;
                let Some(daemon) = daemon.upgrade() else {
                    return;
                };
                if let Err(e) = daemon.fire_schedules(now()).await {
                    eprintln!("weir: schedules: {e}");
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
                eprintln!("weir: {name} slot {slot}: {e}");
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

    /// Drives run `id` in a task; when it ends, the pipeline's next queued
    /// run starts.
    fn spawn(self: &Arc<Self>, pipeline: Pipeline, id: String) {
        let (switch, cancelled) = oneshot::channel::<()>();
        let name = pipeline.name.value.clone();
        self.lock_state()
            .running
            .entry(name.clone())
            .or_default()
            .push((id.clone(), switch));
        let daemon = Arc::clone(self);
        tokio::spawn(async move {
            let cancel = async move {
                if cancelled.await.is_err() {
                    std::future::pending::<()>().await;
                }
            };
            if let Err(e) = drive(
                &daemon.store,
                &pipeline,
                &id,
                &daemon.options,
                cancel,
                |_, _| {},
            )
            .await
            {
                eprintln!("weir: run {id} stopped being driven: {e}");
            }
            let next = {
                let mut state = daemon.lock_state();
                if let Some(runs) = state.running.get_mut(&name) {
                    runs.retain(|(run, _)| run != &id);
                }
                state.queued.get_mut(&name).and_then(VecDeque::pop_front)
            };
            if let Some(next) = next {
                daemon.spawn(pipeline, next);
            }
        });
    }
}

fn suggestion(name: &str, names: &[String]) -> String {
    names
        .iter()
        .map(|n| (strsim::levenshtein(name, n), n))
        .filter(|(d, _)| *d <= (name.len() / 3).max(1))
        .min()
        .map(|(_, n)| format!(" (did you mean '{n}'?)"))
        .unwrap_or_default()
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
