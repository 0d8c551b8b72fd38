//! `weir validate`: exit codes, the `path:line:col: message` lines, JSON.

use crate::{stderr, stdout, weir, weir_in};

#[test]
fn example_pipelines_are_ok() {
    let out = weir(&["validate", "pipelines/"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "pipelines/churn.yaml: ok, 8 steps\npipelines/drift-retrain.yaml: ok, 5 steps\npipelines/quickstart.yaml: ok, 1 step\n"
    );
    assert_eq!(stderr(&out), "");
}

#[test]
fn defaults_to_the_pipelines_folder() {
    let out = weir(&["validate"]);
    assert!(out.status.success());
    assert!(stdout(&out).contains("pipelines/churn.yaml: ok, 8 steps"));
}

#[test]
fn every_problem_is_one_line_with_its_position() {
    let path = "crates/model/test_data/invalid/many-errors.yaml";
    let out = weir(&["validate", path]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stdout(&out), "");
    let lines: Vec<String> = stderr(&out).lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), 8, "{lines:#?}");
    assert!(lines.iter().all(|l| l.starts_with(&format!("{path}:"))));
    assert!(lines.contains(&format!(
        "{path}:12:13: unknown step 'ingst' in needs (did you mean 'ingest'?)"
    )));
}

#[test]
fn json_output_lists_diagnostics_for_editors() {
    let path = "crates/model/test_data/invalid/unknown-need.yaml";
    let out = weir(&[
        "validate",
        "--output",
        "json",
        path,
        "pipelines/quickstart.yaml",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_eq!(
        json,
        serde_json::json!([{
            "path": path,
            "line": 6,
            "column": 13,
            "severity": "error",
            "code": "unknown-need",
            "message": "unknown step 'trian' in needs (did you mean 'train'?)",
        }])
    );
}

#[test]
fn json_output_of_valid_files_is_an_empty_list() {
    let out = weir(&["validate", "--output", "json", "pipelines"]);
    assert!(out.status.success());
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("JSON"),
        serde_json::json!([])
    );
}

#[test]
fn pipeline_names_are_unique_across_files() {
    let dir = tempfile::tempdir().expect("temp dir");
    let body = "name: same\nsteps:\n  a: { run: echo, executor: process }\n";
    std::fs::write(dir.path().join("a.yaml"), body).expect("write");
    std::fs::create_dir(dir.path().join("nested")).expect("mkdir");
    std::fs::write(dir.path().join("nested/b.yml"), body).expect("write");
    std::fs::write(dir.path().join("notes.txt"), "not a pipeline").expect("write");
    let out = weir_in(dir.path(), &["validate", "."]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stdout(&out), "./a.yaml: ok, 1 step\n");
    assert_eq!(
        stderr(&out),
        "./nested/b.yml:1:7: pipeline name 'same' is already used by ./a.yaml: names must be unique\n"
    );
}

#[test]
fn a_missing_path_is_an_error_not_a_panic() {
    let out = weir(&["validate", "no/such/file.yaml"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "no/such/file.yaml:1:1: cannot read: no such file or folder\n"
    );
}

#[test]
fn a_folder_without_pipelines_fails() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = weir_in(dir.path(), &["validate", "."]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no pipeline files"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_file_that_is_not_utf8_is_reported() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("bad.yaml"), [0xff, 0xfe, 0x00]).expect("write");
    let out = weir_in(dir.path(), &["validate", "bad.yaml"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).starts_with("bad.yaml:1:1: cannot read:"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn warnings_are_printed_but_do_not_fail() {
    let path = "crates/model/test_data/valid/process-with-image.yaml";
    let out = weir(&["validate", path]);
    assert!(out.status.success());
    assert_eq!(stdout(&out), format!("{path}: ok, 2 steps\n"));
    assert_eq!(
        stderr(&out),
        format!(
            "{path}:6:5: warning: image is ignored by the process executor: remove it, or use 'executor: docker'\n"
        )
    );
    let out = weir(&["validate", "--output", "json", path]);
    assert!(out.status.success());
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(json[0]["severity"], "warning");
    assert_eq!(json[0]["code"], "ignored-key");
}
