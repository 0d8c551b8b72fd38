//! Runs, their step instances and attempts: created, saved as the engine
//! changes them (only the rows that changed, in one transaction), loaded.

use crate::db::on_db;
use crate::{Error, Store};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use std::str::FromStr;
use weir_engine::{Attempt, Decision, Run, RunState, StepRun};

/// A run as listings show it.
#[derive(Debug, Clone, PartialEq)]
pub struct RunSummary {
    /// The run's id.
    pub id: String,
    /// Its pipeline.
    pub pipeline: String,
    /// The kind of what started it (`manual`, `webhook`, …).
    pub trigger: String,
    /// Where it is.
    pub state: RunState,
    /// Why it ended, when it did not succeed.
    pub reason: Option<String>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it ended.
    pub finished_at: Option<DateTime<Utc>>,
}

/// Which runs [`Store::list_runs_where`] lists.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunFilter<'a> {
    /// Only this pipeline's.
    pub pipeline: Option<&'a str>,
    /// Only runs in this state (`running`, `failed`, …).
    pub state: Option<&'a str>,
    /// Only runs of this cause's kind (`manual`, `webhook`, …).
    pub trigger: Option<&'a str>,
    /// Only runs created before this one (the cursor of the next page).
    pub after: Option<&'a str>,
}

/// A [`RunSummary`] as its row holds it.
#[derive(sqlx::FromRow)]
struct SummaryRow {
    id: String,
    pipeline: String,
    trigger: String,
    state: String,
    reason: Option<String>,
    created_at: DateTime<Utc>,
    finished_at: Option<DateTime<Utc>>,
}

impl SummaryRow {
    fn summary(self) -> Result<RunSummary, Error> {
        Ok(RunSummary {
            state: parse_state(&self.state)?,
            id: self.id,
            pipeline: self.pipeline,
            trigger: self.trigger,
            reason: self.reason,
            created_at: self.created_at,
            finished_at: self.finished_at,
        })
    }
}

/// Counts for monitoring, from [`Store::counts`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Counts {
    /// Runs by state.
    pub runs: Vec<(String, i64)>,
    /// Step instances by state.
    pub steps: Vec<(String, i64)>,
    /// Events by kind and the kind of weir's decision.
    pub events: Vec<(String, String, i64)>,
}

/// A `runs` row.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub(crate) struct RunRow {
    pub(crate) id: String,
    pub(crate) pipeline: String,
    pub(crate) trigger: String,
    pub(crate) cause: String,
    pub(crate) params: String,
    pub(crate) event: String,
    pub(crate) models: String,
    pub(crate) state: String,
    pub(crate) reason: Option<String>,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) started_at: Option<DateTime<Utc>>,
    pub(crate) finished_at: Option<DateTime<Utc>>,
    pub(crate) deadline: Option<DateTime<Utc>>,
    pub(crate) stopping: Option<String>,
    pub(crate) retry_of: Option<String>,
    pub(crate) source_commit: Option<String>,
}

/// An event stored with the run it creates ([`Store::create_run_with`]).
#[derive(Debug, Clone)]
pub struct NewEvent<'a> {
    /// `webhook`, `drift`, …
    pub kind: &'a str,
    /// The pipeline it concerns.
    pub pipeline: &'a str,
    /// Its delivery id, unique per pipeline, when it has one.
    pub delivery: Option<&'a str>,
    /// The payload.
    pub payload: &'a serde_json::Value,
    /// What weir decided.
    pub decision: &'a Decision,
    /// When it arrived.
    pub at: DateTime<Utc>,
    /// The SHA-256 (hex) of a webhook delivery's signed body, and since
    /// when an event of the pipeline with the same body makes this one a
    /// replay of it.
    pub same_body: Option<(&'a str, DateTime<Utc>)>,
}

/// What [`Store::write`] did.
pub(crate) enum Written {
    /// Everything.
    Done,
    /// Nothing: the event's delivery id was taken.
    DeliveryTaken,
    /// Nothing: an event with the same body came within the window; the
    /// run it created, if any.
    SameBody(Option<String>),
}

/// A `steps` row.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub(crate) struct StepRow {
    pub(crate) idx: i64,
    pub(crate) id: String,
    pub(crate) step: i64,
    pub(crate) matrix: String,
    pub(crate) state: String,
    pub(crate) reason: Option<String>,
    pub(crate) not_before: Option<DateTime<Utc>>,
    pub(crate) waiting_until: Option<DateTime<Utc>>,
    pub(crate) evidence: String,
    pub(crate) started_at: Option<DateTime<Utc>>,
    pub(crate) finished_at: Option<DateTime<Utc>>,
}

/// An `attempts` row.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub(crate) struct AttemptRow {
    pub(crate) step_idx: i64,
    pub(crate) number: i64,
    pub(crate) state: String,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) started_at: Option<DateTime<Utc>>,
    pub(crate) finished_at: Option<DateTime<Utc>>,
    pub(crate) deadline: Option<DateTime<Utc>>,
    pub(crate) stopping: Option<String>,
    pub(crate) exit_code: Option<i64>,
    pub(crate) metrics: String,
    pub(crate) outputs: String,
    pub(crate) image: Option<String>,
    pub(crate) gpus: String,
    pub(crate) artifacts: String,
    pub(crate) reason: Option<String>,
}

fn json<T: Serialize>(value: &T) -> String {
    // Serializing plain data (maps, strings, numbers) cannot fail.
    serde_json::to_string(value).unwrap_or_else(|_| "null".to_owned())
}

fn parse_json<T: DeserializeOwned>(text: &str, what: &str) -> Result<T, Error> {
    serde_json::from_str(text).map_err(|e| Error::Corrupt(format!("{what}: {e}")))
}

fn parse_state<T: FromStr<Err = weir_engine::UnknownState>>(text: &str) -> Result<T, Error> {
    text.parse()
        .map_err(|e: weir_engine::UnknownState| Error::Corrupt(e.to_string()))
}

fn run_row(run: &Run) -> RunRow {
    RunRow {
        id: run.id.clone(),
        pipeline: run.pipeline.clone(),
        trigger: run.cause.kind().to_owned(),
        cause: json(&run.cause),
        params: json(&run.params),
        event: json(&run.event),
        models: json(&run.models),
        state: run.state.as_str().to_owned(),
        reason: run.reason.clone(),
        created_at: run.created_at,
        started_at: run.started_at,
        finished_at: run.finished_at,
        deadline: run.deadline,
        stopping: run.stopping.as_ref().map(json),
        retry_of: run.retry_of().map(str::to_owned),
        source_commit: run.source_commit.clone(),
    }
}

fn step_row(idx: usize, step: &StepRun) -> StepRow {
    StepRow {
        idx: idx as i64,
        id: step.id.clone(),
        step: step.step as i64,
        matrix: json(&step.matrix),
        state: step.state.as_str().to_owned(),
        reason: step.reason.clone(),
        not_before: step.not_before,
        waiting_until: step.waiting_until,
        evidence: json(&step.evidence),
        started_at: step.started_at,
        finished_at: step.finished_at,
    }
}

fn attempt_row(step_idx: usize, attempt: &Attempt) -> AttemptRow {
    AttemptRow {
        step_idx: step_idx as i64,
        number: i64::from(attempt.number),
        state: attempt.state.as_str().to_owned(),
        created_at: attempt.created_at,
        started_at: attempt.started_at,
        finished_at: attempt.finished_at,
        deadline: attempt.deadline,
        stopping: attempt.stopping.as_ref().map(json),
        exit_code: attempt.exit_code.map(i64::from),
        metrics: json(&attempt.metrics),
        outputs: json(&attempt.outputs),
        image: attempt.image.clone(),
        gpus: json(&attempt.gpus),
        artifacts: json(&attempt.artifacts),
        reason: attempt.reason.clone(),
    }
}

/// The rows that differ between two states of a run (all of them when
/// there is no earlier state).
pub(crate) struct Changes {
    pub(crate) run: Option<RunRow>,
    pub(crate) steps: Vec<StepRow>,
    pub(crate) attempts: Vec<AttemptRow>,
}

/// The rows that differ between `before` and `after`. Parts that compare
/// equal are skipped before any row is built: a decision touches one or
/// two steps of a run, and rows serialize their JSON columns.
fn changes(before: Option<&Run>, after: &Run) -> Changes {
    let run = match before {
        Some(b) if b.same_apart_from_steps(after) => None,
        _ => Some(run_row(after)),
    };
    let mut steps = Vec::new();
    let mut attempts = Vec::new();
    for (idx, step) in after.steps.iter().enumerate() {
        let old = before.and_then(|b| b.steps.get(idx));
        if old == Some(step) {
            continue;
        }
        let row = step_row(idx, step);
        if old.is_none_or(|o| step_row(idx, o) != row) {
            steps.push(row);
        }
        for attempt in &step.attempts {
            let old_attempt =
                old.and_then(|o| o.attempts.iter().find(|a| a.number == attempt.number));
            if old_attempt != Some(attempt) {
                attempts.push(attempt_row(idx, attempt));
            }
        }
    }
    Changes {
        run,
        steps,
        attempts,
    }
}

impl Store {
    /// Stores a pipeline file's text under its SHA-256 and returns the hash.
    /// Storing the same text again is a no-op.
    pub async fn save_pipeline(&self, name: &str, source: &str) -> Result<String, Error> {
        let hash = hex::encode(Sha256::digest(source.as_bytes()));
        on_db!(&self.db, pool => {
            sqlx::query("INSERT INTO pipelines (hash, name, source, created_at) VALUES ($1, $2, $3, $4) ON CONFLICT (hash) DO NOTHING")
                .bind(&hash)
                .bind(name)
                .bind(source)
                .bind(Utc::now())
                .execute(pool)
                .await?;
        });
        Ok(hash)
    }

    /// The text of the pipeline version `hash`.
    pub async fn pipeline_source(&self, hash: &str) -> Result<Option<String>, Error> {
        let source: Option<(String,)> = on_db!(&self.db, pool => {
            sqlx::query_as("SELECT source FROM pipelines WHERE hash = $1").bind(hash).fetch_optional(pool).await?
        });
        Ok(source.map(|s| s.0))
    }

    /// Stores a new run of the pipeline version `pipeline_hash`, with all
    /// its step instances.
    pub async fn create_run(&self, run: &Run, pipeline_hash: &str) -> Result<(), Error> {
        self.write(None, run, pipeline_hash, None, None)
            .await
            .map(drop)
    }

    /// Stores a new run with the event that caused it and the audit entry
    /// of its trigger, in one transaction (a webhook delivery costs one
    /// commit). When the event's delivery id was taken before, nothing is
    /// written and the answer is the run that delivery created (`None`
    /// while it is still being handled).
    pub async fn create_run_with(
        &self,
        run: &Run,
        pipeline_hash: &str,
        event: Option<&NewEvent<'_>>,
        audit: Option<(&ed25519_dalek::SigningKey, &crate::NewEntry<'_>)>,
    ) -> Result<Result<(), Option<String>>, Error> {
        match self.write(None, run, pipeline_hash, event, audit).await? {
            Written::Done => return Ok(Ok(())),
            Written::SameBody(run) => return Ok(Err(run)),
            Written::DeliveryTaken => {}
        }
        let Some(event) = event else {
            return Ok(Err(None));
        };
        let existing: Option<(Option<String>,)> = on_db!(&self.db, pool => {
            sqlx::query_as("SELECT run_id FROM events WHERE pipeline = $1 AND delivery = $2")
                .bind(event.pipeline)
                .bind(event.delivery)
                .fetch_optional(pool)
                .await?
        });
        Ok(Err(existing.and_then(|e| e.0)))
    }

    /// Commits what changed from `before` to `after` (the same run), in one
    /// transaction: the engine's decisions are durable once this returns.
    pub async fn save_run(&self, before: &Run, after: &Run) -> Result<(), Error> {
        self.write(Some(before), after, "", None, None)
            .await
            .map(drop)
    }

    /// Writes the changes, with `event` and the `audit` entry when given;
    /// nothing when the event's delivery id was taken or its body came
    /// within its window (what [`Written`] says). The write joins
    /// concurrent ones in one transaction (`group.rs`) and returns once
    /// that committed.
    async fn write(
        &self,
        before: Option<&Run>,
        after: &Run,
        pipeline_hash: &str,
        event: Option<&NewEvent<'_>>,
        audit: Option<(&ed25519_dalek::SigningKey, &crate::NewEntry<'_>)>,
    ) -> Result<Written, Error> {
        let changes = changes(before, after);
        if changes.run.is_none() && changes.steps.is_empty() && changes.attempts.is_empty() {
            return Ok(Written::Done);
        }
        let event = event.map(|e| crate::group::EventRow {
            kind: e.kind.to_owned(),
            pipeline: e.pipeline.to_owned(),
            delivery: e.delivery.map(str::to_owned),
            payload: e.payload.to_string(),
            decision: e.decision.to_string(),
            outcome: e.decision.kind().to_owned(),
            detail: json(e.decision),
            at: e.at,
            same_body: e
                .same_body
                .map(|(sha256, since)| (sha256.to_owned(), since)),
        });
        let audit = audit.map(|(key, e)| crate::group::EntryRow {
            key: key.clone(),
            actor: e.actor.to_owned(),
            action: e.action.to_owned(),
            subject: e.subject.to_owned(),
            payload: e.payload.clone(),
            at: e.at,
        });
        crate::group::write(&self.db, &self.group, |reply| crate::group::Job {
            run_id: after.id.clone(),
            pipeline_hash: pipeline_hash.to_owned(),
            changes,
            event,
            audit,
            reply,
        })
        .await
    }

    /// Loads a run with all its step instances and attempts.
    pub async fn load_run(&self, id: &str) -> Result<Run, Error> {
        let (run, steps, attempts): (Option<RunRow>, Vec<StepRow>, Vec<AttemptRow>) = on_db!(&self.db, pool => {
            let run = sqlx::query_as(
                "SELECT id, pipeline, trigger, cause, params, event, models, state, reason, created_at, started_at, finished_at, deadline, stopping, retry_of, source_commit FROM runs WHERE id = $1",
            )
            .bind(id)
            .fetch_optional(pool)
            .await?;
            let steps = sqlx::query_as(
                "SELECT idx, id, step, matrix, state, reason, not_before, waiting_until, evidence, started_at, finished_at FROM steps WHERE run_id = $1 ORDER BY idx",
            )
            .bind(id)
            .fetch_all(pool)
            .await?;
            let attempts = sqlx::query_as(
                "SELECT step_idx, number, state, created_at, started_at, finished_at, deadline, stopping, exit_code, metrics, outputs, image, gpus, artifacts, reason FROM attempts WHERE run_id = $1 ORDER BY step_idx, number",
            )
            .bind(id)
            .fetch_all(pool)
            .await?;
            (run, steps, attempts)
        });
        let run = run.ok_or_else(|| Error::NoSuchRun(id.to_owned()))?;
        let mut instances: Vec<StepRun> = steps
            .into_iter()
            .map(|s| {
                Ok(StepRun {
                    id: s.id,
                    step: s.step as usize,
                    matrix: parse_json(&s.matrix, "step matrix")?,
                    state: parse_state(&s.state)?,
                    reason: s.reason,
                    attempts: Vec::new(),
                    not_before: s.not_before,
                    waiting_until: s.waiting_until,
                    evidence: parse_json(&s.evidence, "gate evidence")?,
                    started_at: s.started_at,
                    finished_at: s.finished_at,
                })
            })
            .collect::<Result<_, Error>>()?;
        for a in attempts {
            let instance = instances.get_mut(a.step_idx as usize).ok_or_else(|| {
                Error::Corrupt(format!("attempt of missing step #{}", a.step_idx))
            })?;
            instance.attempts.push(Attempt {
                number: a.number as u32,
                state: parse_state(&a.state)?,
                created_at: a.created_at,
                started_at: a.started_at,
                finished_at: a.finished_at,
                deadline: a.deadline,
                stopping: a
                    .stopping
                    .as_deref()
                    .map(|s| parse_json(s, "attempt stop"))
                    .transpose()?,
                exit_code: a.exit_code.map(|c| c as i32),
                metrics: parse_json(&a.metrics, "metrics")?,
                outputs: parse_json(&a.outputs, "outputs")?,
                image: a.image,
                gpus: parse_json(&a.gpus, "attempt gpus")?,
                artifacts: parse_json(&a.artifacts, "attempt artifacts")?,
                reason: a.reason,
            });
        }
        Ok(Run {
            id: run.id,
            pipeline: run.pipeline,
            cause: parse_json(&run.cause, "run cause")?,
            params: parse_json(&run.params, "run params")?,
            event: parse_json(&run.event, "run event")?,
            models: parse_json(&run.models, "run models")?,
            state: parse_state(&run.state)?,
            reason: run.reason,
            created_at: run.created_at,
            started_at: run.started_at,
            finished_at: run.finished_at,
            deadline: run.deadline,
            stopping: run
                .stopping
                .as_deref()
                .map(|s| parse_json(s, "run stop"))
                .transpose()?,
            steps: instances,
            source_commit: run.source_commit,
        })
    }

    /// The pipeline version a run was created from.
    pub async fn run_pipeline_hash(&self, id: &str) -> Result<String, Error> {
        let row: Option<(String,)> = on_db!(&self.db, pool => {
            sqlx::query_as("SELECT pipeline_hash FROM runs WHERE id = $1").bind(id).fetch_optional(pool).await?
        });
        row.map(|r| r.0)
            .ok_or_else(|| Error::NoSuchRun(id.to_owned()))
    }

    /// The latest `limit` runs, newest first.
    pub async fn list_runs(&self, limit: i64) -> Result<Vec<RunSummary>, Error> {
        self.list_runs_where(&RunFilter::default(), limit).await
    }

    /// The latest `limit` runs that `filter` keeps, newest first; with
    /// `filter.after`, those created before that run (the next page). A
    /// page costs the same however many runs the store holds: it is read
    /// from an index from the cursor on.
    pub async fn list_runs_where(
        &self,
        filter: &RunFilter<'_>,
        limit: i64,
    ) -> Result<Vec<RunSummary>, Error> {
        let mut clauses = Vec::new();
        let mut values: Vec<&str> = Vec::new();
        for (column, value) in [
            ("pipeline", filter.pipeline),
            ("state", filter.state),
            ("trigger", filter.trigger),
        ] {
            if let Some(value) = value {
                values.push(value);
                clauses.push(format!("{column} = ${}", values.len()));
            }
        }
        if let Some(after) = filter.after {
            values.push(after);
            let n = values.len();
            clauses.push(format!(
                "(created_at, id) < (SELECT c.created_at, c.id FROM runs c WHERE c.id = ${n})"
            ));
        }
        let mut sql = String::from(
            "SELECT id, pipeline, trigger, state, reason, created_at, finished_at FROM runs",
        );
        if !clauses.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&clauses.join(" AND "));
        }
        sql.push_str(&format!(
            " ORDER BY created_at DESC, id DESC LIMIT ${}",
            values.len() + 1
        ));
        let rows: Vec<SummaryRow> = on_db!(&self.db, pool => {
            let mut query = sqlx::query_as(sqlx::AssertSqlSafe(sql.clone()));
            for value in &values {
                query = query.bind(*value);
            }
            query.bind(limit).fetch_all(pool).await?
        });
        rows.into_iter().map(SummaryRow::summary).collect()
    }

    /// Runs and step instances by state, events by kind and outcome: a few
    /// rows of `tallies`, which triggers keep as those tables change, so a
    /// scrape costs the same with a year of history as with none. On
    /// PostgreSQL the writers' deltas are folded in first, by one reader
    /// at a time (the others count them as they are).
    pub async fn counts(&self) -> Result<Counts, Error> {
        let rows: Vec<(String, String, String, i64)> = match &self.db {
            crate::Db::Sqlite(pool) => {
                sqlx::query_as("SELECT tbl, k1, k2, n FROM tallies ORDER BY tbl, k1, k2")
                    .fetch_all(pool)
                    .await?
            }
            crate::Db::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                let (folder,): (bool,) =
                    sqlx::query_as("SELECT pg_try_advisory_xact_lock(hashtext('weir.tallies'))")
                        .fetch_one(&mut *tx)
                        .await?;
                if folder {
                    sqlx::query(
                        "WITH moved AS (DELETE FROM tally_deltas RETURNING tbl, k1, k2, n) \
                         INSERT INTO tallies (tbl, k1, k2, n) SELECT tbl, k1, k2, SUM(n) FROM moved GROUP BY tbl, k1, k2 \
                         ON CONFLICT (tbl, k1, k2) DO UPDATE SET n = tallies.n + excluded.n",
                    )
                    .execute(&mut *tx)
                    .await?;
                }
                let rows = sqlx::query_as(
                    "SELECT tbl, k1, k2, CAST(SUM(n) AS BIGINT) FROM (SELECT tbl, k1, k2, n FROM tallies UNION ALL SELECT tbl, k1, k2, n FROM tally_deltas) AS counted \
                     GROUP BY tbl, k1, k2 ORDER BY tbl, k1, k2",
                )
                .fetch_all(&mut *tx)
                .await?;
                tx.commit().await?;
                rows
            }
        };
        let mut counts = Counts::default();
        for (table, k1, k2, n) in rows {
            match table.as_str() {
                "runs" => counts.runs.push((k1, n)),
                "steps" => counts.steps.push((k1, n)),
                "events" => counts.events.push((k1, k2, n)),
                _ => {}
            }
        }
        Ok(counts)
    }

    /// The latest run of `pipeline` started by `trigger`.
    pub async fn last_run_by(
        &self,
        pipeline: &str,
        trigger: &str,
    ) -> Result<Option<RunSummary>, Error> {
        let row: Option<SummaryRow> = on_db!(&self.db, pool => {
            sqlx::query_as(
                "SELECT id, pipeline, trigger, state, reason, created_at, finished_at FROM runs WHERE pipeline = $1 AND trigger = $2 ORDER BY created_at DESC, id DESC LIMIT 1",
            )
            .bind(pipeline)
            .bind(trigger)
            .fetch_optional(pool)
            .await?
        });
        row.map(SummaryRow::summary).transpose()
    }

    /// Ids of runs not in a terminal state, oldest first.
    pub async fn unfinished_runs(&self) -> Result<Vec<String>, Error> {
        let rows: Vec<(String,)> = on_db!(&self.db, pool => {
            sqlx::query_as("SELECT id FROM runs WHERE state IN ('queued', 'running') ORDER BY created_at, id")
                .fetch_all(pool)
                .await?
        });
        Ok(rows.into_iter().map(|r| r.0).collect())
    }
}
