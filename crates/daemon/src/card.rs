//! Model cards: what a person wrote in the pipeline's `model_card:`
//! (rendered against the run), combined with what weir knows of the
//! version — metrics and per-slice metrics, gate evidence, approvals, the
//! steps with their images and artifact hashes, params, commit, and the
//! previous version for comparison. A card is written once, when its
//! version registers; the SHA-256 of its canonical JSON goes into the
//! registration's audit entry, so an edited card no longer matches.
//!
//! **Invariant:** a card is built only from the run as it was when the
//! register step started and from the registry; building it twice for the
//! same registration gives the same card.

use serde_json::{Map, Value, json};
use weir_engine::{AttemptState, Run, StepState};
use weir_model::Pipeline;
use weir_model::pipeline::StepKind;
use weir_store::{ModelVersion, Store};

/// The metric-name infix of per-slice metrics: `accuracy.slice.age_lt_40`.
const SLICE: &str = ".slice.";

/// A card before its version is known: everything the run says.
#[derive(Debug, Clone)]
pub(crate) struct Draft(Map<String, Value>);

/// The draft of the card for register step instance `index` of `run`; an
/// error names the `model_card` template that read something absent.
pub(crate) fn draft(
    pipeline: &Pipeline,
    run: &Run,
    index: usize,
) -> Result<Draft, weir_engine::PrepareError> {
    let written: Map<String, Value> = weir_engine::model_card(run, pipeline, index)?
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, Value::String(v)))
        .collect();
    let dag = &pipeline.dag;
    let target = run.steps[index].step;
    let upstream = |step: usize| dag.is_upstream(step, target);
    let mut gates = Vec::new();
    let mut approvals = Vec::new();
    let mut steps = Vec::new();
    for instance in run.steps.iter().filter(|s| upstream(s.step)) {
        let step = &pipeline.steps[instance.step];
        match &step.kind {
            StepKind::Gate(_) => gates.push(json!({
                "step": instance.id,
                "holds": instance.state == StepState::Succeeded,
                "evidence": instance.evidence.iter().map(|e| json!({
                    "expression": e.expression,
                    "explanation": e.explanation,
                    "holds": e.holds,
                })).collect::<Vec<_>>(),
            })),
            StepKind::Approval(_) => {
                let (actor, comment) = decision(instance.reason.as_deref().unwrap_or_default());
                approvals.push(json!({
                    "step": instance.id,
                    "approved": instance.state == StepState::Succeeded,
                    "actor": actor,
                    "comment": comment,
                    "at": instance.finished_at,
                }));
            }
            StepKind::Container(_) => {
                let attempt = instance
                    .attempts
                    .iter()
                    .rev()
                    .find(|a| a.state == AttemptState::Succeeded);
                steps.push(json!({
                    "step": instance.id,
                    "image": attempt.and_then(|a| a.image.clone()),
                    "artifacts": attempt.map(|a| a.artifacts.clone()).unwrap_or_default(),
                }));
            }
            StepKind::Register(_) => {}
        }
    }
    let params: Map<String, Value> = run
        .params
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    let event_commit = run
        .event
        .get("after")
        .or_else(|| run.event.pointer("/head_commit/id"))
        .cloned();
    let mut card = Map::new();
    card.insert("card".into(), Value::Object(written));
    card.insert("gates".into(), Value::Array(gates));
    card.insert("approvals".into(), Value::Array(approvals));
    card.insert("steps".into(), Value::Array(steps));
    card.insert("params".into(), Value::Object(params));
    card.insert(
        "run".into(),
        json!({
            "id": run.id,
            "pipeline": run.pipeline,
            "trigger": run.cause.kind(),
            "commit": run.source_commit,
            "event_commit": event_commit,
        }),
    );
    Ok(Draft(card))
}

/// `approved by NAME: COMMENT` (as the engine writes it) to its actor and
/// comment.
fn decision(reason: &str) -> (Value, Value) {
    let rest = reason
        .strip_prefix("approved by ")
        .or_else(|| reason.strip_prefix("rejected by "));
    match rest.map(|r| r.split_once(": ").unwrap_or((r, ""))) {
        Some((actor, "")) => (json!(actor), Value::Null),
        Some((actor, comment)) => (json!(actor), json!(comment)),
        None => (Value::Null, Value::Null),
    }
}

/// Metrics split into the version's own and its slices' (`m.slice.s`
/// becomes `slices.s.m`).
fn split_slices(metrics: &Map<String, Value>) -> (Map<String, Value>, Map<String, Value>) {
    let mut own = Map::new();
    let mut slices = Map::new();
    for (name, value) in metrics {
        match name.split_once(SLICE) {
            Some((metric, slice)) if !metric.is_empty() && !slice.is_empty() => {
                let entry = slices
                    .entry(slice.to_owned())
                    .or_insert_with(|| Value::Object(Map::new()));
                if let Value::Object(entry) = entry {
                    entry.insert(metric.to_owned(), value.clone());
                }
            }
            _ => {
                own.insert(name.clone(), value.clone());
            }
        }
    }
    (own, slices)
}

/// The card of `registered`, from its draft and the registry (its
/// previous version), kept in the store unless one was kept before;
/// returns the card kept and its SHA-256.
pub(crate) async fn keep(
    store: &Store,
    draft: Draft,
    registered: &ModelVersion,
) -> Result<(Value, String), weir_store::Error> {
    let mut card = draft.0;
    let (metrics, slices) = split_slices(&registered.metrics);
    let previous = match registered.version {
        1 => Value::Null,
        n => {
            let before = store.model_version(&registered.model, n - 1).await?;
            let (old, _) = split_slices(&before.metrics);
            let changes: Map<String, Value> = metrics
                .iter()
                .filter_map(|(name, now)| {
                    let was = old.get(name)?;
                    let delta = match (now.as_f64(), was.as_f64()) {
                        (Some(now), Some(was)) => json!(now - was),
                        _ => Value::Null,
                    };
                    Some((
                        name.clone(),
                        json!({ "from": was, "to": now, "delta": delta }),
                    ))
                })
                .collect();
            json!({
                "version": before.version,
                "sha256": before.sha256,
                "metrics": Value::Object(old),
                "changes": changes,
            })
        }
    };
    let pipeline_hash = store.run_pipeline_hash(&registered.run_id).await?;
    if let Some(Value::Object(run)) = card.get_mut("run") {
        run.insert("pipeline_hash".into(), json!(pipeline_hash));
    }
    card.insert("model".into(), json!(registered.model));
    card.insert("version".into(), json!(registered.version));
    card.insert("registered_at".into(), json!(registered.created_at));
    card.insert(
        "artifact".into(),
        json!({ "path": registered.artifact, "sha256": registered.sha256 }),
    );
    card.insert("metrics".into(), Value::Object(metrics));
    card.insert("slices".into(), Value::Object(slices));
    card.insert("previous".into(), previous);
    let kept = store
        .keep_card(&registered.model, registered.version, &Value::Object(card))
        .await?;
    let sha256 = weir_store::document_sha256(&kept);
    Ok((kept, sha256))
}

/// A card as Markdown, for people and for publishing beside the model.
pub fn markdown(card: &Value) -> String {
    use std::fmt::Write as _;
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => "—".to_owned(),
        other => other.to_string(),
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Model card: {}@{}\n",
        text(&card["model"]),
        text(&card["version"])
    );
    let _ = writeln!(
        out,
        "Registered {} by run {} of pipeline {} (trigger {}, commit {}).\n",
        text(&card["registered_at"]),
        text(&card["run"]["id"]),
        text(&card["run"]["pipeline"]),
        text(&card["run"]["trigger"]),
        text(&card["run"]["commit"]),
    );
    for (key, title) in CARD_FIELDS {
        if let Some(value) = card["card"].get(key) {
            let _ = writeln!(out, "## {title}\n\n{}\n", text(value));
        }
    }
    let _ = writeln!(
        out,
        "## Metrics\n\n| metric | value | previous |\n|---|---|---|"
    );
    if let Value::Object(metrics) = &card["metrics"] {
        for (name, value) in metrics {
            let before = card["previous"]["metrics"]
                .get(name)
                .map_or("—".into(), text);
            let _ = writeln!(out, "| {name} | {} | {before} |", text(value));
        }
    }
    if let Value::Object(slices) = &card["slices"]
        && !slices.is_empty()
    {
        let _ = writeln!(
            out,
            "\n## Slices\n\n| slice | metric | value |\n|---|---|---|"
        );
        for (slice, metrics) in slices {
            if let Value::Object(metrics) = metrics {
                for (name, value) in metrics {
                    let _ = writeln!(out, "| {slice} | {name} | {} |", text(value));
                }
            }
        }
    }
    let _ = writeln!(out, "\n## Evidence\n");
    for gate in card["gates"].as_array().into_iter().flatten() {
        let verdict = if gate["holds"] == true {
            "held"
        } else {
            "failed"
        };
        let _ = writeln!(out, "- gate `{}` {verdict}:", text(&gate["step"]));
        for e in gate["evidence"].as_array().into_iter().flatten() {
            let _ = writeln!(
                out,
                "  - `{}`: {}",
                text(&e["expression"]),
                text(&e["explanation"])
            );
        }
    }
    for a in card["approvals"].as_array().into_iter().flatten() {
        let verdict = if a["approved"] == true {
            "approved"
        } else {
            "rejected"
        };
        let _ = writeln!(
            out,
            "- approval `{}` {verdict} by {} at {}: {}",
            text(&a["step"]),
            text(&a["actor"]),
            text(&a["at"]),
            text(&a["comment"])
        );
    }
    let _ = writeln!(
        out,
        "\n## Data and artifacts\n\n| step | image | artifact | sha256 |\n|---|---|---|---|"
    );
    for step in card["steps"].as_array().into_iter().flatten() {
        let image = text(&step["image"]);
        match step["artifacts"].as_object() {
            Some(artifacts) if !artifacts.is_empty() => {
                for (path, sha) in artifacts {
                    let _ = writeln!(
                        out,
                        "| {} | {image} | {path} | {} |",
                        text(&step["step"]),
                        text(sha)
                    );
                }
            }
            _ => {
                let _ = writeln!(out, "| {} | {image} | — | — |", text(&step["step"]));
            }
        }
    }
    let _ = writeln!(
        out,
        "\nModel artifact `{}`: sha256 {}.",
        text(&card["artifact"]["path"]),
        text(&card["artifact"]["sha256"])
    );
    let _ = writeln!(out, "\n## Params\n");
    if let Value::Object(params) = &card["params"] {
        for (name, value) in params {
            let _ = writeln!(out, "- {name} = {}", text(value));
        }
    }
    let _ = writeln!(out, "\n## Previous version\n");
    match card["previous"]["version"].as_i64() {
        Some(v) => {
            let _ = writeln!(
                out,
                "{}@{v}, sha256 {}.",
                text(&card["model"]),
                text(&card["previous"]["sha256"])
            );
        }
        None => {
            let _ = writeln!(out, "None: this is the first version.");
        }
    }
    out
}

/// A card as a standalone HTML page: every value from the card is
/// escaped, and the page carries no script.
pub fn html(card: &Value) -> String {
    let body = markdown_to_html(&markdown(card));
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Model card: {}@{}</title>\
         <style>body{{font-family:system-ui,sans-serif;max-width:60em;margin:2em auto;padding:0 1em}}\
         table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:.2em .5em;text-align:left}}\
         code{{background:#f4f4f4}}</style></head><body>\n{body}</body></html>\n",
        escape(card["model"].as_str().unwrap_or_default()),
        card["version"],
    )
}

/// The few Markdown forms [`markdown`] writes (headings, paragraphs,
/// lists, tables, code spans) as HTML, every character of text escaped.
fn markdown_to_html(markdown: &str) -> String {
    let mut out = String::new();
    let mut in_table = false;
    let mut in_list = false;
    for line in markdown.lines() {
        let is_row = line.starts_with('|');
        let is_item = line.trim_start().starts_with("- ");
        if in_table && !is_row {
            out.push_str("</table>\n");
            in_table = false;
        }
        if in_list && !is_item {
            out.push_str("</ul>\n");
            in_list = false;
        }
        if let Some(title) = line.strip_prefix("# ") {
            out.push_str(&format!("<h1>{}</h1>\n", inline(title)));
        } else if let Some(title) = line.strip_prefix("## ") {
            out.push_str(&format!("<h2>{}</h2>\n", inline(title)));
        } else if is_row {
            if line.starts_with("|---") {
                continue;
            }
            let cells: Vec<&str> = line.trim_matches('|').split(" | ").collect();
            let tag = if in_table { "td" } else { "th" };
            if !in_table {
                out.push_str("<table>\n");
                in_table = true;
            }
            out.push_str("<tr>");
            for cell in cells {
                out.push_str(&format!("<{tag}>{}</{tag}>", inline(cell.trim())));
            }
            out.push_str("</tr>\n");
        } else if is_item {
            if !in_list {
                out.push_str("<ul>\n");
                in_list = true;
            }
            let item = line.trim_start().trim_start_matches("- ");
            out.push_str(&format!("<li>{}</li>\n", inline(item)));
        } else if !line.is_empty() {
            out.push_str(&format!("<p>{}</p>\n", inline(line)));
        }
    }
    if in_table {
        out.push_str("</table>\n");
    }
    if in_list {
        out.push_str("</ul>\n");
    }
    out
}

/// Escapes `text`, then turns `code` spans into `<code>`.
fn inline(text: &str) -> String {
    let mut out = String::new();
    for (i, part) in text.split('`').enumerate() {
        if i % 2 == 1 {
            out.push_str(&format!("<code>{}</code>", escape(part)));
        } else {
            out.push_str(&escape(part));
        }
    }
    out
}

/// `text` safe in HTML text and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The fields of `model_card:` with their headings, in the card's order.
const CARD_FIELDS: [(&str, &str); 5] = [
    ("intended_use", "Intended use"),
    ("users", "Users"),
    ("limitations", "Limitations"),
    ("ethical_considerations", "Ethical considerations"),
    ("owners", "Owners"),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slice_metrics_are_grouped_by_slice() {
        let metrics = json!({ "accuracy": 0.9, "accuracy.slice.age_lt_40": 0.85, "f1.slice.age_lt_40": 0.8, "odd.slice.": 1 });
        let (own, slices) = split_slices(metrics.as_object().unwrap());
        assert_eq!(
            Value::Object(own),
            json!({ "accuracy": 0.9, "odd.slice.": 1 })
        );
        assert_eq!(
            Value::Object(slices),
            json!({ "age_lt_40": { "accuracy": 0.85, "f1": 0.8 } })
        );
    }

    #[test]
    fn decisions_split_into_actor_and_comment() {
        assert_eq!(
            decision("approved by ana: looks good: ship"),
            (json!("ana"), json!("looks good: ship"))
        );
        assert_eq!(decision("rejected by bo"), (json!("bo"), Value::Null));
        assert_eq!(decision("timed out"), (Value::Null, Value::Null));
    }

    #[test]
    fn html_escapes_everything_a_pipeline_wrote() {
        let card = json!({
            "model": "m<", "version": 1,
            "card": { "intended_use": "<script>alert(1)</script>", "users": "\"><img src=x onerror=alert(1)>" },
            "run": {}, "metrics": {}, "slices": {}, "gates": [], "approvals": [], "steps": [], "params": { "p": "`<b>`" },
            "artifact": {}, "previous": null,
        });
        let page = html(&card);
        assert!(!page.contains("<script"), "{page}");
        assert!(!page.contains("<img"), "{page}");
        assert!(!page.contains("<b>"), "{page}");
        assert!(
            page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
            "{page}"
        );
    }
}

/// A version's card as kept, with what the audit log says of it.
#[derive(Debug, Clone)]
pub struct Card {
    /// The card (JSON).
    pub card: Value,
    /// The SHA-256 of its canonical JSON now.
    pub sha256: String,
    /// The audit entry of the registration (its `seq`) and the card hash
    /// it recorded, when there is one.
    pub recorded: Option<(i64, Option<String>)>,
}

impl Card {
    /// Whether the card is the one its registration recorded.
    pub fn verified(&self) -> bool {
        matches!(&self.recorded, Some((_, Some(recorded))) if *recorded == self.sha256)
    }
}

/// Why a card cannot be shown.
#[derive(Debug, thiserror::Error)]
pub enum CardError {
    /// The version was registered before weir wrote cards.
    #[error("{0} has no model card: it was registered before weir wrote them")]
    NoCard(String),
    /// The store failed (an unknown version is a `NoSuchModel`).
    #[error(transparent)]
    Store(#[from] weir_store::Error),
}

impl crate::Daemon {
    /// The card of `model@version`, checked against the audit entry of its
    /// registration.
    pub async fn model_card(&self, model: &str, version: i64) -> Result<Card, CardError> {
        let name = format!("{model}@{version}");
        let card = (self.store.model_card(model, version).await?)
            .ok_or_else(|| CardError::NoCard(name.clone()))?;
        let sha256 = weir_store::document_sha256(&card);
        let entry = self
            .store
            .audit_entry_about(&name, "model.registered")
            .await?;
        let recorded = entry.map(|entry| {
            let payload: Value = serde_json::from_str(&entry.payload).unwrap_or_default();
            let recorded = payload["card_sha256"].as_str().map(str::to_owned);
            (entry.seq, recorded)
        });
        Ok(Card {
            card,
            sha256,
            recorded,
        })
    }
}
