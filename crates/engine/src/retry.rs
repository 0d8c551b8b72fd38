//! Retrying a finished run: a new run of the same pipeline version, params
//! and event that reuses what succeeded before the point of failure.

use crate::Cause;
use crate::run::{Run, RunState, StepState, Time, new_run};
use weir_model::Pipeline;

/// Why a run cannot be retried.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RetryError {
    /// The run has not ended.
    #[error("run {run} is still {state}: wait for it to end, or cancel it, before retrying")]
    Unfinished {
        /// The run.
        run: String,
        /// Where it is.
        state: RunState,
    },
    /// Nothing failed, and no step was named to run again from.
    #[error("run {run} succeeded: name the step to run again from with --from")]
    NothingToRetry {
        /// The run.
        run: String,
    },
    /// The step named is not in the run's pipeline.
    #[error("pipeline '{pipeline}' has no step '{step}'{hint}; its steps: {}", steps.join(", "))]
    NoStep {
        /// The pipeline.
        pipeline: String,
        /// The step asked for.
        step: String,
        /// ` (did you mean …?)`, or nothing.
        hint: String,
        /// Its steps.
        steps: Vec<String>,
    },
    /// The original's params no longer fit its pipeline version.
    #[error(transparent)]
    Params(#[from] crate::ParamsError),
}

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
        return Err(RetryError::Unfinished {
            run: original.id.clone(),
            state: original.state,
        });
    }
    let dag = &pipeline.dag;
    let from = match from {
        Some(name) => Some(step_index(pipeline, original, name)?),
        None if original.state == RunState::Succeeded => {
            return Err(RetryError::NothingToRetry {
                run: original.id.clone(),
            });
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
    )?;
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
    let steps: Vec<String> = (pipeline.steps.iter())
        .map(|s| s.id.value.clone())
        .collect();
    Err(RetryError::NoStep {
        pipeline: pipeline.name.value.clone(),
        step: name.to_owned(),
        hint: weir_model::did_you_mean(name, steps.iter().map(String::as_str)),
        steps,
    })
}
