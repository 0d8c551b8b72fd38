//! From the YAML tree to the typed [`Pipeline`]: every key, type, name,
//! duration, size, cron and time zone is checked here, and every problem is
//! recorded before moving on, so one pass finds them all.
//!
//! Checks that need the whole pipeline (the DAG, what expressions read) are
//! in `check.rs`; this file records what they need as [`Skeleton`]s and
//! [`ExprSite`]s.

use crate::diag::{Code, Diagnostic, Pos, did_you_mean, hint_or_expected, one_of};
use crate::names::NameRule;
use crate::pipeline::*;
use crate::schedule;
use crate::units::{Duration, Size};
use crate::yaml::{Node, Value};
use weir_expr::{Compiler, Expr, SyntaxError, Template};

/// Keys of the top level.
pub(crate) const PIPELINE_KEYS: &[&str] = &[
    "name",
    "description",
    "on",
    "concurrency",
    "params",
    "env",
    "defaults",
    "steps",
    "model_card",
    "mlflow",
];
/// Keys of `mlflow`.
pub(crate) const MLFLOW_KEYS: &[&str] = &["tracking_uri", "experiment"];
/// Keys of `model_card`.
pub(crate) const MODEL_CARD_KEYS: &[&str] = &[
    "intended_use",
    "users",
    "limitations",
    "ethical_considerations",
    "owners",
];
/// Keys of `on:`.
pub(crate) const ON_KEYS: &[&str] = &["manual", "schedule", "webhook", "drift"];
/// Keys of a schedule entry.
pub(crate) const SCHEDULE_KEYS: &[&str] = &["cron", "timezone", "catchup"];
/// Keys of `on.webhook`.
/// How long a signed body is remembered by default, so the same body sent
/// again with a new delivery id starts nothing (`on.webhook.dedupe`).
const DEFAULT_DEDUPE: std::time::Duration = std::time::Duration::from_secs(600);

pub(crate) const WEBHOOK_KEYS: &[&str] = &["secret_env", "require_delivery_id", "dedupe"];
/// Keys of a drift rule.
pub(crate) const DRIFT_KEYS: &[&str] = &["metric", "above", "cooldown"];
/// Keys of `concurrency`.
pub(crate) const CONCURRENCY_KEYS: &[&str] = &["max_runs", "on_conflict"];
/// Keys of a param given as a mapping.
pub(crate) const PARAM_KEYS: &[&str] = &["default", "description"];
/// Keys of `defaults`.
pub(crate) const DEFAULTS_KEYS: &[&str] =
    &["image", "executor", "pull", "retry", "timeout", "resources"];
/// Keys every step may have.
pub(crate) const COMMON_STEP_KEYS: &[&str] = &["needs", "if", "description"];
/// The keys that decide a step's kind.
pub(crate) const KIND_KEYS: &[&str] = &["run", "command", "gate", "approval", "register"];
/// Keys only container steps may have.
pub(crate) const CONTAINER_KEYS: &[&str] = &[
    "image",
    "executor",
    "pull",
    "resources",
    "env",
    "secrets",
    "artifacts",
    "retry",
    "timeout",
    "matrix",
    "max_parallel",
];
/// Keys of `resources`.
pub(crate) const RESOURCES_KEYS: &[&str] = &["gpus", "cpus", "memory"];
/// Keys of `retry`.
pub(crate) const RETRY_KEYS: &[&str] = &["limit", "delay", "backoff", "max_delay"];
/// Keys of `approval`.
pub(crate) const APPROVAL_KEYS: &[&str] = &["timeout"];
/// Keys of `register`.
pub(crate) const REGISTER_KEYS: &[&str] = &["model", "artifact", "metrics_from", "alias"];

/// Values of the enumerated keys.
pub(crate) const EXECUTORS: &[&str] = &["docker", "process"];
pub(crate) const PULLS: &[&str] = &["if-not-present", "always", "never"];
pub(crate) const CATCHUPS: &[&str] = &["none", "latest", "all"];
pub(crate) const ON_CONFLICTS: &[&str] = &["queue", "skip", "cancel-running"];
pub(crate) const BACKOFFS: &[&str] = &["constant", "exponential"];

/// What the DAG checks need of a step, recorded even when the step itself
/// has errors, so that one bad step does not hide problems in the graph.
#[derive(Debug, Clone)]
pub(crate) struct Skeleton {
    pub(crate) id: Spanned<String>,
    pub(crate) needs: Vec<Spanned<String>>,
    pub(crate) matrix_keys: Vec<String>,
    pub(crate) is_matrix: bool,
    pub(crate) metrics_from: Option<Spanned<String>>,
    pub(crate) is_register: bool,
}

/// Where an expression appears, which decides the names it may read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Site {
    /// `if:` of a step.
    If,
    /// An entry of `gate:`.
    Gate,
    /// `run:` (shell text).
    Run,
    /// An entry of `command:`.
    Command,
    /// `image:` of a step or of `defaults`.
    Image,
    /// A value of a step's `env:`.
    StepEnv,
    /// A value of the pipeline's `env:`.
    PipelineEnv,
    /// A field of `model_card:`, rendered when a register step registers.
    ModelCard,
}

impl Site {
    pub(crate) fn describe(self) -> &'static str {
        match self {
            Site::If => "if",
            Site::Gate => "gate",
            Site::Run => "run",
            Site::Command => "command",
            Site::Image => "image",
            Site::StepEnv | Site::PipelineEnv => "env",
            Site::ModelCard => "model_card",
        }
    }
}

/// One compiled expression with where it was written, for `check.rs`.
#[derive(Debug, Clone)]
pub(crate) struct ExprSite {
    /// Index into the skeletons, or `None` outside any step.
    pub(crate) step: Option<usize>,
    pub(crate) site: Site,
    pub(crate) expr: Expr,
    /// The string node the expression was written in.
    pub(crate) node: Node,
    /// Character offset of the expression within the node's value.
    pub(crate) offset: usize,
}

/// The result of lowering: a pipeline when every part could be read, and
/// what the whole-pipeline checks need in any case.
pub(crate) struct Lowered {
    pub(crate) pipeline: Option<Pipeline>,
    pub(crate) skeletons: Vec<Skeleton>,
    pub(crate) params: Vec<String>,
    pub(crate) exprs: Vec<ExprSite>,
}

/// Lowers the document `root`, appending to `diags`.
pub(crate) fn lower(root: &Node, diags: &mut Vec<Diagnostic>) -> Lowered {
    let mut cx = Lowerer {
        diags,
        skeletons: Vec::new(),
        exprs: Vec::new(),
        step: None,
        compiler: Compiler::new(),
    };
    let pipeline = cx.pipeline(root);
    let params = match &pipeline {
        Some(p) => p.params.iter().map(|p| p.name.value.clone()).collect(),
        None => cx.param_names(root),
    };
    Lowered {
        pipeline,
        skeletons: cx.skeletons,
        params,
        exprs: cx.exprs,
    }
}

struct Lowerer<'d> {
    diags: &'d mut Vec<Diagnostic>,
    skeletons: Vec<Skeleton>,
    exprs: Vec<ExprSite>,
    /// The skeleton index of the step being lowered.
    step: Option<usize>,
    compiler: Compiler,
}

/// The entries of a mapping after unknown and duplicate keys were reported.
struct Fields<'n> {
    pos: Pos,
    entries: Vec<(&'n str, &'n Node, &'n Node)>,
}

impl<'n> Fields<'n> {
    fn get(&self, key: &str) -> Option<&'n Node> {
        self.entries.iter().find(|e| e.0 == key).map(|e| e.2)
    }

    fn key_pos(&self, key: &str) -> Option<Pos> {
        self.entries.iter().find(|e| e.0 == key).map(|e| e.1.pos)
    }
}

/// The `defaults:` block, applied to every container step.
struct Defaults {
    /// Whether every key of the block was read without error.
    clean: bool,
    /// Whether `image` was written, even if it had errors.
    has_image: bool,
    /// Whether `executor` was written, even if it had errors.
    has_executor: bool,
    image: Option<Spanned<Template>>,
    executor: Option<Executor>,
    pull: Option<Pull>,
    retry: Option<Retry>,
    timeout: Option<Duration>,
    resources: Option<Resources>,
}

impl Default for Defaults {
    fn default() -> Defaults {
        Defaults {
            clean: true,
            has_image: false,
            has_executor: false,
            image: None,
            executor: None,
            pull: None,
            retry: None,
            timeout: None,
            resources: None,
        }
    }
}

/// The most step instances (matrix combinations, one per step without a
/// matrix) a pipeline may expand to: every run holds them all.
pub(crate) const MAX_INSTANCES: u64 = 10_000;

/// How many combinations `axes` make, saturating.
fn instances(axes: &[MatrixAxis]) -> u64 {
    (axes.iter()).fold(1u64, |product, axis| {
        product.saturating_mul(axis.values.len() as u64)
    })
}

impl Lowerer<'_> {
    fn error(&mut self, pos: Pos, code: Code, message: impl Into<String>) {
        self.diags.push(Diagnostic::error(pos, code, message));
    }

    fn error_count(&self) -> usize {
        self.diags.iter().filter(|d| d.is_error()).count()
    }

    fn wrong_type(&mut self, node: &Node, expected: &str, what: &str) {
        let message = format!("expected {expected} for {what}, found {}", node.type_name());
        self.error(node.pos, Code::WrongType, message);
    }

    /// The entries of mapping `node`, reporting unknown keys (with the
    /// nearest known one) and duplicates (keeping the first).
    fn fields<'n>(&mut self, node: &'n Node, what: &str, allowed: &[&str]) -> Option<Fields<'n>> {
        let entries = self.mapping(node, what)?;
        let mut fields = Fields {
            pos: node.pos,
            entries: Vec::new(),
        };
        for (key, text, value) in entries {
            if fields.entries.iter().any(|e| e.0 == text) {
                self.duplicate(&fields.entries, key, text, what);
            } else if allowed.contains(&text) {
                fields.entries.push((text, key, value));
            } else if allowed == PIPELINE_KEYS && text.starts_with("x-") {
                // Extension keys hold YAML anchors for reuse, as in Compose files.
            } else {
                let hint = hint_or_expected(text, allowed);
                self.error(
                    key.pos,
                    Code::UnknownKey,
                    format!("unknown key '{text}' in {what}{hint}"),
                );
            }
        }
        Some(fields)
    }

    fn duplicate(&mut self, seen: &[(&str, &Node, &Node)], key: &Node, text: &str, what: &str) {
        let first = seen
            .iter()
            .find(|e| e.0 == text)
            .map_or(key.pos, |e| e.1.pos);
        self.error(
            key.pos,
            Code::DuplicateKey,
            format!(
                "duplicate key '{text}' in {what} (first written at line {})",
                first.line
            ),
        );
    }

    /// The entries of a mapping whose keys are names (steps, params, env),
    /// reporting duplicates and keeping the first.
    fn named_entries<'n>(
        &mut self,
        node: &'n Node,
        what: &str,
    ) -> Vec<(&'n str, &'n Node, &'n Node)> {
        let Some(entries) = self.mapping(node, what) else {
            return Vec::new();
        };
        let mut kept: Vec<(&str, &Node, &Node)> = Vec::new();
        let mut seen: std::collections::HashSet<&str> = std::collections::HashSet::new();
        for (key, text, value) in entries {
            if seen.insert(text) {
                kept.push((text, key, value));
            } else {
                self.duplicate(&kept, key, text, what);
            }
        }
        kept
    }

    fn mapping<'n>(
        &mut self,
        node: &'n Node,
        what: &str,
    ) -> Option<Vec<(&'n Node, &'n str, &'n Node)>> {
        let Value::Map(entries) = &node.value else {
            self.wrong_type(node, "a mapping", what);
            return None;
        };
        let mut out = Vec::new();
        for (key, value) in entries {
            match &key.value {
                Value::Str(text) => out.push((key, text.as_str(), value)),
                _ => self.error(
                    key.pos,
                    Code::WrongType,
                    format!("expected a string key in {what}, found {}", key.type_name()),
                ),
            }
        }
        Some(out)
    }

    fn required<'n>(&mut self, fields: &Fields<'n>, key: &str, what: &str) -> Option<&'n Node> {
        let node = fields.get(key);
        if node.is_none() {
            self.error(
                fields.pos,
                Code::MissingKey,
                format!("missing required key '{key}' in {what}"),
            );
        }
        node
    }

    fn string(&mut self, node: &Node, what: &str) -> Option<Spanned<String>> {
        match node.scalar_text() {
            Some(text) => Some(Spanned::new(text, node.pos)),
            None => {
                self.wrong_type(node, "a string", what);
                None
            }
        }
    }

    fn non_empty_string(&mut self, node: &Node, what: &str) -> Option<Spanned<String>> {
        let text = self.string(node, what)?;
        if text.value.trim().is_empty() {
            self.error(node.pos, Code::InvalidValue, format!("{what} is empty"));
            return None;
        }
        Some(text)
    }

    fn boolean(&mut self, node: &Node, what: &str) -> Option<bool> {
        match node.value {
            Value::Bool(b) => Some(b),
            _ => {
                self.wrong_type(node, "true or false", what);
                None
            }
        }
    }

    /// A whole number of at least `min` (0 or 1) that fits a `u32`.
    fn integer(&mut self, node: &Node, what: &str, min: u32) -> Option<u32> {
        let expected = if min == 0 {
            "an integer"
        } else {
            "a positive integer"
        };
        match node.value {
            Value::Int(n) if n >= i128::from(min) && n <= i128::from(u32::MAX) => Some(n as u32),
            Value::Int(n) => {
                let message = format!("{what} must be at least {min}, found {n}");
                self.error(node.pos, Code::InvalidValue, message);
                None
            }
            _ => {
                self.wrong_type(node, expected, what);
                None
            }
        }
    }

    fn number(&mut self, node: &Node, what: &str) -> Option<f64> {
        match node.value {
            Value::Int(n) => Some(n as f64),
            Value::Float(f) if f.is_finite() => Some(f),
            _ => {
                self.wrong_type(node, "a number", what);
                None
            }
        }
    }

    fn choice<'a>(&mut self, node: &Node, what: &str, options: &[&'a str]) -> Option<&'a str> {
        let text = self.string(node, what)?.value;
        match options.iter().find(|o| **o == text) {
            Some(found) => Some(found),
            None => {
                let hint = did_you_mean(&text, options.iter().copied())
                    .replace(" (did you mean", "; did you mean")
                    .replace("?)", "?");
                let message = format!(
                    "unknown {what} '{text}' (expected {}{hint})",
                    one_of(options)
                );
                self.error(node.pos, Code::InvalidValue, message);
                None
            }
        }
    }

    fn duration(&mut self, node: &Node, what: &str) -> Option<Duration> {
        let text = self.string(node, what)?.value;
        match Duration::parse(&text) {
            Ok(d) => Some(d),
            Err(reason) => {
                let message = format!("invalid duration '{text}' for {what}: {reason}");
                self.error(node.pos, Code::InvalidDuration, message);
                None
            }
        }
    }

    fn positive_duration(&mut self, node: &Node, what: &str) -> Option<Duration> {
        let duration = self.duration(node, what)?;
        if duration.get().is_zero() {
            self.error(
                node.pos,
                Code::InvalidDuration,
                format!("{what} must be longer than 0s"),
            );
            return None;
        }
        Some(duration)
    }

    fn name(&mut self, node: &Node, what: &str, rule: NameRule) -> Option<Spanned<String>> {
        let name = self.string(node, what)?;
        match rule.check(what, &name.value) {
            Ok(()) => Some(name),
            Err(e) => {
                self.error(node.pos, Code::InvalidName, e.to_string());
                None
            }
        }
    }

    fn syntax_errors(&mut self, node: &Node, base: usize, what: &str, errors: Vec<SyntaxError>) {
        for e in errors {
            let pos = node.locate(base + e.offset);
            self.error(
                pos,
                Code::ExprSyntax,
                format!("invalid expression in {what}: {}", e.message),
            );
        }
    }

    /// A string holding `${{ }}` templates.
    fn template(&mut self, node: &Node, what: &str, site: Site) -> Option<Spanned<Template>> {
        let text = match &node.value {
            Value::Str(s) => s.clone(),
            _ => self.string(node, what)?.value,
        };
        match Template::parse_with(&text, &mut self.compiler) {
            Ok(template) => {
                for placeholder in template.placeholders() {
                    self.exprs.push(ExprSite {
                        step: self.step,
                        site,
                        expr: placeholder.expr.clone(),
                        node: node.clone(),
                        offset: placeholder.expr_offset,
                    });
                }
                Some(Spanned::new(template, node.pos))
            }
            Err(errors) => {
                self.syntax_errors(node, 0, what, errors);
                None
            }
        }
    }

    /// A bare CEL expression (`if:`, `gate:`); `${{ … }}` around it is accepted.
    fn expression(&mut self, node: &Node, what: &str, site: Site) -> Option<Spanned<Expr>> {
        let text = self.string(node, what)?.value;
        let trimmed = text.trim_end();
        let (source, base) = match trimmed.trim_start().strip_prefix("${{") {
            Some(inner) if inner.ends_with("}}") => {
                let start = text.chars().count() - trimmed.trim_start().chars().count() + 3;
                let body = &inner[..inner.len() - 2];
                let leading = body.chars().take_while(|c| c.is_whitespace()).count();
                (body.trim().to_owned(), start + leading)
            }
            _ => {
                let leading = text.chars().take_while(|c| c.is_whitespace()).count();
                (text.trim().to_owned(), leading)
            }
        };
        match self.compiler.compile(&source) {
            Ok(expr) => {
                self.exprs.push(ExprSite {
                    step: self.step,
                    site,
                    expr: expr.clone(),
                    node: node.clone(),
                    offset: base,
                });
                Some(Spanned::new(expr, node.pos))
            }
            Err(errors) => {
                self.syntax_errors(node, base, what, errors);
                None
            }
        }
    }

    fn list<'n>(&mut self, node: &'n Node, what: &str) -> Option<&'n [Node]> {
        match &node.value {
            Value::Seq(items) => Some(items),
            _ => {
                self.wrong_type(node, "a list", what);
                None
            }
        }
    }

    /// Runs `read` and reports whether it added no error.
    fn clean<T>(&mut self, read: impl FnOnce(&mut Self) -> T) -> (T, bool) {
        let before = self.error_count();
        let value = read(self);
        let clean = self.error_count() == before;
        (value, clean)
    }

    // ----- the format, top-down -----

    fn pipeline(&mut self, root: &Node) -> Option<Pipeline> {
        if root.value == Value::Null {
            self.error(
                root.pos,
                Code::MissingKey,
                "the file is empty: a pipeline needs at least 'name' and 'steps'",
            );
            return None;
        }
        let fields = self.fields(root, "the pipeline", PIPELINE_KEYS)?;
        let name = self
            .required(&fields, "name", "the pipeline")
            .and_then(|n| self.name(n, "pipeline name", NameRule::Pipeline));
        let description = fields
            .get("description")
            .and_then(|n| self.string(n, "description"))
            .map(|s| s.value);
        let on = match fields.get("on") {
            Some(node) => self.triggers(node),
            None => Some(Triggers {
                manual: true,
                schedule: Vec::new(),
                webhook: None,
                drift: Vec::new(),
            }),
        };
        let concurrency = match fields.get("concurrency") {
            Some(node) => self.concurrency(node),
            None => Some(Concurrency {
                max_runs: None,
                on_conflict: OnConflict::Queue,
            }),
        };
        let params = match fields.get("params") {
            Some(node) => self.params(node),
            None => Some(Vec::new()),
        };
        let env = match fields.get("env") {
            Some(node) => self.env(node, "the pipeline's env", Site::PipelineEnv),
            None => Some(Vec::new()),
        };
        let defaults = match fields.get("defaults") {
            Some(node) => self.defaults(node),
            None => Some(Defaults::default()),
        };
        let fallback = Defaults {
            clean: false,
            ..Defaults::default()
        };
        let steps = self.steps(&fields, Some(defaults.as_ref().unwrap_or(&fallback)));
        let model_card = match fields.get("model_card") {
            Some(node) => self.model_card(node).map(Some),
            None => Some(None),
        };
        let mlflow = match fields.get("mlflow") {
            Some(node) => self.mlflow(node).map(Some),
            None => Some(None),
        };
        let registers = self.skeletons.iter().any(|s| s.is_register);
        if let (Some(pos), false) = (fields.key_pos("model_card"), registers) {
            let message = "model_card has no effect: no step of this pipeline registers a model";
            self.diags
                .push(Diagnostic::warning(pos, Code::IgnoredKey, message));
        }
        Some(Pipeline {
            name: name?,
            description,
            on: on?,
            concurrency: concurrency?,
            params: params?,
            env: env?,
            steps: steps?,
            // Filled by `validate` once the whole-pipeline checks ran.
            dag: crate::Dag::default(),
            reads: crate::pipeline::Reads::default(),
            model_card: model_card?,
            mlflow: mlflow?,
        })
    }

    fn mlflow(&mut self, node: &Node) -> Option<Mlflow> {
        let fields = self.fields(node, "mlflow", MLFLOW_KEYS)?;
        let (mlflow, clean) = self.clean(|cx| {
            let tracking_uri = fields
                .get("tracking_uri")
                .and_then(|n| cx.non_empty_string(n, "mlflow.tracking_uri"));
            if let Some(uri) = &tracking_uri
                && !(uri.value.starts_with("http://") || uri.value.starts_with("https://"))
            {
                let message = format!(
                    "mlflow.tracking_uri '{}' is not an MLflow server's address: write http://HOST:PORT or https://…",
                    uri.value
                );
                cx.error(uri.pos, Code::InvalidValue, message);
            }
            let experiment = fields
                .get("experiment")
                .and_then(|n| cx.non_empty_string(n, "mlflow.experiment"));
            Mlflow {
                tracking_uri,
                experiment,
            }
        });
        clean.then_some(mlflow)
    }

    fn model_card(&mut self, node: &Node) -> Option<ModelCard> {
        let fields = self.fields(node, "model_card", MODEL_CARD_KEYS)?;
        let (card, clean) = self.clean(|cx| {
            let mut card = Vec::new();
            for key in MODEL_CARD_KEYS {
                let (Some(value), Some(pos)) = (fields.get(key), fields.key_pos(key)) else {
                    continue;
                };
                if let Some(text) =
                    cx.template(value, &format!("model_card.{key}"), Site::ModelCard)
                {
                    card.push((Spanned::new((*key).to_owned(), pos), text));
                }
            }
            card
        });
        clean.then_some(ModelCard { fields: card })
    }

    fn param_names(&mut self, root: &Node) -> Vec<String> {
        let Value::Map(entries) = &root.value else {
            return Vec::new();
        };
        entries
            .iter()
            .filter(|(k, _)| k.value == Value::Str("params".into()))
            .filter_map(|(_, v)| match &v.value {
                Value::Map(params) => Some(params.iter().filter_map(|(k, _)| k.scalar_text())),
                _ => None,
            })
            .flatten()
            .collect()
    }

    fn triggers(&mut self, node: &Node) -> Option<Triggers> {
        let fields = self.fields(node, "on", ON_KEYS)?;
        let (triggers, clean) = self.clean(|cx| {
            let manual = fields
                .get("manual")
                .map_or(Some(true), |n| cx.boolean(n, "on.manual"));
            let mut schedule = Vec::new();
            if let Some(list) = fields
                .get("schedule")
                .and_then(|n| cx.list(n, "on.schedule"))
            {
                schedule.extend(list.iter().filter_map(|item| cx.schedule(item)));
            }
            let webhook = fields.get("webhook").and_then(|n| {
                let webhook = cx.fields(n, "on.webhook", WEBHOOK_KEYS)?;
                let secret_env = cx.required(&webhook, "secret_env", "on.webhook")?;
                let secret_env = cx.name(secret_env, "on.webhook.secret_env", NameRule::EnvName);
                let require_delivery_id =
                    webhook.get("require_delivery_id").map_or(Some(true), |n| {
                        cx.boolean(n, "on.webhook.require_delivery_id")
                    });
                let dedupe = webhook.get("dedupe").map_or(Some(DEFAULT_DEDUPE), |n| {
                    cx.duration(n, "on.webhook.dedupe").map(|d| d.get())
                });
                Some(Webhook {
                    secret_env: secret_env?,
                    require_delivery_id: require_delivery_id?,
                    dedupe: dedupe?,
                })
            });
            let mut drift = Vec::new();
            if let Some(list) = fields.get("drift").and_then(|n| cx.list(n, "on.drift")) {
                drift.extend(list.iter().filter_map(|item| cx.drift_rule(item)));
            }
            Triggers {
                manual: manual.unwrap_or(true),
                schedule,
                webhook,
                drift,
            }
        });
        clean.then_some(triggers)
    }

    fn schedule(&mut self, node: &Node) -> Option<Schedule> {
        let what = "a schedule entry";
        let fields = self.fields(node, what, SCHEDULE_KEYS)?;
        let timezone = match fields.get("timezone") {
            Some(n) => {
                let text = self.string(n, "timezone")?;
                match schedule::timezone(&text.value) {
                    Ok(tz) => Some(tz),
                    Err(e) => {
                        self.error(n.pos, Code::UnknownTimezone, e.to_string());
                        None
                    }
                }
            }
            None => Some(chrono_tz::Tz::UTC),
        };
        let catchup = fields
            .get("catchup")
            .map_or(Some("none"), |n| self.choice(n, "catchup", CATCHUPS));
        let cron = self.required(&fields, "cron", what).and_then(|n| {
            let text = self.string(n, "cron")?;
            match schedule::check_cron(&text.value) {
                Ok(parsed) => Some((text, parsed)),
                Err(e) => {
                    self.error(n.pos, Code::InvalidCron, e.to_string());
                    None
                }
            }
        });
        let (cron, parsed) = cron?;
        Some(Schedule {
            cron,
            parsed,
            timezone: timezone?,
            catchup: match catchup? {
                "latest" => Catchup::Latest,
                "all" => Catchup::All,
                _ => Catchup::None,
            },
        })
    }

    fn drift_rule(&mut self, node: &Node) -> Option<DriftRule> {
        let what = "a drift rule";
        let fields = self.fields(node, what, DRIFT_KEYS)?;
        let metric = self
            .required(&fields, "metric", what)
            .and_then(|n| self.name(n, "drift metric", NameRule::Identifier));
        let above = self
            .required(&fields, "above", what)
            .and_then(|n| self.number(n, "above"));
        let cooldown = match fields.get("cooldown") {
            Some(n) => Some(Some(self.duration(n, "cooldown")?)),
            None => Some(None),
        };
        Some(DriftRule {
            metric: metric?,
            above: above?,
            cooldown: cooldown?,
        })
    }

    fn concurrency(&mut self, node: &Node) -> Option<Concurrency> {
        let fields = self.fields(node, "concurrency", CONCURRENCY_KEYS)?;
        let max_runs = match fields.get("max_runs") {
            Some(n) => Some(Some(self.integer(n, "concurrency.max_runs", 1)?)),
            None => Some(None),
        };
        let on_conflict = fields.get("on_conflict").map_or(Some("queue"), |n| {
            self.choice(n, "on_conflict", ON_CONFLICTS)
        });
        Some(Concurrency {
            max_runs: max_runs?,
            on_conflict: match on_conflict? {
                "skip" => OnConflict::Skip,
                "cancel-running" => OnConflict::CancelRunning,
                _ => OnConflict::Queue,
            },
        })
    }

    fn params(&mut self, node: &Node) -> Option<Vec<Param>> {
        let entries = self.named_entries(node, "params");
        let (params, clean) = self.clean(|cx| {
            let mut params = Vec::new();
            for (text, key, value) in entries {
                let name = cx.name(key, "param name", NameRule::Identifier);
                let param = match &value.value {
                    Value::Map(_) => {
                        let what = format!("param '{text}'");
                        cx.fields(value, &what, PARAM_KEYS).map(|fields| {
                            let default = fields
                                .get("default")
                                .and_then(|n| cx.string(n, "default"))
                                .map(|s| s.value);
                            let description = fields
                                .get("description")
                                .and_then(|n| cx.string(n, "description"))
                                .map(|s| s.value);
                            (default, description)
                        })
                    }
                    Value::Null => Some((None, None)),
                    Value::Seq(_) => {
                        cx.wrong_type(
                            value,
                            "a default value or a mapping",
                            &format!("param '{text}'"),
                        );
                        None
                    }
                    _ => Some((value.scalar_text(), None)),
                };
                if let (Some(name), Some((default, description))) = (name, param) {
                    params.push(Param {
                        name,
                        default,
                        description,
                    });
                }
            }
            params
        });
        clean.then_some(params)
    }

    fn env(&mut self, node: &Node, what: &str, site: Site) -> Option<Vec<EnvVar>> {
        let entries = self.named_entries(node, what);
        let (vars, clean) = self.clean(|cx| {
            let mut vars = Vec::new();
            for (text, key, value) in entries {
                let name = cx.name(key, "env name", NameRule::EnvName);
                if text.starts_with("WEIR_") {
                    let message = format!(
                        "env name '{text}' is reserved: weir sets the WEIR_* variables itself"
                    );
                    cx.error(key.pos, Code::InvalidName, message);
                }
                let value = cx.template(value, &format!("env '{text}'"), site);
                if let (Some(name), Some(value)) = (name, value) {
                    vars.push(EnvVar {
                        name,
                        value: value.value,
                    });
                }
            }
            vars
        });
        clean.then_some(vars)
    }

    fn defaults(&mut self, node: &Node) -> Option<Defaults> {
        let fields = self.fields(node, "defaults", DEFAULTS_KEYS)?;
        let (defaults, clean) = self.clean(|cx| Defaults {
            clean: true,
            has_image: fields.get("image").is_some(),
            has_executor: fields.get("executor").is_some(),
            image: fields
                .get("image")
                .and_then(|n| cx.template(n, "image", Site::Image)),
            executor: fields.get("executor").and_then(|n| cx.executor(n)),
            pull: fields.get("pull").and_then(|n| cx.pull(n)),
            retry: fields.get("retry").and_then(|n| cx.retry(n)),
            timeout: fields
                .get("timeout")
                .and_then(|n| cx.positive_duration(n, "timeout")),
            resources: fields.get("resources").and_then(|n| cx.resources(n)),
        });
        Some(Defaults { clean, ..defaults })
    }

    fn executor(&mut self, node: &Node) -> Option<Executor> {
        match self.choice(node, "executor", EXECUTORS)? {
            "process" => Some(Executor::Process),
            _ => Some(Executor::Docker),
        }
    }

    fn pull(&mut self, node: &Node) -> Option<Pull> {
        match self.choice(node, "pull policy", PULLS)? {
            "always" => Some(Pull::Always),
            "never" => Some(Pull::Never),
            _ => Some(Pull::IfNotPresent),
        }
    }

    fn retry(&mut self, node: &Node) -> Option<Retry> {
        if let Value::Int(_) = node.value {
            let limit = self.integer(node, "retry", 0)?;
            return Some(Retry {
                limit,
                ..Retry::default()
            });
        }
        let fields = self.fields(node, "retry", RETRY_KEYS)?;
        let (retry, clean) = self.clean(|cx| {
            let defaults = Retry::default();
            Retry {
                limit: fields
                    .get("limit")
                    .and_then(|n| cx.integer(n, "retry.limit", 0))
                    .unwrap_or(defaults.limit),
                delay: fields
                    .get("delay")
                    .and_then(|n| cx.duration(n, "retry.delay"))
                    .unwrap_or(defaults.delay),
                backoff: match fields
                    .get("backoff")
                    .and_then(|n| cx.choice(n, "backoff", BACKOFFS))
                {
                    Some("constant") => Backoff::Constant,
                    _ => Backoff::Exponential,
                },
                max_delay: fields
                    .get("max_delay")
                    .and_then(|n| cx.duration(n, "retry.max_delay")),
            }
        });
        if let (Some(max), true) = (retry.max_delay, clean)
            && max < retry.delay
        {
            let pos = fields.key_pos("max_delay").unwrap_or(node.pos);
            self.error(
                pos,
                Code::InvalidDuration,
                format!(
                    "retry.max_delay ({max}) is shorter than retry.delay ({})",
                    retry.delay
                ),
            );
            return None;
        }
        clean.then_some(retry)
    }

    fn resources(&mut self, node: &Node) -> Option<Resources> {
        let fields = self.fields(node, "resources", RESOURCES_KEYS)?;
        let (resources, clean) = self.clean(|cx| Resources {
            gpus: fields.get("gpus").and_then(|n| cx.gpus(n)),
            cpus: fields.get("cpus").and_then(|n| cx.cpus(n)),
            memory: fields.get("memory").and_then(|n| cx.memory(n)),
        });
        clean.then_some(resources)
    }

    fn gpus(&mut self, node: &Node) -> Option<Gpus> {
        let expected = "expected a positive count, 'all' or a list of device ids";
        match &node.value {
            Value::Int(n) if *n >= 1 && *n <= i128::from(u32::MAX) => Some(Gpus::Count(*n as u32)),
            Value::Str(s) if s == "all" => Some(Gpus::All),
            Value::Seq(items) if items.is_empty() => {
                let message = format!("invalid gpus: the list of device ids is empty; {expected}");
                self.error(node.pos, Code::InvalidGpus, message);
                None
            }
            Value::Seq(items) => {
                let mut ids: Vec<String> = Vec::new();
                for item in items {
                    match (&item.value, item.scalar_text()) {
                        (Value::Int(n), Some(text)) if *n >= 0 => ids.push(text),
                        (Value::Str(s), Some(text)) if !s.trim().is_empty() && !s.contains(',') => {
                            ids.push(text)
                        }
                        _ => {
                            let shown = item
                                .scalar_text()
                                .unwrap_or_else(|| item.type_name().to_owned());
                            self.error(
                                item.pos,
                                Code::InvalidGpus,
                                format!("invalid gpu id '{shown}': use a device index (0, 1, …) or a UUID (GPU-…)"),
                            );
                            return None;
                        }
                    }
                }
                if let Some(dup) = ids
                    .iter()
                    .enumerate()
                    .find(|(i, id)| ids[..*i].contains(id))
                {
                    let message = format!("gpu id '{}' is listed twice", dup.1);
                    self.error(node.pos, Code::InvalidGpus, message);
                    return None;
                }
                Some(Gpus::Ids(ids))
            }
            _ => {
                let shown = node
                    .scalar_text()
                    .unwrap_or_else(|| node.type_name().to_owned());
                self.error(
                    node.pos,
                    Code::InvalidGpus,
                    format!("invalid gpus '{shown}': {expected}"),
                );
                None
            }
        }
    }

    fn cpus(&mut self, node: &Node) -> Option<f64> {
        let value = match &node.value {
            Value::Str(s) => s.trim().parse::<f64>().ok(),
            Value::Int(n) => Some(*n as f64),
            Value::Float(f) => Some(*f),
            _ => None,
        };
        match value {
            Some(cpus) if cpus.is_finite() && cpus > 0.0 => Some(cpus),
            _ => {
                let shown = node
                    .scalar_text()
                    .unwrap_or_else(|| node.type_name().to_owned());
                let message = format!(
                    "invalid cpus '{shown}': expected a positive number of cores, like 2 or 0.5"
                );
                self.error(node.pos, Code::InvalidValue, message);
                None
            }
        }
    }

    fn memory(&mut self, node: &Node) -> Option<Size> {
        let text = self.string(node, "memory")?.value;
        match Size::parse(&text) {
            Ok(size) => Some(size),
            Err(reason) => {
                self.error(
                    node.pos,
                    Code::InvalidSize,
                    format!("invalid size '{text}' for memory: {reason}"),
                );
                None
            }
        }
    }

    fn steps(&mut self, fields: &Fields<'_>, defaults: Option<&Defaults>) -> Option<Vec<Step>> {
        let node = self.required(fields, "steps", "the pipeline")?;
        if let Value::Map(entries) = &node.value
            && entries.is_empty()
        {
            self.error(
                node.pos,
                Code::MissingKey,
                "steps is empty: a pipeline needs at least one step",
            );
            return None;
        }
        let entries = self.named_entries(node, "steps");
        let (steps, clean) = self.clean(|cx| {
            let mut steps = Vec::new();
            for (text, key, value) in entries {
                if let Some(step) = cx.step(text, key, value, defaults) {
                    steps.push(step);
                }
            }
            let each: Vec<u64> = steps.iter().map(|s: &Step| instances(&s.matrix)).collect();
            let total = each.iter().fold(0u64, |sum, n| sum.saturating_add(*n));
            // A step past the limit on its own was refused with its product.
            if total > MAX_INSTANCES && each.iter().all(|n| *n <= MAX_INSTANCES) {
                cx.error(
                    node.pos,
                    Code::InvalidValue,
                    format!(
                        "the steps expand to {total} instances in all: a pipeline may have at most {MAX_INSTANCES}"
                    ),
                );
            }
            steps
        });
        (clean && defaults.is_some_and(|d| d.clean)).then_some(steps)
    }

    fn step(
        &mut self,
        text: &str,
        key: &Node,
        node: &Node,
        defaults: Option<&Defaults>,
    ) -> Option<Step> {
        let what = format!("step '{text}'");
        let mut all_keys: Vec<&str> = COMMON_STEP_KEYS.to_vec();
        all_keys.extend(KIND_KEYS);
        all_keys.extend(CONTAINER_KEYS);
        let id = self.name(key, "step id", NameRule::Step);
        let fields = self.fields(node, &what, &all_keys);
        self.step = Some(self.skeletons.len());
        self.skeletons.push(Skeleton {
            id: Spanned::new(text.to_owned(), key.pos),
            needs: Vec::new(),
            matrix_keys: Vec::new(),
            is_matrix: false,
            metrics_from: None,
            is_register: false,
        });
        let step = fields.and_then(|fields| self.step_body(text, key, &fields, defaults));
        self.step = None;
        Some(Step { id: id?, ..step? })
    }

    fn step_body(
        &mut self,
        text: &str,
        key: &Node,
        fields: &Fields<'_>,
        defaults: Option<&Defaults>,
    ) -> Option<Step> {
        let what = format!("step '{text}'");
        let (step, clean) = self.clean(|cx| {
            let needs = fields.get("needs").map(|n| cx.needs(n)).unwrap_or_default();
            let description = fields
                .get("description")
                .and_then(|n| cx.string(n, "description"))
                .map(|s| s.value);
            let condition = fields
                .get("if")
                .and_then(|n| cx.expression(n, "if", Site::If));
            let matrix = fields
                .get("matrix")
                .map(|n| cx.matrix(n))
                .unwrap_or_default();
            let max_parallel = fields
                .get("max_parallel")
                .and_then(|n| cx.integer(n, "max_parallel", 1));
            if let Some(index) = cx.step {
                let skeleton = &mut cx.skeletons[index];
                skeleton.needs = needs.clone();
                skeleton.matrix_keys = matrix
                    .iter()
                    .map(|a: &MatrixAxis| a.key.value.clone())
                    .collect();
                skeleton.is_matrix = fields.get("matrix").is_some();
            }
            let kind = cx.kind(text, key, fields, defaults);
            if max_parallel.is_some() && matrix.is_empty() {
                let pos = fields.key_pos("max_parallel").unwrap_or(key.pos);
                cx.error(
                    pos,
                    Code::KeyNotForKind,
                    format!("max_parallel in {what} needs a matrix to bound"),
                );
            }
            Some(Step {
                id: Spanned::new(text.to_owned(), key.pos),
                description,
                needs,
                condition,
                matrix,
                max_parallel,
                kind: kind?,
            })
        });
        if clean { step } else { None }
    }

    fn needs(&mut self, node: &Node) -> Vec<Spanned<String>> {
        let items: Vec<&Node> = match &node.value {
            Value::Seq(items) => items.iter().collect(),
            Value::Str(_) => vec![node],
            _ => {
                self.wrong_type(node, "a list of step ids", "needs");
                return Vec::new();
            }
        };
        let mut needs: Vec<Spanned<String>> = Vec::new();
        for item in items {
            let Some(need) = self.string(item, "a needs entry") else {
                continue;
            };
            if needs.iter().any(|n| n.value == need.value) {
                let message = format!("'{}' is listed twice in needs", need.value);
                self.error(item.pos, Code::DuplicateKey, message);
                continue;
            }
            needs.push(need);
        }
        needs
    }

    fn matrix(&mut self, node: &Node) -> Vec<MatrixAxis> {
        let entries = self.named_entries(node, "matrix");
        if entries.is_empty() && matches!(node.value, Value::Map(_)) {
            self.error(
                node.pos,
                Code::InvalidValue,
                "matrix is empty: give it at least one key with a list of values",
            );
        }
        let mut axes = Vec::new();
        for (text, key, value) in entries {
            let name = self.name(key, "matrix key", NameRule::Identifier);
            let what = format!("matrix.{text}");
            let Some(items) = self.list(value, &what) else {
                continue;
            };
            if items.is_empty() {
                self.error(
                    value.pos,
                    Code::InvalidValue,
                    format!("{what} has no values"),
                );
                continue;
            }
            let mut values: Vec<String> = Vec::new();
            for item in items {
                match item.scalar_text() {
                    Some(v) if values.contains(&v) => {
                        self.error(
                            item.pos,
                            Code::InvalidValue,
                            format!("value '{v}' is listed twice in {what}"),
                        );
                    }
                    Some(v) => values.push(v),
                    None => self.wrong_type(item, "a scalar", &what),
                }
            }
            if let Some(key) = name {
                axes.push(MatrixAxis { key, values });
            }
        }
        let instances = instances(&axes);
        if instances > MAX_INSTANCES {
            let sizes: Vec<String> = axes.iter().map(|a| a.values.len().to_string()).collect();
            self.error(
                node.pos,
                Code::InvalidValue,
                format!(
                    "matrix expands to {instances} instances ({}): a pipeline may have at most {MAX_INSTANCES}",
                    sizes.join(" × ")
                ),
            );
        }
        axes
    }

    fn kind(
        &mut self,
        text: &str,
        key: &Node,
        fields: &Fields<'_>,
        defaults: Option<&Defaults>,
    ) -> Option<StepKind> {
        let present: Vec<&str> = KIND_KEYS
            .iter()
            .copied()
            .filter(|k| fields.get(k).is_some())
            .collect();
        let kind = match present.as_slice() {
            [] => {
                let message = format!(
                    "step '{text}' has no kind: give it one of {}",
                    one_of(KIND_KEYS)
                );
                self.error(key.pos, Code::StepKind, message);
                return None;
            }
            [kind] => *kind,
            [first, second, ..] => {
                let pos = fields.key_pos(second).unwrap_or(key.pos);
                let message = format!(
                    "step '{text}' has both '{first}' and '{second}': a step is exactly one of {}",
                    one_of(KIND_KEYS)
                );
                self.error(pos, Code::StepKind, message);
                return None;
            }
        };
        let node = fields.get(kind)?;
        if kind != "run" && kind != "command" {
            for extra in CONTAINER_KEYS {
                if let Some(pos) = fields.key_pos(extra) {
                    let message = format!(
                        "'{extra}' does not apply to a {kind} step, only to run and command steps"
                    );
                    self.error(pos, Code::KeyNotForKind, message);
                }
            }
        }
        match kind {
            "gate" => self.gate(node),
            "approval" => self.approval(node),
            "register" => self.register(node),
            _ => self
                .container(kind, node, fields, defaults)
                .map(|c| StepKind::Container(Box::new(c))),
        }
    }

    fn gate(&mut self, node: &Node) -> Option<StepKind> {
        let items = self.list(node, "gate")?;
        if items.is_empty() {
            self.error(
                node.pos,
                Code::InvalidValue,
                "gate has no conditions: list at least one expression",
            );
            return None;
        }
        let (conditions, clean) = self.clean(|cx| {
            items
                .iter()
                .filter_map(|item| cx.expression(item, "gate", Site::Gate))
                .collect::<Vec<_>>()
        });
        clean.then_some(StepKind::Gate(conditions))
    }

    fn approval(&mut self, node: &Node) -> Option<StepKind> {
        if matches!(node.value, Value::Null) {
            return Some(StepKind::Approval(Approval { timeout: None }));
        }
        let fields = self.fields(node, "approval", APPROVAL_KEYS)?;
        let timeout = match fields.get("timeout") {
            Some(n) => Some(self.positive_duration(n, "approval.timeout")?),
            None => None,
        };
        Some(StepKind::Approval(Approval { timeout }))
    }

    fn register(&mut self, node: &Node) -> Option<StepKind> {
        let fields = self.fields(node, "register", REGISTER_KEYS)?;
        let model = self
            .required(&fields, "model", "register")
            .and_then(|n| self.name(n, "model name", NameRule::Pipeline));
        let artifact = self
            .required(&fields, "artifact", "register")
            .and_then(|n| self.artifact(n));
        let metrics_from = match fields.get("metrics_from") {
            Some(n) => Some(Some(self.string(n, "metrics_from")?)),
            None => Some(None),
        };
        let alias = match fields.get("alias") {
            Some(n) => Some(Some(self.name(n, "alias", NameRule::Pipeline)?)),
            None => Some(None),
        };
        if let (Some(index), Some(from)) = (self.step, metrics_from.as_ref()) {
            self.skeletons[index].metrics_from = from.clone();
        }
        if let Some(index) = self.step {
            self.skeletons[index].is_register = true;
        }
        Some(StepKind::Register(Register {
            model: model?,
            artifact: artifact?,
            metrics_from: metrics_from?,
            alias: alias?,
        }))
    }

    fn artifact(&mut self, node: &Node) -> Option<Spanned<String>> {
        let path = self.non_empty_string(node, "artifact")?;
        let escapes = path.value.starts_with('/') || path.value.split('/').any(|part| part == "..");
        if escapes {
            let message = format!(
                "artifact '{}' must be a relative path under $WEIR_WORK, without '..'",
                path.value
            );
            self.error(node.pos, Code::InvalidValue, message);
            return None;
        }
        Some(path)
    }

    fn container(
        &mut self,
        kind: &str,
        node: &Node,
        fields: &Fields<'_>,
        defaults: Option<&Defaults>,
    ) -> Option<Container> {
        let (container, clean) = self.clean(|cx| {
            let action = if kind == "run" {
                cx.run(node).map(Invocation::Run)
            } else {
                cx.command(node).map(Invocation::Command)
            };
            let defaults = defaults?;
            let image = match fields.get("image") {
                Some(n) => cx.template(n, "image", Site::Image),
                None => defaults.image.clone(),
            };
            let executor = match fields.get("executor") {
                Some(n) => cx.executor(n),
                None => Some(defaults.executor.unwrap_or(Executor::Docker)),
            };
            let pull = match fields.get("pull") {
                Some(n) => cx.pull(n),
                None => Some(defaults.pull.unwrap_or(Pull::IfNotPresent)),
            };
            let resources = match fields.get("resources") {
                Some(n) => cx.resources(n),
                None => Some(defaults.resources.clone().unwrap_or_default()),
            };
            let env = match fields.get("env") {
                Some(n) => cx.env(n, "env", Site::StepEnv),
                None => Some(Vec::new()),
            };
            let secrets = fields.get("secrets").map(|n| cx.secrets(n)).unwrap_or_default();
            let artifacts = match fields.get("artifacts").map(|n| cx.list(n, "artifacts")) {
                Some(Some(items)) => items.iter().filter_map(|item| cx.artifact(item)).collect(),
                _ => Vec::new(),
            };
            let retry = match fields.get("retry") {
                Some(n) => cx.retry(n),
                None => Some(defaults.retry.unwrap_or_default()),
            };
            let timeout = match fields.get("timeout") {
                Some(n) => cx.positive_duration(n, "timeout").map(Some),
                None => Some(defaults.timeout),
            };
            // An image or executor that was written but is invalid is
            // reported already; whether an image is missing is then unknown.
            let unknown_executor = fields.get("executor").is_none() && defaults.has_executor && defaults.executor.is_none();
            let image_written = fields.get("image").is_some() || defaults.has_image || unknown_executor;
            if let (None, Some(Executor::Docker), false) = (&image, executor, image_written) {
                let message = format!(
                    "step '{}' has no image: set 'image' on the step or under 'defaults', or use 'executor: process'",
                    cx.current_step_id()
                );
                cx.error(fields.pos, Code::MissingImage, message);
            }
            if let (Some(Executor::Process), Some(pos)) = (executor, fields.key_pos("image")) {
                let message = "image is ignored by the process executor: remove it, or use 'executor: docker'";
                cx.diags.push(Diagnostic::warning(pos, Code::IgnoredKey, message));
            }
            Some(Container {
                action: action?,
                image,
                executor: executor?,
                pull: pull?,
                resources: resources?,
                env: env?,
                secrets,
                artifacts,
                retry: retry?,
                timeout: timeout?,
            })
        });
        if clean { container } else { None }
    }

    fn current_step_id(&self) -> String {
        self.step
            .map(|i| self.skeletons[i].id.value.clone())
            .unwrap_or_default()
    }

    fn run(&mut self, node: &Node) -> Option<Spanned<Template>> {
        let line = self.template(node, "run", Site::Run)?;
        if line.value.source().trim().is_empty() {
            self.error(
                node.pos,
                Code::InvalidValue,
                "run is empty: give it a shell command line",
            );
            return None;
        }
        Some(line)
    }

    fn command(&mut self, node: &Node) -> Option<Vec<Spanned<Template>>> {
        let Value::Seq(items) = &node.value else {
            self.wrong_type(
                node,
                "a list of arguments (use 'run' for a shell line)",
                "command",
            );
            return None;
        };
        if items.is_empty() {
            self.error(
                node.pos,
                Code::InvalidValue,
                "command is empty: give it the program and its arguments",
            );
            return None;
        }
        let (argv, clean) = self.clean(|cx| {
            items
                .iter()
                .filter_map(|item| cx.template(item, "command", Site::Command))
                .collect::<Vec<_>>()
        });
        clean.then_some(argv)
    }

    fn secrets(&mut self, node: &Node) -> Vec<Spanned<String>> {
        let Some(items) = self.list(node, "secrets") else {
            return Vec::new();
        };
        let mut secrets: Vec<Spanned<String>> = Vec::new();
        for item in items {
            if let Some(name) = self.name(item, "secret name", NameRule::EnvName) {
                if secrets.iter().any(|s| s.value == name.value) {
                    self.error(
                        item.pos,
                        Code::DuplicateKey,
                        format!("secret '{}' is listed twice", name.value),
                    );
                } else {
                    secrets.push(name);
                }
            }
        }
        secrets
    }
}
