//! Retrying a finished run: a new run of the same pipeline version, params
//! and event that reuses what succeeded before the point of failure.

use crate::Cause;
use crate::run::{Run, RunState, StepState, Time, new_run};
use weir_model::Pipeline;

/// Why a run cannot be retried.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RetryError(String);

/// A new run `id` that retries `original`, a finished run of `pipeline`.
/// The instances that succeeded there are reused as they were (state,
/// attempts, outputs, metrics), unless they are the step `from` or need
/// it, directly or not; the others run again. Without `from`, what did not
/// succeed runs again and everything else is reused.
pub fn retry_run(
    pipeline: &Pipeline,
    original: &Run,
    id: &str,
    from: Option<&str>,
    actor: &str,
    now: Time,
) -> Result<Run, RetryError> {
    if !original.state.is_terminal() {
        return Err(RetryError(format!(
            "run {} is still {}: wait for it to end, or cancel it, before retrying",
            original.id, original.state
        )));
    }
    let dag = &pipeline.dag;
    let from = match from {
        Some(name) => Some(step_index(pipeline, original, name)?),
        None if original.state == RunState::Succeeded => {
            return Err(RetryError(format!(
                "run {} succeeded: name the step to run again from with --from",
                original.id
            )));
        }
        None => None,
    };
    let cause = Cause::Retry {
        of: original.id.clone(),
        from: from.map(|index| pipeline.steps[index].id.value.clone()),
        actor: actor.to_owned(),
    };
    let mut run = new_run(
        pipeline,
        id,
        cause,
        &original.params,
        original.event.clone(),
        original.models.clone(),
        now,
    )
    .map_err(|e| RetryError(e.to_string()))?;
    run.source_commit = original.source_commit.clone();
    for instance in &mut run.steps {
        let Some(before) = original.step(&instance.id) else {
            continue;
        };
        let again =
            from.is_some_and(|from| from == instance.step || dag.is_upstream(from, instance.step));
        if before.state == StepState::Succeeded && !again {
            *instance = before.clone();
            instance.reason = Some(format!("reused from run {}", original.id));
        }
    }
    Ok(run)
}

/// The pipeline step that `name` (a step id or an instance id) names.
fn step_index(pipeline: &Pipeline, original: &Run, name: &str) -> Result<usize, RetryError> {
    if let Some(index) = pipeline.steps.iter().position(|s| s.id.value == name) {
        return Ok(index);
    }
    if let Some(instance) = original.step(name) {
        return Ok(instance.step);
    }
    let ids: Vec<&str> = pipeline.steps.iter().map(|s| s.id.value.as_str()).collect();
    let near = weir_model::did_you_mean(name, ids.iter().copied());
    Err(RetryError(format!(
        "pipeline '{}' has no step '{name}'{near}; its steps: {}",
        pipeline.name.value,
        ids.join(", ")
    )))
}
