//! Pipelines and backfills of their schedules.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A pipeline the daemon serves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Pipeline {
    /// Its name.
    pub name: String,
    /// Its description.
    pub description: Option<String>,
    /// How many steps it has.
    pub steps: usize,
    /// The file it was read from.
    pub file: String,
    /// SHA-256 of the file: the version runs record.
    pub hash: String,
    /// Whether it may be run by hand (`on.manual`).
    pub manual: bool,
}

/// `POST /pipelines/{name}/backfill`: every schedule slot in a range.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Backfill {
    /// The first instant.
    pub from: DateTime<Utc>,
    /// The last instant, included.
    pub to: DateTime<Utc>,
}

/// The runs a backfill started.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Backfilled {
    /// One per slot not run before.
    pub runs: Vec<BackfilledRun>,
    /// Slots already run (by a schedule or an earlier backfill).
    pub skipped: usize,
}

/// One slot of a backfill with its run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BackfilledRun {
    /// The slot.
    pub slot: DateTime<Utc>,
    /// The run started for it.
    pub run: String,
}
