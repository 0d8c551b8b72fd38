//! The model registry: versions numbered per model, aliases pointing at one
//! version each, and the history of every alias move.

use crate::db::{BeginWrite, Db, on_db};
use crate::{Error, Store};
use chrono::{DateTime, Utc};
use serde::Serialize;

/// A registered version of a model.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelVersion {
    /// The model's name.
    pub model: String,
    /// 1, 2, … in registration order.
    pub version: i64,
    /// The artifact's path under the run's work folder.
    pub artifact: String,
    /// The artifact's SHA-256, hex.
    pub sha256: String,
    /// The metrics stored with it (`metrics_from`).
    pub metrics: serde_json::Map<String, serde_json::Value>,
    /// The run that registered it.
    pub run_id: String,
    /// The register step (instance id).
    pub step: String,
    /// When.
    pub created_at: DateTime<Utc>,
}

/// A version to register ([`Store::register_model`]).
#[derive(Debug, Clone)]
pub struct NewVersion<'a> {
    /// The model's name.
    pub model: &'a str,
    /// The artifact's path under the run's work folder.
    pub artifact: &'a str,
    /// Its SHA-256.
    pub sha256: &'a str,
    /// Metrics to keep with it.
    pub metrics: &'a serde_json::Map<String, serde_json::Value>,
    /// The run registering it.
    pub run_id: &'a str,
    /// The register step.
    pub step: &'a str,
    /// An alias to move to it.
    pub alias: Option<&'a str>,
    /// When.
    pub at: DateTime<Utc>,
}

/// One move of an alias.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AliasMove {
    /// The alias.
    pub alias: String,
    /// The version it pointed to after the move.
    pub version: i64,
    /// The version it pointed to before, if any.
    pub from_version: Option<i64>,
    /// Who moved it: a token's name, or `run RUN`.
    pub actor: String,
    /// The run that moved it, for moves by a register step.
    pub run_id: Option<String>,
    /// When.
    pub moved_at: DateTime<Utc>,
}

/// A model with its latest version and its aliases.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelSummary {
    /// The model's name.
    pub model: String,
    /// Its latest version.
    pub latest: i64,
    /// How many versions it has.
    pub versions: i64,
    /// Each alias with its version.
    pub aliases: Vec<(String, i64)>,
}

#[derive(sqlx::FromRow)]
struct VersionRow {
    model: String,
    version: i64,
    artifact: String,
    sha256: String,
    metrics: String,
    run_id: String,
    step: String,
    created_at: DateTime<Utc>,
}

impl VersionRow {
    fn into_version(self) -> Result<ModelVersion, Error> {
        Ok(ModelVersion {
            metrics: serde_json::from_str(&self.metrics)
                .map_err(|e| Error::Corrupt(format!("model metrics: {e}")))?,
            model: self.model,
            version: self.version,
            artifact: self.artifact,
            sha256: self.sha256,
            run_id: self.run_id,
            step: self.step,
            created_at: self.created_at,
        })
    }
}

const VERSION_COLUMNS: &str = "model, version, artifact, sha256, metrics, run_id, step, created_at";

/// Serialises registrations of one model on PostgreSQL (SQLite's writers
/// are serialised already): two runs registering at once get N+1 and N+2.
const LOCK_MODEL: &str = "SELECT pg_advisory_xact_lock(hashtextextended('weir.model.' || $1, 0))";

impl Store {
    /// Registers version N+1 of `new.model` and moves `new.alias` to it,
    /// atomically. A run's register step registers once: asked again (a
    /// retried attempt), it answers the version it made.
    pub async fn register_model(&self, new: &NewVersion<'_>) -> Result<ModelVersion, Error> {
        let metrics = serde_json::Value::Object(new.metrics.clone()).to_string();
        let is_pg = matches!(self.db, Db::Postgres(_));
        let row: VersionRow = on_db!(&self.db, pool => {
            let mut tx = pool.begin_write().await?;
            if is_pg {
                sqlx::query(LOCK_MODEL).bind(new.model).execute(&mut *tx).await?;
            }
            let done: Option<VersionRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT {VERSION_COLUMNS} FROM model_versions WHERE run_id = $1 AND step = $2"
            )))
            .bind(new.run_id)
            .bind(new.step)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(done) = done {
                return done.into_version();
            }
            let (version,): (i64,) = sqlx::query_as(
                "SELECT COALESCE(MAX(version), 0) + 1 FROM model_versions WHERE model = $1",
            )
            .bind(new.model)
            .fetch_one(&mut *tx)
            .await?;
            let row: VersionRow = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "INSERT INTO model_versions ({VERSION_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING {VERSION_COLUMNS}"
            )))
            .bind(new.model)
            .bind(version)
            .bind(new.artifact)
            .bind(new.sha256)
            .bind(&metrics)
            .bind(new.run_id)
            .bind(new.step)
            .bind(new.at)
            .fetch_one(&mut *tx)
            .await?;
            if let Some(alias) = new.alias {
                let actor = format!("run {}", new.run_id);
                move_alias!(tx, new.model, alias, version, &actor, Some(new.run_id), new.at);
            }
            tx.commit().await?;
            row
        });
        row.into_version()
    }

    /// Points `alias` of `model` at `version`, keeping the move with its
    /// actor; returns the version it pointed at before.
    pub async fn promote(
        &self,
        model: &str,
        version: i64,
        alias: &str,
        actor: &str,
        at: DateTime<Utc>,
    ) -> Result<Option<i64>, Error> {
        let is_pg = matches!(self.db, Db::Postgres(_));
        let before = on_db!(&self.db, pool => {
            let mut tx = pool.begin_write().await?;
            if is_pg {
                sqlx::query(LOCK_MODEL).bind(model).execute(&mut *tx).await?;
            }
            let exists: Option<(i64,)> =
                sqlx::query_as("SELECT version FROM model_versions WHERE model = $1 AND version = $2")
                    .bind(model)
                    .bind(version)
                    .fetch_optional(&mut *tx)
                    .await?;
            if exists.is_none() {
                return Err(Error::NoSuchModel(format!("{model}@{version}")));
            }
            let before = move_alias!(tx, model, alias, version, actor, None::<&str>, at);
            tx.commit().await?;
            before
        });
        Ok(before)
    }

    /// Keeps `card` as the card of `model@version` unless it has one
    /// already; returns the card it has then (the first one written).
    pub async fn keep_card(
        &self,
        model: &str,
        version: i64,
        card: &serde_json::Value,
    ) -> Result<serde_json::Value, Error> {
        let text = card.to_string();
        let kept: Option<(Option<String>,)> = on_db!(&self.db, pool => {
            let mut tx = pool.begin_write().await?;
            sqlx::query("UPDATE model_versions SET card = $1 WHERE model = $2 AND version = $3 AND card IS NULL")
                .bind(&text)
                .bind(model)
                .bind(version)
                .execute(&mut *tx)
                .await?;
            let kept = sqlx::query_as("SELECT card FROM model_versions WHERE model = $1 AND version = $2")
                .bind(model)
                .bind(version)
                .fetch_optional(&mut *tx)
                .await?;
            tx.commit().await?;
            kept
        });
        match kept {
            None => Err(Error::NoSuchModel(format!("{model}@{version}"))),
            Some((None,)) => Err(Error::Corrupt(format!("{model}@{version}: card not kept"))),
            Some((Some(kept),)) => serde_json::from_str(&kept)
                .map_err(|e| Error::Corrupt(format!("model card of {model}@{version}: {e}"))),
        }
    }

    /// The card of `model@version`: `None` for a version registered before
    /// weir wrote cards.
    pub async fn model_card(
        &self,
        model: &str,
        version: i64,
    ) -> Result<Option<serde_json::Value>, Error> {
        let row: Option<(Option<String>,)> = on_db!(&self.db, pool => {
            sqlx::query_as("SELECT card FROM model_versions WHERE model = $1 AND version = $2")
                .bind(model)
                .bind(version)
                .fetch_optional(pool)
                .await?
        });
        match row {
            None => Err(Error::NoSuchModel(format!("{model}@{version}"))),
            Some((None,)) => Ok(None),
            Some((Some(text),)) => serde_json::from_str(&text)
                .map(Some)
                .map_err(|e| Error::Corrupt(format!("model card of {model}@{version}: {e}"))),
        }
    }

    /// Every model, by name.
    pub async fn models(&self) -> Result<Vec<ModelSummary>, Error> {
        let rows: Vec<(String, i64, i64)> = on_db!(&self.db, pool => {
            sqlx::query_as("SELECT model, MAX(version), COUNT(*) FROM model_versions GROUP BY model ORDER BY model")
                .fetch_all(pool)
                .await?
        });
        let aliases: Vec<(String, String, i64)> = on_db!(&self.db, pool => {
            sqlx::query_as("SELECT model, alias, version FROM model_aliases ORDER BY model, alias")
                .fetch_all(pool)
                .await?
        });
        Ok(rows
            .into_iter()
            .map(|(model, latest, versions)| ModelSummary {
                aliases: aliases
                    .iter()
                    .filter(|(m, _, _)| *m == model)
                    .map(|(_, alias, version)| (alias.clone(), *version))
                    .collect(),
                model,
                latest,
                versions,
            })
            .collect())
    }

    /// The versions of `model`, oldest first.
    pub async fn model_versions(&self, model: &str) -> Result<Vec<ModelVersion>, Error> {
        let rows: Vec<VersionRow> = on_db!(&self.db, pool => {
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT {VERSION_COLUMNS} FROM model_versions WHERE model = $1 ORDER BY version"
            )))
            .bind(model)
            .fetch_all(pool)
            .await?
        });
        rows.into_iter().map(VersionRow::into_version).collect()
    }

    /// Version `version` of `model`.
    pub async fn model_version(&self, model: &str, version: i64) -> Result<ModelVersion, Error> {
        let row: Option<VersionRow> = on_db!(&self.db, pool => {
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT {VERSION_COLUMNS} FROM model_versions WHERE model = $1 AND version = $2"
            )))
            .bind(model)
            .bind(version)
            .fetch_optional(pool)
            .await?
        });
        row.ok_or_else(|| Error::NoSuchModel(format!("{model}@{version}")))?
            .into_version()
    }

    /// The version `alias` of `model` pointed at, at `at` (now: `None`),
    /// from the history of its moves.
    pub async fn alias_at(
        &self,
        model: &str,
        alias: &str,
        at: Option<DateTime<Utc>>,
    ) -> Result<Option<i64>, Error> {
        let at = at.unwrap_or_else(Utc::now);
        let row: Option<(i64,)> = on_db!(&self.db, pool => {
            sqlx::query_as(
                "SELECT version FROM alias_moves WHERE model = $1 AND alias = $2 AND moved_at <= $3 ORDER BY moved_at DESC, id DESC LIMIT 1",
            )
            .bind(model)
            .bind(alias)
            .bind(at)
            .fetch_optional(pool)
            .await?
        });
        Ok(row.map(|r| r.0))
    }

    /// Every alias move of `model`, oldest first.
    pub async fn alias_history(&self, model: &str) -> Result<Vec<AliasMove>, Error> {
        type Row = (
            String,
            i64,
            Option<i64>,
            String,
            Option<String>,
            DateTime<Utc>,
        );
        let rows: Vec<Row> = on_db!(&self.db, pool => {
            sqlx::query_as(
                "SELECT alias, version, from_version, actor, run_id, moved_at FROM alias_moves WHERE model = $1 ORDER BY moved_at, id",
            )
            .bind(model)
            .fetch_all(pool)
            .await?
        });
        Ok(rows
            .into_iter()
            .map(
                |(alias, version, from_version, actor, run_id, moved_at)| AliasMove {
                    alias,
                    version,
                    from_version,
                    actor,
                    run_id,
                    moved_at,
                },
            )
            .collect())
    }

    /// The registry as expressions read it (`models.<name>.<alias>` and
    /// `models.<name>.latest`, each with `version` and `metrics`).
    pub async fn registry_view(&self) -> Result<serde_json::Value, Error> {
        // One query: it runs at the creation of every run that reads models.
        let rows: Vec<(String, String, i64, String)> = on_db!(&self.db, pool => {
            sqlx::query_as(
                "SELECT v.model, 'latest', v.version, v.metrics FROM model_versions v \
                 WHERE v.version = (SELECT MAX(w.version) FROM model_versions w WHERE w.model = v.model) \
                 UNION ALL \
                 SELECT a.model, a.alias, v.version, v.metrics FROM model_aliases a \
                 JOIN model_versions v ON v.model = a.model AND v.version = a.version",
            )
            .fetch_all(pool)
            .await?
        });
        let mut view = serde_json::Map::new();
        for (model, name, version, metrics) in rows {
            let metrics: serde_json::Value = serde_json::from_str(&metrics)
                .map_err(|e| Error::Corrupt(format!("model metrics: {e}")))?;
            let entry = view
                .entry(model)
                .or_insert_with(|| serde_json::Value::Object(serde_json::Map::new()));
            if let serde_json::Value::Object(entry) = entry {
                entry.insert(
                    name,
                    serde_json::json!({ "version": version, "metrics": metrics }),
                );
            }
        }
        Ok(serde_json::Value::Object(view))
    }
}

/// Moves an alias inside transaction `$tx`, keeping the move; evaluates to
/// the version it pointed at before.
macro_rules! move_alias {
    ($tx:ident, $model:expr, $alias:expr, $version:expr, $actor:expr, $run:expr, $at:expr) => {{
        let before: Option<(i64,)> =
            sqlx::query_as("SELECT version FROM model_aliases WHERE model = $1 AND alias = $2")
                .bind($model)
                .bind($alias)
                .fetch_optional(&mut *$tx)
                .await?;
        sqlx::query(
            "INSERT INTO model_aliases (model, alias, version) VALUES ($1, $2, $3) ON CONFLICT (model, alias) DO UPDATE SET version = excluded.version",
        )
        .bind($model)
        .bind($alias)
        .bind($version)
        .execute(&mut *$tx)
        .await?;
        sqlx::query(
            "INSERT INTO alias_moves (model, alias, version, from_version, actor, run_id, moved_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind($model)
        .bind($alias)
        .bind($version)
        .bind(before.map(|b| b.0))
        .bind($actor)
        .bind($run)
        .bind($at)
        .execute(&mut *$tx)
        .await?;
        before.map(|b| b.0)
    }};
}
use move_alias;

/// A stored replay of a model version ([`Store::keep_replay`]).
#[derive(Debug, Clone, PartialEq)]
pub struct StoredReplay {
    /// The replay run.
    pub run_id: String,
    /// The model.
    pub model: String,
    /// Its version.
    pub version: i64,
    /// The run it replayed.
    pub original: String,
    /// Whether every artifact was identical.
    pub reproduced: bool,
    /// The comparison (JSON).
    pub result: serde_json::Value,
    /// When it was kept.
    pub created_at: DateTime<Utc>,
}

impl Store {
    /// Keeps what replay run `replay.run_id` found, with its audit entry in
    /// the same transaction; a replay kept before stays as it was (false).
    pub async fn keep_replay(
        &self,
        replay: &StoredReplay,
        key: &ed25519_dalek::SigningKey,
        entry: &crate::NewEntry<'_>,
    ) -> Result<bool, Error> {
        let is_pg = matches!(self.db, Db::Postgres(_));
        let result = replay.result.to_string();
        let kept = on_db!(&self.db, pool => {
            let mut tx = pool.begin_write().await?;
            let done: Option<(String,)> = sqlx::query_as("SELECT run_id FROM replays WHERE run_id = $1")
                .bind(&replay.run_id)
                .fetch_optional(&mut *tx)
                .await?;
            if done.is_some() {
                return Ok(false);
            }
            sqlx::query("INSERT INTO replays (run_id, model, version, original, reproduced, result, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)")
                .bind(&replay.run_id)
                .bind(&replay.model)
                .bind(replay.version)
                .bind(&replay.original)
                .bind(replay.reproduced)
                .bind(&result)
                .bind(replay.created_at)
                .execute(&mut *tx)
                .await?;
            crate::audit::append_in!(tx, is_pg, std::iter::once((key, entry)));
            tx.commit().await?;
            true
        });
        Ok(kept)
    }

    /// The replays of `model@version`, oldest first.
    pub async fn replays(&self, model: &str, version: i64) -> Result<Vec<StoredReplay>, Error> {
        type Row = (String, String, i64, String, bool, String, DateTime<Utc>);
        let rows: Vec<Row> = on_db!(&self.db, pool => {
            sqlx::query_as("SELECT run_id, model, version, original, reproduced, result, created_at FROM replays WHERE model = $1 AND version = $2 ORDER BY created_at, run_id")
                .bind(model)
                .bind(version)
                .fetch_all(pool)
                .await?
        });
        rows.into_iter()
            .map(
                |(run_id, model, version, original, reproduced, result, created_at)| {
                    Ok(StoredReplay {
                        result: serde_json::from_str(&result)
                            .map_err(|e| Error::Corrupt(format!("replay {run_id}: {e}")))?,
                        run_id,
                        model,
                        version,
                        original,
                        reproduced,
                        created_at,
                    })
                },
            )
            .collect()
    }

    /// Finished replay runs whose finding is not kept yet (weir stopped
    /// between the end of the run and keeping it).
    pub async fn unkept_replays(&self) -> Result<Vec<String>, Error> {
        let rows: Vec<(String,)> = on_db!(&self.db, pool => {
            sqlx::query_as("SELECT r.id FROM runs r LEFT JOIN replays p ON p.run_id = r.id WHERE r.trigger = 'replay' AND r.state IN ('succeeded', 'failed', 'cancelled') AND p.run_id IS NULL")
                .fetch_all(pool)
                .await?
        });
        Ok(rows.into_iter().map(|r| r.0).collect())
    }
}
