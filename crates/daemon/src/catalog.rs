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
use weir_model::Pipeline;
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
    /// Whether its text mentions `models` at all: a run of a pipeline that
    /// cannot read the registry spares reading it at creation.
    pub reads_models: bool,
}

impl Loaded {
    pub(crate) fn new(
        pipeline: Pipeline,
        path: PathBuf,
        hash: String,
        source: &str,
        commit: Option<String>,
    ) -> Loaded {
        Loaded {
            reads_models: source.contains("models"),
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

/// Loads every `*.yaml`/`*.yml` below `dir`.
pub fn load_pipelines(dir: &Path) -> Scan {
    let mut files = Vec::new();
    collect(dir, &mut files);
    files.sort();
    let mut scan = Scan::default();
    let mut names: HashMap<String, PathBuf> = HashMap::new();
    for path in files {
        let shown = path.display().to_string();
        let source = match std::fs::read_to_string(&path) {
            Ok(source) => source,
            Err(e) => {
                scan.problems.push(format!("{shown}: cannot read: {e}"));
                scan.failed.push(path);
                continue;
            }
        };
        let validated = weir_model::validate(&source);
        scan.problems.extend(
            validated
                .diagnostics
                .iter()
                .filter(|d| d.is_error())
                .map(|d| format!("{shown}:{d}")),
        );
        let Some(pipeline) = validated.pipeline else {
            scan.failed.push(path);
            continue;
        };
        if let Some(other) = names.get(&pipeline.name.value) {
            scan.problems.push(format!(
                "{shown}:{}: pipeline name '{}' is already used by {}",
                pipeline.name.pos,
                pipeline.name.value,
                other.display()
            ));
            scan.failed.push(path);
            continue;
        }
        names.insert(pipeline.name.value.clone(), path.clone());
        scan.loaded.push((pipeline, path, source));
    }
    scan
}

/// What each pipeline file looks like from outside (size and modification
/// time): a change of it is a reason to load the folder again.
pub(crate) fn fingerprint(dir: &Path) -> Vec<(PathBuf, u64, Option<std::time::SystemTime>)> {
    let mut files = Vec::new();
    collect(dir, &mut files);
    files.sort();
    files
        .into_iter()
        .map(|path| {
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

pub(crate) fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let hidden = entry.file_name().to_string_lossy().starts_with('.');
        if hidden {
            continue;
        }
        if path.is_dir() {
            collect(&path, out);
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml")
        ) {
            out.push(path);
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
            next.insert(
                name,
                Loaded::new(pipeline, path, hash, &source, commit.clone()),
            );
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
