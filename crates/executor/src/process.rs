//! The process executor: a step as a process group on the host, with host
//! paths, `CUDA_VISIBLE_DEVICES` for its GPUs, and none of the daemon's
//! environment but `PATH`, `HOME`, `LANG`, `TZ` and `TMPDIR`.
//!
//! A step's process is started by a supervisor (`supervise.rs`): with one
//! of its own (`weir supervise`, [`ProcessExecutor::supervised`]) a step
//! outlives weir as a container does. Its output and its exit status are
//! files in its out folder, which this file follows: while it runs, after a
//! restart from the byte the store already has, and once it has ended.
//! What recovery finds with a live supervisor or a recorded exit is taken
//! up; only a step whose supervisor died with it is lost (killed, then
//! started again).

use crate::contract::collect;
use crate::executor::{AttemptIo, AttemptKey, Error, Executor, Exit, Found, Launch};
use crate::mask::Masker;
use crate::supervise::{
    EXIT_FILE, FILES, LOG_FILE, Record, Spawn, SpawnError, exit_of, kill_group, reap, start,
};
use futures_util::future::BoxFuture;
use nix::sys::signal::Signal;
use serde_json::Value as Json;
use std::collections::HashMap;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

/// The daemon's variables a process step inherits; nothing else leaks.
const INHERITED: &[&str] = &["PATH", "HOME", "LANG", "TZ", "TMPDIR"];

/// How often a running step's log file is read when nothing else wakes
/// its follower: what `weir logs --follow` can lag behind the step by.
const POLL: Duration = Duration::from_millis(50);

/// Runs attempts as process groups on this host.
#[derive(Debug, Clone)]
pub struct ProcessExecutor {
    /// The folder holding every run's folder (`DATA/runs`): where recovery
    /// looks for the attempts a previous weir left.
    runs: PathBuf,
    /// What starts and waits for the steps' processes.
    spawner: Spawner,
}

#[derive(Debug, Clone)]
enum Spawner {
    /// A thread of this process waits for each step.
    Here,
    /// A supervisor process does, which outlives this one.
    Supervisor(Arc<Remote>),
}

impl ProcessExecutor {
    /// A process executor whose runs keep their folders under `runs`
    /// (`runs/<run>/out/<attempt>`), waiting for steps in this process: a
    /// step whose weir dies is lost.
    pub fn new(runs: impl Into<PathBuf>) -> ProcessExecutor {
        ProcessExecutor {
            runs: runs.into(),
            spawner: Spawner::Here,
        }
    }

    /// A process executor whose steps are started by a supervisor process,
    /// `program args…` (`weir supervise`, whose main loop is
    /// [`supervise`](crate::supervise)), started when the first step is:
    /// steps outlive this weir and the next one takes them up.
    pub fn supervised(
        runs: impl Into<PathBuf>,
        program: impl Into<PathBuf>,
        args: Vec<String>,
    ) -> ProcessExecutor {
        ProcessExecutor {
            runs: runs.into(),
            spawner: Spawner::Supervisor(Arc::new(Remote {
                program: program.into(),
                args,
                conn: tokio::sync::Mutex::new(None),
                next: AtomicU64::new(1),
            })),
        }
    }

    /// Starts `spawn`: its process id, and what says once it has ended
    /// (dropped unsaid when the supervisor died first).
    async fn start(&self, spawn: Spawn) -> Result<(u32, oneshot::Receiver<()>), SpawnError> {
        match &self.spawner {
            Spawner::Here => {
                let child = start(&spawn)?;
                let pid = child.id();
                let (ended, on_end) = oneshot::channel();
                std::thread::Builder::new()
                    .name("weir-step".to_owned())
                    .stack_size(64 * 1024)
                    .spawn(move || {
                        reap(child, &spawn.out);
                        let _ = ended.send(());
                    })
                    .map_err(|e| SpawnError::Wait(e.to_string()))?;
                Ok((pid, on_end))
            }
            Spawner::Supervisor(remote) => remote.start(&spawn).await,
        }
    }
}

impl Executor for ProcessExecutor {
    fn name(&self) -> &'static str {
        "process"
    }

    fn launch<'a>(&'a self, launch: &'a Launch, io: AttemptIo) -> BoxFuture<'a, Exit> {
        Box::pin(async move {
            for dir in [&launch.work, &launch.out] {
                if let Err(e) = std::fs::create_dir_all(dir) {
                    return Exit::failed(format!("cannot create {}: {e}", dir.display()));
                }
            }
            let mut env: Vec<(String, String)> = INHERITED
                .iter()
                .filter_map(|name| Some((name.to_string(), std::env::var(name).ok()?)))
                .collect();
            env.push(("CUDA_VISIBLE_DEVICES".to_owned(), launch.gpus.join(",")));
            env.extend(launch.contract_env(&launch.work, &launch.out));
            let spawn = Spawn {
                argv: launch.argv.clone(),
                env,
                cwd: launch.work.clone(),
                out: launch.out.clone(),
                key: format!("{} {}", launch.key.step, launch.key.attempt),
            };
            let (pid, ended) = match self.start(spawn).await {
                Ok(started) => started,
                Err(error) => return Exit::failed(error.to_string()),
            };
            let _ = io.started.send(());
            follow(&launch.out, pid, launch, io.logs, io.stop, 0, Some(ended)).await
        })
    }

    fn reattach<'a>(
        &'a self,
        found: &'a Found,
        launch: &'a Launch,
        skip: u64,
        io: AttemptIo,
    ) -> BoxFuture<'a, Exit> {
        Box::pin(async move {
            let out = Path::new(&found.handle);
            let Some(record) = Record::read(out) else {
                return Exit::failed(format!("{} names no process group", out.display()));
            };
            let _ = io.started.send(());
            follow(out, record.pgid, launch, io.logs, io.stop, skip, None).await
        })
    }

    fn find<'a>(&'a self, run: &'a str) -> BoxFuture<'a, Result<Vec<Found>, Error>> {
        Box::pin(async move {
            let outs = self.runs.join(run).join("out");
            let entries = match std::fs::read_dir(&outs) {
                Ok(entries) => entries,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
                Err(source) => {
                    return Err(Error::Io {
                        path: outs.display().to_string(),
                        source,
                    });
                }
            };
            let mut found = Vec::new();
            for entry in entries.flatten() {
                let out = entry.path();
                let Some(record) = Record::read(&out) else {
                    continue;
                };
                let ended = out.join(EXIT_FILE).exists();
                let running = !ended && group_runs_in(record.pgid, &out);
                found.push(Found {
                    key: AttemptKey {
                        run: run.to_owned(),
                        step: record.step,
                        attempt: record.attempt,
                    },
                    handle: out.display().to_string(),
                    running,
                    // Its exit is known, or someone waits to record it.
                    resumable: ended || record.owner_alive(),
                });
            }
            Ok(found)
        })
    }

    fn discard<'a>(&'a self, found: &'a Found) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let out = Path::new(&found.handle);
            if let Some(record) = Record::read(out)
                && group_runs_in(record.pgid, out)
            {
                kill_group(record.pgid, Signal::SIGKILL);
            }
            forget(out);
        })
    }

    fn release<'a>(&'a self, launch: &'a Launch) -> BoxFuture<'a, ()> {
        Box::pin(async move { forget(&launch.out) })
    }
}

/// Removes weir's files from an attempt's out folder (its raw log may
/// hold secrets in the clear), leaving what the step wrote.
fn forget(out: &Path) {
    for name in FILES {
        let _ = std::fs::remove_file(out.join(name));
    }
}

/// Follows the attempt in `out` (process group `pgid`) to its end: its
/// log from byte `skip` of the masked output on, sent to `logs`; a note on
/// `stop` sends SIGTERM to its group, then SIGKILL after the grace period;
/// `ended`, when the caller has it, says the exit is recorded. Then its
/// exit and outputs.
async fn follow(
    out: &Path,
    pgid: u32,
    launch: &Launch,
    logs: mpsc::Sender<Vec<u8>>,
    mut stop: watch::Receiver<Option<String>>,
    skip: u64,
    mut ended: Option<oneshot::Receiver<()>>,
) -> Exit {
    let log_path = out.join(LOG_FILE);
    let mut log = match std::fs::File::open(&log_path) {
        Ok(file) => Tail::new(file, launch, skip),
        Err(e) => return Exit::failed(format!("cannot read {}: {e}", log_path.display())),
    };
    let mut stopped: Option<String> = stop.borrow().clone();
    let mut listening = true;
    let mut kill_at: Option<Instant> = None;
    // When the group is seen gone with no exit recorded and no supervisor.
    let mut orphaned_since: Option<Instant> = None;
    let exit_code = loop {
        if !log.pump(&logs).await {
            return Exit::failed("the log's reader went away");
        }
        if let Some(code) = exit_of(out) {
            // Nothing is written after the exit file: this is the rest.
            log.pump(&logs).await;
            log.finish(&logs).await;
            break code;
        }
        if stopped.is_some() {
            let now = Instant::now();
            let ours = group_runs_in(pgid, out);
            match kill_at {
                None => {
                    if ours {
                        kill_group(pgid, Signal::SIGTERM);
                    }
                    kill_at = Some(now + launch.grace);
                }
                Some(at) if now >= at && ours => kill_group(pgid, Signal::SIGKILL),
                Some(_) => {}
            }
        }
        if ended.is_none()
            && !Record::read(out).is_some_and(|r| r.owner_alive())
            && !group_runs_in(pgid, out)
        {
            let since = *orphaned_since.get_or_insert_with(Instant::now);
            if since.elapsed() > Duration::from_secs(2) {
                log.finish(&logs).await;
                return Exit::failed(format!(
                    "process group {pgid} ended with no weir to record its exit status"
                ));
            }
        }
        let wait = async {
            match ended.as_mut() {
                Some(ended) => {
                    let _ = ended.await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = wait => ended = None,
            changed = stop.changed(), if listening => match changed {
                Ok(()) => stopped = stop.borrow().clone(),
                Err(_) => listening = false,
            },
            () = tokio::time::sleep(POLL) => {}
        }
    };
    if let Some(note) = stopped {
        return Exit {
            exit_code,
            error: Some(note),
            ..Exit::default()
        };
    }
    if exit_code.is_none() {
        return Exit::failed("the step's exit status was lost");
    }
    collect(exit_code, out)
}

/// The reading end of an attempt's log file: what has been read is masked
/// (one masker over stdout and stderr, which share the file in the order
/// they were written) and sent, less the first `skip` masked bytes, which
/// the store already has.
struct Tail {
    file: std::fs::File,
    masker: Masker,
    skip: u64,
    buffer: Vec<u8>,
}

impl Tail {
    fn new(file: std::fs::File, launch: &Launch, skip: u64) -> Tail {
        Tail {
            file,
            masker: Masker::new(launch.secrets.iter().map(|(_, v)| v.as_str())),
            skip,
            buffer: vec![0; 64 * 1024],
        }
    }

    /// Sends what was written since the last call; false when `logs` is
    /// closed.
    async fn pump(&mut self, logs: &mpsc::Sender<Vec<u8>>) -> bool {
        loop {
            let n = match self.file.read(&mut self.buffer) {
                Ok(0) | Err(_) => return true,
                Ok(n) => n,
            };
            let masked = self.masker.mask(&self.buffer[..n]);
            if !self.send(masked, logs).await {
                return false;
            }
        }
    }

    /// Sends what the masker still holds: the output has ended.
    async fn finish(&mut self, logs: &mpsc::Sender<Vec<u8>>) {
        let rest = self.masker.finish();
        self.send(rest, logs).await;
    }

    async fn send(&mut self, mut masked: Vec<u8>, logs: &mpsc::Sender<Vec<u8>>) -> bool {
        let dropped = usize::try_from(self.skip)
            .unwrap_or(usize::MAX)
            .min(masked.len());
        masked.drain(..dropped);
        self.skip -= dropped as u64;
        masked.is_empty() || logs.send(masked).await.is_ok()
    }
}

/// A supervisor process, started on first use and again should it die.
#[derive(Debug)]
struct Remote {
    program: PathBuf,
    args: Vec<String>,
    conn: tokio::sync::Mutex<Option<Conn>>,
    next: AtomicU64,
}

/// What a supervisor owes: per request, its start's answer and its end.
type Pending = Arc<Mutex<HashMap<u64, Waiting>>>;

#[derive(Debug, Default)]
struct Waiting {
    started: Option<oneshot::Sender<Result<u32, SpawnError>>>,
    ended: Option<oneshot::Sender<()>>,
}

#[derive(Debug)]
struct Conn {
    stdin: tokio::process::ChildStdin,
    pending: Pending,
    /// Kept so the child is reaped; never killed: it outlives weir.
    _child: tokio::process::Child,
}

impl Remote {
    async fn start(&self, spawn: &Spawn) -> Result<(u32, oneshot::Receiver<()>), SpawnError> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let line = spawn.request(id);
        let (on_start, on_end) = {
            let mut conn = self.conn.lock().await;
            let mut tries = 0;
            loop {
                let live = match conn.as_mut() {
                    Some(live) => live,
                    None => conn.insert(self.connect()?),
                };
                let (started, on_start) = oneshot::channel();
                let (ended, on_end) = oneshot::channel();
                let waiting = Waiting {
                    started: Some(started),
                    ended: Some(ended),
                };
                if let Ok(mut pending) = live.pending.lock() {
                    pending.insert(id, waiting);
                }
                let written = live.stdin.write_all(line.as_bytes()).await.is_ok()
                    && live.stdin.flush().await.is_ok();
                if written {
                    break (on_start, on_end);
                }
                // It died: a new one takes the request, once.
                *conn = None;
                tries += 1;
                if tries == 2 {
                    return Err(SpawnError::SupervisorGone);
                }
            }
        };
        match on_start.await {
            Ok(Ok(pid)) => Ok((pid, on_end)),
            Ok(Err(error)) => Err(error),
            Err(_) => Err(SpawnError::SupervisorGone),
        }
    }

    /// Starts a supervisor, in a process group of its own (a Ctrl-C meant
    /// for weir does not reach it), and the task reading its answers.
    fn connect(&self) -> Result<Conn, SpawnError> {
        let mut child = tokio::process::Command::new(&self.program)
            .args(&self.args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .process_group(0)
            .kill_on_drop(false)
            .spawn()
            .map_err(|e| SpawnError::NoSupervisor {
                program: self.program.display().to_string(),
                reason: e.to_string(),
            })?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(SpawnError::NoSupervisor {
                program: self.program.display().to_string(),
                reason: "no pipes to it".to_owned(),
            });
        };
        let pending: Pending = Arc::default();
        let answers = Arc::clone(&pending);
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let Ok(answer) = serde_json::from_str::<Json>(&line) else {
                    continue;
                };
                let Some(id) = answer.get("id").and_then(Json::as_u64) else {
                    continue;
                };
                let Ok(mut pending) = answers.lock() else {
                    return;
                };
                let Some(waiting) = pending.get_mut(&id) else {
                    continue;
                };
                if let Some(pid) = answer.get("pid").and_then(Json::as_u64) {
                    if let Some(started) = waiting.started.take() {
                        let pid =
                            u32::try_from(pid).map_err(|e| SpawnError::Answered(e.to_string()));
                        let _ = started.send(pid);
                    }
                } else if let Some(error) = answer.get("error").and_then(Json::as_str) {
                    if let Some(started) = waiting.started.take() {
                        let _ = started.send(Err(SpawnError::Answered(error.to_owned())));
                    }
                    pending.remove(&id);
                } else if answer.get("exit").is_some() {
                    if let Some(ended) = waiting.ended.take() {
                        let _ = ended.send(());
                    }
                    pending.remove(&id);
                }
            }
            // The supervisor is gone: what it owed is dropped, and the
            // followers fall back to reading the files.
            if let Ok(mut pending) = answers.lock() {
                pending.clear();
            }
        });
        Ok(Conn {
            stdin,
            pending,
            _child: child,
        })
    }
}

/// Whether a live process of group `pgid` runs with `WEIR_OUT=out` in its
/// environment (so a reused process id is never mistaken for the step).
fn group_runs_in(pgid: u32, out: &Path) -> bool {
    let marker = format!("WEIR_OUT={}", out.display());
    let pgid = pgid.to_string();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return false;
    };
    entries.flatten().any(|entry| {
        let pid = entry.file_name();
        let Some(pid) = pid
            .to_str()
            .filter(|p| p.chars().all(|c| c.is_ascii_digit()))
        else {
            return false;
        };
        let in_group = std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
            // Fields after the command name: state, ppid, pgrp.
            stat.rsplit_once(") ").is_some_and(|(_, rest)| {
                let mut fields = rest.split_whitespace();
                let state = fields.next();
                state != Some("Z") && fields.nth(1) == Some(pgid.as_str())
            })
        });
        in_group
            && std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|b| *b == 0).any(|var| var == marker.as_bytes()))
    })
}
