//! Why a run exists ([`Cause`]) and what weir decided for an event
//! ([`Decision`]): typed from the edge that took them in to the row that
//! keeps them, stored as a kind plus JSON, shown as text only to people.
//! The drift rules (threshold, a drift run still going, cooldown) are
//! decided here, purely, by [`drift_decision`].

use crate::run::{RunState, Time};
use serde::{Deserialize, Serialize};
use std::fmt;

/// What started a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Cause {
    /// Someone asked for it: the CLI, the API (the token's name), `weir run`.
    Manual {
        /// Who.
        actor: String,
    },
    /// A signed webhook delivery.
    Webhook {
        /// The delivery id its sender gave, when it gave one.
        delivery: Option<String>,
    },
    /// A slot of one of the pipeline's schedules.
    Schedule {
        /// The slot.
        slot: Time,
    },
    /// A slot of a backfill.
    Backfill {
        /// The slot.
        slot: Time,
    },
    /// A drift report past a rule's threshold.
    Drift {
        /// The metric reported.
        metric: String,
        /// Its value.
        value: f64,
    },
    /// A retry of a finished run.
    Retry {
        /// The run retried.
        of: String,
        /// The step it ran again from, when one was named.
        from: Option<String>,
        /// Who asked for it.
        actor: String,
    },
    /// A replay of the run that produced a model version, to prove it can
    /// be reproduced: the same pipeline version, params and event, and the
    /// same images by id.
    Replay {
        /// The model.
        model: String,
        /// Its version.
        version: i64,
        /// The run that registered it.
        of: String,
        /// Who asked for it.
        actor: String,
        /// The image id each container step instance ran, by instance id.
        #[serde(default)]
        images: std::collections::BTreeMap<String, String>,
    },
}

impl Cause {
    /// A manual run asked for by `actor`.
    pub fn manual(actor: impl Into<String>) -> Cause {
        Cause::Manual {
            actor: actor.into(),
        }
    }

    /// The kind: `manual`, `webhook`, `schedule`, `backfill`, `drift`,
    /// `retry`, `replay` (what `run.trigger` reads in expressions and listings show).
    pub fn kind(&self) -> &'static str {
        match self {
            Cause::Manual { .. } => "manual",
            Cause::Webhook { .. } => "webhook",
            Cause::Schedule { .. } => "schedule",
            Cause::Backfill { .. } => "backfill",
            Cause::Drift { .. } => "drift",
            Cause::Retry { .. } => "retry",
            Cause::Replay { .. } => "replay",
        }
    }

    /// Who the audit log records as starting the run: the person for
    /// manual runs and retries, else the kind of trigger.
    pub fn actor(&self) -> &str {
        match self {
            Cause::Manual { actor } | Cause::Retry { actor, .. } | Cause::Replay { actor, .. } => {
                actor
            }
            other => other.kind(),
        }
    }

    /// The run this one retries.
    pub fn retry_of(&self) -> Option<&str> {
        match self {
            Cause::Retry { of, .. } => Some(of),
            _ => None,
        }
    }
}

/// What weir decided for an event (a webhook delivery, a drift report).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
        /// Why, for people.
        reason: String,
    },
}

impl Decision {
    /// The kind, as stored and counted by `/metrics` (`triggered`,
    /// `coalesced`, `cooldown`, `below-threshold`, `no-rule`, `rejected`).
    pub fn kind(&self) -> &'static str {
        match self {
            Decision::Triggered { .. } => "triggered",
            Decision::Coalesced { .. } => "coalesced",
            Decision::Cooldown { .. } => "cooldown",
            Decision::BelowThreshold { .. } => "below-threshold",
            Decision::NoRule { .. } => "no-rule",
            Decision::Rejected { .. } => "rejected",
        }
    }

    /// The run it started or joined.
    pub fn run(&self) -> Option<&str> {
        match self {
            Decision::Triggered { run } | Decision::Coalesced { run } => Some(run),
            _ => None,
        }
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Decision::Triggered { run } => write!(f, "triggered {run}"),
            Decision::Coalesced { run } => write!(f, "coalesced into {run}"),
            Decision::Cooldown {
                run,
                ago_secs,
                cooldown,
            } => write!(
                f,
                "cooldown: {run} started {} ago, within {cooldown}",
                human(*ago_secs)
            ),
            Decision::BelowThreshold {
                metric,
                value,
                threshold,
            } => write!(f, "below threshold ({metric} {value} <= {threshold})"),
            Decision::NoRule { metric } => write!(f, "no rule for metric '{metric}'"),
            Decision::Rejected { reason } => write!(f, "rejected: {reason}"),
        }
    }
}

fn human(secs: i64) -> String {
    let secs = secs.max(0);
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m", secs / 60),
        _ => format!("{}h{}m", secs / 3600, secs % 3600 / 60),
    }
}

/// The latest drift-started run of a pipeline, as [`drift_decision`] needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct LastDrift {
    /// Its id.
    pub id: String,
    /// Its state.
    pub state: RunState,
    /// When it was created.
    pub created_at: Time,
}

/// What to do with a drift report of `metric` = `value` at `now`, under
/// the pipeline's `on.drift` rules, given the latest drift-started run:
/// `None` means start a run (the caller then records
/// [`Decision::Triggered`]). A run still queued or running is joined
/// (coalesced); one started within the passing rule's cooldown suppresses
/// it.
pub fn drift_decision(
    rules: &[weir_model::pipeline::DriftRule],
    metric: &str,
    value: f64,
    last: Option<&LastDrift>,
    now: Time,
) -> Option<Decision> {
    let rules: Vec<_> = rules.iter().filter(|r| r.metric.value == metric).collect();
    if rules.is_empty() {
        return Some(Decision::NoRule {
            metric: metric.to_owned(),
        });
    }
    let Some(rule) = rules.iter().find(|r| value > r.above) else {
        let threshold = rules.iter().map(|r| r.above).fold(f64::NAN, f64::min);
        return Some(Decision::BelowThreshold {
            metric: metric.to_owned(),
            value,
            threshold,
        });
    };
    if let Some(last) = last {
        if matches!(last.state, RunState::Queued | RunState::Running) {
            return Some(Decision::Coalesced {
                run: last.id.clone(),
            });
        }
        if let Some(cooldown) = rule.cooldown {
            let within =
                chrono::Duration::from_std(cooldown.get()).is_ok_and(|c| now - last.created_at < c);
            if within {
                return Some(Decision::Cooldown {
                    run: last.id.clone(),
                    ago_secs: (now - last.created_at).num_seconds(),
                    cooldown: cooldown.to_string(),
                });
            }
        }
    }
    None
}
