//! Runs: starting, listing, reading, cancelling and retrying them, their
//! steps, attempts, gate evidence and logs.

use crate::Object;
use chrono::{DateTime, Utc};
use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt;
use utoipa::{IntoParams, ToSchema};

macro_rules! states {
    ($(#[$doc:meta])* $name:ident { $($variant:ident = $text:literal,)* }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
        #[serde(rename_all = "kebab-case")]
        pub enum $name {
            $(#[doc = $text] $variant,)*
        }

        impl $name {
            /// As written on the wire.
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
    };
}

states! {
    /// Where a run is: `queued → running → succeeded | failed | cancelled`.
    RunState {
        Queued = "queued",
        Running = "running",
        Succeeded = "succeeded",
        Failed = "failed",
        Cancelled = "cancelled",
    }
}

states! {
    /// Where a step instance is.
    StepState {
        Pending = "pending",
        Running = "running",
        Waiting = "waiting",
        Succeeded = "succeeded",
        Failed = "failed",
        Cancelled = "cancelled",
        Skipped = "skipped",
    }
}

states! {
    /// Where one attempt of a step is; `lost` is weir's failure, not the
    /// step's, and does not count as a retry.
    AttemptState {
        Pending = "pending",
        Running = "running",
        Succeeded = "succeeded",
        Failed = "failed",
        Cancelled = "cancelled",
        Lost = "lost",
    }
}

states! {
    /// Why an attempt is being stopped.
    StopReason {
        Timeout = "timeout",
        Cancel = "cancel",
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
    /// Whether the step instance is over.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            StepState::Succeeded | StepState::Failed | StepState::Cancelled | StepState::Skipped
        )
    }
}

/// `POST /runs`: run a pipeline by hand.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewRun {
    /// The pipeline's name.
    pub pipeline: String,
    /// Values of its `params`; the others take their defaults.
    #[serde(default)]
    pub params: IndexMap<String, String>,
}

/// `POST /runs/{id}/retry`: a new run reusing what succeeded.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Retry {
    /// Run this step and what needs it again; by default the steps that
    /// did not succeed.
    #[serde(default)]
    pub from: Option<String>,
}

/// `POST /runs/{id}/steps/{step}/approval`: decide an approval step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Approval {
    /// Approve (the run goes on) or reject (the step fails).
    pub approved: bool,
    /// Why; kept with the decision and in the audit log.
    #[serde(default)]
    pub comment: Option<String>,
}

/// `?limit=N` of the listings (newest first).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Listing {
    /// How many, 1 to 1000 (default 50).
    pub limit: Option<i64>,
}

/// `GET /runs`'s query: a page of runs, newest first, filtered. The next
/// page: the same query with `after` set to the last run's id.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct RunListing {
    /// How many, 1 to 1000 (default 50).
    pub limit: Option<i64>,
    /// Only runs created before this run (its id): the next page.
    pub after: Option<String>,
    /// Only this pipeline's runs.
    pub pipeline: Option<String>,
    /// Only runs in this state.
    pub state: Option<RunState>,
    /// Only runs of this cause (`manual`, `webhook`, `schedule`, `backfill`,
    /// `drift`, `retry`, `replay`).
    pub trigger: Option<String>,
}

/// What started a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Cause {
    /// Someone asked: the CLI, the API (the token's name), `weir run`.
    Manual {
        /// Who.
        actor: String,
    },
    /// A signed webhook delivery.
    Webhook {
        /// The delivery id its sender gave, when it gave one.
        delivery: Option<String>,
    },
    /// A slot of one of the pipeline's schedules.
    Schedule {
        /// The slot.
        slot: DateTime<Utc>,
    },
    /// A slot of a backfill.
    Backfill {
        /// The slot.
        slot: DateTime<Utc>,
    },
    /// A drift report past a rule's threshold.
    Drift {
        /// The metric reported.
        metric: String,
        /// Its value.
        value: f64,
    },
    /// A retry of a finished run.
    Retry {
        /// The run retried.
        of: String,
        /// The step it ran again from, when one was named.
        from: Option<String>,
        /// Who asked.
        actor: String,
    },
    /// A replay of the run that produced a model version.
    Replay {
        /// The model.
        model: String,
        /// Its version.
        version: i64,
        /// The run that registered it.
        of: String,
        /// Who asked.
        actor: String,
        /// The image id each container step instance runs, by instance id.
        images: std::collections::BTreeMap<String, String>,
    },
}

/// A run being stopped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Stopping {
    /// Why.
    pub reason: String,
    /// Whether the run fails (a timeout) rather than being cancelled.
    pub fails: bool,
}

/// One run of a pipeline, with every step instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Run {
    /// The run's id.
    pub id: String,
    /// Its pipeline.
    pub pipeline: String,
    /// What started it.
    pub cause: Cause,
    /// The params it runs with, in the pipeline's order.
    pub params: IndexMap<String, String>,
    /// The event that started it (a webhook's payload, a drift report), or null.
    pub event: Value,
    /// The registry as it was when the run started, as `models.*` reads it.
    pub models: Value,
    /// Where it is.
    pub state: RunState,
    /// Why it ended, when it did not succeed.
    pub reason: Option<String>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When its first step was decided on.
    pub started_at: Option<DateTime<Utc>>,
    /// When it ended.
    pub finished_at: Option<DateTime<Utc>>,
    /// When it times out.
    pub deadline: Option<DateTime<Utc>>,
    /// Set while it is being stopped.
    pub stopping: Option<Stopping>,
    /// Its step instances, one per matrix combination.
    pub steps: Vec<StepRun>,
    /// The commit of the pipeline's folder when the run started.
    pub source_commit: Option<String>,
    /// The kind of its cause: `manual`, `webhook`, `schedule`, `backfill`,
    /// `drift`, `retry`.
    pub trigger: String,
    /// The run it retries.
    pub retry_of: Option<String>,
}

impl Run {
    /// The step instance `id` (`train`, `train[lr=0.1]`).
    pub fn step(&self, id: &str) -> Option<&StepRun> {
        self.steps.iter().find(|s| s.id == id)
    }
}

/// One instance of a step (one matrix combination).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StepRun {
    /// The instance id: the step's name, with its matrix values.
    pub id: String,
    /// The step's index in the pipeline.
    pub step: usize,
    /// Its matrix combination.
    #[schema(value_type = Object)]
    pub matrix: Object,
    /// Where it is.
    pub state: StepState,
    /// Why it ended as it did, or what it waits for.
    pub reason: Option<String>,
    /// Its attempts, oldest first.
    pub attempts: Vec<Attempt>,
    /// Not started before this time (a retry's delay).
    pub not_before: Option<DateTime<Utc>>,
    /// An approval's deadline.
    pub waiting_until: Option<DateTime<Utc>>,
    /// A gate's evidence: each expression with what it read and its verdict.
    pub evidence: Vec<Evidence>,
    /// When it started.
    pub started_at: Option<DateTime<Utc>>,
    /// When it ended.
    pub finished_at: Option<DateTime<Utc>>,
}

/// One attempt of a step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Attempt {
    /// 1, 2, …
    pub number: u32,
    /// Where it is.
    pub state: AttemptState,
    /// When it was decided.
    pub created_at: DateTime<Utc>,
    /// When the executor started it.
    pub started_at: Option<DateTime<Utc>>,
    /// When it ended.
    pub finished_at: Option<DateTime<Utc>>,
    /// When it times out.
    pub deadline: Option<DateTime<Utc>>,
    /// Set while it is being stopped.
    pub stopping: Option<StopReason>,
    /// Its exit status.
    pub exit_code: Option<i32>,
    /// What it wrote to `$WEIR_OUT/metrics.json`.
    #[schema(value_type = Object)]
    pub metrics: Object,
    /// What it wrote to `$WEIR_OUT/outputs.json`.
    #[schema(value_type = Object)]
    pub outputs: Object,
    /// The image it ran, by id, for container steps.
    pub image: Option<String>,
    /// Its declared artifacts: path to SHA-256.
    #[serde(default)]
    pub artifacts: BTreeMap<String, String>,
    /// The GPUs it was granted.
    #[serde(default)]
    pub gpus: Vec<String>,
    /// Why it ended as it did.
    pub reason: Option<String>,
}

/// One gate expression, what it read and its verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Evidence {
    /// The expression, as written.
    pub expression: String,
    /// Each value it read, by path.
    pub reads: Vec<Read>,
    /// Its verdict.
    pub holds: bool,
    /// The verdict for people, with the values.
    pub explanation: String,
}

/// A value an expression read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Read {
    /// Its path: `steps.train.metrics.accuracy`.
    pub path: String,
    /// Its value, null where there was none.
    pub value: Option<Value>,
}

/// A run in a listing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RunSummary {
    /// The run's id.
    pub id: String,
    /// Its pipeline.
    pub pipeline: String,
    /// The kind of what started it.
    pub trigger: String,
    /// Where it is.
    pub state: RunState,
    /// Why it ended, when it did not succeed.
    pub reason: Option<String>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it ended.
    pub finished_at: Option<DateTime<Utc>>,
}

/// A request answered by a run that already exists (the same delivery
/// sent again): nothing new was started.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Replayed {
    /// The run it started the first time (null while that first request
    /// is still being handled).
    pub run: Option<String>,
    /// Always true.
    pub replay: bool,
}

/// `POST /runs/{id}/cancel`'s answer: the run is being stopped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Cancelling {
    /// The run.
    pub id: String,
    /// Always true.
    pub cancelling: bool,
}

/// `?attempt=N&offset=BYTES` of a step's log.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LogQuery {
    /// The attempt; its latest by default.
    pub attempt: Option<u32>,
    /// The first byte to send (the `next` of the previous chunk).
    #[serde(default)]
    pub offset: u64,
}

/// A piece of a step's log: ask again from `next` until `done`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LogChunk {
    /// The step instance.
    pub step: String,
    /// The attempt (0 when none started yet).
    pub attempt: u32,
    /// The step's state.
    pub state: StepState,
    /// The log from `offset`, as text.
    pub data: String,
    /// The offset to ask from next.
    pub next: u64,
    /// Whether this attempt's log is complete.
    pub done: bool,
}
