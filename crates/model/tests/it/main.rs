//! The model's integration tests: pipeline files as data, the schema
//! against the parser, and properties of the parser.

mod data;
mod kept;
mod props;
mod schema;

use std::path::{Path, PathBuf};

/// The crate's `test_data/<kind>` folder.
fn test_data(kind: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("test_data")
        .join(kind)
}

/// The `*.yaml` files of a folder, sorted.
fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    files
}
