//! Driving one run: a loop over events (executor reports, timers, Ctrl-C),
//! each decided by the engine, committed, then acted on.

use crate::attempt::{Report, Starter, granted, recover};
use crate::clock::now;
use crate::config::Options;
use std::collections::{HashMap, VecDeque};
use std::time::Duration;
use thiserror::Error;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::task::TaskTracker;
use weir_engine::{Action, Event, Run, StepState, StopReason, Time, advance};
use weir_model::Pipeline;
use weir_model::pipeline::StepKind;
use weir_store::Store;

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

/// What may be asked of a run while it is driven.
#[derive(Debug)]
pub enum Control {
    /// Cancel it, with this reason on everything it stops.
    Cancel(String),
    /// Stop driving it, leaving it as last committed (the daemon shuts
    /// down; the next start takes it up).
    Detach,
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
        reply: oneshot::Sender<Result<(), crate::DecideError>>,
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
    let starter = Starter {
        store,
        pipeline,
        options,
        reports,
        tasks: TaskTracker::new(),
    };
    let (lost, take_up) = recover(&run, options).await;
    let mut queue: VecDeque<Event> = lost.into();
    queue.push_back(Event::Tick);
    for mut found in take_up {
        let (step, attempt) = found.attempt();
        found.skip = store.log_written(&run.id, step, attempt).await?;
        let stop = starter.start(&run, step, attempt, Some(found));
        stops.insert((step, attempt), stop);
        options.usage.take(&run.id, &granted(&run, step, attempt));
    }
    // Seen before each decision, so a slot freed after it wakes this run.
    let mut freed = options.usage.freed.subscribe();
    let mut listening = true;
    // Controls that came while a commit waited for the store.
    let mut held: VecDeque<Control> = VecDeque::new();
    let mut replies: Vec<oneshot::Sender<Result<(), crate::DecideError>>> = Vec::new();
    // Exits reported, answered once committed.
    let mut exits: Vec<oneshot::Sender<()>> = Vec::new();
    // The run as last committed, kept up to date part by part.
    let mut before = run.clone();
    // An error leaves attempts behind that this loop no longer follows:
    // their share of the daemon-wide load is given back with it.
    let result: Result<Run, DriveError> = async {
        loop {
            while let Some(event) = queue.pop_front() {
                freed.borrow_and_update();
                let capacity = options
                    .usage
                    .capacity(options.max_running, &options.gpus, &run.id);
                let actions = advance(&mut run, pipeline, event, now(), capacity)?;
                if !commit(store, &before, &run, &mut control, &mut held).await? {
                    // Detached while the store was away: the run stays as
                    // last committed, for the next start to take up.
                    return Ok(before);
                }
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
                before.catch_up(&run);
                wake = None;
                for action in actions {
                    match action {
                        Action::Start { step, attempt } => {
                            let stop = starter.start(&run, step, attempt, None);
                            stops.insert((step, attempt), stop);
                            options.usage.take(&run.id, &granted(&run, step, attempt));
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
            for exit in exits.drain(..) {
                let _ = exit.send(());
            }
            if run.state.is_terminal() && stops.is_empty() {
                // Each attempt releases what is left of it once its exit
                // is committed: the run ends after that.
                starter.tasks.close();
                starter.tasks.wait().await;
                return Ok(run.clone());
            }
            let sleep = wake.map(|at| (at - now()).to_std().unwrap_or(Duration::ZERO));
            tokio::select! {
                report = inbox.recv() => match report {
                    Some(Report::Started(step, attempt)) => queue.push_back(Event::Started { step, attempt }),
                    Some(Report::Exited(step, attempt, outcome, committed)) => {
                        exits.extend(committed);
                        stops.remove(&(step, attempt));
                        options.usage.release(&run.id, &granted(&run, step, attempt));
                        queue.push_back(Event::Exited { step, attempt, outcome: *outcome });
                    }
                    None => queue.push_back(Event::Tick),
                },
                () = async { tokio::time::sleep(sleep.unwrap_or(Duration::MAX)).await }, if sleep.is_some() => {
                    queue.push_back(Event::Tick);
                }
                Ok(()) = freed.changed() => queue.push_back(Event::Tick),
                asked = next_control(&mut held, &mut control), if listening => match asked {
                    Some(Control::Cancel(reason)) => queue.push_back(Event::Cancel { reason }),
                    // Every decision so far is committed: let go of the run.
                    Some(Control::Detach) => return Ok(run.clone()),
                    Some(Control::Decide { step, approved, by, comment, reply }) => {
                        match run.steps.iter().position(|s| s.id == step) {
                            Some(index) if run.steps[index].state == StepState::Waiting => {
                                queue.push_back(Event::Decide { step: index, approved, by, comment });
                                replies.push(reply);
                            }
                            Some(index) => {
                                let state = run.steps[index].state;
                                let _ = reply.send(Err(crate::DecideError::NotWaiting { step, state }));
                            }
                            None => {
                                let _ = reply.send(Err(crate::DecideError::NoStep { run: run.id.clone(), step }));
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
                .usage
                .release(&run.id, &granted(&run, *step, *attempt));
        }
    }
    result
}

/// The next control: one held back during a commit first.
async fn next_control(
    held: &mut VecDeque<Control>,
    control: &mut mpsc::Receiver<Control>,
) -> Option<Control> {
    match held.pop_front() {
        Some(asked) => Some(asked),
        None => control.recv().await,
    }
}

/// Commits the engine's decision, trying again with backoff (100 ms
/// doubling to 5 s) for as long as the store fails, so that a run loop
/// outlives a database outage: every write of a run is an upsert, so a
/// commit whose answer was lost is written again harmlessly. Controls that
/// come meanwhile are held for the loop, except a `Detach`, which ends
/// the wait: false. Only a closed store (the daemon's end) is an error.
async fn commit(
    store: &Store,
    before: &Run,
    after: &Run,
    control: &mut mpsc::Receiver<Control>,
    held: &mut VecDeque<Control>,
) -> Result<bool, DriveError> {
    let mut delay = Duration::from_millis(100);
    let mut listening = true;
    loop {
        let began = std::time::Instant::now();
        let saved = store.save_run(before, after).await;
        let outcome = if saved.is_ok() { "ok" } else { "error" };
        crate::metrics::METRICS
            .commit
            .with_label_values(&[outcome])
            .observe(began.elapsed().as_secs_f64());
        let error = match saved {
            Ok(()) => return Ok(true),
            Err(e) if e.is_closed() => return Err(e.into()),
            Err(e) => e,
        };
        if error.is_unavailable() {
            tracing::warn!(run = %after.id, error = %error, retry_in = ?delay, "the store is away; the run waits for it");
        } else {
            tracing::error!(run = %after.id, error = %error, retry_in = ?delay, "cannot commit the run's state; trying again");
        }
        let wake = tokio::time::sleep(delay);
        tokio::pin!(wake);
        loop {
            tokio::select! {
                () = &mut wake => break,
                asked = control.recv(), if listening => match asked {
                    Some(Control::Detach) => return Ok(false),
                    Some(other) => held.push_back(other),
                    None => listening = false,
                },
            }
        }
        delay = (delay * 2).min(Duration::from_secs(5));
    }
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
