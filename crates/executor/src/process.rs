//! The process executor: a step as a child process group on the host, with
//! host paths, `CUDA_VISIBLE_DEVICES` for its GPUs, and none of the
//! daemon's environment but `PATH`, `HOME`, `LANG`, `TZ` and `TMPDIR`.

use crate::contract::{Attempt, collect};
use crate::mask::Masker;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use std::process::Stdio;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;
use tokio::sync::{mpsc, oneshot, watch};
use weir_engine::Outcome;

/// The daemon's variables a process step inherits; nothing else leaks.
const INHERITED: &[&str] = &["PATH", "HOME", "LANG", "TZ", "TMPDIR"];

/// Runs `attempt`, signalling `started` once the process exists, sending its output (stdout and stderr as they come,
/// secrets masked) to `logs`, until it exits or `stop` carries a note
/// (then SIGTERM to its process group, SIGKILL after the grace period).
/// Any process the step left behind is killed when it ends.
pub async fn run_process(
    attempt: &Attempt,
    logs: mpsc::Sender<Vec<u8>>,
    mut stop: watch::Receiver<Option<String>>,
    started: oneshot::Sender<()>,
) -> Outcome {
    for dir in [&attempt.work, &attempt.out] {
        if let Err(e) = std::fs::create_dir_all(dir) {
            return Outcome::failed(format!("cannot create {}: {e}", dir.display()));
        }
    }
    let argv = attempt.prepared.command.argv();
    let Some((program, args)) = argv.split_first() else {
        return Outcome::failed("nothing to run: the command is empty");
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
    command.envs(attempt.env(&attempt.work, &attempt.out));
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => return Outcome::failed(format!("cannot start '{program}': {e}")),
    };
    let _ = started.send(());
    let group = child.id().map(|id| Pid::from_raw(id as i32));
    // Should this future be dropped (weir shutting down), the whole group
    // goes, not only its leader.
    let _guard = GroupGuard(group);
    if let Some(group) = group {
        // Recovery after a crash of weir finds the group by this file.
        let _ = std::fs::write(attempt.out.join(PGID_FILE), group.to_string());
    }
    let secrets: Vec<&str> = attempt.secrets.iter().map(|(_, v)| v.as_str()).collect();
    let readers = [
        child.stdout.take().map(|out| {
            tokio::spawn(forward(
                out,
                Masker::new(secrets.iter().copied()),
                logs.clone(),
            ))
        }),
        child.stderr.take().map(|err| {
            tokio::spawn(forward(
                err,
                Masker::new(secrets.iter().copied()),
                logs.clone(),
            ))
        }),
    ];
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
    for reader in readers.into_iter().flatten() {
        let _ = reader.await;
    }
    let status = match status {
        Ok(status) => status,
        Err(e) => return Outcome::failed(format!("lost track of the process: {e}")),
    };
    let exit_code = status.code().or_else(|| {
        use std::os::unix::process::ExitStatusExt;
        status.signal().map(|s| 128 + s)
    });
    if let Some(note) = stopped {
        return Outcome {
            exit_code,
            error: Some(note),
            ..Outcome::default()
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

/// Kills what is left of an attempt whose weir died while it ran: the
/// process group named in its out folder, if a process of that group still
/// runs with this very out folder in its environment (so a reused process
/// id is never mistaken for the step). Returns whether it killed anything.
pub fn kill_leftover(out: &std::path::Path) -> bool {
    let Ok(text) = std::fs::read_to_string(out.join(PGID_FILE)) else {
        return false;
    };
    let Ok(pgid) = text.trim().parse::<i32>() else {
        return false;
    };
    let marker = format!("WEIR_OUT={}", out.display());
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return false;
    };
    let ours = entries.flatten().any(|entry| {
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
    });
    if ours {
        signal(Some(Pid::from_raw(pgid)), Signal::SIGKILL);
    }
    ours
}

fn signal(group: Option<Pid>, signal: Signal) {
    if let Some(group) = group {
        // ESRCH (nothing left in the group) is the common, fine answer.
        let _ = killpg(group, signal);
    }
}

async fn forward(
    mut stream: impl AsyncRead + Unpin,
    mut masker: Masker,
    logs: mpsc::Sender<Vec<u8>>,
) {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        match stream.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let masked = masker.mask(&buffer[..n]);
                if !masked.is_empty() && logs.send(masked).await.is_err() {
                    break;
                }
            }
        }
    }
    let rest = masker.finish();
    if !rest.is_empty() {
        let _ = logs.send(rest).await;
    }
}
