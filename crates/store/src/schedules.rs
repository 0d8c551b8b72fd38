//! Cron bookkeeping: the slots fired, each once per pipeline, and how far
//! each schedule has been considered.

use crate::db::on_db;
use crate::{Error, Store};
use chrono::{DateTime, Utc};

impl Store {
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
