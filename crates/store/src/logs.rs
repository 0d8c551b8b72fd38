//! Step logs, stored in chunks as they arrive and capped per attempt: past
//! the cap the oldest chunks go, and reading says how much was dropped.

use crate::db::{BeginWrite, on_db};
use crate::{Error, Store};
use chrono::{DateTime, Utc};

impl Store {
    /// Appends `data`, which starts at byte `at` of all the attempt has
    /// written, to its log, dropping the oldest bytes when the attempt's
    /// log would pass the cap. What the store has already (a write tried
    /// again after its answer was lost) is not stored twice.
    pub async fn append_log(
        &self,
        run: &str,
        step: usize,
        attempt: u32,
        at: u64,
        data: &[u8],
    ) -> Result<(), Error> {
        if data.is_empty() {
            return Ok(());
        }
        let cap = self.log_cap.max(1);
        let (step, attempt) = (step as i64, i64::from(attempt));
        on_db!(&self.db, pool => {
            let mut tx = pool.begin_write().await?;
            let (mut bytes, before): (i64, i64) = sqlx::query_as(
                "SELECT log_bytes, log_dropped FROM attempts WHERE run_id = $1 AND step_idx = $2 AND number = $3",
            )
            .bind(run)
            .bind(step)
            .bind(attempt)
            .fetch_one(&mut *tx)
            .await?;
            let written = (bytes + before).max(0) as u64;
            let stored_already = written.saturating_sub(at).min(data.len() as u64) as usize;
            let data = &data[stored_already..];
            if data.is_empty() {
                return Ok(());
            }
            // A chunk larger than the cap keeps its tail only.
            let (data, mut dropped) = if data.len() as u64 > cap {
                let cut = data.len() - cap as usize;
                (&data[cut..], cut as i64)
            } else {
                (data, 0)
            };
            let (seq,): (i64,) = sqlx::query_as(
                "SELECT COALESCE(MAX(seq), 0) + 1 FROM logs WHERE run_id = $1 AND step_idx = $2 AND attempt = $3",
            )
            .bind(run)
            .bind(step)
            .bind(attempt)
            .fetch_one(&mut *tx)
            .await?;
            sqlx::query("INSERT INTO logs (run_id, step_idx, attempt, seq, data, created_at) VALUES ($1, $2, $3, $4, $5, $6)")
                .bind(run)
                .bind(step)
                .bind(attempt)
                .bind(seq)
                .bind(data)
                .bind(Utc::now())
                .execute(&mut *tx)
                .await?;
            bytes += data.len() as i64;
            if bytes > cap as i64 {
                let chunks: Vec<(i64, i64)> = sqlx::query_as(
                    "SELECT seq, CAST(length(data) AS BIGINT) FROM logs WHERE run_id = $1 AND step_idx = $2 AND attempt = $3 AND seq < $4 ORDER BY seq",
                )
                .bind(run)
                .bind(step)
                .bind(attempt)
                .bind(seq)
                .fetch_all(&mut *tx)
                .await?;
                let mut last_dropped = 0;
                for (old_seq, len) in chunks {
                    if bytes <= cap as i64 {
                        break;
                    }
                    bytes -= len;
                    dropped += len;
                    last_dropped = old_seq;
                }
                sqlx::query("DELETE FROM logs WHERE run_id = $1 AND step_idx = $2 AND attempt = $3 AND seq <= $4")
                    .bind(run)
                    .bind(step)
                    .bind(attempt)
                    .bind(last_dropped)
                    .execute(&mut *tx)
                    .await?;
            }
            sqlx::query(
                "UPDATE attempts SET log_bytes = $1, log_dropped = log_dropped + $2 WHERE run_id = $3 AND step_idx = $4 AND number = $5",
            )
            .bind(bytes)
            .bind(dropped)
            .bind(run)
            .bind(step)
            .bind(attempt)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
        });
        Ok(())
    }

    /// How many bytes of log an attempt has produced so far: those stored
    /// and those dropped by the cap.
    pub async fn log_written(&self, run: &str, step: usize, attempt: u32) -> Result<u64, Error> {
        let (step, attempt) = (step as i64, i64::from(attempt));
        let row: Option<(i64, i64)> = on_db!(&self.db, pool => {
            sqlx::query_as("SELECT log_bytes, log_dropped FROM attempts WHERE run_id = $1 AND step_idx = $2 AND number = $3")
                .bind(run)
                .bind(step)
                .bind(attempt)
                .fetch_optional(pool)
                .await?
        });
        Ok(row.map_or(0, |(bytes, dropped)| (bytes + dropped).max(0) as u64))
    }

    /// An attempt's log from byte `from` of all it ever wrote (dropped
    /// bytes included, so offsets stay valid as the cap drops old chunks),
    /// and the offset to ask from next time.
    pub async fn read_log_from(
        &self,
        run: &str,
        step: usize,
        attempt: u32,
        from: u64,
    ) -> Result<(Vec<u8>, u64), Error> {
        let (step_i, attempt_i) = (step as i64, i64::from(attempt));
        let (dropped, chunks): (Option<(i64,)>, Vec<(Vec<u8>,)>) = on_db!(&self.db, pool => {
            let mut tx = pool.begin().await?;
            let dropped = sqlx::query_as("SELECT log_dropped FROM attempts WHERE run_id = $1 AND step_idx = $2 AND number = $3")
                .bind(run)
                .bind(step_i)
                .bind(attempt_i)
                .fetch_optional(&mut *tx)
                .await?;
            let chunks = sqlx::query_as("SELECT data FROM logs WHERE run_id = $1 AND step_idx = $2 AND attempt = $3 ORDER BY seq")
                .bind(run)
                .bind(step_i)
                .bind(attempt_i)
                .fetch_all(&mut *tx)
                .await?;
            tx.commit().await?;
            (dropped, chunks)
        });
        let start = dropped.map_or(0, |d| d.0.max(0) as u64);
        let stored: Vec<u8> = chunks.into_iter().flat_map(|c| c.0).collect();
        let end = start + stored.len() as u64;
        let skip = from.saturating_sub(start).min(stored.len() as u64) as usize;
        Ok((stored[skip..].to_vec(), end.max(from.min(end))))
    }

    /// When the first chunk of an attempt's log was stored.
    pub async fn first_log_at(
        &self,
        run: &str,
        step: usize,
        attempt: u32,
    ) -> Result<Option<DateTime<Utc>>, Error> {
        let (step, attempt) = (step as i64, i64::from(attempt));
        let row: Option<(DateTime<Utc>,)> = on_db!(&self.db, pool => {
            sqlx::query_as("SELECT created_at FROM logs WHERE run_id = $1 AND step_idx = $2 AND attempt = $3 ORDER BY seq LIMIT 1")
                .bind(run)
                .bind(step)
                .bind(attempt)
                .fetch_optional(pool)
                .await?
        });
        Ok(row.map(|r| r.0))
    }

    /// The stored log of an attempt; when bytes were dropped, a marker line
    /// saying how many comes first.
    pub async fn read_log(&self, run: &str, step: usize, attempt: u32) -> Result<Vec<u8>, Error> {
        let (step, attempt) = (step as i64, i64::from(attempt));
        let (dropped, chunks): (Option<(i64,)>, Vec<(Vec<u8>,)>) = on_db!(&self.db, pool => {
            let dropped = sqlx::query_as("SELECT log_dropped FROM attempts WHERE run_id = $1 AND step_idx = $2 AND number = $3")
                .bind(run)
                .bind(step)
                .bind(attempt)
                .fetch_optional(pool)
                .await?;
            let chunks = sqlx::query_as("SELECT data FROM logs WHERE run_id = $1 AND step_idx = $2 AND attempt = $3 ORDER BY seq")
                .bind(run)
                .bind(step)
                .bind(attempt)
                .fetch_all(pool)
                .await?;
            (dropped, chunks)
        });
        let mut out = Vec::new();
        if let Some((dropped,)) = dropped
            && dropped > 0
        {
            out.extend_from_slice(
                format!(
                    "[weir: {dropped} earlier bytes dropped; an attempt keeps the last {} bytes]\n",
                    self.log_cap
                )
                .as_bytes(),
            );
        }
        for (chunk,) in chunks {
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }
}
