//! The JSON shapes of weir's HTTP API under `/api/v1`: every request body,
//! query and answer, as the server writes them and the CLI (and the UI)
//! read them. A leaf crate: it knows nothing of the engine or the store,
//! so the API changes only where these types do, and the OpenAPI document
//! (`weir_server`'s, from the [`utoipa::ToSchema`] derives here) says so.
//!
//! Field order is the order the server writes them in.

mod audit;
mod events;
mod models;
mod pipelines;
mod runs;
mod store;

pub use audit::{AuditEntry, AuditKey, AuditQuery, Verification};
pub use events::{Decision, Delivered, DriftAnswer, DriftReport, Event};
pub use models::{
    AliasMove, CardFormat, CardQuery, Lineage, LineageEvent, LineageRun, LineageStep, MlflowMirror,
    Model, ModelCard, ModelOrVersion, ModelQuery, ModelSummary, ModelVersion, Promoted, Promotion,
    Replay, ReplayDifference, ReplayedArtifact,
};
pub use pipelines::{Backfill, Backfilled, BackfilledRun, Pipeline};
pub use runs::{
    Approval, Attempt, AttemptState, Cancelling, Cause, Evidence, Listing, LogChunk, LogQuery,
    NewRun, Read, Replayed, Retry, Run, RunListing, RunState, RunSummary, StepRun, StepState,
    StopReason, Stopping,
};
pub use store::{Collected, Gc};

use serde::{Deserialize, Serialize};

/// Any JSON object (metrics, outputs, a matrix combination).
pub type Object = serde_json::Map<String, serde_json::Value>;

/// Every refusal: a stable `code` to branch on and a `message` that says
/// what to do, with the matching HTTP status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Error {
    /// What went wrong.
    pub error: ErrorBody,
}

/// The inside of an [`Error`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// Stable and kebab-case: `not-found`, `bad-request`, `unauthorized`, …
    pub code: String,
    /// For people: what is wrong and what to do.
    pub message: String,
}
