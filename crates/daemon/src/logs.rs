//! Reading a step's log as it is written: which attempt, from where, and
//! whether more will come.
//!
//! **Invariant:** a piece marked `done` is the end of that attempt's log:
//! its step is over, or a later attempt has started.

use crate::runs::Daemon;
use thiserror::Error;
use weir_engine::StepState;

/// A piece of a step's log ([`Daemon::log`]).
#[derive(Debug, Clone, PartialEq)]
pub struct LogPiece {
    /// The attempt read (0 when none has started).
    pub attempt: u32,
    /// The step instance's state.
    pub state: StepState,
    /// The bytes from the offset asked for.
    pub data: Vec<u8>,
    /// The offset to ask from next.
    pub next: u64,
    /// Whether the attempt's log is complete.
    pub done: bool,
}

/// Why a log cannot be read.
#[derive(Debug, Error)]
pub enum LogError {
    /// The run has no such step instance.
    #[error("run {run} has no step '{step}' (it has {known})")]
    NoSuchStep {
        /// The run.
        run: String,
        /// The step asked for.
        step: String,
        /// The instances it has, comma-separated.
        known: String,
    },
    /// The step has no such attempt.
    #[error("step '{step}' has no attempt {attempt}")]
    NoSuchAttempt {
        /// The step.
        step: String,
        /// The attempt asked for.
        attempt: u32,
    },
    /// The store failed (or has no such run).
    #[error(transparent)]
    Store(#[from] weir_store::Error),
}

impl Daemon {
    /// The log of `step` of run `id` from byte `offset`: of `attempt`, or
    /// of the latest attempt when none is named.
    pub async fn log(
        &self,
        id: &str,
        step: &str,
        attempt: Option<u32>,
        offset: u64,
    ) -> Result<LogPiece, LogError> {
        let run = self.store.load_run(id).await?;
        let Some(index) = run.steps.iter().position(|s| s.id == step) else {
            let names: Vec<&str> = run.steps.iter().map(|s| s.id.as_str()).collect();
            return Err(LogError::NoSuchStep {
                run: id.to_owned(),
                step: step.to_owned(),
                known: names.join(", "),
            });
        };
        let instance = &run.steps[index];
        let last = instance.attempts.last().map_or(0, |a| a.number);
        let attempt = match attempt {
            Some(n) if instance.attempts.iter().any(|a| a.number == n) => n,
            Some(n) => {
                return Err(LogError::NoSuchAttempt {
                    step: step.to_owned(),
                    attempt: n,
                });
            }
            None => last,
        };
        let (data, next) = if attempt == 0 {
            (Vec::new(), 0)
        } else {
            self.store.read_log_from(id, index, attempt, offset).await?
        };
        Ok(LogPiece {
            attempt,
            state: instance.state,
            data,
            next,
            done: instance.state.is_terminal() || attempt < last,
        })
    }
}
