//! The typed pipeline: what a pipeline file means once it has been read and
//! validated. Every value a user wrote keeps its position, so that later
//! checks (and the engine's errors) can point at the line to fix.

use crate::diag::Pos;
use crate::units::{Duration, Size};
use serde::Serialize;
use weir_expr::{Expr, Template};

/// A value and where it was written.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Spanned<T> {
    /// The value.
    pub value: T,
    /// Where it was written.
    #[serde(skip)]
    pub pos: Pos,
}

impl<T> Spanned<T> {
    /// Wraps `value` written at `pos`.
    pub fn new(value: T, pos: Pos) -> Spanned<T> {
        Spanned { value, pos }
    }
}

/// A validated pipeline.
#[derive(Debug, Clone)]
pub struct Pipeline {
    /// `[a-z0-9][a-z0-9-]{0,62}`, unique among loaded pipelines.
    pub name: Spanned<String>,
    /// Free text.
    pub description: Option<String>,
    /// What starts runs.
    pub on: Triggers,
    /// How many runs may be active at once, and what happens to others.
    pub concurrency: Concurrency,
    /// Declared parameters, in file order.
    pub params: Vec<Param>,
    /// Environment for every step, in file order.
    pub env: Vec<EnvVar>,
    /// Steps in file order. Values from `defaults` are already applied.
    pub steps: Vec<Step>,
    /// The steps' graph, as validation built it.
    pub dag: crate::Dag,
    /// What the pipeline's expressions read, as validation found it.
    pub reads: Reads,
    /// The people-written part of the card of every version its register
    /// steps make.
    pub model_card: Option<ModelCard>,
    /// Where its runs and registrations are mirrored in MLflow, over the
    /// daemon's `mlflow` setting.
    pub mlflow: Option<Mlflow>,
}

/// The `mlflow:` block.
#[derive(Debug, Clone, PartialEq)]
pub struct Mlflow {
    /// The MLflow server (`http://…` or `https://…`); the daemon's when absent.
    pub tracking_uri: Option<Spanned<String>>,
    /// The experiment runs are logged to; the daemon's, else the pipeline's name.
    pub experiment: Option<Spanned<String>>,
}

/// The `model_card:` block: free text for people, each field a template
/// rendered against the run when a version is registered.
#[derive(Debug, Clone)]
pub struct ModelCard {
    /// `intended_use`, `users`, … with their templates, in the format's order.
    pub fields: Vec<(Spanned<String>, Spanned<Template>)>,
}

/// Which of the run's inputs a pipeline's expressions read at all, so a
/// run of one that reads none of them is spared gathering them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reads {
    /// `models.<name>.<alias>`: the registry, read when a run is created.
    pub models: bool,
    /// `event`: the payload that started the run.
    pub event: bool,
}

/// The `on:` block.
#[derive(Debug, Clone)]
pub struct Triggers {
    /// Whether the CLI and API may start runs (default true).
    pub manual: bool,
    /// Cron schedules.
    pub schedule: Vec<Schedule>,
    /// Signed webhook deliveries.
    pub webhook: Option<Webhook>,
    /// Rules over drift events.
    pub drift: Vec<DriftRule>,
}

/// One cron schedule.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// The cron expression, 5 fields (or 6 with seconds first), as written.
    pub cron: Spanned<String>,
    /// The same, parsed once by validation.
    pub parsed: croner::Cron,
    /// IANA time zone the expression is read in (default UTC).
    pub timezone: chrono_tz::Tz,
    /// What to do with slots missed while weir was down.
    pub catchup: Catchup,
}

/// Missed schedule slots after downtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Catchup {
    /// Skip them (the default).
    None,
    /// Run the most recent one.
    Latest,
    /// Run every one (capped by the daemon).
    All,
}

/// The `on.webhook` block.
#[derive(Debug, Clone)]
pub struct Webhook {
    /// Name of the daemon's environment variable holding the HMAC key.
    pub secret_env: Spanned<String>,
    /// Refuse deliveries that carry no delivery id (default true): the id
    /// is what makes a replay start nothing.
    pub require_delivery_id: bool,
    /// A delivery whose signed body equals one accepted within this long
    /// starts nothing, whatever its id (default 10 minutes; zero: off).
    pub dedupe: std::time::Duration,
}

/// A rule over drift events for this pipeline.
#[derive(Debug, Clone)]
pub struct DriftRule {
    /// The drift metric (`psi`, `kl`, or any measured metric name).
    pub metric: Spanned<String>,
    /// A run starts when the value is above this.
    pub above: f64,
    /// No second drift-triggered run inside this window.
    pub cooldown: Option<Duration>,
}

/// The `concurrency` block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Concurrency {
    /// Runs of this pipeline at once; `None` is unbounded.
    pub max_runs: Option<u32>,
    /// What a new run does when `max_runs` are active.
    pub on_conflict: OnConflict,
}

/// What a new run does when the pipeline is at `max_runs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnConflict {
    /// Wait for a slot.
    Queue,
    /// Do not start.
    Skip,
    /// Cancel the running ones and start.
    CancelRunning,
}

/// A declared parameter.
#[derive(Debug, Clone)]
pub struct Param {
    /// `[A-Za-z_][A-Za-z0-9_]*`; the step sees it as `WEIR_PARAM_<NAME>`.
    pub name: Spanned<String>,
    /// The value when a trigger gives none; `None` makes it required.
    pub default: Option<String>,
    /// Free text.
    pub description: Option<String>,
}

/// An environment variable whose value may hold `${{ }}` templates.
#[derive(Debug, Clone)]
pub struct EnvVar {
    /// The variable's name.
    pub name: Spanned<String>,
    /// The value as a template.
    pub value: Template,
}

/// A step: its id, its place in the DAG, and what it does.
#[derive(Debug, Clone)]
pub struct Step {
    /// The key in `steps:`.
    pub id: Spanned<String>,
    /// Free text.
    pub description: Option<String>,
    /// Steps that must finish first, in file order.
    pub needs: Vec<Spanned<String>>,
    /// `if:`: when false the step is skipped.
    pub condition: Option<Spanned<Expr>>,
    /// Axes of the fan-out, in file order; empty when there is none.
    pub matrix: Vec<MatrixAxis>,
    /// How many matrix instances may run at once; `None` is unbounded.
    pub max_parallel: Option<u32>,
    /// What the step does.
    pub kind: StepKind,
}

/// One axis of a step's matrix.
#[derive(Debug, Clone)]
pub struct MatrixAxis {
    /// The key, read as `matrix.<key>`.
    pub key: Spanned<String>,
    /// The values, as text.
    pub values: Vec<String>,
}

/// The four kinds of step.
#[derive(Debug, Clone)]
pub enum StepKind {
    /// Runs a container (or a process).
    Container(Box<Container>),
    /// A policy gate: every expression must hold.
    Gate(Vec<Spanned<Expr>>),
    /// Waits for `weir approve`.
    Approval(Approval),
    /// Registers a model version.
    Register(Register),
}

impl StepKind {
    /// The kind's name as written in the file.
    pub fn name(&self) -> &'static str {
        match self {
            StepKind::Container(c) => match c.action {
                Invocation::Run(_) => "run",
                Invocation::Command(_) => "command",
            },
            StepKind::Gate(_) => "gate",
            StepKind::Approval(_) => "approval",
            StepKind::Register(_) => "register",
        }
    }
}

/// A container step, with `defaults` applied.
#[derive(Debug, Clone)]
pub struct Container {
    /// `run` (a shell line) or `command` (argv).
    pub action: Invocation,
    /// The image; `None` only for the process executor.
    pub image: Option<Spanned<Template>>,
    /// Docker or a child process.
    pub executor: Executor,
    /// When to pull the image.
    pub pull: Pull,
    /// GPUs, CPUs, memory.
    pub resources: Resources,
    /// Environment for this step, on top of the pipeline's.
    pub env: Vec<EnvVar>,
    /// Names of the daemon's environment variables handed to the step, masked in logs.
    pub secrets: Vec<Spanned<String>>,
    /// Files under `$WEIR_WORK` hashed for lineage.
    pub artifacts: Vec<Spanned<String>>,
    /// What happens after a failed attempt.
    pub retry: Retry,
    /// Longest an attempt may run.
    pub timeout: Option<Duration>,
}

/// What a container step runs.
#[derive(Debug, Clone)]
pub enum Invocation {
    /// `sh -c` with this line.
    Run(Spanned<Template>),
    /// This argv, no shell.
    Command(Vec<Spanned<Template>>),
}

/// Where a container step runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Executor {
    /// A Docker container (the default).
    Docker,
    /// A child process on the host.
    Process,
}

impl Executor {
    /// The name a step gives it (`executor: docker`), which the daemon
    /// finds the executor by.
    pub fn name(self) -> &'static str {
        match self {
            Executor::Docker => "docker",
            Executor::Process => "process",
        }
    }
}

/// When to pull a step's image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Pull {
    /// Only when it is not on the host (the default).
    IfNotPresent,
    /// Before every attempt.
    Always,
    /// Never; a missing image fails the step.
    Never,
}

/// A step's resource requests.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Resources {
    /// GPUs to grant.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gpus: Option<Gpus>,
    /// CPU limit, in cores.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpus: Option<f64>,
    /// Memory limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<Size>,
}

/// A GPU request; serializes as it is written: `2`, `"all"` or `["0", "3"]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gpus {
    /// This many devices, any of them.
    Count(u32),
    /// Every device of the host.
    All,
    /// These devices (indexes or UUIDs).
    Ids(Vec<String>),
}

impl Serialize for Gpus {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Gpus::Count(n) => s.serialize_u32(*n),
            Gpus::All => s.serialize_str("all"),
            Gpus::Ids(ids) => ids.serialize(s),
        }
    }
}

/// The retry policy of a container step.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Retry {
    /// Attempts after the first; 0 means none.
    pub limit: u32,
    /// Wait before the first retry.
    pub delay: Duration,
    /// How the wait grows.
    pub backoff: Backoff,
    /// Upper bound of the wait.
    pub max_delay: Option<Duration>,
}

impl Default for Retry {
    fn default() -> Retry {
        Retry {
            limit: 0,
            delay: Duration::from_secs(10),
            backoff: Backoff::Exponential,
            max_delay: None,
        }
    }
}

/// How retry delays grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Backoff {
    /// The same delay every time.
    Constant,
    /// The delay doubles each time.
    Exponential,
}

/// An approval step.
#[derive(Debug, Clone, PartialEq)]
pub struct Approval {
    /// How long to wait for a decision before the step fails.
    pub timeout: Option<Duration>,
}

/// A register step.
#[derive(Debug, Clone)]
pub struct Register {
    /// The model's name.
    pub model: Spanned<String>,
    /// The artifact's path under `$WEIR_WORK`.
    pub artifact: Spanned<String>,
    /// The step whose metrics are stored with the version.
    pub metrics_from: Option<Spanned<String>>,
    /// An alias moved to the new version.
    pub alias: Option<Spanned<String>>,
}

impl Pipeline {
    /// The step with this id.
    pub fn step(&self, id: &str) -> Option<&Step> {
        self.steps.iter().find(|s| s.id.value == id)
    }

    /// The param with this name.
    pub fn param(&self, name: &str) -> Option<&Param> {
        self.params.iter().find(|p| p.name.value == name)
    }
}
