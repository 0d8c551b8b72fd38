//! Whole-pipeline checks that need the DAG: what every expression reads
//! (unknown steps, params, matrix keys; steps that do not run before the
//! reader; `event` in shell text) and `register.metrics_from`.

use crate::dag::Dag;
use crate::diag::{Code, Diagnostic, did_you_mean, hint_or_expected, one_of};
use crate::lower::{ExprSite, Site, Skeleton};
use crate::pipeline::Reads;
use weir_expr::Reference;

/// The variables an expression may start from.
pub(crate) const ROOTS: &[&str] = &["params", "run", "steps", "matrix", "models", "event"];
/// The fields of `run`.
pub(crate) const RUN_FIELDS: &[&str] = &["id", "trigger", "pipeline"];
/// The fields of `steps.<id>`.
pub(crate) const STEP_FIELDS: &[&str] = &["state", "exit_code", "metrics", "outputs"];

/// Checks every expression of the pipeline and every `metrics_from`.
pub(crate) fn check(
    skeletons: &[Skeleton],
    params: &[String],
    exprs: &[ExprSite],
    dag: &Dag,
    diags: &mut Vec<Diagnostic>,
) -> Reads {
    let mut reads = Reads::default();
    for site in exprs {
        for reference in site.expr.references() {
            match reference.segments.first().map(|s| s.name.as_str()) {
                Some("models") => reads.models = true,
                Some("event") => reads.event = true,
                _ => {}
            }
            if let Some((segment, code, message)) = judge(&reference, site, skeletons, params, dag)
            {
                let offset = site.offset + reference.segments[segment].offset;
                diags.push(Diagnostic::error(site.node.locate(offset), code, message));
            }
        }
    }
    for (index, skeleton) in skeletons.iter().enumerate() {
        if let Some(from) = &skeleton.metrics_from {
            let message = match dag.index(&from.value) {
                None => Some((
                    Code::UnknownReference,
                    format!(
                        "unknown step '{}' in metrics_from{}",
                        from.value,
                        did_you_mean(&from.value, dag.ids().iter().map(String::as_str))
                    ),
                )),
                Some(source) if !dag.is_upstream(source, index) => Some((
                    Code::NotUpstream,
                    format!(
                        "metrics_from '{}' is not upstream of '{}': add it to needs (directly or through another step)",
                        from.value, skeleton.id.value
                    ),
                )),
                Some(_) => None,
            };
            if let Some((code, message)) = message {
                diags.push(Diagnostic::error(from.pos, code, message));
            }
        }
    }
    reads
}

/// What is wrong with one reference, if anything: the segment to point at,
/// the code and the message.
fn judge(
    reference: &Reference,
    site: &ExprSite,
    skeletons: &[Skeleton],
    params: &[String],
    dag: &Dag,
) -> Option<(usize, Code, String)> {
    let segments = &reference.segments;
    let field = |i: usize| segments.get(i).map(|s| s.name.as_str());
    let reader = site.step.map(|i| &skeletons[i]);
    match reference.root() {
        "params" => {
            let name = field(1)?;
            if params.iter().any(|p| p == name) {
                return None;
            }
            let hint = did_you_mean(name, params.iter().map(String::as_str));
            let hint = if hint.is_empty() && params.is_empty() {
                " (the pipeline declares no params)".to_owned()
            } else {
                hint
            };
            Some((
                1,
                Code::UnknownReference,
                format!("unknown param '{name}'{hint}"),
            ))
        }
        "run" => {
            let name = field(1)?;
            if RUN_FIELDS.contains(&name) {
                return None;
            }
            let message = format!(
                "unknown field 'run.{name}' (expected {})",
                one_of(RUN_FIELDS)
            );
            Some((1, Code::UnknownReference, message))
        }
        "matrix" => {
            let Some(reader) = reader.filter(|r| r.is_matrix) else {
                let message = format!(
                    "'matrix' is only available in a step with a matrix, not in {}",
                    where_(site, skeletons)
                );
                return Some((0, Code::UnknownReference, message));
            };
            let name = field(1)?;
            if reader.matrix_keys.iter().any(|k| k == name) {
                return None;
            }
            let hint = did_you_mean(name, reader.matrix_keys.iter().map(String::as_str));
            let message = format!(
                "unknown matrix key '{name}' in step '{}'{hint}",
                reader.id.value
            );
            Some((1, Code::UnknownReference, message))
        }
        "steps" => judge_step(reference, site, skeletons, dag),
        "event" if matches!(site.site, Site::Run | Site::Command | Site::Image) => {
            let message = format!(
                "'event' is untrusted input and can't be used in {}: pass it through env (env: {{ NAME: \"${{{{ {} }}}}\" }}) and read $NAME",
                site.site.describe(),
                reference.dotted()
            );
            Some((0, Code::EventInShell, message))
        }
        "models" | "event" => None,
        other => {
            let hint = hint_or_expected(other, ROOTS);
            Some((
                0,
                Code::UnknownReference,
                format!("unknown name '{other}'{hint}"),
            ))
        }
    }
}

fn judge_step(
    reference: &Reference,
    site: &ExprSite,
    skeletons: &[Skeleton],
    dag: &Dag,
) -> Option<(usize, Code, String)> {
    let segments = &reference.segments;
    let name = segments.get(1)?.name.as_str();
    let Some(target) = dag.index(name) else {
        let hint = did_you_mean(name, dag.ids().iter().map(String::as_str));
        return Some((
            1,
            Code::UnknownReference,
            format!("unknown step '{name}'{hint}"),
        ));
    };
    match site.step {
        None if site.site == Site::ModelCard => {
            let before = skeletons
                .iter()
                .enumerate()
                .filter(|(_, s)| s.is_register)
                .find(|(reader, _)| *reader == target || !dag.is_upstream(target, *reader));
            if let Some((_, register)) = before {
                let message = format!(
                    "model_card can't read steps.{name}: step '{name}' is not upstream of register step '{}', so it has not finished when the card is written",
                    register.id.value
                );
                return Some((1, Code::NotUpstream, message));
            }
        }
        None => {
            let message = format!(
                "{} can't read steps.{name}: it applies to every step; read it in a step's own env instead",
                where_(site, skeletons)
            );
            return Some((0, Code::UnknownReference, message));
        }
        Some(reader) if reader == target => {
            let message = format!(
                "step '{name}' can't read its own results in {}",
                site.site.describe()
            );
            return Some((1, Code::NotUpstream, message));
        }
        Some(reader) if !dag.is_upstream(target, reader) => {
            let message = format!(
                "step '{name}' is not upstream of '{}': add it to needs (directly or through another step) to read its results",
                skeletons[reader].id.value
            );
            return Some((1, Code::NotUpstream, message));
        }
        Some(_) => {}
    }
    let field = segments.get(2)?.name.as_str();
    if skeletons[target].is_matrix {
        let message = format!(
            "step '{name}' has a matrix: steps.{name} is the list of its instances, e.g. steps.{name}.all(i, i.{field} …)"
        );
        return Some((2, Code::UnknownReference, message));
    }
    if STEP_FIELDS.contains(&field) {
        return None;
    }
    let hint = hint_or_expected(field, STEP_FIELDS);
    Some((
        2,
        Code::UnknownReference,
        format!("unknown field '{field}' of steps.{name}{hint}"),
    ))
}

fn where_(site: &ExprSite, skeletons: &[Skeleton]) -> String {
    match site.step {
        Some(i) => format!(
            "{} of step '{}'",
            site.site.describe(),
            skeletons[i].id.value
        ),
        None if site.site == Site::PipelineEnv => "the pipeline's env".to_owned(),
        None => format!("defaults.{}", site.site.describe()),
    }
}
