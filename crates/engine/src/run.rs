//! The state of a run: its step instances (one per matrix combination) and
//! their attempts, as the store keeps them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json};
use std::fmt;
use std::str::FromStr;
use weir_model::Pipeline;
use weir_model::plan::{instance_id, instances, resolve_params};

/// A point in time; the engine never reads a clock, callers pass it in.
pub type Time = DateTime<Utc>;

macro_rules! states {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $text:literal,)* }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "kebab-case")]
        pub enum $name {
            $($(#[$vdoc])* $variant,)*
        }

        impl $name {
            /// The name stored and shown.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)*
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownState;
            fn from_str(text: &str) -> Result<Self, UnknownState> {
                match text {
                    $($text => Ok($name::$variant),)*
                    other => Err(UnknownState {
                        kind: stringify!($name),
                        text: other.to_owned(),
                    }),
                }
            }
        }
    };
}

/// A state name weir does not write (a database edited by hand, or by a
/// newer weir).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} '{text}'")]
pub struct UnknownState {
    /// `RunState`, `StepState`, …
    pub kind: &'static str,
    /// The name read.
    pub text: String,
}

states! {
    /// Where a run is: `queued → running → succeeded | failed | cancelled`.
    RunState {
        /// Created, no step started yet.
        Queued = "queued",
        /// At least one step has been decided on.
        Running = "running",
        /// Every step succeeded or was skipped.
        Succeeded = "succeeded",
        /// A step failed (or the run timed out).
        Failed = "failed",
        /// Cancelled by a user or by the concurrency policy.
        Cancelled = "cancelled",
    }
}

states! {
    /// Where a step instance is.
    StepState {
        /// Waiting for its needs, a free slot, or its retry delay.
        Pending = "pending",
        /// An attempt has been started and has not finished.
        Running = "running",
        /// An approval waiting for a decision.
        Waiting = "waiting",
        /// Done, successfully.
        Succeeded = "succeeded",
        /// Done, unsuccessfully, with no retry left.
        Failed = "failed",
        /// Stopped by a cancellation.
        Cancelled = "cancelled",
        /// Not run: its `if:` was false or an upstream step did not succeed.
        Skipped = "skipped",
    }
}

states! {
    /// Where one attempt of a step is.
    AttemptState {
        /// Decided and committed; the executor has not confirmed the start.
        Pending = "pending",
        /// The executor started it.
        Running = "running",
        /// Exited 0 with readable outputs.
        Succeeded = "succeeded",
        /// Exited non-zero, timed out, or its outputs were malformed.
        Failed = "failed",
        /// Stopped by a cancellation.
        Cancelled = "cancelled",
        /// weir stopped while it ran and found no trace of it: weir's
        /// failure, not the step's, so it does not count as a retry.
        Lost = "lost",
    }
}

impl RunState {
    /// Whether the run is over.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            RunState::Succeeded | RunState::Failed | RunState::Cancelled
        )
    }
}

impl StepState {
    /// Whether the step is over.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            StepState::Succeeded | StepState::Failed | StepState::Cancelled | StepState::Skipped
        )
    }
}

impl AttemptState {
    /// Whether the attempt is over.
    pub fn is_terminal(self) -> bool {
        !matches!(self, AttemptState::Pending | AttemptState::Running)
    }
}

/// One run of a pipeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Run {
    /// Unique id, chosen by the caller.
    pub id: String,
    /// The pipeline's name.
    pub pipeline: String,
    /// What started it.
    pub cause: crate::Cause,
    /// Every param with its value, in the pipeline's order (a JSON object).
    #[serde(with = "pairs")]
    pub params: Vec<(String, String)>,
    /// The webhook or drift payload (`event` in expressions), or null.
    pub event: Json,
    /// The registry as expressions see it (`models.<name>.<alias>`).
    pub models: Json,
    /// Where the run is.
    pub state: RunState,
    /// Why it ended, when it did not succeed.
    pub reason: Option<String>,
    /// When it was created.
    pub created_at: Time,
    /// When its first step was decided on.
    pub started_at: Option<Time>,
    /// When it reached a terminal state.
    pub finished_at: Option<Time>,
    /// When the whole run times out, if it has a limit.
    pub deadline: Option<Time>,
    /// Set once a cancellation (or the run's timeout) was decided.
    pub stopping: Option<Stopping>,
    /// One entry per step instance, in pipeline order.
    pub steps: Vec<StepRun>,
    /// The git commit of the pipelines folder when the run was created, if
    /// it is a git repository.
    #[serde(default)]
    pub source_commit: Option<String>,
}

/// Why a run is being stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stopping {
    /// Shown as the reason of everything it stops.
    pub reason: String,
    /// Whether the run ends `failed` (its timeout) rather than `cancelled`.
    pub fails: bool,
}

/// One instance of a step (a step without a matrix has one).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRun {
    /// The instance id: `train`, or `train[lr=0.1]`.
    pub id: String,
    /// Index of its step in the pipeline.
    pub step: usize,
    /// Its matrix values.
    pub matrix: Map<String, Json>,
    /// Where it is.
    pub state: StepState,
    /// Why it failed, was skipped or cancelled; or a note while pending.
    pub reason: Option<String>,
    /// Attempts so far, numbered from 1.
    pub attempts: Vec<Attempt>,
    /// A retry does not start before this.
    pub not_before: Option<Time>,
    /// An approval fails at this time.
    pub waiting_until: Option<Time>,
    /// For gates: each expression with the values it read and its verdict.
    pub evidence: Vec<Evidence>,
    /// When it left `pending` the first time.
    pub started_at: Option<Time>,
    /// When it reached a terminal state.
    pub finished_at: Option<Time>,
}

/// One attempt at running a step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    /// 1 for the first attempt; the step sees it as `WEIR_ATTEMPT`.
    pub number: u32,
    /// Where it is.
    pub state: AttemptState,
    /// When it was decided.
    pub created_at: Time,
    /// When the executor started it.
    pub started_at: Option<Time>,
    /// When it reached a terminal state.
    pub finished_at: Option<Time>,
    /// When it times out, from its start and the step's `timeout`.
    pub deadline: Option<Time>,
    /// A stop was asked of the executor, and why.
    pub stopping: Option<crate::StopReason>,
    /// The process's exit code.
    pub exit_code: Option<i32>,
    /// `metrics.json`.
    pub metrics: Map<String, Json>,
    /// `outputs.json` (for a register step: the new `version`).
    pub outputs: Map<String, Json>,
    /// The image it ran, resolved to its id, for lineage.
    pub image: Option<String>,
    /// The SHA-256 of each artifact the step declares, by path.
    #[serde(default)]
    pub artifacts: std::collections::BTreeMap<String, String>,
    /// The GPU device ids granted to it, released when it ends.
    #[serde(default)]
    pub gpus: Vec<String>,
    /// Why it failed, when it did.
    pub reason: Option<String>,
}

/// One gate expression's evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    /// The expression as written.
    pub expression: String,
    /// Every path it read, with the value found (`None`: absent).
    pub reads: Vec<Read>,
    /// Whether it held.
    pub holds: bool,
    /// The values compared: `0.81 >= 0.84 is false`.
    pub explanation: String,
}

/// A value an expression read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Read {
    /// The path, as CEL.
    pub path: String,
    /// The value, or `None` when absent.
    pub value: Option<Json>,
}

/// Params a run was given that the pipeline does not take, or params it
/// needs that were not given: one message per param.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.join("; "))]
pub struct ParamsError(pub Vec<String>);

/// A new run of `pipeline`, queued, with one step instance per matrix
/// combination. Errors name params that are unknown or missing.
pub fn new_run(
    pipeline: &Pipeline,
    id: &str,
    cause: crate::Cause,
    given: &[(String, String)],
    event: Json,
    models: Json,
    now: Time,
) -> Result<Run, ParamsError> {
    let params = resolve_params(pipeline, given)
        .map_err(ParamsError)?
        .into_iter()
        .map(|p| (p.name, p.value))
        .collect();
    // Every model the pipeline registers is present, without aliases when
    // it has none yet, so `has(models.<name>.<alias>)` reads as false
    // rather than failing on the model's absence.
    let mut models = models;
    if let Json::Object(map) = &mut models {
        for step in &pipeline.steps {
            if let weir_model::pipeline::StepKind::Register(register) = &step.kind {
                map.entry(register.model.value.clone())
                    .or_insert_with(|| Json::Object(Map::new()));
            }
        }
    }
    let mut steps = Vec::new();
    for (index, step) in pipeline.steps.iter().enumerate() {
        for matrix in instances(step) {
            steps.push(StepRun {
                id: instance_id(&step.id.value, &matrix),
                step: index,
                matrix,
                state: StepState::Pending,
                reason: None,
                attempts: Vec::new(),
                not_before: None,
                waiting_until: None,
                evidence: Vec::new(),
                started_at: None,
                finished_at: None,
            });
        }
    }
    Ok(Run {
        id: id.to_owned(),
        pipeline: pipeline.name.value.clone(),
        cause,
        params,
        event,
        models,
        state: RunState::Queued,
        reason: None,
        created_at: now,
        started_at: None,
        finished_at: None,
        deadline: None,
        stopping: None,
        steps,
        source_commit: None,
    })
}

impl Run {
    /// Whether `self` and `other` agree on everything but their steps: what
    /// a run's own row holds.
    pub fn same_apart_from_steps(&self, other: &Run) -> bool {
        // Spelled out so that a new field cannot be left out of the check.
        let Run {
            id,
            pipeline,
            cause,
            params,
            event,
            models,
            state,
            reason,
            created_at,
            started_at,
            finished_at,
            deadline,
            stopping,
            steps: _,
            source_commit,
        } = self;
        *id == other.id
            && *pipeline == other.pipeline
            && *cause == other.cause
            && *params == other.params
            && *event == other.event
            && *models == other.models
            && *state == other.state
            && *reason == other.reason
            && *created_at == other.created_at
            && *started_at == other.started_at
            && *finished_at == other.finished_at
            && *deadline == other.deadline
            && *stopping == other.stopping
            && *source_commit == other.source_commit
    }

    /// Brings `self`, an earlier state of `newer`, up to it, copying only
    /// the steps that differ: a run's driver keeps the state it last
    /// committed this way, without cloning every step at every decision.
    /// The run's own fields change a few times in its life (its start, its
    /// end, a cancellation); then the whole run is copied.
    pub fn catch_up(&mut self, newer: &Run) {
        if !self.same_apart_from_steps(newer) || self.steps.len() != newer.steps.len() {
            self.clone_from(newer);
            return;
        }
        for (mine, theirs) in self.steps.iter_mut().zip(&newer.steps) {
            if mine != theirs {
                mine.clone_from(theirs);
            }
        }
    }

    /// Ends a run that was never started, `cancelled` with `reason` (its
    /// pipeline's `concurrency` skipped it).
    pub fn skip(&mut self, reason: impl Into<String>, now: Time) {
        let reason = reason.into();
        for step in self.steps.iter_mut().filter(|s| !s.state.is_terminal()) {
            step.state = StepState::Cancelled;
            step.reason = Some(reason.clone());
            step.finished_at = Some(now);
        }
        self.state = RunState::Cancelled;
        self.reason = Some(reason);
        self.finished_at = Some(now);
    }

    /// Ends a run that cannot be driven any more (its stored pipeline no
    /// longer validates), `failed` with `reason`: its unfinished attempts
    /// are lost, its unfinished steps failed, nothing is left `running`.
    pub fn abandon(&mut self, reason: impl Into<String>, now: Time) {
        let reason = reason.into();
        for step in self.steps.iter_mut().filter(|s| !s.state.is_terminal()) {
            for attempt in step.attempts.iter_mut().filter(|a| !a.state.is_terminal()) {
                attempt.state = AttemptState::Lost;
                attempt.reason = Some(reason.clone());
                attempt.finished_at = Some(now);
            }
            step.state = StepState::Failed;
            step.reason = Some(reason.clone());
            step.finished_at = Some(now);
        }
        self.state = RunState::Failed;
        self.reason = Some(reason);
        self.finished_at = Some(now);
    }

    /// The run this one retries, when it is a retry.
    pub fn retry_of(&self) -> Option<&str> {
        self.cause.retry_of()
    }

    /// The instance with this id.
    pub fn step(&self, id: &str) -> Option<&StepRun> {
        self.steps.iter().find(|s| s.id == id)
    }
}

impl StepRun {
    /// The latest attempt.
    pub fn last_attempt(&self) -> Option<&Attempt> {
        self.attempts.last()
    }

    /// Attempts that failed on their own account (lost ones excluded).
    pub fn failures(&self) -> usize {
        self.attempts
            .iter()
            .filter(|a| a.state == AttemptState::Failed)
            .count()
    }

    /// Attempts lost to a crash of weir.
    pub fn losses(&self) -> usize {
        self.attempts
            .iter()
            .filter(|a| a.state == AttemptState::Lost)
            .count()
    }
}

/// Name-value pairs as a JSON object, keeping their order.
mod pairs {
    use serde::de::{MapAccess, Visitor};
    use serde::ser::SerializeMap;
    use serde::{Deserializer, Serializer};
    use std::fmt;

    pub(super) fn serialize<S: Serializer>(
        pairs: &[(String, String)],
        s: S,
    ) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(pairs.len()))?;
        for (name, value) in pairs {
            map.serialize_entry(name, value)?;
        }
        map.end()
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Vec<(String, String)>, D::Error> {
        struct Pairs;
        impl<'de> Visitor<'de> for Pairs {
            type Value = Vec<(String, String)>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object of strings")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut pairs = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    pairs.push(entry);
                }
                Ok(pairs)
            }
        }
        d.deserialize_map(Pairs)
    }
}
