//! Approval steps decided by a person: the decision travels to the run's
//! loop, which commits it, and is answered once committed.
//!
//! **Invariant:** only the run's loop changes the run; a decision is
//! answered after it is committed, and audited with who took it.

use crate::drive::Control;
use crate::runs::Daemon;
use thiserror::Error;
use tokio::sync::oneshot;
use weir_engine::Run;

/// Why an approval could not be decided.
#[derive(Debug, Error)]
pub enum DecideError {
    /// The run or step is not in a state to be decided; says why.
    #[error("{0}")]
    Refused(String),
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
            return Err(DecideError::Refused(format!(
                "run {id} is {}: only a running run's approvals can be decided",
                run.state
            )));
        };
        let (reply, answer) = oneshot::channel();
        let asked = Control::Decide {
            step: step.to_owned(),
            approved,
            by: by.to_owned(),
            comment,
            reply,
        };
        let gone = || DecideError::Refused(format!("run {id} ended before the decision was taken"));
        control.send(asked).await.map_err(|_| gone())?;
        answer
            .await
            .map_err(|_| gone())?
            .map_err(DecideError::Refused)?;
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
