//! What keeps a process step's outcome when the weir that started it dies:
//! the step's output goes to a file in its out folder (stdout and stderr
//! into one, in the order they are written), and the process that waits
//! for it — the supervisor — writes its exit status beside it.
//!
//! The supervisor is either this very process (a thread per step: what a
//! test or an embedding program gets) or a child process of its own group,
//! `weir supervise`, which weir starts once and talks to over its stdin and
//! stdout ([`supervise`] is its main loop). That one outlives weir being
//! killed: it goes on waiting for the steps it started, records how each
//! ended, and leaves when the last has.
//!
//! The files of an attempt's out folder, which recovery reads back:
//! `.weir-log` (the raw output), `.weir-attempt` (one line: the step
//! index, the attempt number, the process group, and the supervisor as
//! `pid start-time`, so a reused pid is never taken for it) and, once the
//! step has ended, `.weir-exit` (`code N` or `signal N`). Three files, so a
//! step costs few file-system operations.
//!
//! **Invariant:** `.weir-exit` is written (whole: written aside, then
//! renamed) only after the step's leader has exited and its group has been
//! killed, so no byte of output follows it.

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde_json::{Value as Json, json};
use std::io::{BufRead, Write};
use std::os::unix::fs::OpenOptionsExt as _;
use std::os::unix::process::{CommandExt as _, ExitStatusExt as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

/// The raw output of an attempt, stdout and stderr together.
pub(crate) const LOG_FILE: &str = ".weir-log";
/// How the attempt ended, once it has.
pub(crate) const EXIT_FILE: &str = ".weir-exit";
/// The attempt, its process group and its supervisor: a [`Record`].
pub(crate) const RECORD_FILE: &str = ".weir-attempt";

/// Every file above, which an attempt's release removes.
pub(crate) const FILES: [&str; 3] = [LOG_FILE, EXIT_FILE, RECORD_FILE];

/// What `.weir-attempt` says of a started attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Record {
    /// The index of its step instance.
    pub(crate) step: usize,
    /// Its number.
    pub(crate) attempt: u32,
    /// Its process group.
    pub(crate) pgid: u32,
    /// Its supervisor, `pid start-time`.
    owner: String,
}

impl Record {
    /// The record in `out`, when an attempt was started there.
    pub(crate) fn read(out: &Path) -> Option<Record> {
        let text = std::fs::read_to_string(out.join(RECORD_FILE)).ok()?;
        let mut words = text.split_whitespace();
        let step = words.next()?.parse().ok()?;
        let attempt = words.next()?.parse().ok()?;
        let pgid = words.next()?.parse().ok()?;
        let owner = format!("{} {}", words.next()?, words.next()?);
        Some(Record {
            step,
            attempt,
            pgid,
            owner,
        })
    }

    /// Whether its supervisor still runs: the process that started it,
    /// and not another that took its pid since.
    pub(crate) fn owner_alive(&self) -> bool {
        let Some((pid, started)) = self.owner.split_once(' ') else {
            return false;
        };
        start_time(pid).is_some_and(|now| now == started)
    }
}

/// What to start: one attempt's process.
#[derive(Debug, Clone)]
pub(crate) struct Spawn {
    /// The program and its arguments.
    pub(crate) argv: Vec<String>,
    /// Its whole environment.
    pub(crate) env: Vec<(String, String)>,
    /// Where it runs.
    pub(crate) cwd: PathBuf,
    /// The attempt's out folder, where its files go.
    pub(crate) out: PathBuf,
    /// `step attempt`, for `.weir-attempt`.
    pub(crate) key: String,
}

impl Spawn {
    fn to_json(&self, id: u64) -> Json {
        json!({
            "id": id,
            "argv": self.argv,
            "env": self.env,
            "cwd": self.cwd.to_string_lossy(),
            "out": self.out.to_string_lossy(),
            "key": self.key,
        })
    }

    fn from_json(value: &Json) -> Option<(u64, Spawn)> {
        let strings = |v: &Json| -> Option<Vec<String>> {
            v.as_array()?
                .iter()
                .map(|s| s.as_str().map(str::to_owned))
                .collect()
        };
        let id = value.get("id")?.as_u64()?;
        let env = value
            .get("env")?
            .as_array()?
            .iter()
            .map(|pair| {
                let pair = strings(pair)?;
                match <[String; 2]>::try_from(pair) {
                    Ok([k, v]) => Some((k, v)),
                    Err(_) => None,
                }
            })
            .collect::<Option<Vec<_>>>()?;
        Some((
            id,
            Spawn {
                argv: strings(value.get("argv")?)?,
                env,
                cwd: PathBuf::from(value.get("cwd")?.as_str()?),
                out: PathBuf::from(value.get("out")?.as_str()?),
                key: value.get("key")?.as_str()?.to_owned(),
            },
        ))
    }

    /// The request line sent to a supervisor process.
    pub(crate) fn request(&self, id: u64) -> String {
        let mut line = self.to_json(id).to_string();
        line.push('\n');
        line
    }
}

/// Why a step's process was not started: the attempt fails with it.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum SpawnError {
    #[error("nothing to run: the command is empty")]
    Empty,
    #[error("cannot start '{program}': {reason}")]
    Start { program: String, reason: String },
    #[error("cannot write {path}: {reason}")]
    Write { path: String, reason: String },
    /// What a supervisor process answered (one of the above, as text).
    #[error("{0}")]
    Answered(String),
    #[error("cannot start the step supervisor {program}: {reason}")]
    NoSupervisor { program: String, reason: String },
    #[error("the step supervisor ended before starting the step")]
    SupervisorGone,
    #[error("cannot wait for the step: {0}")]
    Wait(String),
}

/// Starts `spawn`'s process in a group of its own, its output into
/// `.weir-log`, and writes the files recovery needs; the caller waits for
/// it with [`reap`].
pub(crate) fn start(spawn: &Spawn) -> Result<Child, SpawnError> {
    let Some((program, args)) = spawn.argv.split_first() else {
        return Err(SpawnError::Empty);
    };
    let io_error = |path: &Path, e: std::io::Error| SpawnError::Write {
        path: path.display().to_string(),
        reason: e.to_string(),
    };
    // What an earlier start into this folder left is not this attempt's.
    let _ = std::fs::remove_file(spawn.out.join(EXIT_FILE));
    let log_path = spawn.out.join(LOG_FILE);
    // stdout and stderr share this one open file, so their bytes land in
    // the order they are written.
    let log = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(&log_path)
        .map_err(|e| io_error(&log_path, e))?;
    let err = log.try_clone().map_err(|e| io_error(&log_path, e))?;
    let child = Command::new(on_path(program, &spawn.env))
        .args(args)
        .env_clear()
        .envs(spawn.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&spawn.cwd)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err)
        .process_group(0)
        .spawn()
        .map_err(|e| SpawnError::Start {
            program: program.clone(),
            reason: e.to_string(),
        })?;
    // Written once, after the spawn: nothing reads it before this
    // supervisor has answered (recovery runs after the weir that asked has
    // died, and that weir waits for the answer).
    let path = spawn.out.join(RECORD_FILE);
    let record = format!("{} {} {}\n", spawn.key, child.id(), me());
    if let Err(e) = std::fs::write(&path, record) {
        // Recovery could not find it: it must not run unseen.
        kill_group(child.id(), Signal::SIGKILL);
        return Err(io_error(&path, e));
    }
    Ok(child)
}

/// `program` found on the `PATH` of `env` (the step's environment), as
/// `execvp` would find it; as given when it names a path, is not found
/// (the spawn then fails naming it), or a relative `PATH` entry comes
/// first. Handing the spawn an absolute path
/// lets the standard library use `posix_spawn` rather than fork the whole
/// daemon to search `PATH` in the child, which costs most of a
/// millisecond a step in a process of weir's size.
fn on_path(program: &str, env: &[(String, String)]) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt as _;
    if program.contains('/') {
        return program.into();
    }
    let path = env
        .iter()
        .rev()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.as_str());
    for dir in path.unwrap_or_default().split(':') {
        // An empty or relative entry is the step's folder's business:
        // execvp decides, as it always did.
        if !dir.starts_with('/') {
            break;
        }
        let candidate = Path::new(dir).join(program);
        let runnable = std::fs::metadata(&candidate)
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
        if runnable {
            return candidate;
        }
    }
    program.into()
}

/// Waits for `child` to exit, kills what it left in its group, and writes
/// `.weir-exit` into `out`.
pub(crate) fn reap(mut child: Child, out: &Path) {
    let status = child.wait();
    // Whatever the step started in the background goes with it.
    kill_group(child.id(), Signal::SIGKILL);
    let text = match status {
        Ok(status) => match (status.code(), status.signal()) {
            (Some(code), _) => format!("code {code}"),
            (None, Some(signal)) => format!("signal {signal}"),
            (None, None) => "unknown".to_owned(),
        },
        Err(e) => format!("unknown: {e}"),
    };
    // A full disk passes: the exit is recorded once there is room again
    // (until then its follower waits, as for a step still running).
    let mut delay = std::time::Duration::from_millis(100);
    while let Err(e) = write_whole(&out.join(EXIT_FILE), &text) {
        if e.kind() == std::io::ErrorKind::NotFound {
            // The out folder is gone: nobody is left to read it.
            return;
        }
        warn(&format!(
            "cannot record a step's exit in {} yet: {e}",
            out.display()
        ));
        std::thread::sleep(delay);
        delay = (delay * 2).min(std::time::Duration::from_secs(5));
    }
}

/// How an attempt ended, from its `.weir-exit`: `Some(Some(code))`, with a
/// signal as `128 + n` as shells say it; `Some(None)` when the status was
/// lost; `None` while it has not ended.
pub(crate) fn exit_of(out: &Path) -> Option<Option<i32>> {
    let text = std::fs::read_to_string(out.join(EXIT_FILE)).ok()?;
    let mut words = text.split_whitespace();
    Some(
        match (
            words.next(),
            words.next().and_then(|n| n.parse::<i32>().ok()),
        ) {
            (Some("code"), Some(code)) => Some(code),
            (Some("signal"), Some(signal)) => Some(128 + signal),
            _ => None,
        },
    )
}

/// This process, as a [`Record`] names its supervisor.
fn me() -> &'static str {
    static ME: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ME.get_or_init(|| {
        let pid = std::process::id().to_string();
        let started = start_time(&pid).unwrap_or_default();
        format!("{pid} {started}")
    })
}

/// The start time of process `pid` (field 22 of `/proc/PID/stat`, in clock
/// ticks since boot), which tells a process from a later one with its pid.
fn start_time(pid: &str) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name start at the state, field 3.
    let (_, rest) = stat.rsplit_once(") ")?;
    rest.split_whitespace().nth(19).map(str::to_owned)
}

/// Writes `text` to `path` whole: aside first, then renamed over it.
fn write_whole(path: &Path, text: &str) -> std::io::Result<()> {
    let aside = path.with_extension("new");
    std::fs::write(&aside, text)?;
    std::fs::rename(&aside, path)
}

pub(crate) fn kill_group(pgid: u32, signal: Signal) {
    if let Ok(pgid) = i32::try_from(pgid) {
        // ESRCH (nothing left in the group) is the common, fine answer.
        let _ = killpg(Pid::from_raw(pgid), signal);
    }
}

/// The supervisor has no logger: what it cannot record goes to stderr,
/// which weir passes through.
fn warn(message: &str) {
    let _ = writeln!(std::io::stderr(), "weir supervise: {message}");
}

/// The main loop of `weir supervise`: one request per line on stdin (what
/// [`Spawn::request`] writes), one answer per line on stdout —
/// `{"id":N,"pid":P}` once started or `{"id":N,"error":"…"}`, then
/// `{"id":N,"exit":true}` once its `.weir-exit` is written. When stdin
/// ends or its weir has died (it has another parent) it starts nothing
/// more, waits for the steps it started, and returns.
pub fn supervise() -> std::io::Result<()> {
    let answers = Arc::new(Mutex::new(std::io::stdout()));
    let answer = |answers: &Mutex<std::io::Stdout>, value: Json| {
        if let Ok(mut out) = answers.lock() {
            // weir may be gone: the files say the same.
            let _ = writeln!(out, "{value}").and_then(|()| out.flush());
        }
    };
    let mut waiting = Vec::new();
    // The weir that started this supervisor. A request it wrote just
    // before it died may still be read: started now, it would run beside
    // the attempt the next weir started in its place (recovery found
    // nothing of it, so recorded it lost). Once weir is gone, nothing more
    // is started.
    let weir = std::os::unix::process::parent_id();
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        if std::os::unix::process::parent_id() != weir {
            warn("weir is gone: starting nothing more");
            break;
        }
        let parsed = serde_json::from_str::<Json>(&line).ok();
        let Some((id, spawn)) = parsed.as_ref().and_then(Spawn::from_json) else {
            warn(&format!("not a request: {line}"));
            continue;
        };
        match start(&spawn) {
            Ok(child) => {
                answer(&answers, json!({"id": id, "pid": child.id()}));
                let answers = Arc::clone(&answers);
                waiting.push(std::thread::spawn(move || {
                    reap(child, &spawn.out);
                    answer(&answers, json!({"id": id, "exit": true}));
                }));
            }
            Err(error) => answer(&answers, json!({"id": id, "error": error.to_string()})),
        }
        waiting.retain(|w: &std::thread::JoinHandle<()>| !w.is_finished());
    }
    for w in waiting {
        let _ = w.join();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_are_found_on_the_steps_path_as_execvp_finds_them() {
        let dir = tempfile::tempdir().expect("temp dir");
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).expect("mkdir");
        let tool = bin.join("tool");
        std::fs::write(&tool, "#!/bin/sh\n").expect("write");
        let plain = bin.join("plain");
        std::fs::write(&plain, "not runnable").expect("write");
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let env = |path: &str| vec![("PATH".to_owned(), path.to_owned())];
        let path = format!("/nonexistent:{}:/usr/bin", bin.display());
        assert_eq!(on_path("tool", &env(&path)), tool);
        assert_eq!(
            on_path("plain", &env(&path)),
            Path::new("plain"),
            "not executable"
        );
        assert_eq!(on_path("./tool", &env(&path)), Path::new("./tool"));
        assert_eq!(on_path("missing", &env(&path)), Path::new("missing"));
        let relative_first = format!("bin:{}", bin.display());
        assert_eq!(on_path("tool", &env(&relative_first)), Path::new("tool"));
        assert_eq!(on_path("tool", &[]), Path::new("tool"), "no PATH");
    }

    #[test]
    fn a_request_reads_back_as_sent() {
        let spawn = Spawn {
            argv: vec!["sh".into(), "-c".into(), "echo \"a b\"\n".into()],
            env: vec![("K".into(), "v=1".into())],
            cwd: "/tmp/w".into(),
            out: "/tmp/o".into(),
            key: "3 2".into(),
        };
        let line = spawn.request(9);
        assert!(line.ends_with('\n') && line.matches('\n').count() == 1);
        let value: Json = serde_json::from_str(&line).unwrap();
        let (id, back) = Spawn::from_json(&value).unwrap();
        assert_eq!(id, 9);
        assert_eq!(back.argv, spawn.argv);
        assert_eq!(back.env, spawn.env);
        assert_eq!(back.out, spawn.out);
        assert_eq!(back.key, "3 2");
    }

    #[test]
    fn a_record_reads_back_and_knows_its_live_owner() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Record::read(dir.path()), None);
        std::fs::write(dir.path().join(RECORD_FILE), format!("3 2 77 {}\n", me())).unwrap();
        let record = Record::read(dir.path()).unwrap();
        assert_eq!((record.step, record.attempt, record.pgid), (3, 2, 77));
        assert!(record.owner_alive());
        let pid = std::process::id();
        std::fs::write(dir.path().join(RECORD_FILE), format!("3 2 77 {pid} 1")).unwrap();
        let record = Record::read(dir.path()).unwrap();
        assert!(!record.owner_alive(), "same pid, another start time");
    }

    #[test]
    fn exit_files_read_as_shells_say_them() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(exit_of(dir.path()), None);
        for (text, code) in [
            ("code 3", Some(3)),
            ("signal 9", Some(137)),
            ("unknown", None),
        ] {
            write_whole(&dir.path().join(EXIT_FILE), text).unwrap();
            assert_eq!(exit_of(dir.path()), Some(code));
        }
    }
}
