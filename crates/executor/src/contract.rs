//! The step contract every executor honours: the `WEIR_*` environment, the
//! run's work folder and the attempt's out folder, and the `metrics.json`
//! and `outputs.json` read back after exit.

use crate::executor::{Exit, Launch, Object};
use serde_json::{Map, Value as Json};
use std::path::Path;

/// Largest `metrics.json` or `outputs.json` weir reads, in bytes.
pub const OUTPUT_LIMIT: u64 = 1024 * 1024;

impl Launch {
    /// The environment the step sees, where `work` and `out` are the paths
    /// the step sees them at. Later entries win over earlier ones.
    pub fn contract_env(&self, work: &Path, out: &Path) -> Vec<(String, String)> {
        let mut env = vec![
            ("WEIR_RUN_ID".to_owned(), self.key.run.clone()),
            ("WEIR_PIPELINE".to_owned(), self.pipeline.clone()),
            ("WEIR_STEP".to_owned(), self.step.clone()),
            ("WEIR_ATTEMPT".to_owned(), self.key.attempt.to_string()),
            ("WEIR_WORK".to_owned(), work.display().to_string()),
            ("WEIR_OUT".to_owned(), out.display().to_string()),
        ];
        for (name, value) in &self.params {
            env.push((format!("WEIR_PARAM_{}", name.to_uppercase()), value.clone()));
        }
        env.extend(self.env.iter().cloned());
        env.extend(self.secrets.iter().cloned());
        env
    }
}

/// What is wrong with `metrics.json` or `outputs.json`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OutputError {
    /// The file could not be read.
    #[error("{name}: {reason}")]
    Unreadable {
        /// `metrics.json` or `outputs.json`.
        name: &'static str,
        /// The IO error, as text.
        reason: String,
    },
    /// It is larger than [`OUTPUT_LIMIT`].
    #[error("{name} is {size} bytes; the limit is {OUTPUT_LIMIT} (1 MiB)")]
    TooLarge {
        /// The file.
        name: &'static str,
        /// Its size.
        size: u64,
    },
    /// It is not JSON.
    #[error("{name} is not valid JSON: {reason}")]
    NotJson {
        /// The file.
        name: &'static str,
        /// The parser's message.
        reason: String,
    },
    /// It is JSON, but not an object.
    #[error("{name} must be a JSON object of {kind}, like {{\"name\": …}}")]
    NotObject {
        /// The file.
        name: &'static str,
        /// `numbers` or `strings`.
        kind: &'static str,
    },
    /// A value is of the wrong kind.
    #[error("{name}: '{key}' is {value}, but every value must be one of the {kind}")]
    BadValue {
        /// The file.
        name: &'static str,
        /// The key.
        key: String,
        /// The value, as JSON.
        value: String,
        /// `numbers` or `strings`.
        kind: &'static str,
    },
}

/// The exit of an attempt that exited with `exit_code`: its metrics and
/// outputs read from `out`, or the error that says which file is wrong.
pub fn collect(exit_code: Option<i32>, out: &Path) -> Exit {
    match read_outputs(out) {
        Ok((metrics, outputs)) => Exit {
            exit_code,
            metrics,
            outputs,
            ..Exit::default()
        },
        Err(error) => Exit {
            exit_code,
            error: Some(error.to_string()),
            ..Exit::default()
        },
    }
}

/// Reads `metrics.json` (a flat object of numbers) and `outputs.json` (a
/// flat object of strings) from `out`; either may be absent. The error
/// says which file is wrong and how.
pub fn read_outputs(out: &Path) -> Result<(Object, Object), OutputError> {
    let metrics = read_object(
        &out.join("metrics.json"),
        "metrics.json",
        "numbers",
        Json::is_number,
    )?;
    let outputs = read_object(
        &out.join("outputs.json"),
        "outputs.json",
        "strings",
        Json::is_string,
    )?;
    Ok((metrics, outputs))
}

fn read_object(
    path: &Path,
    name: &'static str,
    kind: &'static str,
    ok: fn(&Json) -> bool,
) -> Result<Map<String, Json>, OutputError> {
    let unreadable = |e: std::io::Error| OutputError::Unreadable {
        name,
        reason: e.to_string(),
    };
    let size = match std::fs::metadata(path) {
        Ok(meta) => meta.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Map::new()),
        Err(e) => return Err(unreadable(e)),
    };
    if size > OUTPUT_LIMIT {
        return Err(OutputError::TooLarge { name, size });
    }
    let text = std::fs::read_to_string(path).map_err(unreadable)?;
    let value: Json = serde_json::from_str(&text).map_err(|e| OutputError::NotJson {
        name,
        reason: e.to_string(),
    })?;
    let Json::Object(map) = value else {
        return Err(OutputError::NotObject { name, kind });
    };
    if let Some((key, value)) = map.iter().find(|(_, v)| !ok(v)) {
        return Err(OutputError::BadValue {
            name,
            key: key.clone(),
            value: value.to_string(),
            kind,
        });
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_flat_objects_and_refuses_others() {
        let dir = tempfile::tempdir().expect("temp dir");
        assert_eq!(read_outputs(dir.path()), Ok((Map::new(), Map::new())));
        std::fs::write(dir.path().join("metrics.json"), r#"{"acc": 0.9, "n": 3}"#).expect("write");
        std::fs::write(dir.path().join("outputs.json"), r#"{"version": "4"}"#).expect("write");
        let (metrics, outputs) = read_outputs(dir.path()).expect("valid");
        assert_eq!(metrics["acc"], 0.9);
        assert_eq!(outputs["version"], "4");
        std::fs::write(dir.path().join("metrics.json"), r#"{"acc": "high"}"#).expect("write");
        assert_eq!(
            read_outputs(dir.path()).map_err(|e| e.to_string()),
            Err(
                "metrics.json: 'acc' is \"high\", but every value must be one of the numbers"
                    .to_owned()
            )
        );
        std::fs::write(dir.path().join("metrics.json"), "[1]").expect("write");
        assert!(read_outputs(dir.path()).is_err_and(|e| {
            e.to_string()
                .starts_with("metrics.json must be a JSON object")
        }));
        std::fs::write(dir.path().join("metrics.json"), "{").expect("write");
        assert!(
            read_outputs(dir.path())
                .is_err_and(|e| e.to_string().starts_with("metrics.json is not valid JSON"))
        );
        std::fs::write(dir.path().join("metrics.json"), vec![b' '; 1024 * 1024 + 1])
            .expect("write");
        assert!(
            read_outputs(dir.path()).is_err_and(|e| e.to_string().contains("the limit is 1048576"))
        );
    }
}
