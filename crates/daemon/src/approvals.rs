//! Approval steps decided by a person: the decision travels to the run's
//! loop, which commits it, and is answered once committed.
//!
//! **Invariant:** only the run's loop changes the run; a decision is
//! answered after it is committed, and audited with who took it.

use crate::drive::Control;
use crate::runs::Daemon;
use thiserror::Error;
use tokio::sync::oneshot;
use weir_engine::{Run, RunState, StepState};

/// Why an approval could not be decided.
#[derive(Debug, Error)]
pub enum DecideError {
    /// The run is not running (queued, or over).
    #[error("run {run} is {state}: only a running run's approvals can be decided")]
    NotRunning {
        /// The run.
        run: String,
        /// Where it is.
        state: RunState,
    },
    /// The run ended while the decision was on its way.
    #[error("run {run} ended before the decision was taken")]
    Ended {
        /// The run.
        run: String,
    },
    /// The run has no such step instance.
    #[error("run {run} has no step '{step}'")]
    NoStep {
        /// The run.
        run: String,
        /// The step asked for.
        step: String,
    },
    /// The step is not an approval waiting for its decision.
    #[error("step '{step}' is not waiting for approval (it is {state})")]
    NotWaiting {
        /// The step.
        step: String,
        /// Where it is.
        state: StepState,
    },
    /// The store failed (an unknown run is [`weir_store::Error::NoSuchRun`]).
    #[error(transparent)]
    Store(#[from] weir_store::Error),
}

impl Daemon {
    /// Decides approval step `step` of run `id`: approved, or rejected, by
    /// `by`. Answers once the decision is committed, with the run as it is
    /// then.
    pub async fn decide(
        &self,
        id: &str,
        step: &str,
        approved: bool,
        by: &str,
        comment: Option<String>,
    ) -> Result<Run, DecideError> {
        let Some(control) = self.control(id) else {
            let run = self.store.load_run(id).await?;
            return Err(DecideError::NotRunning {
                run: id.to_owned(),
                state: run.state,
            });
        };
        let (reply, answer) = oneshot::channel();
        let asked = Control::Decide {
            step: step.to_owned(),
            approved,
            by: by.to_owned(),
            comment,
            reply,
        };
        let gone = || DecideError::Ended { run: id.to_owned() };
        control.send(asked).await.map_err(|_| gone())?;
        answer.await.map_err(|_| gone())??;
        tracing::info!(run = id, step, approved, by, "approval decided");
        let run = self.store.load_run(id).await?;
        let decision = run
            .step(step)
            .and_then(|s| s.reason.clone())
            .unwrap_or_default();
        self.audit.record(
            by,
            "approval.decided",
            &format!("{id}/{step}"),
            serde_json::json!({ "approved": approved, "decision": decision }),
        );
        Ok(run)
    }
}
