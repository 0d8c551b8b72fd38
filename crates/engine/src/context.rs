//! The variables `if:` and `gate:` expressions read, built from a run:
//! `params`, `run`, `steps`, `matrix`, `models` and `event`.

use crate::run::{Run, StepRun};
use serde_json::{Map, Value as Json, json};
use weir_expr::Context;
use weir_model::Pipeline;

/// The context for expressions of the instance `index` of `run`.
pub(crate) fn for_instance(run: &Run, pipeline: &Pipeline, index: usize) -> Context {
    let mut context = Context::new();
    let params: Map<String, Json> = run
        .params
        .iter()
        .map(|(k, v)| (k.clone(), Json::String(v.clone())))
        .collect();
    context.set("params", Json::Object(params));
    context.set(
        "run",
        json!({ "id": run.id, "trigger": run.cause.kind(), "pipeline": run.pipeline }),
    );
    // The instances grouped by step in one pass over the run.
    let mut instances: Vec<Vec<&StepRun>> = vec![Vec::new(); pipeline.steps.len()];
    for instance in &run.steps {
        if let Some(group) = instances.get_mut(instance.step) {
            group.push(instance);
        }
    }
    let mut steps = Map::new();
    for (step, instances) in pipeline.steps.iter().zip(instances) {
        let value = if step.matrix.is_empty() {
            instances.first().map_or(Json::Null, |s| results(s))
        } else {
            Json::Array(instances.iter().map(|s| results(s)).collect())
        };
        steps.insert(step.id.value.clone(), value);
    }
    context.set("steps", Json::Object(steps));
    context.set("matrix", Json::Object(run.steps[index].matrix.clone()));
    context.set("models", run.models.clone());
    context.set("event", run.event.clone());
    context
}

/// What `steps.<id>` shows of one instance: its state and its last
/// attempt's exit code, metrics and outputs.
fn results(instance: &StepRun) -> Json {
    let last = instance.last_attempt();
    json!({
        "state": instance.state.as_str(),
        "exit_code": last.and_then(|a| a.exit_code),
        "metrics": last.map(|a| Json::Object(a.metrics.clone())).unwrap_or_else(|| json!({})),
        "outputs": last.map(|a| Json::Object(a.outputs.clone())).unwrap_or_else(|| json!({})),
        "matrix": Json::Object(instance.matrix.clone()),
    })
}
