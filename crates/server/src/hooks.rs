//! `POST /api/v1/hooks/{pipeline}`: signed webhooks. The body's
//! HMAC-SHA256 under the pipeline's `on.webhook.secret_env` key must match
//! `X-Weir-Signature-256` (or GitHub's `X-Hub-Signature-256`),
//! compared in constant time; a delivery id is accepted once; the payload
//! becomes the run's `event`.

use crate::error::ApiError;
use crate::routes::State;
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State as Extract};
use axum::http::{HeaderMap, StatusCode};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use weir_daemon::{Delivered, TriggerError};

/// Largest webhook body accepted.
pub(crate) const BODY_LIMIT: usize = 1024 * 1024;

pub(crate) async fn hook(
    Extract(state): Extract<State>,
    Path(name): Path<String>,
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
    let Some(loaded) = state.daemon.pipeline(&name) else {
        return Err(ApiError::not_found(format!("no pipeline '{name}'")));
    };
    let Some(webhook) = &loaded.pipeline.on.webhook else {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "no-webhook",
            format!("pipeline '{name}' takes no webhooks: give it on.webhook.secret_env"),
        ));
    };
    let store = state.daemon.store();
    let now = weir_daemon::now();
    let secret_name = &webhook.secret_env.value;
    let Ok(secret) = std::env::var(secret_name) else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no-secret",
            format!("the daemon has no {secret_name} in its environment to check signatures with"),
        ));
    };
    let signature = headers
        .get("x-weir-signature-256")
        .or_else(|| headers.get("x-hub-signature-256"))
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("sha256="))
        .and_then(|hex_text| hex::decode(hex_text).ok());
    let valid = signature.is_some_and(|signature| {
        let mut mac = match <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes()) {
            Ok(mac) => mac,
            Err(_) => return false,
        };
        mac.update(&body);
        mac.verify_slice(&signature).is_ok()
    });
    if !valid {
        let _ = store
            .record_event(
                "webhook",
                Some(&name),
                None,
                &json!(null),
                "rejected: missing or bad signature",
                now,
            )
            .await;
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "bad-signature",
            "missing or bad signature: send X-Weir-Signature-256: sha256=<hex of HMAC-SHA256(body)>",
        ));
    }
    let payload: Value = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad-payload",
            format!("the body is not JSON: {e}"),
        )
    })?;
    let delivery = headers
        .get("x-weir-delivery")
        .or_else(|| headers.get("x-github-delivery"))
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    match state
        .daemon
        .deliver(&name, delivery.as_deref(), payload.clone())
        .await
    {
        Ok(Delivered::Started(run)) => Ok((
            StatusCode::ACCEPTED,
            Json(json!({ "run": run.id, "delivery": delivery, "replay": false })),
        )),
        Ok(Delivered::Replay(run)) => Ok((
            StatusCode::OK,
            Json(json!({ "run": run, "delivery": delivery, "replay": true })),
        )),
        Err(TriggerError::Store(e)) => Err(e.into()),
        Err(e) => {
            // Refused before anything was stored: keep the refusal.
            store
                .record_event(
                    "webhook",
                    Some(&name),
                    None,
                    &payload,
                    &format!("refused: {e}"),
                    now,
                )
                .await?;
            Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "refused",
                e.to_string(),
            ))
        }
    }
}
