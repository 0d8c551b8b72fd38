//! weir's run engine: the state machine that takes a run of a validated
//! pipeline from `queued` to `succeeded`, `failed` or `cancelled`.
//!
//! It is pure: [`advance`] takes the run's current state, one [`Event`] and
//! the time, changes the run in memory and answers the [`Action`]s the
//! caller must carry out. The caller commits the changed run to the store
//! *before* acting, which is what makes a crash at any instant recoverable.
//! No IO, no clock, no async runtime here: time is an argument, so every
//! rule is tested with made-up times by the thousand.

mod advance;
mod cause;
mod context;
pub mod drift;
mod prepare;
mod replay;
mod retry;
mod run;
pub mod schedule;

pub use advance::{Action, Admission, Capacity, Error, Event, Outcome, StopReason, admit, advance};
pub use cause::{Cause, Decision, LastDrift, drift_decision};
pub use prepare::{PrepareError, Prepared, Program, model_card, prepare};
pub use replay::{
    Compared, Difference, ReplayError, Reproduction, compare, replay_images, replay_run,
};
pub use retry::{RetryError, retry_run};
pub use run::{
    Attempt, AttemptState, Evidence, ParamsError, Read, Run, RunState, StepRun, StepState,
    Stopping, Time, UnknownState, new_run,
};

/// How many times an attempt lost to a crash of weir is started again
/// before its step fails (DESIGN.md §3).
pub const MAX_LOST: usize = 3;
