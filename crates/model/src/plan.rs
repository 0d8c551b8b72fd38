//! `weir plan`: a dry run. The DAG in layers, matrix instances expanded,
//! params resolved, and every template and `if:` that depends only on
//! params, matrix values and the pipeline's name evaluated; what depends on
//! run-time results is shown as written.

use crate::diag::did_you_mean;
use crate::pipeline::*;
use serde::Serialize;
use serde_json::{Map, Value as Json, json};
use std::fmt;
use weir_expr::{Context, EvalError, Expr, Template};

/// The dry run of one pipeline with given params.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// The pipeline's name.
    pub pipeline: String,
    /// Every param with the value this run would get.
    pub params: Vec<PlanParam>,
    /// Step instances in layers: each layer may start when those before finished.
    pub layers: Vec<Vec<PlannedStep>>,
}

/// A param's value in a plan.
#[derive(Debug, Clone, Serialize)]
pub struct PlanParam {
    /// The param's name.
    pub name: String,
    /// Its value.
    pub value: String,
    /// `default` or `given`.
    pub source: &'static str,
}

/// One step instance (one per matrix combination) in a plan.
#[derive(Debug, Clone, Serialize)]
pub struct PlannedStep {
    /// The instance id: the step id, with the matrix values in brackets.
    pub id: String,
    /// The step id.
    pub step: String,
    /// run, command, gate, approval or register.
    pub kind: &'static str,
    /// The step ids this instance waits for.
    pub needs: Vec<String>,
    /// This instance's matrix values.
    #[serde(skip_serializing_if = "Map::is_empty")]
    pub matrix: Map<String, Json>,
    /// The `if:` expression and, when known before the run, its value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub condition: Option<PlannedCondition>,
    /// Why the step will be skipped, when that is known before the run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    /// What the step does, with templates resolved where possible.
    #[serde(flatten)]
    pub action: Map<String, Json>,
}

/// An `if:` in a plan.
#[derive(Debug, Clone, Serialize)]
pub struct PlannedCondition {
    /// The expression as written.
    pub expression: String,
    /// Its value, or `None` when it reads run-time results.
    pub value: Option<bool>,
}

/// Plans `pipeline` with `given` params (`name`, `value`). Errors name the
/// param to fix.
pub fn plan(pipeline: &Pipeline, given: &[(String, String)]) -> Result<Plan, Vec<String>> {
    let params = resolve_params(pipeline, given)?;
    let mut base = Context::new();
    let params_json: Map<String, Json> = params
        .iter()
        .map(|p| (p.name.clone(), Json::String(p.value.clone())))
        .collect();
    base.set("params", Json::Object(params_json));
    base.set("run", json!({ "pipeline": pipeline.name.value }));

    let dag = &pipeline.dag;
    let mut skipped_steps: Vec<bool> = vec![false; pipeline.steps.len()];
    let mut errors = Vec::new();
    let mut layers = Vec::new();
    for layer in dag.layers() {
        let mut planned = Vec::new();
        for index in layer {
            let step = &pipeline.steps[index];
            let upstream_skipped = dag.needs(index).iter().find(|&&n| skipped_steps[n]);
            let mut all_skipped = true;
            for instance in instances(step) {
                let mut context = base.clone();
                context.set("matrix", Json::Object(instance.clone()));
                match plan_instance(pipeline, step, &instance, &context) {
                    Ok(mut p) => {
                        if let Some(&n) = upstream_skipped {
                            p.skipped = Some(format!("upstream '{}' is skipped", dag.ids()[n]));
                        }
                        all_skipped &= p.skipped.is_some();
                        planned.push(p);
                    }
                    Err(e) => errors.push(format!("step '{}': {e}", step.id.value)),
                }
            }
            skipped_steps[index] = all_skipped;
        }
        layers.push(planned);
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Plan {
        pipeline: pipeline.name.value.clone(),
        params,
        layers,
    })
}

/// Every param of `pipeline` with its value: given (the last one wins) or
/// the default. Errors name unknown params and required ones left out.
pub fn resolve_params(
    pipeline: &Pipeline,
    given: &[(String, String)],
) -> Result<Vec<PlanParam>, Vec<String>> {
    let mut errors = Vec::new();
    for (name, _) in given {
        if pipeline.param(name).is_none() {
            let hint = did_you_mean(name, pipeline.params.iter().map(|p| p.name.value.as_str()));
            errors.push(format!("unknown param '{name}'{hint}"));
        }
    }
    let mut params = Vec::new();
    for param in &pipeline.params {
        let name = &param.name.value;
        match (given.iter().rev().find(|(n, _)| n == name), &param.default) {
            (Some((_, value)), _) => params.push(PlanParam {
                name: name.clone(),
                value: value.clone(),
                source: "given",
            }),
            (None, Some(default)) => params.push(PlanParam {
                name: name.clone(),
                value: default.clone(),
                source: "default",
            }),
            (None, None) => errors.push(format!(
                "param '{name}' has no default: pass --param {name}=VALUE"
            )),
        }
    }
    if errors.is_empty() {
        Ok(params)
    } else {
        Err(errors)
    }
}

/// Every combination of the step's matrix values, in file order; one empty
/// combination for a step without a matrix.
pub fn instances(step: &Step) -> Vec<Map<String, Json>> {
    let mut combos = vec![Map::new()];
    for axis in &step.matrix {
        combos = combos
            .into_iter()
            .flat_map(|combo| {
                axis.values.iter().map(move |value| {
                    let mut next = combo.clone();
                    next.insert(axis.key.value.clone(), Json::String(value.clone()));
                    next
                })
            })
            .collect();
    }
    combos
}

/// The instance id: `train` or `train[lr=0.01,batch=32]`.
pub fn instance_id(step: &str, matrix: &Map<String, Json>) -> String {
    if matrix.is_empty() {
        return step.to_owned();
    }
    let values: Vec<String> = matrix
        .iter()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
        .collect();
    format!("{step}[{}]", values.join(","))
}

/// Whether an expression can be evaluated before the run: it reads only
/// params, matrix values and the pipeline's name.
fn static_expr(expr: &Expr) -> bool {
    expr.references().iter().all(|r| match r.root() {
        "params" | "matrix" => true,
        "run" => r.segments.get(1).is_some_and(|s| s.name == "pipeline"),
        _ => false,
    })
}

fn render(template: &Template, context: &Context) -> Result<String, EvalError> {
    template.render_where(context, static_expr)
}

fn plan_instance(
    pipeline: &Pipeline,
    step: &Step,
    matrix: &Map<String, Json>,
    context: &Context,
) -> Result<PlannedStep, EvalError> {
    let condition = match &step.condition {
        Some(expr) => {
            let value = if static_expr(&expr.value) {
                Some(context.eval_bool(&expr.value)?)
            } else {
                None
            };
            Some(PlannedCondition {
                expression: expr.value.source().to_owned(),
                value,
            })
        }
        None => None,
    };
    let skipped = match &condition {
        Some(PlannedCondition {
            value: Some(false), ..
        }) => Some("if is false".to_owned()),
        _ => None,
    };
    let mut action = Map::new();
    match &step.kind {
        StepKind::Container(c) => {
            match &c.action {
                Invocation::Run(line) => {
                    action.insert("run".into(), Json::String(render(&line.value, context)?));
                }
                Invocation::Command(argv) => {
                    let argv: Result<Vec<Json>, EvalError> = argv
                        .iter()
                        .map(|a| render(&a.value, context).map(Json::String))
                        .collect();
                    action.insert("command".into(), Json::Array(argv?));
                }
            }
            action.insert("executor".into(), json!(c.executor));
            if let (Some(image), Executor::Docker) = (&c.image, c.executor) {
                action.insert("image".into(), Json::String(render(&image.value, context)?));
                action.insert("pull".into(), json!(c.pull));
            }
            let mut env = Map::new();
            for var in pipeline.env.iter().chain(&c.env) {
                env.insert(
                    var.name.value.clone(),
                    Json::String(render(&var.value, context)?),
                );
            }
            if !env.is_empty() {
                action.insert("env".into(), Json::Object(env));
            }
            if !c.secrets.is_empty() {
                let names: Vec<&str> = c.secrets.iter().map(|s| s.value.as_str()).collect();
                action.insert("secrets".into(), json!(names));
            }
            if c.resources != Resources::default() {
                action.insert("resources".into(), json!(c.resources));
            }
            if !c.artifacts.is_empty() {
                let paths: Vec<&str> = c.artifacts.iter().map(|s| s.value.as_str()).collect();
                action.insert("artifacts".into(), json!(paths));
            }
            if c.retry.limit > 0 {
                action.insert("retry".into(), json!(c.retry));
            }
            if let Some(timeout) = c.timeout {
                action.insert("timeout".into(), json!(timeout));
            }
        }
        StepKind::Gate(conditions) => {
            let sources: Vec<&str> = conditions.iter().map(|c| c.value.source()).collect();
            action.insert("gate".into(), json!(sources));
        }
        StepKind::Approval(approval) => {
            action.insert("approval".into(), json!({ "timeout": approval.timeout }));
        }
        StepKind::Register(r) => {
            action.insert(
                "register".into(),
                json!({
                    "model": r.model.value,
                    "artifact": r.artifact.value,
                    "metrics_from": r.metrics_from.as_ref().map(|s| &s.value),
                    "alias": r.alias.as_ref().map(|s| &s.value),
                }),
            );
        }
    }
    Ok(PlannedStep {
        id: instance_id(&step.id.value, matrix),
        step: step.id.value.clone(),
        kind: step.kind.name(),
        needs: step.needs.iter().map(|n| n.value.clone()).collect(),
        matrix: matrix.clone(),
        condition,
        skipped,
        action,
    })
}

/// The human-readable plan: a header, the params, then each layer with one
/// block per step instance.
impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n_instances: usize = self.layers.iter().map(Vec::len).sum();
        writeln!(
            f,
            "pipeline {}: {} step instance{} in {} layer{}",
            self.pipeline,
            n_instances,
            plural(n_instances),
            self.layers.len(),
            plural(self.layers.len())
        )?;
        if !self.params.is_empty() {
            let params: Vec<String> = self
                .params
                .iter()
                .map(|p| format!("{}={} ({})", p.name, p.value, p.source))
                .collect();
            writeln!(f, "params: {}", params.join(", "))?;
        }
        for (i, layer) in self.layers.iter().enumerate() {
            writeln!(f, "\nlayer {}", i + 1)?;
            for step in layer {
                write_step(f, step)?;
            }
        }
        Ok(())
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn write_step(f: &mut fmt::Formatter<'_>, step: &PlannedStep) -> fmt::Result {
    write!(f, "  {} ({})", step.id, step.kind)?;
    if !step.needs.is_empty() {
        write!(f, " after {}", step.needs.join(", "))?;
    }
    writeln!(f)?;
    if let Some(condition) = &step.condition {
        let value = match condition.value {
            Some(v) => v.to_string(),
            None => "decided at run time".to_owned(),
        };
        writeln!(f, "    if: {} => {value}", condition.expression)?;
    }
    if let Some(reason) = &step.skipped {
        writeln!(f, "    skipped: {reason}")?;
    }
    for (key, value) in &step.action {
        match value {
            Json::String(s) => {
                let mut lines = s.trim_end().lines();
                writeln!(f, "    {key}: {}", lines.next().unwrap_or_default())?;
                for line in lines {
                    writeln!(f, "      {line}")?;
                }
            }
            Json::Array(items) if key == "command" => {
                let args: Vec<String> = items
                    .iter()
                    .map(|a| shell_quote(a.as_str().unwrap_or_default()))
                    .collect();
                writeln!(f, "    {key}: {}", args.join(" "))?;
            }
            Json::Array(items) if key == "gate" => {
                writeln!(f, "    {key}:")?;
                for item in items {
                    writeln!(f, "      - {}", item.as_str().unwrap_or_default())?;
                }
            }
            Json::Array(items) => {
                let items: Vec<String> = items
                    .iter()
                    .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
                    .collect();
                writeln!(f, "    {key}: {}", items.join(", "))?;
            }
            Json::Object(map) if map.values().all(Json::is_null) => writeln!(f, "    {key}: -")?,
            Json::Object(map) => {
                let entries: Vec<String> = map
                    .iter()
                    .filter(|(_, v)| !v.is_null())
                    .map(|(k, v)| {
                        format!(
                            "{k}={}",
                            v.as_str().map_or_else(|| v.to_string(), str::to_owned)
                        )
                    })
                    .collect();
                writeln!(f, "    {key}: {}", entries.join(" "))?;
            }
            other => writeln!(f, "    {key}: {other}")?,
        }
    }
    Ok(())
}

/// Quotes an argument for display when a shell would split or expand it.
fn shell_quote(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c));
    if plain {
        arg.to_owned()
    } else {
        format!("'{}'", arg.replace('\'', "'\\''"))
    }
}
