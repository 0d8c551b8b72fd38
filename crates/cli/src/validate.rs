//! `weir validate [PATH…]`: every problem of every file, as
//! `path:line:col: message` on stderr (or a JSON array with `--output json`).

use crate::output::Output;
use serde::Serialize;
use std::path::PathBuf;
use std::process::ExitCode;
use weir_model::Diagnostic;

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
    let reports: Vec<(String, Vec<Diagnostic>, Option<usize>)> = weir_daemon::scan(&args.paths)
        .into_iter()
        .map(|file| {
            let n_steps = file.pipeline.as_ref().map(|p| p.steps.len());
            (file.path.display().to_string(), file.diagnostics, n_steps)
        })
        .collect();
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
