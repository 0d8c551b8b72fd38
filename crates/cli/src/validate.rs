//! `weir validate [PATH…]`: every problem of every file, as
//! `path:line:col: message` on stderr (or a JSON array with `--output json`).

use crate::files;
use crate::output::Output;
use serde::Serialize;
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use weir_model::{Code, Diagnostic, Pos};

/// Arguments of `weir validate`.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// Pipeline files, or folders searched for *.yaml and *.yml.
    #[arg(default_value = "pipelines")]
    paths: Vec<PathBuf>,
    /// How to print the result.
    #[arg(long, value_enum, default_value_t)]
    output: Output,
}

/// One diagnostic with its file, as `--output json` prints it.
#[derive(Serialize)]
struct Located<'a> {
    path: String,
    #[serde(flatten)]
    diagnostic: &'a Diagnostic,
}

pub(crate) fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let (paths, unreadable) = files::collect(&args.paths);
    let mut reports: Vec<(String, Vec<Diagnostic>, Option<usize>)> = Vec::new();
    for bad in unreadable {
        let d = Diagnostic::error(Pos::START, Code::Io, format!("cannot read: {}", bad.reason));
        reports.push((bad.path.display().to_string(), vec![d], None));
    }
    let mut names: HashMap<String, String> = HashMap::new();
    for path in &paths {
        let shown = path.display().to_string();
        let source = match std::fs::read_to_string(path) {
            Ok(source) => source,
            Err(e) => {
                let d = Diagnostic::error(Pos::START, Code::Io, format!("cannot read: {e}"));
                reports.push((shown, vec![d], None));
                continue;
            }
        };
        let mut validated = weir_model::validate(&source);
        let mut n_steps = None;
        if let Some(pipeline) = &validated.pipeline {
            n_steps = Some(pipeline.steps.len());
            let name = &pipeline.name;
            if let Some(other) = names.get(&name.value) {
                validated.diagnostics.push(Diagnostic::error(
                    name.pos,
                    Code::DuplicatePipeline,
                    format!(
                        "pipeline name '{}' is already used by {other}: names must be unique",
                        name.value
                    ),
                ));
                n_steps = None;
            } else {
                names.insert(name.value.clone(), shown.clone());
            }
        }
        reports.push((shown, validated.diagnostics, n_steps));
    }
    let failed = reports
        .iter()
        .any(|(_, diags, _)| diags.iter().any(Diagnostic::is_error));
    match args.output {
        Output::Json => {
            let all: Vec<Located<'_>> = reports
                .iter()
                .flat_map(|(path, diags, _)| {
                    diags.iter().map(move |d| Located {
                        path: path.clone(),
                        diagnostic: d,
                    })
                })
                .collect();
            println!("{}", serde_json::to_string_pretty(&all)?);
        }
        Output::Table => {
            for (path, diags, n_steps) in &reports {
                for d in diags {
                    eprintln!("{path}:{d}");
                }
                if let Some(n) = n_steps {
                    println!("{path}: ok, {n} step{}", if *n == 1 { "" } else { "s" });
                }
            }
            if reports.is_empty() {
                eprintln!(
                    "no pipeline files (*.yaml, *.yml) found in {}",
                    shown_paths(&args.paths)
                );
            }
        }
    }
    Ok(if failed || reports.is_empty() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn shown_paths(paths: &[PathBuf]) -> String {
    let shown: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    shown.join(", ")
}
