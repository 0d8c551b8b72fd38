//! The MLflow mirror: each run's params and step metrics logged to an
//! MLflow run (tagged with weir's run id, pipeline hash and commit), each
//! registration mirrored as a version of an MLflow registered model, and
//! weir's aliases set on those versions — through MLflow's REST API.
//!
//! weir stays the source of truth: what is to be mirrored is queued in the
//! store's outbox (`Store::queue_mirror`) where it happens, and one task
//! writes it out in queue order, trying again with backoff while MLflow is
//! away; a registration never waits for MLflow. Every write is idempotent
//! (an MLflow run is found by its `weir.run_id` tag, a version by its run
//! and `weir.version` tag before one is created), so a try whose answer
//! was lost is tried again without making a second one.

use crate::clock::now;
use crate::runs::Daemon;
use crate::tasks::TaskKind;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use weir_engine::{AttemptState, RunState};
use weir_store::MirrorItem;

/// The daemon's MLflow setting (`[mlflow]` in `weir.toml`); a pipeline's
/// `mlflow:` overrides it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MlflowTarget {
    /// The MLflow server, `http://…` or `https://…`.
    pub tracking_uri: String,
    /// The experiment runs are logged to; the pipeline's name when absent.
    pub experiment: Option<String>,
}

/// The MLflow server and experiment of `pipeline`'s runs, if it has one.
pub(crate) fn target(
    pipeline: &weir_model::Pipeline,
    default: Option<&MlflowTarget>,
) -> Option<(String, String)> {
    let own = pipeline.mlflow.as_ref();
    let uri = own
        .and_then(|m| m.tracking_uri.as_ref().map(|u| u.value.clone()))
        .or_else(|| default.map(|d| d.tracking_uri.clone()))?;
    let experiment = own
        .and_then(|m| m.experiment.as_ref().map(|e| e.value.clone()))
        .or_else(|| default.and_then(|d| d.experiment.clone()))
        .unwrap_or_else(|| pipeline.name.value.clone());
    Some((uri, experiment))
}

/// The longest wait between two tries of an item while MLflow is away.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// How long the mirror sleeps when nothing is due and nobody woke it.
const IDLE: Duration = Duration::from_secs(5);

/// Why a write to MLflow failed.
#[derive(Debug)]
enum Failure {
    /// MLflow is away or overloaded (no answer, 5xx, 429): tried again
    /// later, and the server's later items wait.
    Again(String),
    /// The item waits for another one (an alias for its version): tried
    /// again after the others.
    Waits(String),
    /// MLflow refused it (4xx): tried again only if queued again.
    Refused(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Again(why) | Failure::Waits(why) | Failure::Refused(why) => f.write_str(why),
        }
    }
}

/// What came of trying an item.
enum Tried {
    /// Done, or refused for good.
    Done,
    /// It waits for another item of this pass.
    Waits,
    /// To be tried again at this time; whether it holds back its server's
    /// later items (MLflow did not answer).
    Later(weir_engine::Time, bool),
}

/// An MLflow REST error, with its `error_code`.
struct Answer {
    status: u16,
    code: String,
    message: String,
}

/// One MLflow server's REST API.
struct Client<'a> {
    http: &'a reqwest::Client,
    base: String,
}

impl Client<'_> {
    /// Calls `path` under `/api/2.0/mlflow/` (GET with `query`, else POST
    /// with `body`); a refusal comes back as the `Answer`.
    async fn call(
        &self,
        path: &str,
        query: &[(&str, &str)],
        body: Option<Value>,
    ) -> Result<Result<Value, Answer>, Failure> {
        let url = format!("{}/api/2.0/mlflow/{path}", self.base);
        let url = reqwest::Url::parse_with_params(&url, query)
            .map_err(|e| Failure::Refused(format!("'{url}' is not a URL: {e}")))?;
        let request = match body {
            Some(body) => self.http.post(url).json(&body),
            None => self.http.get(url),
        };
        let response = request
            .send()
            .await
            .map_err(|e| Failure::Again(format!("MLflow at {} does not answer: {e}", self.base)))?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        if status.is_server_error() || status.as_u16() == 429 {
            return Err(Failure::Again(format!(
                "MLflow at {} answered {path} with HTTP {}: {}",
                self.base,
                status.as_u16(),
                text.chars().take(200).collect::<String>()
            )));
        }
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(Ok(value));
        }
        Ok(Err(Answer {
            status: status.as_u16(),
            code: value["error_code"].as_str().unwrap_or_default().to_owned(),
            message: value["message"].as_str().unwrap_or(&text).to_owned(),
        }))
    }

    /// Like `call`, with any refusal a failure.
    async fn must(
        &self,
        path: &str,
        query: &[(&str, &str)],
        body: Option<Value>,
    ) -> Result<Value, Failure> {
        self.call(path, query, body).await?.map_err(|a| {
            Failure::Refused(format!(
                "MLflow refused {path} (HTTP {} {}): {}",
                a.status, a.code, a.message
            ))
        })
    }

    /// The id of experiment `name`, made if absent.
    async fn experiment(&self, name: &str) -> Result<String, Failure> {
        for _ in 0..2 {
            let found = self
                .call(
                    "experiments/get-by-name",
                    &[("experiment_name", name)],
                    None,
                )
                .await?;
            if let Ok(found) = found
                && let Some(id) = found["experiment"]["experiment_id"].as_str()
            {
                return Ok(id.to_owned());
            }
            match self
                .call("experiments/create", &[], Some(json!({ "name": name })))
                .await?
            {
                Ok(made) => {
                    if let Some(id) = made["experiment_id"].as_str() {
                        return Ok(id.to_owned());
                    }
                }
                // Made meanwhile by someone else: read it again.
                Err(a) if a.code == "RESOURCE_ALREADY_EXISTS" => {}
                Err(a) => {
                    return Err(Failure::Refused(format!(
                        "MLflow refused to create experiment '{name}': {}",
                        a.message
                    )));
                }
            }
        }
        Err(Failure::Again(format!(
            "experiment '{name}' cannot be found or made"
        )))
    }
}

impl Daemon {
    /// Starts the mirror's task.
    pub(crate) fn spawn_mirror(self: &Arc<Self>) {
        let daemon = Arc::downgrade(self);
        let stop = self.tasks.stopping();
        let wake = Arc::clone(&self.mirror_wake);
        self.tasks.spawn(TaskKind::Mirror, async move {
            // reqwest speaks rustls without a provider of its own: ring, as
            // the server and the store's connections (already installed by
            // `weir serve`; this covers every other embedding).
            let _ = rustls::crypto::ring::default_provider().install_default();
            let http = match reqwest::Client::builder()
                .timeout(Duration::from_secs(15))
                .build()
            {
                Ok(http) => http,
                Err(e) => {
                    tracing::error!(error = %e, "the MLflow mirror cannot make an HTTP client");
                    return;
                }
            };
            loop {
                let Some(this) = daemon.upgrade() else { return };
                let next = match this.mirror_pass(&http).await {
                    Ok(next) => next,
                    Err(e) => {
                        tracing::warn!(error = %e, "the MLflow mirror cannot read its outbox");
                        None
                    }
                };
                drop(this);
                let sleep = next
                    .and_then(|at| (at - now()).to_std().ok())
                    .map_or(IDLE, |d| d.min(IDLE));
                tokio::select! {
                    () = tokio::time::sleep(sleep) => {}
                    () = wake.notified() => {}
                    () = stop.cancelled() => return,
                }
            }
        });
    }

    /// Tries every item due, in queue order; a server that does not answer
    /// holds back its later items, so versions reach MLflow in weir's
    /// order; an item that waits for another is tried again after the
    /// rest. Returns when the next pending item is due.
    async fn mirror_pass(
        &self,
        http: &reqwest::Client,
    ) -> Result<Option<weir_engine::Time>, weir_store::Error> {
        let (due, mut next) = self.store.mirror_due(now(), 64).await?;
        let mut held: Vec<String> = Vec::new();
        let mut round = due;
        for last in [false, true] {
            let mut waiting = Vec::new();
            for item in round {
                if held.contains(&item.tracking_uri) {
                    continue;
                }
                match self.mirror_try(http, &item, last).await? {
                    Tried::Done => {}
                    Tried::Waits => waiting.push(item),
                    Tried::Later(at, holds) => {
                        next = Some(next.map_or(at, |n| n.min(at)));
                        if holds {
                            held.push(item.tracking_uri.clone());
                        }
                    }
                }
            }
            round = waiting;
        }
        Ok(next)
    }

    /// Tries `item` once and records what came of it; `last`: an item that
    /// waits for another is not tried again in this pass.
    async fn mirror_try(
        &self,
        http: &reqwest::Client,
        item: &MirrorItem,
        last: bool,
    ) -> Result<Tried, weir_store::Error> {
        let client = Client {
            http,
            base: item.tracking_uri.trim_end_matches('/').to_owned(),
        };
        let outcome = self.mirror_one(&client, item).await;
        let at = now();
        let (why, delay, holds) = match outcome {
            Ok(result) => {
                tracing::info!(kind = %item.kind, subject = %item.subject, result = %result, "mirrored to MLflow");
                let result = result.to_string();
                self.store
                    .mirror_tried(item.id, "done", None, Some(&result), at, at)
                    .await?;
                return Ok(Tried::Done);
            }
            Err(Failure::Refused(why)) => {
                tracing::error!(kind = %item.kind, subject = %item.subject, reason = %why, "MLflow refused a mirror write");
                self.store
                    .mirror_tried(item.id, "failed", Some(&why), None, at, at)
                    .await?;
                return Ok(Tried::Done);
            }
            Err(Failure::Waits(_)) if !last => return Ok(Tried::Waits),
            Err(Failure::Waits(why)) => (why, Duration::from_secs(1), false),
            Err(Failure::Again(why)) => {
                let shift = u32::try_from(item.attempts.clamp(0, 5)).unwrap_or(5);
                let delay = (Duration::from_secs(1) * 2u32.pow(shift)).min(MAX_BACKOFF);
                (why, delay, true)
            }
        };
        let again = at + chrono::Duration::from_std(delay).unwrap_or_default();
        tracing::warn!(kind = %item.kind, subject = %item.subject, reason = %why, retry_in = ?delay, "MLflow mirror write to be tried again");
        self.store
            .mirror_tried(item.id, "pending", Some(&why), None, again, at)
            .await?;
        Ok(Tried::Later(again, holds))
    }

    async fn mirror_one(&self, mlflow: &Client<'_>, item: &MirrorItem) -> Result<Value, Failure> {
        let store = |e: weir_store::Error| Failure::Again(format!("the store: {e}"));
        match item.kind.as_str() {
            "run" => {
                let run_id = self.mirror_run(mlflow, item, &item.subject).await?;
                Ok(json!({ "run_id": run_id }))
            }
            "version" => {
                let Some((model, version)) = item
                    .subject
                    .rsplit_once('@')
                    .and_then(|(m, v)| Some((m, v.parse::<i64>().ok()?)))
                else {
                    return Err(Failure::Refused(format!(
                        "'{}' is not MODEL@N",
                        item.subject
                    )));
                };
                let registered = self
                    .store
                    .model_version(model, version)
                    .await
                    .map_err(store)?;
                let run_id = self.mirror_run(mlflow, item, &registered.run_id).await?;
                let _ = mlflow
                    .call(
                        "registered-models/create",
                        &[],
                        Some(json!({
                            "name": model,
                            "tags": [{ "key": "weir.model", "value": model }],
                        })),
                    )
                    .await?;
                let number = version.to_string();
                let filter = format!("name='{model}' and run_id='{run_id}'");
                let found = mlflow
                    .must(
                        "model-versions/search",
                        &[("filter", &filter), ("max_results", "1000")],
                        None,
                    )
                    .await?;
                let existing = found["model_versions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|v| {
                        v["tags"].as_array().into_iter().flatten().any(|t| {
                            t["key"] == "weir.version"
                                && t["value"].as_str() == Some(number.as_str())
                        })
                    });
                let mlflow_version = match existing {
                    Some(v) => v["version"].as_str().unwrap_or_default().to_owned(),
                    None => {
                        let made = mlflow
                            .must("model-versions/create", &[], Some(json!({
                                "name": model,
                                "source": format!("weir://runs/{}/work/{}", registered.run_id, registered.artifact),
                                "run_id": run_id,
                                "description": format!("weir {model}@{version}, sha256 {}", registered.sha256),
                                "tags": [
                                    { "key": "weir.version", "value": number },
                                    { "key": "weir.sha256", "value": registered.sha256 },
                                    { "key": "weir.run_id", "value": registered.run_id },
                                ],
                            })))
                            .await?;
                        made["model_version"]["version"]
                            .as_str()
                            .unwrap_or_default()
                            .to_owned()
                    }
                };
                Ok(json!({ "run_id": run_id, "version": mlflow_version }))
            }
            "alias" => {
                let Some((model, alias)) = item.subject.split_once('/') else {
                    return Err(Failure::Refused(format!(
                        "'{}' is not MODEL/ALIAS",
                        item.subject
                    )));
                };
                let Some(version) = self
                    .store
                    .alias_at(model, alias, None)
                    .await
                    .map_err(store)?
                else {
                    return Err(Failure::Refused(format!("{model} has no alias '{alias}'")));
                };
                let subject = format!("{model}@{version}");
                let mirrored = self
                    .store
                    .mirror_item("version", &subject)
                    .await
                    .map_err(store)?;
                let mlflow_version = match mirrored {
                    Some(m) if m.state == "done" => m
                        .result
                        .and_then(|r| serde_json::from_str::<Value>(&r).ok())
                        .and_then(|r| r["version"].as_str().map(str::to_owned)),
                    Some(m) if m.state == "failed" => {
                        return Err(Failure::Refused(format!(
                            "{subject} was not mirrored: {}",
                            m.last_error.unwrap_or_default()
                        )));
                    }
                    _ => None,
                };
                let Some(mlflow_version) = mlflow_version else {
                    return Err(Failure::Waits(format!(
                        "waiting for {subject} to be mirrored"
                    )));
                };
                mlflow
                    .must(
                        "registered-models/alias",
                        &[],
                        Some(json!({
                            "name": model, "alias": alias, "version": mlflow_version,
                        })),
                    )
                    .await?;
                Ok(json!({ "version": mlflow_version, "of": subject }))
            }
            other => Err(Failure::Refused(format!(
                "unknown outbox item kind '{other}'"
            ))),
        }
    }

    /// The MLflow run of weir run `id`, found by its tag or made, with the
    /// run's params, every step's metrics (`STEP.METRIC`, at the time its
    /// attempt ended) and its tags logged; ended as the weir run did.
    async fn mirror_run(
        &self,
        mlflow: &Client<'_>,
        item: &MirrorItem,
        id: &str,
    ) -> Result<String, Failure> {
        let store = |e: weir_store::Error| Failure::Again(format!("the store: {e}"));
        let run = self.store.load_run(id).await.map_err(store)?;
        let pipeline_hash = self.store.run_pipeline_hash(id).await.map_err(store)?;
        let experiment = mlflow.experiment(&item.experiment).await?;
        let filter = format!("tags.`weir.run_id` = '{id}'");
        let found = mlflow
            .must(
                "runs/search",
                &[],
                Some(json!({
                    "experiment_ids": [experiment], "filter": filter, "max_results": 1,
                })),
            )
            .await?;
        let millis = |t: weir_engine::Time| t.timestamp_millis();
        let mut tags = vec![
            json!({ "key": "weir.run_id", "value": id }),
            json!({ "key": "weir.pipeline", "value": run.pipeline }),
            json!({ "key": "weir.pipeline_hash", "value": pipeline_hash }),
            json!({ "key": "weir.trigger", "value": run.cause.kind() }),
        ];
        if let Some(commit) = &run.source_commit {
            tags.push(json!({ "key": "weir.commit", "value": commit }));
            tags.push(json!({ "key": "mlflow.source.git.commit", "value": commit }));
        }
        let run_id = match found["runs"][0]["info"]["run_id"].as_str() {
            Some(run_id) => run_id.to_owned(),
            None => {
                let made = mlflow
                    .must(
                        "runs/create",
                        &[],
                        Some(json!({
                            "experiment_id": experiment,
                            "run_name": format!("{}-{}", run.pipeline, &id[..id.len().min(12)]),
                            "start_time": millis(run.created_at),
                            "tags": tags,
                        })),
                    )
                    .await?;
                made["run"]["info"]["run_id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned()
            }
        };
        let params: Vec<Value> = run
            .params
            .iter()
            .map(|(k, v)| json!({ "key": k, "value": v }))
            .collect();
        // A register step's metrics are its metrics_from step's, again.
        let registers: Vec<usize> = match crate::catalog::stored(&self.store, id).await {
            Ok((pipeline, _)) => (pipeline.steps.iter().enumerate())
                .filter(|(_, s)| matches!(s.kind, weir_model::pipeline::StepKind::Register(_)))
                .map(|(i, _)| i)
                .collect(),
            Err(_) => Vec::new(),
        };
        let mut metrics = Vec::new();
        for instance in run.steps.iter().filter(|s| !registers.contains(&s.step)) {
            let Some(attempt) = instance
                .attempts
                .iter()
                .rev()
                .find(|a| a.state == AttemptState::Succeeded)
            else {
                continue;
            };
            let at = millis(attempt.finished_at.unwrap_or(run.created_at));
            for (name, value) in &attempt.metrics {
                if let Some(value) = value.as_f64() {
                    let key = format!("{}.{name}", instance.id);
                    metrics.push(json!({ "key": key, "value": value, "timestamp": at, "step": 0 }));
                }
            }
        }
        // MLflow takes at most 1000 metrics and 100 params per batch.
        let batch = json!({ "run_id": run_id, "tags": tags });
        mlflow.must("runs/log-batch", &[], Some(batch)).await?;
        for chunk in params.chunks(100) {
            let batch = json!({ "run_id": run_id, "params": chunk });
            mlflow.must("runs/log-batch", &[], Some(batch)).await?;
        }
        for chunk in metrics.chunks(1000) {
            let batch = json!({ "run_id": run_id, "metrics": chunk });
            mlflow.must("runs/log-batch", &[], Some(batch)).await?;
        }
        if run.state.is_terminal() {
            let status = match run.state {
                RunState::Succeeded => "FINISHED",
                RunState::Cancelled => "KILLED",
                _ => "FAILED",
            };
            mlflow
                .must(
                    "runs/update",
                    &[],
                    Some(json!({
                        "run_id": run_id,
                        "status": status,
                        "end_time": millis(run.finished_at.unwrap_or(run.created_at)),
                    })),
                )
                .await?;
        }
        Ok(run_id)
    }

    /// Queues `kind`/`subject` for the MLflow server of `pipeline`, if it
    /// has one, and wakes the mirror.
    pub(crate) async fn queue_mirror(
        &self,
        pipeline: &weir_model::Pipeline,
        kind: &str,
        subject: &str,
    ) -> Result<(), weir_store::Error> {
        if let Some((uri, experiment)) = target(pipeline, self.options.mlflow.as_ref()) {
            self.store
                .queue_mirror(kind, subject, &uri, &experiment, now())
                .await?;
            self.mirror_wake.notify_one();
        }
        Ok(())
    }
}
