//! `POST /api/v1/hooks/{pipeline}`: signed webhooks, headers to a
//! [`Delivery`]: the signature from `X-Weir-Signature-256` (or GitHub's
//! `X-Hub-Signature-256`), the id from `X-Weir-Delivery` (or
//! `X-GitHub-Delivery`). The daemon checks and decides it
//! (`weir_daemon::intake`); this file keeps only headers and status codes.

use crate::error::ApiError;
use crate::extract::ApiPath;
use crate::routes::State;
use axum::Json;
use axum::body::Bytes;
use axum::extract::State as Extract;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode};
use weir_api as api;
use weir_daemon::{Delivery, Started};

/// Largest webhook body accepted.
pub(crate) const BODY_LIMIT: usize = 1024 * 1024;

/// A signed webhook: starts a run of the pipeline unless its `if` or
/// `branches` filter it out; a delivery id seen before starts nothing.
/// Signed with the pipeline's `on.webhook` secret, not the bearer token.
#[utoipa::path(post, path = "/api/v1/hooks/{pipeline}", operation_id = "webhook", tag = "events", security(()),
    params(
        ("pipeline" = String, Path, description = "The pipeline."),
        ("X-Weir-Signature-256" = String, Header, description = "`sha256=HEX`: HMAC-SHA256 of the body with the secret (GitHub's `X-Hub-Signature-256` is read too)."),
        ("X-Weir-Delivery" = Option<String>, Header, description = "The delivery's id, for replays (GitHub's `X-GitHub-Delivery` is read too); required unless the pipeline sets `on.webhook.require_delivery_id: false`.")),
    request_body(content = Object, description = "The payload, any JSON, as `event` in expressions."),
    responses(
        (status = 202, description = "A run was started.", body = api::Delivered),
        (status = 200, description = "This delivery was seen before (its id, or its signed body within the pipeline's `on.webhook.dedupe`): its run.", body = api::Delivered),
        (status = 400, description = "The body is not JSON, or the delivery has no id and the pipeline requires one.", body = api::Error),
        (status = 401, description = "Bad or missing signature.", body = api::Error),
        (status = 403, description = "The pipeline takes no webhooks.", body = api::Error),
        (status = 404, description = "No such pipeline.", body = api::Error),
        (status = 413, description = "The body is over 1 MiB.", body = api::Error),
        (status = 422, description = "Refused by the pipeline's filters.", body = api::Error),
        (status = 503, description = "The secret is not set in the daemon's environment.", body = api::Error)))]
pub(crate) async fn hook(
    Extract(state): Extract<State>,
    ApiPath(name): ApiPath<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<api::Delivered>), ApiError> {
    let body = body.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too-large",
            format!("webhook bodies are limited to {BODY_LIMIT} bytes"),
        )
    })?;
    let signature = headers
        .get("x-weir-signature-256")
        .or_else(|| headers.get("x-hub-signature-256"))
        .and_then(|v| v.to_str().ok());
    let delivery = headers
        .get("x-weir-delivery")
        .or_else(|| headers.get("x-github-delivery"))
        .and_then(|v| v.to_str().ok());
    let arrived = std::time::Instant::now();
    let started = state
        .daemon
        .deliver(Delivery {
            pipeline: &name,
            body: &body,
            signature,
            delivery,
        })
        .await;
    let outcome = match &started {
        Ok(Started::Run(_)) => "accepted",
        Ok(Started::Replay(_)) => "replay",
        Err(_) => "refused",
    };
    weir_daemon::metrics::observe_webhook(outcome, arrived.elapsed());
    let (status, run, replay) = match started? {
        Started::Run(run) => (StatusCode::ACCEPTED, Some(run.id), false),
        Started::Replay(run) => (StatusCode::OK, run, true),
    };
    Ok((
        status,
        Json(api::Delivered {
            run,
            delivery: delivery.map(str::to_owned),
            replay,
        }),
    ))
}
