//! The `weir` binary run as a process, as a user runs it; and the tidy
//! checks that keep the workspace's rules.

mod plan;
mod run;
mod schema;
mod serve;
mod tidy;
mod validate;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The workspace root: commands run there, as a user in their repository.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs `weir` with `args` in the workspace root.
fn weir(args: &[&str]) -> Output {
    weir_in(&root(), args)
}

/// Runs `weir` with `args` in `dir`.
fn weir_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("weir runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}
