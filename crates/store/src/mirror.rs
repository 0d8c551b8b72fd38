//! The outbox of the MLflow mirror: one row per thing to write to an
//! MLflow server — a run (`run`, its id), a registered version (`version`,
//! `MODEL@N`), an alias (`alias`, `MODEL/ALIAS`) — with its state
//! (`pending`, `done`, `failed`), how often it was tried, when it is tried
//! next, the last error and what MLflow answered.

use crate::db::{BeginWrite, on_db};
use crate::{Error, Store};
use chrono::{DateTime, Utc};

/// One row of the outbox.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct MirrorItem {
    /// Its place in the queue.
    pub id: i64,
    /// `run`, `version` or `alias`.
    pub kind: String,
    /// The run id, `MODEL@N` or `MODEL/ALIAS`.
    pub subject: String,
    /// The MLflow server.
    pub tracking_uri: String,
    /// The MLflow experiment.
    pub experiment: String,
    /// `pending`, `done` or `failed`.
    pub state: String,
    /// How many times it was tried.
    pub attempts: i64,
    /// When it is tried next, while pending.
    pub next_at: DateTime<Utc>,
    /// Why the last try failed.
    pub last_error: Option<String>,
    /// What MLflow answered (JSON), once done.
    pub result: Option<String>,
    /// When it was queued.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

const COLUMNS: &str = "id, kind, subject, tracking_uri, experiment, state, attempts, next_at, last_error, result, created_at, updated_at";

impl Store {
    /// Queues `kind`/`subject` for `tracking_uri`, at the end of the queue:
    /// queued again (an alias moved once more), it leaves its old place,
    /// so what it waits for (the version the alias now names) comes first.
    pub async fn queue_mirror(
        &self,
        kind: &str,
        subject: &str,
        tracking_uri: &str,
        experiment: &str,
        at: DateTime<Utc>,
    ) -> Result<(), Error> {
        on_db!(&self.db, pool => {
            let mut tx = pool.begin_write().await?;
            sqlx::query("DELETE FROM mlflow_outbox WHERE kind = $1 AND subject = $2")
                .bind(kind)
                .bind(subject)
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "INSERT INTO mlflow_outbox (kind, subject, tracking_uri, experiment, state, attempts, next_at, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, 'pending', 0, $5, $5, $5)",
            )
            .bind(kind)
            .bind(subject)
            .bind(tracking_uri)
            .bind(experiment)
            .bind(at)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
        });
        Ok(())
    }

    /// The pending rows due at `now`, oldest first, at most `limit`; and
    /// when the next one not yet due is.
    pub async fn mirror_due(
        &self,
        now: DateTime<Utc>,
        limit: i64,
    ) -> Result<(Vec<MirrorItem>, Option<DateTime<Utc>>), Error> {
        let due: Vec<MirrorItem> = on_db!(&self.db, pool => {
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT {COLUMNS} FROM mlflow_outbox WHERE state = 'pending' AND next_at <= $1 ORDER BY id LIMIT $2"
            )))
            .bind(now)
            .bind(limit)
            .fetch_all(pool)
            .await?
        });
        let next: Option<(DateTime<Utc>,)> = on_db!(&self.db, pool => {
            sqlx::query_as("SELECT next_at FROM mlflow_outbox WHERE state = 'pending' AND next_at > $1 ORDER BY next_at LIMIT 1")
                .bind(now)
                .fetch_optional(pool)
                .await?
        });
        Ok((due, next.map(|n| n.0)))
    }

    /// Records what came of trying row `id`: `done` with MLflow's answer,
    /// `failed` for good, or still `pending`, next tried at `next_at`.
    pub async fn mirror_tried(
        &self,
        id: i64,
        state: &str,
        error: Option<&str>,
        result: Option<&str>,
        next_at: DateTime<Utc>,
        at: DateTime<Utc>,
    ) -> Result<(), Error> {
        on_db!(&self.db, pool => {
            let mut tx = pool.begin_write().await?;
            sqlx::query(
                "UPDATE mlflow_outbox SET state = $1, attempts = attempts + 1, last_error = $2, \
                 result = COALESCE($3, result), next_at = $4, updated_at = $5 WHERE id = $6",
            )
            .bind(state)
            .bind(error)
            .bind(result)
            .bind(next_at)
            .bind(at)
            .bind(id)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
        });
        Ok(())
    }

    /// The row of `kind`/`subject`, if queued.
    pub async fn mirror_item(
        &self,
        kind: &str,
        subject: &str,
    ) -> Result<Option<MirrorItem>, Error> {
        let row = on_db!(&self.db, pool => {
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT {COLUMNS} FROM mlflow_outbox WHERE kind = $1 AND subject = $2"
            )))
            .bind(kind)
            .bind(subject)
            .fetch_optional(pool)
            .await?
        });
        Ok(row)
    }
}
