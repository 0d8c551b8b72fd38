//! The registry as the daemon acts on it: aliases moved by people
//! (audited), and a version's lineage assembled from the store.
//!
//! **Invariant:** lineage reads only what was stored when the version was
//! made: the run, its stored pipeline version, its attempts and its event.

use crate::catalog::{StoredError, stored};
use crate::clock::now;
use crate::runs::Daemon;
use std::collections::BTreeMap;

impl Daemon {
    /// Points `alias` of `model` at `version`, by `actor`; returns the
    /// version it pointed at before.
    pub async fn promote(
        &self,
        model: &str,
        version: i64,
        alias: &str,
        actor: &str,
    ) -> Result<Option<i64>, weir_store::Error> {
        let before = self
            .store
            .promote(model, version, alias, actor, now())
            .await?;
        tracing::info!(model, version, alias, actor, "alias moved");
        self.audit.record(
            actor,
            "alias.moved",
            &format!("{model}/{alias}"),
            serde_json::json!({ "version": version, "from_version": before }),
        );
        Ok(before)
    }

    /// The lineage of `model@version`: the version (artifact hash,
    /// metrics), the run that registered it (pipeline file hash, git
    /// commit, params, trigger, the event that started it and the commit
    /// it names), and every step that led to the register step with the
    /// image it ran and the hashes of its declared artifacts.
    pub async fn lineage(
        &self,
        model: &str,
        version: i64,
    ) -> Result<serde_json::Value, weir_store::Error> {
        let registered = self.store.model_version(model, version).await?;
        let run = self.store.load_run(&registered.run_id).await?;
        let hash = self.store.run_pipeline_hash(&run.id).await?;
        let pipeline = match stored(&self.store, &run.id).await {
            Ok((pipeline, _)) => Some(pipeline),
            Err(StoredError::Store(e)) => return Err(e),
            Err(why) => {
                tracing::warn!(run = %run.id, reason = %why, "lineage without the pipeline's graph");
                None
            }
        };
        let dag = pipeline.as_deref().map(|p| &p.dag);
        let target = run.step(&registered.step).map(|s| s.step);
        let led_there = |step: usize| match (&dag, target) {
            (Some(dag), Some(target)) => step == target || dag.is_upstream(step, target),
            _ => true,
        };
        let steps: Vec<serde_json::Value> = run
            .steps
            .iter()
            .filter(|s| led_there(s.step))
            .map(|s| {
                let attempt = s
                    .attempts
                    .iter()
                    .rev()
                    .find(|a| a.state == weir_engine::AttemptState::Succeeded)
                    .or_else(|| s.attempts.last());
                let kind = pipeline
                    .as_ref()
                    .and_then(|p| p.steps.get(s.step))
                    .map_or("step", |step| step.kind.name());
                serde_json::json!({
                    "id": s.id,
                    "kind": kind,
                    "state": s.state,
                    "reason": s.reason,
                    "attempt": attempt.map(|a| a.number),
                    "image": attempt.and_then(|a| a.image.clone()),
                    "artifacts": attempt.map(|a| a.artifacts.clone()).unwrap_or_default(),
                    "outputs": attempt.map(|a| a.outputs.clone()).unwrap_or_default(),
                    "metrics": attempt.map(|a| a.metrics.clone()).unwrap_or_default(),
                })
            })
            .collect();
        let event = self.store.run_event(&run.id).await?;
        let event_commit = run
            .event
            .get("after")
            .or_else(|| run.event.pointer("/head_commit/id"))
            .and_then(serde_json::Value::as_str);
        let params: BTreeMap<&str, &str> = run
            .params
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        Ok(serde_json::json!({
            "model": registered.model,
            "version": registered.version,
            "artifact": registered.artifact,
            "sha256": registered.sha256,
            "metrics": registered.metrics,
            "registered_at": registered.created_at,
            "run": {
                "id": run.id,
                "pipeline": run.pipeline,
                "pipeline_hash": hash,
                "source_commit": run.source_commit,
                "trigger": run.cause.kind(),
                "cause": run.cause,
                "retry_of": run.retry_of(),
                "params": params,
                "event": event.map(|e| serde_json::json!({ "id": e.id, "kind": e.kind, "decision": e.decision, "outcome": e.outcome, "detail": e.detail })),
                "event_commit": event_commit,
                "created_at": run.created_at,
            },
            "steps": steps,
        }))
    }
}
