//! The registry as the daemon acts on it: aliases moved by people
//! (audited), and a version's lineage assembled from the store.
//!
//! **Invariant:** lineage reads only what was stored when the version was
//! made: the run, its stored pipeline version, its attempts and its event.

use crate::catalog::{StoredError, stored};
use crate::clock::now;
use crate::runs::Daemon;

/// Why an alias could not be moved.
#[derive(Debug, thiserror::Error)]
pub enum PromoteError {
    /// The model or alias name breaks the format's naming rule: nothing
    /// is moved or recorded.
    #[error(transparent)]
    Name(#[from] weir_model::NameError),
    /// The store failed (an unknown version is a `NoSuchModel`).
    #[error(transparent)]
    Store(#[from] weir_store::Error),
}

/// Where a model version came from ([`Daemon::lineage`]).
#[derive(Debug, Clone)]
pub struct Lineage {
    /// The version.
    pub version: weir_store::ModelVersion,
    /// The run that registered it.
    pub run: weir_engine::Run,
    /// The SHA-256 of the pipeline file that run ran.
    pub pipeline_hash: String,
    /// The event that started the run.
    pub event: Option<weir_store::EventRecord>,
    /// The commit the event named (a push's `after`, `head_commit.id`).
    pub event_commit: Option<String>,
    /// The steps that led to the register step, in the pipeline's order.
    pub steps: Vec<LineageStep>,
    /// Each replay of the run and what it found, oldest first.
    pub replays: Vec<weir_store::StoredReplay>,
}

/// One step of a [`Lineage`].
#[derive(Debug, Clone)]
pub struct LineageStep {
    /// The step instance.
    pub instance: weir_engine::StepRun,
    /// Its kind: `run`, `gate`, `approval`, `register`, … (`step` when the
    /// stored pipeline no longer reads).
    pub kind: &'static str,
    /// Its deciding attempt: the last that succeeded, else the last.
    pub attempt: Option<weir_engine::Attempt>,
}

impl Daemon {
    /// Points `alias` of `model` at `version`, by `actor`; returns the
    /// version it pointed at before. Names follow the rule a pipeline
    /// file's `register` step follows.
    pub async fn promote(
        &self,
        model: &str,
        version: i64,
        alias: &str,
        actor: &str,
    ) -> Result<Option<i64>, PromoteError> {
        let rule = weir_model::NameRule::Pipeline;
        rule.check("model name", model)?;
        rule.check("alias", alias)?;
        let before = self
            .store
            .promote(model, version, alias, actor, now())
            .await?;
        tracing::info!(model, version, alias, actor, "alias moved");
        let registered = self.store.model_version(model, version).await?;
        let run = self.store.load_run(&registered.run_id).await?;
        let pipeline = match self.pipeline(&run.pipeline) {
            Some(loaded) => Some(loaded.pipeline),
            None => stored(&self.store, &registered.run_id)
                .await
                .ok()
                .map(|(p, _)| p),
        };
        if let Some(pipeline) = pipeline {
            self.queue_mirror(&pipeline, "alias", &format!("{model}/{alias}"))
                .await?;
        }
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
    pub async fn lineage(&self, model: &str, version: i64) -> Result<Lineage, weir_store::Error> {
        let registered = self.store.model_version(model, version).await?;
        let run = self.store.load_run(&registered.run_id).await?;
        let pipeline_hash = self.store.run_pipeline_hash(&run.id).await?;
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
        let steps = run
            .steps
            .iter()
            .filter(|s| led_there(s.step))
            .map(|s| LineageStep {
                instance: s.clone(),
                kind: pipeline
                    .as_ref()
                    .and_then(|p| p.steps.get(s.step))
                    .map_or("step", |step| step.kind.name()),
                attempt: s
                    .attempts
                    .iter()
                    .rev()
                    .find(|a| a.state == weir_engine::AttemptState::Succeeded)
                    .or_else(|| s.attempts.last())
                    .cloned(),
            })
            .collect();
        let event = self.store.run_event(&run.id).await?;
        let event_commit = run
            .event
            .get("after")
            .or_else(|| run.event.pointer("/head_commit/id"))
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned);
        let replays = self.store.replays(model, version).await?;
        Ok(Lineage {
            replays,
            version: registered,
            run,
            pipeline_hash,
            event,
            event_commit,
            steps,
        })
    }
}
