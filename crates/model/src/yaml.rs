//! The YAML layer: text to a tree of nodes that remember where they were
//! written, through serde-saphyr.
//!
//! Only YAML syntax is judged here (a syntax error stops the file, as in any
//! compiler); everything about the pipeline format is judged on the tree,
//! so that all problems of a file are found in one pass. Duplicate keys are
//! passed through to the tree, where they are reported with the others.

use crate::diag::{Code, Diagnostic, Pos};
use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::{DuplicateKeyPolicy, Spanned};
use std::fmt;

/// A YAML node with its position and, for scalars, the text as written.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Node {
    pub(crate) value: Value,
    pub(crate) pos: Pos,
    /// The scalar exactly as written (quotes included), or empty.
    pub(crate) raw: String,
}

/// The value of a [`Node`].
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

impl Node {
    /// The YAML type, as the messages name it.
    pub(crate) fn type_name(&self) -> &'static str {
        match self.value {
            Value::Null => "nothing",
            Value::Bool(_) => "a boolean",
            Value::Int(_) => "an integer",
            Value::Float(_) => "a number",
            Value::Str(_) => "a string",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }

    /// A scalar's text: strings as they are, numbers and booleans as written.
    pub(crate) fn scalar_text(&self) -> Option<String> {
        match &self.value {
            Value::Str(s) => Some(s.clone()),
            Value::Bool(_) | Value::Int(_) | Value::Float(_) => Some(self.raw.trim().to_owned()),
            Value::Null | Value::Seq(_) | Value::Map(_) => None,
        }
    }

    /// The position of the character at `offset` (in characters) of this
    /// string scalar's value, found in the text as written; the node's own
    /// position when the value was transformed beyond recognition (escapes,
    /// folding).
    pub(crate) fn locate(&self, offset: usize) -> Pos {
        let Value::Str(value) = &self.value else {
            return self.pos;
        };
        let tail: String = value
            .chars()
            .skip(offset)
            .take_while(|c| *c != '\n')
            .take(24)
            .collect();
        if tail.is_empty() {
            // Just past the end (an unexpected end of expression): one column
            // right of the last character.
            return match offset.checked_sub(1) {
                Some(last) if value.chars().nth(last).is_some_and(|c| c != '\n') => {
                    let pos = self.locate(last);
                    Pos {
                        column: pos.column + 1,
                        ..pos
                    }
                }
                _ => self.pos,
            };
        }
        let head: String = value.chars().take(offset).collect();
        let nth = head.matches(tail.as_str()).count();
        let Some((byte_at, _)) = self.raw.match_indices(tail.as_str()).nth(nth) else {
            return self.pos;
        };
        let mut pos = self.pos;
        for c in self.raw[..byte_at].chars() {
            if c == '\n' {
                pos.line += 1;
                pos.column = 1;
            } else {
                pos.column += 1;
            }
        }
        pos
    }

    /// Converts to JSON (for schema checks), keys as strings.
    pub(crate) fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match &self.value {
            Value::Null => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Int(i) => i64::try_from(*i).map_or_else(|_| J::from(*i as f64), J::from),
            Value::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
            Value::Str(s) => J::String(s.clone()),
            Value::Seq(items) => J::Array(items.iter().map(Node::to_json).collect()),
            Value::Map(entries) => J::Object(
                entries
                    .iter()
                    .map(|(k, v)| (k.scalar_text().unwrap_or_default(), v.to_json()))
                    .collect(),
            ),
        }
    }
}

/// Parses `source` into a node tree, or the YAML syntax error.
/// The most YAML nodes a pipeline file may have.
const MAX_NODES: usize = 2_000_000;

pub(crate) fn parse(source: &str) -> Result<Node, Diagnostic> {
    let options = serde_saphyr::options! {
        strict_booleans: true,
        duplicate_keys: DuplicateKeyPolicy::PassThrough,
        with_snippet: false,
        // Room for real generated files (10,000 steps each needing 50
        // others: about 560,000 nodes and 1.1 million events) where the
        // defaults stop at 250,000 and 1 million; the alias, anchor, depth
        // and scalar-size limits that refuse hostile files stay as they are.
        budget: serde_saphyr::budget! {
            max_nodes: MAX_NODES,
            max_events: 2 * MAX_NODES,
        },
    };
    match serde_saphyr::from_str_with_options::<Spanned<Raw>>(source, options) {
        Ok(spanned) => Ok(into_node(spanned, source)),
        Err(e) => {
            let pos = e.location().map_or(Pos::START, |l| Pos {
                line: l.line() as u32,
                column: l.column() as u32,
            });
            Err(Diagnostic::error(
                pos,
                Code::YamlSyntax,
                format!("yaml syntax: {}", syntax_message(&e.to_string())),
            ))
        }
    }
}

/// serde-saphyr prefixes its messages with the position, which the
/// diagnostic already carries.
fn syntax_message(text: &str) -> String {
    let first = text.lines().next().unwrap_or(text);
    let first = first.strip_prefix("error: ").unwrap_or(first);
    let trimmed = match first.strip_prefix("line ") {
        Some(rest) => rest.split_once(": ").map_or(rest, |(_, msg)| msg),
        None => first,
    };
    let message = match trimmed.rfind(" at line ") {
        Some(at) => &trimmed[..at],
        None => trimmed,
    };
    if message.starts_with("multiple YAML documents") {
        return "a pipeline file holds one YAML document: remove the '---' or split the file"
            .to_owned();
    }
    message.to_owned()
}

/// The tree as serde-saphyr hands it over, before positions are simplified.
enum Raw {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    Seq(Vec<Spanned<Raw>>),
    Map(Vec<(Spanned<Raw>, Spanned<Raw>)>),
}

fn into_node(spanned: Spanned<Raw>, source: &str) -> Node {
    let location = spanned.referenced;
    let pos = Pos {
        line: location.line().max(1) as u32,
        column: location.column().max(1) as u32,
    };
    let span = location.span();
    let raw_text = |source: &str| -> String {
        match (span.byte_offset(), span.byte_len()) {
            (Some(start), Some(len)) => source
                .get(start as usize..(start + len) as usize)
                .unwrap_or_default()
                .to_owned(),
            _ => String::new(),
        }
    };
    let (value, raw) = match spanned.value {
        Raw::Null => (Value::Null, raw_text(source)),
        Raw::Bool(b) => (Value::Bool(b), raw_text(source)),
        Raw::Int(i) => (Value::Int(i), raw_text(source)),
        Raw::Float(f) => (Value::Float(f), raw_text(source)),
        Raw::Str(s) => (Value::Str(s), raw_text(source)),
        Raw::Seq(items) => (
            Value::Seq(items.into_iter().map(|n| into_node(n, source)).collect()),
            String::new(),
        ),
        Raw::Map(entries) => (
            Value::Map(
                entries
                    .into_iter()
                    .map(|(k, v)| (into_node(k, source), into_node(v, source)))
                    .collect(),
            ),
            String::new(),
        ),
    };
    Node { value, pos, raw }
}

impl<'de> Deserialize<'de> for Raw {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(RawVisitor)
    }
}

struct RawVisitor;

impl<'de> Visitor<'de> for RawVisitor {
    type Value = Raw;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_unit<E>(self) -> Result<Raw, E> {
        Ok(Raw::Null)
    }
    fn visit_none<E>(self) -> Result<Raw, E> {
        Ok(Raw::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Raw, D::Error> {
        Raw::deserialize(d)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Raw, E> {
        Ok(Raw::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Raw, E> {
        Ok(Raw::Int(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Raw, E> {
        Ok(Raw::Int(v.into()))
    }
    fn visit_i128<E>(self, v: i128) -> Result<Raw, E> {
        Ok(Raw::Int(v))
    }
    fn visit_u128<E>(self, v: u128) -> Result<Raw, E> {
        Ok(i128::try_from(v).map_or(Raw::Float(v as f64), Raw::Int))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Raw, E> {
        Ok(Raw::Float(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Raw, E> {
        Ok(Raw::Str(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Raw, E> {
        Ok(Raw::Str(v))
    }
    fn visit_bytes<E>(self, v: &[u8]) -> Result<Raw, E> {
        Ok(Raw::Str(String::from_utf8_lossy(v).into_owned()))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Raw, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Raw::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Raw, A::Error> {
        let mut entries = Vec::new();
        while let Some(entry) = map.next_entry()? {
            entries.push(entry);
        }
        Ok(Raw::Map(entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_files_past_the_parsers_default_node_budget_read() {
        // serde-saphyr stops at 250,000 nodes by default; a 10,000-step
        // file whose steps each need 50 others has about 560,000.
        let items: Vec<String> = (0..300_000).map(|i| format!("s{i}")).collect();
        let source = format!("needs: [{}]\n", items.join(", "));
        let root = parse(&source).expect("within weir's budget");
        let Value::Map(entries) = &root.value else {
            panic!("a map");
        };
        assert!(matches!(&entries[0].1.value, Value::Seq(items) if items.len() == 300_000));
    }

    #[test]
    fn keeps_positions_raw_text_and_duplicates() {
        let node = parse("a: 1.0\nb: yes\na: \"x ${{ y }}\"\n").expect("parses");
        let Value::Map(entries) = &node.value else {
            panic!("a map")
        };
        assert_eq!(entries.len(), 3);
        assert_eq!(entries[0].1.scalar_text().as_deref(), Some("1.0"));
        assert_eq!(entries[1].1.value, Value::Str("yes".into()));
        assert_eq!(entries[2].0.pos, Pos { line: 3, column: 1 });
        assert_eq!(
            entries[2].1.locate(6),
            Pos {
                line: 3,
                column: 11
            }
        );
    }

    #[test]
    fn locates_inside_block_scalars() {
        let node = parse("run: |\n  echo a\n  echo ${{ b }}\n").expect("parses");
        let Value::Map(entries) = &node.value else {
            panic!("a map")
        };
        assert_eq!(entries[0].1.locate(7), Pos { line: 3, column: 3 });
        assert_eq!(
            entries[0].1.locate(16),
            Pos {
                line: 3,
                column: 12
            }
        );
    }

    #[test]
    fn syntax_errors_carry_their_position() {
        let err = parse("a: [1, 2\nb: 3\n").expect_err("unclosed");
        assert_eq!(err.code, Code::YamlSyntax);
        assert!(err.pos.line >= 1);
        assert!(!err.message.contains("line "), "{}", err.message);
    }
}
