//! Replaying the run that produced a model version, and comparing what the
//! replay produced with what the original did: the proof an auditor asks
//! for that a model can be reproduced.
//!
//! A replay runs the steps that led to the register step that made the
//! version, with the original's pipeline version, params, event and
//! registry view, and each container step on the image id it ran. Gates
//! are evaluated again (the same metrics give the same verdict); approvals
//! keep the original's decision, since a person already took it; no
//! register step registers again, and nothing downstream of one runs.

use crate::Cause;
use crate::run::{AttemptState, Run, RunState, StepRun, StepState, Time, new_run};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use weir_model::Pipeline;
use weir_model::pipeline::StepKind;

/// Why a version cannot be replayed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    /// The run that made it has no such register step any more.
    #[error("run {run} has no register step '{step}'")]
    NoStep {
        /// The original run.
        run: String,
        /// The step the version names.
        step: String,
    },
    /// The original's params no longer fit its pipeline version.
    #[error(transparent)]
    Params(#[from] crate::ParamsError),
}

/// The image id each container step instance upstream of register step
/// `step` ran in `original`: what a replay pins.
pub fn replay_images(pipeline: &Pipeline, original: &Run, step: &str) -> BTreeMap<String, String> {
    let Some(target) = original.step(step).map(|s| s.step) else {
        return BTreeMap::new();
    };
    original
        .steps
        .iter()
        .filter(|s| pipeline.dag.is_upstream(s.step, target))
        .filter_map(|s| Some((s.id.clone(), deciding(s)?.image.clone()?)))
        .collect()
}

/// A new run `id` replaying `original`, a run of `pipeline` whose register
/// step instance `step` made `model@version` (see the module's doc).
pub fn replay_run(
    pipeline: &Pipeline,
    original: &Run,
    id: &str,
    step: &str,
    cause: Cause,
    now: Time,
) -> Result<Run, ReplayError> {
    let target = original
        .step(step)
        .map(|s| s.step)
        .filter(|&s| matches!(pipeline.steps[s].kind, StepKind::Register(_)))
        .ok_or_else(|| ReplayError::NoStep {
            run: original.id.clone(),
            step: step.to_owned(),
        })?;
    let label = match &cause {
        Cause::Replay { model, version, .. } => format!("replay of {model}@{version}"),
        other => format!("replay ({})", other.kind()),
    };
    let mut run = new_run(
        pipeline,
        id,
        cause,
        &original.params,
        original.event.clone(),
        original.models.clone(),
        now,
    )?;
    run.source_commit = original.source_commit.clone();
    for instance in &mut run.steps {
        let kind = &pipeline.steps[instance.step].kind;
        let leads_there = pipeline.dag.is_upstream(instance.step, target);
        match kind {
            _ if !leads_there && instance.step != target => {
                settle(
                    instance,
                    StepState::Skipped,
                    format!("{label}: not upstream of the register step"),
                    now,
                );
            }
            StepKind::Register(_) => {
                settle(
                    instance,
                    StepState::Skipped,
                    format!("{label}: nothing is registered again"),
                    now,
                );
            }
            StepKind::Approval(_) => {
                let before = original.step(&instance.id);
                match before.filter(|b| b.state == StepState::Succeeded) {
                    Some(before) => {
                        let decided = before.reason.clone().unwrap_or_else(|| "approved".into());
                        settle(
                            instance,
                            StepState::Succeeded,
                            format!("{label}: {decided} in run {}", original.id),
                            now,
                        );
                    }
                    None => settle(
                        instance,
                        StepState::Skipped,
                        format!("{label}: not approved in run {}", original.id),
                        now,
                    ),
                }
            }
            _ => {}
        }
    }
    Ok(run)
}

fn settle(instance: &mut StepRun, state: StepState, reason: String, now: Time) {
    instance.state = state;
    instance.reason = Some(reason);
    instance.started_at = Some(now);
    instance.finished_at = Some(now);
}

/// An instance's deciding attempt: the last that succeeded, else the last.
fn deciding(instance: &StepRun) -> Option<&crate::Attempt> {
    instance
        .attempts
        .iter()
        .rev()
        .find(|a| a.state == AttemptState::Succeeded)
        .or_else(|| instance.attempts.last())
}

/// What a replay found, artifact by artifact.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reproduction {
    /// The replay run.
    pub run: String,
    /// The run it replayed.
    pub original: String,
    /// How the replay run ended.
    pub state: RunState,
    /// Whether every artifact is identical (and the replay succeeded).
    pub reproduced: bool,
    /// Artifacts compared.
    pub compared: usize,
    /// Of those, identical.
    pub identical: usize,
    /// Each declared artifact, in the order the steps run (a step's
    /// inputs before its outputs).
    pub artifacts: Vec<Compared>,
    /// The first step whose artifacts differ, and what that says.
    pub first_difference: Option<Difference>,
    /// One line: `reproduced: 3 of 3 artifacts identical`, or what differs.
    pub summary: String,
}

/// One artifact of a [`Reproduction`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Compared {
    /// The step instance that declares it.
    pub step: String,
    /// Its path under the work folder.
    pub path: String,
    /// Its SHA-256 in the original run.
    pub original: String,
    /// Its SHA-256 in the replay (`None`: not produced).
    pub replayed: Option<String>,
    /// Whether they are the same.
    pub identical: bool,
}

/// Where a replay first differs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Difference {
    /// The step instance.
    pub step: String,
    /// Its artifacts that differ.
    pub paths: Vec<String>,
    /// What it means, for people.
    pub cause: String,
}

/// Compares the artifacts of `replay` with those of `original` (runs of
/// `pipeline`), step by step in the order they run, so that the first
/// difference is named with its likely cause: a step with no upstream
/// step whose output differs read changed data; a step whose upstream
/// artifacts were identical is not deterministic itself.
pub fn compare(pipeline: &Pipeline, original: &Run, replay: &Run) -> Reproduction {
    let mut artifacts = Vec::new();
    let mut first_difference = None;
    let mut failed_before = None;
    for layer in pipeline.dag.layers() {
        for instance in original.steps.iter().filter(|s| layer.contains(&s.step)) {
            let Some(before) = deciding(instance).filter(|a| !a.artifacts.is_empty()) else {
                continue;
            };
            let again = replay.step(&instance.id);
            let after = again.and_then(|s| {
                s.attempts
                    .iter()
                    .rev()
                    .find(|a| a.state == AttemptState::Succeeded)
            });
            if after.is_none() && failed_before.is_none() {
                failed_before = again.map(|s| {
                    let why = s.reason.clone().unwrap_or_else(|| s.state.to_string());
                    format!("step {} did not succeed in the replay: {why}", s.id)
                });
            }
            let mut differ = Vec::new();
            for (path, sha) in &before.artifacts {
                let replayed = after.and_then(|a| a.artifacts.get(path).cloned());
                let identical = replayed.as_deref() == Some(sha.as_str());
                if !identical {
                    differ.push(path.clone());
                }
                artifacts.push(Compared {
                    step: instance.id.clone(),
                    path: path.clone(),
                    original: sha.clone(),
                    replayed,
                    identical,
                });
            }
            if !differ.is_empty() && first_difference.is_none() {
                let upstream = pipeline.steps.iter().enumerate().any(|(i, s)| {
                    matches!(s.kind, StepKind::Container(_))
                        && pipeline.dag.is_upstream(i, instance.step)
                });
                let cause = if after.is_none() {
                    "the replay did not produce it".to_owned()
                } else if upstream {
                    format!(
                        "everything step {} read from upstream steps was identical: the step itself is not deterministic (or its environment changed)",
                        instance.id
                    )
                } else {
                    format!(
                        "step {} has no upstream step: the data it reads changed",
                        instance.id
                    )
                };
                first_difference = Some(Difference {
                    step: instance.id.clone(),
                    paths: differ,
                    cause,
                });
            }
        }
    }
    let compared = artifacts.len();
    let identical = artifacts.iter().filter(|a| a.identical).count();
    let reproduced = replay.state == RunState::Succeeded && compared > 0 && identical == compared;
    let summary = if reproduced {
        format!("reproduced: {identical} of {compared} artifacts identical")
    } else if replay.state != RunState::Succeeded {
        let why = (replay.reason.clone())
            .or(failed_before)
            .map(|why| format!(" ({why})"))
            .unwrap_or_default();
        format!(
            "not reproduced: the replay {}{why}; {identical} of {compared} artifacts identical",
            replay.state
        )
    } else if let Some(d) = &first_difference {
        format!(
            "not reproduced: {} of {compared} artifacts differ, from step {} on ({}): {}",
            compared - identical,
            d.step,
            d.paths.join(", "),
            d.cause
        )
    } else {
        "not reproduced: the steps that led to the version declare no artifacts to compare"
            .to_owned()
    };
    Reproduction {
        run: replay.id.clone(),
        original: original.id.clone(),
        state: replay.state,
        reproduced,
        compared,
        identical,
        artifacts,
        first_difference,
        summary,
    }
}
