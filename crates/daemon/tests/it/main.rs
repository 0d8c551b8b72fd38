//! The daemon in-process: a [`TestDaemon`] on a temp folder, SQLite and
//! the process executor, with schedules fired at times the test chooses.
//! What needs a process (signals, kill-and-restart, config layers, reload)
//! stays in the CLI's serve tests; what is a rule of the daemon lives here.

mod decisions;
mod events;
mod intake;
mod triggers;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use weir_daemon::{Daemon, Docker, Executors, Options, Started};
use weir_engine::Run;
use weir_store::Store;

/// A daemon on its own folder: `pipelines/`, `data/` (SQLite, audit key).
pub(crate) struct TestDaemon {
    pub(crate) daemon: Arc<Daemon>,
    pub(crate) dir: tempfile::TempDir,
}

impl TestDaemon {
    /// A daemon serving `pipelines` (file name, text).
    pub(crate) async fn start(pipelines: &[(&str, &str)]) -> TestDaemon {
        Self::with_max_running(pipelines, 8).await
    }

    /// A daemon serving `pipelines` that runs at most `max_running` steps
    /// at once.
    pub(crate) async fn with_max_running(
        pipelines: &[(&str, &str)],
        max_running: usize,
    ) -> TestDaemon {
        let dir = tempfile::tempdir().expect("temp dir");
        let folder = dir.path().join("pipelines");
        std::fs::create_dir_all(&folder).expect("pipelines folder");
        for (name, text) in pipelines {
            std::fs::write(folder.join(name), text).expect("pipeline file");
        }
        let daemon = Self::open(dir.path(), max_running).await;
        TestDaemon { daemon, dir }
    }

    /// A daemon on a folder a test prepared (`pipelines/`, `data/`).
    pub(crate) async fn on(dir: tempfile::TempDir) -> TestDaemon {
        std::fs::create_dir_all(dir.path().join("pipelines")).expect("pipelines folder");
        let daemon = Self::open(dir.path(), 8).await;
        TestDaemon { daemon, dir }
    }

    /// Another daemon on the same folder (after this one's shutdown).
    pub(crate) async fn restart(&self) -> Arc<Daemon> {
        Self::open(self.dir.path(), 8).await
    }

    async fn open(dir: &Path, max_running: usize) -> Arc<Daemon> {
        let data = dir.join("data");
        let store = store(&data).await;
        let options = Options {
            executors: Executors::connect(&data, Docker::Skip, false, None)
                .await
                .expect("executors"),
            data,
            max_running,
            grace: Duration::from_secs(1),
            gpus: Vec::new(),
            usage: Default::default(),
            mlflow: None,
            retention: None,
        };
        let (daemon, problems) = Daemon::start(store, &dir.join("pipelines"), options)
            .await
            .expect("daemon starts");
        assert!(problems.is_empty(), "{problems:?}");
        daemon
    }

    /// Waits until run `id` is in a terminal state (at most 20 s).
    pub(crate) async fn finished(&self, id: &str) -> Run {
        wait_for(&self.daemon, id, |run| run.state.is_terminal()).await
    }
}

/// The store of a data folder.
pub(crate) async fn store(data: &Path) -> Store {
    Store::connect(&format!("sqlite://{}/weir.db", data.display()))
        .await
        .expect("store")
}

/// Waits until run `id` satisfies `done` (at most 20 s).
pub(crate) async fn wait_for(daemon: &Daemon, id: &str, done: impl Fn(&Run) -> bool) -> Run {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let run = daemon.store().load_run(id).await.expect("run");
        if done(&run) {
            return run;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "run {id} never got there: {run:#?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The id of a run just started; a replay is a test failure.
pub(crate) fn run_of(started: Started) -> String {
    match started {
        Started::Run(run) => run.id,
        Started::Replay(run) => panic!("a replay of {run:?}"),
    }
}

/// `sha256=HEX`: the HMAC-SHA256 of `body` with `key`, as a sender signs.
pub(crate) fn sign(body: &[u8], key: &str) -> String {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key.as_bytes()).expect("key");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// An RFC 3339 time.
pub(crate) fn at(text: &str) -> weir_engine::Time {
    chrono::DateTime::parse_from_rfc3339(text)
        .expect("time")
        .with_timezone(&chrono::Utc)
}
