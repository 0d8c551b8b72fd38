//! Events from outside that may start runs: signed webhook deliveries and
//! drift reports. Each is checked and decided here, and stored with its
//! [`Decision`] — a rejection here, an accepted one with its run in the
//! run's own transaction (`runs.rs`).
//!
//! **Invariant:** every delivery and report that reaches a pipeline is
//! stored with what weir decided for it, accepted or not.

use crate::clock::now;
use crate::runs::{Daemon, StartRun, Started, TriggerError};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use std::sync::Arc;
use thiserror::Error;
use weir_engine::{Cause, Decision, LastDrift, drift_decision};

/// A drift report ([`Daemon::drift`]).
#[derive(Debug, Clone, PartialEq)]
pub struct DriftReport {
    /// The pipeline whose `on.drift` rules judge it.
    pub pipeline: String,
    /// The metric.
    pub metric: String,
    /// What was measured.
    pub measured: Measured,
}

/// What a drift report measured.
#[derive(Debug, Clone, PartialEq)]
pub enum Measured {
    /// The metric's value.
    Value(f64),
    /// Two histograms over the same bins, for weir to compute `psi` or `kl`.
    Histograms {
        /// Training data.
        reference: Vec<f64>,
        /// Serving data.
        current: Vec<f64>,
    },
}

/// A webhook delivery as it arrived.
#[derive(Debug, Clone)]
pub struct Delivery<'a> {
    /// The pipeline it is for.
    pub pipeline: &'a str,
    /// The raw body, as signed.
    pub body: &'a [u8],
    /// The `sha256=<hex>` signature header's value, if any.
    pub signature: Option<&'a str>,
    /// The sender's delivery id, if any.
    pub delivery: Option<&'a str>,
}

/// Why a delivery started no run.
#[derive(Debug, Error)]
pub enum DeliveryError {
    /// No loaded pipeline has this name.
    #[error("no pipeline '{0}'")]
    UnknownPipeline(String),
    /// The pipeline has no `on.webhook`.
    #[error("pipeline '{0}' takes no webhooks: give it on.webhook.secret_env")]
    NoWebhook(String),
    /// The variable holding the secret is not set in the daemon.
    #[error("the daemon has no {0} in its environment to check signatures with")]
    NoSecret(String),
    /// The signature is missing or wrong (recorded as rejected).
    #[error(
        "missing or bad signature: send X-Weir-Signature-256: sha256=<hex of HMAC-SHA256(body)>"
    )]
    BadSignature,
    /// The body is not JSON.
    #[error("the body is not JSON: {0}")]
    BadPayload(String),
    /// The pipeline requires a delivery id and the delivery has none
    /// (recorded as rejected).
    #[error(
        "no delivery id: send X-Weir-Delivery (or X-GitHub-Delivery) with an id unique to this delivery, or set on.webhook.require_delivery_id: false"
    )]
    NoDeliveryId,
    /// The run was refused (recorded as rejected).
    #[error(transparent)]
    Refused(TriggerError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] weir_store::Error),
}

/// Whether `signature` (a `sha256=<hex>` header's value) is the
/// HMAC-SHA256 of `body` with `secret`, compared in constant time. Any
/// bytes in, a yes or no out: the fuzz target `intake` holds it to that.
pub fn signed(secret: &[u8], body: &[u8], signature: Option<&str>) -> bool {
    let signature = signature
        .and_then(|v| v.strip_prefix("sha256="))
        .and_then(|hex_text| hex::decode(hex_text).ok());
    signature.is_some_and(|signature| {
        let Ok(mut mac) = <Hmac<Sha256> as KeyInit>::new_from_slice(secret) else {
            return false;
        };
        mac.update(body);
        mac.verify_slice(&signature).is_ok()
    })
}

impl Daemon {
    /// Takes a webhook delivery: checks its HMAC-SHA256 signature (in
    /// constant time) with the secret `on.webhook.secret_env` names, and
    /// starts a run with its payload as `event`, the delivery stored with
    /// it. A delivery id seen before starts nothing, nor does a body signed
    /// and accepted within `on.webhook.dedupe` (a replay under a fresh id:
    /// the id is not signed): the answer is the run it created. A delivery
    /// without an id is refused when `on.webhook.require_delivery_id`.
    /// Rejections are stored with their reason (the newest of them).
    pub async fn deliver(
        self: &Arc<Self>,
        delivery: Delivery<'_>,
    ) -> Result<Started, DeliveryError> {
        let name = delivery.pipeline;
        let Some(loaded) = self.pipeline(name) else {
            return Err(DeliveryError::UnknownPipeline(name.to_owned()));
        };
        let Some(webhook) = &loaded.pipeline.on.webhook else {
            return Err(DeliveryError::NoWebhook(name.to_owned()));
        };
        let secret_name = &webhook.secret_env.value;
        let Ok(secret) = std::env::var(secret_name) else {
            return Err(DeliveryError::NoSecret(secret_name.clone()));
        };
        if !signed(secret.as_bytes(), delivery.body, delivery.signature) {
            self.reject(name, &serde_json::Value::Null, "missing or bad signature")
                .await?;
            return Err(DeliveryError::BadSignature);
        }
        let payload: serde_json::Value = serde_json::from_slice(delivery.body)
            .map_err(|e| DeliveryError::BadPayload(e.to_string()))?;
        if webhook.require_delivery_id && delivery.delivery.is_none_or(str::is_empty) {
            self.reject(name, &payload, "no delivery id").await?;
            return Err(DeliveryError::NoDeliveryId);
        }
        let same_body = (!webhook.dedupe.is_zero()).then(|| {
            use sha2::Digest as _;
            let sha256 = hex::encode(Sha256::digest(delivery.body));
            let since = chrono::Duration::from_std(webhook.dedupe)
                .ok()
                .and_then(|window| now().checked_sub_signed(window))
                .unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC);
            (sha256, since)
        });
        let start = StartRun {
            event: payload.clone(),
            same_body,
            ..StartRun::new(
                name,
                Cause::Webhook {
                    delivery: delivery.delivery.map(str::to_owned),
                },
            )
        };
        match self.start_run(start).await {
            Ok(started) => Ok(started),
            Err(TriggerError::Store(e)) => Err(e.into()),
            Err(e) => {
                // Refused before anything was stored: keep the refusal.
                self.reject(name, &payload, &e.to_string()).await?;
                Err(DeliveryError::Refused(e))
            }
        }
    }

    async fn reject(
        &self,
        name: &str,
        payload: &serde_json::Value,
        reason: &str,
    ) -> Result<(), weir_store::Error> {
        let decision = Decision::Rejected {
            reason: reason.to_owned(),
        };
        self.store
            .record_event("webhook", Some(name), payload, &decision, now())
            .await
            .map(drop)
    }

    /// Decides a drift report: a rule of `on.drift` for its metric whose
    /// threshold the value passes starts a retraining run, unless a
    /// drift-triggered run is still queued or running (the report joins it)
    /// or one started within the rule's cooldown
    /// (`weir_engine::drift_decision`). Histograms are first reduced to
    /// their `psi` or `kl`. The report is stored with the decision; the
    /// value judged and the decision are returned.
    pub async fn drift(
        self: &Arc<Self>,
        report: DriftReport,
    ) -> Result<(f64, Decision), TriggerError> {
        let DriftReport {
            pipeline: name,
            metric,
            measured,
        } = report;
        let (name, metric) = (name.as_str(), metric.as_str());
        let bad = |e: weir_engine::drift::Error| TriggerError::BadReport(e.to_string());
        let (value, reference, current) = match measured {
            Measured::Value(value) if value.is_finite() => (value, None, None),
            Measured::Value(_) => {
                return Err(TriggerError::BadReport(
                    "the value must be a finite number".to_owned(),
                ));
            }
            Measured::Histograms { reference, current } => {
                let value = match metric {
                    "psi" => weir_engine::drift::psi(&reference, &current).map_err(bad)?,
                    "kl" => weir_engine::drift::kl(&reference, &current).map_err(bad)?,
                    other => {
                        return Err(TriggerError::BadReport(format!(
                            "weir computes psi or kl from histograms, not '{other}': send a measured value instead"
                        )));
                    }
                };
                (value, Some(reference), Some(current))
            }
        };
        let report = serde_json::json!({
            "pipeline": name,
            "metric": metric,
            "value": value,
            "reference": reference,
            "current": current,
        });
        let loaded = self.loaded(name)?;
        let at = now();
        let last = match self.store.last_run_by(name, "drift").await? {
            Some(run) => Some(LastDrift {
                state: run.state,
                id: run.id,
                created_at: run.created_at,
            }),
            None => None,
        };
        let decided = drift_decision(&loaded.pipeline.on.drift, metric, value, last.as_ref(), at);
        let decision = match decided {
            Some(decision) => {
                self.store
                    .record_event("drift", Some(name), &report, &decision, at)
                    .await?;
                decision
            }
            None => {
                let start = StartRun {
                    event: report,
                    ..StartRun::new(
                        name,
                        Cause::Drift {
                            metric: metric.to_owned(),
                            value,
                        },
                    )
                };
                let started = self.start_run(start).await?;
                Decision::Triggered {
                    run: started.run_id().unwrap_or_default().to_owned(),
                }
            }
        };
        tracing::info!(pipeline = name, metric, value, decision = %decision, "drift event");
        Ok((value, decision))
    }
}
