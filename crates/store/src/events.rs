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

    /// Claims webhook delivery `delivery` of `pipeline` by recording its
    /// event: `Ok(None)` for a first delivery (the new event's id), or the
    /// run a previous delivery with this id created (`Some(run)`; the run
    /// may be empty while that delivery is still being handled).
    pub async fn claim_delivery(
        &self,
        pipeline: &str,
        delivery: &str,
        payload: &serde_json::Value,
        now: DateTime<Utc>,
    ) -> Result<Result<i64, Option<String>>, Error> {
        let payload = payload.to_string();
        let inserted: Option<(i64,)> = on_db!(&self.db, pool => {
            sqlx::query_as(
                "INSERT INTO events (kind, pipeline, run_id, payload, decision, created_at, delivery) VALUES ('webhook', $1, NULL, $2, 'received', $3, $4) ON CONFLICT (pipeline, delivery) DO NOTHING RETURNING id",
            )
            .bind(pipeline)
            .bind(&payload)
            .bind(now)
            .bind(delivery)
            .fetch_optional(pool)
            .await?
        });
        if let Some((id,)) = inserted {
            return Ok(Ok(id));
        }
        let existing: Option<(Option<String>,)> = on_db!(&self.db, pool => {
            sqlx::query_as("SELECT run_id FROM events WHERE pipeline = $1 AND delivery = $2")
                .bind(pipeline)
                .bind(delivery)
                .fetch_optional(pool)
                .await?
        });
        Ok(Err(existing.and_then(|e| e.0)))
    }

    /// Records what weir decided for event `id`, and the run it created.
    pub async fn decide_event(
        &self,
        id: i64,
        run_id: Option<&str>,
        decision: &str,
    ) -> Result<(), Error> {
        on_db!(&self.db, pool => {
            sqlx::query("UPDATE events SET run_id = $1, decision = $2 WHERE id = $3")
                .bind(run_id)
                .bind(decision)
                .bind(id)
                .execute(pool)
                .await?;
        });
        Ok(())
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
