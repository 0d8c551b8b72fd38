//! The Docker executor: a step as a container through the Docker engine's
//! API (bollard), with the work folder at `/weir/work`, the attempt's out
//! folder at `/weir/out`, labels that let recovery find it, and GPUs as
//! device requests.

use crate::contract::collect;
use crate::executor::{AttemptIo, AttemptKey, Error, Executor, Exit, Found, Launch, Pull};
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
use futures_util::future::BoxFuture;
use std::collections::HashMap;
use std::path::Path;
use tokio::sync::{mpsc, watch};

/// A connection to the Docker engine.
#[derive(Debug, Clone)]
pub struct DockerExecutor {
    docker: Docker,
    keep_containers: bool,
}

/// The labels weir puts on its containers, which recovery finds them by.
const RUN_LABEL: &str = "weir.run";
const STEP_INDEX_LABEL: &str = "weir.step-index";
const ATTEMPT_LABEL: &str = "weir.attempt";

fn labels(launch: &Launch) -> HashMap<String, String> {
    HashMap::from([
        (RUN_LABEL.to_owned(), launch.key.run.clone()),
        ("weir.pipeline".to_owned(), launch.pipeline.clone()),
        ("weir.step".to_owned(), launch.step.clone()),
        (STEP_INDEX_LABEL.to_owned(), launch.key.step.to_string()),
        (ATTEMPT_LABEL.to_owned(), launch.key.attempt.to_string()),
    ])
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
    pub async fn connect(keep_containers: bool) -> Result<DockerExecutor, Error> {
        let host = std::env::var("DOCKER_HOST")
            .unwrap_or_else(|_| "unix:///var/run/docker.sock".to_owned());
        let unreachable = |e: DockerError| Error::Unreachable {
            what: format!("the Docker engine at {host}"),
            reason: format!("{e}; is it running? (set DOCKER_HOST to use another)"),
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
    async fn run(&self, attempt: &Launch, io: AttemptIo) -> Exit {
        let AttemptIo {
            logs,
            mut stop,
            started,
        } = io;
        let Some(image) = attempt.image.clone() else {
            return Exit::failed("a docker step needs an image");
        };
        for dir in [&attempt.work, &attempt.out] {
            if let Err(e) = std::fs::create_dir_all(dir) {
                return Exit::failed(format!("cannot create {}: {e}", dir.display()));
            }
        }
        let image_id = match self.ensure_image(&image, attempt.pull, &logs).await {
            Ok(id) => id,
            Err(error) => return Exit::failed(error.to_string()),
        };
        let name = container_name(&attempt.key.run, &attempt.step, attempt.key.attempt);
        if let Err(e) = self.create(&name, &image, attempt).await {
            return Exit::failed(format!("cannot create container {name}: {e}"));
        }
        if let Err(e) = self.docker.start_container(&name, None).await {
            self.remove(&name).await;
            return Exit::failed(format!("cannot start container {name}: {e}"));
        }
        let _ = started.send(());
        let outcome = self.follow(&name, attempt, logs, &mut stop, 0).await;
        // The container stays until its exit is committed: `release`.
        Exit {
            image: Some(image_id),
            ..outcome
        }
    }

    /// Makes sure `image` is on the host as `pull` says, writing pull
    /// progress to the log; returns its id.
    async fn ensure_image(
        &self,
        image: &str,
        pull: Pull,
        logs: &mpsc::Sender<Vec<u8>>,
    ) -> Result<String, ImageError> {
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
                return Err(ImageError::Absent {
                    image: image.to_owned(),
                });
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
                Err(source) => {
                    return Err(ImageError::Pull {
                        image: image.to_owned(),
                        source,
                    });
                }
            }
        }
        self.docker
            .inspect_image(image)
            .await
            .ok()
            .and_then(|i| i.id)
            .ok_or_else(|| ImageError::StillMissing {
                image: image.to_owned(),
            })
    }

    async fn create(&self, name: &str, image: &str, attempt: &Launch) -> Result<(), DockerError> {
        let env: Vec<String> = attempt
            .contract_env(Path::new("/weir/work"), Path::new("/weir/out"))
            .into_iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let (entrypoint, cmd) = match attempt.argv.split_first() {
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
            nano_cpus: attempt.cpus.map(|c| (c * 1e9) as i64),
            memory: attempt.memory.map(|m| m as i64),
            device_requests,
            ..HostConfig::default()
        };
        let body = ContainerCreateBody {
            image: Some(image.to_owned()),
            entrypoint: Some(entrypoint),
            cmd: Some(cmd),
            env: Some(env),
            working_dir: Some("/weir/work".to_owned()),
            labels: Some(labels(attempt)),
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
        attempt: &Launch,
        logs: mpsc::Sender<Vec<u8>>,
        stop: &mut watch::Receiver<Option<String>>,
        skip: u64,
    ) -> Exit {
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
                return Exit::failed(format!("lost track of container {name}: {e}"));
            }
            None => None,
        };
        if let Some(note) = stopped {
            return Exit {
                exit_code,
                error: Some(note),
                ..Exit::default()
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
                .memory
                .map(format_size)
                .unwrap_or_else(|| "none".to_owned());
            return Exit {
                exit_code,
                error: Some(format!("out of memory (limit {limit})")),
                ..Exit::default()
            };
        }
        collect(exit_code, &attempt.out)
    }

    async fn remove(&self, name: &str) {
        let options = RemoveContainerOptionsBuilder::new().force(true).build();
        let _ = self.docker.remove_container(name, Some(options)).await;
    }

    /// weir's containers of run `run`, running or not, as their labels say.
    async fn containers(&self, run: &str) -> Result<Vec<Found>, Error> {
        let filters = HashMap::from([("label".to_owned(), vec![format!("{RUN_LABEL}={run}")])]);
        let options = ListContainersOptionsBuilder::new()
            .all(true)
            .filters(&filters)
            .build();
        let containers = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(|e| Error::List {
                what: format!("the containers of run {run}"),
                reason: e.to_string(),
            })?;
        Ok(containers
            .into_iter()
            .filter_map(|c| {
                let labels = c.labels.unwrap_or_default();
                Some(Found {
                    key: AttemptKey {
                        run: run.to_owned(),
                        step: labels.get(STEP_INDEX_LABEL)?.parse().ok()?,
                        attempt: labels.get(ATTEMPT_LABEL)?.parse().ok()?,
                    },
                    handle: c.names?.first()?.trim_start_matches('/').to_owned(),
                    running: c.state.is_some_and(|s| s.to_string() == "running"),
                    resumable: true,
                })
            })
            .collect())
    }

    /// Takes up an attempt whose container a crashed weir left behind,
    /// running or exited: its log from byte `skip` of the masked output on
    /// (what the store has is not sent twice), its exit, its outputs; the
    /// container is released as after any attempt.
    async fn take_up(&self, name: &str, attempt: &Launch, skip: u64, io: AttemptIo) -> Exit {
        let AttemptIo {
            logs,
            mut stop,
            started,
        } = io;
        let container = match self.docker.inspect_container(name, None).await {
            Ok(container) => container,
            Err(e) => {
                return Exit::failed(format!("container {name} vanished: {e}"));
            }
        };
        let created_only = container
            .state
            .as_ref()
            .and_then(|s| s.status)
            .is_some_and(|s| s.to_string() == "created");
        if created_only && let Err(e) = self.docker.start_container(name, None).await {
            return Exit::failed(format!("cannot start container {name}: {e}"));
        }
        let _ = started.send(());
        let outcome = self.follow(name, attempt, logs, &mut stop, skip).await;
        Exit {
            image: container.image,
            ..outcome
        }
    }

    /// The HostConfig of a created container, for tests and diagnostics.
    pub async fn host_config(&self, name: &str) -> Option<HostConfig> {
        self.docker
            .inspect_container(name, None)
            .await
            .ok()?
            .host_config
    }

    /// Creates (without starting) the container of `attempt`, as a launch
    /// would, and returns its name.
    pub async fn create_only(&self, attempt: &Launch) -> Result<String, Error> {
        let name = container_name(&attempt.key.run, &attempt.step, attempt.key.attempt);
        let refused = |reason: String| Error::Refused {
            what: format!("container {name}"),
            reason,
        };
        let image = attempt
            .image
            .clone()
            .ok_or_else(|| refused("a docker step needs an image".to_owned()))?;
        self.create(&name, &image, attempt)
            .await
            .map_err(|e| refused(e.to_string()))?;
        Ok(name)
    }
}

impl Executor for DockerExecutor {
    fn name(&self) -> &'static str {
        "docker"
    }

    fn has_image<'a>(&'a self, image: &'a str) -> BoxFuture<'a, Option<bool>> {
        Box::pin(async move { Some(self.docker.inspect_image(image).await.is_ok()) })
    }

    fn launch<'a>(&'a self, launch: &'a Launch, io: AttemptIo) -> BoxFuture<'a, Exit> {
        Box::pin(self.run(launch, io))
    }

    fn reattach<'a>(
        &'a self,
        found: &'a Found,
        launch: &'a Launch,
        skip: u64,
        io: AttemptIo,
    ) -> BoxFuture<'a, Exit> {
        Box::pin(self.take_up(&found.handle, launch, skip, io))
    }

    fn find<'a>(&'a self, run: &'a str) -> BoxFuture<'a, Result<Vec<Found>, Error>> {
        Box::pin(self.containers(run))
    }

    fn discard<'a>(&'a self, found: &'a Found) -> BoxFuture<'a, ()> {
        Box::pin(self.remove(&found.handle))
    }

    fn release<'a>(&'a self, launch: &'a Launch) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            if !self.keep_containers {
                let name = container_name(&launch.key.run, &launch.step, launch.key.attempt);
                self.remove(&name).await;
            }
        })
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

/// Why a step's image is not there to run.
#[derive(Debug, thiserror::Error)]
enum ImageError {
    #[error("image '{image}' is not on this host and the step says pull: never")]
    Absent { image: String },
    #[error("cannot pull image '{image}': {source}")]
    Pull {
        image: String,
        source: bollard::errors::Error,
    },
    #[error("image '{image}' is still missing after pulling it")]
    StillMissing { image: String },
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
