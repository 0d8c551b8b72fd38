//! weir's pipeline format: YAML text to a validated [`Pipeline`].
//!
//! [`validate`] reads one pipeline file and reports every problem it finds
//! as a [`Diagnostic`] with line and column, in one pass. The crate also
//! holds the DAG ([`Dag`]), the JSON Schema of the format ([`schema`]) and
//! the dry-run [`plan`]. It does no IO, reads no clock and no environment:
//! callers hand it text and get values back.

mod check;
mod dag;
mod diag;
mod lower;
mod names;
pub mod pipeline;
pub mod plan;
mod schedule;
mod schema;
pub mod units;
mod yaml;

pub use dag::Dag;
pub use diag::{Code, Diagnostic, Pos, Severity, did_you_mean};
pub use names::{NameError, NameRule};
pub use pipeline::Pipeline;
pub use plan::{Plan, plan};

pub use schedule::{CronError, TimezoneError, parse_cron};
pub use schema::schema;

/// The outcome of validating one file.
#[derive(Debug)]
pub struct Validated {
    /// The pipeline, when the file has no error (warnings allowed).
    pub pipeline: Option<Pipeline>,
    /// Every problem found, sorted by position.
    pub diagnostics: Vec<Diagnostic>,
}

impl Validated {
    /// Whether any diagnostic is an error.
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(Diagnostic::is_error)
    }
}

/// Parses and validates one pipeline file's text.
pub fn validate(source: &str) -> Validated {
    let mut diagnostics = Vec::new();
    let root = match yaml::parse(source) {
        Ok(root) => root,
        Err(syntax) => {
            return Validated {
                pipeline: None,
                diagnostics: vec![syntax],
            };
        }
    };
    let lowered = lower::lower(&root, &mut diagnostics);
    let steps: Vec<_> = lowered
        .skeletons
        .iter()
        .map(|s| (&s.id, s.needs.as_slice()))
        .collect();
    let dag = dag::build(&steps, &mut diagnostics);
    let reads = check::check(
        &lowered.skeletons,
        &lowered.params,
        &lowered.exprs,
        &dag,
        &mut diagnostics,
    );
    diagnostics.sort_by_key(|d| d.pos);
    diagnostics.dedup();
    let pipeline = if diagnostics.iter().any(Diagnostic::is_error) {
        None
    } else {
        // What validation computed travels with the pipeline, so nobody
        // builds the graph, parses a cron or guesses the reads again.
        lowered.pipeline.map(|pipeline| Pipeline {
            dag,
            reads,
            ..pipeline
        })
    };
    Validated {
        pipeline,
        diagnostics,
    }
}

/// The file's YAML as JSON, for checking it against [`schema`]; `None` when
/// it is not YAML.
pub fn to_json(source: &str) -> Option<serde_json::Value> {
    yaml::parse(source).ok().map(|root| root.to_json())
}
