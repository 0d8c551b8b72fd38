//! Settings, in layers: built-in defaults, then `weir.toml`, then `WEIR_*`
//! environment variables, then flags. Each resolved value remembers where
//! it came from, which `weir config` prints.

use serde::Deserialize;
use std::fmt;
use std::path::{Path, PathBuf};

/// The keys a `weir.toml` may hold; any other key is an error.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct File {
    pub(crate) pipelines: Option<PathBuf>,
    pub(crate) listen: Option<String>,
    pub(crate) tls_cert: Option<PathBuf>,
    pub(crate) tls_key: Option<PathBuf>,
    pub(crate) data: Option<PathBuf>,
    pub(crate) db: Option<String>,
    pub(crate) max_running: Option<usize>,
    pub(crate) grace: Option<u64>,
    pub(crate) gpus: Option<Vec<String>>,
    pub(crate) keep_containers: Option<bool>,
    pub(crate) log_format: Option<LogFormat>,
    /// Named API tokens: name → the environment variable holding it.
    pub(crate) tokens: Option<std::collections::BTreeMap<String, String>>,
    /// The MLflow server runs and registrations are mirrored to.
    pub(crate) mlflow: Option<MlflowFile>,
    /// What the store keeps.
    pub(crate) retention: Option<RetentionFile>,
}

/// The `[retention]` table of `weir.toml`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RetentionFile {
    /// Finished runs older than this are pruned (`30d`).
    pub(crate) runs: Option<String>,
}

/// The `[mlflow]` table of `weir.toml`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct MlflowFile {
    pub(crate) tracking_uri: Option<String>,
    pub(crate) experiment: Option<String>,
}

/// How the daemon writes its log lines (on stderr).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum LogFormat {
    /// One readable line per event.
    #[default]
    Text,
    /// One JSON object per event, for log collectors.
    Json,
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        })
    }
}

/// The `--config` flag.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct ConfigArgs {
    /// The settings file (default: ./weir.toml when it exists).
    #[arg(long, env = "WEIR_CONFIG", value_name = "FILE", global = true)]
    pub(crate) config: Option<PathBuf>,
}

/// Where a setting's value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Source {
    Default,
    File(PathBuf),
    Env(&'static str),
    Flag,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Default => f.write_str("default"),
            Source::File(path) => write!(f, "{}", path.display()),
            Source::Env(var) => write!(f, "env {var}"),
            Source::Flag => f.write_str("flag"),
        }
    }
}

/// The settings file, read, and the sources of the values picked so far.
pub(crate) struct Layers {
    pub(crate) file: File,
    path: Option<PathBuf>,
    /// Each setting with its shown value and source, in resolution order.
    pub(crate) picked: Vec<(&'static str, String, Source)>,
}

impl Layers {
    /// Reads the settings file named by `args` (missing: an error), else
    /// `./weir.toml` if there is one. A file with a syntax error or an
    /// unknown key is refused, naming the line.
    pub(crate) fn read(args: &ConfigArgs) -> anyhow::Result<Layers> {
        let path = match &args.config {
            Some(path) => Some(path.clone()),
            None => Some(PathBuf::from("weir.toml")).filter(|p| p.is_file()),
        };
        let Some(path) = path else {
            return Ok(Layers {
                file: File::default(),
                path: None,
                picked: Vec::new(),
            });
        };
        let text = std::fs::read_to_string(&path).map_err(|e| {
            anyhow::anyhow!("cannot read the settings file {}: {e}", path.display())
        })?;
        let mut file: File = toml::from_str(&text).map_err(|e| {
            anyhow::anyhow!(
                "{}: {}",
                path.display(),
                e.to_string().trim_end().replace("TOML parse error at ", "")
            )
        })?;
        // Paths in the file are relative to the file's folder.
        let base = path.parent().unwrap_or(Path::new("")).to_owned();
        for dir in [&mut file.pipelines, &mut file.data].into_iter().flatten() {
            if dir.is_relative() {
                *dir = base.join(&*dir);
            }
        }
        Ok(Layers {
            file,
            path: Some(path),
            picked: Vec::new(),
        })
    }

    /// The value of setting `key`: `given` (a flag, or `env` when set and
    /// no flag was), else the file's, else `default`; records the source.
    pub(crate) fn pick<T: Clone + Show>(
        &mut self,
        key: &'static str,
        env: Option<&'static str>,
        given: Option<T>,
        from_file: impl FnOnce(&File) -> Option<T>,
        default: T,
    ) -> T {
        let (value, source) = if let Some(value) = given {
            (value, given_source(key, env))
        } else if let Some(value) = from_file(&self.file) {
            let path = self.path.clone().unwrap_or_default();
            (value, Source::File(path))
        } else {
            (default, Source::Default)
        };
        self.picked.push((key, value.show(), source));
        value
    }
}

/// Whether a value clap gave came from the flag or from its variable.
fn given_source(key: &str, env: Option<&'static str>) -> Source {
    let flag = format!("--{}", key.replace('_', "-"));
    let on_command_line = std::env::args().any(|a| a == flag || a.starts_with(&format!("{flag}=")));
    match env {
        Some(var) if !on_command_line && std::env::var_os(var).is_some() => Source::Env(var),
        _ => Source::Flag,
    }
}

/// How a setting's value is shown by `weir config`.
pub(crate) trait Show {
    fn show(&self) -> String;
}

impl Show for PathBuf {
    fn show(&self) -> String {
        self.display().to_string()
    }
}

impl Show for String {
    fn show(&self) -> String {
        self.clone()
    }
}

impl Show for u64 {
    fn show(&self) -> String {
        self.to_string()
    }
}

impl Show for bool {
    fn show(&self) -> String {
        self.to_string()
    }
}

impl Show for LogFormat {
    fn show(&self) -> String {
        self.to_string()
    }
}

impl<T: Show> Show for Option<T> {
    fn show(&self) -> String {
        self.as_ref()
            .map_or_else(|| "(auto)".to_owned(), Show::show)
    }
}

impl Show for usize {
    fn show(&self) -> String {
        self.to_string()
    }
}

impl Show for Vec<String> {
    fn show(&self) -> String {
        self.join(",")
    }
}

/// Sets up the log lines on stderr: `WEIR_LOG` filters them (as
/// `RUST_LOG` does; default `level`), `format` shapes them.
pub(crate) fn init_logging(format: LogFormat, level: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("WEIR_LOG").unwrap_or_else(|_| EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // A log line that cannot be written (stderr on a full disk) is
        // dropped: reporting it would panic the task that logged it and
        // close that request's connection without an answer.
        .log_internal_errors(false)
        .with_target(false)
        // Colours for a person at a terminal; a file or a collector gets
        // plain text, and NO_COLOR (no-color.org) turns them off.
        .with_ansi(
            std::io::IsTerminal::is_terminal(&std::io::stderr())
                && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
        );
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
    };
}
