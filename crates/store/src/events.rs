//! Events (webhook deliveries, drift reports, triggers) with what weir
//! decided for each.

use crate::db::{BeginWrite, on_db};
use crate::{Error, Store};
use chrono::{DateTime, Utc};
use serde::Serialize;
use weir_engine::Decision;

/// One stored event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventRecord {
    /// Increasing id.
    pub id: i64,
    /// `webhook`, `drift`, `manual`, …
    pub kind: String,
    /// The pipeline it concerned.
    pub pipeline: Option<String>,
    /// The run it created or joined.
    pub run_id: Option<String>,
    /// The payload, as JSON text.
    pub payload: String,
    /// What weir decided, for people: `triggered RUN`, `below threshold …`.
    pub decision: String,
    /// The kind of the decision: `triggered`, `coalesced`, `rejected`, …
    pub outcome: String,
    /// The decision itself.
    pub detail: Decision,
    /// When it arrived.
    pub created_at: DateTime<Utc>,
}

/// An `events` row.
#[derive(sqlx::FromRow)]
struct EventRow {
    id: i64,
    kind: String,
    pipeline: Option<String>,
    run_id: Option<String>,
    payload: String,
    decision: String,
    outcome: String,
    detail: String,
    created_at: DateTime<Utc>,
}

impl EventRow {
    fn record(self) -> Result<EventRecord, Error> {
        let detail = serde_json::from_str(&self.detail)
            .map_err(|e| Error::Corrupt(format!("event {} decision: {e}", self.id)))?;
        Ok(EventRecord {
            id: self.id,
            kind: self.kind,
            pipeline: self.pipeline,
            run_id: self.run_id,
            payload: self.payload,
            decision: self.decision,
            outcome: self.outcome,
            detail,
            created_at: self.created_at,
        })
    }
}

/// How many rejected events of one kind a pipeline keeps: the newest. The
/// older ones are deleted; [`Store::counts`] still counts them (its
/// tally of events is kept as they are written).
pub const REJECTED_KEPT: i64 = 1000;

impl Store {
    /// Records an event with weir's decision (and the run it names, if
    /// any) and returns its id. Of a pipeline's rejected events the newest
    /// [`REJECTED_KEPT`] are kept.
    pub async fn record_event(
        &self,
        kind: &str,
        pipeline: Option<&str>,
        payload: &serde_json::Value,
        decision: &Decision,
        now: DateTime<Utc>,
    ) -> Result<i64, Error> {
        let payload = payload.to_string();
        let detail = serde_json::to_string(decision).unwrap_or_else(|_| "null".to_owned());
        let rejected = decision.kind() == "rejected";
        let id = on_db!(&self.db, pool => {
            let mut tx = pool.begin_write().await?;
            let (id,): (i64,) = sqlx::query_as(
                "INSERT INTO events (kind, pipeline, run_id, payload, decision, created_at, outcome, detail) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
            )
            .bind(kind)
            .bind(pipeline)
            .bind(decision.run())
            .bind(&payload)
            .bind(decision.to_string())
            .bind(now)
            .bind(decision.kind())
            .bind(&detail)
            .fetch_one(&mut *tx)
            .await?;
            if rejected && let Some(pipeline) = pipeline {
                // Rejections are anyone's to send: the newest are kept,
                // the older ones counted.
                sqlx::query(
                    "DELETE FROM events WHERE pipeline = $1 AND kind = $2 AND outcome = 'rejected' AND id <= (SELECT id FROM events WHERE pipeline = $1 AND kind = $2 AND outcome = 'rejected' ORDER BY id DESC LIMIT 1 OFFSET $3)",
                )
                .bind(pipeline)
                .bind(kind)
                .bind(REJECTED_KEPT)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            id
        });
        Ok(id)
    }

    /// The first event that names run `run_id` (the delivery or report that
    /// started it), if any.
    pub async fn run_event(&self, run_id: &str) -> Result<Option<EventRecord>, Error> {
        let row: Option<EventRow> = on_db!(&self.db, pool => {
            sqlx::query_as("SELECT id, kind, pipeline, run_id, payload, decision, outcome, detail, created_at FROM events WHERE run_id = $1 ORDER BY id LIMIT 1")
            .bind(run_id)
            .fetch_optional(pool)
            .await?
        });
        row.map(EventRow::record).transpose()
    }

    /// The latest `limit` events, newest first.
    pub async fn events(&self, limit: i64) -> Result<Vec<EventRecord>, Error> {
        let rows: Vec<EventRow> = on_db!(&self.db, pool => {
            sqlx::query_as("SELECT id, kind, pipeline, run_id, payload, decision, outcome, detail, created_at FROM events ORDER BY id DESC LIMIT $1")
            .bind(limit)
            .fetch_all(pool)
            .await?
        });
        rows.into_iter().map(EventRow::record).collect()
    }
}
