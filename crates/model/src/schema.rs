//! The JSON Schema (draft 2020-12) of the pipeline format, for editors.
//!
//! It is built from the same key lists the parser uses (`lower.rs`), so a
//! key added to the parser and forgotten here shows up as a `null` schema,
//! which a unit test refuses; the integration tests check every valid test
//! file and example pipeline against it. The parser stays the authority:
//! the schema cannot express cross-field rules (needs targets, cycles,
//! what expressions read).

use crate::lower::{
    APPROVAL_KEYS, BACKOFFS, CATCHUPS, COMMON_STEP_KEYS, CONCURRENCY_KEYS, CONTAINER_KEYS,
    DEFAULTS_KEYS, DRIFT_KEYS, EXECUTORS, KIND_KEYS, MLFLOW_KEYS, MODEL_CARD_KEYS, ON_CONFLICTS,
    ON_KEYS, PARAM_KEYS, PIPELINE_KEYS, PULLS, REGISTER_KEYS, RESOURCES_KEYS, RETRY_KEYS,
    SCHEDULE_KEYS, WEBHOOK_KEYS,
};
use serde_json::{Map, Value, json};

/// The JSON Schema of a pipeline file.
pub fn schema() -> Value {
    let mut step_keys: Vec<&str> = COMMON_STEP_KEYS.to_vec();
    step_keys.extend(KIND_KEYS);
    step_keys.extend(CONTAINER_KEYS);
    let kinds: Vec<Value> = KIND_KEYS
        .iter()
        .map(|k| json!({ "required": [k] }))
        .collect();
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://weir.dev/schema/pipeline.json",
        "title": "weir pipeline",
        "description": "One weir pipeline: triggers, params, and a DAG of steps.",
        "type": "object",
        "required": ["name", "steps"],
        "properties": properties(PIPELINE_KEYS),
        "patternProperties": { "^x-": { "description": "Extension key, ignored; a place for YAML anchors." } },
        "additionalProperties": false,
        "$defs": {
            "on": object(ON_KEYS, &[]),
            "schedule": object(SCHEDULE_KEYS, &["cron"]),
            "webhook": object(WEBHOOK_KEYS, &["secret_env"]),
            "drift": object(DRIFT_KEYS, &["metric", "above"]),
            "concurrency": object(CONCURRENCY_KEYS, &[]),
            "param": {
                "oneOf": [
                    { "type": ["string", "number", "boolean", "null"] },
                    object(PARAM_KEYS, &[]),
                ]
            },
            "defaults": object(DEFAULTS_KEYS, &[]),
            "step": {
                "type": "object",
                "properties": properties(&step_keys),
                "additionalProperties": false,
                "oneOf": kinds,
            },
            "resources": object(RESOURCES_KEYS, &[]),
            "retry": {
                "oneOf": [
                    { "type": "integer", "minimum": 0 },
                    object(RETRY_KEYS, &[]),
                ]
            },
            "approval": {
                "oneOf": [
                    { "type": "null" },
                    object(APPROVAL_KEYS, &[]),
                ]
            },
            "register": object(REGISTER_KEYS, &["model", "artifact"]),
            "model_card": object(MODEL_CARD_KEYS, &[]),
            "mlflow": object(MLFLOW_KEYS, &[]),
            "env": {
                "type": "object",
                "propertyNames": { "pattern": "^[A-Za-z_][A-Za-z0-9_]*$", "not": { "pattern": "^WEIR_" } },
                "additionalProperties": { "type": ["string", "number", "boolean"] },
            },
            "name": { "type": "string", "pattern": "^[a-z0-9][a-z0-9-]{0,62}$" },
            "identifier": { "type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]*$" },
            "duration": {
                "type": "string",
                "pattern": "^([0-9]+(\\.[0-9]+)?(ms|s|m|h|d))+$",
                "description": "Number-unit pairs: 500ms, 30s, 5m, 1h30m, 2d.",
            },
            "expression": {
                "type": ["string", "boolean"],
                "description": "A CEL expression over params, run, steps, matrix, models and event.",
            },
            "template": {
                "type": ["string", "number", "boolean"],
                "description": "Text with ${{ expression }} placeholders.",
            },
        },
    })
}

fn object(keys: &[&str], required: &[&str]) -> Value {
    json!({
        "type": "object",
        "properties": properties(keys),
        "required": required,
        "additionalProperties": false,
    })
}

fn properties(keys: &[&str]) -> Value {
    Value::Object(
        keys.iter()
            .map(|k| ((*k).to_owned(), property(k)))
            .collect::<Map<_, _>>(),
    )
}

fn reference(name: &str) -> Value {
    json!({ "$ref": format!("#/$defs/{name}") })
}

fn choice(options: &[&str], description: &str) -> Value {
    json!({ "enum": options, "description": description })
}

fn list_of(item: Value, description: &str) -> Value {
    json!({ "type": "array", "items": item, "description": description })
}

/// The schema of one key; keys are unique in meaning across the format.
fn property(key: &str) -> Value {
    match key {
        "name" => reference("name"),
        "description" => json!({ "type": "string" }),
        "on" => reference("on"),
        "manual" => {
            json!({ "type": "boolean", "description": "Whether the CLI and API may start runs (default true)." })
        }
        "schedule" => list_of(reference("schedule"), "Cron schedules."),
        "cron" => {
            json!({ "type": "string", "description": "5 fields (minute hour day month weekday), or 6 with seconds first." })
        }
        "timezone" => json!({ "type": "string", "description": "IANA time zone, default UTC." }),
        "catchup" => choice(
            CATCHUPS,
            "Slots missed while down: none (default), latest or all.",
        ),
        "webhook" => reference("webhook"),
        "secret_env" => reference("identifier"),
        "require_delivery_id" => json!({
            "type": "boolean",
            "description": "Refuse deliveries without a delivery id (default true)."
        }),
        "dedupe" => json!({
            "allOf": [reference("duration")],
            "description": "The same signed body within this long starts nothing (default 10m; 0s: off)."
        }),
        "drift" => list_of(reference("drift"), "Rules over drift events."),
        "metric" => reference("identifier"),
        "above" => json!({ "type": "number" }),
        "cooldown" => reference("duration"),
        "concurrency" => reference("concurrency"),
        "max_runs" => json!({ "type": "integer", "minimum": 1 }),
        "on_conflict" => choice(ON_CONFLICTS, "What a new run does at max_runs."),
        "params" => json!({
            "type": "object",
            "propertyNames": { "pattern": "^[A-Za-z_][A-Za-z0-9_]*$" },
            "additionalProperties": reference("param"),
        }),
        "default" => json!({ "type": ["string", "number", "boolean"] }),
        "env" => reference("env"),
        "defaults" => reference("defaults"),
        "steps" => json!({
            "type": "object",
            "minProperties": 1,
            "propertyNames": { "pattern": "^[a-z][a-z0-9_-]{0,62}$" },
            "additionalProperties": reference("step"),
        }),
        "needs" => json!({
            "oneOf": [
                { "type": "string" },
                { "type": "array", "items": { "type": "string" }, "uniqueItems": true },
            ],
            "description": "Steps that must finish first.",
        }),
        "if" => reference("expression"),
        "matrix" => json!({
            "type": "object",
            "minProperties": 1,
            "propertyNames": { "pattern": "^[A-Za-z_][A-Za-z0-9_]*$" },
            "additionalProperties": {
                "type": "array",
                "minItems": 1,
                "uniqueItems": true,
                "items": { "type": ["string", "number", "boolean"] },
            },
        }),
        "max_parallel" => json!({ "type": "integer", "minimum": 1 }),
        "run" => {
            json!({ "type": "string", "minLength": 1, "description": "A shell line, run with sh -c." })
        }
        "command" => list_of(reference("template"), "Program and arguments, no shell."),
        "gate" => list_of(reference("expression"), "Conditions that must all hold."),
        "approval" => reference("approval"),
        "register" => reference("register"),
        "image" => reference("template"),
        "executor" => choice(EXECUTORS, "docker (default) or process."),
        "pull" => choice(PULLS, "When to pull the image."),
        "resources" => reference("resources"),
        "gpus" => json!({
            "oneOf": [
                { "type": "integer", "minimum": 1 },
                { "const": "all" },
                {
                    "type": "array",
                    "minItems": 1,
                    "uniqueItems": true,
                    "items": { "oneOf": [{ "type": "integer", "minimum": 0 }, { "type": "string", "minLength": 1 }] },
                },
            ],
        }),
        "cpus" => json!({ "type": ["number", "string"], "description": "Cores, like 2 or 0.5." }),
        "memory" => json!({
            "type": ["string", "integer"],
            "pattern": "^[0-9]+(\\.[0-9]+)?(Ki|Mi|Gi|Ti|K|k|M|G|T)?$",
        }),
        "secrets" => list_of(
            reference("identifier"),
            "Daemon environment variables handed to the step, masked in logs.",
        ),
        "artifacts" => list_of(
            json!({ "type": "string", "minLength": 1 }),
            "Files under $WEIR_WORK hashed for lineage.",
        ),
        "retry" => reference("retry"),
        "limit" => json!({ "type": "integer", "minimum": 0 }),
        "delay" | "max_delay" | "timeout" => reference("duration"),
        "backoff" => choice(BACKOFFS, "How the delay grows."),
        "model" | "alias" => reference("name"),
        "artifact" => json!({ "type": "string", "minLength": 1 }),
        "metrics_from" => json!({ "type": "string" }),
        "model_card" => json!({
            "allOf": [reference("model_card")],
            "description": "Free text for the card of every version this pipeline registers.",
        }),
        "mlflow" => json!({
            "allOf": [reference("mlflow")],
            "description": "Where runs and registrations are mirrored in MLflow (over the daemon's setting).",
        }),
        "tracking_uri" => {
            json!({ "type": "string", "pattern": "^https?://", "description": "The MLflow server." })
        }
        "experiment" => {
            json!({ "type": "string", "minLength": 1, "description": "The MLflow experiment (default: the pipeline's name)." })
        }
        "intended_use" | "users" | "limitations" | "ethical_considerations" | "owners" => {
            reference("template")
        }
        _ => Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nulls(value: &Value, path: &str, out: &mut Vec<String>) {
        match value {
            Value::Null => out.push(path.to_owned()),
            Value::Object(map) => map
                .iter()
                .for_each(|(k, v)| nulls(v, &format!("{path}/{k}"), out)),
            Value::Array(items) => items
                .iter()
                .enumerate()
                .for_each(|(i, v)| nulls(v, &format!("{path}/{i}"), out)),
            _ => {}
        }
    }

    #[test]
    fn every_key_of_the_parser_has_a_schema() {
        let mut missing = Vec::new();
        nulls(&schema(), "", &mut missing);
        assert!(missing.is_empty(), "keys without a schema: {missing:?}");
    }
}
