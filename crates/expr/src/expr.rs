//! One compiled CEL expression and the analysis of the names it reads.
//!
//! Not here: deciding whether a name exists (the pipeline model does that)
//! or evaluating (see `eval.rs`).

use cel::common::ast::{EntryExpr, Expr as Node, LiteralValue, SourceInfo};
use cel::{IdedExpr, Program};
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

/// A compiled CEL expression with its source text. Cheap to clone.
#[derive(Clone)]
pub struct Expr {
    source: Arc<str>,
    program: Arc<Program>,
}

/// A syntax error inside an expression or a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    /// Character offset (0-based) of the error within the text that was parsed.
    pub offset: usize,
    /// What is wrong, lowercase, without the offset.
    pub message: String,
}

/// A path the expression reads from a free variable: `steps.train.metrics`
/// is the segments `steps`, `train`, `metrics`.
#[derive(Debug, Clone, PartialEq)]
pub struct Reference {
    /// The root variable first, then each statically known field or key.
    pub segments: Vec<Segment>,
    /// Whether the path is only tested for presence, as in `has(a.b)`.
    pub tested: bool,
}

/// One name in a [`Reference`].
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    /// The field, key or variable name.
    pub name: String,
    /// Character offset (0-based) of the name in the expression source.
    pub offset: usize,
}

impl Expr {
    /// Compiles `source`; on failure returns every syntax error found, each
    /// located at its character offset in `source`.
    pub fn compile(source: &str) -> Result<Expr, Vec<SyntaxError>> {
        if source.trim().is_empty() {
            return Err(vec![SyntaxError {
                offset: 0,
                message: "empty expression".to_owned(),
            }]);
        }
        match Program::compile(source) {
            Ok(program) => Ok(Expr {
                source: source.into(),
                program: Arc::new(program),
            }),
            Err(errors) => Err(errors
                .errors
                .iter()
                .map(|e| SyntaxError {
                    offset: offset_of(source, e.pos),
                    message: tidy_message(&e.msg),
                })
                .collect()),
        }
    }

    /// The text the expression was compiled from.
    pub fn source(&self) -> &str {
        &self.source
    }

    pub(crate) fn program(&self) -> &Program {
        &self.program
    }

    /// Every path read from a free variable, in source order. Variables bound
    /// by macros (`all`, `exists`, `map`, `filter`) are not free and not listed.
    pub fn references(&self) -> Vec<Reference> {
        let mut walker = Walker {
            info: self.program.source_info(),
            bound: Vec::new(),
            out: Vec::new(),
        };
        walker.walk(self.program.expression());
        walker.out.sort_by_key(|r| r.segments[0].offset);
        walker.out
    }

    /// Whether any reference starts at the root variable `name`.
    pub fn reads_root(&self, name: &str) -> bool {
        self.references().iter().any(|r| r.root() == name)
    }
}

/// Compiles expressions, reusing the program of a source compiled before:
/// pipelines repeat the same few expressions (`params.lr`, `matrix.x`) in
/// many steps, and compiling is the costly part of validation.
#[derive(Default)]
pub struct Compiler {
    seen: HashMap<String, Result<Expr, Vec<SyntaxError>>>,
}

impl Compiler {
    /// A compiler with nothing cached.
    pub fn new() -> Compiler {
        Compiler::default()
    }

    /// [`Expr::compile`], answered from the cache when `source` was seen.
    pub fn compile(&mut self, source: &str) -> Result<Expr, Vec<SyntaxError>> {
        if let Some(done) = self.seen.get(source) {
            return done.clone();
        }
        let done = Expr::compile(source);
        self.seen.insert(source.to_owned(), done.clone());
        done
    }
}

impl fmt::Debug for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Expr").field(&self.source).finish()
    }
}

impl Reference {
    /// The root variable's name.
    pub fn root(&self) -> &str {
        &self.segments[0].name
    }

    /// The path as CEL source: `steps.train.metrics`, with brackets for
    /// names that are not identifiers (`steps["build-image"].state`).
    pub fn source(&self) -> String {
        let mut out = self.segments[0].name.clone();
        for segment in &self.segments[1..] {
            let name = &segment.name;
            let identifier = name
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if identifier {
                out.push('.');
                out.push_str(name);
            } else {
                out.push_str(&format!("[{}]", serde_json::Value::String(name.clone())));
            }
        }
        out
    }

    /// The dotted form, `steps.train.metrics`.
    pub fn dotted(&self) -> String {
        let names: Vec<&str> = self.segments.iter().map(|s| s.name.as_str()).collect();
        names.join(".")
    }
}

struct Walker<'a> {
    info: &'a SourceInfo,
    bound: Vec<String>,
    out: Vec<Reference>,
}

impl Walker<'_> {
    fn offset(&self, e: &IdedExpr) -> usize {
        self.info
            .offset_for(e.id)
            .map_or(0, |(start, _)| start as usize)
    }

    fn walk(&mut self, e: &IdedExpr) {
        if let Some(reference) = self.path(e) {
            let free = !self.bound.contains(&reference.segments[0].name)
                && !reference.segments[0].name.starts_with('@');
            if free {
                self.out.push(reference);
            }
            self.walk_index_args(e);
            return;
        }
        match &e.expr {
            Node::Select(select) => self.walk(&select.operand),
            Node::Call(call) => {
                if let Some(target) = &call.target {
                    self.walk(target);
                }
                for arg in &call.args {
                    self.walk(arg);
                }
            }
            Node::Comprehension(c) => {
                self.walk(&c.iter_range);
                let n_bound = self.bound.len();
                self.bound.push(c.iter_var.clone());
                if let Some(var2) = &c.iter_var2 {
                    self.bound.push(var2.clone());
                }
                self.bound.push(c.accu_var.clone());
                for part in [&c.accu_init, &c.loop_cond, &c.loop_step, &c.result] {
                    self.walk(part);
                }
                self.bound.truncate(n_bound);
            }
            Node::List(list) => {
                for element in &list.elements {
                    self.walk(element);
                }
            }
            Node::Map(map) => self.walk_entries(&map.entries),
            Node::Struct(s) => self.walk_entries(&s.entries),
            Node::Ident(_) | Node::Literal(_) | Node::Unspecified => {}
        }
    }

    fn walk_entries(&mut self, entries: &[cel::common::ast::IdedEntryExpr]) {
        for entry in entries {
            match &entry.expr {
                EntryExpr::StructField(field) => self.walk(&field.value),
                EntryExpr::MapEntry(map_entry) => {
                    self.walk(&map_entry.key);
                    self.walk(&map_entry.value);
                }
            }
        }
    }

    /// Index expressions inside a path with a dynamic key (`a[b.c]`) still
    /// read names in their key.
    fn walk_index_args(&mut self, e: &IdedExpr) {
        match &e.expr {
            Node::Select(select) => self.walk_index_args(&select.operand),
            Node::Call(call) if call.func_name == "_[_]" && call.args.len() == 2 => {
                self.walk_index_args(&call.args[0]);
                if string_literal(&call.args[1]).is_none() {
                    self.walk(&call.args[1]);
                }
            }
            _ => {}
        }
    }

    /// The path `e` spells, when it is a chain of selections and indexes
    /// ending at an identifier. Dynamic indexes end the static part.
    fn path(&self, e: &IdedExpr) -> Option<Reference> {
        let mut segments = Vec::new();
        let mut tested = false;
        let mut node = e;
        let mut first = true;
        loop {
            match &node.expr {
                Node::Ident(name) => {
                    segments.push(Segment {
                        name: name.clone(),
                        offset: self.offset(node),
                    });
                    break;
                }
                Node::Select(select) => {
                    if select.test {
                        if !first {
                            return None;
                        }
                        tested = true;
                    }
                    // The parser records a selection at its '.'; has() at its '('.
                    let offset = if select.test {
                        usize::MAX
                    } else {
                        self.offset(node) + 1
                    };
                    segments.push(Segment {
                        name: select.field.clone(),
                        offset,
                    });
                    node = &select.operand;
                }
                Node::Call(call) if call.func_name == "_[_]" && call.args.len() == 2 => {
                    match string_literal(&call.args[1]) {
                        Some(key) => segments.push(Segment {
                            name: key.to_owned(),
                            offset: self.offset(&call.args[1]) + 1,
                        }),
                        // A dynamic key: only what comes before it is static.
                        None => segments.clear(),
                    }
                    node = &call.args[0];
                }
                _ => return None,
            }
            first = false;
        }
        segments.reverse();
        // A has() test has no offset of its own: point at the name before it.
        for i in 1..segments.len() {
            if segments[i].offset == usize::MAX {
                segments[i].offset = segments[i - 1].offset;
            }
        }
        Some(Reference { segments, tested })
    }
}

fn string_literal(e: &IdedExpr) -> Option<&str> {
    match &e.expr {
        Node::Literal(LiteralValue::String(s)) => Some(s.inner()),
        _ => None,
    }
}

/// Converts the parser's 1-based (line, column) into a character offset.
fn offset_of(source: &str, (line, column): (isize, isize)) -> usize {
    let line = line.max(1) as usize;
    let column = column.max(1) as usize;
    let mut offset = 0;
    for (i, text) in source.split_inclusive('\n').enumerate() {
        if i + 1 == line {
            return offset + (column - 1).min(text.chars().count());
        }
        offset += text.chars().count();
    }
    source.chars().count()
}

/// Shortens the parser's messages: the full list of expected tokens helps
/// nobody, and "Syntax error: " is implied.
fn tidy_message(message: &str) -> String {
    let message = message.strip_prefix("Syntax error: ").unwrap_or(message);
    let message = match message.find(" expecting {") {
        Some(at) if message[at..].matches(',').count() > 3 => {
            format!("{} (expected an operand)", &message[..at])
        }
        _ => message.to_owned(),
    };
    message
        .replace("mismatched input '<EOF>'", "unexpected end of expression")
        .replace("at '<EOF>'", "at the end of the expression")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(source: &str) -> Vec<(String, Vec<usize>, bool)> {
        let expr = Expr::compile(source).expect("compiles");
        expr.references()
            .into_iter()
            .map(|r| {
                (
                    r.dotted(),
                    r.segments.iter().map(|s| s.offset).collect(),
                    r.tested,
                )
            })
            .collect()
    }

    #[test]
    fn lists_paths_with_offsets_of_each_name() {
        assert_eq!(
            paths("steps.validate.metrics.acc >= 0.8"),
            vec![(
                "steps.validate.metrics.acc".to_owned(),
                vec![0, 6, 15, 23],
                false
            )]
        );
    }

    #[test]
    fn has_is_a_tested_path() {
        let refs = paths("!has(models.churn.production) || params.x == 'a'");
        assert_eq!(refs[0].0, "models.churn.production");
        assert!(refs[0].2);
        assert_eq!(refs[1].0, "params.x");
    }

    #[test]
    fn string_index_is_a_segment_and_dynamic_index_ends_the_path() {
        assert_eq!(
            paths("steps[\"deploy-prod\"].state")[0].0,
            "steps.deploy-prod.state"
        );
        let refs = paths("steps[params.name].state");
        assert_eq!(refs[0].0, "steps");
        assert_eq!(refs[1].0, "params.name");
    }

    #[test]
    fn macro_variables_are_not_free() {
        let refs = paths("steps.train.all(t, t.metrics.acc > params.min)");
        let names: Vec<_> = refs.iter().map(|r| r.0.as_str()).collect();
        assert_eq!(names, ["steps.train", "params.min"]);
    }

    #[test]
    fn syntax_error_is_located_in_the_expression() {
        let errors = Expr::compile("steps.a.metrics.acc >=").expect_err("incomplete");
        assert_eq!(errors[0].offset, 22);
        assert_eq!(
            errors[0].message,
            "unexpected end of expression (expected an operand)"
        );
        let errors = Expr::compile("a +\n  (b").expect_err("unclosed");
        assert_eq!(errors[0].offset, 8);
    }

    #[test]
    fn empty_expression_is_an_error() {
        assert_eq!(
            Expr::compile("  ").expect_err("empty")[0].message,
            "empty expression"
        );
    }
}
