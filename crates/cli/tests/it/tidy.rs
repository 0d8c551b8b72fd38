//! Rules of the workspace that no compiler checks: the pure crates stay
//! free of runtime, database, Docker and HTTP dependencies, each crate
//! depends only on the layers below it, the two migration folders are
//! twins, and every Rust file says what it is for in a `//!` line.

use crate::root;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Crates that hold the logic and must stay testable without IO.
const PURE: &[&str] = &["weir-model", "weir-expr", "weir-engine"];
/// Dependencies that would pull IO into a pure crate.
const FORBIDDEN: &[&str] = &["tokio", "sqlx", "bollard", "axum", "hyper", "reqwest"];

#[test]
fn pure_crates_do_not_depend_on_io() {
    let out = Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--locked"])
        .current_dir(root())
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let metadata: serde_json::Value = serde_json::from_slice(&out.stdout).expect("metadata JSON");
    let nodes = metadata["resolve"]["nodes"]
        .as_array()
        .expect("resolve graph");
    let name_of = |id: &str| -> String {
        metadata["packages"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["id"] == id))
            .and_then(|p| p["name"].as_str())
            .unwrap_or_default()
            .to_owned()
    };
    for pure in PURE {
        let Some(start) = metadata["packages"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["name"] == *pure))
            .and_then(|p| p["id"].as_str())
        else {
            continue; // not written yet
        };
        // Walk normal (non-dev, non-build) dependencies transitively.
        let mut seen = BTreeSet::new();
        let mut stack = vec![start.to_owned()];
        while let Some(id) = stack.pop() {
            if !seen.insert(id.clone()) {
                continue;
            }
            let node = nodes.iter().find(|n| n["id"] == id.as_str()).expect("node");
            for dep in node["deps"].as_array().into_iter().flatten() {
                let normal = dep["dep_kinds"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|k| k["kind"].is_null());
                if normal {
                    stack.push(dep["pkg"].as_str().unwrap_or_default().to_owned());
                }
            }
        }
        let names: BTreeSet<String> = seen.iter().map(|id| name_of(id)).collect();
        // The walk works: both pure crates use serde_json.
        assert!(
            names.contains("serde_json"),
            "{pure}: dependency walk found {names:?}"
        );
        let bad: Vec<&&str> = FORBIDDEN.iter().filter(|f| names.contains(**f)).collect();
        assert!(
            bad.is_empty(),
            "{pure} depends on {bad:?}: pure crates do no IO"
        );
    }
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("readable dir").flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if path.is_dir() && name != "target" && !name.starts_with('.') {
            rust_files(&path, out);
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_rust_file_starts_with_its_purpose() {
    let mut files = Vec::new();
    rust_files(&root().join("crates"), &mut files);
    rust_files(&root().join("fuzz"), &mut files);
    assert!(files.len() > 10);
    let missing: Vec<String> = files
        .iter()
        .filter(|path| {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            !text.starts_with("//!")
        })
        .map(|p| p.display().to_string())
        .collect();
    assert!(
        missing.is_empty(),
        "files without a //! line at the top: {missing:#?}"
    );
}

#[test]
fn every_diagnostic_code_has_a_section_in_the_docs() {
    let doc = std::fs::read_to_string(root().join("docs/errors.md")).expect("docs/errors.md");
    let headings: Vec<&str> = doc.lines().filter_map(|l| l.strip_prefix("## ")).collect();
    let codes: Vec<&str> = weir_model::Code::ALL.iter().map(|c| c.as_str()).collect();
    assert_eq!(
        headings, codes,
        "docs/errors.md sections differ from weir_model::Code::ALL"
    );
}

fn schema_keys(value: &serde_json::Value, out: &mut BTreeSet<String>) {
    if let Some(map) = value.as_object() {
        if let Some(props) = map.get("properties").and_then(|p| p.as_object()) {
            out.extend(props.keys().cloned());
        }
        map.values().for_each(|v| schema_keys(v, out));
    } else if let Some(items) = value.as_array() {
        items.iter().for_each(|v| schema_keys(v, out));
    }
}

#[test]
fn every_key_of_the_format_is_in_the_reference() {
    let doc =
        std::fs::read_to_string(root().join("docs/pipeline-reference.md")).expect("reference");
    let mut keys = BTreeSet::new();
    schema_keys(&weir_model::schema(), &mut keys);
    assert!(keys.len() > 40, "{keys:?}");
    let missing: Vec<&String> = keys
        .iter()
        .filter(|k| !doc.contains(&format!("`{k}`")) && !doc.contains(&format!("{k}:")))
        .collect();
    assert!(
        missing.is_empty(),
        "keys missing from docs/pipeline-reference.md: {missing:?}"
    );
}

/// Which of weir's crates each crate may depend on (normal dependencies;
/// dev-dependencies are free). The layers point one way: nothing depends on
/// a crate above it, and the executor is a leaf, knowing no pipeline.
const LAYERS: &[(&str, &[&str])] = &[
    ("weir-expr", &[]),
    ("weir-model", &["weir-expr"]),
    ("weir-engine", &["weir-model", "weir-expr"]),
    ("weir-store", &["weir-engine"]),
    ("weir-executor", &[]),
    ("weir-api", &[]),
    (
        "weir-daemon",
        &["weir-engine", "weir-store", "weir-executor", "weir-model"],
    ),
    (
        "weir-server",
        &[
            "weir-daemon",
            "weir-api",
            "weir-engine",
            "weir-store",
            "weir-model",
        ],
    ),
    (
        "weir-cli",
        &["weir-daemon", "weir-server", "weir-api", "weir-model"],
    ),
];
#[test]
fn crates_depend_only_on_the_layers_below_them() {
    let out = Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--locked", "--no-deps"])
        .current_dir(root())
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let metadata: serde_json::Value = serde_json::from_slice(&out.stdout).expect("metadata JSON");
    let packages = metadata["packages"].as_array().expect("packages");
    let mut seen = BTreeSet::new();
    for package in packages {
        let name = package["name"].as_str().unwrap_or_default();
        let Some((_, allowed)) = LAYERS.iter().find(|(crate_name, _)| *crate_name == name) else {
            if name.starts_with("weir-") {
                panic!("{name} has no row in tidy.rs LAYERS: say what it may depend on");
            }
            continue;
        };
        seen.insert(name.to_owned());
        let weir_deps: BTreeSet<&str> = package["dependencies"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|d| d["kind"].is_null())
            .filter_map(|d| d["name"].as_str())
            .filter(|d| d.starts_with("weir-"))
            .collect();
        let extra: Vec<&&str> = weir_deps.iter().filter(|d| !allowed.contains(*d)).collect();
        assert!(
            extra.is_empty(),
            "{name} depends on {extra:?}, outside its row in LAYERS ({allowed:?})"
        );
    }
    assert_eq!(seen.len(), LAYERS.len(), "a row of LAYERS names no crate");
}

#[test]
fn both_databases_have_the_same_migrations() {
    let names = |db: &str| -> Vec<String> {
        let dir = root().join("crates/store/migrations").join(db);
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    let sqlite = names("sqlite");
    assert!(sqlite.len() >= 9, "{sqlite:?}");
    assert_eq!(
        sqlite,
        names("postgres"),
        "migrations/sqlite and migrations/postgres must hold the same files"
    );
}

#[test]
fn library_crates_return_typed_errors_not_strings() {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(root().join("crates"))
        .expect("crates")
        .flatten()
    {
        // The binary may: clap's value parsers take `Result<_, String>`.
        if entry.file_name() != "cli" {
            rust_files(&entry.path().join("src"), &mut files);
        }
    }
    assert!(files.len() > 20, "{files:?}");
    let mut found = Vec::new();
    for path in &files {
        let text = std::fs::read_to_string(path).expect("readable");
        for (number, line) in text.lines().enumerate() {
            let stringly = line.contains("Err = String")
                || (line.contains("Result<") && line.contains(", String>"));
            if stringly {
                found.push(format!(
                    "{}:{}: {}",
                    path.display(),
                    number + 1,
                    line.trim()
                ));
            }
        }
    }
    assert!(
        found.is_empty(),
        "library crates return a thiserror enum, not a String error:\n{}",
        found.join("\n")
    );
}
