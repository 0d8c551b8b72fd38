//! Group commit of run writes: every [`Store::write`](crate::Store) of a
//! run (a new run with its event and audit entry, or the rows an engine
//! decision changed) joins a queue, and one flusher task at a time commits
//! what has queued in one transaction, with one multi-row statement per
//! table, then answers each writer. A writer is answered only after the
//! transaction holding its rows committed; nobody waits for a batch to
//! fill: the flusher takes whatever queued while the previous batch was
//! being written, so one writer alone commits as soon as before, and many
//! share a commit and a handful of statements.
//!
//! A batch that fails is written again a job at a time, so one bad write
//! fails alone. The flusher runs in a task of its own: a writer that stops
//! waiting (its HTTP client went away) cannot abort the others' commit.
//!
//! **Invariant:** a batch gives every job the answer it would have had
//! written alone, in queue order: a delivery id or a body already taken
//! (in the store or earlier in the batch) writes nothing.

use crate::Error;
use crate::db::{BeginWrite, Db, on_db};
use crate::runs::{AttemptRow, Changes, RunRow, StepRow, Written};
use chrono::{DateTime, Utc};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

/// The most jobs one transaction takes.
const BATCH: usize = 256;

/// Splits rows into statements of 256, 128, …, 1 rows (the binary digits
/// of their count): few shapes of statement, each prepared once and cached
/// on its connection, while any count takes at most a handful. 256 rows
/// stay under SQLite's 32,766 bound parameters.
pub(crate) fn pieces<T>(mut rows: &[T]) -> impl Iterator<Item = &[T]> {
    std::iter::from_fn(move || {
        if rows.is_empty() {
            return None;
        }
        let n = rows.len().min(256);
        let size = 1 << n.ilog2();
        let (piece, rest) = rows.split_at(size);
        rows = rest;
        Some(piece)
    })
}

/// Whether a statement of `rows` rows stays prepared on its connection.
/// A statement's prepared form grows with its rows: kept for every size
/// of a busy hour's batches, on every connection, they held megabytes
/// for good. Small ones, the statements of most commits, stay; a large
/// batch prepares its statements again, which its rows outweigh.
pub(crate) fn keep_prepared(rows: usize) -> bool {
    rows <= 8
}

/// An event written with the run it creates, owned.
#[derive(Debug)]
pub(crate) struct EventRow {
    pub kind: String,
    pub pipeline: String,
    pub delivery: Option<String>,
    pub payload: String,
    pub decision: String,
    pub outcome: String,
    pub detail: String,
    pub at: DateTime<Utc>,
    pub same_body: Option<(String, DateTime<Utc>)>,
}

/// An audit entry to append with the run, owned.
#[derive(Debug)]
pub(crate) struct EntryRow {
    pub key: ed25519_dalek::SigningKey,
    pub actor: String,
    pub action: String,
    pub subject: String,
    pub payload: serde_json::Value,
    pub at: DateTime<Utc>,
}

/// One writer's rows and where its answer goes.
pub(crate) struct Job {
    pub run_id: String,
    pub pipeline_hash: String,
    pub changes: Changes,
    pub event: Option<EventRow>,
    pub audit: Option<EntryRow>,
    pub reply: oneshot::Sender<Result<Written, Error>>,
}

/// The queue, and whether a flusher is at work on it.
#[derive(Default)]
pub(crate) struct Group {
    queue: Vec<Job>,
    flushing: bool,
}

impl std::fmt::Debug for Group {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Group")
            .field("queued", &self.queue.len())
            .field("flushing", &self.flushing)
            .finish()
    }
}

/// Queues `job` and waits for its answer, starting a flusher when none is
/// at work.
pub(crate) async fn write(
    db: &Db,
    group: &Arc<Mutex<Group>>,
    job: impl FnOnce(oneshot::Sender<Result<Written, Error>>) -> Job,
) -> Result<Written, Error> {
    let (reply, answer) = oneshot::channel();
    let start = {
        let mut g = lock(group);
        g.queue.push(job(reply));
        !std::mem::replace(&mut g.flushing, true)
    };
    if start {
        tokio::spawn(flusher(db.clone(), Arc::clone(group)));
    }
    // Dropped unanswered only when the flusher's runtime is going away.
    answer
        .await
        .unwrap_or(Err(Error::Db(sqlx::Error::WorkerCrashed)))
}

fn lock(group: &Mutex<Group>) -> std::sync::MutexGuard<'_, Group> {
    // The lock is held for pushes and takes only, which cannot panic.
    group
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Whether a flusher is at work, reset when it ends however it ends (a
/// runtime shutting down drops it mid-batch).
struct Flushing {
    group: Arc<Mutex<Group>>,
    done: bool,
}

impl Drop for Flushing {
    fn drop(&mut self) {
        if !self.done {
            lock(&self.group).flushing = false;
        }
    }
}

async fn flusher(db: Db, group: Arc<Mutex<Group>>) {
    let mut flushing = Flushing { group, done: false };
    loop {
        let jobs: Vec<Job> = {
            let mut g = lock(&flushing.group);
            if g.queue.is_empty() {
                // Under the lock: a writer queueing after this starts
                // the next flusher.
                g.flushing = false;
                flushing.done = true;
                return;
            }
            let n = g.queue.len().min(BATCH);
            g.queue.drain(..n).collect()
        };
        let answers = match flush(&db, &jobs).await {
            Ok(written) => written.into_iter().map(Ok).collect(),
            Err(e) if jobs.len() == 1 => vec![Err(e)],
            // Nothing of the batch was written: each job again on its
            // own, so only a bad one fails.
            Err(_) => {
                let mut answers = Vec::with_capacity(jobs.len());
                for job in &jobs {
                    answers.push(
                        flush(&db, std::slice::from_ref(job))
                            .await
                            .map(|mut w| w.remove(0)),
                    );
                }
                answers
            }
        };
        for (job, answer) in jobs.into_iter().zip(answers) {
            let _ = job.reply.send(answer);
        }
    }
}

const INSERT_EVENT: &str = "INSERT INTO events (kind, pipeline, run_id, payload, decision, created_at, delivery, outcome, detail, body_sha256) ";

const INSERT_RUN: &str = "INSERT INTO runs (id, pipeline, pipeline_hash, trigger, params, event, models, state, reason, created_at, started_at, finished_at, deadline, stopping, retry_of, source_commit, cause) ";
const UPDATE_RUN: &str = " ON CONFLICT (id) DO UPDATE SET state = excluded.state, reason = excluded.reason, started_at = excluded.started_at, \
     finished_at = excluded.finished_at, deadline = excluded.deadline, stopping = excluded.stopping, models = excluded.models";

const INSERT_STEP: &str = "INSERT INTO steps (run_id, idx, id, step, matrix, state, reason, not_before, waiting_until, evidence, started_at, finished_at) ";
const UPDATE_STEP: &str = " ON CONFLICT (run_id, idx) DO UPDATE SET state = excluded.state, reason = excluded.reason, not_before = excluded.not_before, \
     waiting_until = excluded.waiting_until, evidence = excluded.evidence, started_at = excluded.started_at, finished_at = excluded.finished_at";

const INSERT_ATTEMPT: &str = "INSERT INTO attempts (run_id, step_idx, number, state, created_at, started_at, finished_at, deadline, stopping, exit_code, metrics, outputs, image, gpus, reason, artifacts) ";
const UPDATE_ATTEMPT: &str = " ON CONFLICT (run_id, step_idx, number) DO UPDATE SET state = excluded.state, started_at = excluded.started_at, \
     finished_at = excluded.finished_at, deadline = excluded.deadline, stopping = excluded.stopping, exit_code = excluded.exit_code, \
     metrics = excluded.metrics, outputs = excluded.outputs, image = excluded.image, gpus = excluded.gpus, reason = excluded.reason, artifacts = excluded.artifacts";

/// Binds an event row's values, in [`INSERT_EVENT`]'s order.
macro_rules! push_event {
    ($b:ident, $job:expr) => {{
        let job: &Job = $job;
        if let Some(e) = &job.event {
            $b.push_bind(&e.kind)
                .push_bind(&e.pipeline)
                .push_bind(&job.run_id)
                .push_bind(&e.payload)
                .push_bind(&e.decision)
                .push_bind(e.at)
                .push_bind(&e.delivery)
                .push_bind(&e.outcome)
                .push_bind(&e.detail)
                .push_bind(e.same_body.as_ref().map(|(sha256, _)| sha256));
        }
    }};
}

/// Rows of one table, one per key, in the order first written; a later
/// write of a key replaces the earlier one (each is a whole row, and an
/// upsert keeps a row's unchanging columns as first written).
struct Latest<K, V> {
    at: HashMap<K, usize>,
    rows: Vec<V>,
}

impl<K: std::hash::Hash + Eq, V> Latest<K, V> {
    fn new() -> Self {
        Latest {
            at: HashMap::new(),
            rows: Vec::new(),
        }
    }

    /// Keeps `row` for `key`; returns the row it replaced.
    fn put(&mut self, key: K, row: V) -> Option<V> {
        match self.at.get(&key) {
            Some(&i) => Some(std::mem::replace(&mut self.rows[i], row)),
            None => {
                self.at.insert(key, self.rows.len());
                self.rows.push(row);
                None
            }
        }
    }
}

/// Writes `jobs` in one transaction; what each job wrote, in order.
async fn flush(db: &Db, jobs: &[Job]) -> Result<Vec<Written>, Error> {
    let is_pg = matches!(db, Db::Postgres(_));
    let mut written: Vec<Option<Written>> = jobs.iter().map(|_| None).collect();
    on_db!(db, pool => {
        let mut tx = pool.begin_write().await?;
        // Events first, in queue order: whether each is taken decides
        // whether its run is written at all.
        let mut deliveries: HashSet<(&str, &str)> = HashSet::new();
        let mut bodies: HashMap<(&str, &str), &str> = HashMap::new();
        let mut batched: Vec<usize> = Vec::new();
        for (i, job) in jobs.iter().enumerate() {
            let Some(event) = &job.event else { continue };
            let taken = |deliveries: &HashSet<(&str, &str)>| {
                event
                    .delivery
                    .as_deref()
                    .is_some_and(|d| deliveries.contains(&(event.pipeline.as_str(), d)))
            };
            let Some((sha256, since)) = &event.same_body else {
                if taken(&deliveries) {
                    written[i] = Some(Written::DeliveryTaken);
                } else {
                    if let Some(d) = &event.delivery {
                        deliveries.insert((&event.pipeline, d));
                    }
                    batched.push(i);
                }
                continue;
            };
            // A body with a window is judged against what was accepted
            // before it, so it is written on its own, in turn.
            if let Some(run) = bodies.get(&(event.pipeline.as_str(), sha256.as_str())) {
                written[i] = Some(Written::SameBody(Some((*run).to_owned())));
                continue;
            }
            if is_pg {
                // Two deliveries of one body check and insert in turn
                // (SQLite's writers take turns already).
                sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
                    .bind(sha256)
                    .execute(&mut *tx)
                    .await?;
            }
            let earlier: Option<(Option<String>,)> = sqlx::query_as(
                "SELECT run_id FROM events WHERE pipeline = $1 AND body_sha256 = $2 AND created_at >= $3 ORDER BY id LIMIT 1",
            )
            .bind(&event.pipeline)
            .bind(sha256)
            .bind(since)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some((run,)) = earlier {
                written[i] = Some(Written::SameBody(run));
                continue;
            }
            if taken(&deliveries) {
                written[i] = Some(Written::DeliveryTaken);
                continue;
            }
            let mut insert = sqlx::QueryBuilder::new(INSERT_EVENT);
            insert.push_values(std::iter::once(job), |mut b, job| push_event!(b, job));
            insert.push(" ON CONFLICT (pipeline, delivery) DO NOTHING RETURNING id");
            let inserted: Option<(i64,)> =
                insert.build_query_as().fetch_optional(&mut *tx).await?;
            if inserted.is_none() {
                written[i] = Some(Written::DeliveryTaken);
                continue;
            }
            if let Some(d) = &event.delivery {
                deliveries.insert((&event.pipeline, d));
            }
            bodies.insert((&event.pipeline, sha256), &job.run_id);
        }
        for chunk in pieces(&batched) {
            let mut insert = sqlx::QueryBuilder::new(INSERT_EVENT);
            insert.push_values(chunk.iter().map(|&i| &jobs[i]), |mut b, job| push_event!(b, job));
            insert.push(" ON CONFLICT (pipeline, delivery) DO NOTHING RETURNING pipeline, delivery");
            let inserted: Vec<(Option<String>, Option<String>)> =
                insert.build_query_as().persistent(keep_prepared(chunk.len())).fetch_all(&mut *tx).await?;
            let inserted: HashSet<(Option<String>, Option<String>)> = inserted.into_iter().collect();
            for &i in chunk {
                let event = jobs[i].event.as_ref().expect("batched jobs carry an event");
                let key = (Some(event.pipeline.clone()), event.delivery.clone());
                if event.delivery.is_some() && !inserted.contains(&key) {
                    written[i] = Some(Written::DeliveryTaken);
                }
            }
        }
        let accepted: Vec<&Job> = jobs
            .iter()
            .zip(&written)
            .filter(|(_, w)| w.is_none())
            .map(|(job, _)| job)
            .collect();

        let entries: Vec<(&ed25519_dalek::SigningKey, crate::NewEntry<'_>)> = accepted
            .iter()
            .filter_map(|job| job.audit.as_ref())
            .map(|e| {
                (
                    &e.key,
                    crate::NewEntry {
                        actor: &e.actor,
                        action: &e.action,
                        subject: &e.subject,
                        payload: &e.payload,
                        at: e.at,
                    },
                )
            })
            .collect();
        if !entries.is_empty() {
            crate::audit::append_in!(tx, is_pg, entries.iter().map(|(k, e)| (*k, e)));
        }

        let mut runs: Latest<&str, (&RunRow, &str)> = Latest::new();
        let mut steps: Latest<(&str, i64), (&str, &StepRow)> = Latest::new();
        let mut attempts: Latest<(&str, i64, i64), (&str, &AttemptRow)> = Latest::new();
        for job in &accepted {
            let id = job.run_id.as_str();
            if let Some(run) = &job.changes.run
                && let Some((_, hash)) = runs.put(id, (run, &job.pipeline_hash))
                && !hash.is_empty()
            {
                // A save after the create in one batch: the create's
                // version of the pipeline stays.
                let last = runs.at[id];
                runs.rows[last].1 = hash;
            }
            for step in &job.changes.steps {
                steps.put((id, step.idx), (id, step));
            }
            for attempt in &job.changes.attempts {
                attempts.put((id, attempt.step_idx, attempt.number), (id, attempt));
            }
        }
        for chunk in pieces(&runs.rows) {
            let mut upsert = sqlx::QueryBuilder::new(INSERT_RUN);
            upsert.push_values(chunk, |mut b, (r, hash)| {
                b.push_bind(&r.id)
                    .push_bind(&r.pipeline)
                    .push_bind(*hash)
                    .push_bind(&r.trigger)
                    .push_bind(&r.params)
                    .push_bind(&r.event)
                    .push_bind(&r.models)
                    .push_bind(&r.state)
                    .push_bind(&r.reason)
                    .push_bind(r.created_at)
                    .push_bind(r.started_at)
                    .push_bind(r.finished_at)
                    .push_bind(r.deadline)
                    .push_bind(&r.stopping)
                    .push_bind(&r.retry_of)
                    .push_bind(&r.source_commit)
                    .push_bind(&r.cause);
            });
            upsert.push(UPDATE_RUN);
            upsert.build().persistent(keep_prepared(chunk.len())).execute(&mut *tx).await?;
        }
        for chunk in pieces(&steps.rows) {
            let mut upsert = sqlx::QueryBuilder::new(INSERT_STEP);
            upsert.push_values(chunk, |mut b, (run, s)| {
                b.push_bind(*run)
                    .push_bind(s.idx)
                    .push_bind(&s.id)
                    .push_bind(s.step)
                    .push_bind(&s.matrix)
                    .push_bind(&s.state)
                    .push_bind(&s.reason)
                    .push_bind(s.not_before)
                    .push_bind(s.waiting_until)
                    .push_bind(&s.evidence)
                    .push_bind(s.started_at)
                    .push_bind(s.finished_at);
            });
            upsert.push(UPDATE_STEP);
            upsert.build().persistent(keep_prepared(chunk.len())).execute(&mut *tx).await?;
        }
        for chunk in pieces(&attempts.rows) {
            let mut upsert = sqlx::QueryBuilder::new(INSERT_ATTEMPT);
            upsert.push_values(chunk, |mut b, (run, a)| {
                b.push_bind(*run)
                    .push_bind(a.step_idx)
                    .push_bind(a.number)
                    .push_bind(&a.state)
                    .push_bind(a.created_at)
                    .push_bind(a.started_at)
                    .push_bind(a.finished_at)
                    .push_bind(a.deadline)
                    .push_bind(&a.stopping)
                    .push_bind(a.exit_code)
                    .push_bind(&a.metrics)
                    .push_bind(&a.outputs)
                    .push_bind(&a.image)
                    .push_bind(&a.gpus)
                    .push_bind(&a.reason)
                    .push_bind(&a.artifacts);
            });
            upsert.push(UPDATE_ATTEMPT);
            upsert.build().persistent(keep_prepared(chunk.len())).execute(&mut *tx).await?;
        }
        tx.commit().await?;
    });
    Ok(written
        .into_iter()
        .map(|w| w.unwrap_or(Written::Done))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::pieces;

    #[test]
    fn rows_split_into_powers_of_two_in_order() {
        let rows: Vec<u32> = (0..600).collect();
        let sizes: Vec<usize> = pieces(&rows).map(<[u32]>::len).collect();
        assert_eq!(sizes, [256, 256, 64, 16, 8]);
        assert_eq!(pieces(&rows).flatten().copied().collect::<Vec<_>>(), rows);
        assert_eq!(
            pieces(&rows[..37]).map(<[u32]>::len).collect::<Vec<_>>(),
            [32, 4, 1]
        );
        assert_eq!(pieces::<u32>(&[]).count(), 0);
    }
}
