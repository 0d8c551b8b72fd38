//! `register` steps: no process, an attempt carried out against the
//! registry. The artifact is hashed and the version created in the
//! attempt's task, reported `Started`/`Exited` like an executor's, so
//! retries, recovery and "commit before act" apply unchanged.
//!
//! **Invariant:** a registration happens once per run and step; a retried
//! or recovered attempt finds the version made before (the store's unique
//! index), never a second one.

use crate::clock::now;
use crate::config::{Options, run_dir};
use std::path::PathBuf;
use weir_engine::{Outcome, Run};
use weir_model::Pipeline;
use weir_store::Store;

/// What a register step registers: its artifact (which must be a file
/// inside the run's work folder) and the metrics of its `metrics_from` step.
pub(crate) struct Registration {
    model: String,
    artifact: String,
    path: PathBuf,
    metrics: serde_json::Map<String, serde_json::Value>,
    run_id: String,
    step: String,
    alias: Option<String>,
    card: crate::card::Draft,
    /// The MLflow server and experiment the version is mirrored to.
    mirror: Option<(String, String)>,
}

/// Why a register step cannot register.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RegisterError {
    /// Its artifact path leaves the work folder.
    #[error(
        "artifact '{0}' must be a path inside the run's work folder ($WEIR_WORK), without '..'"
    )]
    OutsideWork(String),
    /// A `model_card` template read something absent.
    #[error("cannot write the model card: {0}")]
    Card(#[from] weir_engine::PrepareError),
}

/// What register step `step` of `run` registers.
pub(crate) fn registration(
    pipeline: &Pipeline,
    run: &Run,
    step: usize,
    register: &weir_model::pipeline::Register,
    options: &Options,
) -> Result<Registration, RegisterError> {
    let artifact = register.artifact.value.clone();
    let relative = std::path::Path::new(&artifact);
    let inside = relative.components().all(|c| {
        matches!(
            c,
            std::path::Component::Normal(_) | std::path::Component::CurDir
        )
    });
    if !inside {
        return Err(RegisterError::OutsideWork(artifact));
    }
    let mut metrics = serde_json::Map::new();
    if let Some(from) = &register.metrics_from {
        let index = pipeline.steps.iter().position(|s| s.id.value == from.value);
        let instances: Vec<&weir_engine::StepRun> =
            run.steps.iter().filter(|s| Some(s.step) == index).collect();
        let latest = |s: &weir_engine::StepRun| {
            s.attempts
                .iter()
                .rev()
                .find(|a| a.state == weir_engine::AttemptState::Succeeded)
                .map(|a| a.metrics.clone())
                .unwrap_or_default()
        };
        match instances.as_slice() {
            [one] => metrics = latest(one),
            many => {
                for instance in many {
                    metrics.insert(
                        instance.id.clone(),
                        serde_json::Value::Object(latest(instance)),
                    );
                }
            }
        }
    }
    let card = crate::card::draft(pipeline, run, step)?;
    Ok(Registration {
        card,
        mirror: crate::mlflow::target(pipeline, options.mlflow.as_ref()),
        model: register.model.value.clone(),
        path: run_dir(options, run).join("work").join(relative),
        artifact,
        metrics,
        run_id: run.id.clone(),
        step: run.steps[step].id.clone(),
        alias: register.alias.as_ref().map(|a| a.value.clone()),
    })
}

/// Hashes the artifact, registers the version and keeps its card: outputs
/// `model`, `version`, `sha256` and `card_sha256`; a missing artifact
/// fails the step, naming it.
pub(crate) async fn register_version(store: &Store, new: Registration) -> Outcome {
    let path = new.path.clone();
    let hashed = tokio::task::spawn_blocking(move || sha256_file(&path)).await;
    let sha256 = match hashed {
        Ok(Ok(sha256)) => sha256,
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => {
            return Outcome::failed(format!(
                "artifact '{}' not found in the run's work folder: the steps before this one must write $WEIR_WORK/{}",
                new.artifact, new.artifact
            ));
        }
        Ok(Err(e)) => {
            return Outcome::failed(format!("cannot read artifact '{}': {e}", new.artifact));
        }
        Err(e) => return Outcome::failed(format!("cannot read artifact '{}': {e}", new.artifact)),
    };
    let version = weir_store::NewVersion {
        model: &new.model,
        artifact: &new.artifact,
        sha256: &sha256,
        metrics: &new.metrics,
        run_id: &new.run_id,
        step: &new.step,
        alias: new.alias.as_deref(),
        at: now(),
    };
    // While the store is away the step waits for it: a registration is
    // unique per run and step, so one tried again is not made twice.
    let registered = patiently("the registration", || store.register_model(&version)).await;
    let registered = match registered {
        Ok(registered) => registered,
        Err(e) => return Outcome::failed(format!("cannot register {}: {e}", new.model)),
    };
    let card = patiently("the model card", || {
        crate::card::keep(store, new.card.clone(), &registered)
    })
    .await;
    // Queued for MLflow with the version, never waiting for MLflow itself;
    // the mirror picks it up within seconds (at the latest when the run ends).
    if let (Ok(_), Some((uri, experiment))) = (&card, &new.mirror) {
        let version = format!("{}@{}", registered.model, registered.version);
        let mut queued = patiently("the MLflow outbox", || {
            store.queue_mirror("version", &version, uri, experiment, now())
        })
        .await;
        if let (Ok(()), Some(alias)) = (&queued, &new.alias) {
            let alias = format!("{}/{alias}", registered.model);
            queued = patiently("the MLflow outbox", || {
                store.queue_mirror("alias", &alias, uri, experiment, now())
            })
            .await;
        }
        if let Err(e) = queued {
            return Outcome::failed(format!("cannot queue {version} for MLflow: {e}"));
        }
    }
    match card {
        Ok((_, card_sha256)) => {
            tracing::info!(model = %new.model, version = registered.version, run = %new.run_id, "model registered");
            let outputs = serde_json::json!({
                "model": registered.model,
                "version": registered.version,
                "sha256": registered.sha256,
                "card_sha256": card_sha256,
            });
            Outcome {
                exit_code: Some(0),
                outputs: outputs.as_object().cloned().unwrap_or_default(),
                metrics: registered.metrics,
                ..Outcome::default()
            }
        }
        Err(e) => Outcome::failed(format!(
            "cannot keep the card of {}@{}: {e}",
            new.model, registered.version
        )),
    }
}

/// Runs `write` until the store takes it or refuses it for another
/// reason than being away, waiting longer each time (100 ms to 5 s).
async fn patiently<T, F>(what: &str, mut write: impl FnMut() -> F) -> Result<T, weir_store::Error>
where
    F: std::future::Future<Output = Result<T, weir_store::Error>>,
{
    let mut delay = std::time::Duration::from_millis(100);
    loop {
        match write().await {
            Err(e) if e.is_unavailable() => {
                tracing::warn!(error = %e, retry_in = ?delay, "the store is away; {what} waits for it");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(std::time::Duration::from_secs(5));
            }
            other => return other,
        }
    }
}

/// The SHA-256 of a file, hex, read in blocks.
pub(crate) fn sha256_file(path: &std::path::Path) -> std::io::Result<String> {
    use sha2::Digest as _;
    use std::io::Read as _;
    let mut file = std::fs::File::open(path)?;
    if file.metadata()?.is_dir() {
        return Err(std::io::Error::other("it is a folder, not a file"));
    }
    let mut hasher = sha2::Sha256::new();
    let mut buffer = vec![0u8; 1 << 16];
    loop {
        let read = file.read(&mut buffer)?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
    }
    Ok(hex::encode(hasher.finalize()))
}
