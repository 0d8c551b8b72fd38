//! The routes: health, pipelines, runs (create, list, get, cancel,
//! retry), approvals, logs, events.

use crate::error::{ApiError, run_json};
use crate::extract::{ApiJson, ApiPath, ApiQuery, Body, MaybeJson, Params};
use axum::extract::{Request, State as Extract};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::sync::Arc;
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
        .route("/healthz", get(|| async { "ok\n" }))
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

async fn pipelines(Extract(state): Extract<State>) -> Json<Value> {
    let list: Vec<Value> = state
        .daemon
        .pipelines()
        .into_iter()
        .map(|l| {
            json!({
                "name": l.pipeline.name.value,
                "description": l.pipeline.description,
                "steps": l.pipeline.steps.len(),
                "file": l.path.display().to_string(),
                "hash": l.hash,
                "manual": l.pipeline.on.manual,
            })
        })
        .collect();
    Json(Value::Array(list))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewRun {
    pipeline: String,
    #[serde(default)]
    params: BTreeMap<String, String>,
}

impl Body for NewRun {
    const EXAMPLE: &'static str = "{\"pipeline\": NAME, \"params\": {NAME: VALUE}}";
}

async fn create_run(
    Extract(state): Extract<State>,
    axum::Extension(Actor(actor)): axum::Extension<Actor>,
    ApiJson(new): ApiJson<NewRun>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let start = StartRun {
        params: new.params.into_iter().collect(),
        ..StartRun::new(new.pipeline, Cause::manual(actor))
    };
    started(state.daemon.start_run(start).await?)
}

/// The answer to a started run: 201 with the run.
fn started(started: Started) -> Result<(StatusCode, Json<Value>), ApiError> {
    match started {
        Started::Run(run) => Ok((StatusCode::CREATED, Json(run_json(&run)))),
        Started::Replay(run) => Ok((StatusCode::OK, Json(json!({ "run": run, "replay": true })))),
    }
}

#[derive(Deserialize)]
struct Listing {
    limit: Option<i64>,
}

impl Params for Listing {
    const EXAMPLE: &'static str = "?limit=N";
}

async fn list_runs(
    Extract(state): Extract<State>,
    ApiQuery(listing): ApiQuery<Listing>,
) -> Result<Json<Value>, ApiError> {
    let limit = listing.limit.unwrap_or(50).clamp(1, 1000);
    let runs = state.daemon.store().list_runs(limit).await?;
    Ok(Json(json!(runs)))
}

async fn get_run(
    Extract(state): Extract<State>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    let run = state.daemon.store().load_run(&id).await?;
    Ok(Json(run_json(&run)))
}

async fn cancel_run(
    Extract(state): Extract<State>,
    axum::Extension(Actor(actor)): axum::Extension<Actor>,
    ApiPath(id): ApiPath<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
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
        Json(json!({ "id": id, "cancelling": true })),
    ))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Retry {
    from: Option<String>,
}

impl Body for Retry {
    const EXAMPLE: &'static str = "{\"from\": STEP}";
}

/// A new run retrying run `id`, reusing the steps that succeeded before
/// `from` (default: before the failed ones).
async fn retry_run(
    Extract(state): Extract<State>,
    axum::Extension(Actor(actor)): axum::Extension<Actor>,
    ApiPath(id): ApiPath<String>,
    MaybeJson(retry): MaybeJson<Retry>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let retry = retry.unwrap_or_default();
    let cause = Cause::Retry {
        of: id,
        from: retry.from,
        actor,
    };
    started(state.daemon.start_run(StartRun::new("", cause)).await?)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Decision {
    approved: bool,
    comment: Option<String>,
}

impl Body for Decision {
    const EXAMPLE: &'static str = "{\"approved\": true|false, \"comment\": TEXT}";
}

/// Decides an approval step: `{"approved": true|false, "comment": …}`,
/// recorded with the token's name.
async fn decide(
    Extract(state): Extract<State>,
    axum::Extension(Actor(actor)): axum::Extension<Actor>,
    ApiPath((id, step)): ApiPath<(String, String)>,
    ApiJson(decision): ApiJson<Decision>,
) -> Result<Json<Value>, ApiError> {
    match state
        .daemon
        .decide(&id, &step, decision.approved, &actor, decision.comment)
        .await
    {
        Ok(run) => Ok(Json(run_json(&run))),
        Err(weir_daemon::DecideError::Store(e)) => Err(e.into()),
        Err(e) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "cannot-decide",
            e.to_string(),
        )),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    #[serde(default)]
    after: i64,
    limit: Option<i64>,
}

impl Params for AuditQuery {
    const EXAMPLE: &'static str = "?after=SEQ&limit=N";
}

/// Audit entries after `after`, in order (at most `limit`, default 1000).
async fn audit(
    Extract(state): Extract<State>,
    ApiQuery(query): ApiQuery<AuditQuery>,
) -> Result<Json<Value>, ApiError> {
    let limit = query.limit.unwrap_or(1000).clamp(1, 10_000);
    let entries = state
        .daemon
        .store()
        .audit_entries(query.after, limit)
        .await?;
    Ok(Json(json!(entries)))
}

/// The whole chain checked against the daemon's key: the count, or the
/// first entry that does not verify and why.
async fn audit_verify(Extract(state): Extract<State>) -> Result<Json<Value>, ApiError> {
    let store = state.daemon.store();
    let mut entries = Vec::new();
    loop {
        let after = entries.last().map_or(0, |e: &weir_store::AuditEntry| e.seq);
        let page = store.audit_entries(after, 10_000).await?;
        if page.is_empty() {
            break;
        }
        entries.extend(page);
    }
    let key = state.daemon.audit_key();
    Ok(Json(match weir_store::verify(&entries, &key) {
        Ok(count) => json!({ "verified": true, "entries": count }),
        Err(broken) => json!({
            "verified": false,
            "entries": entries.len(),
            "seq": broken.seq,
            "reason": broken.reason,
        }),
    }))
}

/// The public key that verifies the audit log, hex.
async fn audit_key(Extract(state): Extract<State>) -> Json<Value> {
    let key = hex::encode(state.daemon.audit_key().to_bytes());
    Json(json!({ "algorithm": "ed25519", "public_key": key }))
}

async fn models(Extract(state): Extract<State>) -> Result<Json<Value>, ApiError> {
    let models = state.daemon.store().models().await?;
    let list: Vec<Value> = models
        .into_iter()
        .map(|m| {
            let aliases: serde_json::Map<String, Value> =
                m.aliases.into_iter().map(|(a, v)| (a, json!(v))).collect();
            json!({ "model": m.model, "latest": m.latest, "versions": m.versions, "aliases": aliases })
        })
        .collect();
    Ok(Json(Value::Array(list)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelQuery {
    alias: Option<String>,
    at: Option<chrono::DateTime<chrono::Utc>>,
}

impl Params for ModelQuery {
    const EXAMPLE: &'static str = "?alias=NAME&at=RFC3339-TIME";
}

/// A model's versions and aliases; with `alias` (and `at`), the version
/// that alias pointed at then.
async fn model(
    Extract(state): Extract<State>,
    ApiPath(name): ApiPath<String>,
    ApiQuery(query): ApiQuery<ModelQuery>,
) -> Result<Json<Value>, ApiError> {
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
        return Ok(Json(json!(version)));
    }
    let summary = store.models().await?.into_iter().find(|m| m.model == name);
    let aliases: serde_json::Map<String, Value> = summary
        .map(|m| m.aliases.into_iter().map(|(a, v)| (a, json!(v))).collect())
        .unwrap_or_default();
    Ok(Json(
        json!({ "model": name, "aliases": aliases, "versions": versions }),
    ))
}

async fn model_version(
    Extract(state): Extract<State>,
    ApiPath((name, version)): ApiPath<(String, i64)>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!(
        state.daemon.store().model_version(&name, version).await?
    )))
}

async fn lineage(
    Extract(state): Extract<State>,
    ApiPath((name, version)): ApiPath<(String, i64)>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(state.daemon.lineage(&name, version).await?))
}

async fn model_history(
    Extract(state): Extract<State>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    let store = state.daemon.store();
    if store.model_versions(&name).await?.is_empty() {
        return Err(ApiError::not_found(format!(
            "no model '{name}' in the registry"
        )));
    }
    Ok(Json(json!(store.alias_history(&name).await?)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Promotion {
    version: i64,
}

impl Body for Promotion {
    const EXAMPLE: &'static str = "{\"version\": N}";
}

/// Points an alias at a version: `{"version": N}`, kept in the alias's
/// history with the token's name.
async fn promote(
    Extract(state): Extract<State>,
    axum::Extension(Actor(actor)): axum::Extension<Actor>,
    ApiPath((name, alias)): ApiPath<(String, String)>,
    ApiJson(promotion): ApiJson<Promotion>,
) -> Result<Json<Value>, ApiError> {
    let before = state
        .daemon
        .promote(&name, promotion.version, &alias, &actor)
        .await?;
    Ok(Json(json!({
        "model": name,
        "alias": alias,
        "version": promotion.version,
        "from_version": before,
        "actor": actor,
    })))
}

#[derive(Deserialize)]
struct LogQuery {
    attempt: Option<u32>,
    #[serde(default)]
    offset: u64,
}

impl Params for LogQuery {
    const EXAMPLE: &'static str = "?attempt=N&offset=BYTES";
}

/// A step's log from `offset` on, for `weir logs` (and `--follow`, which
/// asks again from `next` until `done`). The latest attempt unless one is named.
async fn step_log(
    Extract(state): Extract<State>,
    ApiPath((id, step)): ApiPath<(String, String)>,
    ApiQuery(query): ApiQuery<LogQuery>,
) -> Result<Json<Value>, ApiError> {
    let run = state.daemon.store().load_run(&id).await?;
    let Some(index) = run.steps.iter().position(|s| s.id == step) else {
        let names: Vec<&str> = run.steps.iter().map(|s| s.id.as_str()).collect();
        return Err(ApiError::not_found(format!(
            "run {id} has no step '{step}' (it has {})",
            names.join(", ")
        )));
    };
    let instance = &run.steps[index];
    let attempt = match query.attempt {
        Some(n) if instance.attempts.iter().any(|a| a.number == n) => n,
        Some(n) => {
            return Err(ApiError::not_found(format!(
                "step '{step}' has no attempt {n}"
            )));
        }
        None => instance.attempts.last().map_or(0, |a| a.number),
    };
    let (data, next) = if attempt == 0 {
        (Vec::new(), 0)
    } else {
        state
            .daemon
            .store()
            .read_log_from(&id, index, attempt, query.offset)
            .await?
    };
    let last = instance.attempts.last().map_or(0, |a| a.number);
    let done = instance.state.is_terminal() || attempt < last;
    Ok(Json(json!({
        "step": step,
        "attempt": attempt,
        "state": instance.state,
        "data": String::from_utf8_lossy(&data),
        "next": next,
        "done": done,
    })))
}

/// Events (webhook deliveries, rejected ones included) with weir's decision, newest first.
async fn events(
    Extract(state): Extract<State>,
    ApiQuery(listing): ApiQuery<Listing>,
) -> Result<Json<Value>, ApiError> {
    let limit = listing.limit.unwrap_or(50).clamp(1, 1000);
    let events = state.daemon.store().events(limit).await?;
    Ok(Json(json!(events)))
}

/// Prometheus text: runs and steps by state, attempts in flight, runs
/// queued, GPUs held, events by kind and outcome. Open, like `/healthz`.
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
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        out,
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Backfill {
    from: chrono::DateTime<chrono::Utc>,
    to: chrono::DateTime<chrono::Utc>,
}

impl Body for Backfill {
    const EXAMPLE: &'static str = "{\"from\": RFC 3339 time, \"to\": RFC 3339 time}";
}

/// One run per schedule slot in `[from, to]`, each slot at most once ever.
async fn backfill(
    Extract(state): Extract<State>,
    ApiPath(name): ApiPath<String>,
    ApiJson(range): ApiJson<Backfill>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    if range.to < range.from {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad-range",
            "'to' is before 'from'",
        ));
    }
    let (started, skipped) = state.daemon.backfill(&name, range.from, range.to).await?;
    let runs: Vec<Value> = started
        .iter()
        .map(|(slot, run)| json!({ "slot": slot, "run": run }))
        .collect();
    Ok((
        StatusCode::CREATED,
        Json(json!({ "runs": runs, "skipped": skipped })),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Drift {
    pipeline: String,
    metric: String,
    value: Option<f64>,
    reference: Option<Vec<f64>>,
    current: Option<Vec<f64>>,
}

impl Body for Drift {
    const EXAMPLE: &'static str = "{\"pipeline\", \"metric\", \"value\"} or {\"pipeline\", \"metric\": \"psi\"|\"kl\", \"reference\": [..], \"current\": [..]}";
}

/// A drift report: a measured `value`, or two histograms over the same
/// bins for which weir computes `psi` or `kl`. Answers weir's decision.
async fn drift(
    Extract(state): Extract<State>,
    ApiJson(report): ApiJson<Drift>,
) -> Result<Json<Value>, ApiError> {
    let bad = |message: String| ApiError::new(StatusCode::BAD_REQUEST, "bad-report", message);
    let value = match (&report.value, &report.reference, &report.current) {
        (Some(value), None, None) if value.is_finite() => *value,
        (None, Some(reference), Some(current)) => match report.metric.as_str() {
            "psi" => weir_engine::drift::psi(reference, current).map_err(|e| bad(e.to_string()))?,
            "kl" => weir_engine::drift::kl(reference, current).map_err(|e| bad(e.to_string()))?,
            other => {
                return Err(bad(format!(
                    "weir computes psi or kl from histograms, not '{other}': send a measured value instead"
                )));
            }
        },
        _ => {
            return Err(bad(
                "give either a finite 'value', or both 'reference' and 'current'".to_owned(),
            ));
        }
    };
    let payload = json!({
        "pipeline": report.pipeline,
        "metric": report.metric,
        "value": value,
        "reference": report.reference,
        "current": report.current,
    });
    let decision = state
        .daemon
        .drift(&report.pipeline, &report.metric, value, payload)
        .await
        .map_err(|e| match e {
            e @ (weir_daemon::TriggerError::UnknownPipeline(..)
            | weir_daemon::TriggerError::Store(_)) => ApiError::from(e),
            e => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "refused", e.to_string()),
        })?;
    Ok(Json(json!({
        "metric": report.metric,
        "value": value,
        "decision": decision.to_string(),
        "outcome": decision.kind(),
        "detail": decision,
    })))
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
