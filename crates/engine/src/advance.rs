//! The state machine: one event in, the run changed, actions out.
//!
//! Order inside [`advance`]: apply the event; fire what is due (timeouts,
//! the run's deadline, approval timeouts); if the run is stopping, stop
//! what runs and cancel what waits; otherwise decide every pending step
//! whose needs are done (skip, evaluate a gate, park an approval, start an
//! attempt within the free slots); finally settle the run's own state and
//! ask to be woken at the next timer.

use crate::context;
use crate::run::{Attempt, AttemptState, Evidence, Read, Run, RunState, StepState, Stopping, Time};
use chrono::Duration as ChronoDuration;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json};
use thiserror::Error;
use weir_model::pipeline::{Backoff, Gpus, Retry, StepKind};
use weir_model::{Dag, Pipeline};

/// Something that happened to a run.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Nothing new: the run was created, loaded after a restart, or a timer is due.
    Tick,
    /// The executor started an attempt.
    Started {
        /// Index of the instance in `run.steps`.
        step: usize,
        /// The attempt's number.
        attempt: u32,
    },
    /// An attempt ended (exited, or could not start).
    Exited {
        /// Index of the instance in `run.steps`.
        step: usize,
        /// The attempt's number.
        attempt: u32,
        /// What it produced.
        outcome: Outcome,
    },
    /// Recovery found no trace of an attempt that was running.
    Lost {
        /// Index of the instance in `run.steps`.
        step: usize,
        /// The attempt's number.
        attempt: u32,
    },
    /// A user asked to cancel the run.
    Cancel {
        /// Shown on everything the cancellation stops.
        reason: String,
    },
    /// A decision on an approval step.
    Decide {
        /// Index of the instance in `run.steps`.
        step: usize,
        /// Approved or rejected.
        approved: bool,
        /// Who decided.
        by: String,
        /// Their comment.
        comment: Option<String>,
    },
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Outcome {
    /// The exit code, when the process exited.
    pub exit_code: Option<i32>,
    /// `metrics.json`.
    pub metrics: Map<String, Json>,
    /// `outputs.json`.
    pub outputs: Map<String, Json>,
    /// The image the attempt ran, resolved to its id (`sha256:…`), for lineage.
    pub image: Option<String>,
    /// The SHA-256 of each declared artifact, by path, for lineage.
    #[serde(default)]
    pub artifacts: std::collections::BTreeMap<String, String>,
    /// A failure that is not the exit code: malformed outputs, a step that
    /// could not start, a timeout. Set means failed, whatever the exit code.
    pub error: Option<String>,
}

impl Outcome {
    /// An attempt that failed for `error`, with nothing else known.
    pub fn failed(error: impl Into<String>) -> Outcome {
        Outcome {
            error: Some(error.into()),
            ..Outcome::default()
        }
    }
}

/// What the caller must do, after committing the changed run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Start this attempt: a container or process for `run`/`command`
    /// steps, a registration for `register` steps.
    Start {
        /// Index of the instance in `run.steps`.
        step: usize,
        /// The attempt's number.
        attempt: u32,
    },
    /// Stop this attempt (SIGTERM, then SIGKILL after the grace period).
    Stop {
        /// Index of the instance in `run.steps`.
        step: usize,
        /// The attempt's number.
        attempt: u32,
        /// Why.
        reason: StopReason,
    },
    /// Call [`advance`] with [`Event::Tick`] at this time.
    WakeAt(Time),
}

/// Why an attempt is stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StopReason {
    /// It ran past its step's `timeout`.
    Timeout,
    /// Its run is being cancelled (or timed out).
    Cancel,
}

/// An event that does not fit the run.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Error {
    /// The event names an instance or attempt the run does not have.
    #[error("run {run} has no attempt {attempt} of step #{step}")]
    NoSuchAttempt {
        /// The run.
        run: String,
        /// The instance index.
        step: usize,
        /// The attempt number.
        attempt: u32,
    },
    /// The attempt already ended; a late or repeated report.
    #[error("attempt {attempt} of step '{step}' already ended as {state}")]
    AttemptOver {
        /// The instance id.
        step: String,
        /// The attempt number.
        attempt: u32,
        /// How it ended.
        state: AttemptState,
    },
    /// A decision for a step that is not waiting for one.
    #[error("step '{step}' is not waiting for approval (it is {state})")]
    NotWaiting {
        /// The instance id.
        step: String,
        /// Its state.
        state: StepState,
    },
    /// The run is over; nothing can change it.
    #[error("run {run} already {state}")]
    RunOver {
        /// The run.
        run: String,
        /// Its terminal state.
        state: RunState,
    },
}

/// What the caller can give new attempts now.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Capacity {
    /// How many attempts may start: the bound on steps running at once,
    /// across runs, minus those running.
    pub slots: usize,
    /// Every GPU of the host, by device id.
    pub gpus: Vec<String>,
    /// GPUs held by attempts of other runs. The run's own unfinished
    /// attempts hold theirs too; the engine counts those itself, after the
    /// event, so a device freed by this very event is free at once.
    pub busy_gpus: Vec<String>,
}

/// Plain slots, no GPUs.
impl From<usize> for Capacity {
    fn from(slots: usize) -> Capacity {
        Capacity {
            slots,
            ..Capacity::default()
        }
    }
}

/// Applies `event` to `run` at `now` and returns what must be done. New
/// attempts start within `capacity`: its free slots (the caller's bound on
/// steps running at once) and its free GPUs, which an attempt is granted
/// by id and holds until it ends. On error the run is unchanged.
pub fn advance(
    run: &mut Run,
    pipeline: &Pipeline,
    event: Event,
    now: Time,
    capacity: impl Into<Capacity>,
) -> Result<Vec<Action>, Error> {
    let capacity = capacity.into();
    if run.state.is_terminal() {
        if event == Event::Tick {
            return Ok(Vec::new());
        }
        return Err(Error::RunOver {
            run: run.id.clone(),
            state: run.state,
        });
    }
    apply(run, pipeline, event, now)?;
    let mut actions = Vec::new();
    fire_timers(run, pipeline, now, &mut actions);
    if run.stopping.is_some() {
        stop_everything(run, now, &mut actions);
    } else {
        let dag = &pipeline.dag;
        decide_pending(run, pipeline, dag, now, capacity, &mut actions);
    }
    settle(run, now);
    if !run.state.is_terminal()
        && let Some(at) = next_timer(run, now)
    {
        actions.push(Action::WakeAt(at));
    }
    Ok(actions)
}

/// What the pipeline's `concurrency` says of a new run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Start it now.
    Start,
    /// Keep it queued until a run ends.
    Queue,
    /// Do not run it (`on_conflict: skip`).
    Skip,
    /// Cancel these runs, then start it (`on_conflict: cancel-running`).
    CancelThenStart(Vec<String>),
}

/// Decides a new run's fate from the ids of the pipeline's active runs.
pub fn admit(pipeline: &Pipeline, active: &[String]) -> Admission {
    use weir_model::pipeline::OnConflict;
    match pipeline.concurrency.max_runs {
        Some(max) if active.len() >= max as usize => match pipeline.concurrency.on_conflict {
            OnConflict::Queue => Admission::Queue,
            OnConflict::Skip => Admission::Skip,
            OnConflict::CancelRunning => Admission::CancelThenStart(active.to_vec()),
        },
        _ => Admission::Start,
    }
}

fn attempt_mut(run: &mut Run, step: usize, attempt: u32) -> Result<&mut Attempt, Error> {
    let run_id = run.id.clone();
    let instance = run.steps.get_mut(step).ok_or(Error::NoSuchAttempt {
        run: run_id.clone(),
        step,
        attempt,
    })?;
    let instance_id = instance.id.clone();
    let found = instance
        .attempts
        .iter_mut()
        .find(|a| a.number == attempt)
        .ok_or(Error::NoSuchAttempt {
            run: run_id,
            step,
            attempt,
        })?;
    if found.state.is_terminal() {
        return Err(Error::AttemptOver {
            step: instance_id,
            attempt,
            state: found.state,
        });
    }
    Ok(found)
}

fn apply(run: &mut Run, pipeline: &Pipeline, event: Event, now: Time) -> Result<(), Error> {
    match event {
        Event::Tick => {}
        Event::Started { step, attempt } => {
            let timeout = container_timeout(pipeline, run.steps.get(step).map(|s| s.step));
            let found = attempt_mut(run, step, attempt)?;
            if found.state == AttemptState::Pending {
                found.state = AttemptState::Running;
                found.started_at = Some(now);
                found.deadline = timeout.map(|t| now + t);
            }
        }
        Event::Exited {
            step,
            attempt,
            outcome,
        } => {
            let found = attempt_mut(run, step, attempt)?;
            let stop = found.stopping;
            found.finished_at = Some(now);
            found.exit_code = outcome.exit_code;
            found.metrics = outcome.metrics;
            found.outputs = outcome.outputs;
            found.image = outcome.image;
            found.artifacts = outcome.artifacts;
            let failure = match (&outcome.error, outcome.exit_code) {
                (Some(error), _) => Some(error.clone()),
                (None, Some(0)) => None,
                (None, Some(code)) => Some(format!("exit code {code}")),
                (None, None) => Some("ended without an exit code".to_owned()),
            };
            found.state = match (stop, &failure) {
                (Some(StopReason::Cancel), _) => AttemptState::Cancelled,
                (_, None) => AttemptState::Succeeded,
                (_, Some(_)) => AttemptState::Failed,
            };
            found.reason = failure.clone();
            let state = found.state;
            after_attempt(run, pipeline, step, state, failure, now);
        }
        Event::Lost { step, attempt } => {
            let found = attempt_mut(run, step, attempt)?;
            found.state = AttemptState::Lost;
            found.finished_at = Some(now);
            found.reason =
                Some("lost: weir stopped while it ran and found no trace of it".to_owned());
            after_attempt(run, pipeline, step, AttemptState::Lost, None, now);
        }
        Event::Cancel { reason } => {
            if run.stopping.is_none() {
                run.stopping = Some(Stopping {
                    reason,
                    fails: false,
                });
            }
        }
        Event::Decide {
            step,
            approved,
            by,
            comment,
        } => {
            let instance = run.steps.get_mut(step).ok_or(Error::NoSuchAttempt {
                run: run.id.clone(),
                step,
                attempt: 0,
            })?;
            if instance.state != StepState::Waiting {
                return Err(Error::NotWaiting {
                    step: instance.id.clone(),
                    state: instance.state,
                });
            }
            let comment = comment.map(|c| format!(": {c}")).unwrap_or_default();
            if approved {
                finish(
                    instance,
                    StepState::Succeeded,
                    Some(format!("approved by {by}{comment}")),
                    now,
                );
            } else {
                finish(
                    instance,
                    StepState::Failed,
                    Some(format!("rejected by {by}{comment}")),
                    now,
                );
            }
        }
    }
    Ok(())
}

fn container_timeout(pipeline: &Pipeline, step: Option<usize>) -> Option<ChronoDuration> {
    let step = &pipeline.steps[step?];
    match &step.kind {
        StepKind::Container(c) => c
            .timeout
            .and_then(|t| ChronoDuration::from_std(t.get()).ok()),
        _ => None,
    }
}

fn retry_policy(pipeline: &Pipeline, step: usize) -> Retry {
    match &pipeline.steps[step].kind {
        StepKind::Container(c) => c.retry,
        _ => Retry::default(),
    }
}

/// The wait before retry number `n` (1 for the first retry).
pub(crate) fn backoff(retry: &Retry, n: u32) -> ChronoDuration {
    let base = retry.delay.get();
    let delay = match retry.backoff {
        Backoff::Constant => base,
        Backoff::Exponential => base.saturating_mul(2u32.saturating_pow(n.saturating_sub(1))),
    };
    let delay = match retry.max_delay {
        Some(max) => delay.min(max.get()),
        None => delay,
    };
    ChronoDuration::from_std(delay).unwrap_or(ChronoDuration::MAX)
}

/// The step's state after one of its attempts ended.
fn after_attempt(
    run: &mut Run,
    pipeline: &Pipeline,
    index: usize,
    ended: AttemptState,
    failure: Option<String>,
    now: Time,
) {
    let stopping = run.stopping.clone();
    let instance = &mut run.steps[index];
    let retry = retry_policy(pipeline, instance.step);
    match ended {
        AttemptState::Succeeded => finish(instance, StepState::Succeeded, None, now),
        AttemptState::Cancelled => {
            let reason = stopping.map(|s| s.reason);
            finish(instance, StepState::Cancelled, reason, now);
        }
        _ if stopping.is_some() => {
            let reason = stopping.map(|s| s.reason);
            finish(instance, StepState::Cancelled, reason, now);
        }
        AttemptState::Lost if instance.losses() > crate::MAX_LOST => {
            let reason = format!("lost {} times; giving up", instance.losses());
            finish(instance, StepState::Failed, Some(reason), now);
        }
        AttemptState::Lost => {
            instance.state = StepState::Pending;
            instance.reason = Some("attempt lost; starting it again".to_owned());
        }
        _ => {
            let failures = instance.failures();
            let reason = failure.unwrap_or_else(|| "failed".to_owned());
            if failures <= retry.limit as usize {
                let wait = backoff(&retry, failures as u32);
                instance.state = StepState::Pending;
                instance.not_before = Some(now + wait);
                instance.reason = Some(format!(
                    "{reason}; retry {failures} of {} after {}s",
                    retry.limit,
                    wait.num_seconds()
                ));
            } else {
                let reason = if retry.limit > 0 {
                    format!("{reason} (after {} attempts)", instance.attempts.len())
                } else {
                    reason
                };
                finish(instance, StepState::Failed, Some(reason), now);
            }
        }
    }
}

fn finish(instance: &mut crate::run::StepRun, state: StepState, reason: Option<String>, now: Time) {
    instance.state = state;
    instance.reason = reason;
    instance.finished_at = Some(now);
    instance.not_before = None;
    instance.waiting_until = None;
}

fn fire_timers(run: &mut Run, pipeline: &Pipeline, now: Time, actions: &mut Vec<Action>) {
    if run.stopping.is_none()
        && let Some(deadline) = run.deadline
        && deadline <= now
    {
        let limit = deadline - run.created_at;
        run.stopping = Some(Stopping {
            reason: format!("the run timed out after {}s", limit.num_seconds()),
            fails: true,
        });
    }
    for (index, instance) in run.steps.iter_mut().enumerate() {
        if instance.state == StepState::Waiting
            && let Some(until) = instance.waiting_until
            && until <= now
        {
            let timeout = match &pipeline.steps[instance.step].kind {
                StepKind::Approval(a) => a.timeout.map(|t| t.to_string()).unwrap_or_default(),
                _ => String::new(),
            };
            finish(
                instance,
                StepState::Failed,
                Some(format!("no decision within {timeout}")),
                now,
            );
        }
        for attempt in &mut instance.attempts {
            if attempt.state == AttemptState::Running
                && attempt.stopping.is_none()
                && attempt.deadline.is_some_and(|d| d <= now)
            {
                attempt.stopping = Some(StopReason::Timeout);
                actions.push(Action::Stop {
                    step: index,
                    attempt: attempt.number,
                    reason: StopReason::Timeout,
                });
            }
        }
    }
}

fn stop_everything(run: &mut Run, now: Time, actions: &mut Vec<Action>) {
    let reason = run.stopping.as_ref().map(|s| s.reason.clone());
    for (index, instance) in run.steps.iter_mut().enumerate() {
        match instance.state {
            StepState::Pending | StepState::Waiting => {
                finish(instance, StepState::Cancelled, reason.clone(), now)
            }
            StepState::Running => {
                for attempt in &mut instance.attempts {
                    if !attempt.state.is_terminal() && attempt.stopping != Some(StopReason::Cancel)
                    {
                        attempt.stopping = Some(StopReason::Cancel);
                        actions.push(Action::Stop {
                            step: index,
                            attempt: attempt.number,
                            reason: StopReason::Cancel,
                        });
                    }
                }
            }
            _ => {}
        }
    }
}

/// Decides every pending instance whose needs are all done.
fn decide_pending(
    run: &mut Run,
    pipeline: &Pipeline,
    dag: &Dag,
    now: Time,
    capacity: Capacity,
    actions: &mut Vec<Action>,
) {
    let Capacity {
        mut slots,
        gpus: all_gpus,
        busy_gpus,
    } = capacity;
    let held: Vec<&String> = run
        .steps
        .iter()
        .flat_map(|s| &s.attempts)
        .filter(|a| !a.state.is_terminal())
        .flat_map(|a| &a.gpus)
        .collect();
    let mut free: Vec<String> = all_gpus
        .iter()
        .filter(|g| !busy_gpus.contains(g) && !held.contains(g))
        .cloned()
        .collect();
    // Once a step waits for GPUs, later ones do not take them first: a
    // large request is not starved by a stream of small ones.
    let mut gpus_blocked = false;
    // Instance indexes of each step.
    let mut by_step: Vec<Vec<usize>> = vec![Vec::new(); pipeline.steps.len()];
    for (index, instance) in run.steps.iter().enumerate() {
        by_step[instance.step].push(index);
    }
    for index in 0..run.steps.len() {
        if run.steps[index].state != StepState::Pending {
            continue;
        }
        let step_index = run.steps[index].step;
        let mut blocked = false;
        let mut upstream_bad = None;
        for &need in dag.needs(step_index) {
            for &other in &by_step[need] {
                match run.steps[other].state {
                    StepState::Succeeded => {}
                    StepState::Failed | StepState::Cancelled | StepState::Skipped => {
                        upstream_bad
                            .get_or_insert((run.steps[other].id.clone(), run.steps[other].state));
                    }
                    _ => blocked = true,
                }
            }
        }
        if blocked {
            continue;
        }
        if let Some((upstream, state)) = upstream_bad {
            finish(
                &mut run.steps[index],
                StepState::Skipped,
                Some(format!("upstream '{upstream}' {state}")),
                now,
            );
            continue;
        }
        let step = &pipeline.steps[step_index];
        let first_decision =
            run.steps[index].attempts.is_empty() && run.steps[index].started_at.is_none();
        if first_decision && let Some(condition) = &step.condition {
            let ctx = context::for_instance(run, pipeline, index);
            match ctx.eval_bool(&condition.value) {
                Ok(true) => {}
                Ok(false) => {
                    let reason = format!("if is false: {}", ctx.explain(&condition.value));
                    finish(&mut run.steps[index], StepState::Skipped, Some(reason), now);
                    continue;
                }
                Err(e) => {
                    let reason = format!("if: {e}");
                    finish(&mut run.steps[index], StepState::Failed, Some(reason), now);
                    continue;
                }
            }
        }
        match &step.kind {
            StepKind::Gate(conditions) => {
                let ctx = context::for_instance(run, pipeline, index);
                let evidence: Vec<Evidence> = conditions
                    .iter()
                    .map(|c| {
                        let expr = &c.value;
                        let reads = expr
                            .references()
                            .iter()
                            .map(|r| Read {
                                path: r.source(),
                                value: ctx.read(r),
                            })
                            .collect();
                        Evidence {
                            expression: expr.source().to_owned(),
                            reads,
                            holds: ctx.eval_bool(expr) == Ok(true),
                            explanation: ctx.explain(expr),
                        }
                    })
                    .collect();
                let failed: Vec<&str> = evidence
                    .iter()
                    .filter(|e| !e.holds)
                    .map(|e| e.explanation.as_str())
                    .collect();
                let instance = &mut run.steps[index];
                instance.started_at = Some(now);
                if failed.is_empty() {
                    finish(instance, StepState::Succeeded, None, now);
                } else {
                    let reason = format!("gate does not hold: {}", failed.join("; "));
                    finish(instance, StepState::Failed, Some(reason), now);
                }
                instance.evidence = evidence;
            }
            StepKind::Approval(approval) => {
                let instance = &mut run.steps[index];
                instance.state = StepState::Waiting;
                instance.started_at = Some(now);
                instance.reason = Some("waiting for approval".to_owned());
                instance.waiting_until = approval
                    .timeout
                    .and_then(|t| ChronoDuration::from_std(t.get()).ok())
                    .map(|t| now + t);
            }
            StepKind::Container(_) | StepKind::Register(_) => {
                if run.steps[index].not_before.is_some_and(|t| t > now) {
                    continue;
                }
                if let Some(max) = step.max_parallel {
                    let running = by_step[step_index]
                        .iter()
                        .filter(|&&i| run.steps[i].state == StepState::Running)
                        .count();
                    if running >= max as usize {
                        continue;
                    }
                }
                if slots == 0 {
                    continue;
                }
                let granted = match gpu_request(step) {
                    None => Vec::new(),
                    Some(request) => match grant(&request, &all_gpus, &free, gpus_blocked) {
                        Grant::Now(ids) => {
                            free.retain(|g| !ids.contains(g));
                            ids
                        }
                        Grant::Wait(reason) => {
                            gpus_blocked = true;
                            run.steps[index].reason = Some(reason);
                            continue;
                        }
                        Grant::Never(reason) => {
                            finish(&mut run.steps[index], StepState::Failed, Some(reason), now);
                            continue;
                        }
                    },
                };
                slots -= 1;
                let instance = &mut run.steps[index];
                let number = instance.attempts.len() as u32 + 1;
                instance.attempts.push(Attempt {
                    number,
                    state: AttemptState::Pending,
                    created_at: now,
                    started_at: None,
                    finished_at: None,
                    deadline: None,
                    stopping: None,
                    exit_code: None,
                    metrics: Map::new(),
                    outputs: Map::new(),
                    image: None,
                    artifacts: Default::default(),
                    gpus: granted,
                    reason: None,
                });
                instance.state = StepState::Running;
                instance.reason = None;
                instance.started_at.get_or_insert(now);
                instance.not_before = None;
                actions.push(Action::Start {
                    step: index,
                    attempt: number,
                });
            }
        }
    }
}

/// The GPUs a container step asks for.
fn gpu_request(step: &weir_model::pipeline::Step) -> Option<Gpus> {
    match &step.kind {
        StepKind::Container(c) => c.resources.gpus.clone(),
        _ => None,
    }
}

enum Grant {
    /// These device ids, now.
    Now(Vec<String>),
    /// Not now; the reason says for what it waits.
    Wait(String),
    /// Never on this host; the reason has the numbers.
    Never(String),
}

/// Decides a GPU request against the host's devices and the free ones.
fn grant(request: &Gpus, all: &[String], free: &[String], blocked: bool) -> Grant {
    let plural = |n: usize| if n == 1 { "GPU" } else { "GPUs" };
    let wanted: Vec<String> = match request {
        Gpus::Count(n) => {
            let n = *n as usize;
            if n > all.len() {
                return Grant::Never(format!(
                    "asks for {n} {}; this host has {}",
                    plural(n),
                    all.len()
                ));
            }
            if blocked || free.len() < n {
                return Grant::Wait(format!(
                    "waiting for {n} {} ({} free)",
                    plural(n),
                    free.len()
                ));
            }
            return Grant::Now(free[..n].to_vec());
        }
        Gpus::All if all.is_empty() => {
            return Grant::Never("asks for all GPUs; this host has none".to_owned());
        }
        Gpus::All => all.to_vec(),
        Gpus::Ids(ids) => {
            if let Some(missing) = ids.iter().find(|id| !all.contains(id)) {
                return Grant::Never(format!(
                    "asks for GPU {missing}; this host has {}",
                    describe_ids(all)
                ));
            }
            ids.clone()
        }
    };
    if blocked || wanted.iter().any(|id| !free.contains(id)) {
        return Grant::Wait(format!("waiting for GPUs {}", wanted.join(", ")));
    }
    Grant::Now(wanted)
}

fn describe_ids(ids: &[String]) -> String {
    if ids.is_empty() {
        "none".to_owned()
    } else {
        ids.join(", ")
    }
}

/// The run's own state from its steps'.
fn settle(run: &mut Run, now: Time) {
    if run.steps.iter().all(|s| s.state.is_terminal()) {
        let failed = run.steps.iter().find(|s| s.state == StepState::Failed);
        let (state, reason) = match (&run.stopping, failed) {
            (Some(stopping), _) if stopping.fails => {
                (RunState::Failed, Some(stopping.reason.clone()))
            }
            (Some(stopping), _) => (RunState::Cancelled, Some(stopping.reason.clone())),
            (None, Some(step)) => (
                RunState::Failed,
                Some(format!(
                    "step '{}' failed: {}",
                    step.id,
                    step.reason.as_deref().unwrap_or("failed")
                )),
            ),
            (None, None) => (RunState::Succeeded, None),
        };
        run.state = state;
        run.reason = reason;
        run.finished_at = Some(now);
        run.started_at.get_or_insert(now);
    } else if run.state == RunState::Queued {
        run.state = RunState::Running;
        run.started_at = Some(now);
    }
}

/// The earliest time after `now` at which something is due.
fn next_timer(run: &Run, now: Time) -> Option<Time> {
    let mut times = Vec::new();
    if run.stopping.is_none() {
        times.extend(run.deadline);
    }
    for instance in &run.steps {
        if instance.state == StepState::Pending {
            times.extend(instance.not_before);
        }
        if instance.state == StepState::Waiting {
            times.extend(instance.waiting_until);
        }
        for attempt in &instance.attempts {
            if attempt.state == AttemptState::Running && attempt.stopping.is_none() {
                times.extend(attempt.deadline);
            }
        }
    }
    times.into_iter().filter(|t| *t > now).min()
}
