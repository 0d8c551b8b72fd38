//! `${{ … }}` templates: strings with embedded CEL expressions.
//!
//! Parsing keeps the character offset of every placeholder so that errors and
//! the model's checks can point into the pipeline file. Not here: deciding
//! which names a template may read.

use crate::eval::{Context, EvalError, render_value};
use crate::expr::{Compiler, Expr, SyntaxError};

/// A string with zero or more `${{ expression }}` placeholders.
#[derive(Debug, Clone)]
pub struct Template {
    source: String,
    parts: Vec<Part>,
}

/// A piece of a [`Template`].
#[derive(Debug, Clone)]
pub enum Part {
    /// Text copied as it is.
    Text(String),
    /// A placeholder replaced by its expression's value.
    Expr(Placeholder),
}

/// One `${{ expression }}` in a template.
#[derive(Debug, Clone)]
pub struct Placeholder {
    /// The compiled expression between the braces.
    pub expr: Expr,
    /// Character offset of the expression's first character in the template.
    pub expr_offset: usize,
    /// The placeholder as written, `${{ … }}` included.
    pub raw: String,
}

impl Template {
    /// Parses `source`, compiling every placeholder. Errors carry character
    /// offsets into `source`; all placeholders are checked, not only the first.
    pub fn parse(source: &str) -> Result<Template, Vec<SyntaxError>> {
        Template::parse_with(source, &mut Compiler::new())
    }

    /// [`Template::parse`] compiling through `compiler`, which reuses the
    /// programs of expressions it has seen.
    pub fn parse_with(source: &str, compiler: &mut Compiler) -> Result<Template, Vec<SyntaxError>> {
        let chars: Vec<char> = source.chars().collect();
        let mut parts = Vec::new();
        let mut errors = Vec::new();
        let mut text = String::new();
        let mut i = 0;
        while i < chars.len() {
            if !starts_with(&chars, i, "${{") {
                text.push(chars[i]);
                i += 1;
                continue;
            }
            let Some(end) = closing_braces(&chars, i + 3) else {
                errors.push(SyntaxError {
                    offset: i,
                    message: "unclosed '${{': add '}}' after the expression".to_owned(),
                });
                break;
            };
            let inner: String = chars[i + 3..end].iter().collect();
            let leading = inner.chars().take_while(|c| c.is_whitespace()).count();
            let expr_offset = i + 3 + leading;
            match compiler.compile(inner.trim()) {
                Ok(expr) => {
                    if !text.is_empty() {
                        parts.push(Part::Text(std::mem::take(&mut text)));
                    }
                    parts.push(Part::Expr(Placeholder {
                        expr,
                        expr_offset,
                        raw: chars[i..end + 2].iter().collect(),
                    }));
                }
                Err(errs) => errors.extend(errs.into_iter().map(|e| SyntaxError {
                    offset: expr_offset + e.offset,
                    message: e.message,
                })),
            }
            i = end + 2;
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        if !text.is_empty() {
            parts.push(Part::Text(text));
        }
        Ok(Template {
            source: source.to_owned(),
            parts,
        })
    }

    /// The text the template was parsed from.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The pieces in order.
    pub fn parts(&self) -> &[Part] {
        &self.parts
    }

    /// The placeholders in order.
    pub fn placeholders(&self) -> impl Iterator<Item = &Placeholder> {
        self.parts.iter().filter_map(|part| match part {
            Part::Expr(p) => Some(p),
            Part::Text(_) => None,
        })
    }

    /// Whether the template has no placeholder.
    pub fn is_literal(&self) -> bool {
        self.placeholders().next().is_none()
    }

    /// Replaces every placeholder by its value.
    pub fn render(&self, context: &Context) -> Result<String, EvalError> {
        self.render_where(context, |_| true)
    }

    /// Replaces the placeholders for which `resolve` answers true and keeps
    /// the others as written, for previews made before run time.
    pub fn render_where(
        &self,
        context: &Context,
        resolve: impl Fn(&Expr) -> bool,
    ) -> Result<String, EvalError> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(text) => out.push_str(text),
                Part::Expr(p) if resolve(&p.expr) => {
                    out.push_str(&render_value(&context.eval(&p.expr)?));
                }
                Part::Expr(p) => out.push_str(&p.raw),
            }
        }
        Ok(out)
    }
}

fn starts_with(chars: &[char], at: usize, needle: &str) -> bool {
    needle
        .chars()
        .enumerate()
        .all(|(k, c)| chars.get(at + k) == Some(&c))
}

/// Finds the `}}` that closes a placeholder whose expression starts at
/// `from`, skipping braces of map literals and anything inside string
/// literals.
fn closing_braces(chars: &[char], from: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut quote: Option<char> = None;
    let mut i = from;
    while i < chars.len() {
        let c = chars[i];
        match quote {
            Some(q) => {
                if c == '\\' {
                    i += 1;
                } else if c == q {
                    quote = None;
                }
            }
            None => match c {
                '\'' | '"' => quote = Some(c),
                '{' => depth += 1,
                '}' if depth > 0 => depth -= 1,
                '}' if chars.get(i + 1) == Some(&'}') => return Some(i),
                _ => {}
            },
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn splits_text_and_placeholders() {
        let t = Template::parse("echo ${{ params.lr }} and ${{matrix.x}}!").expect("parses");
        let offsets: Vec<usize> = t.placeholders().map(|p| p.expr_offset).collect();
        assert_eq!(offsets, [9, 29]);
        assert_eq!(t.parts().len(), 5);
    }

    #[test]
    fn map_literals_and_strings_do_not_close_a_placeholder() {
        let t = Template::parse("${{ {'a': {'b': '}}'}}.a.b }}").expect("parses");
        let ctx = Context::new();
        assert_eq!(t.render(&ctx).expect("renders"), "}}");
    }

    #[test]
    fn unclosed_placeholder_is_an_error_at_its_start() {
        let errors = Template::parse("run ${{ params.x").expect_err("unclosed");
        assert_eq!(errors[0].offset, 4);
    }

    #[test]
    fn every_bad_placeholder_is_reported() {
        let errors = Template::parse("${{ a + }} ${{ }} ${{ b..c }}").expect_err("bad");
        assert_eq!(errors.len(), 3);
        assert_eq!(errors[1].message, "empty expression");
        assert_eq!(errors[0].offset, 7);
    }

    #[test]
    fn renders_only_what_it_is_asked_to() {
        let t =
            Template::parse("--lr ${{ params.lr }} --v ${{ steps.r.outputs.v }}").expect("parses");
        let mut ctx = Context::new();
        ctx.set("params", json!({"lr": "0.1"}));
        let out = t
            .render_where(&ctx, |e| e.reads_root("params"))
            .expect("renders");
        assert_eq!(out, "--lr 0.1 --v ${{ steps.r.outputs.v }}");
    }
}
