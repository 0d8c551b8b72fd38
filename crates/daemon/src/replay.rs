//! `weir replay MODEL@N`: the run that produced a version, run again from
//! its stored pipeline version with its params, event and image ids, and
//! what came out compared with what came out then (`weir_engine::replay`).
//! The finding is kept with an audit entry in one transaction when the
//! replay run ends; one that weir stopped before keeping is kept at the
//! next start.

use crate::catalog::stored;
use crate::clock::now;
use crate::runs::{Daemon, StartRun, Started, TriggerError};
use std::sync::Arc;
use weir_engine::{Cause, Reproduction, Run};

impl Daemon {
    /// Starts a replay of the run that registered `model@version`, asked
    /// for by `actor`. Every image it ran must be on this host, by id: a
    /// missing one is refused, naming it, and starts nothing.
    pub async fn replay(
        self: &Arc<Self>,
        model: &str,
        version: i64,
        actor: &str,
    ) -> Result<Run, TriggerError> {
        let registered = self.store.model_version(model, version).await?;
        let original = self.store.load_run(&registered.run_id).await?;
        let (pipeline, _) = stored(&self.store, &original.id).await?;
        let images = weir_engine::replay_images(&pipeline, &original, &registered.step);
        let docker = self.options.executors.get("docker");
        for (step, image) in &images {
            let present = match docker {
                Some(docker) => docker.has_image(image).await,
                None => Some(false),
            };
            if present == Some(false) {
                return Err(TriggerError::MissingImage {
                    target: format!("{model}@{version}"),
                    image: image.clone(),
                    step: step.clone(),
                    run: original.id.clone(),
                });
            }
        }
        let cause = Cause::Replay {
            model: model.to_owned(),
            version,
            of: original.id.clone(),
            actor: actor.to_owned(),
            images,
        };
        let started = self
            .start_run(StartRun::new(original.pipeline.clone(), cause))
            .await?;
        let id = started.run_id().map(str::to_owned).unwrap_or_default();
        let run = match started {
            Started::Run(run) => *run,
            Started::Replay(_) => self.store.load_run(&id).await?,
        };
        // Skipped by the pipeline's concurrency, it ended before any loop
        // drove it: what it found (nothing) is kept now.
        if run.state.is_terminal() {
            self.keep_replay(&run).await?;
        }
        Ok(run)
    }

    /// Compares finished replay run `run` with the run it replayed and
    /// keeps the finding, audited; nothing for other runs.
    pub(crate) async fn keep_replay(&self, run: &Run) -> Result<(), weir_store::Error> {
        let Cause::Replay {
            model,
            version,
            of,
            actor,
            ..
        } = &run.cause
        else {
            return Ok(());
        };
        let original = self.store.load_run(of).await?;
        let pipeline = match stored(&self.store, of).await {
            Ok((pipeline, _)) => pipeline,
            Err(crate::catalog::StoredError::Store(e)) => return Err(e),
            Err(why) => {
                tracing::error!(run = %run.id, reason = %why, "a replay cannot be compared");
                return Ok(());
            }
        };
        let found: Reproduction = weir_engine::compare(&pipeline, &original, run);
        let target = format!("{model}@{version}");
        let audited = serde_json::json!({
            "run": run.id,
            "original": of,
            "reproduced": found.reproduced,
            "identical": found.identical,
            "compared": found.compared,
            "summary": found.summary,
        });
        let at = now();
        let entry = weir_store::NewEntry {
            actor,
            action: "model.replayed",
            subject: &target,
            payload: &audited,
            at,
        };
        let replay = weir_store::StoredReplay {
            run_id: run.id.clone(),
            model: model.clone(),
            version: *version,
            original: of.clone(),
            reproduced: found.reproduced,
            result: serde_json::to_value(&found).unwrap_or_default(),
            created_at: at,
        };
        if self
            .store
            .keep_replay(&replay, self.audit.key(), &entry)
            .await?
        {
            tracing::info!(run = %run.id, model = %target, summary = %found.summary, "replay compared");
        }
        Ok(())
    }

    /// Keeps the findings of replay runs that ended while no weir kept
    /// them.
    pub(crate) async fn keep_unkept_replays(&self) -> Result<(), weir_store::Error> {
        for id in self.store.unkept_replays().await? {
            let run = self.store.load_run(&id).await?;
            self.keep_replay(&run).await?;
        }
        Ok(())
    }
}
