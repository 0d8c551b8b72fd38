//! The audit log: its entries, their verification, the public key.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// One entry of the audit log. An export is these, one per line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AuditEntry {
    /// 1, 2, … with no gap.
    pub seq: i64,
    /// When it was appended.
    pub at: DateTime<Utc>,
    /// Who: a token's name, `schedule`, `webhook`, `run RUN`, `weir`.
    pub actor: String,
    /// What: `run.triggered`, `approval.decided`, `gate.decided`, …
    pub action: String,
    /// What it concerns: a run, `RUN/STEP`, `MODEL@N`, a pipeline.
    pub subject: String,
    /// The details, as JSON text.
    pub payload: String,
    /// The previous entry's hash.
    pub prev_hash: String,
    /// SHA-256 of the entry's canonical encoding, hex.
    pub hash: String,
    /// ed25519 signature of the hash, hex.
    pub signature: String,
}

/// `?after=SEQ&limit=N`: entries after `after`, in order.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// The last entry already read (0: from the start).
    #[serde(default)]
    pub after: i64,
    /// How many, 1 to 10000 (default 1000).
    pub limit: Option<i64>,
}

/// The whole chain checked: the count, or the first entry that does not
/// verify and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Verification {
    /// Whether every entry verifies.
    pub verified: bool,
    /// How many entries were checked.
    pub entries: usize,
    /// The first bad entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<i64>,
    /// Why it is bad.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The key that verifies the audit log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AuditKey {
    /// `ed25519`.
    pub algorithm: String,
    /// The public key, hex.
    pub public_key: String,
}
