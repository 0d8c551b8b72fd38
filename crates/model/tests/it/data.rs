//! Pipeline files beside their expected output: every file in
//! `test_data/invalid` with its diagnostics (`.diag`), every file in
//! `test_data/valid` with its plan (`.plan`, params from a first line
//! `# plan: name=value …`). Regenerate the expectations on
//! purpose with `UPDATE_EXPECT=1 cargo test -p weir-model`, then read the diff.

use crate::{test_data, yaml_files};
use expect_test::expect_file;
use std::collections::BTreeSet;
use std::path::Path;
use weir_model::{Code, Diagnostic};

fn render(diagnostics: &[Diagnostic]) -> String {
    diagnostics
        .iter()
        .map(|d| {
            let severity = if d.is_error() { "error" } else { "warning" };
            format!(
                "{}:{}: {severity}[{}]: {}\n",
                d.pos.line, d.pos.column, d.code, d.message
            )
        })
        .collect()
}

/// Validates `path` and compares the outcome with the file beside it.
fn check(path: &Path) -> Vec<Diagnostic> {
    let source = std::fs::read_to_string(path).expect("test file is readable");
    let validated = weir_model::validate(&source);
    let mut actual = render(&validated.diagnostics);
    let expected_path = if validated.has_errors() {
        path.with_extension("diag")
    } else {
        let pipeline = validated
            .pipeline
            .as_ref()
            .expect("a valid file has a pipeline");
        // A first line `# plan: name=value …` gives the params to plan with.
        let params: Vec<(String, String)> = source
            .lines()
            .next()
            .and_then(|line| line.strip_prefix("# plan:"))
            .map(|rest| {
                rest.split_whitespace()
                    .filter_map(|kv| kv.split_once('='))
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect()
            })
            .unwrap_or_default();
        match weir_model::plan(pipeline, &params) {
            Ok(plan) => actual.push_str(&plan.to_string()),
            Err(errors) => actual.push_str(&errors.join("\n")),
        }
        path.with_extension("plan")
    };
    expect_file![expected_path].assert_eq(&actual);
    validated.diagnostics
}

#[test]
fn invalid_files_report_their_diagnostics() {
    let files = yaml_files(&test_data("invalid"));
    assert!(files.len() >= 40, "only {} invalid test files", files.len());
    for path in &files {
        let diagnostics = check(path);
        assert!(
            diagnostics.iter().any(Diagnostic::is_error),
            "{} is in invalid/ but has no error",
            path.display()
        );
    }
}

#[test]
fn every_check_has_a_file_that_trips_it() {
    let mut codes = BTreeSet::new();
    for kind in ["invalid", "valid"] {
        for path in yaml_files(&test_data(kind)) {
            let source = std::fs::read_to_string(&path).expect("readable");
            codes.extend(
                weir_model::validate(&source)
                    .diagnostics
                    .iter()
                    .map(|d| d.code),
            );
        }
    }
    // The two codes left are the CLI's: an unreadable file, and duplicate
    // names across files (both tested in crates/cli/tests).
    let missing: Vec<Code> = Code::ALL
        .into_iter()
        .filter(|c| !matches!(c, Code::Io | Code::DuplicatePipeline) && !codes.contains(c))
        .collect();
    assert!(missing.is_empty(), "no test file produces {missing:?}");
}

#[test]
fn valid_files_plan_as_expected() {
    let files = yaml_files(&test_data("valid"));
    assert!(!files.is_empty());
    for path in &files {
        let diagnostics = check(path);
        assert!(
            !diagnostics.iter().any(Diagnostic::is_error),
            "{} is in valid/ but has errors",
            path.display()
        );
    }
}

#[test]
fn example_pipelines_are_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../pipelines");
    let files = yaml_files(&dir);
    assert!(files.len() >= 3, "pipelines/ should hold the examples");
    for path in files {
        let source = std::fs::read_to_string(&path).expect("readable");
        let validated = weir_model::validate(&source);
        assert_eq!(render(&validated.diagnostics), "", "{}", path.display());
        assert!(validated.pipeline.is_some());
    }
}
