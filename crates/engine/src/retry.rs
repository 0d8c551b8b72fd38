//! Retrying a finished run: a new run of the same pipeline version, params
//! and event that reuses what succeeded before the point of failure.

use crate::run::{Run, RunState, StepState, Time, new_run};
use weir_model::Dag;
use weir_model::Pipeline;

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
    now: Time,
) -> Result<Run, String> {
    if !original.state.is_terminal() {
        return Err(format!(
            "run {} is still {}: wait for it to end, or cancel it, before retrying",
            original.id, original.state
        ));
    }
    let dag = Dag::new(pipeline);
    let from = match from {
        Some(name) => Some(step_index(pipeline, original, name)?),
        None if original.state == RunState::Succeeded => {
            return Err(format!(
                "run {} succeeded: name the step to run again from with --from",
                original.id
            ));
        }
        None => None,
    };
    let mut run = new_run(
        pipeline,
        id,
        "retry",
        &original.params,
        original.event.clone(),
        original.models.clone(),
        now,
    )
    .map_err(|e| e.join("; "))?;
    run.retry_of = Some(original.id.clone());
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
fn step_index(pipeline: &Pipeline, original: &Run, name: &str) -> Result<usize, String> {
    if let Some(index) = pipeline.steps.iter().position(|s| s.id.value == name) {
        return Ok(index);
    }
    if let Some(instance) = original.step(name) {
        return Ok(instance.step);
    }
    let ids: Vec<&str> = pipeline.steps.iter().map(|s| s.id.value.as_str()).collect();
    let near = weir_model::did_you_mean(name, ids.iter().copied());
    Err(format!(
        "pipeline '{}' has no step '{name}'{near}; its steps: {}",
        pipeline.name.value,
        ids.join(", ")
    ))
}
