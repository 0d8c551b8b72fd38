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
use serde_json::{Value, json};
use weir_daemon::{Delivery, Started};

/// Largest webhook body accepted.
pub(crate) const BODY_LIMIT: usize = 1024 * 1024;

pub(crate) async fn hook(
    Extract(state): Extract<State>,
    ApiPath(name): ApiPath<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
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
    let started = state
        .daemon
        .deliver(Delivery {
            pipeline: &name,
            body: &body,
            signature,
            delivery,
        })
        .await?;
    Ok(match started {
        Started::Run(run) => (
            StatusCode::ACCEPTED,
            Json(json!({ "run": run.id, "delivery": delivery, "replay": false })),
        ),
        Started::Replay(run) => (
            StatusCode::OK,
            Json(json!({ "run": run, "delivery": delivery, "replay": true })),
        ),
    })
}
