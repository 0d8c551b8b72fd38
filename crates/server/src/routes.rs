//! The routes: health, pipelines, runs (create, list, get, cancel,
//! retry), approvals, logs, events.

use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath, ApiQuery, Body, MaybeJson, Params};
use crate::wire;
use axum::extract::{Request, State as Extract};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse as _, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use weir_api as api;
use weir_daemon::{Daemon, StartRun, Started};
use weir_engine::Cause;

/// What the routes need: the daemon and the tokens clients may present.
#[derive(Clone)]
pub struct State {
    /// The daemon.
    pub daemon: Arc<Daemon>,
    /// The bearer tokens, each with the name that approvals, cancellations
    /// and the audit log record as the actor.
    pub tokens: Arc<[(String, String)]>,
}

/// Who sent a request: the name of the token it carried.
#[derive(Debug, Clone)]
pub struct Actor(pub String);

/// The API: `/healthz` open, everything under `/api/v1` behind the token.
pub fn router(state: State) -> Router {
    let api = Router::new()
        .route("/pipelines", get(pipelines))
        .route("/pipelines/{name}/backfill", post(backfill))
        .route("/runs", post(create_run).get(list_runs))
        .route("/runs/{id}", get(get_run))
        .route("/runs/{id}/cancel", post(cancel_run))
        .route("/runs/{id}/retry", post(retry_run))
        .route("/runs/{id}/steps/{step}/approval", post(decide))
        .route("/runs/{id}/steps/{step}/logs", get(step_log))
        .route("/events", get(events))
        .route("/events/drift", post(drift))
        .route("/openapi.json", get(crate::openapi::openapi))
        .route("/audit", get(audit))
        .route("/audit/verify", get(audit_verify))
        .route("/audit/key", get(audit_key))
        .route("/models", get(models))
        .route("/models/{name}", get(model))
        .route("/models/{name}/history", get(model_history))
        .route("/models/{name}/versions/{version}", get(model_version))
        .route("/models/{name}/versions/{version}/lineage", get(lineage))
        .route("/models/{name}/versions/{version}/card", get(model_card))
        .route("/gc", post(gc))
        .route("/models/{name}/versions/{version}/replay", post(replay))
        .route("/models/{name}/versions/{version}/replays", get(replays))
        .route("/models/{name}/aliases/{alias}", post(promote))
        .fallback(unknown_route)
        .method_not_allowed_fallback(wrong_method)
        .layer(middleware::from_fn_with_state(state.clone(), authorize));
    // Webhooks carry their own proof (an HMAC signature), not the token.
    let hooks = Router::new()
        .route("/api/v1/hooks/{pipeline}", post(crate::hooks::hook))
        .layer(axum::extract::DefaultBodyLimit::max(
            crate::hooks::BODY_LIMIT,
        ));
    Router::new()
        .route("/healthz", get(health))
        .route("/metrics", get(metrics))
        .merge(hooks)
        .nest("/api/v1", api)
        .with_state(state)
}

async fn unknown_route() -> ApiError {
    ApiError::not_found("no such endpoint under /api/v1")
}

async fn wrong_method() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        "this endpoint takes another method: see /api/v1/openapi.json",
    )
}

/// Refuses requests without `Authorization: Bearer <token>`. Compares
/// digests so the time taken says nothing about the token.
async fn authorize(
    Extract(state): Extract<State>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let given = request
        .headers()
        .get("authorization")
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "))
        .unwrap_or_default();
    let given = Sha256::digest(given.as_bytes());
    let actor = state
        .tokens
        .iter()
        .find(|(_, token)| Sha256::digest(token.as_bytes()) == given);
    let Some((name, _)) = actor else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or wrong bearer token: send 'Authorization: Bearer TOKEN' (the token is in WEIR_TOKEN or the daemon's data folder)",
        ));
    };
    request.extensions_mut().insert(Actor(name.clone()));
    Ok(next.run(request).await)
}

/// The pipelines the daemon serves.
#[utoipa::path(get, path = "/api/v1/pipelines", operation_id = "listPipelines", tag = "pipelines",
    responses((status = 200, description = "One entry per pipeline.", body = [api::Pipeline])))]
async fn pipelines(Extract(state): Extract<State>) -> Json<Vec<api::Pipeline>> {
    Json(
        state
            .daemon
            .pipelines()
            .iter()
            .map(wire::pipeline)
            .collect(),
    )
}

impl Body for api::NewRun {
    const EXAMPLE: &'static str = "{\"pipeline\": NAME, \"params\": {NAME: VALUE}}";
}

/// Runs a pipeline by hand, as the token's name.
#[utoipa::path(post, path = "/api/v1/runs", operation_id = "createRun", tag = "runs",
    request_body = api::NewRun,
    responses(
        (status = 201, description = "The run, queued.", body = api::Run),
        (status = 400, description = "Not a run request.", body = api::Error),
        (status = 403, description = "The pipeline takes no manual runs (`on.manual: false`).", body = api::Error),
        (status = 404, description = "No such pipeline.", body = api::Error),
        (status = 422, description = "A param is unknown or missing.", body = api::Error)))]
async fn create_run(
    Extract(state): Extract<State>,
    axum::Extension(Actor(actor)): axum::Extension<Actor>,
    ApiJson(new): ApiJson<api::NewRun>,
) -> Result<Response, ApiError> {
    let start = StartRun {
        params: new.params.into_iter().collect(),
        ..StartRun::new(new.pipeline, Cause::manual(actor))
    };
    Ok(started(state.daemon.start_run(start).await?))
}

/// The answer to a started run: 201 with the run, or 200 with the run a
/// replayed request started before.
fn started(started: Started) -> Response {
    match started {
        Started::Run(run) => (StatusCode::CREATED, Json(wire::run(&run))).into_response(),
        Started::Replay(run) => {
            (StatusCode::OK, Json(api::Replayed { run, replay: true })).into_response()
        }
    }
}

impl Params for api::Listing {
    const EXAMPLE: &'static str = "?limit=N";
}

impl Params for api::RunListing {
    const EXAMPLE: &'static str =
        "?limit=N&after=RUN&pipeline=NAME&state=running|succeeded|…&trigger=manual|webhook|…";
}

/// The causes a run may have, as `trigger` names them.
const TRIGGERS: [&str; 7] = [
    "manual", "webhook", "schedule", "backfill", "drift", "retry", "replay",
];

/// The latest runs, newest first, a page at a time (ask again with
/// `after` = the last run's id), filtered by pipeline, state and trigger.
#[utoipa::path(get, path = "/api/v1/runs", operation_id = "listRuns", tag = "runs",
    params(api::RunListing),
    responses((status = 200, description = "The runs.", body = [api::RunSummary]),
        (status = 400, description = "A bad query value.", body = api::Error),
        (status = 422, description = "An unknown trigger, or a cursor that names no run.", body = api::Error)))]
async fn list_runs(
    Extract(state): Extract<State>,
    ApiQuery(listing): ApiQuery<api::RunListing>,
) -> Result<Json<Vec<api::RunSummary>>, ApiError> {
    let limit = listing.limit.unwrap_or(50).clamp(1, 1000);
    // Values of the documented type that weir cannot take: 422, as a NUL.
    let bad =
        |message: String| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "bad-query", message);
    if let Some(trigger) = &listing.trigger
        && !TRIGGERS.contains(&trigger.as_str())
    {
        return Err(bad(format!(
            "unknown trigger '{trigger}': one of {}",
            TRIGGERS.join(", ")
        )));
    }
    let store = state.daemon.store();
    if let Some(after) = &listing.after
        && let Err(weir_store::Error::NoSuchRun(_)) = store.run_pipeline_hash(after).await
    {
        return Err(bad(format!(
            "after '{after}' names no run: give the id of the last run of the page before"
        )));
    }
    let run_state = listing.state.map(|s| s.to_string());
    let filter = weir_store::RunFilter {
        pipeline: listing.pipeline.as_deref(),
        state: run_state.as_deref(),
        trigger: listing.trigger.as_deref(),
        after: listing.after.as_deref(),
    };
    let runs = store.list_runs_where(&filter, limit).await?;
    Ok(Json(runs.into_iter().map(wire::run_summary).collect()))
}

/// A run with its steps, attempts and gate evidence.
#[utoipa::path(get, path = "/api/v1/runs/{id}", operation_id = "getRun", tag = "runs",
    params(("id" = String, Path, description = "The run's id.")),
    responses((status = 200, description = "The run.", body = api::Run),
        (status = 400, description = "A path parameter with a NUL character.", body = api::Error),
        (status = 404, description = "No such run.", body = api::Error)))]
async fn get_run(
    Extract(state): Extract<State>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<api::Run>, ApiError> {
    let run = state.daemon.store().load_run(&id).await?;
    Ok(Json(wire::run(&run)))
}

/// Cancels a run: its attempts are stopped, it ends `cancelled`.
#[utoipa::path(post, path = "/api/v1/runs/{id}/cancel", operation_id = "cancelRun", tag = "runs",
    params(("id" = String, Path, description = "The run's id.")),
    responses((status = 202, description = "Being cancelled.", body = api::Cancelling),
        (status = 400, description = "A path parameter with a NUL character.", body = api::Error),
        (status = 404, description = "No such run.", body = api::Error),
        (status = 409, description = "The run already ended, or another node drives it.", body = api::Error)))]
async fn cancel_run(
    Extract(state): Extract<State>,
    axum::Extension(Actor(actor)): axum::Extension<Actor>,
    ApiPath(id): ApiPath<String>,
) -> Result<(StatusCode, Json<api::Cancelling>), ApiError> {
    let run = state.daemon.store().load_run(&id).await?;
    if run.state.is_terminal() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "run-finished",
            format!("run {id} already {}", run.state),
        ));
    }
    if !state.daemon.cancel_by(&id, &actor) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "not-driven",
            format!("run {id} is not driven by this daemon"),
        ));
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(api::Cancelling {
            id,
            cancelling: true,
        }),
    ))
}

impl Body for api::Retry {
    const EXAMPLE: &'static str = "{\"from\": STEP}";
}

/// Retries a finished run: a new run that reuses the steps that succeeded
/// before `from` (by default, before the ones that did not succeed).
#[utoipa::path(post, path = "/api/v1/runs/{id}/retry", operation_id = "retryRun", tag = "runs",
    params(("id" = String, Path, description = "The finished run.")),
    request_body(content = Option<api::Retry>, description = "Optional: the step to run again from."),
    responses((status = 201, description = "The new run.", body = api::Run),
        (status = 400, description = "Not a retry request.", body = api::Error),
        (status = 404, description = "No such run.", body = api::Error),
        (status = 409, description = "It cannot be retried (still going, no such step, succeeded with no `from`).", body = api::Error)))]
async fn retry_run(
    Extract(state): Extract<State>,
    axum::Extension(Actor(actor)): axum::Extension<Actor>,
    ApiPath(id): ApiPath<String>,
    MaybeJson(retry): MaybeJson<api::Retry>,
) -> Result<Response, ApiError> {
    let retry = retry.unwrap_or_default();
    let cause = Cause::Retry {
        of: id,
        from: retry.from,
        actor,
    };
    Ok(started(
        state.daemon.start_run(StartRun::new("", cause)).await?,
    ))
}

impl Body for api::Approval {
    const EXAMPLE: &'static str = "{\"approved\": true|false, \"comment\": TEXT}";
}

/// Approves or rejects an approval step, as the token's name.
#[utoipa::path(post, path = "/api/v1/runs/{id}/steps/{step}/approval", operation_id = "decideApproval", tag = "runs",
    params(("id" = String, Path, description = "The run's id."), ("step" = String, Path, description = "The approval step.")),
    request_body = api::Approval,
    responses((status = 200, description = "The run after the decision.", body = api::Run),
        (status = 400, description = "Not a decision.", body = api::Error),
        (status = 404, description = "No such run.", body = api::Error),
        (status = 409, description = "The step is not waiting for a decision.", body = api::Error)))]
async fn decide(
    Extract(state): Extract<State>,
    axum::Extension(Actor(actor)): axum::Extension<Actor>,
    ApiPath((id, step)): ApiPath<(String, String)>,
    ApiJson(decision): ApiJson<api::Approval>,
) -> Result<Json<api::Run>, ApiError> {
    match state
        .daemon
        .decide(&id, &step, decision.approved, &actor, decision.comment)
        .await
    {
        Ok(run) => Ok(Json(wire::run(&run))),
        Err(weir_daemon::DecideError::Store(e)) => Err(e.into()),
        Err(e) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "cannot-decide",
            e.to_string(),
        )),
    }
}

impl Params for api::AuditQuery {
    const EXAMPLE: &'static str = "?after=SEQ&limit=N";
}

/// Audit entries after `after`, in order.
#[utoipa::path(get, path = "/api/v1/audit", operation_id = "listAudit", tag = "audit",
    params(api::AuditQuery),
    responses((status = 200, description = "The entries.", body = [api::AuditEntry]),
        (status = 400, description = "A bad query value.", body = api::Error)))]
async fn audit(
    Extract(state): Extract<State>,
    ApiQuery(query): ApiQuery<api::AuditQuery>,
) -> Result<Json<Vec<api::AuditEntry>>, ApiError> {
    let limit = query.limit.unwrap_or(1000).clamp(1, 10_000);
    let entries = (state.daemon.store())
        .audit_entries(query.after, limit)
        .await?;
    Ok(Json(entries.into_iter().map(wire::audit_entry).collect()))
}

/// Checks the whole chain against the daemon's key: the count, or the
/// first entry that does not verify and why.
#[utoipa::path(get, path = "/api/v1/audit/verify", operation_id = "verifyAudit", tag = "audit",
    responses((status = 200, description = "What the check found.", body = api::Verification)))]
async fn audit_verify(Extract(state): Extract<State>) -> Result<Json<api::Verification>, ApiError> {
    Ok(Json(wire::verification(state.daemon.verify_audit().await?)))
}

/// The public key that verifies the audit log.
#[utoipa::path(get, path = "/api/v1/audit/key", operation_id = "auditKey", tag = "audit",
    responses((status = 200, description = "The key.", body = api::AuditKey)))]
async fn audit_key(Extract(state): Extract<State>) -> Json<api::AuditKey> {
    Json(api::AuditKey {
        algorithm: "ed25519".to_owned(),
        public_key: hex::encode(state.daemon.audit_key().to_bytes()),
    })
}

/// The registry's models, each with its latest version and aliases.
#[utoipa::path(get, path = "/api/v1/models", operation_id = "listModels", tag = "models",
    responses((status = 200, description = "The models.", body = [api::ModelSummary])))]
async fn models(Extract(state): Extract<State>) -> Result<Json<Vec<api::ModelSummary>>, ApiError> {
    let models = state.daemon.store().models().await?;
    Ok(Json(models.into_iter().map(wire::model_summary).collect()))
}

impl Params for api::ModelQuery {
    const EXAMPLE: &'static str = "?alias=NAME&at=RFC3339-TIME";
}

/// A model's versions and aliases; with `alias` (and `at`), the version
/// that alias points at (or pointed at then).
#[utoipa::path(get, path = "/api/v1/models/{name}", operation_id = "getModel", tag = "models",
    params(("name" = String, Path, description = "The model."), api::ModelQuery),
    responses((status = 200, description = "The model, or with `alias` the version it names.", body = api::ModelOrVersion),
        (status = 400, description = "A bad query value.", body = api::Error),
        (status = 404, description = "No such model, or the alias named no version then.", body = api::Error)))]
async fn model(
    Extract(state): Extract<State>,
    ApiPath(name): ApiPath<String>,
    ApiQuery(query): ApiQuery<api::ModelQuery>,
) -> Result<Json<api::ModelOrVersion>, ApiError> {
    let store = state.daemon.store();
    let versions = store.model_versions(&name).await?;
    if versions.is_empty() {
        return Err(ApiError::not_found(format!(
            "no model '{name}' in the registry"
        )));
    }
    if let Some(alias) = query.alias {
        let Some(version) = store.alias_at(&name, &alias, query.at).await? else {
            let when = query
                .at
                .map_or_else(|| "now".to_owned(), |t| format!("at {}", t.to_rfc3339()));
            return Err(ApiError::not_found(format!(
                "alias '{alias}' of {name} pointed at no version {when}"
            )));
        };
        let version = store.model_version(&name, version).await?;
        return Ok(Json(api::ModelOrVersion::Version(
            mirrored(store, version).await?,
        )));
    }
    let summary = store.models().await?.into_iter().find(|m| m.model == name);
    Ok(Json(api::ModelOrVersion::Model(api::Model {
        model: name,
        aliases: summary
            .map(|m| m.aliases.into_iter().collect())
            .unwrap_or_default(),
        versions: {
            let mut all = Vec::with_capacity(versions.len());
            for version in versions {
                all.push(mirrored(store, version).await?);
            }
            all
        },
    })))
}

/// One version of a model.
#[utoipa::path(get, path = "/api/v1/models/{name}/versions/{version}", operation_id = "getModelVersion", tag = "models",
    params(("name" = String, Path, description = "The model."), ("version" = i64, Path, description = "The version.")),
    responses((status = 200, description = "The version.", body = api::ModelVersion),
        (status = 400, description = "The version is not a number.", body = api::Error),
        (status = 404, description = "No such version.", body = api::Error)))]
async fn model_version(
    Extract(state): Extract<State>,
    ApiPath((name, version)): ApiPath<(String, i64)>,
) -> Result<Json<api::ModelVersion>, ApiError> {
    let store = state.daemon.store();
    let version = store.model_version(&name, version).await?;
    Ok(Json(mirrored(store, version).await?))
}

/// A version as the API shows it, with its MLflow mirror's state.
async fn mirrored(
    store: &weir_store::Store,
    version: weir_store::ModelVersion,
) -> Result<api::ModelVersion, ApiError> {
    let subject = format!("{}@{}", version.model, version.version);
    let mirror = store.mirror_item("version", &subject).await?;
    Ok(wire::model_version(version, mirror))
}

/// Where a version came from: its run, the steps that led to it with
/// their images and artifact hashes, the event and the commit.
#[utoipa::path(get, path = "/api/v1/models/{name}/versions/{version}/lineage", operation_id = "lineage", tag = "models",
    params(("name" = String, Path, description = "The model."), ("version" = i64, Path, description = "The version.")),
    responses((status = 200, description = "The lineage.", body = api::Lineage),
        (status = 400, description = "The version is not a number.", body = api::Error),
        (status = 404, description = "No such version.", body = api::Error)))]
async fn lineage(
    Extract(state): Extract<State>,
    ApiPath((name, version)): ApiPath<(String, i64)>,
) -> Result<Json<api::Lineage>, ApiError> {
    Ok(Json(wire::lineage(
        state.daemon.lineage(&name, version).await?,
    )))
}

/// Replays the run that registered a version: its stored pipeline
/// version, params, event and image ids, up to the register step (gates
/// evaluated again, approvals as decided then, nothing registered). When
/// the run ends its artifacts are compared with the original's
/// (`GET …/replays`, the lineage).
#[utoipa::path(post, path = "/api/v1/models/{name}/versions/{version}/replay", operation_id = "replayModelVersion", tag = "models",
    params(("name" = String, Path, description = "The model."), ("version" = i64, Path, description = "The version.")),
    responses((status = 201, description = "The replay run, created.", body = api::Run),
        (status = 400, description = "The version is not a number.", body = api::Error),
        (status = 404, description = "No such version.", body = api::Error),
        (status = 409, description = "It cannot be replayed here: an image it ran is not on this host, or its pipeline version is gone.", body = api::Error)))]
async fn replay(
    Extract(state): Extract<State>,
    axum::Extension(Actor(actor)): axum::Extension<Actor>,
    ApiPath((name, version)): ApiPath<(String, i64)>,
) -> Result<(StatusCode, Json<api::Run>), ApiError> {
    let run = state.daemon.replay(&name, version, &actor).await?;
    Ok((StatusCode::CREATED, Json(wire::run(&run))))
}

/// What each replay of a version's run found, oldest first.
#[utoipa::path(get, path = "/api/v1/models/{name}/versions/{version}/replays", operation_id = "listReplays", tag = "models",
    params(("name" = String, Path, description = "The model."), ("version" = i64, Path, description = "The version.")),
    responses((status = 200, description = "The replays.", body = [api::Replay]),
        (status = 400, description = "The version is not a number.", body = api::Error),
        (status = 404, description = "No such version.", body = api::Error)))]
async fn replays(
    Extract(state): Extract<State>,
    ApiPath((name, version)): ApiPath<(String, i64)>,
) -> Result<Json<Vec<api::Replay>>, ApiError> {
    let store = state.daemon.store();
    store.model_version(&name, version).await?;
    let kept = store.replays(&name, version).await?;
    Ok(Json(kept.into_iter().map(wire::replay).collect()))
}

impl Params for api::CardQuery {
    const EXAMPLE: &'static str = "?format=json|md|html";
}

/// A version's model card, checked against the audit entry of its
/// registration; as JSON, Markdown or an HTML page.
#[utoipa::path(get, path = "/api/v1/models/{name}/versions/{version}/card", operation_id = "modelCard", tag = "models",
    params(("name" = String, Path, description = "The model."), ("version" = i64, Path, description = "The version."), api::CardQuery),
    responses((status = 200, description = "The card.", content(
            (api::ModelCard = "application/json"),
            (String = "text/markdown"),
            (String = "text/html"))),
        (status = 400, description = "The version is not a number, or a bad query value.", body = api::Error),
        (status = 404, description = "No such version, or one registered before weir wrote cards.", body = api::Error)))]
async fn model_card(
    Extract(state): Extract<State>,
    ApiPath((name, version)): ApiPath<(String, i64)>,
    ApiQuery(query): ApiQuery<api::CardQuery>,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse as _;
    let card = match state.daemon.model_card(&name, version).await {
        Ok(card) => card,
        Err(weir_daemon::CardError::Store(e)) => return Err(e.into()),
        Err(e) => return Err(ApiError::not_found(e.to_string())),
    };
    let text = |content_type: &'static str, body: String| {
        let headers = [
            (axum::http::header::CONTENT_TYPE, content_type),
            (
                axum::http::header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; style-src 'unsafe-inline'",
            ),
        ];
        (headers, body).into_response()
    };
    Ok(match query.format.unwrap_or_default() {
        api::CardFormat::Json => Json(wire::model_card(&name, version, card)).into_response(),
        api::CardFormat::Md => text(
            "text/markdown; charset=utf-8",
            weir_daemon::card::markdown(&card.card),
        ),
        api::CardFormat::Html => text(
            "text/html; charset=utf-8",
            weir_daemon::card::html(&card.card),
        ),
    })
}

impl Body for api::Gc {
    const EXAMPLE: &'static str = r#"{"older_than": "30d", "dry_run": true}"#;
}

/// Prunes finished runs older than a retention (the daemon's by default),
/// with their attempts, logs and folders, in short batches; runs that
/// registered a model version and the audit log are kept. Audited.
#[utoipa::path(post, path = "/api/v1/gc", operation_id = "gc", tag = "daemon",
    request_body(content = api::Gc, description = "The retention, and whether only to count.", content_type = "application/json"),
    responses((status = 200, description = "What was pruned, or would be.", body = api::Collected),
        (status = 400, description = "Not JSON, or the wrong shape.", body = api::Error),
        (status = 422, description = "No retention, or one too short or not a duration.", body = api::Error)))]
async fn gc(
    Extract(state): Extract<State>,
    axum::Extension(Actor(actor)): axum::Extension<Actor>,
    MaybeJson(gc): MaybeJson<api::Gc>,
) -> Result<Json<api::Collected>, ApiError> {
    let gc = gc.unwrap_or_default();
    let bad =
        |message: String| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "bad-retention", message);
    let older_than = match &gc.older_than {
        None => None,
        Some(text) => Some(
            weir_model::units::Duration::parse(text)
                .map_err(|e| {
                    bad(format!(
                        "older_than '{text}' is not a duration ({e}): write 30d, 12h, 90m"
                    ))
                })?
                .get(),
        ),
    };
    let collected = match state.daemon.gc(older_than, gc.dry_run, &actor).await {
        Ok(collected) => collected,
        Err(weir_daemon::GcError::Store(e)) => return Err(e.into()),
        Err(e) => return Err(bad(e.to_string())),
    };
    Ok(Json(api::Collected {
        before: collected.before,
        runs: collected.pruned.runs,
        attempts: collected.pruned.attempts,
        log_bytes: collected.pruned.log_bytes,
        folders: collected.folders,
        dry_run: collected.dry_run,
    }))
}

/// Every move of every alias of a model, oldest first.
#[utoipa::path(get, path = "/api/v1/models/{name}/history", operation_id = "modelHistory", tag = "models",
    params(("name" = String, Path, description = "The model.")),
    responses((status = 200, description = "The moves.", body = [api::AliasMove]),
        (status = 400, description = "A path parameter with a NUL character.", body = api::Error),
        (status = 404, description = "No such model.", body = api::Error)))]
async fn model_history(
    Extract(state): Extract<State>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<Vec<api::AliasMove>>, ApiError> {
    let store = state.daemon.store();
    if store.model_versions(&name).await?.is_empty() {
        return Err(ApiError::not_found(format!(
            "no model '{name}' in the registry"
        )));
    }
    let moves = store.alias_history(&name).await?;
    Ok(Json(moves.into_iter().map(wire::alias_move).collect()))
}

impl Body for api::Promotion {
    const EXAMPLE: &'static str = "{\"version\": N}";
}

/// Points an alias at a version, as the token's name; kept in the alias's
/// history and the audit log.
#[utoipa::path(post, path = "/api/v1/models/{name}/aliases/{alias}", operation_id = "promote", tag = "models",
    params(("name" = String, Path, description = "The model."), ("alias" = String, Path, description = "The alias.")),
    request_body = api::Promotion,
    responses((status = 200, description = "The move.", body = api::Promoted),
        (status = 400, description = "Not a promotion, or a model or alias name that breaks the naming rule (`bad-name`).", body = api::Error),
        (status = 404, description = "No such version.", body = api::Error)))]
async fn promote(
    Extract(state): Extract<State>,
    axum::Extension(Actor(actor)): axum::Extension<Actor>,
    ApiPath((name, alias)): ApiPath<(String, String)>,
    ApiJson(promotion): ApiJson<api::Promotion>,
) -> Result<Json<api::Promoted>, ApiError> {
    let before = state
        .daemon
        .promote(&name, promotion.version, &alias, &actor)
        .await?;
    Ok(Json(api::Promoted {
        model: name,
        alias,
        version: promotion.version,
        from_version: before,
        actor,
    }))
}

impl Params for api::LogQuery {
    const EXAMPLE: &'static str = "?attempt=N&offset=BYTES";
}

/// A step's log from `offset` on: ask again from `next` until `done`.
#[utoipa::path(get, path = "/api/v1/runs/{id}/steps/{step}/logs", operation_id = "stepLog", tag = "runs",
    params(("id" = String, Path, description = "The run's id."), ("step" = String, Path, description = "The step instance."), api::LogQuery),
    responses((status = 200, description = "A piece of the log.", body = api::LogChunk),
        (status = 400, description = "A bad query value.", body = api::Error),
        (status = 404, description = "No such run, step or attempt.", body = api::Error)))]
async fn step_log(
    Extract(state): Extract<State>,
    ApiPath((id, step)): ApiPath<(String, String)>,
    ApiQuery(query): ApiQuery<api::LogQuery>,
) -> Result<Json<api::LogChunk>, ApiError> {
    let piece = match state
        .daemon
        .log(&id, &step, query.attempt, query.offset)
        .await
    {
        Ok(piece) => piece,
        Err(weir_daemon::LogError::Store(e)) => return Err(e.into()),
        Err(e) => return Err(ApiError::not_found(e.to_string())),
    };
    Ok(Json(api::LogChunk {
        step,
        attempt: piece.attempt,
        state: wire::step_state(piece.state),
        data: String::from_utf8_lossy(&piece.data).into_owned(),
        next: piece.next,
        done: piece.done,
    }))
}

/// Events (webhook deliveries, rejected ones included, and drift reports)
/// with weir's decision, newest first.
#[utoipa::path(get, path = "/api/v1/events", operation_id = "listEvents", tag = "events",
    params(api::Listing),
    responses((status = 200, description = "The events.", body = [api::Event]),
        (status = 400, description = "A bad query value.", body = api::Error)))]
async fn events(
    Extract(state): Extract<State>,
    ApiQuery(listing): ApiQuery<api::Listing>,
) -> Result<Json<Vec<api::Event>>, ApiError> {
    let limit = listing.limit.unwrap_or(50).clamp(1, 1000);
    let events = state.daemon.store().events(limit).await?;
    Ok(Json(events.into_iter().map(wire::event).collect()))
}

/// Prometheus metrics: runs and steps by state, attempts running, queue
/// depth, GPUs in use, events by kind and outcome. Open, like `/healthz`.
#[utoipa::path(get, path = "/metrics", operation_id = "metrics", tag = "daemon", security(()),
    responses((status = 200, description = "Prometheus text exposition format.", body = String, content_type = "text/plain")))]
async fn metrics(
    Extract(state): Extract<State>,
) -> Result<([(axum::http::header::HeaderName, &'static str); 1], String), ApiError> {
    use std::fmt::Write as _;
    let counts = state.daemon.store().counts().await?;
    let weir_daemon::Busy {
        attempts: running,
        gpus,
        queued,
    } = state.daemon.busy();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP weir_runs Runs in the store, by state.\n# TYPE weir_runs gauge"
    );
    for (s, n) in &counts.runs {
        let _ = writeln!(out, "weir_runs{{state=\"{s}\"}} {n}");
    }
    let _ = writeln!(
        out,
        "# HELP weir_steps Step instances in the store, by state.\n# TYPE weir_steps gauge"
    );
    for (s, n) in &counts.steps {
        let _ = writeln!(out, "weir_steps{{state=\"{s}\"}} {n}");
    }
    let _ = writeln!(
        out,
        "# HELP weir_attempts_running Attempts in flight.\n# TYPE weir_attempts_running gauge\nweir_attempts_running {running}"
    );
    let _ = writeln!(
        out,
        "# HELP weir_queue_depth Runs waiting for a slot of their pipeline.\n# TYPE weir_queue_depth gauge\nweir_queue_depth {queued}"
    );
    let _ = writeln!(
        out,
        "# HELP weir_gpus_in_use GPUs granted to running attempts.\n# TYPE weir_gpus_in_use gauge\nweir_gpus_in_use {gpus}"
    );
    let _ = writeln!(
        out,
        "# HELP weir_events_total Events, by kind and outcome.\n# TYPE weir_events_total counter"
    );
    for (kind, outcome, n) in &counts.events {
        let _ = writeln!(
            out,
            "weir_events_total{{kind=\"{kind}\",outcome=\"{outcome}\"}} {n}"
        );
    }
    out.push_str(&weir_daemon::metrics::render());
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        out,
    ))
}

/// Health: `ok` when the daemon is up and its database answers within
/// 2 s; 503 with the reason while the database is away.
#[utoipa::path(get, path = "/healthz", operation_id = "health", tag = "daemon", security(()),
    responses((status = 200, description = "The daemon is up and its database answers.", body = String, content_type = "text/plain"),
        (status = 503, description = "The database does not answer: why.", body = String, content_type = "text/plain")))]
async fn health(Extract(state): Extract<State>) -> (StatusCode, String) {
    let ping = tokio::time::timeout(HEALTH_TIMEOUT, state.daemon.store().ping()).await;
    match ping {
        Ok(Ok(())) => (StatusCode::OK, "ok\n".to_owned()),
        Ok(Err(e)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("database unavailable: {e}\n"),
        ),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "database unavailable: no answer within {}s\n",
                HEALTH_TIMEOUT.as_secs()
            ),
        ),
    }
}

/// How long `/healthz` waits for the database.
const HEALTH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

impl Body for api::Backfill {
    const EXAMPLE: &'static str = "{\"from\": RFC 3339 time, \"to\": RFC 3339 time}";
}

/// One run per schedule slot in `[from, to]`, each slot at most once ever.
#[utoipa::path(post, path = "/api/v1/pipelines/{name}/backfill", operation_id = "backfill", tag = "pipelines",
    params(("name" = String, Path, description = "The pipeline.")),
    request_body = api::Backfill,
    responses((status = 201, description = "The runs started, and the slots run before.", body = api::Backfilled),
        (status = 400, description = "Not a range.", body = api::Error),
        (status = 404, description = "No such pipeline.", body = api::Error),
        (status = 422, description = "`to` before `from`, or the pipeline has no schedule.", body = api::Error)))]
async fn backfill(
    Extract(state): Extract<State>,
    ApiPath(name): ApiPath<String>,
    ApiJson(range): ApiJson<api::Backfill>,
) -> Result<(StatusCode, Json<api::Backfilled>), ApiError> {
    if range.to < range.from {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "bad-range",
            "'to' is before 'from'",
        ));
    }
    let (started, skipped) = state.daemon.backfill(&name, range.from, range.to).await?;
    let runs = (started.into_iter())
        .map(|(slot, run)| api::BackfilledRun { slot, run })
        .collect();
    Ok((StatusCode::CREATED, Json(api::Backfilled { runs, skipped })))
}

impl Body for api::DriftReport {
    const EXAMPLE: &'static str = "{\"pipeline\", \"metric\", \"value\"} or {\"pipeline\", \"metric\": \"psi\"|\"kl\", \"reference\": [..], \"current\": [..]}";
}

/// A drift report: a measured `value`, or two histograms over the same
/// bins for which weir computes `psi` or `kl`. Answers weir's decision.
#[utoipa::path(post, path = "/api/v1/events/drift", operation_id = "reportDrift", tag = "events",
    request_body = api::DriftReport,
    responses((status = 200, description = "The value judged and the decision.", body = api::DriftAnswer),
        (status = 400, description = "Neither a value nor two histograms.", body = api::Error),
        (status = 404, description = "No such pipeline.", body = api::Error),
        (status = 422, description = "Histograms that do not compare (bins differ, empty, negative), psi or kl asked of other metrics, or refused (the run it would start cannot be).", body = api::Error)))]
async fn drift(
    Extract(state): Extract<State>,
    ApiJson(report): ApiJson<api::DriftReport>,
) -> Result<Json<api::DriftAnswer>, ApiError> {
    use weir_daemon::{Measured, TriggerError};
    let measured = match (report.value, report.reference, report.current) {
        (Some(value), None, None) => Measured::Value(value),
        (None, Some(reference), Some(current)) => Measured::Histograms { reference, current },
        _ => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad-report",
                "give either a finite 'value', or both 'reference' and 'current'",
            ));
        }
    };
    let report = weir_daemon::DriftReport {
        pipeline: report.pipeline,
        metric: report.metric,
        measured,
    };
    let metric = report.metric.clone();
    let (value, decision) = state.daemon.drift(report).await.map_err(|e| match e {
        // The report has the documented shape; its numbers do not compare.
        TriggerError::BadReport(why) => {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "bad-report", why)
        }
        e @ (TriggerError::UnknownPipeline(..) | TriggerError::Store(_)) => ApiError::from(e),
        e => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "refused", e.to_string()),
    })?;
    Ok(Json(api::DriftAnswer {
        metric,
        value,
        decision: decision.to_string(),
        outcome: decision.kind().to_owned(),
        detail: wire::decision(&decision),
    }))
}

/// A certificate chain and its private key, PEM files, to serve over TLS.
#[derive(Debug, Clone)]
pub struct Tls {
    /// The certificate chain (the server's first).
    pub cert: std::path::PathBuf,
    /// Its private key (PKCS#8, PKCS#1 or SEC1).
    pub key: std::path::PathBuf,
}

/// Serves the API over TLS (rustls; the process's crypto provider must be
/// installed) on `listener` until `shutdown` completes, then finishes the
/// requests in flight (10 s at most) and returns. A certificate or key
/// that cannot be read is an error before anything is served.
pub async fn serve_tls(
    state: State,
    listener: tokio::net::TcpListener,
    tls: &Tls,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let config = axum_server::tls_rustls::RustlsConfig::from_pem_file(&tls.cert, &tls.key)
        .await
        .map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!(
                    "cannot use the certificate {} with the key {}: {e}",
                    tls.cert.display(),
                    tls.key.display()
                ),
            )
        })?;
    let handle = axum_server::Handle::new();
    let stopping = handle.clone();
    tokio::spawn(async move {
        shutdown.await;
        stopping.graceful_shutdown(Some(std::time::Duration::from_secs(10)));
    });
    axum_server::from_tcp_rustls(listener.into_std()?, config)?
        .handle(handle)
        .serve(router(state).into_make_service())
        .await
}

/// Serves the API on `listener` until `shutdown` completes, then finishes
/// the requests in flight and returns.
pub async fn serve(
    state: State,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}
