//! Diagnostics: what is wrong with a pipeline file, where, and what to do.
//!
//! Every check in this crate reports through [`Diagnostic`]; nothing here
//! prints. The stable codes are listed in `docs/errors.md`.

use serde::Serialize;
use std::fmt;

/// A position in a pipeline file, 1-based line and column (in characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize)]
pub struct Pos {
    /// 1-based line.
    pub line: u32,
    /// 1-based column, counted in characters.
    pub column: u32,
}

impl Pos {
    /// The first character of a file.
    pub const START: Pos = Pos { line: 1, column: 1 };
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// How bad a diagnostic is: errors make a file invalid, warnings do not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The file is refused.
    Error,
    /// The file is accepted, but probably not what was meant.
    Warning,
}

/// The stable identifier of a kind of problem, for editors, CI and the docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Code {
    /// The file is not readable YAML.
    YamlSyntax,
    /// A mapping key that the format does not have.
    UnknownKey,
    /// A key written twice in one mapping.
    DuplicateKey,
    /// A required key is absent.
    MissingKey,
    /// A value of the wrong YAML type (a list where a string goes, …).
    WrongType,
    /// A value of the right type that is not one of the allowed ones.
    InvalidValue,
    /// A pipeline, step, param, env, matrix or model name breaks its rule.
    InvalidName,
    /// A step whose kind cannot be told: none or several of run, command, gate, approval, register.
    StepKind,
    /// A key that does not apply to this kind of step.
    KeyNotForKind,
    /// A `needs` entry names no step.
    UnknownNeed,
    /// A step that needs itself.
    SelfNeed,
    /// Steps that need each other in a circle.
    Cycle,
    /// A container step with no image to run.
    MissingImage,
    /// A duration such as `10s`, `5m`, `1h30m` that does not parse.
    InvalidDuration,
    /// A size such as `16Gi` that does not parse.
    InvalidSize,
    /// A cron expression that does not parse or never fires.
    InvalidCron,
    /// A time zone that is not in the IANA database.
    UnknownTimezone,
    /// A GPU request that is not a positive count, `all` or a list of ids.
    InvalidGpus,
    /// A CEL expression or `${{ }}` template that does not parse.
    ExprSyntax,
    /// An expression reads a name that does not exist there.
    UnknownReference,
    /// An expression reads a step that does not run before this one.
    NotUpstream,
    /// `${{ event… }}` inside `run` or `command`, where it would be shell text.
    EventInShell,
    /// A key that has no effect where it is written (a warning).
    IgnoredKey,
    /// Two pipeline files with the same name.
    DuplicatePipeline,
    /// A file that cannot be read.
    Io,
}

impl Code {
    /// Every code, in the order of `docs/errors.md`.
    pub const ALL: [Code; 25] = [
        Code::YamlSyntax,
        Code::UnknownKey,
        Code::DuplicateKey,
        Code::MissingKey,
        Code::WrongType,
        Code::InvalidValue,
        Code::InvalidName,
        Code::StepKind,
        Code::KeyNotForKind,
        Code::UnknownNeed,
        Code::SelfNeed,
        Code::Cycle,
        Code::MissingImage,
        Code::InvalidDuration,
        Code::InvalidSize,
        Code::InvalidCron,
        Code::UnknownTimezone,
        Code::InvalidGpus,
        Code::ExprSyntax,
        Code::UnknownReference,
        Code::NotUpstream,
        Code::EventInShell,
        Code::IgnoredKey,
        Code::DuplicatePipeline,
        Code::Io,
    ];

    /// The kebab-case name used in JSON output and the docs.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::YamlSyntax => "yaml-syntax",
            Code::UnknownKey => "unknown-key",
            Code::DuplicateKey => "duplicate-key",
            Code::MissingKey => "missing-key",
            Code::WrongType => "wrong-type",
            Code::InvalidValue => "invalid-value",
            Code::InvalidName => "invalid-name",
            Code::StepKind => "step-kind",
            Code::KeyNotForKind => "key-not-for-kind",
            Code::UnknownNeed => "unknown-need",
            Code::SelfNeed => "self-need",
            Code::Cycle => "cycle",
            Code::MissingImage => "missing-image",
            Code::InvalidDuration => "invalid-duration",
            Code::InvalidSize => "invalid-size",
            Code::InvalidCron => "invalid-cron",
            Code::UnknownTimezone => "unknown-timezone",
            Code::InvalidGpus => "invalid-gpus",
            Code::ExprSyntax => "expr-syntax",
            Code::UnknownReference => "unknown-reference",
            Code::NotUpstream => "not-upstream",
            Code::EventInShell => "event-in-shell",
            Code::IgnoredKey => "ignored-key",
            Code::DuplicatePipeline => "duplicate-pipeline",
            Code::Io => "io",
        }
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One problem found in a pipeline file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    /// Where the problem is.
    #[serde(flatten)]
    pub pos: Pos,
    /// Error or warning.
    pub severity: Severity,
    /// The stable kind of problem.
    pub code: Code,
    /// What is wrong and what to do, lowercase, naming the value and key.
    pub message: String,
}

impl Diagnostic {
    /// An error at `pos`.
    pub fn error(pos: Pos, code: Code, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            pos,
            severity: Severity::Error,
            code,
            message: message.into(),
        }
    }

    /// A warning at `pos`.
    pub fn warning(pos: Pos, code: Code, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::error(pos, code, message)
        }
    }

    /// Whether this diagnostic makes the file invalid.
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

/// Formats as `line:column: message`, with `warning: ` before a warning's message.
impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.severity {
            Severity::Error => write!(f, "{}: {}", self.pos, self.message),
            Severity::Warning => write!(f, "{}: warning: {}", self.pos, self.message),
        }
    }
}

/// The nearest of `candidates` to `name`, when one is close enough to be a
/// likely typo.
pub(crate) fn suggest<'a>(
    name: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let limit = (name.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .filter(|c| *c != name)
        .map(|c| {
            let distance = if c.eq_ignore_ascii_case(name) {
                0
            } else {
                strsim::damerau_levenshtein(name, c)
            };
            (distance, c)
        })
        .filter(|(distance, _)| *distance <= limit)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, c)| c)
}

/// ` (did you mean 'x'?)` when a suggestion exists, else nothing.
pub fn did_you_mean<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    match suggest(name, candidates) {
        Some(s) => format!(" (did you mean '{s}'?)"),
        None => String::new(),
    }
}

/// The nearest of `candidates` as ` (did you mean 'x'?)`, or else the whole
/// list as ` (expected a, b or c)`.
pub(crate) fn hint_or_expected(name: &str, candidates: &[&str]) -> String {
    match did_you_mean(name, candidates.iter().copied()) {
        hint if hint.is_empty() => format!(" (expected {})", one_of(candidates)),
        hint => hint,
    }
}

/// `a, b or c`.
pub(crate) fn one_of(items: &[&str]) -> String {
    match items {
        [] => String::new(),
        [only] => (*only).to_owned(),
        [rest @ .., last] => format!("{} or {}", rest.join(", "), last),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_names_only() {
        assert_eq!(suggest("trian", ["train", "validate"]), Some("train"));
        assert_eq!(suggest("imgae", ["image", "run"]), Some("image"));
        assert_eq!(suggest("zzz", ["train", "validate"]), None);
        assert_eq!(one_of(&["a", "b", "c"]), "a, b or c");
    }
}
