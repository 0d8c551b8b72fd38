//! The model registry: versions, aliases and their history, lineage.

use crate::Object;
use crate::runs::{Cause, StepState};
use chrono::{DateTime, Utc};
use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::{IntoParams, ToSchema};

/// A model with its latest version and its aliases.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ModelSummary {
    /// Its name.
    pub model: String,
    /// Its latest version.
    pub latest: i64,
    /// How many versions it has.
    pub versions: i64,
    /// Each alias with the version it points at.
    pub aliases: IndexMap<String, i64>,
}

/// A model with every version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Model {
    /// Its name.
    pub model: String,
    /// Each alias with the version it points at.
    pub aliases: IndexMap<String, i64>,
    /// Its versions, oldest first.
    pub versions: Vec<ModelVersion>,
}

/// `GET /models/{name}`'s answer: the model, or with `?alias=` the
/// version the alias points at.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum ModelOrVersion {
    /// The model with every version.
    Model(Model),
    /// The version the alias names.
    Version(ModelVersion),
}

/// One registered version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ModelVersion {
    /// The model's name.
    pub model: String,
    /// 1, 2, … in registration order.
    pub version: i64,
    /// The artifact's path under the run's work folder.
    pub artifact: String,
    /// The artifact's SHA-256, hex.
    pub sha256: String,
    /// The metrics stored with it.
    #[schema(value_type = Object)]
    pub metrics: Object,
    /// The run that registered it.
    pub run_id: String,
    /// The register step.
    pub step: String,
    /// When.
    pub created_at: DateTime<Utc>,
    /// Its mirror in MLflow, when its pipeline mirrors to one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mlflow: Option<Box<MlflowMirror>>,
}

/// Where a version's mirror in MLflow stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct MlflowMirror {
    /// `pending` (queued, or tried and to be tried again), `done` or
    /// `failed` (MLflow refused it).
    pub state: String,
    /// The MLflow server.
    pub tracking_uri: String,
    /// The MLflow registered model version, once done.
    pub version: Option<String>,
    /// The MLflow run it links to, once done.
    pub run_id: Option<String>,
    /// How many times it was tried.
    pub attempts: i64,
    /// Why the last try failed.
    pub error: Option<String>,
    /// When it is tried next, while pending.
    pub next_at: Option<DateTime<Utc>>,
}

/// `?alias=NAME&at=TIME`: the version an alias points at (or pointed at).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ModelQuery {
    /// The alias.
    pub alias: Option<String>,
    /// When (RFC 3339); now by default.
    pub at: Option<DateTime<Utc>>,
}

/// One move of an alias.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AliasMove {
    /// The alias.
    pub alias: String,
    /// The version it points at after the move.
    pub version: i64,
    /// The version it pointed at before.
    pub from_version: Option<i64>,
    /// Who moved it: a token's name, or `run RUN`.
    pub actor: String,
    /// The run that moved it, for moves by a register step.
    pub run_id: Option<String>,
    /// When.
    pub moved_at: DateTime<Utc>,
}

/// `POST /models/{name}/aliases/{alias}`: point an alias at a version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Promotion {
    /// The version.
    #[serde(deserialize_with = "whole_number")]
    pub version: i64,
}

/// A whole number as JSON Schema's `integer` means it: `3` or `3.0`.
fn whole_number<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
    use serde::de::Error as _;
    let number = serde_json::Number::deserialize(deserializer)?;
    if let Some(n) = number.as_i64() {
        return Ok(n);
    }
    match number.as_f64() {
        Some(f) if f.fract() == 0.0 && f >= i64::MIN as f64 && f <= i64::MAX as f64 => Ok(f as i64),
        _ => Err(D::Error::custom(format!(
            "expected a whole number, found {number}"
        ))),
    }
}

/// The answer to a promotion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Promoted {
    /// The model.
    pub model: String,
    /// The alias.
    pub alias: String,
    /// The version it points at now.
    pub version: i64,
    /// The version it pointed at before.
    pub from_version: Option<i64>,
    /// Who moved it.
    pub actor: String,
}

/// Where a model version came from: the run, the steps that led to its
/// register step, their images, artifacts and outputs, the event, the commit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Lineage {
    /// The model.
    pub model: String,
    /// The version.
    pub version: i64,
    /// Its artifact's path.
    pub artifact: String,
    /// Its artifact's SHA-256.
    pub sha256: String,
    /// Its metrics.
    #[schema(value_type = Object)]
    pub metrics: Object,
    /// When it was registered.
    pub registered_at: DateTime<Utc>,
    /// The run that produced it.
    pub run: LineageRun,
    /// The steps that led to its register step, in the pipeline's order.
    pub steps: Vec<LineageStep>,
    /// Each replay of its run and what it found, oldest first.
    #[serde(default)]
    pub replays: Vec<Replay>,
}

/// The run of a [`Lineage`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LineageRun {
    /// Its id.
    pub id: String,
    /// Its pipeline.
    pub pipeline: String,
    /// The SHA-256 of the pipeline file it ran.
    pub pipeline_hash: String,
    /// The commit of the pipeline's folder.
    pub source_commit: Option<String>,
    /// The kind of its cause.
    pub trigger: String,
    /// What started it.
    pub cause: Cause,
    /// The run it retried.
    pub retry_of: Option<String>,
    /// Its params, by name.
    pub params: BTreeMap<String, String>,
    /// The event that started it.
    pub event: Option<LineageEvent>,
    /// The commit the event named (a push's `after`).
    pub event_commit: Option<String>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
}

/// The event of a [`LineageRun`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LineageEvent {
    /// Its id.
    pub id: i64,
    /// Its kind.
    pub kind: String,
    /// The decision, for people.
    pub decision: String,
    /// The decision's kind.
    pub outcome: String,
    /// The decision.
    pub detail: crate::Decision,
}

/// One step of a [`Lineage`], with its deciding attempt (the last that
/// succeeded, else the last).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LineageStep {
    /// The instance id.
    pub id: String,
    /// `run`, `gate`, `approval`, `register`, …
    pub kind: String,
    /// Where it ended.
    pub state: StepState,
    /// Why.
    pub reason: Option<String>,
    /// The attempt's number.
    pub attempt: Option<u32>,
    /// The image it ran, by id.
    pub image: Option<String>,
    /// Its artifacts: path to SHA-256.
    pub artifacts: BTreeMap<String, String>,
    /// Its outputs.
    #[schema(value_type = Object)]
    pub outputs: Object,
    /// Its metrics.
    #[schema(value_type = Object)]
    pub metrics: Object,
}

/// A version's model card: what the pipeline's `model_card:` says, with
/// what weir knows of the version (metrics and slices, gate evidence,
/// approvals, steps with images and artifact hashes, params, commit, the
/// previous version), checked against the audit entry of its registration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ModelCard {
    /// The model.
    pub model: String,
    /// The version.
    pub version: i64,
    /// The card.
    #[schema(value_type = Object)]
    pub card: serde_json::Value,
    /// The SHA-256 of the card's canonical JSON (keys sorted), now.
    pub sha256: String,
    /// The audit entry that recorded the registration, if found.
    pub audit_seq: Option<i64>,
    /// The card hash that entry recorded.
    pub recorded_sha256: Option<String>,
    /// Whether the card is the one its registration recorded: false means
    /// it was changed afterwards (or its entry is missing).
    pub verified: bool,
}

/// `GET …/card`'s query.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct CardQuery {
    /// `json` (the default), `md` (Markdown) or `html` (a page).
    pub format: Option<CardFormat>,
}

/// How a model card is written out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum CardFormat {
    /// [`ModelCard`] as JSON.
    #[default]
    Json,
    /// Markdown.
    Md,
    /// A standalone HTML page.
    Html,
}

/// What a replay of a model version's run found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Replay {
    /// The replay run.
    pub run: String,
    /// The run it replayed (the one that registered the version).
    pub original: String,
    /// How the replay run ended.
    pub state: crate::RunState,
    /// Whether every declared artifact came out identical.
    pub reproduced: bool,
    /// Artifacts compared.
    pub compared: i64,
    /// Of those, identical.
    pub identical: i64,
    /// `reproduced: 3 of 3 artifacts identical`, or what differs.
    pub summary: String,
    /// Each declared artifact, in the order the steps run.
    pub artifacts: Vec<ReplayedArtifact>,
    /// The first step whose artifacts differ, and what that says.
    pub first_difference: Option<ReplayDifference>,
    /// When the finding was kept.
    pub created_at: DateTime<Utc>,
}

/// One artifact of a [`Replay`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ReplayedArtifact {
    /// The step instance that declares it.
    pub step: String,
    /// Its path under the work folder.
    pub path: String,
    /// Its SHA-256 in the original run.
    pub original: String,
    /// Its SHA-256 in the replay (null: not produced).
    pub replayed: Option<String>,
    /// Whether they are the same.
    pub identical: bool,
}

/// Where a [`Replay`] first differs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ReplayDifference {
    /// The step instance.
    pub step: String,
    /// Its artifacts that differ.
    pub paths: Vec<String>,
    /// What it means.
    pub cause: String,
}
