//! Evaluating expressions against a JSON context, and turning values into
//! the text a template shows.

use crate::expr::Expr;
use cel::objects::{Key, Map};
use serde_json::Value as Json;
use std::collections::HashMap;
use std::sync::Arc;
use thiserror::Error;

/// The variables an expression can read, each a JSON value.
#[derive(Debug, Clone, Default)]
pub struct Context {
    variables: Vec<(String, Json)>,
}

/// Why an expression could not be evaluated.
#[derive(Debug, Clone, PartialEq, Error)]
#[error("{expression}: {reason}")]
pub struct EvalError {
    /// The expression's source.
    pub expression: String,
    /// What went wrong, naming the missing key or the mismatched types.
    pub reason: String,
}

impl Context {
    /// An empty context.
    pub fn new() -> Context {
        Context::default()
    }

    /// Sets (or replaces) the variable `name`.
    pub fn set(&mut self, name: &str, value: Json) {
        match self.variables.iter_mut().find(|(n, _)| n == name) {
            Some(slot) => slot.1 = value,
            None => self.variables.push((name.to_owned(), value)),
        }
    }

    /// Evaluates `expr` and returns its value as JSON.
    pub fn eval(&self, expr: &Expr) -> Result<Json, EvalError> {
        let mut context = cel::Context::default();
        for (name, value) in &self.variables {
            context.add_variable_from_value(name.clone(), to_cel(value));
        }
        match expr.program().execute(&context) {
            Ok(value) => Ok(to_json(&value)),
            Err(e) => Err(EvalError {
                expression: expr.source().to_owned(),
                reason: describe(&e),
            }),
        }
    }

    /// Evaluates `expr`, which must yield a boolean.
    pub fn eval_bool(&self, expr: &Expr) -> Result<bool, EvalError> {
        match self.eval(expr)? {
            Json::Bool(b) => Ok(b),
            other => Err(EvalError {
                expression: expr.source().to_owned(),
                reason: format!("expected a boolean, got {}", type_name(&other)),
            }),
        }
    }
}

/// The text a value shows inside a template: strings as they are, numbers
/// and booleans in their usual form, null as nothing, lists and maps as JSON.
pub fn render_value(value: &Json) -> String {
    match value {
        Json::String(s) => s.clone(),
        Json::Null => String::new(),
        other => other.to_string(),
    }
}

fn type_name(value: &Json) -> &'static str {
    match value {
        Json::Null => "null",
        Json::Bool(_) => "bool",
        Json::Number(_) => "number",
        Json::String(_) => "string",
        Json::Array(_) => "list",
        Json::Object(_) => "map",
    }
}

fn describe(e: &cel::ExecutionError) -> String {
    match e {
        cel::ExecutionError::NoSuchKey(key) => format!("no such key '{key}'"),
        cel::ExecutionError::UndeclaredReference(name) => format!("unknown name '{name}'"),
        other => {
            let text = other.to_string();
            let mut chars = text.chars();
            match chars.next() {
                Some(first) => first.to_lowercase().chain(chars).collect(),
                None => text,
            }
        }
    }
}

fn to_cel(value: &Json) -> cel::Value {
    match value {
        Json::Null => cel::Value::Null,
        Json::Bool(b) => cel::Value::Bool(*b),
        Json::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => cel::Value::Int(i),
            (None, Some(u)) => cel::Value::UInt(u),
            _ => cel::Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Json::String(s) => cel::Value::String(Arc::new(s.clone())),
        Json::Array(items) => cel::Value::List(Arc::new(items.iter().map(to_cel).collect())),
        Json::Object(entries) => {
            let map: HashMap<Key, cel::Value> = entries
                .iter()
                .map(|(k, v)| (Key::String(Arc::new(k.clone())), to_cel(v)))
                .collect();
            cel::Value::Map(Map { map: Arc::new(map) })
        }
    }
}

fn to_json(value: &cel::Value) -> Json {
    match value {
        cel::Value::Null => Json::Null,
        cel::Value::Bool(b) => Json::Bool(*b),
        cel::Value::Int(i) => Json::from(*i),
        cel::Value::UInt(u) => Json::from(*u),
        cel::Value::Float(f) => serde_json::Number::from_f64(*f).map_or(Json::Null, Json::Number),
        cel::Value::String(s) => Json::String(s.to_string()),
        cel::Value::Bytes(b) => Json::String(String::from_utf8_lossy(b).into_owned()),
        cel::Value::List(items) => Json::Array(items.iter().map(to_json).collect()),
        cel::Value::Map(map) => {
            let mut entries: Vec<(String, Json)> = map
                .map
                .iter()
                .map(|(k, v)| (key_text(k), to_json(v)))
                .collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Json::Object(entries.into_iter().collect())
        }
        other => Json::String(format!("{other:?}")),
    }
}

fn key_text(key: &Key) -> String {
    match key {
        Key::Int(i) => i.to_string(),
        Key::Uint(u) => u.to_string(),
        Key::Bool(b) => b.to_string(),
        Key::String(s) => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ctx() -> Context {
        let mut ctx = Context::new();
        ctx.set("params", json!({"lr": "0.01"}));
        ctx.set(
            "steps",
            json!({"validate": {"metrics": {"accuracy": 0.91, "n": 3}}}),
        );
        ctx.set("models", json!({"churn": {}}));
        ctx
    }

    fn eval(source: &str) -> Result<Json, EvalError> {
        ctx().eval(&Expr::compile(source).expect("compiles"))
    }

    #[test]
    fn reads_json_values() {
        assert_eq!(
            eval("steps.validate.metrics.accuracy >= 0.9"),
            Ok(json!(true))
        );
        assert_eq!(eval("steps.validate.metrics.n + 1"), Ok(json!(4)));
        assert_eq!(eval("params.lr != \"0\""), Ok(json!(true)));
    }

    #[test]
    fn an_absent_alias_is_absent_for_has() {
        assert_eq!(
            eval("!has(models.churn.production) || models.churn.production.version > 1"),
            Ok(json!(true))
        );
    }

    #[test]
    fn reading_an_absent_key_names_it() {
        let err = eval("models.churn.production.version").expect_err("absent");
        assert_eq!(err.reason, "no such key 'production'");
        assert_eq!(
            err.to_string(),
            "models.churn.production.version: no such key 'production'"
        );
    }

    #[test]
    fn eval_bool_refuses_other_types() {
        let err = ctx()
            .eval_bool(&Expr::compile("params.lr").expect("compiles"))
            .expect_err("a string");
        assert_eq!(err.reason, "expected a boolean, got string");
    }

    #[test]
    fn values_render_as_text() {
        assert_eq!(render_value(&json!("a b")), "a b");
        assert_eq!(render_value(&json!(0.5)), "0.5");
        assert_eq!(render_value(&json!(null)), "");
        assert_eq!(render_value(&json!([1, "x"])), "[1,\"x\"]");
    }
}
