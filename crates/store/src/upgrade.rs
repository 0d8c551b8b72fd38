//! Carrying rows of earlier versions over to what today's code reads, where
//! SQL alone cannot: migration 0010 added `runs.cause` and
//! `events.outcome`/`events.detail`, and the rows written before it get
//! them here, once, when the store opens. This is the one place that reads
//! the English of weir 0.1's decisions; everything else reads the kind and
//! the JSON.

use crate::db::on_db;
use crate::{Error, Store};
use chrono::{DateTime, Utc};
use weir_engine::{Cause, Decision};

/// The name this carry-over records in `upgrades` once done.
const CAUSES_AND_DECISIONS: &str = "0010-causes-and-decisions";

impl Store {
    /// Runs the carry-overs not done yet.
    pub(crate) async fn upgrade(&self) -> Result<(), Error> {
        let done: Option<(String,)> = on_db!(&self.db, pool => {
            sqlx::query_as("SELECT name FROM upgrades WHERE name = $1")
                .bind(CAUSES_AND_DECISIONS)
                .fetch_optional(pool)
                .await?
        });
        if done.is_some() {
            return Ok(());
        }
        self.carry_causes().await?;
        self.carry_decisions().await?;
        on_db!(&self.db, pool => {
            sqlx::query("INSERT INTO upgrades (name) VALUES ($1) ON CONFLICT (name) DO NOTHING")
                .bind(CAUSES_AND_DECISIONS)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    async fn carry_causes(&self) -> Result<(), Error> {
        type Old = (String, String, String, Option<String>);
        let runs: Vec<Old> = on_db!(&self.db, pool => {
            sqlx::query_as("SELECT id, trigger, event, retry_of FROM runs WHERE cause = ''")
                .fetch_all(pool)
                .await?
        });
        for (id, trigger, event, retry_of) in runs {
            // The trigger's audit entry names who asked, and a retry's step.
            let entry: Option<(String, String)> = on_db!(&self.db, pool => {
                sqlx::query_as("SELECT actor, payload FROM audit WHERE subject = $1 AND action = 'run.triggered' ORDER BY seq LIMIT 1")
                    .bind(&id)
                    .fetch_optional(pool)
                    .await?
            });
            let (actor, audited) = match entry {
                Some((actor, payload)) => (
                    actor,
                    serde_json::from_str(&payload).unwrap_or(serde_json::Value::Null),
                ),
                None => (trigger.clone(), serde_json::Value::Null),
            };
            let event: serde_json::Value =
                serde_json::from_str(&event).unwrap_or(serde_json::Value::Null);
            let slot = || -> Result<DateTime<Utc>, Error> {
                event
                    .get("slot")
                    .and_then(serde_json::Value::as_str)
                    .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
                    .map(|t| t.with_timezone(&Utc))
                    .ok_or_else(|| {
                        Error::Corrupt(format!("run {id}: a {trigger} run without its slot"))
                    })
            };
            let cause = match trigger.as_str() {
                "manual" => Cause::Manual { actor },
                "webhook" => {
                    let delivery: Option<(Option<String>,)> = on_db!(&self.db, pool => {
                        sqlx::query_as("SELECT delivery FROM events WHERE run_id = $1 AND kind = 'webhook' ORDER BY id LIMIT 1")
                            .bind(&id)
                            .fetch_optional(pool)
                            .await?
                    });
                    Cause::Webhook {
                        delivery: delivery.and_then(|d| d.0),
                    }
                }
                "schedule" => Cause::Schedule { slot: slot()? },
                "backfill" => Cause::Backfill { slot: slot()? },
                "drift" => Cause::Drift {
                    metric: event
                        .get("metric")
                        .and_then(serde_json::Value::as_str)
                        .unwrap_or_default()
                        .to_owned(),
                    value: event
                        .get("value")
                        .and_then(serde_json::Value::as_f64)
                        .unwrap_or(f64::NAN),
                },
                "retry" => Cause::Retry {
                    of: retry_of.unwrap_or_default(),
                    from: audited
                        .get("from")
                        .and_then(serde_json::Value::as_str)
                        .map(str::to_owned),
                    actor,
                },
                other => Cause::Manual {
                    actor: other.to_owned(),
                },
            };
            let cause = serde_json::to_string(&cause).unwrap_or_else(|_| "null".to_owned());
            on_db!(&self.db, pool => {
                sqlx::query("UPDATE runs SET cause = $1 WHERE id = $2")
                    .bind(&cause)
                    .bind(&id)
                    .execute(pool)
                    .await?;
            });
        }
        Ok(())
    }

    async fn carry_decisions(&self) -> Result<(), Error> {
        let events: Vec<(i64, String, Option<String>)> = on_db!(&self.db, pool => {
            sqlx::query_as("SELECT id, decision, run_id FROM events WHERE outcome = ''")
                .fetch_all(pool)
                .await?
        });
        for (id, text, run) in events {
            let decision = decision_of(&text, run);
            let detail = serde_json::to_string(&decision).unwrap_or_else(|_| "null".to_owned());
            on_db!(&self.db, pool => {
                sqlx::query("UPDATE events SET outcome = $1, detail = $2 WHERE id = $3")
                    .bind(decision.kind())
                    .bind(&detail)
                    .bind(id)
                    .execute(pool)
                    .await?;
            });
        }
        Ok(())
    }
}

/// A decision as weir 0.1 wrote it, typed. What does not parse is kept
/// whole as a rejection's reason, so no text is lost.
fn decision_of(text: &str, run: Option<String>) -> Decision {
    let run_or = |named: &str| run.clone().unwrap_or_else(|| named.to_owned());
    if let Some(named) = text.strip_prefix("triggered ") {
        return Decision::Triggered { run: run_or(named) };
    }
    if let Some(named) = text.strip_prefix("coalesced into ") {
        return Decision::Coalesced { run: run_or(named) };
    }
    if let Some(rest) = text.strip_prefix("cooldown: ")
        && let Some((named, rest)) = rest.split_once(" started ")
        && let Some((ago, cooldown)) = rest.split_once(" ago, within ")
    {
        return Decision::Cooldown {
            run: named.to_owned(),
            ago_secs: seconds(ago).unwrap_or(0),
            cooldown: cooldown.to_owned(),
        };
    }
    if let Some(rest) = text.strip_prefix("below threshold (")
        && let Some(rest) = rest.strip_suffix(')')
        && let Some((left, threshold)) = rest.split_once(" <= ")
        && let Some((metric, value)) = left.rsplit_once(' ')
        && let (Ok(value), Ok(threshold)) = (value.parse(), threshold.parse())
    {
        return Decision::BelowThreshold {
            metric: metric.to_owned(),
            value,
            threshold,
        };
    }
    if let Some(metric) = text
        .strip_prefix("no rule for metric '")
        .and_then(|m| m.strip_suffix('\''))
    {
        return Decision::NoRule {
            metric: metric.to_owned(),
        };
    }
    let reason = text
        .strip_prefix("rejected: ")
        .or_else(|| text.strip_prefix("refused: "))
        .unwrap_or(text);
    Decision::Rejected {
        reason: reason.to_owned(),
    }
}

/// `24s`, `5m`, `1h2m` as seconds.
fn seconds(text: &str) -> Option<i64> {
    let mut total = 0;
    let mut number = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let n: i64 = number.parse().ok()?;
        number.clear();
        total += n * match c {
            'h' => 3600,
            'm' => 60,
            's' => 1,
            _ => return None,
        };
    }
    number.is_empty().then_some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_decision_of_weir_0_1_is_typed_and_reads_the_same() {
        for text in [
            "triggered 01a23bf904d67314ad25a0fe9f4cac10",
            "coalesced into 01a23bf904d67314ad25a0fe9f4cac10",
            "cooldown: 01a23bf904d67314ad25a0fe9f4cac10 started 24s ago, within 1h",
            "cooldown: r1 started 1h2m ago, within 2h",
            "below threshold (psi 0.1 <= 0.2)",
            "no rule for metric 'kl'",
            "rejected: missing or bad signature",
        ] {
            let decision = decision_of(text, None);
            assert_eq!(decision.to_string(), text, "{decision:?}");
        }
        assert_eq!(
            decision_of("refused: no pipeline 'x'", None),
            Decision::Rejected {
                reason: "no pipeline 'x'".to_owned()
            }
        );
        assert_eq!(decision_of("triggered r9", None).run(), Some("r9"));
        assert_eq!(seconds("1h2m"), Some(3720));
        assert_eq!(seconds("5x"), None);
    }
}
