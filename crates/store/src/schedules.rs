//! Cron bookkeeping: the slots fired, each once per pipeline, and how far
//! each schedule has been considered.

use crate::db::{Db, on_db};
use crate::{Error, Store};
use chrono::{DateTime, Utc};

/// The PostgreSQL advisory lock that makes one node the one firing
/// schedules ("weir" and 1, as a 64-bit key).
const SCHEDULER_LOCK: i64 = 0x7765_6972_0000_0001;

/// The right to fire schedules. On SQLite (one node) it is always held; on
/// PostgreSQL it is a session advisory lock on a connection kept apart from
/// the pool: a node that dies drops the connection, and the lock with it.
#[derive(Debug)]
pub struct Leadership {
    conn: Option<sqlx::PgConnection>,
}

impl Leadership {
    /// Whether the lock is still held: the connection that holds it still
    /// answers. A false answer is final; ask [`Store::lead`] again.
    pub async fn holds(&mut self) -> bool {
        let Some(conn) = &mut self.conn else {
            return true;
        };
        let alive = sqlx::query("SELECT 1").execute(&mut *conn).await.is_ok();
        if !alive {
            self.conn = None;
        }
        alive
    }
}

impl Store {
    /// Tries to become the node that fires schedules: `None` while another
    /// node is.
    pub async fn lead(&self) -> Result<Option<Leadership>, Error> {
        let Db::Postgres(pool) = &self.db else {
            return Ok(Some(Leadership { conn: None }));
        };
        let mut conn = pool.acquire().await?.detach();
        let (locked,): (bool,) = sqlx::query_as("SELECT pg_try_advisory_lock($1)")
            .bind(SCHEDULER_LOCK)
            .fetch_one(&mut conn)
            .await?;
        Ok(locked.then_some(Leadership { conn: Some(conn) }))
    }

    /// Claims slot `slot` of `pipeline`: true the first time, false when
    /// it was fired already (by this node, an earlier process, or a backfill).
    pub async fn claim_slot(&self, pipeline: &str, slot: DateTime<Utc>) -> Result<bool, Error> {
        let claimed: Option<(String,)> = on_db!(&self.db, pool => {
            sqlx::query_as(
                "INSERT INTO schedule_fires (pipeline, slot, run_id, created_at) VALUES ($1, $2, NULL, $3) ON CONFLICT (pipeline, slot) DO NOTHING RETURNING pipeline",
            )
            .bind(pipeline)
            .bind(slot)
            .bind(Utc::now())
            .fetch_optional(pool)
            .await?
        });
        Ok(claimed.is_some())
    }

    /// Records the run a claimed slot started.
    pub async fn slot_run(
        &self,
        pipeline: &str,
        slot: DateTime<Utc>,
        run_id: &str,
    ) -> Result<(), Error> {
        on_db!(&self.db, pool => {
            sqlx::query("UPDATE schedule_fires SET run_id = $1 WHERE pipeline = $2 AND slot = $3")
                .bind(run_id)
                .bind(pipeline)
                .bind(slot)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// How far schedule `cron` of `pipeline` has been considered.
    pub async fn schedule_mark(
        &self,
        pipeline: &str,
        cron: &str,
    ) -> Result<Option<DateTime<Utc>>, Error> {
        let row: Option<(DateTime<Utc>,)> = on_db!(&self.db, pool => {
            sqlx::query_as("SELECT mark FROM schedule_marks WHERE pipeline = $1 AND cron = $2")
                .bind(pipeline)
                .bind(cron)
                .fetch_optional(pool)
                .await?
        });
        Ok(row.map(|r| r.0))
    }

    /// Moves the mark of schedule `cron` of `pipeline` to `mark`.
    pub async fn set_schedule_mark(
        &self,
        pipeline: &str,
        cron: &str,
        mark: DateTime<Utc>,
    ) -> Result<(), Error> {
        on_db!(&self.db, pool => {
            sqlx::query(
                "INSERT INTO schedule_marks (pipeline, cron, mark) VALUES ($1, $2, $3) ON CONFLICT (pipeline, cron) DO UPDATE SET mark = excluded.mark",
            )
            .bind(pipeline)
            .bind(cron)
            .bind(mark)
            .execute(pool)
            .await?;
        });
        Ok(())
    }
}
