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
use weir_engine::{Cause, Decision, LastDrift, RunState, drift_decision};

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
    /// The run was refused (recorded as rejected).
    #[error(transparent)]
    Refused(TriggerError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] weir_store::Error),
}

impl Daemon {
    /// Takes a webhook delivery: checks its HMAC-SHA256 signature (in
    /// constant time) with the secret `on.webhook.secret_env` names, and
    /// starts a run with its payload as `event`, the delivery stored with
    /// it. A delivery id seen before starts nothing: the answer is the run
    /// it created. Rejections are stored with their reason.
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
        let signature = delivery
            .signature
            .and_then(|v| v.strip_prefix("sha256="))
            .and_then(|hex_text| hex::decode(hex_text).ok());
        let valid = signature.is_some_and(|signature| {
            let Ok(mut mac) = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes()) else {
                return false;
            };
            mac.update(delivery.body);
            mac.verify_slice(&signature).is_ok()
        });
        if !valid {
            self.reject(name, &serde_json::Value::Null, "missing or bad signature")
                .await?;
            return Err(DeliveryError::BadSignature);
        }
        let payload: serde_json::Value = serde_json::from_slice(delivery.body)
            .map_err(|e| DeliveryError::BadPayload(e.to_string()))?;
        let start = StartRun {
            event: payload.clone(),
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

    /// Decides a drift report for `name`: a rule of `on.drift` for `metric`
    /// whose threshold `value` passes starts a retraining run, unless a
    /// drift-triggered run is still queued or running (the report joins it)
    /// or one started within the rule's cooldown
    /// (`weir_engine::drift_decision`). The report is stored with the
    /// decision, which is returned.
    pub async fn drift(
        self: &Arc<Self>,
        name: &str,
        metric: &str,
        value: f64,
        report: serde_json::Value,
    ) -> Result<Decision, TriggerError> {
        let loaded = self.loaded(name)?;
        let at = now();
        let last = match self.store.last_run_by(name, "drift").await? {
            Some(run) => Some(LastDrift {
                state: run
                    .state
                    .parse::<RunState>()
                    .map_err(|e| TriggerError::Store(weir_store::Error::Corrupt(e)))?,
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
        Ok(decision)
    }
}
