//! The step contract every executor honours: the `WEIR_*` environment, the
//! run's work folder and the attempt's out folder, and the `metrics.json`
//! and `outputs.json` read back after exit.

use serde_json::{Map, Value as Json};
use std::path::{Path, PathBuf};
use weir_engine::Prepared;

/// A flat JSON object, as `metrics.json` and `outputs.json` hold.
pub type Object = Map<String, Json>;

/// Largest `metrics.json` or `outputs.json` weir reads, in bytes.
pub const OUTPUT_LIMIT: u64 = 1024 * 1024;

/// One attempt to run, with everything an executor needs.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// The run's id.
    pub run_id: String,
    /// The pipeline's name.
    pub pipeline: String,
    /// The step instance's id (`train[lr=0.1]`).
    pub step: String,
    /// The attempt's number, from 1.
    pub number: u32,
    /// The run's params.
    pub params: Vec<(String, String)>,
    /// The rendered program, env and resources.
    pub prepared: Prepared,
    /// The run's workspace, shared by its steps.
    pub work: PathBuf,
    /// This attempt's output folder.
    pub out: PathBuf,
    /// Secret names with their values, from the daemon's environment.
    pub secrets: Vec<(String, String)>,
    /// GPU device ids granted to the attempt.
    pub gpus: Vec<String>,
    /// How long a stopped step may take to exit after SIGTERM.
    pub grace: std::time::Duration,
}

impl Attempt {
    /// The environment the step sees, where `work` and `out` are the paths
    /// the step sees them at. Later entries win over earlier ones.
    pub fn env(&self, work: &Path, out: &Path) -> Vec<(String, String)> {
        let mut env = vec![
            ("WEIR_RUN_ID".to_owned(), self.run_id.clone()),
            ("WEIR_PIPELINE".to_owned(), self.pipeline.clone()),
            ("WEIR_STEP".to_owned(), self.step.clone()),
            ("WEIR_ATTEMPT".to_owned(), self.number.to_string()),
            ("WEIR_WORK".to_owned(), work.display().to_string()),
            ("WEIR_OUT".to_owned(), out.display().to_string()),
        ];
        for (name, value) in &self.params {
            env.push((format!("WEIR_PARAM_{}", name.to_uppercase()), value.clone()));
        }
        env.extend(self.prepared.env.iter().cloned());
        env.extend(self.secrets.iter().cloned());
        env
    }
}

/// The outcome of an attempt that exited with `exit_code`: its metrics and
/// outputs read from `out`, or the error that says which file is wrong.
pub fn collect(exit_code: Option<i32>, out: &Path) -> weir_engine::Outcome {
    match read_outputs(out) {
        Ok((metrics, outputs)) => weir_engine::Outcome {
            exit_code,
            metrics,
            outputs,
            ..weir_engine::Outcome::default()
        },
        Err(error) => weir_engine::Outcome {
            exit_code,
            error: Some(error),
            ..weir_engine::Outcome::default()
        },
    }
}

/// Reads `metrics.json` (a flat object of numbers) and `outputs.json` (a
/// flat object of strings) from `out`; either may be absent. The error
/// says which file is wrong and how.
pub fn read_outputs(out: &Path) -> Result<(Object, Object), String> {
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
    name: &str,
    kind: &str,
    ok: fn(&Json) -> bool,
) -> Result<Map<String, Json>, String> {
    let size = match std::fs::metadata(path) {
        Ok(meta) => meta.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Map::new()),
        Err(e) => return Err(format!("{name}: {e}")),
    };
    if size > OUTPUT_LIMIT {
        return Err(format!(
            "{name} is {size} bytes; the limit is {OUTPUT_LIMIT} (1 MiB)"
        ));
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("{name}: {e}"))?;
    let value: Json =
        serde_json::from_str(&text).map_err(|e| format!("{name} is not valid JSON: {e}"))?;
    let Json::Object(map) = value else {
        return Err(format!(
            "{name} must be a JSON object of {kind}, like {{\"name\": …}}"
        ));
    };
    if let Some((key, value)) = map.iter().find(|(_, v)| !ok(v)) {
        return Err(format!(
            "{name}: '{key}' is {value}, but every value must be one of the {kind}"
        ));
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
            read_outputs(dir.path()),
            Err(
                "metrics.json: 'acc' is \"high\", but every value must be one of the numbers"
                    .to_owned()
            )
        );
        std::fs::write(dir.path().join("metrics.json"), "[1]").expect("write");
        assert!(
            read_outputs(dir.path())
                .is_err_and(|e| e.starts_with("metrics.json must be a JSON object"))
        );
        std::fs::write(dir.path().join("metrics.json"), "{").expect("write");
        assert!(
            read_outputs(dir.path())
                .is_err_and(|e| e.starts_with("metrics.json is not valid JSON"))
        );
        std::fs::write(dir.path().join("metrics.json"), vec![b' '; 1024 * 1024 + 1])
            .expect("write");
        assert!(read_outputs(dir.path()).is_err_and(|e| e.contains("the limit is 1048576")));
    }
}
