//! Finding pipeline files: the paths given, with folders searched
//! recursively for `*.yaml` and `*.yml`.

use std::path::{Path, PathBuf};

/// A path given on the command line that cannot be used.
pub(crate) struct Unreadable {
    pub(crate) path: PathBuf,
    pub(crate) reason: String,
}

/// Expands `paths` into pipeline files, sorted within each folder.
pub(crate) fn collect(paths: &[PathBuf]) -> (Vec<PathBuf>, Vec<Unreadable>) {
    let mut files = Vec::new();
    let mut unreadable = Vec::new();
    for path in paths {
        if path.is_dir() {
            walk(path, &mut files, &mut unreadable);
        } else if path.exists() {
            files.push(path.clone());
        } else {
            unreadable.push(Unreadable {
                path: path.clone(),
                reason: "no such file or folder".to_owned(),
            });
        }
    }
    (files, unreadable)
}

fn walk(dir: &Path, files: &mut Vec<PathBuf>, unreadable: &mut Vec<Unreadable>) {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            unreadable.push(Unreadable {
                path: dir.to_owned(),
                reason: e.to_string(),
            });
            return;
        }
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for path in paths {
        let hidden = path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with('.'));
        if hidden {
            continue;
        }
        if path.is_dir() {
            walk(&path, files, unreadable);
        } else if is_pipeline_file(&path) {
            files.push(path);
        }
    }
}

/// Whether `path` is named like a pipeline file.
pub(crate) fn is_pipeline_file(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml")
    )
}

/// Reads and validates one pipeline file, printing its diagnostics as
/// `path:line:col: message`; `None` when it has errors.
pub(crate) fn load_pipeline(path: &Path) -> anyhow::Result<Option<(weir_model::Pipeline, String)>> {
    use anyhow::Context as _;
    let shown = path.display();
    let source = std::fs::read_to_string(path).with_context(|| format!("cannot read {shown}"))?;
    let validated = weir_model::validate(&source);
    for d in &validated.diagnostics {
        eprintln!("{shown}:{d}");
    }
    Ok(validated.pipeline.map(|p| (p, source)))
}
