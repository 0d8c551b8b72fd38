//! Events (webhook deliveries, drift reports, triggers) with what weir
//! decided for each.

use crate::db::on_db;
use crate::{Error, Store};
use chrono::{DateTime, Utc};
use serde::Serialize;

/// One stored event.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
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
    /// What weir decided: `triggered RUN`, `below threshold`, …
    pub decision: String,
    /// When it arrived.
    pub created_at: DateTime<Utc>,
}

impl Store {
    /// Records an event and returns its id.
    pub async fn record_event(
        &self,
        kind: &str,
        pipeline: Option<&str>,
        run_id: Option<&str>,
        payload: &serde_json::Value,
        decision: &str,
        now: DateTime<Utc>,
    ) -> Result<i64, Error> {
        let payload = payload.to_string();
        let (id,): (i64,) = on_db!(&self.db, pool => {
            sqlx::query_as(
                "INSERT INTO events (kind, pipeline, run_id, payload, decision, created_at) VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
            )
            .bind(kind)
            .bind(pipeline)
            .bind(run_id)
            .bind(&payload)
            .bind(decision)
            .bind(now)
            .fetch_one(pool)
            .await?
        });
        Ok(id)
    }

    /// The first event that names run `run_id` (the delivery or report that
    /// started it), if any.
    pub async fn run_event(&self, run_id: &str) -> Result<Option<EventRecord>, Error> {
        let row = on_db!(&self.db, pool => {
            sqlx::query_as(
                "SELECT id, kind, pipeline, run_id, payload, decision, created_at FROM events WHERE run_id = $1 ORDER BY id LIMIT 1",
            )
            .bind(run_id)
            .fetch_optional(pool)
            .await?
        });
        Ok(row)
    }

    /// The latest `limit` events, newest first.
    pub async fn events(&self, limit: i64) -> Result<Vec<EventRecord>, Error> {
        let rows = on_db!(&self.db, pool => {
            sqlx::query_as(
                "SELECT id, kind, pipeline, run_id, payload, decision, created_at FROM events ORDER BY id DESC LIMIT $1",
            )
            .bind(limit)
            .fetch_all(pool)
            .await?
        });
        Ok(rows)
    }
}
