//! The seam between the daemon and whatever runs a step: the [`Executor`]
//! trait and the types it speaks (a [`Launch`] in, an [`Exit`] out, the
//! [`AttemptIo`] channels on the way, [`Found`] for recovery).
//!
//! These types are this crate's own: an executor knows nothing of
//! pipelines or runs beyond what a launch says, so a new executor is one
//! file here and one registration line in the daemon.

use futures_util::future::BoxFuture;
use serde_json::{Map, Value as Json};
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};

/// A flat JSON object, as `metrics.json` and `outputs.json` hold.
pub type Object = Map<String, Json>;

/// Which attempt a launch is: what recovery matches a found container or
/// process group against.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AttemptKey {
    /// The run's id.
    pub run: String,
    /// Index of the step instance in its run.
    pub step: usize,
    /// The attempt's number, from 1.
    pub attempt: u32,
}

/// When to pull a launch's image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Pull {
    /// Only when it is not on the host.
    #[default]
    IfNotPresent,
    /// Before every attempt.
    Always,
    /// Never; a missing image fails the attempt.
    Never,
}

/// One attempt to run, with everything an executor needs (DESIGN.md §2).
#[derive(Debug, Clone)]
pub struct Launch {
    /// Which attempt this is.
    pub key: AttemptKey,
    /// The pipeline's name.
    pub pipeline: String,
    /// The step instance's id (`train[lr=0.1]`).
    pub step: String,
    /// The run's params.
    pub params: Vec<(String, String)>,
    /// The argv to execute (`["sh", "-c", line]` for a shell line).
    pub argv: Vec<String>,
    /// The image, for executors that run one.
    pub image: Option<String>,
    /// When to pull it.
    pub pull: Pull,
    /// The step's environment, rendered, in file order.
    pub env: Vec<(String, String)>,
    /// Secret names with their values: handed over, masked in logs.
    pub secrets: Vec<(String, String)>,
    /// GPU device ids granted to the attempt.
    pub gpus: Vec<String>,
    /// CPU limit, in cores.
    pub cpus: Option<f64>,
    /// Memory limit, in bytes.
    pub memory: Option<u64>,
    /// The run's workspace, shared by its steps.
    pub work: PathBuf,
    /// This attempt's output folder.
    pub out: PathBuf,
    /// How long a stopped step may take to exit after SIGTERM.
    pub grace: Duration,
}

/// The channels of one attempt: its output goes to `logs` as it comes
/// (secrets masked), `started` is signalled once it exists, and a note on
/// `stop` asks it to stop (SIGTERM, then SIGKILL after the grace period).
#[derive(Debug)]
pub struct AttemptIo {
    /// Output chunks, in order.
    pub logs: mpsc::Sender<Vec<u8>>,
    /// `Some(note)` once the attempt must stop; the note becomes its error.
    pub stop: watch::Receiver<Option<String>>,
    /// Signalled when the process or container exists.
    pub started: oneshot::Sender<()>,
}

/// How an attempt ended.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Exit {
    /// The exit code, when the program exited.
    pub exit_code: Option<i32>,
    /// `metrics.json`.
    pub metrics: Object,
    /// `outputs.json`.
    pub outputs: Object,
    /// The image it ran, resolved to its id (`sha256:…`).
    pub image: Option<String>,
    /// A failure that is not the exit code: malformed outputs, a step that
    /// could not start, a stop. Set means failed, whatever the exit code.
    pub error: Option<String>,
}

impl Exit {
    /// An attempt that failed for `error`, with nothing else known.
    pub fn failed(error: impl Into<String>) -> Exit {
        Exit {
            error: Some(error.into()),
            ..Exit::default()
        }
    }
}

/// An attempt a previous process left behind, as an executor finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// Which attempt it is.
    pub key: AttemptKey,
    /// How the executor names it (a container's name, a process group).
    pub handle: String,
    /// Whether it still runs.
    pub running: bool,
    /// Whether [`Executor::reattach`] can take it up; otherwise it can only
    /// be [discarded](Executor::discard) and the attempt counts as lost.
    pub resumable: bool,
}

/// Why an executor could not do what was asked of it as a whole (one
/// attempt's failure is an [`Exit`] instead).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The engine or service behind the executor does not answer.
    #[error("cannot reach {what}: {reason}")]
    Unreachable {
        /// What was asked for (`the Docker engine at unix:///…`).
        what: String,
        /// Why, and what to do about it.
        reason: String,
    },
    /// The engine behind the executor refused a request.
    #[error("the engine refused {what}: {reason}")]
    Refused {
        /// What was asked for.
        what: String,
        /// The engine's answer.
        reason: String,
    },
    /// Listing what a previous process left behind failed.
    #[error("cannot list {what}: {reason}")]
    List {
        /// What was listed.
        what: String,
        /// Why.
        reason: String,
    },
    /// The host's GPUs could not be listed.
    #[error("{0}")]
    Gpus(String),
    /// A local file or folder could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
}

/// Something that runs attempts: a Docker engine, the host's processes.
///
/// The daemon holds one per `executor:` name and hands each attempt of a
/// step to the executor the step names. An attempt ends in two steps: its
/// [`launch`](Executor::launch) (or [`reattach`](Executor::reattach))
/// returns the [`Exit`], and [`release`](Executor::release) clears it away
/// once the caller has stored that exit. Every method reports through its
/// return value; none of them panics on a bad launch.
pub trait Executor: Send + Sync {
    /// The step's `executor:` value this executor answers to.
    fn name(&self) -> &'static str;

    /// Runs `launch` to its end, through `io`.
    fn launch<'a>(&'a self, launch: &'a Launch, io: AttemptIo) -> BoxFuture<'a, Exit>;

    /// Takes up `found` (resumable, of this executor), an attempt a crashed
    /// weir left: its log from byte `skip` of the masked output on (what
    /// the store has is not sent twice), its exit, its outputs.
    fn reattach<'a>(
        &'a self,
        found: &'a Found,
        launch: &'a Launch,
        skip: u64,
        io: AttemptIo,
    ) -> BoxFuture<'a, Exit>;

    /// The attempts of run `run` this executor still has, running or not.
    fn find<'a>(&'a self, run: &'a str) -> BoxFuture<'a, Result<Vec<Found>, Error>>;

    /// Ends and removes what is left of `found`, so it never runs twice.
    fn discard<'a>(&'a self, found: &'a Found) -> BoxFuture<'a, ()>;

    /// Removes what is left of `launch`'s attempt once the caller has
    /// committed its exit. Until then it stays (an exited container, a
    /// recorded exit status), so a weir that dies before the commit finds
    /// it ended, not lost.
    fn release<'a>(&'a self, launch: &'a Launch) -> BoxFuture<'a, ()>;

    /// Whether `image` (a reference or an id) is on this executor's host
    /// without pulling it: `None` for an executor that runs no images.
    fn has_image<'a>(&'a self, image: &'a str) -> BoxFuture<'a, Option<bool>> {
        let _ = image;
        Box::pin(async { None })
    }
}
