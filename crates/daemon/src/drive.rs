//! Driving one run: a loop over events (executor reports, timers, Ctrl-C),
//! each decided by the engine, committed, then acted on.

use chrono::{DurationRound, Utc};
use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use thiserror::Error;
use tokio::sync::{mpsc, oneshot, watch};
use weir_engine::{
    Action, Capacity, Event, Outcome, Run, StepState, StopReason, Time, advance, prepare,
};
use weir_executor::{Attempt, DockerExecutor, run_process};
use weir_model::Pipeline;
use weir_model::pipeline::{Executor, StepKind};
use weir_store::Store;

/// How a run is driven.
#[derive(Debug, Clone)]
pub struct Options {
    /// The data folder: runs' work and out folders live under `runs/`.
    pub data: PathBuf,
    /// Most attempts running at once.
    pub max_running: usize,
    /// How long a stopped step may take to exit before SIGKILL.
    pub grace: Duration,
    /// The Docker engine, for pipelines with docker steps.
    pub docker: Option<DockerExecutor>,
    /// The host's GPUs, by device id.
    pub gpus: Vec<String>,
    /// What all runs driven with these options hold together.
    pub load: Arc<Load>,
}

/// Attempts in flight and GPUs held, across every run driven with the same
/// [`Options`], so the bounds hold for the daemon as a whole. A run that
/// waits for a slot or a GPU is woken when another run frees one.
#[derive(Debug)]
pub struct Load {
    state: Mutex<LoadState>,
    freed: watch::Sender<u64>,
}

impl Default for Load {
    fn default() -> Load {
        Load {
            state: Mutex::default(),
            freed: watch::channel(0).0,
        }
    }
}

#[derive(Debug, Default)]
struct LoadState {
    running: usize,
    gpus: Vec<(String, String)>,
}

impl Load {
    fn lock(&self) -> std::sync::MutexGuard<'_, LoadState> {
        // A panic while holding this lock leaves plain counters behind.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn take(&self, run: &str, gpus: &[String]) {
        let mut state = self.lock();
        state.running += 1;
        state
            .gpus
            .extend(gpus.iter().map(|g| (run.to_owned(), g.clone())));
    }

    fn release(&self, run: &str, gpus: &[String]) {
        {
            let mut state = self.lock();
            state.running = state.running.saturating_sub(1);
            state.gpus.retain(|(r, g)| !(r == run && gpus.contains(g)));
        }
        self.freed.send_modify(|generation| *generation += 1);
    }

    fn capacity(&self, options: &Options, run: &str) -> Capacity {
        let state = self.lock();
        Capacity {
            slots: options.max_running.saturating_sub(state.running),
            gpus: options.gpus.clone(),
            busy_gpus: state
                .gpus
                .iter()
                .filter(|(r, _)| r != run)
                .map(|(_, g)| g.clone())
                .collect(),
        }
    }

    /// Attempts in flight across all runs.
    pub fn running(&self) -> usize {
        self.lock().running
    }

    /// GPUs held across all runs.
    pub fn gpus_held(&self) -> usize {
        self.lock().gpus.len()
    }
}

/// A change worth showing: the instance whose state moved.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// Index of the instance in `run.steps`.
    pub step: usize,
    /// Its state before.
    pub from: StepState,
    /// Its state now.
    pub to: StepState,
}

/// Why a run could not be driven to its end.
#[derive(Debug, Error)]
pub enum DriveError {
    /// The store failed; the run stays where it was committed last.
    #[error(transparent)]
    Store(#[from] weir_store::Error),
    /// The engine refused an event (a bug: the loop only sends fitting ones).
    #[error("engine: {0}")]
    Engine(#[from] weir_engine::Error),
}

/// What attempt tasks report to the loop.
enum Report {
    Started(usize, u32),
    Exited(usize, u32, Box<Outcome>),
}

/// The current time, at the microsecond: PostgreSQL keeps no more, and a
/// run read back must equal the run in memory.
pub fn now() -> Time {
    let now = Utc::now();
    now.duration_trunc(chrono::TimeDelta::microseconds(1))
        .unwrap_or(now)
}

/// What may be asked of a run while it is driven.
#[derive(Debug)]
pub enum Control {
    /// Cancel it, with this reason on everything it stops.
    Cancel(String),
    /// Decide the approval step instance `step`; the answer comes once the
    /// decision is committed, or says why it was refused.
    Decide {
        /// The instance id.
        step: String,
        /// Approved or rejected.
        approved: bool,
        /// Who decided.
        by: String,
        /// Their comment.
        comment: Option<String>,
        /// Where the answer goes.
        reply: oneshot::Sender<Result<(), String>>,
    },
}

/// Drives run `run_id` of `pipeline` until it ends or `cancel` fires (then
/// it is cancelled, "cancelled by Ctrl-C", and driven to its end). See
/// [`drive_with`].
pub async fn drive(
    store: &Store,
    pipeline: &Pipeline,
    run_id: &str,
    options: &Options,
    cancel: impl std::future::Future<Output = ()>,
    on_change: impl FnMut(&Run, &Change),
) -> Result<Run, DriveError> {
    let (control, inbox) = mpsc::channel(1);
    let driving = drive_with(store, pipeline, run_id, options, None, inbox, on_change);
    tokio::pin!(driving, cancel);
    tokio::select! {
        result = &mut driving => return result,
        () = &mut cancel => {
            let _ = control.send(Control::Cancel("cancelled by Ctrl-C".to_owned())).await;
        }
    }
    driving.await
}

/// Drives run `run_id` of `pipeline` until it ends, taking [`Control`]s
/// from `control` on the way; `known` is the run as last committed, when
/// the caller has it. Attempts a previous process left unfinished
/// are recorded as lost first (their leftover processes killed) and
/// started again. `on_change` sees every step state change.
pub async fn drive_with(
    store: &Store,
    pipeline: &Pipeline,
    run_id: &str,
    options: &Options,
    known: Option<Run>,
    mut control: mpsc::Receiver<Control>,
    mut on_change: impl FnMut(&Run, &Change),
) -> Result<Run, DriveError> {
    let mut run = match known {
        Some(run) if run.id == run_id => run,
        _ => store.load_run(run_id).await?,
    };
    let (reports, mut inbox) = mpsc::channel::<Report>(256);
    let mut stops: HashMap<(usize, u32), watch::Sender<Option<String>>> = HashMap::new();
    let mut wake: Option<Time> = None;
    let (lost, take_up) = recover(&run, options).await;
    let mut queue: VecDeque<Event> = lost.into();
    queue.push_back(Event::Tick);
    for (step, attempt, container) in take_up {
        let skip = store.log_written(&run.id, step, attempt).await?;
        let stop = start(
            store,
            pipeline,
            &run,
            step,
            attempt,
            options,
            reports.clone(),
            Some((container, skip)),
        );
        stops.insert((step, attempt), stop);
        options.load.take(&run.id, &granted(&run, step, attempt));
    }
    // Seen before each decision, so a slot freed after it wakes this run.
    let mut freed = options.load.freed.subscribe();
    let mut listening = true;
    let mut replies: Vec<oneshot::Sender<Result<(), String>>> = Vec::new();
    // An error leaves attempts behind that this loop no longer follows:
    // their share of the daemon-wide load is given back with it.
    let result: Result<Run, DriveError> = async {
        loop {
            while let Some(event) = queue.pop_front() {
                let before = run.clone();
                freed.borrow_and_update();
                let capacity = options.load.capacity(options, &run.id);
                let actions = advance(&mut run, pipeline, event, now(), capacity)?;
                store.save_run(&before, &run).await?;
                for (index, (old, new)) in before.steps.iter().zip(&run.steps).enumerate() {
                    if old.state != new.state {
                        on_change(
                            &run,
                            &Change {
                                step: index,
                                from: old.state,
                                to: new.state,
                            },
                        );
                    }
                }
                wake = None;
                for action in actions {
                    match action {
                        Action::Start { step, attempt } => {
                            let stop = start(
                                store,
                                pipeline,
                                &run,
                                step,
                                attempt,
                                options,
                                reports.clone(),
                                None,
                            );
                            stops.insert((step, attempt), stop);
                            options.load.take(&run.id, &granted(&run, step, attempt));
                        }
                        Action::Stop {
                            step,
                            attempt,
                            reason,
                        } => {
                            if let Some(stop) = stops.get(&(step, attempt)) {
                                let note = match reason {
                                    StopReason::Timeout => timeout_note(pipeline, &run, step),
                                    StopReason::Cancel => run
                                        .stopping
                                        .as_ref()
                                        .map_or_else(|| "cancelled".to_owned(), |s| s.reason.clone()),
                                };
                                let _ = stop.send(Some(note));
                            }
                        }
                        Action::WakeAt(at) => wake = Some(at),
                    }
                }
            }
            // Decisions asked for are committed now.
            for reply in replies.drain(..) {
                let _ = reply.send(Ok(()));
            }
            if run.state.is_terminal() && stops.is_empty() {
                return Ok(run.clone());
            }
            let sleep = wake.map(|at| (at - now()).to_std().unwrap_or(Duration::ZERO));
            tokio::select! {
                report = inbox.recv() => match report {
                    Some(Report::Started(step, attempt)) => queue.push_back(Event::Started { step, attempt }),
                    Some(Report::Exited(step, attempt, outcome)) => {
                        stops.remove(&(step, attempt));
                        options.load.release(&run.id, &granted(&run, step, attempt));
                        queue.push_back(Event::Exited { step, attempt, outcome: *outcome });
                    }
                    None => queue.push_back(Event::Tick),
                },
                () = async { tokio::time::sleep(sleep.unwrap_or(Duration::MAX)).await }, if sleep.is_some() => {
                    queue.push_back(Event::Tick);
                }
                Ok(()) = freed.changed() => queue.push_back(Event::Tick),
                asked = control.recv(), if listening => match asked {
                    Some(Control::Cancel(reason)) => queue.push_back(Event::Cancel { reason }),
                    Some(Control::Decide { step, approved, by, comment, reply }) => {
                        match run.steps.iter().position(|s| s.id == step) {
                            Some(index) if run.steps[index].state == StepState::Waiting => {
                                queue.push_back(Event::Decide { step: index, approved, by, comment });
                                replies.push(reply);
                            }
                            Some(index) => {
                                let state = run.steps[index].state;
                                let _ = reply.send(Err(format!("step '{step}' is not waiting for approval (it is {state})")));
                            }
                            None => {
                                let _ = reply.send(Err(format!("run {} has no step '{step}'", run.id)));
                            }
                        }
                    }
                    None => listening = false,
                },
            }
        }
    }
    .await;
    if result.is_err() {
        for (step, attempt) in stops.keys() {
            options
                .load
                .release(&run.id, &granted(&run, *step, *attempt));
        }
    }
    result
}

/// What a register step registers: its artifact (which must be a file
/// inside the run's work folder) and the metrics of its `metrics_from` step.
struct Registration {
    model: String,
    artifact: String,
    path: PathBuf,
    metrics: serde_json::Map<String, serde_json::Value>,
    run_id: String,
    step: String,
    alias: Option<String>,
}

fn registration(
    pipeline: &Pipeline,
    run: &Run,
    step: usize,
    register: &weir_model::pipeline::Register,
    options: &Options,
) -> Result<Registration, String> {
    let artifact = register.artifact.value.clone();
    let relative = std::path::Path::new(&artifact);
    let inside = relative.components().all(|c| {
        matches!(
            c,
            std::path::Component::Normal(_) | std::path::Component::CurDir
        )
    });
    if !inside {
        return Err(format!(
            "artifact '{artifact}' must be a path inside the run's work folder ($WEIR_WORK), without '..'"
        ));
    }
    let mut metrics = serde_json::Map::new();
    if let Some(from) = &register.metrics_from {
        let index = pipeline.steps.iter().position(|s| s.id.value == from.value);
        let instances: Vec<&weir_engine::StepRun> =
            run.steps.iter().filter(|s| Some(s.step) == index).collect();
        let latest = |s: &weir_engine::StepRun| {
            s.attempts
                .iter()
                .rev()
                .find(|a| a.state == weir_engine::AttemptState::Succeeded)
                .map(|a| a.metrics.clone())
                .unwrap_or_default()
        };
        match instances.as_slice() {
            [one] => metrics = latest(one),
            many => {
                for instance in many {
                    metrics.insert(
                        instance.id.clone(),
                        serde_json::Value::Object(latest(instance)),
                    );
                }
            }
        }
    }
    Ok(Registration {
        model: register.model.value.clone(),
        path: run_dir(options, run).join("work").join(relative),
        artifact,
        metrics,
        run_id: run.id.clone(),
        step: run.steps[step].id.clone(),
        alias: register.alias.as_ref().map(|a| a.value.clone()),
    })
}

/// Hashes the artifact and registers the version: outputs `model`,
/// `version` and `sha256`; a missing artifact fails the step, naming it.
async fn register_version(store: &Store, new: Registration) -> Outcome {
    let path = new.path.clone();
    let hashed = tokio::task::spawn_blocking(move || sha256_file(&path)).await;
    let sha256 = match hashed {
        Ok(Ok(sha256)) => sha256,
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => {
            return Outcome::failed(format!(
                "artifact '{}' not found in the run's work folder: the steps before this one must write $WEIR_WORK/{}",
                new.artifact, new.artifact
            ));
        }
        Ok(Err(e)) => {
            return Outcome::failed(format!("cannot read artifact '{}': {e}", new.artifact));
        }
        Err(e) => return Outcome::failed(format!("cannot read artifact '{}': {e}", new.artifact)),
    };
    let version = weir_store::NewVersion {
        model: &new.model,
        artifact: &new.artifact,
        sha256: &sha256,
        metrics: &new.metrics,
        run_id: &new.run_id,
        step: &new.step,
        alias: new.alias.as_deref(),
        at: now(),
    };
    match store.register_model(&version).await {
        Ok(registered) => {
            tracing::info!(model = %new.model, version = registered.version, run = %new.run_id, "model registered");
            let outputs = serde_json::json!({
                "model": registered.model,
                "version": registered.version,
                "sha256": registered.sha256,
            });
            Outcome {
                exit_code: Some(0),
                outputs: outputs.as_object().cloned().unwrap_or_default(),
                metrics: registered.metrics,
                ..Outcome::default()
            }
        }
        Err(e) => Outcome::failed(format!("cannot register {}: {e}", new.model)),
    }
}

/// Adds the SHA-256 of each artifact the step declares to a successful
/// outcome, for lineage; a declared artifact the step did not write fails it.
async fn hash_artifacts(mut outcome: Outcome, attempt: &Attempt) -> Outcome {
    let succeeded = outcome.error.is_none() && outcome.exit_code == Some(0);
    if !succeeded || attempt.prepared.artifacts.is_empty() {
        return outcome;
    }
    let work = attempt.work.clone();
    let declared = attempt.prepared.artifacts.clone();
    let hashed = tokio::task::spawn_blocking(move || {
        declared
            .into_iter()
            .map(|path| match sha256_file(&work.join(&path)) {
                Ok(sha) => Ok((path, sha)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(format!(
                    "declared artifact '{path}' was not written to $WEIR_WORK/{path}"
                )),
                Err(e) => Err(format!("cannot hash artifact '{path}': {e}")),
            })
            .collect::<Result<std::collections::BTreeMap<_, _>, String>>()
    })
    .await
    .unwrap_or_else(|e| Err(format!("cannot hash artifacts: {e}")));
    match hashed {
        Ok(artifacts) => outcome.artifacts = artifacts,
        Err(error) => outcome.error = Some(error),
    }
    outcome
}

/// The SHA-256 of a file, hex, read in blocks.
fn sha256_file(path: &std::path::Path) -> std::io::Result<String> {
    use sha2::Digest as _;
    use std::io::Read as _;
    let mut file = std::fs::File::open(path)?;
    if file.metadata()?.is_dir() {
        return Err(std::io::Error::other("it is a folder, not a file"));
    }
    let mut hasher = sha2::Sha256::new();
    let mut buffer = vec![0u8; 1 << 16];
    loop {
        let read = file.read(&mut buffer)?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// The GPUs granted to an attempt.
fn granted(run: &Run, step: usize, attempt: u32) -> Vec<String> {
    run.steps[step]
        .attempts
        .iter()
        .find(|a| a.number == attempt)
        .map(|a| a.gpus.clone())
        .unwrap_or_default()
}

fn timeout_note(pipeline: &Pipeline, run: &Run, step: usize) -> String {
    match &pipeline.steps[run.steps[step].step].kind {
        StepKind::Container(c) => match c.timeout {
            Some(t) => format!("timed out after {t}"),
            None => "timed out".to_owned(),
        },
        _ => "timed out".to_owned(),
    }
}

/// Where the attempts of a run keep their files.
fn run_dir(options: &Options, run: &Run) -> PathBuf {
    options.data.join("runs").join(&run.id)
}

fn out_dir(options: &Options, run: &Run, step: usize, attempt: u32) -> PathBuf {
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

/// What became of the attempts a previous process left unfinished. A
/// container that is still there (running or exited) is taken up again:
/// its log continues where the store left off and its exit is collected.
/// Anything else is lost (weir's failure, not the step's), after what may
/// still run of it — a process step's orphaned group — is killed, so no
/// attempt runs twice.
async fn recover(run: &Run, options: &Options) -> (Vec<Event>, Vec<(usize, u32, String)>) {
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
    if unfinished.is_empty() {
        return (Vec::new(), Vec::new());
    }
    let containers = match &options.docker {
        Some(docker) => docker.find(&run.id).await.unwrap_or_default(),
        None => Vec::new(),
    };
    let mut lost = Vec::new();
    let mut take_up = Vec::new();
    for (step, attempt) in unfinished {
        match containers
            .iter()
            .find(|c| c.step == step && c.attempt == attempt)
        {
            Some(found) => take_up.push((step, attempt, found.name.clone())),
            None => {
                weir_executor::kill_leftover(&out_dir(options, run, step, attempt));
                lost.push(Event::Lost { step, attempt });
            }
        }
    }
    (lost, take_up)
}

/// Starts attempt `attempt` of instance `step` in a task of its own — or,
/// with `container` (its name and the log bytes already stored), takes up
/// the container a previous process left — and returns the sender that
/// stops it.
#[allow(clippy::too_many_arguments)]
fn start(
    store: &Store,
    pipeline: &Pipeline,
    run: &Run,
    step: usize,
    attempt: u32,
    options: &Options,
    reports: mpsc::Sender<Report>,
    container: Option<(String, u64)>,
) -> watch::Sender<Option<String>> {
    let (stop, stopped) = watch::channel(None);
    let kind = &pipeline.steps[run.steps[step].step].kind;
    if let StepKind::Register(register) = kind {
        let new = registration(pipeline, run, step, register, options);
        let store = store.clone();
        tokio::spawn(async move {
            let _ = reports.send(Report::Started(step, attempt)).await;
            let outcome = match new {
                Ok(new) => register_version(&store, new).await,
                Err(error) => Outcome::failed(error),
            };
            let _ = reports
                .send(Report::Exited(step, attempt, Box::new(outcome)))
                .await;
        });
        return stop;
    }
    let launch: Result<Attempt, String> = match kind {
        StepKind::Container(_) => prepare(run, pipeline, step).and_then(|prepared| {
            if prepared.executor == Executor::Docker && options.docker.is_none() {
                return Err("no Docker engine: connect weir to one, or run this step with 'executor: process'".to_owned());
            }
            let secrets = prepared
                .secrets
                .iter()
                .map(|name| {
                    std::env::var(name)
                        .map(|value| (name.clone(), value))
                        .map_err(|_| format!("secret {name} is not set in weir's environment"))
                })
                .collect::<Result<Vec<_>, String>>()?;
            Ok(Attempt {
                run_id: run.id.clone(),
                pipeline: run.pipeline.clone(),
                step: run.steps[step].id.clone(),
                number: attempt,
                params: run.params.clone(),
                prepared,
                work: run_dir(options, run).join("work"),
                out: out_dir(options, run, step, attempt),
                secrets,
                gpus: run.steps[step]
                    .attempts
                    .iter()
                    .find(|a| a.number == attempt)
                    .map(|a| a.gpus.clone())
                    .unwrap_or_default(),
                grace: options.grace,
            })
        }),
        StepKind::Gate(_) | StepKind::Approval(_) | StepKind::Register(_) => {
            Err(format!("a {} step has no process", kind.name()))
        }
    };
    let store = store.clone();
    let run_id = run.id.clone();
    let docker = options.docker.clone();
    let labels = vec![
        ("weir.run".to_owned(), run.id.clone()),
        ("weir.pipeline".to_owned(), run.pipeline.clone()),
        ("weir.step".to_owned(), run.steps[step].id.clone()),
        ("weir.step-index".to_owned(), step.to_string()),
        ("weir.attempt".to_owned(), attempt.to_string()),
    ];
    tokio::spawn(async move {
        let attempt_spec = match launch {
            Ok(spec) => spec,
            Err(error) => {
                let outcome = Outcome::failed(error);
                let _ = reports
                    .send(Report::Exited(step, attempt, Box::new(outcome)))
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
            tokio::spawn(async move {
                while let Some(chunk) = chunks.recv().await {
                    if let Err(e) = store.append_log(&run_id, step, attempt, &chunk).await {
                        tracing::error!(run = run_id, step, error = %e, "cannot store a step log");
                    }
                }
            })
        };
        let outcome = match (attempt_spec.prepared.executor, docker, container) {
            (Executor::Docker, Some(docker), Some((name, skip))) => {
                docker
                    .reattach(&name, &attempt_spec, skip, logs, stopped, started)
                    .await
            }
            (Executor::Docker, Some(docker), None) => {
                docker
                    .run(&attempt_spec, &labels, logs, stopped, started)
                    .await
            }
            _ => run_process(&attempt_spec, logs, stopped, started).await,
        };
        let _ = announce.await;
        let _ = writer.await;
        let outcome = hash_artifacts(outcome, &attempt_spec).await;
        let _ = reports
            .send(Report::Exited(step, attempt, Box::new(outcome)))
            .await;
    });
    stop
}
