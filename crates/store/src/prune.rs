//! Retention: finished runs older than a cutoff deleted with their step
//! instances, attempts and logs (the foreign keys cascade), in bounded
//! batches so that a prune of many runs never holds the store for long.
//! What the registry and the audit log rely on is never pruned: a run that
//! registered a model version stays (lineage, cards and replays read it),
//! and audit entries stay (they name runs; the chain still verifies).

use crate::db::{BeginWrite, on_db};
use crate::{Error, Store};
use chrono::{DateTime, Utc};

/// What a prune removed, or would remove.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Runs.
    pub runs: u64,
    /// Their attempts.
    pub attempts: u64,
    /// The bytes of their logs.
    pub log_bytes: u64,
}

/// How long one prune transaction goes on deleting runs: what a trigger
/// or a run's commit can wait behind it.
const SLICE: std::time::Duration = std::time::Duration::from_millis(10);

/// The runs a prune may take: finished before the cutoff, and registering
/// no model version. They are read oldest first from `runs_by_finish`:
/// the state test is written so that no planner reads it from an index
/// (from `runs_by_state`, every finished run of the history would be read
/// and sorted for each batch, inside its write transaction).
const PRUNABLE: &str = "FROM runs r WHERE r.finished_at < $1 \
     AND COALESCE(r.state, '') IN ('succeeded', 'failed', 'cancelled') \
     AND NOT EXISTS (SELECT 1 FROM model_versions v WHERE v.run_id = r.id)";

impl Store {
    /// What pruning the runs finished before `before` would remove.
    pub async fn prunable(&self, before: DateTime<Utc>) -> Result<Pruned, Error> {
        let (runs, attempts, log_bytes): (i64, i64, i64) = on_db!(&self.db, pool => {
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT COUNT(DISTINCT r.id), COUNT(a.number), CAST(COALESCE(SUM(a.log_bytes), 0) AS BIGINT) \
                 FROM (SELECT r.id {PRUNABLE}) r LEFT JOIN attempts a ON a.run_id = r.id"
            )))
            .bind(before)
            .fetch_one(pool)
            .await?
        });
        Ok(Pruned {
            runs: runs.max(0) as u64,
            attempts: attempts.max(0) as u64,
            log_bytes: log_bytes.max(0) as u64,
        })
    }

    /// Deletes at most `limit` of the runs finished before `before`, oldest
    /// first, in one short transaction that stops taking runs after
    /// 10 ms (a run's rows and their cascade cost most of a
    /// millisecond on SQLite, and every other writer waits meanwhile);
    /// returns the ids deleted and what went with them (none left: an
    /// empty list).
    pub async fn prune_batch(
        &self,
        before: DateTime<Utc>,
        limit: i64,
    ) -> Result<(Vec<String>, Pruned), Error> {
        let (ids, attempts, log_bytes) = on_db!(&self.db, pool => {
            let mut tx = pool.begin_write().await?;
            let mut ids: Vec<(String,)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT r.id {PRUNABLE} ORDER BY r.finished_at LIMIT $2"
            )))
            .bind(before)
            .bind(limit)
            .fetch_all(&mut *tx)
            .await?;
            let mut attempts = 0i64;
            let mut log_bytes = 0i64;
            let began = std::time::Instant::now();
            let mut deleted = 0;
            for (id,) in &ids {
                if began.elapsed() >= SLICE {
                    break;
                }
                deleted += 1;
                let (n, bytes): (i64, i64) = sqlx::query_as(
                    "SELECT COUNT(*), CAST(COALESCE(SUM(log_bytes), 0) AS BIGINT) FROM attempts WHERE run_id = $1",
                )
                .bind(id)
                .fetch_one(&mut *tx)
                .await?;
                attempts += n;
                log_bytes += bytes;
                sqlx::query("DELETE FROM runs WHERE id = $1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("DELETE FROM mlflow_outbox WHERE kind = 'run' AND subject = $1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            ids.truncate(deleted);
            (ids, attempts, log_bytes)
        });
        let pruned = Pruned {
            runs: ids.len() as u64,
            attempts: attempts.max(0) as u64,
            log_bytes: log_bytes.max(0) as u64,
        };
        Ok((ids.into_iter().map(|(id,)| id).collect(), pruned))
    }
}
