//! The pipelines the daemon serves: one scan of the folder (shared with
//! `weir validate`), the map of loaded pipelines by name, reloads when the
//! folder changes, and the stored versions runs were created from.
//!
//! **Invariant:** a file that stops validating never replaces the last
//! good version of its pipeline, and a run keeps the `Pipeline` it was
//! created with.

use crate::audit::Auditor;
use crate::runs::Daemon;
use crate::tasks::TaskKind;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use weir_model::{Code, Diagnostic, Pipeline, Pos};
use weir_store::Store;

/// A pipeline file the daemon serves.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The validated pipeline, shared by the runs started from it (a
    /// trigger, a scheduler tick or a webhook copies a pointer, not it).
    pub pipeline: Arc<Pipeline>,
    /// Its file.
    pub path: PathBuf,
    /// The SHA-256 of its text, as stored.
    pub hash: String,
    /// The git commit of the pipelines folder when it was loaded, if the
    /// folder is in a git repository.
    pub commit: Option<String>,
}

impl Loaded {
    pub(crate) fn new(
        pipeline: Pipeline,
        path: PathBuf,
        hash: String,
        commit: Option<String>,
    ) -> Loaded {
        Loaded {
            pipeline: Arc::new(pipeline),
            path,
            hash,
            commit,
        }
    }
}

/// What a look at the pipelines folder found.
#[derive(Debug, Default)]
pub struct Scan {
    /// The valid pipelines, with their file and text.
    pub loaded: Vec<(Pipeline, PathBuf, String)>,
    /// One line per problem of the other files (`path:line:col: message`).
    pub problems: Vec<String>,
    /// The files that did not load.
    pub failed: Vec<PathBuf>,
}

/// One file of a scan: its diagnostics, and its pipeline when it has no
/// error and its name is not taken by an earlier file.
#[derive(Debug)]
pub struct Scanned {
    /// The file.
    pub path: PathBuf,
    /// Its text (empty when it could not be read).
    pub source: String,
    /// Every problem, sorted by position; a name used twice is
    /// [`Code::DuplicatePipeline`].
    pub diagnostics: Vec<Diagnostic>,
    /// The pipeline, when the file has no error.
    pub pipeline: Option<Pipeline>,
}

/// Validates every pipeline file of `paths` (files, or folders searched
/// for `*.yaml` and `*.yml`, hidden entries skipped), in order: the one
/// scan `weir validate` and `weir serve` share. A path that cannot be
/// read is a file with one [`Code::Io`] diagnostic.
pub fn scan(paths: &[PathBuf]) -> Vec<Scanned> {
    let mut scanned = Vec::new();
    let mut names: HashMap<String, PathBuf> = HashMap::new();
    for (path, unreadable) in files(paths) {
        let read = match unreadable {
            Some(reason) => Err(reason),
            None => std::fs::read_to_string(&path).map_err(|e| e.to_string()),
        };
        let source = match read {
            Ok(source) => source,
            Err(reason) => {
                let d = Diagnostic::error(Pos::START, Code::Io, format!("cannot read: {reason}"));
                scanned.push(Scanned {
                    path,
                    source: String::new(),
                    diagnostics: vec![d],
                    pipeline: None,
                });
                continue;
            }
        };
        let mut validated = weir_model::validate(&source);
        if let Some(pipeline) = &validated.pipeline {
            let name = &pipeline.name;
            if let Some(other) = names.get(&name.value) {
                validated.diagnostics.push(Diagnostic::error(
                    name.pos,
                    Code::DuplicatePipeline,
                    format!(
                        "pipeline name '{}' is already used by {}: names must be unique",
                        name.value,
                        other.display()
                    ),
                ));
                validated.pipeline = None;
            } else {
                names.insert(name.value.clone(), path.clone());
            }
        }
        scanned.push(Scanned {
            path,
            source,
            diagnostics: validated.diagnostics,
            pipeline: validated.pipeline,
        });
    }
    scanned
}

/// Loads every pipeline file below `dir` ([`scan`]).
pub fn load_pipelines(dir: &Path) -> Scan {
    let mut result = Scan::default();
    for file in scan(&[dir.to_owned()]) {
        let shown = file.path.display().to_string();
        result.problems.extend(
            file.diagnostics
                .iter()
                .filter(|d| d.is_error())
                .map(|d| format!("{shown}:{d}")),
        );
        match file.pipeline {
            Some(pipeline) => result.loaded.push((pipeline, file.path, file.source)),
            None => result.failed.push(file.path),
        }
    }
    result
}

/// What each pipeline file looks like from outside (size and modification
/// time): a change of it is a reason to load the folder again.
pub(crate) fn fingerprint(dir: &Path) -> Vec<(PathBuf, u64, Option<std::time::SystemTime>)> {
    files(&[dir.to_owned()])
        .into_iter()
        .map(|(path, _)| {
            let meta = std::fs::metadata(&path).ok();
            let len = meta.as_ref().map_or(0, std::fs::Metadata::len);
            let modified = meta.and_then(|m| m.modified().ok());
            (path, len, modified)
        })
        .collect()
}

/// How a reload changed the served pipelines.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Reload {
    /// Pipelines new or changed, now served in their new version.
    pub changed: Vec<String>,
    /// Pipelines whose file is gone, no longer served.
    pub removed: Vec<String>,
    /// Pipelines whose file no longer validates: the last good version
    /// stays.
    pub kept: Vec<String>,
    /// The problems of the files that did not load.
    pub problems: Vec<String>,
}

/// The pipeline files of `paths`: files as given, folders walked
/// (sorted, hidden entries skipped) for `*.yaml` and `*.yml`; with the
/// reason for each path that cannot be used.
fn files(paths: &[PathBuf]) -> Vec<(PathBuf, Option<String>)> {
    let mut found = Vec::new();
    for path in paths {
        if path.is_dir() {
            walk(path, &mut found);
        } else if path.exists() {
            found.push((path.clone(), None));
        } else {
            found.push((path.clone(), Some("no such file or folder".to_owned())));
        }
    }
    found
}

fn walk(dir: &Path, found: &mut Vec<(PathBuf, Option<String>)>) {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            found.push((dir.to_owned(), Some(e.to_string())));
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
            walk(&path, found);
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml")
        ) {
            found.push((path, None));
        }
    }
}

impl Daemon {
    /// Loads the pipelines folder again: new and changed files are served
    /// from now on (runs in progress go on with the version they started
    /// with), removed files are no longer served, and a file that no longer
    /// validates keeps its last good version.
    pub async fn reload(&self) -> Result<Reload, weir_store::Error> {
        let Some(dir) = &self.dir else {
            return Ok(Reload::default());
        };
        let scan = load_pipelines(dir);
        let commit = git_commit(dir);
        let mut report = Reload {
            problems: scan.problems,
            ..Reload::default()
        };
        let mut next = BTreeMap::new();
        for (pipeline, path, source) in scan.loaded {
            let name = pipeline.name.value.clone();
            let hash = self.store.save_pipeline(&name, &source).await?;
            let same = self
                .pipeline(&name)
                .is_some_and(|old| old.hash == hash && old.path == path);
            if !same {
                report.changed.push(name.clone());
            }
            next.insert(name, Loaded::new(pipeline, path, hash, commit.clone()));
        }
        let mut pipelines = self.lock_pipelines();
        for (name, old) in pipelines.iter() {
            if next.contains_key(name) {
                continue;
            }
            if scan.failed.contains(&old.path) {
                report.kept.push(name.clone());
                next.insert(name.clone(), old.clone());
            } else {
                report.removed.push(name.clone());
            }
        }
        for name in &report.changed {
            record_loaded(&self.audit, "pipeline.loaded", &next[name]);
        }
        for name in &report.kept {
            record_loaded(&self.audit, "pipeline.rejected", &next[name]);
        }
        for name in &report.removed {
            record_loaded(&self.audit, "pipeline.removed", &pipelines[name]);
        }
        *pipelines = next;
        Ok(report)
    }

    /// Watches the pipelines folder: once a second, a change of any file's
    /// size or modification time reloads it. Polling rather than inotify
    /// sees edits through bind mounts, network file systems and editors'
    /// rename-on-save alike.
    pub(crate) fn spawn_watcher(self: &Arc<Self>) {
        let Some(dir) = self.dir.clone() else {
            return;
        };
        let daemon = Arc::downgrade(self);
        let mut seen = fingerprint(&dir);
        let stop = self.tasks.stopping();
        self.tasks.spawn(TaskKind::Watcher, async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    () = stop.cancelled() => return,
                }
                let Some(daemon) = daemon.upgrade() else {
                    return;
                };
                let now = fingerprint(&dir);
                if now == seen {
                    continue;
                }
                seen = now;
                match daemon.reload().await {
                    Ok(report) => log_reload(&report),
                    Err(e) => tracing::error!(error = %e, "pipelines could not be reloaded"),
                }
            }
        });
    }
}

/// Why the pipeline a run was created from cannot be had.
#[derive(Debug, thiserror::Error)]
pub enum StoredError {
    /// Its version is not in the store.
    #[error("run {run}: its pipeline version {hash} is missing from the store")]
    Missing {
        /// The run.
        run: String,
        /// The version.
        hash: String,
    },
    /// Its version no longer validates (a newer weir is stricter).
    #[error("run {run}: its pipeline version {hash} no longer validates: {problems}")]
    Invalid {
        /// The run.
        run: String,
        /// The version.
        hash: String,
        /// The first problems, as `line:col: message`.
        problems: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] weir_store::Error),
}

/// The pipeline version run `run` was created from, validated, with its
/// hash: the one way restart, retry, lineage and `weir resume` get it.
pub async fn stored(store: &Store, run: &str) -> Result<(Arc<Pipeline>, String), StoredError> {
    let hash = store.run_pipeline_hash(run).await?;
    let Some(source) = store.pipeline_source(&hash).await? else {
        return Err(StoredError::Missing {
            run: run.to_owned(),
            hash,
        });
    };
    let validated = weir_model::validate(&source);
    match validated.pipeline {
        Some(pipeline) => Ok((Arc::new(pipeline), hash)),
        None => {
            let problems: Vec<String> = validated
                .diagnostics
                .iter()
                .filter(|d| d.is_error())
                .take(3)
                .map(ToString::to_string)
                .collect();
            Err(StoredError::Invalid {
                run: run.to_owned(),
                hash,
                problems: problems.join("; "),
            })
        }
    }
}

/// The commit checked out in the git repository holding `dir`, if any
/// (`git rev-parse HEAD`; no git, or not a repository: none).
pub(crate) fn git_commit(dir: &Path) -> Option<String> {
    if !in_git_repository(dir) {
        return None;
    }
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["rev-parse", "HEAD"])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    let commit = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (out.status.success() && commit.len() >= 40).then_some(commit)
}

/// Whether `dir` or a folder above it holds a `.git` (a repository's
/// folder, or the file of a worktree or submodule), or `GIT_DIR` names
/// one: only then is git asked, whose start costs more than the rest of
/// a cold one-step `weir run`.
fn in_git_repository(dir: &Path) -> bool {
    if std::env::var_os("GIT_DIR").is_some() {
        return true;
    }
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    match std::path::absolute(dir) {
        Ok(dir) => dir.ancestors().any(|d| d.join(".git").exists()),
        // Git decides.
        Err(_) => true,
    }
}

pub(crate) fn record_loaded(audit: &Auditor, action: &'static str, loaded: &Loaded) {
    audit.record(
        "weir",
        action,
        &loaded.pipeline.name.value,
        serde_json::json!({ "hash": loaded.hash, "file": loaded.path.display().to_string() }),
    );
}

pub(crate) fn log_reload(report: &Reload) {
    for problem in &report.problems {
        tracing::warn!(problem = %problem, "pipeline file does not validate");
    }
    for name in &report.kept {
        tracing::warn!(pipeline = %name, "pipeline file has errors; the last good version stays active");
    }
    for name in &report.changed {
        tracing::info!(pipeline = %name, "pipeline loaded");
    }
    for name in &report.removed {
        tracing::info!(pipeline = %name, "pipeline file removed; no longer served");
    }
}

pub(crate) fn suggestion(name: &str, names: &[String]) -> String {
    weir_model::did_you_mean(name, names.iter().map(String::as_str))
}
