//! The process executor: a step as a child process group on the host, with
//! host paths, `CUDA_VISIBLE_DEVICES` for its GPUs, and none of the
//! daemon's environment but `PATH`, `HOME`, `LANG`, `TZ` and `TMPDIR`.
//!
//! A process group cannot be taken up by another weir (its pipes die with
//! the one that started it), so recovery finds what still runs of it, by
//! the `.weir-pgid` and `.weir-attempt` files in each attempt's out folder,
//! and kills it: the attempt is then lost and started again.

use crate::contract::collect;
use crate::executor::{AttemptIo, AttemptKey, Error, Executor, Exit, Found, Launch};
use crate::mask::Masker;
use futures_util::future::BoxFuture;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;
use tokio::sync::mpsc;

/// The daemon's variables a process step inherits; nothing else leaks.
const INHERITED: &[&str] = &["PATH", "HOME", "LANG", "TZ", "TMPDIR"];

/// Runs attempts as child process groups on this host.
#[derive(Debug, Clone)]
pub struct ProcessExecutor {
    /// The folder holding every run's folder (`DATA/runs`): where recovery
    /// looks for the groups a previous weir left.
    runs: PathBuf,
}

impl ProcessExecutor {
    /// A process executor whose runs keep their folders under `runs`
    /// (`runs/<run>/out/<attempt>`).
    pub fn new(runs: impl Into<PathBuf>) -> ProcessExecutor {
        ProcessExecutor { runs: runs.into() }
    }
}

impl Executor for ProcessExecutor {
    fn name(&self) -> &'static str {
        "process"
    }

    fn launch<'a>(&'a self, launch: &'a Launch, io: AttemptIo) -> BoxFuture<'a, Exit> {
        Box::pin(run_process(launch, io))
    }

    fn reattach<'a>(
        &'a self,
        found: &'a Found,
        _launch: &'a Launch,
        _skip: u64,
        _io: AttemptIo,
    ) -> BoxFuture<'a, Exit> {
        Box::pin(async move {
            Exit::failed(format!(
                "process group {} cannot be taken up by another weir",
                found.handle
            ))
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
                let (Some(pgid), Some((step, attempt))) = (pgid_of(&out), key_of(&out)) else {
                    continue;
                };
                found.push(Found {
                    key: AttemptKey {
                        run: run.to_owned(),
                        step,
                        attempt,
                    },
                    handle: out.display().to_string(),
                    running: group_runs_in(pgid, &out),
                    resumable: false,
                });
            }
            Ok(found)
        })
    }

    fn discard<'a>(&'a self, found: &'a Found) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            kill_leftover(Path::new(&found.handle));
        })
    }
}

/// Runs `launch`, signalling `started` once the process exists, sending its output (stdout and stderr as they come,
/// secrets masked) to `logs`, until it exits or `stop` carries a note
/// (then SIGTERM to its process group, SIGKILL after the grace period).
/// Any process the step left behind is killed when it ends.
async fn run_process(attempt: &Launch, io: AttemptIo) -> Exit {
    let AttemptIo {
        logs,
        mut stop,
        started,
    } = io;
    for dir in [&attempt.work, &attempt.out] {
        if let Err(e) = std::fs::create_dir_all(dir) {
            return Exit::failed(format!("cannot create {}: {e}", dir.display()));
        }
    }
    let Some((program, args)) = attempt.argv.split_first() else {
        return Exit::failed("nothing to run: the command is empty");
    };
    let mut command = Command::new(program);
    command
        .args(args)
        .env_clear()
        .current_dir(&attempt.work)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    for name in INHERITED {
        if let Ok(value) = std::env::var(name) {
            command.env(name, value);
        }
    }
    command.env("CUDA_VISIBLE_DEVICES", attempt.gpus.join(","));
    command.envs(attempt.contract_env(&attempt.work, &attempt.out));
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => return Exit::failed(format!("cannot start '{program}': {e}")),
    };
    let _ = started.send(());
    let group = child.id().map(|id| Pid::from_raw(id as i32));
    // Should this future be dropped (weir shutting down), the whole group
    // goes, not only its leader.
    let _guard = GroupGuard(group);
    if let Some(group) = group {
        // Recovery after a crash of weir finds the group by these files.
        let key = format!("{} {}", attempt.key.step, attempt.key.attempt);
        let _ = std::fs::write(attempt.out.join(KEY_FILE), key);
        let _ = std::fs::write(attempt.out.join(PGID_FILE), group.to_string());
    }
    let secrets: Vec<&str> = attempt.secrets.iter().map(|(_, v)| v.as_str()).collect();
    // One masker over both streams, in the order their bytes arrive: a
    // secret split across them is masked, and what one holds back comes
    // out before the other's next bytes, not at the end.
    let reader = tokio::spawn(forward(
        child.stdout.take(),
        child.stderr.take(),
        Masker::new(secrets.iter().copied()),
        logs.clone(),
    ));
    let mut stopped: Option<String> = stop.borrow().clone();
    let status = loop {
        if stopped.is_some() {
            signal(group, Signal::SIGTERM);
            break match tokio::time::timeout(attempt.grace, child.wait()).await {
                Ok(status) => status,
                Err(_) => {
                    signal(group, Signal::SIGKILL);
                    child.wait().await
                }
            };
        }
        tokio::select! {
            status = child.wait() => break status,
            changed = stop.changed() => match changed {
                Ok(()) => stopped = stop.borrow().clone(),
                // No stop can come any more: wait for the exit.
                Err(_) => break child.wait().await,
            },
        }
    };
    // Whatever the step started in the background goes with it.
    signal(group, Signal::SIGKILL);
    let _ = reader.await;
    let status = match status {
        Ok(status) => status,
        Err(e) => return Exit::failed(format!("lost track of the process: {e}")),
    };
    let exit_code = status.code().or_else(|| {
        use std::os::unix::process::ExitStatusExt;
        status.signal().map(|s| 128 + s)
    });
    if let Some(note) = stopped {
        return Exit {
            exit_code,
            error: Some(note),
            ..Exit::default()
        };
    }
    collect(exit_code, &attempt.out)
}

/// Kills a process group when dropped.
struct GroupGuard(Option<Pid>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        signal(self.0, Signal::SIGKILL);
    }
}

/// The file in an attempt's out folder naming its process group.
const PGID_FILE: &str = ".weir-pgid";

/// The file in an attempt's out folder naming the attempt: the index of
/// its step instance and its number.
const KEY_FILE: &str = ".weir-attempt";

fn pgid_of(out: &Path) -> Option<i32> {
    std::fs::read_to_string(out.join(PGID_FILE))
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn key_of(out: &Path) -> Option<(usize, u32)> {
    let text = std::fs::read_to_string(out.join(KEY_FILE)).ok()?;
    let (step, attempt) = text.trim().split_once(' ')?;
    Some((step.parse().ok()?, attempt.parse().ok()?))
}

/// Kills what is left of an attempt whose weir died while it ran: the
/// process group named in its out folder, if a process of that group still
/// runs with this very out folder in its environment (so a reused process
/// id is never mistaken for the step). Returns whether it killed anything.
fn kill_leftover(out: &Path) -> bool {
    let Some(pgid) = pgid_of(out) else {
        return false;
    };
    let ours = group_runs_in(pgid, out);
    if ours {
        signal(Some(Pid::from_raw(pgid)), Signal::SIGKILL);
    }
    ours
}

/// Whether a process of group `pgid` runs with `WEIR_OUT=out` in its
/// environment.
fn group_runs_in(pgid: i32, out: &Path) -> bool {
    let marker = format!("WEIR_OUT={}", out.display());
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
            stat.rsplit_once(") ")
                .and_then(|(_, rest)| {
                    rest.split_whitespace()
                        .nth(2)
                        .map(|g| g == pgid.to_string())
                })
                .unwrap_or(false)
        });
        in_group
            && std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|b| *b == 0).any(|var| var == marker.as_bytes()))
    })
}

fn signal(group: Option<Pid>, signal: Signal) {
    if let Some(group) = group {
        // ESRCH (nothing left in the group) is the common, fine answer.
        let _ = killpg(group, signal);
    }
}

/// Sends what the step writes on stdout and stderr to `logs`, masked, in
/// the order it is read, until both end.
async fn forward(
    mut stdout: Option<impl AsyncRead + Unpin>,
    mut stderr: Option<impl AsyncRead + Unpin>,
    mut masker: Masker,
    logs: mpsc::Sender<Vec<u8>>,
) {
    let mut out_buffer = vec![0u8; 16 * 1024];
    let mut err_buffer = vec![0u8; 16 * 1024];
    loop {
        let masked = tokio::select! {
            // Stdout first when both are ready: a step usually writes there.
            biased;
            read = read_some(&mut stdout, &mut out_buffer), if stdout.is_some() => match read {
                Some(n) => masker.mask(&out_buffer[..n]),
                None => {
                    stdout = None;
                    continue;
                }
            },
            read = read_some(&mut stderr, &mut err_buffer), if stderr.is_some() => match read {
                Some(n) => masker.mask(&err_buffer[..n]),
                None => {
                    stderr = None;
                    continue;
                }
            },
            else => break,
        };
        if !masked.is_empty() && logs.send(masked).await.is_err() {
            return;
        }
    }
    let rest = masker.finish();
    if !rest.is_empty() {
        let _ = logs.send(rest).await;
    }
}

/// The next bytes of `stream` into `buffer`: how many, or `None` at its
/// end (or when it fails).
async fn read_some(
    stream: &mut Option<impl AsyncRead + Unpin>,
    buffer: &mut [u8],
) -> Option<usize> {
    let stream = stream.as_mut()?;
    match stream.read(buffer).await {
        Ok(0) | Err(_) => None,
        Ok(n) => Some(n),
    }
}
