//! CEL expressions and `${{ … }}` templates, as used in weir pipelines.
//!
//! This crate compiles expressions (reporting syntax errors at the character
//! where they are), lists the names an expression reads so that the pipeline
//! model can check them against the pipeline, and evaluates expressions
//! against a JSON context. It does no IO and knows nothing of pipelines:
//! which names exist is the model's business.

mod eval;
mod expr;
mod template;

pub use eval::{Context, EvalError, render_value};
pub use expr::{Compiler, Expr, Reference, Segment, SyntaxError};
pub use template::{Part, Placeholder, Template};
