//! Events (webhook deliveries and drift reports) with weir's decision.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// What weir decided for an event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Decision {
    /// It started this run.
    Triggered {
        /// The run.
        run: String,
    },
    /// A run it would start is still queued or running: it joins that one.
    Coalesced {
        /// The run.
        run: String,
    },
    /// A run it would start began within the rule's cooldown.
    Cooldown {
        /// That run.
        run: String,
        /// Seconds since it was created.
        ago_secs: i64,
        /// The rule's cooldown, as written.
        cooldown: String,
    },
    /// The value did not pass any rule's threshold.
    BelowThreshold {
        /// The metric.
        metric: String,
        /// Its value.
        value: f64,
        /// The lowest threshold of the rules for it.
        threshold: f64,
    },
    /// No rule of the pipeline watches this metric.
    NoRule {
        /// The metric.
        metric: String,
    },
    /// It was refused before anything else was decided.
    Rejected {
        /// Why.
        reason: String,
    },
}

/// One stored event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Event {
    /// Increasing id.
    pub id: i64,
    /// `webhook`, `drift`.
    pub kind: String,
    /// The pipeline it concerned.
    pub pipeline: Option<String>,
    /// The run it created or joined.
    pub run_id: Option<String>,
    /// The payload, as JSON text.
    pub payload: String,
    /// The decision, for people: `triggered RUN`, `below threshold (…)`.
    pub decision: String,
    /// The decision's kind: `triggered`, `coalesced`, `cooldown`,
    /// `below-threshold`, `no-rule`, `rejected`.
    pub outcome: String,
    /// The decision itself.
    pub detail: Decision,
    /// When it arrived.
    pub created_at: DateTime<Utc>,
}

/// `POST /events/drift`: a measured value, or two histograms over the
/// same bins from which weir computes `psi` or `kl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DriftReport {
    /// The pipeline whose drift rules judge it.
    pub pipeline: String,
    /// The metric: a rule's `metric`.
    pub metric: String,
    /// The measured value.
    #[serde(default)]
    pub value: Option<f64>,
    /// The reference histogram (training data).
    #[serde(default)]
    pub reference: Option<Vec<f64>>,
    /// The current histogram (serving data).
    #[serde(default)]
    pub current: Option<Vec<f64>>,
}

/// The answer to a drift report: the value judged and the decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DriftAnswer {
    /// The metric.
    pub metric: String,
    /// Its value, as sent or as computed from the histograms.
    pub value: f64,
    /// The decision, for people.
    pub decision: String,
    /// The decision's kind.
    pub outcome: String,
    /// The decision itself.
    pub detail: Decision,
}

/// `POST /hooks/{pipeline}`'s answer: the delivery's run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Delivered {
    /// The run it started, or the one it started when first sent (null
    /// while that first delivery is still being handled).
    pub run: Option<String>,
    /// The delivery id its sender gave.
    pub delivery: Option<String>,
    /// Whether this delivery was seen before (nothing new was started).
    pub replay: bool,
}
