//! Evaluating expressions against a JSON context, and turning values into
//! the text a template shows.

use crate::expr::{Expr, Reference};
use cel::common::ast::Expr as Node;
use cel::objects::{Key, Map};
use serde_json::Value as Json;
use std::collections::HashMap;
use std::sync::{Arc, LazyLock};
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
        // The standard library's declarations are the same for every
        // evaluation: built once, not once per expression.
        static STDLIB: LazyLock<Arc<cel::Env>> = LazyLock::new(|| Arc::new(cel::Env::stdlib()));
        let mut context = cel::Context::with_env(Arc::clone(&STDLIB));
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

    /// The value at a path an expression reads, or `None` when it is absent.
    pub fn read(&self, reference: &Reference) -> Option<Json> {
        let expr = Expr::compile(&reference.source()).ok()?;
        self.eval(&expr).ok()
    }

    /// Why `expr` has the value it has, in the values it compared:
    /// `0.81 >= 0.84 is false`. Both sides of `&&` and `||` are explained,
    /// joined by a comma; anything else is `source is value`.
    pub fn explain(&self, expr: &Expr) -> String {
        if let Some(inner) = strip_parens(expr.source()).and_then(|s| Expr::compile(s).ok()) {
            return self.explain(&inner);
        }
        let source: Vec<char> = expr.source().chars().collect();
        let root = expr.program().expression();
        let split = match &root.expr {
            Node::Call(call) if call.args.len() == 2 && call.target.is_none() => {
                operator(&call.func_name).and_then(|op| {
                    let (start, _) = expr.program().source_info().offset_for(root.id)?;
                    let start = start as usize;
                    let end = start + op.chars().count();
                    (end <= source.len()).then(|| {
                        let left: String = source[..start].iter().collect();
                        let right: String = source[end..].iter().collect();
                        (op, left, right)
                    })
                })
            }
            _ => None,
        };
        let parts = split.and_then(|(op, left, right)| {
            let left = Expr::compile(left.trim()).ok()?;
            let right = Expr::compile(right.trim()).ok()?;
            Some((op, left, right))
        });
        match parts {
            // Short-circuited: the side that decided is the whole story
            // (the other may not even be readable, as in `!has(x) || x > 1`).
            Some(("||", left, _)) if self.eval(&left) == Ok(Json::Bool(true)) => {
                self.explain(&left)
            }
            Some(("&&", left, _)) if self.eval(&left) == Ok(Json::Bool(false)) => {
                self.explain(&left)
            }
            Some(("&&" | "||", left, right)) => {
                format!("{}, {}", self.explain(&left), self.explain(&right))
            }
            Some((op, left, right)) => {
                let shown = |e: &Expr| match self.eval(e) {
                    Ok(value) => value.to_string(),
                    Err(err) => format!("({})", err.reason),
                };
                let verdict = match self.eval(expr) {
                    Ok(value) => value.to_string(),
                    Err(err) => format!("an error: {}", err.reason),
                };
                format!("{} {op} {} is {verdict}", shown(&left), shown(&right))
            }
            None => match self.eval(expr) {
                Ok(value) => format!("{} is {value}", expr.source()),
                Err(err) => err.to_string(),
            },
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

/// The inside of `( … )` when those parentheses enclose the whole text.
fn strip_parens(source: &str) -> Option<&str> {
    let inner = source.trim().strip_prefix('(')?.strip_suffix(')')?;
    let mut depth = 0i32;
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for c in inner.chars() {
        match quote {
            Some(_) if escaped => escaped = false,
            Some(_) if c == '\\' => escaped = true,
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None => match c {
                '\'' | '"' => quote = Some(c),
                '(' => depth += 1,
                ')' => {
                    depth -= 1;
                    if depth < 0 {
                        return None;
                    }
                }
                _ => {}
            },
        }
    }
    (depth == 0).then_some(inner)
}

/// The operator text of a binary call the explanation splits at.
fn operator(func_name: &str) -> Option<&'static str> {
    Some(match func_name {
        "_>=_" => ">=",
        "_<=_" => "<=",
        "_>_" => ">",
        "_<_" => "<",
        "_==_" => "==",
        "_!=_" => "!=",
        "_&&_" => "&&",
        "_||_" => "||",
        _ => return None,
    })
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

/// An execution error in the words of the format: values as JSON with
/// their type, never the evaluator's Rust debug text.
fn describe(e: &cel::ExecutionError) -> String {
    use cel::ExecutionError as E;
    let value = |v: &cel::Value| {
        let json = to_json(v);
        format!("{json} ({})", type_name(&json))
    };
    let operator = |name: &str| match name {
        "add" => "+".to_owned(),
        "sub" => "-".to_owned(),
        "mul" => "*".to_owned(),
        "div" => "/".to_owned(),
        "rem" => "%".to_owned(),
        other => other.to_owned(),
    };
    match e {
        E::NoSuchKey(key) => format!("no such key '{key}'"),
        E::UndeclaredReference(name) => format!("unknown name '{name}'"),
        E::UnsupportedBinaryOperator(op, a, b) => {
            format!(
                "'{}' does not apply to {} and {}",
                operator(op),
                value(a),
                value(b)
            )
        }
        E::ValuesNotComparable(a, b) => {
            format!("{} cannot be compared to {}", value(a), value(b))
        }
        E::DivisionByZero(a) => format!("{} divided by zero", value(a)),
        E::RemainderByZero(a) => format!("remainder of {} by zero", value(a)),
        E::Overflow(op, a, b) => {
            format!("{} {} {} overflows", value(a), operator(op), value(b))
        }
        E::IndexOutOfBounds(index) => format!("index {} is out of bounds", to_json(index)),
        E::UnsupportedIndex(index, target) => {
            format!("{} cannot be indexed by {}", value(target), value(index))
        }
        E::UnsupportedKeyType(key) => format!("{} cannot be a map key", value(key)),
        E::UnsupportedTargetType { target } => format!("unsupported argument {}", value(target)),
        E::NotSupportedAsMethod { method, target } => {
            format!("'{method}' is not a method of {}", value(target))
        }
        E::DuplicateKey(key) => format!("the key {} is given twice", to_json(key)),
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
    fn explains_comparisons_with_the_values_read() {
        let mut ctx = Context::new();
        ctx.set(
            "steps",
            json!({"validate": {"metrics": {"accuracy": 0.81}}}),
        );
        ctx.set(
            "models",
            json!({"churn": {"production": {"metrics": {"accuracy": 0.84}}}}),
        );
        let expr = Expr::compile(
            "!has(models.churn.production) || steps.validate.metrics.accuracy >= models.churn.production.metrics.accuracy",
        )
        .expect("compiles");
        assert_eq!(
            ctx.explain(&expr),
            "!has(models.churn.production) is false, 0.81 >= 0.84 is false"
        );
        let expr = Expr::compile("(steps.validate.metrics.accuracy < 0.9)").expect("compiles");
        assert_eq!(ctx.explain(&expr), "0.81 < 0.9 is true");
        // A side that decides alone is the whole explanation: the other may
        // not be readable (no production model yet).
        let expr = Expr::compile(
            "!has(models.churn.staging) || steps.validate.metrics.accuracy >= models.churn.staging.metrics.accuracy",
        )
        .expect("compiles");
        assert_eq!(ctx.explain(&expr), "!has(models.churn.staging) is true");
        let expr = Expr::compile(
            "has(models.churn.staging) && models.churn.staging.metrics.accuracy > 0.5",
        )
        .expect("compiles");
        assert_eq!(ctx.explain(&expr), "has(models.churn.staging) is false");
        let expr = Expr::compile("steps.validate.metrics.f1 > 0.5").expect("compiles");
        assert_eq!(
            ctx.explain(&expr),
            "(no such key 'f1') > 0.5 is an error: no such key 'f1'"
        );
    }

    #[test]
    fn reads_paths_and_absent_ones() {
        let ctx = ctx();
        let expr = Expr::compile("steps.validate.metrics.n > 1 || has(models.churn.production)")
            .expect("compiles");
        let reads: Vec<(String, Option<Json>)> = expr
            .references()
            .iter()
            .map(|r| (r.source(), ctx.read(r)))
            .collect();
        assert_eq!(
            reads,
            vec![
                ("steps.validate.metrics.n".to_owned(), Some(json!(3))),
                ("models.churn.production".to_owned(), None),
            ]
        );
    }

    #[test]
    fn values_render_as_text() {
        assert_eq!(render_value(&json!("a b")), "a b");
        assert_eq!(render_value(&json!(0.5)), "0.5");
        assert_eq!(render_value(&json!(null)), "");
        assert_eq!(render_value(&json!([1, "x"])), "[1,\"x\"]");
    }
}

#[cfg(test)]
mod errors {
    use super::*;

    /// What evaluating `source` says, with `params` of a string and a number.
    fn error(source: &str) -> String {
        let mut ctx = Context::new();
        ctx.set("params", serde_json::json!({"lr": "0.1", "n": 3}));
        let expr = Expr::compile(source).expect("compiles");
        ctx.eval(&expr).expect_err("an error").to_string()
    }

    #[test]
    fn run_time_errors_name_values_as_the_format_writes_them() {
        assert_eq!(
            error("params.lr + 1"),
            "params.lr + 1: '+' does not apply to \"0.1\" (string) and 1 (number)"
        );
        assert_eq!(
            error("params.n / 0"),
            "params.n / 0: 3 (number) divided by zero"
        );
        assert_eq!(error("[1][5]"), "[1][5]: index 5 is out of bounds");
        for source in [
            "1 + 'x'",
            "params.n % 0",
            "[1][5]",
            "params.lr > 0.5",
            "int('x')",
        ] {
            let text = error(source);
            assert!(
                !text.contains("Int(") && !text.contains("String(") && !text.contains("Float("),
                "{text}"
            );
        }
    }
}
