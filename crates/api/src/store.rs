//! The store's housekeeping: pruning finished runs by retention.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `POST /gc`: prune finished runs older than a retention.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Gc {
    /// Prune runs that finished longer ago than this (`30d`, `12h`; at
    /// least `1m`); by default the daemon's `retention`.
    #[serde(default)]
    pub older_than: Option<String>,
    /// Count what would be pruned; change nothing.
    #[serde(default)]
    pub dry_run: bool,
}

/// What a prune removed, or with `dry_run` would remove. Runs that
/// registered a model version, and the audit log, are never pruned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Collected {
    /// Runs that finished before this were taken.
    pub before: DateTime<Utc>,
    /// Runs.
    pub runs: u64,
    /// Their attempts.
    pub attempts: u64,
    /// The bytes of their logs.
    pub log_bytes: u64,
    /// Their folders removed from the data folder.
    pub folders: u64,
    /// Whether this only counted.
    pub dry_run: bool,
}
