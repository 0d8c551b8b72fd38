//! The Docker executor: a step as a container through the Docker engine's
//! API (bollard), with the work folder at `/weir/work`, the attempt's out
//! folder at `/weir/out`, labels that let recovery find it, and GPUs as
//! device requests.

use crate::contract::{Attempt, collect};
use crate::mask::Masker;
use bollard::Docker;
use bollard::container::LogOutput;
use bollard::errors::Error as DockerError;
use bollard::models::{ContainerCreateBody, DeviceRequest, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, ListContainersOptionsBuilder,
    LogsOptionsBuilder, RemoveContainerOptionsBuilder, StopContainerOptionsBuilder,
};
use futures_util::StreamExt;
use std::collections::HashMap;
use std::path::Path;
use tokio::sync::{mpsc, oneshot, watch};
use weir_engine::Outcome;
use weir_model::pipeline::Pull;

/// A connection to the Docker engine.
#[derive(Debug, Clone)]
pub struct DockerExecutor {
    docker: Docker,
    keep_containers: bool,
}

/// A container of weir's, as recovery finds it by its labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// The container's name.
    pub name: String,
    /// Index of the step instance in its run.
    pub step: usize,
    /// The attempt's number.
    pub attempt: u32,
    /// Whether it still runs.
    pub running: bool,
}

/// The container name of an attempt, `weir-<run>-<step>-<attempt>`, with
/// every character Docker does not allow replaced by `_`.
pub fn container_name(run: &str, step: &str, attempt: u32) -> String {
    let raw = format!("weir-{run}-{step}-{attempt}");
    raw.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

impl DockerExecutor {
    /// Connects to the engine at `DOCKER_HOST` or the default socket,
    /// agreeing on an API version. One clear error when it is not there.
    pub async fn connect(keep_containers: bool) -> Result<DockerExecutor, String> {
        let host = std::env::var("DOCKER_HOST")
            .unwrap_or_else(|_| "unix:///var/run/docker.sock".to_owned());
        let unreachable = |e: DockerError| {
            format!(
                "cannot reach the Docker engine at {host}: {e}; is it running? (set DOCKER_HOST to use another)"
            )
        };
        let docker = Docker::connect_with_defaults().map_err(unreachable)?;
        let docker = docker.negotiate_version().await.map_err(unreachable)?;
        docker.ping().await.map_err(unreachable)?;
        Ok(DockerExecutor {
            docker,
            keep_containers,
        })
    }

    /// Runs `attempt` as a container (see the module's doc), streaming its
    /// output to `logs` until it exits or `stop` carries a note (then
    /// `docker stop` with the grace period: SIGTERM, then SIGKILL).
    pub async fn run(
        &self,
        attempt: &Attempt,
        labels: &[(String, String)],
        logs: mpsc::Sender<Vec<u8>>,
        mut stop: watch::Receiver<Option<String>>,
        started: oneshot::Sender<()>,
    ) -> Outcome {
        let Some(image) = attempt.prepared.image.clone() else {
            return Outcome::failed("a docker step needs an image");
        };
        for dir in [&attempt.work, &attempt.out] {
            if let Err(e) = std::fs::create_dir_all(dir) {
                return Outcome::failed(format!("cannot create {}: {e}", dir.display()));
            }
        }
        let image_id = match self
            .ensure_image(&image, attempt.prepared.pull, &logs)
            .await
        {
            Ok(id) => id,
            Err(error) => return Outcome::failed(error),
        };
        let name = container_name(&attempt.run_id, &attempt.step, attempt.number);
        if let Err(e) = self.create(&name, &image, attempt, labels).await {
            return Outcome::failed(format!("cannot create container {name}: {e}"));
        }
        if let Err(e) = self.docker.start_container(&name, None).await {
            self.remove(&name).await;
            return Outcome::failed(format!("cannot start container {name}: {e}"));
        }
        let _ = started.send(());
        let outcome = self.follow(&name, attempt, logs, &mut stop, 0).await;
        let outcome = Outcome {
            image: Some(image_id),
            ..outcome
        };
        if !self.keep_containers {
            self.remove(&name).await;
        }
        outcome
    }

    /// Makes sure `image` is on the host as `pull` says, writing pull
    /// progress to the log; returns its id.
    async fn ensure_image(
        &self,
        image: &str,
        pull: Pull,
        logs: &mpsc::Sender<Vec<u8>>,
    ) -> Result<String, String> {
        let present = self
            .docker
            .inspect_image(image)
            .await
            .ok()
            .and_then(|i| i.id);
        match (pull, present) {
            (Pull::IfNotPresent, Some(id)) => return Ok(id),
            (Pull::Never, Some(id)) => return Ok(id),
            (Pull::Never, None) => {
                return Err(format!(
                    "image '{image}' is not on this host and the step says pull: never"
                ));
            }
            _ => {}
        }
        let (from, tag) = split_tag(image);
        let options = CreateImageOptionsBuilder::new()
            .from_image(from)
            .tag(tag)
            .build();
        let mut progress = self.docker.create_image(Some(options), None, None);
        let _ = logs
            .send(format!("[weir] pulling {image}\n").into_bytes())
            .await;
        while let Some(item) = progress.next().await {
            match item {
                Ok(info) => {
                    if let Some(status) = info.status {
                        let line = match info.id {
                            Some(id) => format!("[weir] {id}: {status}\n"),
                            None => format!("[weir] {status}\n"),
                        };
                        let _ = logs.send(line.into_bytes()).await;
                    }
                }
                Err(e) => return Err(format!("cannot pull image '{image}': {e}")),
            }
        }
        self.docker
            .inspect_image(image)
            .await
            .ok()
            .and_then(|i| i.id)
            .ok_or_else(|| format!("image '{image}' is still missing after pulling it"))
    }

    async fn create(
        &self,
        name: &str,
        image: &str,
        attempt: &Attempt,
        labels: &[(String, String)],
    ) -> Result<(), DockerError> {
        let env: Vec<String> = attempt
            .env(Path::new("/weir/work"), Path::new("/weir/out"))
            .into_iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let argv = attempt.prepared.command.argv();
        let (entrypoint, cmd) = match argv.split_first() {
            Some((first, rest)) => (vec![first.clone()], rest.to_vec()),
            None => (Vec::new(), Vec::new()),
        };
        let device_requests = (!attempt.gpus.is_empty()).then(|| {
            vec![DeviceRequest {
                driver: Some("nvidia".to_owned()),
                device_ids: Some(attempt.gpus.clone()),
                capabilities: Some(vec![vec!["gpu".to_owned()]]),
                ..DeviceRequest::default()
            }]
        });
        let host_config = HostConfig {
            binds: Some(vec![
                format!("{}:/weir/work", attempt.work.display()),
                format!("{}:/weir/out", attempt.out.display()),
            ]),
            nano_cpus: attempt.prepared.cpus.map(|c| (c * 1e9) as i64),
            memory: attempt.prepared.memory.map(|m| m as i64),
            device_requests,
            ..HostConfig::default()
        };
        let body = ContainerCreateBody {
            image: Some(image.to_owned()),
            entrypoint: Some(entrypoint),
            cmd: Some(cmd),
            env: Some(env),
            working_dir: Some("/weir/work".to_owned()),
            labels: Some(labels.iter().cloned().collect::<HashMap<_, _>>()),
            host_config: Some(host_config),
            ..ContainerCreateBody::default()
        };
        let options = CreateContainerOptionsBuilder::new().name(name).build();
        self.docker
            .create_container(Some(options), body)
            .await
            .map(|_| ())
    }

    /// Streams the container's output until it exits, stopping it when
    /// asked, and collects the outcome. The first `skip` bytes of the
    /// masked output are not sent again: they were stored before a crash.
    /// stdout and stderr go through one masker in the order Docker keeps
    /// them, so the masked stream is the same on every replay.
    async fn follow(
        &self,
        name: &str,
        attempt: &Attempt,
        logs: mpsc::Sender<Vec<u8>>,
        stop: &mut watch::Receiver<Option<String>>,
        skip: u64,
    ) -> Outcome {
        let secrets: Vec<&str> = attempt.secrets.iter().map(|(_, v)| v.as_str()).collect();
        let stream_logs = {
            let docker = self.docker.clone();
            let name = name.to_owned();
            let mut masker = Masker::new(secrets.iter().copied());
            tokio::spawn(async move {
                let options = LogsOptionsBuilder::new()
                    .follow(true)
                    .stdout(true)
                    .stderr(true)
                    .build();
                let mut stream = docker.logs(&name, Some(options));
                let mut to_skip = skip as usize;
                let mut send = async |mut masked: Vec<u8>| -> bool {
                    let dropped = to_skip.min(masked.len());
                    masked.drain(..dropped);
                    to_skip -= dropped;
                    masked.is_empty() || logs.send(masked).await.is_ok()
                };
                while let Some(Ok(item)) = stream.next().await {
                    let masked = match item {
                        LogOutput::StdErr { message }
                        | LogOutput::StdOut { message }
                        | LogOutput::Console { message } => masker.mask(&message),
                        LogOutput::StdIn { .. } => continue,
                    };
                    if !send(masked).await {
                        return;
                    }
                }
                let rest = masker.finish();
                send(rest).await;
            })
        };
        let mut stopped: Option<String> = stop.borrow().clone();
        let mut wait = Box::pin(self.docker.wait_container(
            name,
            None::<bollard::query_parameters::WaitContainerOptions>,
        ));
        let exit = loop {
            if stopped.is_some() {
                let grace = attempt.grace.as_secs().max(1) as i32;
                let options = StopContainerOptionsBuilder::new().t(grace).build();
                let _ = self.docker.stop_container(name, Some(options)).await;
                break wait.next().await;
            }
            tokio::select! {
                exit = wait.next() => break exit,
                changed = stop.changed() => match changed {
                    Ok(()) => stopped = stop.borrow().clone(),
                    Err(_) => break wait.next().await,
                },
            }
        };
        let _ = stream_logs.await;
        let exit_code = match exit {
            Some(Ok(response)) => Some(response.status_code as i32),
            // A non-zero exit comes back as this error, with the code.
            Some(Err(DockerError::DockerContainerWaitError { code, .. })) => Some(code as i32),
            Some(Err(e)) => {
                return Outcome::failed(format!("lost track of container {name}: {e}"));
            }
            None => None,
        };
        if let Some(note) = stopped {
            return Outcome {
                exit_code,
                error: Some(note),
                ..Outcome::default()
            };
        }
        let oom = self
            .docker
            .inspect_container(name, None)
            .await
            .ok()
            .and_then(|c| c.state)
            .and_then(|s| s.oom_killed)
            .unwrap_or(false);
        if oom {
            let limit = attempt
                .prepared
                .memory
                .map(format_size)
                .unwrap_or_else(|| "none".to_owned());
            return Outcome {
                exit_code,
                error: Some(format!("out of memory (limit {limit})")),
                ..Outcome::default()
            };
        }
        collect(exit_code, &attempt.out)
    }

    async fn remove(&self, name: &str) {
        let options = RemoveContainerOptionsBuilder::new().force(true).build();
        let _ = self.docker.remove_container(name, Some(options)).await;
    }

    /// weir's containers of run `run`, running or not, as their labels say.
    pub async fn find(&self, run: &str) -> Result<Vec<Found>, String> {
        let filters = HashMap::from([("label".to_owned(), vec![format!("weir.run={run}")])]);
        let options = ListContainersOptionsBuilder::new()
            .all(true)
            .filters(&filters)
            .build();
        let containers = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(|e| format!("cannot list containers: {e}"))?;
        Ok(containers
            .into_iter()
            .filter_map(|c| {
                let labels = c.labels.unwrap_or_default();
                Some(Found {
                    name: c.names?.first()?.trim_start_matches('/').to_owned(),
                    step: labels.get("weir.step-index")?.parse().ok()?,
                    attempt: labels.get("weir.attempt")?.parse().ok()?,
                    running: c.state.is_some_and(|s| s.to_string() == "running"),
                })
            })
            .collect())
    }

    /// Takes up an attempt whose container a crashed weir left behind,
    /// running or exited: its log from byte `skip` of the masked output on
    /// (what the store has is not sent twice), its exit, its outputs; the
    /// container is removed as after any attempt.
    pub async fn reattach(
        &self,
        name: &str,
        attempt: &Attempt,
        skip: u64,
        logs: mpsc::Sender<Vec<u8>>,
        mut stop: watch::Receiver<Option<String>>,
        started: oneshot::Sender<()>,
    ) -> Outcome {
        let container = match self.docker.inspect_container(name, None).await {
            Ok(container) => container,
            Err(e) => {
                return Outcome::failed(format!("container {name} vanished: {e}"));
            }
        };
        let created_only = container
            .state
            .as_ref()
            .and_then(|s| s.status)
            .is_some_and(|s| s.to_string() == "created");
        if created_only && let Err(e) = self.docker.start_container(name, None).await {
            return Outcome::failed(format!("cannot start container {name}: {e}"));
        }
        let _ = started.send(());
        let outcome = self.follow(name, attempt, logs, &mut stop, skip).await;
        let outcome = Outcome {
            image: container.image,
            ..outcome
        };
        if !self.keep_containers {
            self.remove(name).await;
        }
        outcome
    }

    /// Removes a container of weir's, running or not.
    pub async fn discard(&self, name: &str) {
        self.remove(name).await;
    }

    /// The HostConfig of a created container, for tests and diagnostics.
    pub async fn host_config(&self, name: &str) -> Option<HostConfig> {
        self.docker
            .inspect_container(name, None)
            .await
            .ok()?
            .host_config
    }

    /// Creates (without starting) the container of `attempt`, as `run` would.
    pub async fn create_only(
        &self,
        attempt: &Attempt,
        labels: &[(String, String)],
    ) -> Result<String, String> {
        let image = attempt
            .prepared
            .image
            .clone()
            .ok_or("a docker step needs an image")?;
        let name = container_name(&attempt.run_id, &attempt.step, attempt.number);
        self.create(&name, &image, attempt, labels)
            .await
            .map_err(|e| e.to_string())?;
        Ok(name)
    }
}

/// `name:tag` or `name@digest` into the pull API's two parts.
fn split_tag(image: &str) -> (&str, &str) {
    if let Some((name, digest)) = image.split_once('@') {
        return (name, digest);
    }
    match image.rsplit_once(':') {
        Some((name, tag)) if !tag.contains('/') => (name, tag),
        _ => (image, "latest"),
    }
}

fn format_size(bytes: u64) -> String {
    for (shift, unit) in [(40, "Ti"), (30, "Gi"), (20, "Mi"), (10, "Ki")] {
        if bytes >= 1 << shift && bytes.is_multiple_of(1 << shift) {
            return format!("{}{unit}", bytes >> shift);
        }
    }
    bytes.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_dockers_rules() {
        assert_eq!(
            container_name("r1", "train[lr=0.1]", 2),
            "weir-r1-train_lr_0.1_-2"
        );
        assert_eq!(split_tag("busybox"), ("busybox", "latest"));
        assert_eq!(
            split_tag("localhost:5000/a/b:1.2"),
            ("localhost:5000/a/b", "1.2")
        );
        assert_eq!(
            split_tag("localhost:5000/a"),
            ("localhost:5000/a", "latest")
        );
        assert_eq!(format_size(2 << 30), "2Gi");
    }
}
