//! The naming rules of the format, one per kind of name: what a pipeline,
//! model, alias, step, param or variable may be called, checked the same
//! way in a pipeline file and in the API's paths.

/// The rule a kind of name follows.
#[derive(Debug, Clone, Copy)]
pub enum NameRule {
    /// Pipelines, models, aliases: `[a-z0-9][a-z0-9-]{0,62}`.
    Pipeline,
    /// Step ids: `[a-z][a-z0-9_-]{0,62}`.
    Step,
    /// Params, matrix keys, metrics: `[A-Za-z_][A-Za-z0-9_]*`.
    Identifier,
    /// Environment variables: `[A-Za-z_][A-Za-z0-9_]*`.
    EnvName,
}

impl NameRule {
    /// Whether `name` follows the rule.
    pub fn accepts(self, name: &str) -> bool {
        let mut chars = name.chars();
        let Some(first) = chars.next() else {
            return false;
        };
        let rest = chars.as_str();
        match self {
            NameRule::Pipeline => {
                name.len() <= 63
                    && (first.is_ascii_lowercase() || first.is_ascii_digit())
                    && rest
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            }
            NameRule::Step => {
                name.len() <= 63
                    && first.is_ascii_lowercase()
                    && rest.chars().all(|c| {
                        c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_'
                    })
            }
            NameRule::Identifier | NameRule::EnvName => {
                (first.is_ascii_alphabetic() || first == '_')
                    && rest.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            }
        }
    }

    /// The rule as a regular expression (JSON Schema's `pattern`), for
    /// documents that describe a name weir checks with [`accepts`](Self::accepts).
    pub fn pattern(self) -> &'static str {
        match self {
            NameRule::Pipeline => "^[a-z0-9][a-z0-9-]{0,62}$",
            NameRule::Step => "^[a-z][a-z0-9_-]{0,62}$",
            NameRule::Identifier | NameRule::EnvName => "^[A-Za-z_][A-Za-z0-9_]*$",
        }
    }

    /// The rule, as advice: what to use.
    pub fn describe(self) -> &'static str {
        match self {
            NameRule::Pipeline => {
                "use lowercase letters, digits and '-', starting with a letter or digit, at most 63 characters"
            }
            NameRule::Step => {
                "use lowercase letters, digits, '_' and '-', starting with a letter, at most 63 characters"
            }
            NameRule::Identifier | NameRule::EnvName => {
                "use letters, digits and '_', not starting with a digit"
            }
        }
    }
}

impl NameRule {
    /// Checks `name` (a `what`: `alias`, `pipeline name`, …) against the
    /// rule; the error shows the name safely and says what to use.
    pub fn check(self, what: &str, name: &str) -> Result<(), NameError> {
        if self.accepts(name) {
            return Ok(());
        }
        Err(NameError {
            what: what.to_owned(),
            name: shown(name),
            rule: self.describe(),
        })
    }
}

/// A name its rule refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} '{name}': {rule}")]
pub struct NameError {
    /// What was named: `alias`, `pipeline name`, …
    pub what: String,
    /// The name, control characters escaped, cut at 64 characters.
    pub name: String,
    /// What to use instead.
    pub rule: &'static str,
}

/// A name as an error may print it: control characters (NUL, CR, LF)
/// escaped, and at most 64 characters of it.
fn shown(name: &str) -> String {
    let mut out = String::new();
    for (index, c) in name.chars().enumerate() {
        if index == 64 {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pattern says what `accepts` does, on names either side of it,
    /// as a JSON Schema validator reads it.
    #[test]
    fn patterns_agree_with_the_rules() {
        let names = [
            "churn",
            "a",
            "0x",
            "a-b",
            "a_b",
            "A",
            "-a",
            "_a",
            "a b",
            "é",
            "",
            "a\n",
            "abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyzabcdefghijk",
            "abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyzabcdefghijkl",
        ];
        for rule in [NameRule::Pipeline, NameRule::Step, NameRule::Identifier] {
            let schema = serde_json::json!({"type": "string", "pattern": rule.pattern()});
            let validator = jsonschema::validator_for(&schema).expect("a pattern");
            for name in names {
                assert_eq!(
                    validator.is_valid(&serde_json::json!(name)),
                    rule.accepts(name),
                    "{rule:?} {} on {name:?}",
                    rule.pattern()
                );
            }
        }
    }

    #[test]
    fn hostile_aliases_are_refused_and_shown_safely() {
        let rule = NameRule::Pipeline;
        assert!(rule.check("alias", "production").is_ok());
        assert!(rule.check("alias", "v2-canary").is_ok());
        for bad in [
            "../../etc/passwd",
            "a\0b",
            "x\r\ny",
            "x' OR '1'='1",
            "",
            "Prod",
        ] {
            assert!(rule.check("alias", bad).is_err(), "{bad:?}");
        }
        let long = "a".repeat(200);
        let e = rule.check("alias", &long).expect_err("too long");
        assert_eq!(e.name, format!("{}…", "a".repeat(64)));
        let e = rule
            .check("alias", "x\r\ny\0")
            .expect_err("control characters");
        assert_eq!(
            e.to_string(),
            "invalid alias 'x\\r\\ny\\u{0}': use lowercase letters, digits and '-', starting with a letter or digit, at most 63 characters"
        );
    }
}
